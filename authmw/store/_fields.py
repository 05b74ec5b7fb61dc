"""The checks on what a new token carries: who, in which scope, with which limits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._key_restrictions import normalize_networks
from ._records import MAX_DESCRIPTION, role_names, scope_names, text_field

__all__ = ["checked_fields"]


def checked_fields(
    *,
    user_id: str | None,
    user_name: str | None,
    user_domain_id: str | None,
    user_domain_name: str | None,
    project_id: str | None,
    project_name: str | None,
    project_domain_id: str | None,
    project_domain_name: str | None,
    domain_id: str | None,
    domain_name: str | None,
    system_scope: str | None,
    roles: Iterable[str],
    description: str,
    scopes: Iterable[str],
    read_only: bool,
    allowed_ips: Iterable[str],
) -> dict[str, Any]:
    """The columns of a new token from issue()'s arguments; ValueError/TypeError naming
    the argument that is wrong. Names default to ids, domains to ``default``."""
    user_id = text_field("user_id", user_id)
    user_name = text_field("user_name", user_name)
    if user_id is None and user_name is None:
        raise ValueError("user: give a user name or id")
    user_domain_id = text_field("user_domain_id", user_domain_id)
    user_domain_name = text_field("user_domain_name", user_domain_name)
    if user_domain_id is None and user_domain_name is None:
        user_domain_id, user_domain_name = "default", "Default"
    project_id = text_field("project_id", project_id)
    project_name = text_field("project_name", project_name)
    project_domain_id = text_field("project_domain_id", project_domain_id)
    project_domain_name = text_field("project_domain_name", project_domain_name)
    domain_id = text_field("domain_id", domain_id)
    domain_name = text_field("domain_name", domain_name)
    system_scope = text_field("system_scope", system_scope)
    given = [
        kind
        for kind, value in (
            ("project", project_id or project_name),
            ("domain", domain_id or domain_name),
            ("system", system_scope),
        )
        if value
    ]
    if len(given) > 1:
        raise ValueError(f"scope: a token has one scope, got {' and '.join(given)}")
    if system_scope is not None and system_scope != "all":
        raise ValueError(f"system_scope: only 'all' is supported, got {system_scope!r}")
    if project_id or project_name:
        project_id = project_id or project_name
        if project_domain_id is None and project_domain_name is None:
            project_domain_id, project_domain_name = "default", "Default"
    elif project_domain_id or project_domain_name:
        raise ValueError("project_domain: only meaningful with a project")
    if domain_id or domain_name:
        domain_id = domain_id or domain_name
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValueError(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    if description and not description.isprintable():
        raise ValueError("description must not contain control characters")
    if not isinstance(read_only, bool):
        raise TypeError("read_only must be True or False")
    return {
        "user_id": user_id or user_name,
        "user_name": user_name,
        "user_domain_id": user_domain_id,
        "user_domain_name": user_domain_name,
        "project_id": project_id,
        "project_name": project_name,
        "project_domain_id": project_domain_id,
        "project_domain_name": project_domain_name,
        "domain_id": domain_id,
        "domain_name": domain_name,
        "system_scope": system_scope,
        "roles": ",".join(role_names(roles)),
        "description": description.strip(),
        "scopes": ",".join(scope_names(scopes)),
        "read_only": int(read_only),
        "allowed_ips": ",".join(normalize_networks(allowed_ips)),
    }
