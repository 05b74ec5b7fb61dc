"""Token-acquire APIs: ``POST {base}/api/auth/token/acquire`` with a username and password.

The documented answer (VMware Aria / vRealize Operations ``auth-token``)::

    {"token": "...", "validity": 1700000000000, "expiresAt": "...", "roles": ["..."]}

``validity`` is the expiry in epoch milliseconds; ``expiresAt`` a readable
form of it. Later calls carry the token as ``Authorization: <scheme> <token>``
(vRealize Operations: scheme ``vRealizeOpsToken``, newer releases ``OpsToken``)
or in any other header. ``POST {base}/api/auth/token/release`` gives it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

import httpx

from ..errors import ConfigurationError
from ._base import AcquiredToken, TokenAuth, http_url, parse_timestamp

__all__ = ["EpochUnit", "TokenAcquireAuth", "parse_epoch"]

EpochUnit = Literal["auto", "s", "ms"]

# Epoch seconds reach 1e11 in the year 5138; epoch milliseconds passed it in 1973.
_MS_THRESHOLD = 1e11


def parse_epoch(value: Any, unit: EpochUnit = "auto") -> datetime:
    """An epoch timestamp (seconds or milliseconds) as aware UTC.

    Raises ``ValueError`` or ``TypeError`` for what is not one.

    ``unit="auto"`` reads numbers above 10^11 as milliseconds. Numeric strings
    are accepted; booleans are not.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, (int, float)):
        raise TypeError(f"timestamp must be a number, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("timestamp must be finite")
    if unit == "ms" or (unit == "auto" and abs(seconds) >= _MS_THRESHOLD):
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"timestamp out of range: {exc}") from None


def _path(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(option, f"must be a URL path, got {value!r}")
    value = value.strip()
    return value if value.startswith("/") else "/" + value


class TokenAcquireAuth(TokenAuth):
    """Token from a ``token/acquire`` API, renewed before ``validity`` runs out.

    ``base_url`` is the API root (e.g. ``https://ops.example.com/suite-api``);
    ``acquire_path``/``release_path`` are appended to it (``release_path=None``
    for APIs without a release call). ``auth_source`` selects the
    authentication source (LDAP, vIDM...) where the API has several.

    Header on later calls: ``header_name`` (default ``Authorization``) with
    ``header_scheme`` (default ``vRealizeOpsToken``; ``None`` for a bare
    token, e.g. ``header_name="X-Auth-Token", header_scheme=None``).

    The answer's ``roles`` are in ``AcquiredToken.body``. :meth:`release` /
    :meth:`arelease` (from :class:`~authmw.client.TokenAuth`) give the token
    back: call one before closing the client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str,
        auth_source: str | None = None,
        acquire_path: str = "/api/auth/token/acquire",
        release_path: str | None = "/api/auth/token/release",
        header_name: str = "Authorization",
        header_scheme: str | None = "vRealizeOpsToken",
        validity_unit: EpochUnit = "auto",
        renew_margin: float = 60.0,
        retry_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = _base_url(base_url)
        if not isinstance(username, str) or not username.strip():
            raise ConfigurationError("username", "must be a non-empty string")
        if not isinstance(password, str) or not password:
            raise ConfigurationError("password", "must be a non-empty string")
        if auth_source is not None and (not isinstance(auth_source, str) or not auth_source):
            raise ConfigurationError(
                "auth_source", f"must be a non-empty string, got {auth_source!r}"
            )
        if validity_unit not in ("auto", "s", "ms"):
            raise ConfigurationError(
                "validity_unit", f"must be 'auto', 's' or 'ms', got {validity_unit!r}"
            )
        acquire = _path("acquire_path", acquire_path)
        if acquire is None:
            raise ConfigurationError("acquire_path", "is required")
        self.acquire_url = self.base_url + acquire
        release = _path("release_path", release_path)
        self.release_url = None if release is None else self.base_url + release
        self.username = username.strip()
        self.auth_source = auth_source
        self.validity_unit: EpochUnit = validity_unit
        self._password = password
        super().__init__(
            header_name=header_name,
            header_scheme=header_scheme,
            renew_margin=renew_margin,
            retry_on_401=retry_on_401,
            clock=clock,
        )

    def build_token_request(self) -> httpx.Request:
        payload = {"username": self.username, "password": self._password}
        if self.auth_source is not None:
            payload["authSource"] = self.auth_source
        return httpx.Request(
            "POST", self.acquire_url, json=payload, headers={"Accept": "application/json"}
        )

    def parse_token_response(self, response: httpx.Response) -> AcquiredToken:
        body = response.json()
        token = body["token"]
        if not isinstance(token, str):
            raise TypeError("token must be a string")
        expires: datetime | None = None
        validity = body.get("validity")
        if validity is not None:
            expires = parse_epoch(validity, self.validity_unit)
        elif isinstance(body.get("expiresAt"), str):
            # Only a fallback: expiresAt is meant for people and its format varies.
            try:
                expires = parse_timestamp(body["expiresAt"])
            except ValueError:
                expires = None
        return AcquiredToken(token, expires, body)

    def build_release_request(self, token: AcquiredToken) -> httpx.Request | None:
        if self.release_url is None:
            return None
        value = f"{self.header_scheme} {token.token}" if self.header_scheme else token.token
        return httpx.Request(
            "POST",
            self.release_url,
            headers={self.header_name: value, "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.base_url!r}, username={self.username!r}, "
            f"auth_source={self.auth_source!r})"
        )


def _base_url(base_url: str) -> str:
    url = http_url(base_url, "base_url", "must be the API root URL")
    return str(url.copy_with(path=url.path.rstrip("/") or "/")).rstrip("/")
