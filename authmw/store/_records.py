"""Token records as the store keeps them, and the checks on what goes into them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "COLUMNS",
    "DAY",
    "PUBLIC_COLUMNS",
    "IssuedToken",
    "TokenRecord",
    "as_datetime",
    "positive_seconds",
    "role_names",
    "text_field",
]

DAY = 86400.0
MAX_FIELD = 255
MAX_DESCRIPTION = 1024

COLUMNS = (
    "id",
    "token_hash",
    "user_id",
    "user_name",
    "user_domain_id",
    "user_domain_name",
    "project_id",
    "project_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "system_scope",
    "roles",
    "description",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
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

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> TokenRecord:
        values = dict(zip(PUBLIC_COLUMNS, row, strict=True))
        values["roles"] = tuple(values["roles"].split(",")) if values["roles"] else ()
        for name in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            values[name] = as_datetime(values[name])
        return cls(**values)

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

    def status(self, now: float | None = None) -> str:
        """``revoked``, ``expired`` or ``active`` at ``now`` (POSIX seconds, default: now)."""
        if self.revoked_at is not None:
            return "revoked"
        moment = time.time() if now is None else now
        if self.expires_at is not None and self.expires_at.timestamp() <= moment:
            return "expired"
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
