"""PostgreSQL backend through psycopg 3, for token stores shared by several hosts.

Imported only when a ``postgresql://`` URL is used, so psycopg stays an
optional extra (``pip install authmw[postgresql]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigurationError
from ._backend import Backend, Migrations

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "url", "a postgresql:// token store needs psycopg 3: pip install 'authmw[postgresql]'"
    ) from exc

__all__ = ["PostgresBackend"]

# Key of the advisory lock that serialises migrations across hosts.
_MIGRATION_LOCK = 0x61_6D_77_5F_6D_69_67  # "amw_mig"

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
                token_hash BYTEA NOT NULL UNIQUE,
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
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION,
                last_used_at DOUBLE PRECISION
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
            # every process reads when NOTIFY says a row was added (or, without a
            # listening connection, by polling).
            """CREATE TABLE authmw_events (
                seq BIGSERIAL PRIMARY KEY,
                token_id TEXT,
                kind TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX authmw_events_at ON authmw_events (at)",
            """CREATE FUNCTION authmw_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('authmw_events', NEW.seq::text);
                RETURN NULL;
            END
            $$""",
            """CREATE TRIGGER authmw_events_notify AFTER INSERT ON authmw_events
                FOR EACH ROW EXECUTE FUNCTION authmw_events_notify()""",
        ),
    ),
    (
        4,
        (
            # API keys (issue 16): restrictions fixed at issue, rotation, versioned peppers.
            "ALTER TABLE authmw_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE authmw_tokens ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE authmw_tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE authmw_tokens ADD COLUMN idle_ttl DOUBLE PRECISION",
            "ALTER TABLE authmw_tokens ADD COLUMN rotated_at DOUBLE PRECISION",
            "ALTER TABLE authmw_tokens ADD COLUMN pepper_id TEXT",
            # Secrets replaced by a rotation, valid until their grace period ends.
            """CREATE TABLE authmw_retired_secrets (
                token_hash BYTEA PRIMARY KEY,
                token_id TEXT NOT NULL,
                pepper_id TEXT,
                valid_until DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX authmw_retired_secrets_token_id ON authmw_retired_secrets (token_id)",
            # A store made with one pepper: that pepper is now pepper "1".
            """INSERT INTO authmw_settings (key, value)
                SELECT 'pepper.1', substr(value, 13) FROM authmw_settings
                WHERE key = 'token_hash' AND value LIKE 'hmac-sha256:%'""",
            """UPDATE authmw_tokens SET pepper_id = '1'
                WHERE EXISTS (SELECT 1 FROM authmw_settings WHERE key = 'pepper.1')""",
            # Names the store in restriction data that travels through shared caches.
            """INSERT INTO authmw_settings (key, value) VALUES
                ('store_id', substr(md5(random()::text || clock_timestamp()::text), 1, 16))""",
        ),
    ),
)

NOTIFY_CHANNEL = "authmw_events"
"""The channel the events trigger notifies (per database)."""

# Key of the advisory lock that makes event numbers follow commit order: a
# sequence hands out numbers at insert, and a watcher that read number 6
# must never later find a 5 committed after it.
_EVENTS_LOCK = 0x61_6D_77_5F_65_76_74  # "amw_evt"
# First key of the advisory locks that serialise issuing to one user (the second:
# a hash of the user id), so two processes cannot both pass max_tokens_per_user.
_USERS_LOCK = 0x616D_7775  # "amwu", an int4


class PostgresBackend(Backend):
    """A PostgreSQL database; tables are prefixed ``authmw_`` and live in the
    first schema of the connection's ``search_path``. Every statement has a
    ``statement_timeout`` so a stuck server cannot hold request threads.
    """

    dialect = "postgresql"
    migrations = _MIGRATIONS
    version_table = """CREATE TABLE IF NOT EXISTS authmw_schema_version (
        version INTEGER PRIMARY KEY,
        applied_at DOUBLE PRECISION NOT NULL
    )"""

    def __init__(self, url: str, *, timeout: float) -> None:
        super().__init__(url, timeout=timeout)
        try:
            self._conninfo = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError("url", f"invalid PostgreSQL URL {self.display_url!r}") from exc
        self._sql_cache: dict[str, str] = {}

    def _connect(self) -> psycopg.Connection[Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._conninfo:
            kwargs["connect_timeout"] = max(2, math.ceil(self.timeout))
        conn = psycopg.connect(self.url, **kwargs)
        try:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(max(1, int(self.timeout * 1000))),),
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def watch_connection(self) -> psycopg.Connection[Any]:
        """A connection of its own that LISTENs for events. TCP keepalives make a
        dead server or network show up as an error within about 15 s."""
        kwargs: dict[str, Any] = {"autocommit": True}
        for key, value in (
            ("connect_timeout", max(2, math.ceil(self.timeout))),
            ("keepalives", 1),
            ("keepalives_idle", 5),
            ("keepalives_interval", 2),
            ("keepalives_count", 3),
            ("application_name", "authmw-watch"),
        ):
            if key not in self._conninfo:
                kwargs[key] = value
        conn = psycopg.connect(self.url, **kwargs)
        try:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(max(1, int(self.timeout * 1000))),),
            )
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def lock_user(self, conn: psycopg.Connection[Any], user_id: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_USERS_LOCK, user_id))

    def lock_events(self, conn: psycopg.Connection[Any]) -> None:
        """In a write transaction: hold the events lock until commit (see _EVENTS_LOCK)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENTS_LOCK,))

    def _is_integrity_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.IntegrityError)

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def _is_broken(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.closed or conn.broken)

    def sql(self, statement: str) -> str:
        converted = self._sql_cache.get(statement)
        if converted is None:
            converted = self._sql_cache[statement] = statement.replace("?", "%s")
        return converted

    @contextmanager
    def exclusive(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            yield

    @contextmanager
    def transaction(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        with conn.transaction():
            yield

    def bulk_insert(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
    ) -> int:
        count = 0
        # A bulk load may take longer than the per-request statement timeout.
        conn.execute("SET LOCAL statement_timeout = 0")
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with conn.cursor().copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
