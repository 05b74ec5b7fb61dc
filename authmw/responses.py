"""Every answer authmw sends instead of the app's: 400, 401, 403 and 503, in one place.

A :class:`Rejection` is a complete HTTP response (status, headers, JSON
body). :class:`Responses` makes them for one configuration (its
``WWW-Authenticate`` challenge, its ``Retry-After``); every entry point,
the middleware and each framework integration, sends what it makes as it
is, so a 401 looks the same whichever way it was reached.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import AuthError, Forbidden, IdentityServiceUnavailable, InvalidToken, NotAuthenticated

__all__ = [
    "DEFAULT_CHALLENGE",
    "NOT_AUTHENTICATED",
    "UNAVAILABLE",
    "Rejection",
    "Responses",
    "error_body",
    "websocket_close_code",
]

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}

DEFAULT_CHALLENGE = 'Keystone realm="authmw"'
"""``WWW-Authenticate`` of the default configuration."""

NOT_AUTHENTICATED = "The request you have made requires authentication."
UNAVAILABLE = "The identity service is unavailable; try again later."

# Websocket close codes when the server cannot send an HTTP denial.
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013


def error_body(status: int, message: str) -> bytes:
    """The JSON error body every authmw response and integration uses."""
    title = TITLES.get(status, "Error")
    return json.dumps(
        {"error": {"code": status, "title": title, "message": message}}, separators=(",", ":")
    ).encode()


@dataclass(frozen=True)
class Rejection:
    """A response to send instead of calling the app."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    reason: str = ""

    @property
    def status_line(self) -> str:
        """``"401 Unauthorized"``: the WSGI status string."""
        return f"{self.status} {TITLES.get(self.status, 'Error')}"

    @property
    def payload(self) -> dict[str, Any]:
        """The body as a dict, for frameworks that serialise JSON themselves."""
        data: dict[str, Any] = json.loads(self.body)
        return data

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        folded = name.lower()
        return next((v for n, v in self.headers if n.lower() == folded), None)


def websocket_close_code(status: int) -> int:
    """Close code for a websocket refused with ``status`` before ``accept``, without HTTP."""
    return _WS_TRY_AGAIN_LATER if status == 503 else _WS_POLICY_VIOLATION


def _response(
    status: int, message: str, *extra: tuple[str, str], reason: str | None = None
) -> Rejection:
    body = error_body(status, message)
    headers = (
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *extra,
    )
    return Rejection(status, body, headers, reason or message)


class Responses:
    """The answers of one configuration.

    ``challenge`` is the ``WWW-Authenticate`` value of every 401;
    ``retry_after`` returns the seconds a 503 asks the client to wait.
    """

    __slots__ = ("_retry_after", "challenge")

    def __init__(self, challenge: str, retry_after: Callable[[], float]) -> None:
        self.challenge = challenge
        self._retry_after = retry_after

    def unauthorized(
        self, reason: str = NOT_AUTHENTICATED, *, challenge: str | None = None
    ) -> Rejection:
        """401 with the challenge (every configured one, unless ``challenge`` is given).

        The body says what keystonemiddleware's says, whatever the reason: a
        client learns nothing about why its credentials failed; ``reason``
        goes to the logs (:attr:`Rejection.reason`).
        """
        return _response(
            401,
            NOT_AUTHENTICATED,
            ("WWW-Authenticate", challenge or self.challenge),
            reason=reason,
        )

    def forbidden(self, message: str = "Forbidden.") -> Rejection:
        """403: authenticated, not allowed."""
        return _response(403, message)

    def bad_request(self, message: str) -> Rejection:
        """400: the request cannot be checked as it is (e.g. a gateway header is missing)."""
        return _response(400, message)

    def unavailable(self, message: str = UNAVAILABLE) -> Rejection:
        """503 with ``Retry-After``."""
        seconds = max(1, math.ceil(self._retry_after()))
        return _response(503, message, ("Retry-After", str(seconds)))

    def too_many(self, retry_after: float) -> Rejection:
        """429: this client failed to authenticate too often; try again later."""
        return _response(
            429,
            "Too many failed authentications; try again later.",
            ("Retry-After", str(max(1, math.ceil(retry_after)))),
        )

    def for_error(self, exc: AuthError) -> Rejection:
        """The answer to an access error raised by a check or a view."""
        if isinstance(exc, (NotAuthenticated, InvalidToken)):
            return self.unauthorized(str(exc) or NOT_AUTHENTICATED)
        if isinstance(exc, Forbidden):
            return self.forbidden(str(exc) or "Forbidden.")
        if isinstance(exc, IdentityServiceUnavailable):
            return self.unavailable()
        raise TypeError(f"not an authmw access error: {exc!r}")

    @property
    def challenge_header(self) -> tuple[str, str]:
        """``("WWW-Authenticate", challenge)``, for a 401 the app sent itself."""
        return ("WWW-Authenticate", self.challenge)

    @staticmethod
    def needs_challenge(status: int, header_names: Any) -> bool:
        """True if a response with ``status`` and these header names lacks its challenge."""
        return status == 401 and not any(
            (n.decode("latin-1") if isinstance(n, bytes) else n).lower() == "www-authenticate"
            for n in header_names
        )


DEFAULT_RESPONSES = Responses(DEFAULT_CHALLENGE, lambda: 5.0)
"""Answers when no configuration is at hand (an integration used without a core)."""
