"""What a caller may give a token it issues or rotates: never more than its own token.

A new (or rotated) token must not hold a role the caller lacks, a token
scope the caller's token lacks (a caller without scopes grants none: its
own token passes no scope check), outlive the caller's token, or be less
restricted than it (read-only, client networks, idle time are inherited
and may only narrow).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .._key_restrictions import normalize_networks
from ..identity import Identity
from ._records import TokenRecord

__all__ = ["Escalation", "Grant", "check_record", "grant"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class Escalation(Exception):
    """The request would give a token more than the caller's own (answered 403)."""


class Grant(dict[str, Any]):
    """issue() keywords the caller may use: roles, scopes and restrictions, checked."""


def _caller_limits(caller: Identity) -> tuple[bool, tuple[str, ...] | None, float | None]:
    limits = caller.restrictions
    methods = limits.get("methods")
    read_only = methods is not None and _SAFE.issuperset(m.upper() for m in methods)
    networks = tuple(limits["ips"]) if "ips" in limits else None
    idle = float(limits["idle"]["ttl"]) if "idle" in limits else None
    return read_only, networks, idle


def _within(children: Iterable[str], parents: Sequence[str]) -> bool:
    nets = [ipaddress.ip_network(p, strict=False) for p in parents]
    for child in children:
        net = ipaddress.ip_network(child, strict=False)
        if not any(net.version == p.version and net.subnet_of(p) for p in nets):  # type: ignore[arg-type]
            return False
    return True


def grant(caller: Identity, request: Mapping[str, Any], now: float) -> Grant:
    """issue() keywords for ``request`` (JSON fields), narrowed to what ``caller`` holds.

    Omitted fields inherit the caller's (roles, scopes, networks, idle
    time, read-only). Raises :class:`Escalation` for anything wider,
    ``ValueError``/``TypeError`` for malformed values.
    """
    read_only, networks, idle = _caller_limits(caller)
    roles = request.get("roles", list(caller.roles))
    if isinstance(roles, str) or not isinstance(roles, list):
        raise TypeError("roles: a list of role names")
    missing = [r for r in roles if not isinstance(r, str) or not caller.has_role(r)]
    if missing:
        raise Escalation(f"you cannot grant roles you do not hold: {', '.join(map(str, missing))}")
    scopes = request.get("scopes", list(caller.token_scopes))
    if isinstance(scopes, str) or not isinstance(scopes, list):
        raise TypeError("scopes: a list of scope names")
    extra = [s for s in scopes if not isinstance(s, str) or not caller.has_token_scope(s)]
    if extra:
        raise Escalation(f"your token does not hold the scopes {', '.join(map(str, extra))}")
    ips = request.get("allowed_ips")
    if ips is None:
        ips = list(networks or ())
    elif isinstance(ips, str) or not isinstance(ips, list):
        raise TypeError("allowed_ips: a list of networks")
    ips = list(normalize_networks(ips))
    if networks is not None and not (ips and _within(ips, networks)):
        raise Escalation("the networks must lie within your own token's networks")
    want_ro = request.get("read_only", read_only)
    if not isinstance(want_ro, bool):
        raise TypeError("read_only: true or false")
    if read_only and not want_ro:
        raise Escalation("your token is read-only: so is any token it issues")
    want_idle = request.get("idle_ttl", idle)
    if want_idle is not None and (
        isinstance(want_idle, bool) or not isinstance(want_idle, (int, float))
    ):
        raise TypeError("idle_ttl: seconds")
    if idle is not None and (want_idle is None or want_idle > idle):
        raise Escalation("the idle time must not exceed your own token's")
    return Grant(
        roles=roles,
        scopes=scopes,
        allowed_ips=ips,
        read_only=want_ro,
        idle_ttl=want_idle,
    )


def _caller_end(caller: Identity) -> float | None:
    """When the caller's token ends (POSIX seconds; None: never). For an idle-limited
    token that is its end but for idleness (the idle deadline moves with use, and the
    new token inherits the idle time)."""
    idle = caller.restrictions.get("idle")
    if idle is not None:
        until = idle.get("until")
        return None if until is None else float(until)
    return None if caller.expires_at is None else caller.expires_at.timestamp()


def lifetime(caller: Identity, request: Mapping[str, Any], default: float, now: float) -> float:
    """The ttl for a new token: asked for (or ``default``), at most the caller's own time left."""
    end = _caller_end(caller)
    ttl = request.get("ttl", None)
    if ttl is None:
        ttl = default if end is None else min(default, end - now)
    elif isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError("ttl: seconds")
    if end is not None and now + float(ttl) > end + 1e-6:
        raise Escalation("the token would outlive your own")
    if ttl <= 0:
        raise Escalation("your own token has expired")
    return float(ttl)


def check_record(caller: Identity, record: TokenRecord, max_lifetime: float | None) -> None:
    """Refuse a rotation that would hand ``caller`` a secret worth more than its own token."""
    fields: dict[str, Any] = {
        "roles": list(record.roles),
        "scopes": list(record.scopes),
        "allowed_ips": list(record.allowed_ips) if record.allowed_ips else None,
        "read_only": record.read_only,
        "idle_ttl": record.idle_ttl,
    }
    if not record.allowed_ips:
        fields.pop("allowed_ips")
        if _caller_limits(caller)[1] is not None:
            raise Escalation("the token is usable from more networks than yours")
    grant(caller, fields, 0.0)
    expiry: datetime | None = record.effective_expiry(max_lifetime)
    end = _caller_end(caller)
    if end is not None and (expiry is None or expiry.timestamp() > end + 1e-6):
        raise Escalation("the token would outlive your own")
