"""SQLite backend: stdlib sqlite3, WAL journal, one file shared by threads and processes."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigurationError
from ._backend import Backend, Migrations

__all__ = ["SQLiteBackend"]

_MIGRATIONS: Migrations = (
    (
        1,
        (
            """CREATE TABLE authmw_settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
            """CREATE TABLE authmw_tokens (
                id TEXT PRIMARY KEY,
                token_hash BLOB NOT NULL UNIQUE,
                user_id TEXT NOT NULL,
                user_name TEXT,
                user_domain_id TEXT,
                user_domain_name TEXT,
                project_id TEXT,
                project_name TEXT,
                project_domain_id TEXT,
                project_domain_name TEXT,
                domain_id TEXT,
                domain_name TEXT,
                system_scope TEXT,
                roles TEXT NOT NULL DEFAULT '',
                description TEXT NOT NULL DEFAULT '',
                created_at REAL NOT NULL,
                expires_at REAL,
                revoked_at REAL,
                last_used_at REAL
            )""",
        ),
    ),
    (
        2,
        (
            "CREATE INDEX authmw_tokens_user_id ON authmw_tokens (user_id)",
            "CREATE INDEX authmw_tokens_user_name ON authmw_tokens (user_name)",
            "CREATE INDEX authmw_tokens_expires_at ON authmw_tokens (expires_at)",
        ),
    ),
    (
        3,
        (
            # What other processes must hear about (revocations, rotations, ...): a log
            # every process reads, after a PRAGMA data_version says something changed.
            """CREATE TABLE authmw_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                token_id TEXT,
                kind TEXT NOT NULL,
                at REAL NOT NULL
            )""",
            "CREATE INDEX authmw_events_at ON authmw_events (at)",
        ),
    ),
    (
        4,
        (
            # API keys (issue 16): restrictions fixed at issue, rotation, versioned peppers.
            "ALTER TABLE authmw_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE authmw_tokens ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE authmw_tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE authmw_tokens ADD COLUMN idle_ttl REAL",
            "ALTER TABLE authmw_tokens ADD COLUMN rotated_at REAL",
            "ALTER TABLE authmw_tokens ADD COLUMN pepper_id TEXT",
            # Secrets replaced by a rotation, valid until their grace period ends.
            """CREATE TABLE authmw_retired_secrets (
                token_hash BLOB PRIMARY KEY,
                token_id TEXT NOT NULL,
                pepper_id TEXT,
                valid_until REAL NOT NULL
            )""",
            "CREATE INDEX authmw_retired_secrets_token_id ON authmw_retired_secrets (token_id)",
            # A store made with one pepper: that pepper is now pepper "1".
            """INSERT INTO authmw_settings (key, value)
                SELECT 'pepper.1', substr(value, 13) FROM authmw_settings
                WHERE key = 'token_hash' AND value LIKE 'hmac-sha256:%'""",
            """UPDATE authmw_tokens SET pepper_id = '1'
                WHERE EXISTS (SELECT 1 FROM authmw_settings WHERE key = 'pepper.1')""",
            # Names the store in restriction data that travels through shared caches.
            """INSERT INTO authmw_settings (key, value)
                VALUES ('store_id', lower(hex(randomblob(8))))""",
        ),
    ),
)


class SQLiteBackend(Backend):
    """A SQLite file. WAL lets readers run beside the single writer; the
    busy timeout makes writers in other threads and processes wait their
    turn instead of failing. The file is created readable by its owner only.
    """

    dialect = "sqlite"
    migrations = _MIGRATIONS
    version_table = """CREATE TABLE IF NOT EXISTS authmw_schema_version (
        version INTEGER PRIMARY KEY,
        applied_at REAL NOT NULL
    )"""

    def __init__(self, path: str, *, url: str, timeout: float) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigurationError(
                "url", f"{url!r}: give a file path (an in-memory SQLite store cannot be shared)"
            )
        self.path = os.path.expanduser(path)
        super().__init__(url, timeout=timeout)

    def _connect(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            # Create it private to the owner; sqlite gives -wal/-shm the same mode.
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise sqlite3.OperationalError(
                    f"cannot create {self.path}: {exc.strerror or exc}"
                ) from exc
        # check_same_thread=False: the pool hands a connection to one thread at a time.
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        return conn

    def watch_connection(self) -> sqlite3.Connection:
        """A connection of its own for the change watcher (``PRAGMA data_version`` is per
        connection: it moves when another connection commits)."""
        return self._connect()

    def _is_integrity_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def prepare(self) -> None:
        def wal(conn: sqlite3.Connection) -> None:
            # The switch needs the file to itself, and SQLite refuses it at once while
            # another connection writes, without the busy timeout: wait here instead
            # (processes that open a new file together, as a server's workers do).
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")

        self.run(wal)

    @contextmanager
    def exclusive(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    transaction = exclusive

    def bulk_insert(
        self,
        conn: sqlite3.Connection,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> int:
        marks = ", ".join("?" * len(columns))
        cursor = conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608 - fixed names
            rows,
        )
        return cursor.rowcount
