"""Creating and migrating the store's tables forward, and checking what the store was made with."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from ..errors import ConfigurationError
from ._backend import Backend
from ._tokens import PepperRing

__all__ = ["check_peppers", "migrate", "read_settings"]

log = logging.getLogger("authmw.store")


def migrate(b: Backend, conn: Any, scheme_for_new: str) -> None:
    """Bring the schema to the latest version.

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


def read_settings(b: Backend, conn: Any) -> dict[str, str]:
    """Every row of ``authmw_settings``."""
    rows = conn.execute("SELECT key, value FROM authmw_settings").fetchall()
    return {str(key): str(value) for key, value in rows}


def check_peppers(b: Backend, conn: Any, ring: PepperRing) -> dict[str, str]:
    """Refuse peppers other than those the store knows by their ids (or a peppered
    store without one, or the reverse); record new pepper ids. The settings after."""
    settings = read_settings(b, conn)
    peppered = settings.get("token_hash", "sha256") != "sha256"
    if not peppered and ring.peppered:
        raise ConfigurationError(
            "pepper", "this token store was created without a pepper; remove the pepper setting"
        )
    if peppered and not ring.peppered:
        raise ConfigurationError(
            "pepper", "this token store was created with a pepper; configure the same pepper"
        )
    new = []
    for pepper_id, mine in ring.fingerprints().items():
        if f"pepper_retired.{pepper_id}" in settings:
            raise ConfigurationError(
                "pepper", f"pepper {pepper_id!r} was retired; remove it from the configuration"
            )
        known = settings.get(f"pepper.{pepper_id}")
        if known is None:
            new.append((f"pepper.{pepper_id}", mine))
        elif not hmac.compare_digest(known, mine):
            which = "the pepper" if len(ring.hashers) == 1 else f"pepper {pepper_id!r}"
            raise ConfigurationError(
                "pepper", f"this is not {which} this token store was created with (by that id)"
            )
    if new:
        with b.transaction(conn):
            for key, value in new:
                # Another process may be registering the same new pepper: the same
                # fingerprint is fine, another one is refused on the next open.
                conn.execute(
                    b.sql(
                        "INSERT INTO authmw_settings (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO NOTHING"
                    ),
                    (key, value),
                )
        settings = read_settings(b, conn)
        for key, value in new:
            if not hmac.compare_digest(settings[key], value):
                raise ConfigurationError(
                    "pepper", f"{key}: registered meanwhile with another secret"
                )
    unconfigured = sorted(
        key.split(".", 1)[1]
        for key in settings
        if key.startswith("pepper.")
        and key.split(".", 1)[1] not in ring.hashers
        and f"pepper_retired.{key.split('.', 1)[1]}" not in settings
    )
    if unconfigured:
        log.warning(
            "token store %s: tokens issued with pepper %s are refused: that pepper is not "
            "configured here (configure it, or retire it: authmw token pepper retire ID)",
            b.display_url,
            ", ".join(repr(p) for p in unconfigured),
        )
    return settings
