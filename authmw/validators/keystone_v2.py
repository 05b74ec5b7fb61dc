"""Validate tokens against a Keystone v2.0 or Rackspace Cloud Identity service.

Keystone itself removed v2.0; Rackspace-style identity services still speak
it. The validator authenticates as a service user (``POST /v2.0/tokens``,
password or API key) and asks ``GET /v2.0/tokens/{token}`` about each user
token, with its own token in ``X-Auth-Token``.

The user's token travels in the URL path: it is percent-encoded, never
written to a log record by authmw, and masked in httpx's request log lines by
the filter :func:`authmw.client.install_log_redaction` installs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from ..client._base import TokenAuth, parse_timestamp
from ..client.keystone_v2 import KeystoneV2Auth, keystone_v2_url
from ..errors import ConfigurationError, InvalidToken
from ..identity import Identity
from ._remote import (
    RemoteValidator,
    check_subject_token,
    given_service_auth,
    http_options,
    token_answer,
)
from ._roles import usable_roles

__all__ = [
    "KeystoneV2Validator",
    "build_v2_validation_request",
    "check_v2_token",
    "identity_from_access",
    "interpret_v2_validation_response",
]

# -- sans-I/O: the request and the meaning of the answer --------------------------------


def check_v2_token(token: str) -> None:
    """Reject, without I/O, what cannot be a token or cannot go in a URL path segment."""
    check_subject_token(token)
    if token.strip(".") == "":
        # "." and ".." would be read as path segments, not as a token.
        raise InvalidToken("token has characters no token has")


def build_v2_validation_request(
    base_url: str, admin_token: str, token: str, *, belongs_to: str | None = None
) -> httpx.Request:
    """``GET {base_url}/tokens/{token}`` with the admin token; ``token`` is percent-encoded."""
    check_v2_token(token)
    return httpx.Request(
        "GET",
        f"{base_url}/tokens/{quote(token, safe='')}",
        params={"belongsTo": belongs_to} if belongs_to else None,
        headers={"X-Auth-Token": admin_token, "Accept": "application/json"},
    )


def interpret_v2_validation_response(
    status_code: int,
    body: bytes,
    *,
    now: float,
    leeway: float = 0.0,
    allow_expired: bool = False,
    include_catalog: bool = True,
) -> Identity:
    """The identity for a ``GET /v2.0/tokens/{token}`` answer.

    200/203 -> :class:`Identity`; 404 (unknown token), 400 (not a token the
    service accepts), 413, 414 (token too long for the URL) and 431 ->
    :class:`InvalidToken`; expired -> :class:`InvalidToken`;
    401/403 -> :class:`ServiceTokenRejected` (our admin token); anything else,
    or a malformed body -> :class:`IdentityServiceUnavailable`.
    """
    return token_answer(
        status_code,
        body,
        "the identity service",
        valid=(200, 203),
        identity_of=lambda data: identity_from_access(
            data["access"], include_catalog=include_catalog
        ),
        now=now,
        leeway=leeway,
        allow_expired=allow_expired,
    )


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    return value or None


def _tenant_ref(value: Any) -> str | None:
    # tenantId is a string in the documented bodies; some services send a number.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError("role tenantId must be a string")
    return str(value)


def _roles(user: Mapping[str, Any], project_id: str | None) -> tuple[str, ...]:
    """Role names that apply to the token's tenant: global roles and roles bound to it."""
    roles = user.get("roles") or []
    if not isinstance(roles, list):
        raise TypeError("access.user.roles must be a list")
    names: list[str] = []
    seen: set[str] = set()
    for role in roles:
        if not isinstance(role, Mapping):
            raise TypeError("a role must be an object")
        name = role["name"]
        if not isinstance(name, str) or not name:
            raise TypeError("role name must be a non-empty string")
        bound_to = _tenant_ref(role.get("tenantId"))
        if bound_to is not None and bound_to != project_id:
            continue  # a role on another tenant: not a role in this token's project
        if name not in seen:
            seen.add(name)
            names.append(name)
    return usable_roles(names)


def _without_token_id(access: Mapping[str, Any], include_catalog: bool) -> dict[str, Any]:
    # Identity.token_body may be cached and logged by applications: it must not
    # carry the token itself.
    kept = {k: v for k, v in access.items() if include_catalog or k != "serviceCatalog"}
    kept["token"] = {k: v for k, v in access["token"].items() if k != "id"}
    return {"access": kept}


def identity_from_access(access: Mapping[str, Any], *, include_catalog: bool = True) -> Identity:
    """Map a v2.0 ``access`` object to an :class:`Identity` (raises on malformed data).

    The project is the token's tenant. A role carrying a ``tenantId`` other
    than that tenant's id is left out; roles without ``tenantId`` are global
    and kept. Rackspace's ``RAX-AUTH:domainId`` becomes the user's domain;
    ``RAX-AUTH:defaultRegion``, ``RAX-AUTH:authenticatedBy`` and an
    impersonator go to ``Identity.extra``.
    """
    if not isinstance(access, Mapping):
        raise TypeError("access must be an object")
    token = access["token"]
    user = access["user"]
    if not isinstance(token, Mapping) or not isinstance(user, Mapping):
        raise TypeError("access.token and access.user must be objects")

    user_id = _opt_str(user["id"], "access.user.id")
    if not user_id:
        raise KeyError("access.user.id")
    user_name = _opt_str(user.get("name"), "access.user.name") or _opt_str(
        user.get("username"), "access.user.username"
    )

    project_id = project_name = None
    tenant = token.get("tenant")
    if tenant is not None:
        if not isinstance(tenant, Mapping):
            raise TypeError("access.token.tenant must be an object")
        project_id = _opt_str(tenant.get("id"), "access.token.tenant.id")
        project_name = _opt_str(tenant.get("name"), "access.token.tenant.name")

    expires = token["expires"]
    issued = token.get("issued_at")
    audit_ids = token.get("audit_ids") or []
    if not isinstance(audit_ids, list) or not all(isinstance(a, str) for a in audit_ids):
        raise TypeError("access.token.audit_ids must be a list of strings")

    extra: dict[str, Any] = {}
    region = _opt_str(user.get("RAX-AUTH:defaultRegion"), "RAX-AUTH:defaultRegion")
    if region:
        extra["default_region"] = region
    methods: tuple[str, ...] = ()
    authenticated_by = token.get("RAX-AUTH:authenticatedBy")
    if authenticated_by is not None:
        if not isinstance(authenticated_by, list) or not all(
            isinstance(m, str) for m in authenticated_by
        ):
            raise TypeError("RAX-AUTH:authenticatedBy must be a list of strings")
        methods = tuple(m.lower() for m in authenticated_by)
        extra["authenticated_by"] = list(authenticated_by)
    impersonator = access.get("RAX-AUTH:impersonator")
    if isinstance(impersonator, Mapping):
        extra["impersonator"] = {
            "id": _opt_str(impersonator.get("id"), "impersonator id"),
            "name": _opt_str(impersonator.get("name"), "impersonator name"),
        }

    catalog = None
    if include_catalog:
        catalog = access.get("serviceCatalog")
        if catalog is not None and not isinstance(catalog, list):
            raise TypeError("access.serviceCatalog must be a list")

    return Identity(
        user_id=user_id,
        user_name=user_name,
        user_domain_id=_opt_str(user.get("RAX-AUTH:domainId"), "RAX-AUTH:domainId"),
        project_id=project_id,
        project_name=project_name,
        roles=_roles(user, project_id),
        expires_at=parse_timestamp(expires),
        issued_at=parse_timestamp(issued) if issued is not None else None,
        audit_ids=tuple(audit_ids),
        methods=methods,
        service_catalog=catalog,
        token_body=_without_token_id(access, include_catalog),
        extra=extra,
    )


# -- the validator ------------------------------------------------------------------------


class KeystoneV2Validator(RemoteValidator):
    """Validates tokens with Keystone v2.0 / Rackspace Cloud Identity (``GET /v2.0/tokens/{id}``).

    Service identity, one of:

    - ``username`` + ``password`` (``passwordCredentials``) or ``api_key``
      (``RAX-KSKEY:apiKeyCredentials``), optionally ``tenant_id`` or
      ``tenant_name`` (not both);
    - ``auth``: any :class:`~authmw.client.TokenAuth`;
    - ``static_token``: a pre-issued admin token, used as is.

    The service user needs a role that may validate others' tokens
    (``identity:admin`` / ``identity:user-admin`` on Rackspace, ``admin`` on
    Keystone v2.0). ``belongs_to`` asks the service to accept only tokens
    scoped to that tenant (``?belongsTo=``).

    Answers: an :class:`Identity` (project = the token's tenant; see
    :func:`identity_from_access`); :class:`InvalidToken` (404/400, expired
    beyond ``expiry_leeway`` seconds, not token-shaped);
    :class:`IdentityServiceUnavailable` (5xx, network, TLS, timeout,
    malformed answer, service identity refused twice, service credentials
    refused). ``include_service_catalog`` (default True, as keystonemiddleware)
    keeps ``serviceCatalog`` in ``Identity.service_catalog``.

    HTTP options and client life cycle as :class:`~authmw.KeystoneValidator`:
    ``timeout``, ``http_connect_timeout``, ``http_request_max_retries``,
    ``cafile``/``certfile``/``keyfile``/``insecure``, ``max_connections``;
    :meth:`close` / :meth:`aclose` at shutdown.
    """

    auth: TokenAuth
    refusal_hint = ": check that the service user may validate tokens (identity:admin / admin role)"
    _log = logging.getLogger("authmw.keystone_v2")

    def __init__(
        self,
        auth_url: str,
        *,
        auth: TokenAuth | None = None,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        tenant_id: str | None = None,
        tenant_name: str | None = None,
        static_token: str | None = None,
        include_service_catalog: bool = True,
        belongs_to: str | None = None,
        expiry_leeway: float = 0.0,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 2,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        renew_margin: float = 60.0,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = keystone_v2_url(auth_url)
        self.include_service_catalog = bool(include_service_catalog)
        if belongs_to is not None and (not isinstance(belongs_to, str) or not belongs_to.strip()):
            raise ConfigurationError("belongs_to", f"must be a tenant id, got {belongs_to!r}")
        self.belongs_to = belongs_to.strip() if belongs_to else None
        super().__init__(expiry_leeway=expiry_leeway, clock=clock, **http_options(locals()))
        self.auth = _service_auth(
            self.base_url,
            auth,
            {
                "username": username,
                "password": password,
                "api_key": api_key,
                "tenant_id": tenant_id,
                "tenant_name": tenant_name,
                "static_token": static_token,
            },
            renew_margin,
            clock,
        )

    def __repr__(self) -> str:
        return f"KeystoneV2Validator({self.base_url!r}, auth={self.auth!r})"

    def _check_token(self, token: str) -> None:
        check_v2_token(token)

    def _build_request(
        self, token: str, credential: str | None, allow_expired: bool
    ) -> httpx.Request:
        assert credential is not None  # there is always a service identity
        return build_v2_validation_request(
            self.base_url, credential, token, belongs_to=self.belongs_to
        )

    def _parse_answer(self, status: int, body: bytes, token: str, allow_expired: bool) -> Identity:
        return interpret_v2_validation_response(
            status,
            body,
            now=self._clock(),
            leeway=self.expiry_leeway,
            allow_expired=allow_expired,
            include_catalog=self.include_service_catalog,
        )


def _service_auth(
    base_url: str,
    auth: TokenAuth | None,
    credentials: dict[str, Any],
    renew_margin: float,
    clock: Callable[[], float],
) -> TokenAuth:
    given = given_service_auth(auth, credentials)
    if given is not None:
        return given
    del credentials["static_token"]
    if credentials["username"] is None:
        raise ConfigurationError(
            "username",
            "no service identity: give username + password or api_key, static_token or auth",
        )
    return KeystoneV2Auth(base_url, renew_margin=renew_margin, clock=clock, **credentials)
