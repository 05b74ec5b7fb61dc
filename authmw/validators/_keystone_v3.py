"""Keystone v3 token validation without I/O: the request to send, the answer's meaning.

Shared by the blocking and the async paths of :class:`~authmw.KeystoneValidator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from .._compact import CompactJSON
from ..client._base import parse_timestamp
from ..identity import Identity
from ._remote import ServiceTokenRejected, check_subject_token, token_answer
from ._roles import usable_roles

__all__ = [
    "ACCESS_RULES_HEADER",
    "ACCESS_RULES_SUPPORT",
    "ServiceTokenRejected",
    "access_rules_restriction",
    "build_validation_request",
    "check_subject_token",
    "identity_from_token",
    "interpret_validation_response",
]

ACCESS_RULES_HEADER = "OpenStack-Identity-Access-Rules"
"""Sent with every validation, as keystonemiddleware does: without it Keystone
answers 404 for a token of an application credential with access rules."""
ACCESS_RULES_SUPPORT = "1"


def build_validation_request(
    base_url: str,
    service_token: str,
    subject_token: str,
    *,
    include_catalog: bool = False,
    allow_expired: bool = False,
) -> httpx.Request:
    """``GET {base_url}/auth/tokens`` asking Keystone about ``subject_token``."""
    params: dict[str, str] = {}
    if not include_catalog:
        params["nocatalog"] = ""
    if allow_expired:
        params["allow_expired"] = "1"
    return httpx.Request(
        "GET",
        base_url + "/auth/tokens",
        params=params or None,
        headers={
            "X-Auth-Token": service_token,
            "X-Subject-Token": subject_token,
            ACCESS_RULES_HEADER: ACCESS_RULES_SUPPORT,
            "Accept": "application/json",
        },
    )


def interpret_validation_response(
    status_code: int,
    body: bytes,
    *,
    now: float,
    leeway: float = 0.0,
    allow_expired: bool = False,
    include_catalog: bool = False,
    service_type: str | None = None,
) -> Identity:
    """The identity for a ``GET /v3/auth/tokens`` answer.

    Raises :class:`InvalidToken` (404; 400, 413, 414, 431: the request, so the
    token, refused; expired), :class:`ServiceTokenRejected` (401/403) or
    :class:`IdentityServiceUnavailable` (anything else that is not a well-formed 200).
    """
    return token_answer(
        status_code,
        body,
        "Keystone",
        valid=(200,),
        identity_of=lambda data: identity_from_token(
            data["token"],
            include_catalog=include_catalog,
            service_type=service_type,
            token_body=CompactJSON.member(body, "token"),
        ),
        now=now,
        leeway=leeway,
        allow_expired=allow_expired,
    )


def access_rules_restriction(
    token: Mapping[str, Any], service_type: str | None
) -> dict[str, Any] | None:
    """The ``access_rules`` restriction of a token's application credential, or None.

    None when the token has no application credential or one without access
    rules (keystonemiddleware then checks nothing). Otherwise the rules,
    ``service_type`` (this service's, None when not configured) and whether
    the token's catalog lists that type (checked per request by
    :mod:`authmw.restrictions`). Raises ``TypeError`` on malformed rules.
    """
    app_cred = token.get("application_credential")
    if not app_cred:
        return None
    if not isinstance(app_cred, Mapping):
        raise TypeError("token.application_credential must be an object")
    rules = app_cred.get("access_rules")
    if rules is None:
        return None
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
        raise TypeError("token.application_credential.access_rules must be a list of objects")
    kept = []
    for rule in rules:
        fields = {k: rule.get(k) for k in ("service", "method", "path")}
        if not all(v is None or isinstance(v, str) for v in fields.values()):
            raise TypeError("an access rule's service, method and path must be strings")
        kept.append(fields)
    data: dict[str, Any] = {"service_type": service_type, "rules": kept}
    if service_type:
        catalog = token.get("catalog")
        data["in_catalog"] = isinstance(catalog, list) and any(
            isinstance(entry, Mapping) and entry.get("type") == service_type for entry in catalog
        )
    return data


def _named(value: Any) -> tuple[str | None, str | None]:
    """(id, name) of a ``{"id": ..., "name": ...}`` object (may be absent)."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise TypeError("expected an object")
    ident, name = value.get("id"), value.get("name")
    if ident is not None and not isinstance(ident, str):
        raise TypeError("id must be a string")
    if name is not None and not isinstance(name, str):
        raise TypeError("name must be a string")
    return ident, name


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def identity_from_token(
    token: Mapping[str, Any],
    *,
    include_catalog: bool = False,
    service_type: str | None = None,
    token_body: Mapping[str, Any] | None = None,
) -> Identity:
    """Map Keystone's ``token`` object to an :class:`Identity` (raises on malformed data).

    An application credential's access rules become the identity's
    ``access_rules`` restriction, checked against ``service_type``. The
    identity keeps ``token_body`` as its body (default: ``token`` itself).
    """
    if not isinstance(token, Mapping):
        raise TypeError("token must be an object")
    user = token["user"]
    user_id, user_name = _named(user)
    if not user_id:
        raise KeyError("token.user.id")
    user_domain_id, user_domain_name = _named(user.get("domain"))

    project_id = project_name = project_domain_id = project_domain_name = None
    project = token.get("project")
    if project is not None:
        project_id, project_name = _named(project)
        project_domain_id, project_domain_name = _named(project.get("domain"))
    domain_id, domain_name = _named(token.get("domain"))

    system = token.get("system")
    if system is not None and not isinstance(system, Mapping):
        raise TypeError("token.system must be an object")
    system_scope = "all" if system and system.get("all") is True else None

    names = tuple(_named(role)[1] or "" for role in token.get("roles") or ())
    if not all(names):
        raise KeyError("token.roles[].name")
    roles = usable_roles(names)

    expires = token["expires_at"]  # Keystone always sends it: without it, fail closed
    issued = token.get("issued_at")
    is_admin_project = token.get("is_admin_project", True)
    if not isinstance(is_admin_project, bool):
        raise TypeError("token.is_admin_project must be a boolean")

    catalog = None
    if include_catalog:
        catalog = token.get("catalog")
        if catalog is not None and not isinstance(catalog, list):
            raise TypeError("token.catalog must be a list")

    app_cred = token.get("application_credential")
    if app_cred is not None and not isinstance(app_cred, Mapping):
        raise TypeError("token.application_credential must be an object")
    access_rules = access_rules_restriction(token, service_type)
    restrictions = {"access_rules": access_rules} if access_rules is not None else {}

    return Identity(
        user_id=user_id,
        user_name=user_name,
        user_domain_id=user_domain_id,
        user_domain_name=user_domain_name,
        project_id=project_id,
        project_name=project_name,
        project_domain_id=project_domain_id,
        project_domain_name=project_domain_name,
        domain_id=domain_id,
        domain_name=domain_name,
        system_scope=system_scope,
        roles=roles,
        expires_at=parse_timestamp(expires),
        issued_at=parse_timestamp(issued) if issued is not None else None,
        audit_ids=_strings(token.get("audit_ids")),
        methods=_strings(token.get("methods")),
        is_admin_project=is_admin_project,
        service_catalog=catalog,
        application_credential=app_cred,
        token_body=token if token_body is None else token_body,
        restrictions=restrictions,
    )
