"""Keystone v2.0 / Rackspace Cloud Identity token acquisition.

``POST {auth_url}/v2.0/tokens`` with ``passwordCredentials`` (username +
password) or ``RAX-KSKEY:apiKeyCredentials`` (username + API key), optionally
scoped with ``tenantId`` or ``tenantName``. The token is ``access.token.id``
and its expiry ``access.token.expires``.

An account that must pass a multi-factor challenge gets
:class:`MultiFactorRequired` instead of a plain refusal: a service cannot
answer the passcode challenge, so the fix is a credential that needs no
second factor (Rackspace never asks one for API-key authentication).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ..errors import ConfigurationError
from ._base import (
    AcquiredToken,
    AuthenticationFailed,
    TokenAuth,
    parse_timestamp,
    text_option,
    versioned_url,
)

__all__ = [
    "KeystoneV2Auth",
    "MultiFactorRequired",
    "keystone_v2_url",
]


def keystone_v2_url(auth_url: str, option: str = "auth_url") -> str:
    """The v2.0 base URL (``…/v2.0``, no trailing slash) for ``auth_url``.

    Accepts ``https://identity.example.com``, ``…/v2.0`` and ``…/v2.0/``; a
    v3 URL is a :class:`ConfigurationError`.
    """
    return versioned_url(
        auth_url,
        option,
        "must be the identity service URL, e.g. https://identity.example.com/v2.0",
        "/v2.0",
        other="/v3",
        other_hint="is a v3 URL; use the Keystone v3 classes for v3",
    )


def _secret(option: str, value: Any) -> str | None:
    # Secrets are not stripped (a space may be part of a password) and never echoed.
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(option, "must be a non-empty string")
    return value


def v2_tenant(tenant_id: str | None, tenant_name: str | None) -> dict[str, str]:
    """The ``tenantId``/``tenantName`` members of a v2.0 ``auth`` object (both: an error)."""
    tenant_id = text_option("tenant_id", tenant_id)
    tenant_name = text_option("tenant_name", tenant_name)
    if tenant_id and tenant_name:
        raise ConfigurationError(
            "tenant_name", "give tenant_id or tenant_name, not both (v2.0 accepts one)"
        )
    if tenant_id:
        return {"tenantId": tenant_id}
    if tenant_name:
        return {"tenantName": tenant_name}
    return {}


class MultiFactorRequired(AuthenticationFailed):
    """The identity service wants a second factor (a passcode) that a program cannot give.

    ``factor`` is the factor it asked for (e.g. ``PASSCODE``), when it said.
    ``session_id`` is the challenge's session (``WWW-Authenticate: OS-MF
    sessionId=...``); it is not part of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        factor: str | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.factor = factor
        self.session_id = session_id


_MFA_TEXT = re.compile(
    r"multi[-\s]?factor|\bmfa\b|additional authentication credentials|passcode", re.IGNORECASE
)
_CHALLENGE_PARAM = re.compile(r"""([A-Za-z][\w-]*)\s*=\s*(?:'([^']*)'|"([^"]*)"|([^\s,]+))""")


def error_message(response: httpx.Response) -> str:
    """The human message of an identity service error body, cleaned for logs ('' if none).

    Understands ``{"unauthorized": {"message": ...}}`` (v2.0/Rackspace),
    ``{"error": {"message": ...}}`` (Keystone) and ``{"message": ...}``.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    message: Any = None
    if isinstance(body, Mapping):
        message = body.get("message")
        if message is None:
            for value in body.values():
                if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                    message = value["message"]
                    break
    if not isinstance(message, str):
        return ""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in message).strip()
    return cleaned[:200]


def multi_factor_challenge(response: httpx.Response) -> MultiFactorRequired | None:
    """A :class:`MultiFactorRequired` if this 401/403 asks for a second factor, else None."""
    if response.status_code not in (401, 403):
        return None
    challenge = response.headers.get("WWW-Authenticate", "")
    message = error_message(response)
    is_mfa = challenge.strip().upper().startswith("OS-MF") or bool(_MFA_TEXT.search(message))
    if not is_mfa:
        return None
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM.finditer(challenge):
        params[m.group(1).lower()] = m.group(2) or m.group(3) or m.group(4) or ""
    factor = params.get("factor") or None
    said = f" (the service said: {message})" if message else ""
    return MultiFactorRequired(
        "multi-factor authentication is required for this account"
        + (f" (factor {factor})" if factor else "")
        + ": authmw cannot answer a passcode challenge; use a credential that needs no "
        "second factor, such as an API key or a service account exempt from MFA" + said,
        status_code=response.status_code,
        factor=factor,
        session_id=params.get("sessionid") or None,
    )


class KeystoneV2Auth(TokenAuth):
    """Token from Keystone v2.0 or Rackspace Cloud Identity, renewed before it expires.

    ``username`` with exactly one of ``password`` (``passwordCredentials``) or
    ``api_key`` (``RAX-KSKEY:apiKeyCredentials``); ``tenant_id`` or
    ``tenant_name`` (not both) scopes the token. ``auth_url`` gets ``/v2.0``
    added if missing. The whole answer (catalog included) is kept in
    ``AcquiredToken.body``. Other keywords go to :class:`~authmw.client.TokenAuth`.

    Raises :class:`MultiFactorRequired` when the account needs a second factor,
    :class:`~authmw.client.AuthenticationFailed` for other refusals.
    """

    def __init__(
        self,
        auth_url: str,
        *,
        username: str,
        password: str | None = None,
        api_key: str | None = None,
        tenant_id: str | None = None,
        tenant_name: str | None = None,
        header_name: str = "X-Auth-Token",
        header_scheme: str | None = None,
        renew_margin: float = 60.0,
        retry_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth_url = keystone_v2_url(auth_url)
        user = text_option("username", username)
        if user is None:
            raise ConfigurationError("username", "is required")
        self.username = user
        password = _secret("password", password)
        api_key = _secret("api_key", api_key)
        if password is not None and api_key is not None:
            raise ConfigurationError("api_key", "give password or api_key, not both")
        if password is None and api_key is None:
            raise ConfigurationError("password", "a password or an api_key is needed")
        self._tenant = v2_tenant(tenant_id, tenant_name)
        self.tenant_id = self._tenant.get("tenantId")
        self.tenant_name = self._tenant.get("tenantName")
        self.credential_type = "password" if password is not None else "api_key"
        self._credentials: dict[str, Any]
        if password is not None:
            self._credentials = {
                "passwordCredentials": {"username": self.username, "password": password}
            }
        else:
            self._credentials = {
                "RAX-KSKEY:apiKeyCredentials": {"username": self.username, "apiKey": api_key}
            }
        super().__init__(
            header_name=header_name,
            header_scheme=header_scheme,
            renew_margin=renew_margin,
            retry_on_401=retry_on_401,
            clock=clock,
        )

    def build_token_request(self) -> httpx.Request:
        auth = {**self._credentials, **self._tenant}
        return httpx.Request(
            "POST",
            self.auth_url + "/tokens",
            json={"auth": auth},
            headers={"Accept": "application/json"},
        )

    def raise_for_token_status(self, response: httpx.Response) -> None:
        mfa = multi_factor_challenge(response)
        if mfa is not None:
            raise mfa
        if response.status_code in (401, 403):
            message = error_message(response)
            raise AuthenticationFailed(
                f"identity service refused the {self.credential_type.replace('_', ' ')} of "
                f"user {self.username!r} ({response.status_code})"
                + (f": {message}" if message else ""),
                status_code=response.status_code,
            )
        super().raise_for_token_status(response)

    def parse_token_response(self, response: httpx.Response) -> AcquiredToken:
        body = response.json()
        token = body["access"]["token"]
        token_id = token["id"]
        if not isinstance(token_id, str):
            raise TypeError("access.token.id must be a string")
        expires = token.get("expires")
        return AcquiredToken(token_id, parse_timestamp(expires) if expires else None, body)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.auth_url!r}, username={self.username!r}, "
            f"credential={self.credential_type!r}, tenant={self._tenant or None!r})"
        )
