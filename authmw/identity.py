"""The authenticated caller: an immutable value object every validator returns."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from ._compact import CompactJSON, frozen, thawed

__all__ = ["Identity", "ScopeKind", "role_name_problem"]

ScopeKind = Literal["project", "domain", "system", "unscoped"]

SCOPE_FIELDS = (
    "project_id",
    "project_name",
    "project_domain_id",
    "project_domain_name",
    "domain_id",
    "domain_name",
    "system_scope",
)
"""The :class:`Identity` fields that say what the token is scoped to, in their order
(also the scope options of a Keystone service identity)."""

TEXT_FIELDS = ("user_id", "user_name", "user_domain_id", "user_domain_name", *SCOPE_FIELDS)
"""The :class:`Identity` fields that are strings: the user, the user's domain and the
token's scope, in their order."""


def role_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a role name, or ``None`` if it can.

    Roles travel comma-separated in ``X-Roles``, which oslo.context splits on
    commas and strips: a name with a comma or white space around it would be
    read as other roles there (``"member,admin"`` and ``" admin"`` read as
    ``admin``). Control and invisible characters are refused too (the header
    renderer drops NUL: ``"\\x00admin"`` would read as ``admin``).
    """
    if not name:
        return "is empty"
    if "," in name:
        return "contains a comma"
    if name != name.strip():
        return "has white space around it"
    if not name.isprintable():
        return "contains a control or invisible character"
    return None


def _aware_utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"Identity.{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Identity.{name} must be timezone-aware")
    return value.astimezone(timezone.utc)


_SHARED_MAX = 65_536
_shared_values: dict[Any, Any] = {}
_lowered_roles: dict[tuple[str, ...], frozenset[str]] = {}
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _shared(value: Any) -> Any:
    """One object for equal values many identities hold (domains, projects, role lists),
    so a cache of many identities keeps each once. Bounded: once full, values are
    kept as they come."""
    if value is None:
        return None
    try:
        found = _shared_values.get(value)
    except TypeError:  # unhashable: not a value identities share
        return value
    if found is not None:
        return found
    if len(_shared_values) < _SHARED_MAX:
        return _shared_values.setdefault(value, value)
    return value


def _lowered(roles: tuple[str, ...]) -> frozenset[str]:
    found = _lowered_roles.get(roles)
    if found is None:
        # str.lower(), as oslo.policy: casefold() would make "\u017fervice" (long s)
        # the role "service".
        found = frozenset(r.lower() for r in roles)
        if len(_lowered_roles) < _SHARED_MAX:
            found = _lowered_roles.setdefault(roles, found)
    return found


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, in which scope, with which roles.

    Roles keep the order the identity service gave them and compare
    case-insensitively with ``str.lower()``, as oslo.policy does. A role name must be
    one ``X-Roles`` can carry (see :func:`role_name_problem`): no comma, no
    white space around it, no control character; others raise ``ValueError``.
    Timestamps are timezone-aware UTC. ``token_body`` is kept compressed and
    parsed again on each read (read it once into a variable to use it twice).
    """

    user_id: str
    user_name: str | None = None
    user_domain_id: str | None = None
    user_domain_name: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    project_domain_name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None
    system_scope: str | None = None
    roles: tuple[str, ...] = ()
    expires_at: datetime | None = None
    issued_at: datetime | None = None
    audit_ids: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    is_admin_project: bool = True
    service_catalog: tuple[Mapping[str, Any], ...] | None = field(default=None, hash=False)
    application_credential: Mapping[str, Any] | None = field(default=None, hash=False)
    token_body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Limits checked on every request (see :mod:`authmw.restrictions`).
    restrictions: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: Permissions a restricted API key was issued with (``items:read``); policy rules
    #: test them with ``token_scope:items:read``. Empty: the token passes no such check.
    token_scopes: tuple[str, ...] = ()

    # Derived once, read on every request.
    _roles_lower: frozenset[str] = field(init=False, repr=False, compare=False)
    # The pipeline's decision accepting this identity, made on first use (authmw.core).
    _decision: Any = field(default=None, init=False, repr=False, compare=False, hash=False)
    #: True for an identity served past ``cache_time`` while the identity
    #: service could not answer (``stale_if_error``).
    stale: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id:
            raise ValueError("Identity.user_id must be a non-empty string")
        setattr_ = object.__setattr__
        for name in ("roles", "audit_ids", "methods", "token_scopes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"Identity.{name} must be a sequence of strings, not a string")
            value = tuple(value)
            if not all(isinstance(v, str) for v in value):
                raise TypeError(f"Identity.{name} must contain only strings")
            if name != "audit_ids":  # audit ids are the token's own
                value = _shared(tuple(_shared(v) for v in value))
            setattr_(self, name, value)
        for role in self.roles:
            problem = role_name_problem(role)
            if problem is not None:
                raise ValueError(f"Identity.roles: role name {role!r} {problem}")
        for name in _SHARED_FIELDS:
            setattr_(self, name, _shared(getattr(self, name)))
        setattr_(self, "expires_at", _aware_utc(self.expires_at, "expires_at"))
        setattr_(self, "issued_at", _aware_utc(self.issued_at, "issued_at"))
        setattr_(self, "is_admin_project", bool(self.is_admin_project))
        if self.service_catalog is not None:
            setattr_(self, "service_catalog", frozen(list(self.service_catalog)))
        if self.application_credential is not None:
            setattr_(self, "application_credential", frozen(self.application_credential))
        if self.token_body is not None:
            setattr_(self, "token_body", CompactJSON.of(self.token_body))
        setattr_(self, "extra", frozen(self.extra) if self.extra else _EMPTY)
        if not isinstance(self.restrictions, Mapping):
            raise TypeError("Identity.restrictions must be a mapping")
        setattr_(self, "restrictions", frozen(self.restrictions) if self.restrictions else _EMPTY)
        setattr_(self, "_roles_lower", _lowered(self.roles))

    # -- scope -------------------------------------------------------------
    @property
    def scope(self) -> ScopeKind:
        """Kind of scope: ``project``, ``domain``, ``system`` or ``unscoped``."""
        if self.project_id:
            return "project"
        if self.domain_id:
            return "domain"
        if self.system_scope:
            return "system"
        return "unscoped"

    # -- roles -------------------------------------------------------------
    def has_role(self, role: str) -> bool:
        """True if the identity holds ``role`` (case-insensitive: ``str.lower()``)."""
        return role.lower() in self._roles_lower

    def has_any_role(self, *roles: str) -> bool:
        """True if the identity holds at least one of ``roles``."""
        held = self._roles_lower
        return any(r.lower() in held for r in roles)

    def has_all_roles(self, *roles: str) -> bool:
        """True if the identity holds every one of ``roles``."""
        held = self._roles_lower
        return all(r.lower() in held for r in roles)

    def has_token_scope(self, scope: str) -> bool:
        """True if the token was issued with ``scope`` (exact, case-sensitive match)."""
        return scope in self.token_scopes

    # -- expiry ------------------------------------------------------------
    @property
    def expires_timestamp(self) -> float:
        """``expires_at`` as POSIX seconds (``inf`` when the token never expires)."""
        expires = self.expires_at
        return expires.timestamp() if expires is not None else math.inf

    def is_expired(self, now: float, leeway: float = 0.0) -> bool:
        """True if the token expired before ``now`` (POSIX seconds) minus ``leeway``."""
        return self.expires_timestamp <= now - leeway

    # -- serialisation -----------------------------------------------------
    def to_dict(self, *, include_token_body: bool = False) -> dict[str, Any]:
        """JSON-ready dict; datetimes as ISO 8601 strings. Omits None values."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            if name == "token_body" and not include_token_body:
                continue
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif name in ("extra", "restrictions", "token_scopes") and not value:
                continue
            else:
                value = thawed(value)
            out[name] = value
        out["scope"] = self.scope
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identity:
        """Inverse of :meth:`to_dict`; raises ``ValueError``/``TypeError`` on bad data."""
        kwargs: dict[str, Any] = {}
        for name in _FIELDS:
            if name not in data:
                continue
            value = data[name]
            if name in ("expires_at", "issued_at") and value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be an ISO 8601 string")
                value = datetime.fromisoformat(value)
            kwargs[name] = value
        return cls(**kwargs)

    def served_stale(self) -> Identity:
        """A copy marked :attr:`stale` (served from the cache during an outage)."""
        copy = dataclasses.replace(self)
        object.__setattr__(copy, "stale", True)
        return copy

    def with_roles(self, roles: Iterable[str]) -> Identity:
        """Copy with other roles (for tests and local tooling)."""
        kwargs = {name: getattr(self, name) for name in _FIELDS}
        kwargs["roles"] = tuple(roles)
        return Identity(**kwargs)


_FIELDS = tuple(name for name, f in Identity.__dataclass_fields__.items() if f.init)
# Values many identities share, kept once (see _shared).
_SHARED_FIELDS = ("user_domain_id", "user_domain_name", *SCOPE_FIELDS)
