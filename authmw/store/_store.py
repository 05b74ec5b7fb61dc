"""The local token store: issue, list, revoke and validate API tokens kept in SQL."""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import Identity
from ..validators.base import RevocationListener, run_blocking
from ._backend import Backend, open_backend
from ._events import Event, Watcher, add_event, latest_event
from ._records import (
    COLUMNS,
    DAY,
    MAX_DESCRIPTION,
    PUBLIC_COLUMNS,
    IssuedToken,
    TokenRecord,
    as_datetime,
    positive_seconds,
    role_names,
    text_field,
)
from ._schema import check_scheme, migrate
from ._tokens import TokenHasher, is_well_formed, new_token

__all__ = ["DEFAULT_URL", "IssuedToken", "LocalTokenStore", "TokenRecord"]

log = logging.getLogger("authmw.store")

DEFAULT_URL = "sqlite:///authmw-tokens.db"
"""Where the command line keeps tokens unless told otherwise: a file in the working directory."""

# Row positions used on the validation path.
_ID, _HASH, _ROLES, _CREATED, _EXPIRES, _REVOKED, _LAST_USED = (
    COLUMNS.index(c)
    for c in ("id", "token_hash", "roles", "created_at", "expires_at", "revoked_at", "last_used_at")
)


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

    Revocations made by other processes (or hosts) reach this instance's
    revocation listeners within about ``watch_interval`` seconds (0.25; on
    PostgreSQL at once, through ``LISTEN``): a thread per process starts at
    the first validation in that process (so also in each worker forked
    after the store was built). ``watch_interval=None`` turns that off.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pepper: str | bytes | None = None,
        max_ttl: float | timedelta | None = 365 * DAY,
        require_expiry: bool = True,
        leeway: float = 0.0,
        touch_interval: float | None = 60.0,
        timeout: float = 5.0,
        watch_interval: float | None = 0.25,
        clock: Callable[[], float] = time.time,
        connect: bool = True,
    ) -> None:
        if isinstance(pepper, str):
            pepper = pepper.encode("utf-8")
        if pepper is not None and len(pepper) < 16:
            raise ConfigurationError("pepper", "must be at least 16 bytes (use a random secret)")
        self.max_ttl = positive_seconds(max_ttl, "max_ttl")
        self.require_expiry = bool(require_expiry)
        if self.require_expiry is False and max_ttl is not None:
            # A cap implies an expiry; refusing the combination avoids a silent surprise.
            raise ConfigurationError(
                "require_expiry", "set max_ttl=None to allow tokens without expiry"
            )
        self.leeway = float(leeway)
        self.touch_interval = positive_seconds(touch_interval, "touch_interval")
        timeout_seconds = positive_seconds(timeout, "timeout")
        assert timeout_seconds is not None
        self._hasher = TokenHasher(pepper)
        self._clock = clock
        self._backend: Backend = open_backend(url, timeout=timeout_seconds)
        self._listeners: list[RevocationListener] = []
        self._open_lock = threading.Lock()
        self._opened = False
        self._touch_paused_until = 0.0
        self.watch_interval = positive_seconds(watch_interval, "watch_interval")
        self._watcher: Watcher | None = None
        self._watch_lock = threading.Lock()
        self._own_events: set[int] = set()  # dispatched here already, skipped by the watcher
        self._closed = False
        _stores.add(self)
        b = self._backend
        columns = ", ".join(COLUMNS)
        public = ", ".join(PUBLIC_COLUMNS)
        self._q_by_hash = b.sql(f"SELECT {columns} FROM authmw_tokens WHERE token_hash = ?")  # noqa: S608
        self._q_by_id = b.sql(f"SELECT {public} FROM authmw_tokens WHERE id = ?")  # noqa: S608
        self._q_insert = b.sql(
            f"INSERT INTO authmw_tokens ({columns}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
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
        """Close pooled connections and stop watching for changes; later calls raise
        IdentityServiceUnavailable."""
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
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
        scheme = migrate(self._backend, conn, self._hasher.scheme)
        check_scheme(scheme, self._hasher.scheme)

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
        roles_kept = role_names(roles)
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise ValueError(
                f"description must be a string of at most {MAX_DESCRIPTION} characters"
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
            ",".join(roles_kept),
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
        middleware's cache) drop the token. Every other process validating
        with this store drops it within about ``watch_interval`` seconds
        (PostgreSQL: at once), through the events log.
        """
        self.open()
        now = self._clock()
        b = self._backend

        def write(conn: Any) -> int | None:
            with b.transaction(conn):
                if not conn.execute(self._q_revoke, (now, token_id)).rowcount:
                    return None
                return add_event(b, conn, token_id, "revoked")

        seq = b.run(write)
        if seq is None:
            return False
        log.info("revoked token %s", token_id)
        self._own_events.add(seq)
        self._notify(token_id)
        return True

    def _notify(self, token_id: str | None) -> None:
        """Tell every revocation listener that ``token_id`` (None: any token) changed."""
        for listener in list(self._listeners):
            try:
                listener(token_id)
            except Exception:
                log.exception("revocation listener %r failed", listener)

    def _dispatch(self, events: Sequence[Event]) -> None:
        """Events the watcher read: those other processes (or instances) wrote."""
        for seq, token_id, _kind in events:
            if seq in self._own_events:
                self._own_events.discard(seq)
                continue
            self._notify(token_id)

    def _ensure_watching(self) -> None:
        """Start this process's watcher thread unless it runs (cheap when it does)."""
        watcher = self._watcher
        if (watcher is not None and watcher.alive) or self.watch_interval is None:
            return
        with self._watch_lock:
            watcher = self._watcher
            if (watcher is not None and watcher.alive) or self._closed:
                return
            # Read before the caller's validation: a change committed after this
            # number is dispatched, so no revocation slips between the two.
            since = latest_event(self._backend)
            self._own_events.clear()
            self._watcher = Watcher(
                self._backend, since, self.watch_interval, self._dispatch, self._tick
            )
            self._watcher.start()

    def _tick(self) -> None:
        """Periodic work of the watcher thread (batched writes come here)."""

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
        """Register ``listener(token_id)``, called after each revocation: made here at once,
        made elsewhere once the watcher reads it (``token_id`` None: any token may have
        changed)."""
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
        self._ensure_watching()
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
            expires_at=as_datetime(expires),
            issued_at=as_datetime(row[_CREATED]),
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
                return b.bulk_insert(conn, "authmw_tokens", COLUMNS, rows)

        return b.run(load)


# Stores alive in this process: after a fork the child gets fresh locks (another
# thread may have held one at the fork) and starts its own watcher when it
# first validates (the parent's thread does not exist in the child).
_stores: weakref.WeakSet[LocalTokenStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._watch_lock = threading.Lock()
        store._open_lock = threading.Lock()
        store._watcher = None
        store._own_events = set()


os.register_at_fork(after_in_child=_after_fork_in_child)
