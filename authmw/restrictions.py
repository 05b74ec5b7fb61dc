"""Limits a token carries with it, checked on every request (cache hits included).

A validator may return an :class:`~authmw.Identity` with ``restrictions``:
a mapping from a restriction kind to its data (plain JSON-like values, so
the limits survive the shared cache). The pipeline asks :func:`refusal`
about every request once the token is known to be valid, so a restriction
holds whatever the app forgets and however the identity was found.

Kinds:

- ``"methods"``: the HTTP methods allowed (a read-only key: GET, HEAD, OPTIONS);
- ``"ips"``, ``"idle"``: the client networks allowed and the idle deadline
  of a local store's API key (:mod:`authmw._key_restrictions`);

A kind this version does not know refuses every request (fail closed: a
newer writer of the token store may have added it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["CHECKS", "Refusal", "RequestFacts", "refusal"]

log = logging.getLogger("authmw.restrictions")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestFacts(NamedTuple):
    """What a restriction may look at: the request, not its credentials."""

    method: str
    path: str
    """The path inside the app (``PATH_INFO``; ASGI ``path`` without ``root_path``)."""
    client: str | None
    """The client address (the connection's, or a trusted proxy's forwarded one)."""
    service_token: bool
    """True when a valid service token came with the request."""


class Refusal(NamedTuple):
    """A restriction's no: the status (401 or 403) and a message for the body and logs.

    ``reason`` names the rule in the logs (``read-only``, ``ip``, ``idle``);
    ``note`` says more there when the message must stay generic (a 401).
    """

    status: int
    message: str
    reason: str = ""
    note: str = ""


Check = Callable[[Any, RequestFacts], "Refusal | None"]


def _methods(allowed: Any, request: RequestFacts) -> Refusal | None:
    if request.method.upper() in allowed:
        return None
    reason = "read-only" if _SAFE_METHODS.issuperset(allowed) else "method"
    return Refusal(403, f"this token allows only {', '.join(allowed)} requests", reason)


CHECKS: dict[str, Check] = {"methods": _methods}
"""The check of each restriction kind."""


def refusal(restrictions: Mapping[str, Any], request: RequestFacts) -> Refusal | None:
    """The first restriction that refuses ``request``, or None."""
    for kind, data in restrictions.items():
        check = CHECKS.get(kind)
        if check is None:
            return Refusal(
                403, f"this token carries a restriction this service does not know ({kind})"
            )
        answer = check(data, request)
        if answer is not None:
            log.info(
                "refused a request to %s %s (reason: %s): %s",
                request.method,
                request.path,
                answer.reason or kind,
                answer.note or answer.message,
            )
            return answer
    return None


def _register_key_restrictions() -> None:
    from ._key_restrictions import CHECKS as KEY_CHECKS

    CHECKS.update(KEY_CHECKS)


_register_key_restrictions()
