"""Creating and migrating the store's tables forward, and checking what the store was made with."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from ..errors import ConfigurationError
from ._backend import Backend

__all__ = ["check_scheme", "migrate"]

log = logging.getLogger("authmw.store")


def migrate(b: Backend, conn: Any, scheme_for_new: str) -> str | None:
    """Bring the schema to the latest version; the hash scheme the store records.

    Migrations run under :meth:`Backend.exclusive`, so processes (and hosts)
    starting together migrate once. A new store records ``scheme_for_new``.
    """
    latest = b.migrations[-1][0]
    version, scheme = _schema_state(b, conn)
    if version < latest or scheme is None:
        with b.exclusive(conn):
            conn.execute(b.version_table)
            version, scheme = _schema_state(b, conn)
            _check_version(b, version, latest)
            for number, statements in b.migrations:
                if number <= version:
                    continue
                log.info("token store %s: migrating schema to version %d", b.display_url, number)
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    b.sql("INSERT INTO authmw_schema_version (version, applied_at) VALUES (?, ?)"),
                    (number, time.time()),
                )
            if scheme is None:
                scheme = scheme_for_new
                conn.execute(
                    b.sql("INSERT INTO authmw_settings (key, value) VALUES (?, ?)"),
                    ("token_hash", scheme),
                )
    _check_version(b, version, latest)
    return scheme


def _schema_state(b: Backend, conn: Any) -> tuple[int, str | None]:
    if b.dialect == "sqlite":
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            ("authmw_schema_version",),
        ).fetchone()
    else:
        exists = conn.execute("SELECT to_regclass('authmw_schema_version')").fetchone()[0]
    if not exists:
        return 0, None
    version = int(conn.execute("SELECT MAX(version) FROM authmw_schema_version").fetchone()[0] or 0)
    if version < 1:
        return version, None
    row = conn.execute(
        b.sql("SELECT value FROM authmw_settings WHERE key = ?"), ("token_hash",)
    ).fetchone()
    return version, None if row is None else str(row[0])


def _check_version(b: Backend, version: int, latest: int) -> None:
    if version > latest:
        raise ConfigurationError(
            "url",
            f"token store {b.display_url} has schema version {version}, newer than this "
            f"authmw supports ({latest}); upgrade authmw",
        )


def check_scheme(scheme: str | None, mine: str) -> None:
    """Refuse a pepper (or its absence) other than the one the store was created with."""
    if scheme is None or hmac.compare_digest(scheme, mine):
        return
    if scheme == "sha256":
        message = "this token store was created without a pepper; remove the pepper setting"
    elif mine == "sha256":
        message = "this token store was created with a pepper; configure the same pepper"
    else:
        message = "this is not the pepper this token store was created with"
    raise ConfigurationError("pepper", message)
