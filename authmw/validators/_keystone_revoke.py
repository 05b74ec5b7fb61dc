"""Keystone's revocation events (``GET /v3/OS-REVOKE/events``) and which tokens they name.

An event names every token that matches all of its attributes, as Keystone
itself decides (``keystone/revoke/backends/sql.py`` and
``keystone/models/revoke_model.py``): issued at or before ``issued_before``;
``user_id`` is the token's user, trustor or trustee; ``project_id``,
``audit_id``, ``OS-TRUST:trust_id`` equal the token's; ``domain_id`` is the
user's domain or the scope's; ``domain_scope_id`` the scope's domain;
``expires_at`` the token's expiry (to the second); ``OS-OAUTH1:consumer_id``,
``audit_chain_id`` (the parent audit id) and ``role_id`` (one of the
token's role ids) likewise. Matching needs the token's body
(``Identity.token_body``), which the Keystone validator keeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx

from ..client._base import parse_timestamp
from ..errors import IdentityServiceUnavailable
from ..identity import Identity

__all__ = ["RevocationEvent", "build_events_request", "parse_events"]

_FIELDS = {
    "user_id": "user_id",
    "project_id": "project_id",
    "domain_id": "domain_id",
    "domain_scope_id": "domain_scope_id",
    "role_id": "role_id",
    "audit_id": "audit_id",
    "audit_chain_id": "audit_chain_id",
    "OS-TRUST:trust_id": "trust_id",
    "OS-OAUTH1:consumer_id": "consumer_id",
}


def _second(value: datetime | None) -> datetime | None:
    return value.replace(microsecond=0) if value is not None else None


@dataclass(frozen=True)
class RevocationEvent:
    """One revocation event; :meth:`matches` tells whether it names a token."""

    issued_before: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    user_id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None
    domain_scope_id: str | None = None
    role_id: str | None = None
    audit_id: str | None = None
    audit_chain_id: str | None = None
    trust_id: str | None = None
    consumer_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RevocationEvent:
        """An event from its JSON form (raises ValueError/TypeError on bad data)."""
        values: dict[str, Any] = {}
        for name, attribute in _FIELDS.items():
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string")
            values[attribute] = value
        for name in ("issued_before", "revoked_at", "expires_at"):
            value = data.get(name)
            values[name] = parse_timestamp(value) if value is not None else None
        return cls(**values)

    def matches(self, identity: Identity) -> bool:
        """True if the token behind ``identity`` is revoked by this event."""
        issued = identity.issued_at
        if self.issued_before is not None and issued is not None and issued > self.issued_before:
            return False
        audit_ids = identity.audit_ids
        scope_domain = identity.project_domain_id if identity.project_id else identity.domain_id
        checks = (
            (self.project_id, (identity.project_id,)),
            (self.audit_id, (audit_ids[0] if audit_ids else None,)),
            (self.domain_id, (identity.user_domain_id, scope_domain)),
            (self.domain_scope_id, (scope_domain,)),
            (self.audit_chain_id, (audit_ids[1] if len(audit_ids) > 1 else None,)),
        )
        if not _all_match(checks):
            return False
        expires = _second(identity.expires_at)
        if self.expires_at is not None and _second(self.expires_at) != expires:
            return False
        body_free = self.trust_id is None and self.consumer_id is None and self.role_id is None
        if body_free and self.user_id in (None, identity.user_id):
            return True  # decided without the token body (the common case: no parse)
        facts = _body_facts(identity)
        return _all_match(
            (
                (self.user_id, (identity.user_id, facts["trustor_id"], facts["trustee_id"])),
                (self.trust_id, (facts["trust_id"],)),
                (self.consumer_id, (facts["consumer_id"],)),
                (self.role_id, facts["role_ids"]),
            )
        )


def _all_match(checks: tuple[tuple[str | None, tuple[Any, ...]], ...]) -> bool:
    return all(wanted is None or wanted in values for wanted, values in checks)


def _body_facts(identity: Identity) -> dict[str, Any]:
    """What matching needs beyond the Identity's fields, from the token body (one parse)."""
    body: Any = dict((identity.token_body or {}).items())
    trust = body.get("OS-TRUST:trust") or {}
    oauth = body.get("OS-OAUTH1") or {}
    return {
        "role_ids": tuple(
            role.get("id") for role in body.get("roles") or () if isinstance(role, Mapping)
        ),
        "trust_id": trust.get("id"),
        "trustor_id": (trust.get("trustor_user") or {}).get("id"),
        "trustee_id": (trust.get("trustee_user") or {}).get("id"),
        "consumer_id": oauth.get("consumer_id"),
    }


def build_events_request(
    base_url: str, service_token: str, since: datetime | None
) -> httpx.Request:
    """``GET {base_url}/OS-REVOKE/events[?since=...]`` with the service token."""
    params = None
    if since is not None:
        params = {"since": since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    return httpx.Request(
        "GET",
        base_url + "/OS-REVOKE/events",
        params=params,
        headers={"X-Auth-Token": service_token, "Accept": "application/json"},
    )


def parse_events(status: int, body: bytes) -> list[RevocationEvent]:
    """The events of a 200 answer; anything else is an outage of the event feed."""
    if status != 200:
        raise IdentityServiceUnavailable(f"Keystone answered {status} to the revocation events")
    try:
        data = json.loads(body)
        return [RevocationEvent.from_json(e) for e in data["events"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IdentityServiceUnavailable(
            f"malformed revocation events from Keystone ({type(exc).__name__})"
        ) from None
