"""Token records as the store keeps them, and the checks on what goes into them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ConfigurationError, InvalidToken
from ..identity import TEXT_FIELDS

__all__ = [
    "COLUMNS",
    "DAY",
    "PUBLIC_COLUMNS",
    "REASONS",
    "IssuedToken",
    "TokenRecord",
    "TokenRejected",
    "as_datetime",
    "positive_seconds",
    "role_names",
    "scope_names",
    "text_field",
]

DAY = 86400.0
MAX_FIELD = 255
MAX_DESCRIPTION = 1024

COLUMNS = (
    "id",
    "token_hash",
    *TEXT_FIELDS,
    "roles",
    "description",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    # schema 4: restrictions fixed at issue, rotation, the pepper of the hash
    "scopes",
    "read_only",
    "allowed_ips",
    "idle_ttl",
    "rotated_at",
    "pepper_id",
)
PUBLIC_COLUMNS = tuple(c for c in COLUMNS if c != "token_hash")
UTC = timezone.utc


def as_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def positive_seconds(value: float | timedelta | None, option: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigurationError(option, f"must be a positive number of seconds, got {value!r}")
    return float(seconds)


def text_field(name: str, value: str | None, limit: int = MAX_FIELD) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    if not value.isprintable():
        raise ValueError(f"{name} must not contain control characters")
    return value


def role_names(roles: Iterable[str]) -> tuple[str, ...]:
    if isinstance(roles, str):
        raise TypeError("roles must be a sequence of role names, not a string")
    seen: set[str] = set()
    result = []
    for role in roles:
        name = text_field("role", role)
        assert name is not None
        if "," in name:
            raise ValueError(f"role {name!r} must not contain a comma")
        if name.lower() not in seen:  # str.lower(), as oslo.policy compares roles
            seen.add(name.lower())
            result.append(name)
    return tuple(result)


def scope_names(scopes: Iterable[str]) -> tuple[str, ...]:
    """Token scopes as issued: free-form names (``items:read``), no commas or spaces."""
    if isinstance(scopes, str):
        raise TypeError("scopes must be a sequence of scope names, not a string")
    result: list[str] = []
    for scope in scopes:
        name = text_field("scope", scope)
        assert name is not None
        if "," in name or any(c.isspace() for c in name):
            raise ValueError(f"scope {name!r} must not contain a comma or white space")
        if name not in result:
            result.append(name)
    return tuple(result)


REASONS = ("expired", "revoked", "rotated", "idle", "policy", "ip", "read-only")
"""Why a token or a request is refused, as logs and ``authmw check`` name it."""


class TokenRejected(InvalidToken):
    """An invalid token with a :attr:`reason` (one of :data:`REASONS`); the 401 body
    stays generic, the reason goes to the logs.

    ``TokenRejected(reason, detail)``; ``TokenRejected(message)`` re-makes one
    from its ``args`` (the cache hands a copy to each caller waiting for it).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        if detail is None:
            message = reason
            _, found, tail = message.rpartition(" (reason: ")
            reason = tail[:-1] if found and tail.endswith(")") else ""
        else:
            message = f"{detail} (reason: {reason})"
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenRecord:
    """What the store knows about a token; never the token itself."""

    id: str
    user_id: str
    user_name: str | None
    user_domain_id: str | None
    user_domain_name: str | None
    project_id: str | None
    project_name: str | None
    project_domain_id: str | None
    project_domain_name: str | None
    domain_id: str | None
    domain_name: str | None
    system_scope: str | None
    roles: tuple[str, ...]
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    scopes: tuple[str, ...] = ()
    read_only: bool = False
    allowed_ips: tuple[str, ...] = ()
    idle_ttl: float | None = None
    rotated_at: datetime | None = None
    pepper_id: str | None = None

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> TokenRecord:
        values = dict(zip(PUBLIC_COLUMNS, row, strict=True))
        for name in ("roles", "scopes", "allowed_ips"):
            values[name] = tuple(values[name].split(",")) if values[name] else ()
        for name in ("created_at", "expires_at", "revoked_at", "last_used_at", "rotated_at"):
            values[name] = as_datetime(values[name])
        values["read_only"] = bool(values["read_only"])
        return cls(**values)

    @property
    def restricted(self) -> bool:
        """True if the token carries restrictions (scopes, read-only, networks, idle time)."""
        return bool(self.scopes or self.read_only or self.allowed_ips or self.idle_ttl)

    def idle_deadline(self) -> datetime | None:
        """When the token becomes idle unless used (None without an idle time), as the
        database knows it (uses not yet written may move it)."""
        if self.idle_ttl is None:
            return None
        base = self.last_used_at or self.created_at
        return base + timedelta(seconds=self.idle_ttl)

    @property
    def scope(self) -> str:
        """``project:NAME``, ``domain:NAME``, ``system:all`` or ``unscoped``."""
        if self.project_id:
            return f"project:{self.project_name or self.project_id}"
        if self.domain_id:
            return f"domain:{self.domain_name or self.domain_id}"
        if self.system_scope:
            return f"system:{self.system_scope}"
        return "unscoped"

    def effective_expiry(self, max_lifetime: float | None = None) -> datetime | None:
        """The expiry, or the end of the store's maximum lifetime if that comes first."""
        expiry = self.expires_at
        if max_lifetime is not None:
            limit = self.created_at + timedelta(seconds=max_lifetime)
            expiry = limit if expiry is None else min(expiry, limit)
        return expiry

    def status(self, now: float | None = None, *, max_lifetime: float | None = None) -> str:
        """``revoked``, ``expired``, ``idle`` or ``active`` at ``now`` (POSIX seconds,
        default: now); ``max_lifetime``: the store's policy, which expires old tokens."""
        if self.revoked_at is not None:
            return "revoked"
        moment = time.time() if now is None else now
        expiry = self.effective_expiry(max_lifetime)
        if expiry is not None and expiry.timestamp() <= moment:
            return "expired"
        idle = self.idle_deadline()
        if idle is not None and idle.timestamp() <= moment:
            return "idle"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; datetimes as ISO 8601 strings."""
        out: dict[str, Any] = {}
        for name in PUBLIC_COLUMNS:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is the only copy of the secret; show it once."""

    token: str = field(repr=False)
    record: TokenRecord

    @property
    def id(self) -> str:
        """The token's public id (``record.id``)."""
        return self.record.id
