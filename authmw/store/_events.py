"""Changes other processes must hear about, and the thread that hears them.

Revocations (and rotations, policy changes) are rows of ``authmw_events``,
written in the transaction that makes the change. Each process that
validates tokens runs one watcher thread per store, which reads the rows
added since it last looked and hands them to the store's revocation
listeners (the middleware's cache, which closes the token's websockets):

- SQLite: every ``interval`` (0.25 s) it asks its own connection for
  ``PRAGMA data_version``, which moves only when another connection
  committed; only then does it read the log (an index range scan).
- PostgreSQL: a connection of its own ``LISTEN``\\s; the table's trigger
  ``NOTIFY``\\s at each commit, and the watcher reads the log then (and every
  10 s anyway). If that connection drops, the watcher says so once
  (WARNING), polls through the pool every ``interval`` and reconnects by
  itself; catching up reads everything it missed.

Nothing here runs on a request's path. Events are kept a day.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ._backend import Backend

__all__ = ["RETENTION", "Event", "Watcher", "add_event", "latest_event"]

log = logging.getLogger("authmw.store")

RETENTION = 86400.0
"""Seconds an event is kept; a watcher that was away longer drops every cached token."""
_SAFETY_POLL = 10.0  # PostgreSQL: read the log this often even without a notification
_NOTIFY_WAIT = 1.0  # PostgreSQL: longest wait for a notification before the tick runs

Event = tuple[int, "str | None", str]
"""``(seq, token_id, kind)``; token_id None concerns every token."""


def add_event(b: Backend, conn: Any, token_id: str | None, kind: str) -> int:
    """Record an event in the caller's write transaction; its number.

    Events older than :data:`RETENTION` are deleted on the way.
    """
    b.lock_events(conn)
    now = time.time()  # bookkeeping time, never a store's injected clock
    conn.execute(b.sql("DELETE FROM authmw_events WHERE at < ?"), (now - RETENTION,))
    statement = "INSERT INTO authmw_events (token_id, kind, at) VALUES (?, ?, ?)"
    if b.dialect == "sqlite":
        return int(conn.execute(statement, (token_id, kind, now)).lastrowid)
    row = conn.execute(b.sql(statement + " RETURNING seq"), (token_id, kind, now)).fetchone()
    return int(row[0])


def latest_event(b: Backend) -> int:
    """The number of the newest event (0: none)."""
    row = b.fetchone("SELECT COALESCE(MAX(seq), 0) FROM authmw_events")
    return int(row[0])


class Watcher:
    """The thread that reads events other processes wrote, for one store in one process.

    ``dispatch(events)`` gets each batch in order (from this thread);
    ``tick()`` runs about once per ``interval`` (the store flushes its
    batched writes there). Both may be weak methods
    (:class:`weakref.WeakMethod`): once their object is gone, the thread
    ends. A watcher belongs to the process that started it: after a fork,
    :attr:`alive` is False in the child.
    """

    def __init__(
        self,
        backend: Backend,
        since: int,
        interval: float,
        dispatch: Callable[[Sequence[Event]], None] | weakref.WeakMethod[Any],
        tick: Callable[[], None] | weakref.WeakMethod[Any],
    ) -> None:
        self.backend = backend
        self.since = since
        self.interval = interval
        self.pid = os.getpid()
        self._dispatch = dispatch
        self._tick = tick
        self._stop = threading.Event()
        self._failing = False
        self._read_sql = backend.sql(
            "SELECT seq, token_id, kind FROM authmw_events WHERE seq > ? ORDER BY seq LIMIT 1000"
        )
        self._thread = threading.Thread(target=self._run, name="authmw-store-watch", daemon=True)

    @property
    def alive(self) -> bool:
        """True in the process that started it, until stopped."""
        return self.pid == os.getpid() and not self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (within about a second); no waiting."""
        self._stop.set()

    # -- the thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.backend.dialect == "sqlite":
                self._run_sqlite()
            else:
                self._run_postgres()
        except Exception:  # pragma: no cover - a bug; say so rather than die silently
            log.exception("token store %s: the change watcher stopped", self.backend.display_url)

    def _run_sqlite(self) -> None:
        conn: Any = None
        seen_version: object = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = self.backend.watch_connection()
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen_version:
                        self._catch_up(conn)
                        seen_version = version
                except Exception as exc:
                    self._failed(exc)
                    _close(conn)
                    conn, seen_version = None, None
                self._safe_tick()
        finally:
            _close(conn)

    def _run_postgres(self) -> None:
        conn: Any = None
        warned = False
        next_poll = 0.0
        try:
            while not self._stop.is_set():
                if conn is None:
                    try:
                        conn = self.backend.watch_connection()
                        if warned:
                            log.info(
                                "token store %s: listening for changes again",
                                self.backend.display_url,
                            )
                            warned = False
                        self._catch_up(conn)
                        next_poll = time.monotonic() + _SAFETY_POLL
                    except Exception as exc:
                        _close(conn)
                        conn = None
                        if not warned:
                            warned = True
                            log.warning(
                                "token store %s: cannot listen for changes (%s); polling "
                                "every %g s until the connection is back",
                                self.backend.display_url,
                                _first_line(exc),
                                self.interval,
                            )
                if conn is None:
                    if self._stop.wait(self.interval):
                        break
                    try:
                        self.backend.run(self._catch_up)
                    except Exception as exc:
                        self._failed(exc)
                    self._safe_tick()
                    continue
                try:
                    notified = any(True for _ in conn.notifies(timeout=_NOTIFY_WAIT, stop_after=1))
                    if notified or time.monotonic() >= next_poll:
                        self._catch_up(conn)
                        next_poll = time.monotonic() + _SAFETY_POLL
                except Exception as exc:
                    _close(conn)
                    conn = None
                    if self._stop.is_set():
                        break
                    if not warned:
                        warned = True
                        log.warning(
                            "token store %s: lost the connection listening for changes (%s); "
                            "polling every %g s and reconnecting",
                            self.backend.display_url,
                            _first_line(exc),
                            self.interval,
                        )
                self._safe_tick()
        finally:
            _close(conn)

    def _catch_up(self, conn: Any) -> None:
        """Read and dispatch every event after :attr:`since`."""
        if self._failing:
            # Back after failures: if events were deleted before we read them,
            # anything may have changed.
            first = conn.execute("SELECT MIN(seq) FROM authmw_events").fetchone()[0]
            self._failing = False
            if first is not None and self.since and int(first) > self.since + 1:
                self._safe_dispatch([(int(first) - 1, None, "missed")])
        while True:
            rows = conn.execute(self._read_sql, (self.since,)).fetchall()
            if not rows:
                return
            events = [(int(seq), token_id, str(kind)) for seq, token_id, kind in rows]
            self.since = events[-1][0]
            self._safe_dispatch(events)
            if len(rows) < 1000:
                return

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.info(
                "token store %s: cannot read changes: %s",
                self.backend.display_url,
                _first_line(exc),
            )
        self._failing = True

    def _callback(self, callback: Any) -> Callable[..., None] | None:
        if isinstance(callback, weakref.WeakMethod):
            method: Callable[..., None] | None = callback()
            if method is None:  # its store was dropped without close(): end quietly
                self._stop.set()
            return method
        function: Callable[..., None] = callback
        return function

    def _safe_dispatch(self, events: Sequence[Event]) -> None:
        dispatch = self._callback(self._dispatch)
        if dispatch is None:
            return
        try:
            dispatch(events)
        except Exception:
            log.exception("token store %s: handling changes failed", self.backend.display_url)

    def _safe_tick(self) -> None:
        tick = self._callback(self._tick)
        if tick is None:
            return
        try:
            tick()
        except Exception:
            log.exception("token store %s: periodic writes failed", self.backend.display_url)


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # a dead connection may fail to close
            conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
