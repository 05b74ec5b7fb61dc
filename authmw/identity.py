"""The authenticated caller: an immutable value object every validator returns."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import FrozenInstanceError
from datetime import datetime
from typing import Any, Literal

from ._compact import CompactJSON, frozen, thawed
from ._kept import EMPTY, datetime_of, lowered, moment, shared, shared_strings, strings

__all__ = ["Identity", "ScopeKind", "role_name_problem"]

ScopeKind = Literal["project", "domain", "system", "unscoped"]


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


def _body(value: Mapping[str, Any] | None) -> tuple[bytes | Mapping[str, Any] | None, str | None]:
    """(what the identity keeps, the member of the kept text that is the body)."""
    if value is None:
        return None, None
    compact = CompactJSON.of(value)
    return compact.packed() if isinstance(compact, CompactJSON) else (compact, None)


# Identity._rest: the fields requests seldom read, in one tuple that identities with
# equal values share (most hold the same methods, no catalog, no extra...).
_METHODS, _ADMIN, _CATALOG, _CREDENTIAL, _EXTRA, _SCOPES, _MEMBER, _STALE = range(8)


class Identity:
    """Who is calling, in which scope, with which roles.

    Immutable; compares and hashes by value (``token_body`` and ``extra`` apart).
    Roles keep the order the identity service gave them and compare
    case-insensitively with ``str.lower()``, as oslo.policy does. A role name must be
    one ``X-Roles`` can carry (see :func:`role_name_problem`): no comma, no
    white space around it, no control character; others raise ``ValueError``.
    Timestamps are timezone-aware UTC. ``token_body`` is kept compressed and
    parsed again on each read (read it once into a variable to use it twice).
    A cache holds many identities, so each keeps its values compactly and
    builds the seldom-read ones (timestamps, the body) on each read.
    """

    __slots__ = (
        "_audit",
        "_body",
        "_decision",
        "_expires",
        "_issued",
        "_rest",
        "_roles_lower",
        "domain_id",
        "domain_name",
        "project_domain_id",
        "project_domain_name",
        "project_id",
        "project_name",
        "restrictions",
        "roles",
        "system_scope",
        "user_domain_id",
        "user_domain_name",
        "user_id",
        "user_name",
    )
    # The constructor's arguments, in their order (matched by position).
    __match_args__ = (
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
        "expires_at",
        "issued_at",
        "audit_ids",
        "methods",
        "is_admin_project",
        "service_catalog",
        "application_credential",
        "token_body",
        "extra",
        "restrictions",
        "token_scopes",
    )
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
    #: Limits checked on every request (see :mod:`authmw.restrictions`).
    restrictions: Mapping[str, Any]
    _expires: float | datetime | None
    _issued: float | datetime | None
    _audit: str | tuple[str, ...]
    _body: bytes | Mapping[str, Any] | None
    _rest: tuple[Any, ...]
    _roles_lower: frozenset[str]
    # The pipeline's decision accepting this identity, made on first use (authmw.core).
    _decision: Any

    def __init__(
        self,
        user_id: str,
        user_name: str | None = None,
        user_domain_id: str | None = None,
        user_domain_name: str | None = None,
        project_id: str | None = None,
        project_name: str | None = None,
        project_domain_id: str | None = None,
        project_domain_name: str | None = None,
        domain_id: str | None = None,
        domain_name: str | None = None,
        system_scope: str | None = None,
        roles: Iterable[str] = (),
        expires_at: datetime | None = None,
        issued_at: datetime | None = None,
        audit_ids: Iterable[str] = (),
        methods: Iterable[str] = (),
        is_admin_project: bool = True,
        service_catalog: Iterable[Mapping[str, Any]] | None = None,
        application_credential: Mapping[str, Any] | None = None,
        token_body: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        restrictions: Mapping[str, Any] | None = None,
        token_scopes: Iterable[str] = (),
    ) -> None:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("Identity.user_id must be a non-empty string")
        if restrictions is not None and not isinstance(restrictions, Mapping):
            raise TypeError("Identity.restrictions must be a mapping")
        held = shared_strings("roles", roles)
        for role in held:
            problem = role_name_problem(role)
            if problem is not None:
                raise ValueError(f"Identity.roles: role name {role!r} {problem}")
        audit = strings("audit_ids", audit_ids)  # the token's own: not shared
        body, member = _body(token_body)
        set_ = object.__setattr__
        set_(self, "user_id", user_id)
        set_(self, "user_name", user_name)
        values = (user_domain_id, user_domain_name, project_id, project_name, project_domain_id,
                  project_domain_name, domain_id, domain_name, system_scope)  # fmt: skip
        for name, value in zip(_SHARED_FIELDS, values, strict=True):
            set_(self, name, shared(value))
        set_(self, "roles", held)
        set_(self, "restrictions", frozen(restrictions) if restrictions else EMPTY)
        set_(self, "_expires", moment(expires_at, "expires_at"))
        set_(self, "_issued", moment(issued_at, "issued_at"))
        set_(self, "_audit", audit[0] if len(audit) == 1 else audit)
        set_(self, "_body", body)
        rest = (
            shared_strings("methods", methods),
            bool(is_admin_project),
            frozen(list(service_catalog)) if service_catalog is not None else None,
            frozen(application_credential) if application_credential is not None else None,
            frozen(extra) if extra else None,
            shared_strings("token_scopes", token_scopes),
            member,
            False,
        )
        set_(self, "_rest", shared(rest))
        set_(self, "_roles_lower", lowered(held))
        set_(self, "_decision", None)

    # -- the fields kept compactly -------------------------------------------------------------
    @property
    def expires_at(self) -> datetime | None:
        """When the token expires (UTC), or None."""
        return datetime_of(self._expires)

    @property
    def issued_at(self) -> datetime | None:
        """When the token was issued (UTC), or None."""
        return datetime_of(self._issued)

    @property
    def audit_ids(self) -> tuple[str, ...]:
        """The token's audit ids (Keystone: its own, then the chain's first)."""
        audit = self._audit
        return (audit,) if isinstance(audit, str) else audit

    @property
    def token_body(self) -> Mapping[str, Any] | None:
        """The identity service's answer for the token, read-only (parsed on each read)."""
        body = self._body
        if isinstance(body, bytes):
            return CompactJSON.unpacked(body, self._rest[_MEMBER])
        return body

    @property
    def methods(self) -> tuple[str, ...]:
        """How the user authenticated (``password``, ``token``...)."""
        methods: tuple[str, ...] = self._rest[_METHODS]
        return methods

    @property
    def is_admin_project(self) -> bool:
        """Keystone's ``is_admin_project`` (True when the service does not say)."""
        admin: bool = self._rest[_ADMIN]
        return admin

    @property
    def service_catalog(self) -> tuple[Mapping[str, Any], ...] | None:
        """The token's service catalog, read-only, or None."""
        catalog: tuple[Mapping[str, Any], ...] | None = self._rest[_CATALOG]
        return catalog

    @property
    def application_credential(self) -> Mapping[str, Any] | None:
        """The application credential the token came from, read-only, or None."""
        credential: Mapping[str, Any] | None = self._rest[_CREDENTIAL]
        return credential

    @property
    def extra(self) -> Mapping[str, Any]:
        """What a validator adds beyond the fields (claims, store metadata), read-only."""
        extra: Mapping[str, Any] | None = self._rest[_EXTRA]
        return extra if extra is not None else EMPTY

    @property
    def token_scopes(self) -> tuple[str, ...]:
        """Permissions a restricted API key was issued with (``items:read``); policy
        rules test them with ``token_scope:items:read``. Empty: the token passes no
        such check."""
        scopes: tuple[str, ...] = self._rest[_SCOPES]
        return scopes

    @property
    def stale(self) -> bool:
        """True for an identity served past ``cache_time`` while the identity service
        could not answer (``stale_if_error``)."""
        stale: bool = self._rest[_STALE]
        return stale

    # -- value semantics -------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _hashed(self) -> tuple[Any, ...]:
        # What equality compares but the catalog, the credential and the restrictions
        # (mappings, unhashable), as the dataclass this was hashed.
        rest = self._rest
        return (
            *(getattr(self, name) for name in TEXT_FIELDS),
            self.roles,
            self._expires,
            self._issued,
            self._audit,
            rest[_METHODS],
            rest[_ADMIN],
            rest[_SCOPES],
        )

    def _compared(self) -> tuple[Any, ...]:
        rest = self._rest
        return (*self._hashed(), rest[_CATALOG], rest[_CREDENTIAL], self.restrictions)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Identity)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._hashed())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _SHOWN)
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain values, built again on load (read-only mappings cannot be pickled).
        fields = {name: thawed(getattr(self, name)) for name in _FIELDS}
        return _rebuilt, (type(self), fields, self.stale)

    def replace(self, **changes: Any) -> Identity:
        """A copy with ``changes`` (constructor arguments by name)."""
        unknown = changes.keys() - set(_FIELDS)
        if unknown:
            raise TypeError(f"Identity has no field {sorted(unknown)[0]!r}")
        return type(self)(**{**{name: getattr(self, name) for name in _FIELDS}, **changes})

    __replace__ = replace  # copy.replace() (Python 3.13)

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
        expires = self._expires
        if expires is None:
            return math.inf
        return expires if isinstance(expires, float) else expires.timestamp()

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
        copy = type(self).__new__(type(self))
        for name in _KEPT:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "_rest", (*self._rest[:_STALE], True))
        object.__setattr__(copy, "_decision", None)
        return copy

    def with_roles(self, roles: Iterable[str]) -> Identity:
        """Copy with other roles (for tests and local tooling)."""
        return self.replace(roles=tuple(roles))


_FIELDS = Identity.__match_args__
TEXT_FIELDS = _FIELDS[:11]
"""The :class:`Identity` fields that are strings: the user, the user's domain and the
token's scope, in their order."""
SCOPE_FIELDS = TEXT_FIELDS[4:]
"""The :class:`Identity` fields that say what the token is scoped to, in their order
(also the scope options of a Keystone service identity)."""
_SHOWN = tuple(name for name in _FIELDS if name not in ("token_body", "extra"))
_KEPT = tuple(name for name in Identity.__slots__ if name != "_decision")


def _rebuilt(kind: type[Identity], fields: dict[str, Any], stale: bool) -> Identity:
    identity = kind(**fields)
    return identity.served_stale() if stale else identity


# Values many identities share, kept once (see authmw._kept.shared), in the constructor's order.
_SHARED_FIELDS = ("user_domain_id", "user_domain_name", *SCOPE_FIELDS)
