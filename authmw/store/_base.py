"""What every part of the token store shares: the database, its settings, the change
watcher, and the batched writes of token uses."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from .. import _fork
from .._key_restrictions import register_uses
from ..errors import IdentityServiceUnavailable
from ..validators.base import RevocationListener
from ._backend import Backend, open_backend
from ._events import Event, Watcher, add_event, latest_event
from ._records import COLUMNS, DAY, positive_seconds
from ._schema import check_peppers, migrate
from ._tokens import PepperRing

T = TypeVar("T")
AddEvent = Callable[["str | None", str], int]

__all__ = ["DEFAULT_URL", "StoreBase", "StorePolicy"]

log = logging.getLogger("authmw.store")

DEFAULT_URL = "sqlite:///authmw-tokens.db"
"""Where the command line keeps tokens unless told otherwise: a file in the working directory."""

MIN_IDLE_TTL = 60.0
"""The shortest idle time a token may have; its uses are written 10 times per idle time."""


@dataclass(frozen=True)
class StorePolicy:
    """Rules kept in the database, so every process and the command line apply the same.

    ``max_tokens_per_user``: active tokens a user may hold (None: no limit).
    ``max_lifetime``: seconds a token may live, counted from its creation;
    it applies at validation too, to tokens issued before it was lowered.
    """

    max_tokens_per_user: int | None = None
    max_lifetime: float | None = None


class _Uses:
    """Uses of idle-limited tokens seen in this process, written in batches.

    ``last``: the latest use of each token here (the idle check reads it);
    ``due``: when each unwritten use must be in the database (the first
    unwritten use plus a tenth of the token's idle time).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.ttl: dict[str, float] = {}
        self.due: dict[str, float] = {}


class StoreBase:
    """The database, its settings, the watcher and the use batches (see LocalTokenStore)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pepper: str | bytes | Mapping[str, str | bytes] | None = None,
        max_ttl: float | timedelta | None = 365 * DAY,
        require_expiry: bool = True,
        leeway: float = 0.0,
        touch_interval: float | None = 60.0,
        timeout: float = 5.0,
        watch_interval: float | None = 0.25,
        clock: Callable[[], float] = time.time,
        connect: bool = True,
    ) -> None:
        self._ring = PepperRing(pepper)
        self.max_ttl = positive_seconds(max_ttl, "max_ttl")
        self.require_expiry = bool(require_expiry)
        if self.require_expiry is False and max_ttl is not None:
            from ..errors import ConfigurationError

            # A cap implies an expiry; refusing the combination avoids a silent surprise.
            raise ConfigurationError(
                "require_expiry", "set max_ttl=None to allow tokens without expiry"
            )
        self.leeway = float(leeway)
        self.touch_interval = positive_seconds(touch_interval, "touch_interval")
        self.watch_interval = positive_seconds(watch_interval, "watch_interval")
        timeout_seconds = positive_seconds(timeout, "timeout")
        assert timeout_seconds is not None
        self._clock = clock
        self._backend: Backend = open_backend(url, timeout=timeout_seconds)
        self._listeners: list[RevocationListener] = []
        self._open_lock = threading.Lock()
        self._opened = False
        self._closed = False
        self._touch_paused_until = 0.0
        self._policy = StorePolicy()
        self.store_id = ""
        self._watcher: Watcher | None = None
        self._watch_lock = threading.Lock()
        self._own_events: set[int] = set()  # dispatched here already, skipped by the watcher
        self._uses = _Uses()
        self._statements: dict[tuple[int, str], str] = {}
        b = self._backend
        self._q_touch = b.sql(
            "UPDATE authmw_tokens SET last_used_at = ? "
            "WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)"
        )
        _fork.reset_after_fork(self)
        if connect:
            try:
                self.open()
            except BaseException:
                self.close()
                raise

    def _after_fork(self) -> None:
        # In a forked child (see authmw._fork): fresh locks (another thread may have
        # held one at the fork), none of the parent's pending writes, and its own
        # watcher, started on first validation (the parent's thread is not there).
        self._watch_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._watcher = None
        self._own_events = set()
        self._uses = _Uses()

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
        """Connect, create or migrate the schema and check the peppers; idempotent.

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
        register_uses(self.store_id, self)

    def _migrate(self, conn: Any) -> None:
        newest = self._ring.hasher(self._ring.newest)
        assert newest is not None
        migrate(self._backend, conn, newest.scheme)
        self._apply_settings(check_peppers(self._backend, conn, self._ring))

    def _apply_settings(self, settings: Mapping[str, str]) -> None:
        self.store_id = settings.get("store_id", "")
        per_user = settings.get("policy.max_tokens_per_user")
        lifetime = settings.get("policy.max_lifetime")
        self._policy = StorePolicy(
            int(per_user) if per_user else None, float(lifetime) if lifetime else None
        )
        for key in settings:
            if key.startswith("pepper_retired."):
                self._ring.drop(key.split(".", 1)[1])

    def _reload_settings(self) -> None:
        from ._schema import read_settings

        self._apply_settings(self._backend.run(lambda conn: read_settings(self._backend, conn)))

    def close(self) -> None:
        """Write pending uses, stop watching for changes and close pooled connections;
        later calls raise IdentityServiceUnavailable."""
        if self._opened and not self._closed:
            try:
                self._flush_uses(everything=True)
            except IdentityServiceUnavailable as exc:
                log.warning("token store %s: uses not written: %s", self.url, exc)
        self._closed = True
        register_uses(self.store_id, self, remove=True)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        self._backend.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def schema_version(self) -> int:
        """The schema version of the database (the highest migration applied)."""
        self.open()
        row = self._backend.fetchone("SELECT MAX(version) FROM authmw_schema_version")
        return int(row[0] or 0)

    @property
    def policy(self) -> StorePolicy:
        """The store's policy, as this process last read it (changes arrive as events)."""
        self.open()
        return self._policy

    def _active_clause(self, now: float) -> tuple[str, list[Any]]:
        """SQL true for tokens usable at ``now`` (not revoked, expired or idle), its params."""
        clause = (
            "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
            "AND (idle_ttl IS NULL OR COALESCE(last_used_at, created_at) + idle_ttl > ?)"
        )
        params: list[Any] = [now, now]
        if self._policy.max_lifetime is not None:
            clause += " AND created_at > ?"
            params.append(now - self._policy.max_lifetime)
        return clause, params

    # -- revocation listeners and the watcher ------------------------------
    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Register ``listener(token_id)``, called after each revocation: made here at once,
        made elsewhere once the watcher reads it (``token_id`` None: any token may have
        changed)."""
        self._listeners.append(listener)

    def _notify(self, token_id: str | None) -> None:
        """Tell every revocation listener that ``token_id`` (None: any token) changed."""
        for listener in list(self._listeners):
            try:
                listener(token_id)
            except Exception:
                log.exception("revocation listener %r failed", listener)

    def _write_events(self, write: Callable[[Any, AddEvent], T]) -> T:
        """``write(conn, add_event)`` in the backend, where ``add_event(token_id, kind)``
        records an event in ``write``'s transaction on ``conn``; what ``write`` returns.

        The caller dispatches its events itself, so the running watcher must skip
        them. Each is marked before its transaction commits: the watcher may read
        it the moment it does (PostgreSQL wakes it). An attempt that fails unmarks
        its events, as SQLite may give a rolled-back number to another's event.
        """
        b = self._backend

        def attempt(conn: Any) -> T:
            marked: list[int] = []

            def add(token_id: str | None, kind: str) -> int:
                seq = add_event(b, conn, token_id, kind)
                watcher = self._watcher
                # A watcher started later reads only newer events: mark for a running one.
                if watcher is not None and watcher.alive:
                    marked.append(seq)
                    self._own_events.add(seq)
                return seq

            try:
                return write(conn, add)
            except BaseException:
                self._own_events.difference_update(marked)
                raise

        return b.run(attempt)

    def _dispatch(self, events: Sequence[Event]) -> None:
        """Events the watcher read: those other processes (or instances) wrote."""
        for seq, token_id, kind in events:
            if seq in self._own_events:
                self._own_events.discard(seq)
                continue
            if kind in ("policy", "pepper"):
                try:
                    self._reload_settings()
                except IdentityServiceUnavailable as exc:
                    # Caches are dropped all the same; the next event or open reloads.
                    log.warning("token store %s: settings not reloaded: %s", self.url, exc)
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
            # Weak: a store dropped without close() must not be kept alive by its thread.
            self._watcher = Watcher(
                self._backend,
                since,
                self.watch_interval,
                weakref.WeakMethod(self._dispatch),
                weakref.WeakMethod(self._tick),
            )
            self._watcher.start()

    def _tick(self) -> None:
        """The watcher's periodic work: write the uses that are due."""
        self._flush_uses()

    # -- uses of idle-limited tokens (UseRecorder) -------------------------
    def clock(self) -> float:
        """Now, by the store's clock (POSIX seconds)."""
        return self._clock()

    def last_use(self, token_id: str) -> float | None:
        """The latest use of ``token_id`` seen in this process, if any."""
        return self._uses.last.get(token_id)

    def note_use(self, token_id: str, when: float, window: float) -> None:
        """A use of an idle-limited token (a cache hit); written to the database within
        a tenth of ``window`` (its idle time), batched with others. Bookkeeping only:
        the idle time itself is the token's, in the database."""
        uses = self._uses
        with uses.lock:
            if when > uses.last.get(token_id, 0.0):
                uses.last[token_id] = when
            uses.ttl[token_id] = window
            if token_id not in uses.due:
                uses.due[token_id] = when + self._use_interval(window)
        if self._watcher is None or not self._watcher.alive:
            if self.watch_interval is None:
                self._flush_uses()  # no watcher thread: write here when due
            else:
                self._ensure_watching()

    def _use_interval(self, idle_ttl: float | None) -> float:
        """How often a token's uses are written: ``touch_interval``, and at most a tenth
        of its idle time (so the deadline other processes see lags little)."""
        interval = self.touch_interval if self.touch_interval is not None else float("inf")
        if idle_ttl is not None:
            interval = min(interval, idle_ttl / 10)
        return interval

    def _flush_uses(self, *, everything: bool = False) -> None:
        """Write the uses that are due (all of them with ``everything``), in one batch."""
        uses = self._uses
        now = self._clock()
        if not uses.due or (now < self._touch_paused_until and not everything):
            return
        with uses.lock:
            ready = [t for t, due in uses.due.items() if everything or due <= now]
            rows = [(uses.last[t], t, uses.last[t]) for t in ready]
            for token_id in ready:
                del uses.due[token_id]
            # Forget uses too old to matter to the idle check.
            for token_id in [
                t for t, last in uses.last.items() if last + uses.ttl.get(t, 0.0) < now
            ]:
                uses.last.pop(token_id, None)
                uses.ttl.pop(token_id, None)
        if not rows:
            return
        b = self._backend

        def write(conn: Any) -> None:
            with b.transaction(conn):
                conn.cursor().executemany(self._q_touch, rows)

        try:
            b.run(write)
        except IdentityServiceUnavailable as exc:
            # Bookkeeping must not fail requests (a read-only replica): pause, say so once.
            self._touch_paused_until = now + 60.0
            log.warning("cannot record the last use of %d tokens: %s", len(rows), exc)


# Row positions used on the validation path.
ROW = {name: COLUMNS.index(name) for name in COLUMNS}
