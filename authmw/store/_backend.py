"""What the token store needs from a database, and the connection pool both backends share."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .. import _fork
from ..errors import ConfigurationError, IdentityServiceUnavailable

__all__ = ["Backend", "open_backend", "redact_url", "sqlite_path"]

log = logging.getLogger("authmw.store")

T = TypeVar("T")
Migrations = tuple[tuple[int, tuple[str, ...]], ...]


def redact_url(url: str) -> str:
    """``url`` without its password, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# Connections inherited across fork(): never used, never closed in the child (closing
# would end the parent's PostgreSQL session or drop its SQLite locks), only kept.
_inherited: list[Any] = []


class _Pool:
    """Idle connections to reuse; the lock guards the list, never I/O.

    A connection is used by one thread at a time. After a fork the child
    leaves the parent's connections alone and opens its own.
    """

    def __init__(self, connect: Callable[[], Any], close: Callable[[Any], None], max_idle: int):
        self._connect = connect
        self._close = close
        self._max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.closed = False
        _fork.reset_after_fork(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # see authmw._fork; connections: by pid, below

    def acquire(self) -> tuple[Any, bool]:
        with self._lock:
            if self.closed:
                raise IdentityServiceUnavailable("token store is closed")
            if self._pid != os.getpid():
                _inherited.extend(self._idle)
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def release(self, conn: Any, *, discard: bool = False) -> None:
        with self._lock:
            keep = not discard and not self.closed and len(self._idle) < self._max_idle
            if self._pid != os.getpid():
                _inherited.append(conn)  # opened before a fork, returned after it
                return
            if keep:
                self._idle.append(conn)
                return
        self._close(conn)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)


class Backend:
    """A database holding the token table, reached through pooled DB-API connections.

    Subclasses give the connection factory, the SQL dialect (statements
    are written with ``?`` placeholders) and the migrations. Every driver
    error except an integrity error becomes
    :class:`~authmw.IdentityServiceUnavailable` naming the (redacted) URL.
    """

    dialect: ClassVar[str]
    migrations: ClassVar[Migrations]
    version_table: ClassVar[str]

    def __init__(self, url: str, *, timeout: float, max_idle: int = 8) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self.timeout = timeout
        self._pool = _Pool(self._connect, self._close_quietly, max_idle)

    # -- for subclasses ----------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _is_integrity_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _is_driver_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _is_broken(self, conn: Any, exc: BaseException) -> bool:
        return False

    def sql(self, statement: str) -> str:
        """``statement`` in this driver's parameter style."""
        return statement

    def exclusive(self, conn: Any) -> AbstractContextManager[None]:
        """A transaction no other connection can run at the same time (migrations)."""
        raise NotImplementedError

    def transaction(self, conn: Any) -> AbstractContextManager[None]:
        """An ordinary write transaction."""
        raise NotImplementedError

    def bulk_insert(
        self, conn: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Insert many rows fast in the current transaction; returns the count."""
        raise NotImplementedError

    def watch_connection(self) -> Any:
        """A new connection, outside the pool, for the change watcher's thread."""
        raise NotImplementedError

    def lock_user(self, conn: Any, user_id: str) -> None:
        """In a write transaction: serialise with others issuing tokens to ``user_id``
        (counting them; SQLite's single writer already does)."""

    def lock_events(self, conn: Any) -> None:
        """In a write transaction, before adding an event: make event numbers follow
        commit order (SQLite's single writer already does)."""

    def prepare(self) -> None:
        """One-off set-up before the first migration (e.g. the journal mode)."""

    # -- running statements ------------------------------------------------
    def run(self, func: Callable[[Any], T]) -> T:
        """Call ``func(connection)``; a dead pooled connection is replaced once."""
        for attempt in (1, 2):
            try:
                conn, reused = self._pool.acquire()
            except IdentityServiceUnavailable:
                raise
            except Exception as exc:
                raise self._unavailable(exc) from exc
            try:
                result = func(conn)
            except Exception as exc:
                broken = self._is_broken(conn, exc)
                self._pool.release(conn, discard=broken)
                if self._is_integrity_error(exc) or not self._is_driver_error(exc):
                    raise
                if broken and reused and attempt == 1:
                    log.info("token store %s: reconnecting after %s", self.display_url, exc)
                    continue
                raise self._unavailable(exc) from exc
            self._pool.release(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def fetchone(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self.run(lambda conn: conn.execute(statement, params).fetchone())

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.run(lambda conn: conn.execute(statement, params).fetchall())

    def execute(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; the number of rows changed."""
        return self.run(lambda conn: int(conn.execute(statement, params).rowcount))

    def close(self) -> None:
        self._pool.close()

    def _close_quietly(self, conn: Any) -> None:
        # Closing a dead connection may fail; there is nothing more to do.
        with contextlib.suppress(Exception):
            conn.close()

    def _unavailable(self, exc: BaseException) -> IdentityServiceUnavailable:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return IdentityServiceUnavailable(f"token store {self.display_url} unavailable: {detail}")


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite ``url`` (or plain path); None for other databases."""
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        return os.path.expanduser(path[1:]) if path.startswith("/") else None
    return None if scheme else os.path.expanduser(url)


def open_backend(url: str, *, timeout: float) -> Backend:
    """The backend for ``url``: ``sqlite:///path``, a plain file path, or ``postgresql://``."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            "url", "a database URL is required (sqlite:///path or postgresql://...)"
        )
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresBackend  # psycopg is imported only here

        return PostgresBackend(url, timeout=timeout)
    if scheme == "sqlite":
        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise ConfigurationError(
                "url", f"{url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
            )
        path = path[1:]
    elif scheme:
        raise ConfigurationError(
            "url",
            f"unsupported database {scheme!r} in {redact_url(url)!r}: use sqlite:/// or postgresql://",
        )
    else:
        path = url
    from ._sqlite import SQLiteBackend

    return SQLiteBackend(path, url=url, timeout=timeout)
