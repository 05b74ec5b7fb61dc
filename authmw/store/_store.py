"""The local token store: issue, list, revoke and validate API tokens kept in SQL."""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import Identity
from ..validators.base import RevocationListener, run_blocking
from ._backend import Backend, open_backend
from ._tokens import TokenHasher, is_well_formed, new_token

__all__ = ["DEFAULT_URL", "IssuedToken", "LocalTokenStore", "TokenRecord"]

log = logging.getLogger("authmw.store")

DEFAULT_URL = "sqlite:///authmw-tokens.db"
"""Where the command line keeps tokens unless told otherwise: a file in the working directory."""

_DAY = 86400.0
_MAX_FIELD = 255
_MAX_DESCRIPTION = 1024

_COLUMNS = (
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
_PUBLIC_COLUMNS = tuple(c for c in _COLUMNS if c != "token_hash")
# Row positions used on the validation path.
_ID, _HASH, _ROLES, _CREATED, _EXPIRES, _REVOKED, _LAST_USED = (
    _COLUMNS.index(c)
    for c in ("id", "token_hash", "roles", "created_at", "expires_at", "revoked_at", "last_used_at")
)

_utc = timezone.utc


def _datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, _utc)


def _seconds(value: float | timedelta | None, option: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigurationError(option, f"must be a positive number of seconds, got {value!r}")
    return float(seconds)


def _text(name: str, value: str | None, limit: int = _MAX_FIELD) -> str | None:
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


def _roles(roles: Iterable[str]) -> tuple[str, ...]:
    if isinstance(roles, str):
        raise TypeError("roles must be a sequence of role names, not a string")
    seen: set[str] = set()
    result = []
    for role in roles:
        name = _text("role", role)
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
        values = dict(zip(_PUBLIC_COLUMNS, row, strict=True))
        values["roles"] = tuple(values["roles"].split(",")) if values["roles"] else ()
        for name in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            values[name] = _datetime(values[name])
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
        for name in _PUBLIC_COLUMNS:
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


class LocalTokenStore:
    """API tokens issued and checked locally, kept in SQLite or PostgreSQL.

    ``url`` is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    (or a plain file path) or ``postgresql://user:pass@host/db``; psycopg is
    imported only for the latter. The schema is created and migrated
    forward on first use (table ``authmw_schema_version``).

    Only a digest of each token is stored: HMAC-SHA-256 with ``pepper``
    when one is given (keep it outside the database), SHA-256 otherwise.
    A store remembers which, and refuses to open with another pepper.

    This object is a validator (``validate``/``avalidate``), safe to share
    between threads; several processes may use one SQLite file (WAL mode,
    busy timeout ``timeout``). Database failures raise
    :class:`~authmw.IdentityServiceUnavailable`; unknown, expired and
    revoked tokens :class:`~authmw.InvalidToken`.

    ``max_ttl`` caps the lifetime of new tokens (None: no cap) and
    ``require_expiry`` refuses tokens without one. ``last_used_at`` is
    written at most once per ``touch_interval`` seconds per token (None:
    never). ``connect=False`` defers opening the database to first use.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pepper: str | bytes | None = None,
        max_ttl: float | timedelta | None = 365 * _DAY,
        require_expiry: bool = True,
        leeway: float = 0.0,
        touch_interval: float | None = 60.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        connect: bool = True,
    ) -> None:
        if isinstance(pepper, str):
            pepper = pepper.encode("utf-8")
        if pepper is not None and len(pepper) < 16:
            raise ConfigurationError("pepper", "must be at least 16 bytes (use a random secret)")
        self.max_ttl = _seconds(max_ttl, "max_ttl")
        self.require_expiry = bool(require_expiry)
        if self.require_expiry is False and max_ttl is not None:
            # A cap implies an expiry; refusing the combination avoids a silent surprise.
            raise ConfigurationError(
                "require_expiry", "set max_ttl=None to allow tokens without expiry"
            )
        self.leeway = float(leeway)
        self.touch_interval = _seconds(touch_interval, "touch_interval")
        timeout_seconds = _seconds(timeout, "timeout")
        assert timeout_seconds is not None
        self._hasher = TokenHasher(pepper)
        self._clock = clock
        self._backend: Backend = open_backend(url, timeout=timeout_seconds)
        self._listeners: list[RevocationListener] = []
        self._open_lock = threading.Lock()
        self._opened = False
        self._touch_paused_until = 0.0
        b = self._backend
        columns = ", ".join(_COLUMNS)
        public = ", ".join(_PUBLIC_COLUMNS)
        self._q_by_hash = b.sql(f"SELECT {columns} FROM authmw_tokens WHERE token_hash = ?")  # noqa: S608
        self._q_by_id = b.sql(f"SELECT {public} FROM authmw_tokens WHERE id = ?")  # noqa: S608
        self._q_insert = b.sql(
            f"INSERT INTO authmw_tokens ({columns}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608
        )
        self._q_list = f"SELECT {public} FROM authmw_tokens"  # noqa: S608
        self._q_touch = b.sql(
            "UPDATE authmw_tokens SET last_used_at = ? "
            "WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)"
        )
        self._q_revoke = b.sql(
            "UPDATE authmw_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        )
        if connect:
            try:
                self.open()
            except BaseException:
                self.close()
                raise

    # -- life cycle --------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._backend.display_url

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._backend.dialect

    def open(self) -> None:
        """Connect, create or migrate the schema and check the pepper; idempotent.

        Raises :class:`~authmw.ConfigurationError` for a store this
        configuration cannot use, :class:`~authmw.IdentityServiceUnavailable`
        when the database cannot be reached.
        """
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            self._backend.prepare()
            self._backend.run(self._migrate)
            self._opened = True

    def close(self) -> None:
        """Close pooled connections; later calls raise IdentityServiceUnavailable."""
        self._backend.close()

    def __enter__(self) -> LocalTokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalTokenStore({self.url!r})"

    @property
    def schema_version(self) -> int:
        """The schema version of the database (the highest migration applied)."""
        self.open()
        row = self._backend.fetchone("SELECT MAX(version) FROM authmw_schema_version")
        return int(row[0] or 0)

    def _migrate(self, conn: Any) -> None:
        b = self._backend
        latest = b.migrations[-1][0]
        version, scheme = self._schema_state(conn)
        if version < latest or scheme is None:
            with b.exclusive(conn):
                conn.execute(b.version_table)
                version, scheme = self._schema_state(conn)
                self._check_version(version, latest)
                for number, statements in b.migrations:
                    if number <= version:
                        continue
                    log.info(
                        "token store %s: migrating schema to version %d", b.display_url, number
                    )
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute(
                        b.sql(
                            "INSERT INTO authmw_schema_version (version, applied_at) VALUES (?, ?)"
                        ),
                        (number, time.time()),
                    )
                if scheme is None:
                    scheme = self._hasher.scheme
                    conn.execute(
                        b.sql("INSERT INTO authmw_settings (key, value) VALUES (?, ?)"),
                        ("token_hash", scheme),
                    )
        self._check_version(version, latest)
        self._check_scheme(scheme)

    def _schema_state(self, conn: Any) -> tuple[int, str | None]:
        b = self._backend
        if b.dialect == "sqlite":
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                ("authmw_schema_version",),
            ).fetchone()
        else:
            exists = conn.execute("SELECT to_regclass('authmw_schema_version')").fetchone()[0]
        if not exists:
            return 0, None
        version = int(
            conn.execute("SELECT MAX(version) FROM authmw_schema_version").fetchone()[0] or 0
        )
        if version < 1:
            return version, None
        row = conn.execute(
            b.sql("SELECT value FROM authmw_settings WHERE key = ?"), ("token_hash",)
        ).fetchone()
        return version, None if row is None else str(row[0])

    def _check_version(self, version: int, latest: int) -> None:
        if version > latest:
            raise ConfigurationError(
                "url",
                f"token store {self.url} has schema version {version}, newer than this "
                f"authmw supports ({latest}); upgrade authmw",
            )

    def _check_scheme(self, scheme: str | None) -> None:
        mine = self._hasher.scheme
        if scheme is None or hmac.compare_digest(scheme, mine):
            return
        if scheme == "sha256":
            message = "this token store was created without a pepper; remove the pepper setting"
        elif mine == "sha256":
            message = "this token store was created with a pepper; configure the same pepper"
        else:
            message = "this is not the pepper this token store was created with"
        raise ConfigurationError("pepper", message)

    # -- administration ----------------------------------------------------
    def issue(
        self,
        *,
        user_id: str | None = None,
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
        description: str = "",
        ttl: float | timedelta | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedToken:
        """Create a token and return it with its record; the secret is not kept.

        The user is ``user_id`` and/or ``user_name`` (the id defaults to the
        name). The scope is a project, a domain or ``system_scope="all"``
        (or none). Domains of the user and project default to Keystone's
        ``default``/``Default``. The lifetime is ``ttl`` (seconds or a
        timedelta) or ``expires_at``. Raises ``ValueError`` for bad input.
        """
        user_id = _text("user_id", user_id)
        user_name = _text("user_name", user_name)
        if user_id is None and user_name is None:
            raise ValueError("user: give a user name or id")
        user_domain_id = _text("user_domain_id", user_domain_id)
        user_domain_name = _text("user_domain_name", user_domain_name)
        if user_domain_id is None and user_domain_name is None:
            user_domain_id, user_domain_name = "default", "Default"
        project_id = _text("project_id", project_id)
        project_name = _text("project_name", project_name)
        project_domain_id = _text("project_domain_id", project_domain_id)
        project_domain_name = _text("project_domain_name", project_domain_name)
        domain_id = _text("domain_id", domain_id)
        domain_name = _text("domain_name", domain_name)
        system_scope = _text("system_scope", system_scope)
        scopes = [
            kind
            for kind, given in (
                ("project", project_id or project_name),
                ("domain", domain_id or domain_name),
                ("system", system_scope),
            )
            if given
        ]
        if len(scopes) > 1:
            raise ValueError(f"scope: a token has one scope, got {' and '.join(scopes)}")
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
        role_names = _roles(roles)
        if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
            raise ValueError(
                f"description must be a string of at most {_MAX_DESCRIPTION} characters"
            )
        if description and not description.isprintable():
            raise ValueError("description must not contain control characters")

        now = self._clock()
        expires = self._expiry(now, ttl, expires_at)
        token = new_token()
        row = (
            secrets.token_hex(8),
            self._hasher(token),
            user_id or user_name,
            user_name,
            user_domain_id,
            user_domain_name,
            project_id,
            project_name,
            project_domain_id,
            project_domain_name,
            domain_id,
            domain_name,
            system_scope,
            ",".join(role_names),
            description.strip(),
            now,
            expires,
            None,
            None,
        )
        self.open()
        self._backend.execute(self._q_insert, row)
        record = TokenRecord._from_row(row[:_HASH] + row[_HASH + 1 :])
        log.info("issued token %s for user %s", record.id, record.user_id)
        return IssuedToken(token=token, record=record)

    def _expiry(
        self, now: float, ttl: float | timedelta | None, expires_at: datetime | None
    ) -> float | None:
        if ttl is not None and expires_at is not None:
            raise ValueError("ttl: give ttl or expires_at, not both")
        if ttl is not None:
            seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ValueError(f"ttl: must be a positive number of seconds, got {ttl!r}")
            expires: float | None = now + float(seconds)
        elif expires_at is not None:
            if expires_at.tzinfo is None or expires_at.utcoffset() is None:
                raise ValueError("expires_at must be timezone-aware")
            expires = expires_at.timestamp()
            if expires <= now:
                raise ValueError("expires_at is in the past")
        else:
            expires = None
        if expires is None:
            if self.require_expiry:
                raise ValueError("ttl: tokens of this store must expire; give a ttl")
            return None
        if self.max_ttl is not None and expires - now > self.max_ttl + 1e-6:
            from ._ttl import format_duration

            raise ValueError(f"ttl: longer than the maximum of {format_duration(self.max_ttl)}")
        return expires

    def get(self, token_id: str) -> TokenRecord | None:
        """The record of token ``token_id`` (its public id), or None."""
        self.open()
        row = self._backend.fetchone(self._q_by_id, (token_id,))
        return None if row is None else TokenRecord._from_row(row)

    def list_tokens(
        self, *, user: str | None = None, include_inactive: bool = False, limit: int | None = None
    ) -> list[TokenRecord]:
        """Records, oldest first; of one user (id or name) if ``user`` is given.

        Revoked and expired tokens are left out unless ``include_inactive``.
        """
        self.open()
        where: list[str] = []
        params: list[Any] = []
        if user is not None:
            where.append("(user_id = ? OR user_name = ?)")
            params += [user, user]
        if not include_inactive:
            where.append("revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)")
            params.append(self._clock())
        statement = self._q_list
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += " ORDER BY created_at, id"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        rows = self._backend.fetchall(self._backend.sql(statement), params)
        return [TokenRecord._from_row(row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke token ``token_id``; True if this call revoked it.

        Takes effect at once in this process: revocation listeners (the
        middleware's cache) drop the token, so revoke through the store
        instance the middleware uses. Other processes (and other instances)
        validate against the database only when their cache misses, so
        there a revoked token stays accepted for at most their
        ``cache_time`` (default 300 s); use ``cache_time=0`` where that is
        too long.
        """
        self.open()
        changed = self._backend.execute(self._q_revoke, (self._clock(), token_id))
        if not changed:
            return False
        log.info("revoked token %s", token_id)
        for listener in list(self._listeners):
            try:
                listener(token_id)
            except Exception:
                log.exception("revocation listener %r failed", listener)
        return True

    def purge(self, *, expired: bool = True, revoked: bool = False, older_than: float = 0.0) -> int:
        """Delete tokens that expired (and/or were revoked) over ``older_than`` seconds ago.

        Returns how many were deleted. Such tokens are already refused; this
        only keeps the table small.
        """
        if not expired and not revoked:
            raise ValueError("purge: choose expired and/or revoked tokens")
        self.open()
        cutoff = self._clock() - older_than
        clauses = []
        if expired:
            clauses.append("(expires_at IS NOT NULL AND expires_at <= ?)")
        if revoked:
            clauses.append("(revoked_at IS NOT NULL AND revoked_at <= ?)")
        statement = "DELETE FROM authmw_tokens WHERE " + " OR ".join(clauses)  # noqa: S608
        return self._backend.execute(self._backend.sql(statement), [cutoff] * len(clauses))

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Register ``listener(token_id)``, called after each revocation in this process."""
        self._listeners.append(listener)

    # -- validation --------------------------------------------------------
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """The identity of ``token``; raises InvalidToken or IdentityServiceUnavailable."""
        if not is_well_formed(token):
            raise InvalidToken("malformed token")
        if not self._opened:
            try:
                self.open()
            except ConfigurationError as exc:
                # Fail closed, as for any store that cannot answer.
                raise IdentityServiceUnavailable(str(exc)) from exc
        digest = self._hasher(token)
        row = self._backend.fetchone(self._q_by_hash, (digest,))
        if row is None or not hmac.compare_digest(bytes(row[_HASH]), digest):
            raise InvalidToken("unknown token")
        if row[_REVOKED] is not None:
            raise InvalidToken("token revoked")
        now = self._clock()
        expires = row[_EXPIRES]
        if not allow_expired and expires is not None and expires <= now - self.leeway:
            raise InvalidToken("token expired")
        self._touch(row[_ID], row[_LAST_USED], now)
        return Identity(
            user_id=row[2],
            user_name=row[3],
            user_domain_id=row[4],
            user_domain_name=row[5],
            project_id=row[6],
            project_name=row[7],
            project_domain_id=row[8],
            project_domain_name=row[9],
            domain_id=row[10],
            domain_name=row[11],
            system_scope=row[12],
            roles=row[_ROLES].split(",") if row[_ROLES] else (),
            expires_at=_datetime(expires),
            issued_at=_datetime(row[_CREATED]),
            audit_ids=(row[_ID],),
            methods=("token",),
        )

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Same as :meth:`validate`, with the database call in a worker thread."""
        if not is_well_formed(token):
            raise InvalidToken("malformed token")
        return await run_blocking(
            functools.partial(self.validate, token, allow_expired=allow_expired)
        )

    def _touch(self, token_id: str, last_used: float | None, now: float) -> None:
        interval = self.touch_interval
        if interval is None or (last_used is not None and now - last_used < interval):
            return
        if now < self._touch_paused_until:
            return
        try:
            self._backend.execute(self._q_touch, (now, token_id, now - interval))
        except IdentityServiceUnavailable as exc:
            # Bookkeeping must not fail a valid request (e.g. a read-only replica).
            self._touch_paused_until = now + interval
            log.warning("cannot record last use of token %s: %s", token_id, exc)

    # -- bulk loading (benchmarks, imports) --------------------------------
    def _insert_rows(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert raw rows (all columns, in table order) in one transaction."""
        self.open()
        b = self._backend

        def load(conn: Any) -> int:
            with b.transaction(conn):
                return b.bulk_insert(conn, "authmw_tokens", _COLUMNS, rows)

        return b.run(load)
