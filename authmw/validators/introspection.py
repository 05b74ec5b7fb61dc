"""Validate tokens by asking an HTTP endpoint about them (RFC 7662, or a "current user" call).

Two styles:

``style="rfc7662"`` (default)
    ``POST url`` with the form ``token=<token>`` (and ``token_type_hint``),
    authenticated as a client: ``client_id``/``client_secret`` (HTTP Basic,
    RFC 6749 section 2.3.1) or any :class:`~authmw.client.TokenAuth` (e.g. a
    bearer token it acquires and renews). The answer's ``active`` decides.
``style="header"``
    ``GET url`` with the user's token in a header (``token_header``,
    ``token_scheme``), as the "current user" endpoints of token-acquire APIs
    (``GET /suite-api/api/auth/currentuser`` with
    ``Authorization: vRealizeOpsToken <token>``). A 2xx answer describes the
    token's user; 401/403/404 mean the token is not valid.

The JSON answer is mapped to an :class:`~authmw.Identity` by an
:class:`IntrospectionMapping`: dotted paths into the answer, with fallbacks.

Roles and RFC 7662: the default mapping takes the roles from ``scope``
(space-separated), so ``scope="read write"`` gives the roles ``read`` and
``write`` and role checks work on OAuth scopes. Set ``roles=None`` to map no
roles, or point ``roles`` at the server's own claim (Keycloak:
``"realm_access.roles"``).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import quote_plus

import httpx

from ..client._base import MALFORMED_ANSWER, TokenAuth, http_url, parse_timestamp
from ..client.acquire import EpochUnit, parse_epoch
from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import TEXT_FIELDS, Identity
from ._remote import (
    RemoteValidator,
    ServiceTokenRejected,
    answer_error,
    check_subject_token,
    given_service_auth,
    http_options,
)
from ._roles import usable_roles

__all__ = [
    "HTTPIntrospectionValidator",
    "IntrospectionMapping",
    "IntrospectionStyle",
    "Paths",
]

IntrospectionStyle = Literal["rfc7662", "header"]

Paths: TypeAlias = "str | Sequence[str]"
"""A dotted path into the JSON answer (``"realm_access.roles"``), or alternatives tried in order."""


@dataclass(frozen=True)
class IntrospectionMapping:
    """Where each :class:`~authmw.Identity` field is found in the endpoint's JSON answer.

    Every field is a :data:`Paths`: a dotted path (``"user.id"``) or a
    sequence of them tried in order (the first present, non-empty value
    wins); ``None`` maps nothing. Keys containing dots cannot be addressed.

    - ``active``: a boolean that must be ``true``; ``None`` when the endpoint
      has no such flag (a 2xx answer then means valid).
    - ``user_id`` (required to find a value), ``user_name``,
      ``user_domain_id``, ``user_domain_name``, ``project_id``,
      ``project_name``, ``project_domain_id``, ``project_domain_name``:
      strings (integers are accepted for ids).
    - ``roles``: a list of strings, a list of objects (``role_key`` names the
      member to take, e.g. ``"name"``), or one string split on
      ``roles_separator`` (``None``: on white space).
    - ``expires_at``, ``issued_at``, ``not_before``: ISO 8601 strings or
      epoch numbers in ``time_unit`` (``"auto"``: above 10^11 means
      milliseconds).
    - ``extra``: ``Identity.extra`` key -> path, copied as is when present.
    """

    active: Paths | None = "active"
    user_id: Paths = ("sub", "username", "client_id")
    user_name: Paths | None = "username"
    user_domain_id: Paths | None = None
    user_domain_name: Paths | None = None
    project_id: Paths | None = None
    project_name: Paths | None = None
    project_domain_id: Paths | None = None
    project_domain_name: Paths | None = None
    roles: Paths | None = "scope"
    role_key: str | None = None
    roles_separator: str | None = None
    expires_at: Paths | None = "exp"
    issued_at: Paths | None = "iat"
    not_before: Paths | None = "nbf"
    time_unit: EpochUnit = "auto"
    extra: Mapping[str, Paths] = field(
        default_factory=lambda: {
            "client_id": "client_id",
            "token_type": "token_type",
            "iss": "iss",
            "aud": "aud",
        }
    )

    @classmethod
    def rfc7662(cls, **overrides: Any) -> IntrospectionMapping:
        """RFC 7662 token introspection (the default): ``active``, ``sub``, ``scope``, ``exp``..."""
        return cls(**overrides)

    @classmethod
    def current_user(cls, **overrides: Any) -> IntrospectionMapping:
        """A token-acquire API's "current user" object (``id``, ``username``, ``roleNames``).

        No ``active`` flag and no expiry: the endpoint answering 2xx is the
        proof, and the cache lifetime bounds how long the answer is trusted.
        """
        values: dict[str, Any] = {
            "active": None,
            "user_id": ("id", "username"),
            "user_name": "username",
            "roles": "roleNames",
            "expires_at": None,
            "issued_at": None,
            "not_before": None,
            "extra": {"email": "emailAddress", "distinguished_name": "distinguishedName"},
        }
        values.update(overrides)
        return cls(**values)


_Compiled = tuple[tuple[str, ...], ...]  # alternatives, each a key path

# The user id is required and mapped on its own; an answer maps no domain or system scope.
_STRING_FIELDS = tuple(
    name
    for name in TEXT_FIELDS
    if name not in ("user_id", "domain_id", "domain_name", "system_scope")
)


def _compile(option: str, paths: Any, *, required: bool = False) -> _Compiled:
    if paths is None:
        if required:
            raise ConfigurationError(option, "is required")
        return ()
    alternatives = [paths] if isinstance(paths, str) else paths
    if not isinstance(alternatives, Sequence) or not alternatives:
        raise ConfigurationError(option, f"must be a dotted path or a list of them, got {paths!r}")
    compiled = []
    for path in alternatives:
        if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
            raise ConfigurationError(option, f"not a dotted path: {path!r}")
        compiled.append(tuple(path.split(".")))
    return tuple(compiled)


class _CompiledMapping:
    """An :class:`IntrospectionMapping` with its paths split once, at start-up."""

    def __init__(self, mapping: IntrospectionMapping) -> None:
        if not isinstance(mapping, IntrospectionMapping):
            raise ConfigurationError("mapping", f"must be an IntrospectionMapping, got {mapping!r}")
        self.active = _compile("mapping.active", mapping.active)
        self.user_id = _compile("mapping.user_id", mapping.user_id, required=True)
        self.strings = {
            name: _compile(f"mapping.{name}", getattr(mapping, name)) for name in _STRING_FIELDS
        }
        self.roles = _compile("mapping.roles", mapping.roles)
        if mapping.role_key is not None and (
            not isinstance(mapping.role_key, str) or not mapping.role_key
        ):
            raise ConfigurationError("mapping.role_key", f"must be a key, got {mapping.role_key!r}")
        self.role_key = mapping.role_key
        if mapping.roles_separator is not None and (
            not isinstance(mapping.roles_separator, str) or not mapping.roles_separator
        ):
            raise ConfigurationError(
                "mapping.roles_separator",
                f"must be a non-empty string, got {mapping.roles_separator!r}",
            )
        self.roles_separator = mapping.roles_separator
        self.expires_at = _compile("mapping.expires_at", mapping.expires_at)
        self.issued_at = _compile("mapping.issued_at", mapping.issued_at)
        self.not_before = _compile("mapping.not_before", mapping.not_before)
        if mapping.time_unit not in ("auto", "s", "ms"):
            raise ConfigurationError(
                "mapping.time_unit", f"must be 'auto', 's' or 'ms', got {mapping.time_unit!r}"
            )
        self.time_unit: EpochUnit = mapping.time_unit
        if not isinstance(mapping.extra, Mapping):
            raise ConfigurationError("mapping.extra", "must be a mapping of name -> path")
        self.extra = {
            str(key): _compile(f"mapping.extra[{key!r}]", paths)
            for key, paths in mapping.extra.items()
        }


_MISSING = object()


def _lookup(data: Mapping[str, Any], compiled: _Compiled) -> Any:
    """The first present, non-empty value among the alternatives, else ``_MISSING``."""
    for path in compiled:
        value: Any = data
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                value = _MISSING
                break
            value = value[key]
        if value is not _MISSING and value is not None and value != "":
            return value
    return _MISSING


def _as_text(value: Any, what: str) -> str | None:
    if value is _MISSING:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{what} must be a string")


def _as_time(value: Any, unit: EpochUnit) -> datetime | None:
    if value is _MISSING:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            float(text)
        except ValueError:
            return parse_timestamp(text)
        return parse_epoch(text, unit)
    return parse_epoch(value, unit)


def _as_roles(value: Any, mapping: _CompiledMapping) -> tuple[str, ...]:
    if value is _MISSING:
        return ()
    if isinstance(value, str):
        # White space around a separator is the list's layout ("a, b").
        items: list[Any] = [part.strip() for part in value.split(mapping.roles_separator)]
    elif isinstance(value, list):
        items = value
    else:
        raise TypeError("roles must be a list or a string")
    names: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            if mapping.role_key is None:
                raise TypeError("roles are objects: set mapping.role_key")
            item = item.get(mapping.role_key)
        if not isinstance(item, str):
            raise TypeError("a role must be a string")
        # A listed name is kept as it is: " admin" is not "admin".
        if item and item not in names:
            names.append(item)
    return usable_roles(names)


def identity_from_answer(
    data: Any,
    mapping: _CompiledMapping,
    *,
    now: float,
    leeway: float = 0.0,
    allow_expired: bool = False,
    token: str | None = None,
) -> Identity:
    """Map a decoded answer to an :class:`Identity`.

    Raises :class:`InvalidToken` (not active, expired, not yet valid) and,
    for malformed data, ``TypeError``/``KeyError``/``ValueError``.
    """
    if not isinstance(data, Mapping):
        raise TypeError("the answer must be a JSON object")
    if mapping.active:
        active = _lookup(data, mapping.active)
        if active is _MISSING:
            raise KeyError("active")
        if active is not True:
            raise InvalidToken("token is not active")
    user_id = _as_text(_lookup(data, mapping.user_id), "user id")
    if not user_id:
        raise KeyError("user id")
    strings: dict[str, Any] = {
        name: _as_text(_lookup(data, compiled), name) for name, compiled in mapping.strings.items()
    }
    expires_at = _as_time(_lookup(data, mapping.expires_at), mapping.time_unit)
    issued_at = _as_time(_lookup(data, mapping.issued_at), mapping.time_unit)
    not_before = _as_time(_lookup(data, mapping.not_before), mapping.time_unit)
    if not allow_expired and expires_at is not None and expires_at.timestamp() <= now - leeway:
        raise InvalidToken("token expired")
    if not_before is not None and not_before.timestamp() > now + leeway:
        raise InvalidToken("token not valid yet")
    extra = {}
    for key, compiled in mapping.extra.items():
        value = _lookup(data, compiled)
        if value is not _MISSING:
            extra[key] = value
    # The answer is kept as token_body; it must not carry the token itself.
    body = {k: v for k, v in data.items() if token is None or v != token}
    return Identity(
        user_id=user_id,
        roles=_as_roles(_lookup(data, mapping.roles), mapping),
        expires_at=expires_at,
        issued_at=issued_at,
        token_body=body,
        extra=extra,
        **strings,
    )


# -- the validator ---------------------------------------------------------------------


def _basic(client_id: str, client_secret: str) -> str:
    # RFC 6749 section 2.3.1: form-encode both parts before base64.
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class HTTPIntrospectionValidator(RemoteValidator):
    """Validates tokens by asking an HTTP endpoint; see the module docstring for the styles.

    ``mapping`` defaults to :meth:`IntrospectionMapping.rfc7662` for
    ``style="rfc7662"`` and :meth:`IntrospectionMapping.current_user` for
    ``style="header"``.

    Errors: ``invalid_statuses`` (default 404, plus 401 and 403 in the header
    style), the request refused for its form or size (400, 413, 414, 431: the
    token is the only part that varies) and inactive (``"active": false``),
    expired or not-yet-valid tokens -> :class:`InvalidToken`. A 401/403
    outside ``invalid_statuses`` (or an RFC 6749 ``invalid_client`` 400) means
    the endpoint refused *our* credentials: with a
    :class:`~authmw.client.TokenAuth` it is renewed once and the call
    repeated, then (and with static client credentials at once)
    :class:`IdentityServiceUnavailable`; in the header style without
    credentials of our own it can only be about the token: :class:`InvalidToken`.
    5xx, 429, other codes, network trouble, timeouts and malformed answers ->
    :class:`IdentityServiceUnavailable`.

    HTTP options and client life cycle as :class:`~authmw.KeystoneValidator`.
    """

    service = "the introspection endpoint"
    credentials_name = "authmw's credentials"
    _log = logging.getLogger("authmw.introspection")

    def __init__(
        self,
        url: str,
        *,
        style: IntrospectionStyle = "rfc7662",
        mapping: IntrospectionMapping | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth: TokenAuth | None = None,
        token_type_hint: str | None = None,
        token_header: str = "Authorization",  # noqa: S107  (a header name)
        token_scheme: str | None = "Bearer",  # noqa: S107  (an auth scheme)
        method: str = "GET",
        invalid_statuses: Collection[int] | None = None,
        expiry_leeway: float = 0.0,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 2,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = _endpoint(url)
        if style not in ("rfc7662", "header"):
            raise ConfigurationError("style", f"must be 'rfc7662' or 'header', got {style!r}")
        self.style: IntrospectionStyle = style
        if mapping is None:
            mapping = (
                IntrospectionMapping.rfc7662()
                if style == "rfc7662"
                else IntrospectionMapping.current_user()
            )
        self.mapping = mapping
        self._mapping = _CompiledMapping(mapping)

        if (client_id is None) != (client_secret is None):
            missing = "client_secret" if client_secret is None else "client_id"
            raise ConfigurationError(missing, "client_id and client_secret go together")
        if client_id is not None and (
            not isinstance(client_id, str)
            or not client_id
            or not isinstance(client_secret, str)
            or not client_secret
        ):
            raise ConfigurationError("client_id", "client_id and client_secret must be non-empty")
        self.auth = given_service_auth(auth, {"client_id": client_id})
        self._client_header = (
            _basic(client_id, client_secret)
            if client_id is not None and client_secret is not None
            else None
        )
        self._has_credentials = self.auth is not None or self._client_header is not None

        if not isinstance(token_header, str) or not token_header.strip():
            raise ConfigurationError("token_header", "must be a header name")
        self.token_header = token_header.strip()
        if token_scheme is not None and (
            not isinstance(token_scheme, str) or not token_scheme or " " in token_scheme
        ):
            raise ConfigurationError("token_scheme", f"must be one word, got {token_scheme!r}")
        self.token_scheme = token_scheme
        if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
            raise ConfigurationError("method", f"must be GET or POST, got {method!r}")
        self.method = method.upper()
        if style == "header":
            credential_header = auth.header_name if auth is not None else None
            if self._client_header is not None:
                credential_header = "Authorization"
            if credential_header and credential_header.lower() == self.token_header.lower():
                raise ConfigurationError(
                    "token_header",
                    f"{self.token_header} already carries the service credentials",
                )
        if token_type_hint is not None and (
            not isinstance(token_type_hint, str) or not token_type_hint
        ):
            raise ConfigurationError("token_type_hint", "must be a non-empty string")
        self.token_type_hint = token_type_hint

        if invalid_statuses is None:
            invalid_statuses = (404,) if style == "rfc7662" else (401, 403, 404)
        if isinstance(invalid_statuses, (str, bytes)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 400 <= s < 500
            for s in invalid_statuses
        ):
            raise ConfigurationError(
                "invalid_statuses", f"must be 4xx status codes, got {invalid_statuses!r}"
            )
        self.invalid_statuses = frozenset(invalid_statuses)

        super().__init__(expiry_leeway=expiry_leeway, clock=clock, **http_options(locals()))

    def __repr__(self) -> str:
        return f"HTTPIntrospectionValidator({self.url!r}, style={self.style!r})"

    # -- sans-I/O -------------------------------------------------------------------
    def build_request(self, token: str, credential: str | None = None) -> httpx.Request:
        """The request asking about ``token``; ``credential`` is the service token, if any."""
        check_subject_token(token)
        headers = {"Accept": "application/json"}
        if self._client_header is not None:
            headers["Authorization"] = self._client_header
        if credential is not None and self.auth is not None:
            scheme = self.auth.header_scheme
            headers[self.auth.header_name] = f"{scheme} {credential}" if scheme else credential
        if self.style == "header":
            headers[self.token_header] = (
                f"{self.token_scheme} {token}" if self.token_scheme else token
            )
            return httpx.Request(self.method, self.url, headers=headers)
        form = {"token": token}
        if self.token_type_hint:
            form["token_type_hint"] = self.token_type_hint
        return httpx.Request("POST", self.url, data=form, headers=headers)

    def interpret(
        self, status_code: int, body: bytes, token: str, *, allow_expired: bool = False
    ) -> Identity:
        """The identity for the endpoint's answer; see the class docstring for errors."""
        if 200 <= status_code < 300:
            try:
                data = json.loads(body)
                return identity_from_answer(
                    data,
                    self._mapping,
                    now=self._clock(),
                    leeway=self.expiry_leeway,
                    allow_expired=allow_expired,
                    token=token,
                )
            except InvalidToken:
                raise
            except MALFORMED_ANSWER as exc:
                raise IdentityServiceUnavailable(
                    f"malformed answer from the introspection endpoint ({type(exc).__name__})"
                ) from None
        if status_code in self.invalid_statuses:
            raise InvalidToken(f"the introspection endpoint refused the token ({status_code})")
        if status_code in (401, 403) and self.style == "header" and not self._has_credentials:
            # authmw sent no credentials of its own: the refusal is about the token.
            raise InvalidToken(f"the introspection endpoint refused the token ({status_code})")
        if status_code == 400 and self.style == "rfc7662" and _client_refused(body):
            raise ServiceTokenRejected(status_code)
        raise answer_error(status_code, body, self.service, invalid=())

    def _build_request(
        self, token: str, credential: str | None, allow_expired: bool
    ) -> httpx.Request:
        return self.build_request(token, credential)

    def _parse_answer(self, status: int, body: bytes, token: str, allow_expired: bool) -> Identity:
        return self.interpret(status, body, token, allow_expired=allow_expired)


def _client_refused(body: bytes) -> bool:
    """Whether a 400 is RFC 6749 section 5.2's refusal of the client (our credentials)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, Mapping) and data.get("error") in (
        "invalid_client",
        "unauthorized_client",
    )


def _endpoint(url: str) -> str:
    return str(http_url(url, "url", "must be the endpoint URL", query=True))
