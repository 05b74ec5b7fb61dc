"""The token store's database side: schema and migrations, threads, processes, outages, async."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _services import free_port

import authmw
from authmw import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from authmw.store import LocalTokenStore
from authmw.store._tokens import new_token

from .conftest import Clock, with_search_path

RawSQL = Callable[..., list[tuple[Any, ...]]]
MakeStore = Callable[..., LocalTokenStore]

DAY = 86400.0
REPO = str(Path(authmw.__file__).resolve().parent.parent)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _migrations(db_url: str) -> Any:
    if db_url.startswith("sqlite"):
        from authmw.store._sqlite import SQLiteBackend

        return SQLiteBackend.migrations
    from authmw.store._postgres import PostgresBackend

    return PostgresBackend.migrations


# -- schema -----------------------------------------------------------------
def _versions(db_url: str) -> list[int]:
    return [number for number, _ in _migrations(db_url)]


def test_a_new_database_gets_the_latest_schema(
    store: LocalTokenStore, raw_sql: RawSQL, db_url: str
) -> None:
    versions = [row[0] for row in raw_sql("SELECT version FROM authmw_schema_version")]
    assert sorted(versions) == _versions(db_url)
    assert store.schema_version == _versions(db_url)[-1]
    settings = dict(raw_sql("SELECT key, value FROM authmw_settings"))
    assert settings.pop("token_hash") == "sha256"
    assert re.fullmatch(r"[0-9a-f]{16}", settings.pop("store_id"))
    assert settings == {}


def test_opening_again_changes_nothing(make_store: MakeStore, raw_sql: RawSQL) -> None:
    make_store()
    before = raw_sql("SELECT version, applied_at FROM authmw_schema_version ORDER BY version")
    make_store()
    assert raw_sql("SELECT version, applied_at FROM authmw_schema_version ORDER BY version") == (
        before
    )


def test_a_version_1_database_is_migrated_forward_keeping_its_tokens(
    db_url: str, raw_sql: RawSQL, make_store: MakeStore, clock: Clock
) -> None:
    version_1 = dict(_migrations(db_url))[1]
    raw_sql("CREATE TABLE authmw_schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for statement in version_1:
        raw_sql(statement)
    raw_sql("INSERT INTO authmw_schema_version VALUES (?, ?)", (1, 0.0))
    raw_sql("INSERT INTO authmw_settings VALUES (?, ?)", ("token_hash", "sha256"))
    token = new_token()
    raw_sql(
        "INSERT INTO authmw_tokens (id, token_hash, user_id, user_name, roles, description,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "00000000000000aa",
            hashlib.sha256(token.encode()).digest(),
            "u-old",
            "old",
            "reader",
            "",
            clock.now,
            clock.now + DAY,
        ),
    )

    store = make_store()

    assert store.schema_version == _versions(db_url)[-1]
    identity = store.validate(token)
    assert (identity.user_id, identity.roles) == ("u-old", ("reader",))
    if db_url.startswith("sqlite"):
        indexes = raw_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        indexes = raw_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'authmw_tokens'")
    assert {"authmw_tokens_user_id", "authmw_tokens_expires_at"} <= {row[0] for row in indexes}


def test_a_version_3_store_with_a_pepper_keeps_it_as_pepper_1(
    db_url: str, raw_sql: RawSQL, make_store: MakeStore, clock: Clock
) -> None:
    import hmac as hmac_

    pepper = "a server-side secret of 32 bytes"
    raw_sql("CREATE TABLE authmw_schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for number, statements in _migrations(db_url):
        if number > 3:
            break
        for statement in statements:
            raw_sql(statement)
        raw_sql("INSERT INTO authmw_schema_version VALUES (?, ?)", (number, 0.0))
    check = hmac_.new(pepper.encode(), b"authmw pepper check", hashlib.sha256).hexdigest()[:16]
    raw_sql("INSERT INTO authmw_settings VALUES (?, ?)", ("token_hash", f"hmac-sha256:{check}"))
    token = new_token()
    raw_sql(
        "INSERT INTO authmw_tokens (id, token_hash, user_id, roles, description, created_at,"
        " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            "00000000000000bb",
            hmac_.new(pepper.encode(), token.encode(), hashlib.sha256).digest(),
            "u-old",
            "",
            "",
            clock.now,
            clock.now + DAY,
        ),
    )

    store = make_store(pepper=pepper)

    assert store.validate(token).user_id == "u-old"
    record = store.get("00000000000000bb")
    assert record is not None and record.pepper_id == "1"
    assert record.scopes == () and record.read_only is False and record.idle_ttl is None
    newer = make_store(pepper={"1": pepper, "2": "another secret of 32 bytes....."})
    assert newer.validate(token).user_id == "u-old"
    assert newer.issue(user_name="new", ttl=DAY).record.pepper_id == "2"
    with pytest.raises(ConfigurationError, match="not the pepper"):
        make_store(pepper="yet another secret of 32 bytes..")


def test_a_schema_newer_than_this_code_is_refused(make_store: MakeStore, raw_sql: RawSQL) -> None:
    make_store()
    raw_sql("INSERT INTO authmw_schema_version VALUES (?, ?)", (99, 0.0))
    with pytest.raises(ConfigurationError, match="newer") as info:
        make_store()
    assert info.value.option == "url"


# -- concurrency ------------------------------------------------------------
def test_many_threads_issue_validate_and_revoke_at_once(make_store: MakeStore) -> None:
    # Correctness under contention, not lock latency: with SQLite's one writer and an
    # fsync per commit, a slow disk can make a writer wait past the default 5 s.
    store = make_store(clock=time.time, timeout=60)
    shared = store.issue(user_name="shared", ttl=DAY)
    errors: list[BaseException] = []
    issued: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(15):
                new = store.issue(user_name=f"user-{n}", roles=[f"r{i}"], ttl=DAY)
                assert store.validate(new.token).user_name == f"user-{n}"
                assert store.validate(shared.token).user_name == "shared"
                if i % 5 == 0:
                    assert store.revoke(new.id)
                else:
                    with lock:
                        issued.append((new.token, new.id, f"user-{n}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(issued) == 12 * 12
    for token, token_id, user in issued:
        identity = store.validate(token)
        assert (identity.user_name, identity.audit_ids) == (user, (token_id,))
    assert len(store.list_tokens()) == 12 * 12 + 1
    assert len(store.list_tokens(include_inactive=True)) == 12 * 15 + 1


_WORKER = """
import sys, time, os
from authmw.store import LocalTokenStore
url, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
store = LocalTokenStore(url)
tokens = [store.issue(user_name=name, roles=["r"], ttl=3600) for _ in range(25)]
for issued in tokens:
    assert store.validate(issued.token).user_name == name
for issued in tokens[:5]:
    assert store.revoke(issued.id)
print(" ".join(t.token for t in tokens[5:]))
store.close()
"""


def test_processes_share_one_database_from_the_first_open(
    db_url: str, tmp_path: Path, raw_sql: RawSQL
) -> None:
    """Real processes race to create the schema, then issue, validate and revoke together."""
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, db_url, f"proc-{n}", str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for n in range(4)
    ]
    go.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err

    versions = sorted(row[0] for row in raw_sql("SELECT version FROM authmw_schema_version"))
    assert versions == _versions(db_url)
    assert raw_sql("SELECT COUNT(*) FROM authmw_tokens")[0][0] == 100
    assert raw_sql("SELECT COUNT(*) FROM authmw_tokens WHERE revoked_at IS NOT NULL")[0][0] == 20
    with LocalTokenStore(db_url) as store:
        for n, (out, _) in enumerate(outputs):
            tokens = out.split()
            assert len(tokens) == 20
            for token in tokens:
                assert store.validate(token).user_name == f"proc-{n}"


def test_a_forked_child_leaves_the_parents_connections_alone(make_store: MakeStore) -> None:
    """As under gunicorn --preload: the child opens its own connections."""
    store = make_store(clock=time.time)
    token = store.issue(user_name="alice", ttl=DAY).token
    assert store.validate(token).user_name == "alice"  # the parent now has a pooled connection
    session = store._backend.fetchone(
        "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT 1"
    )

    pid = os.fork()
    if pid == 0:  # the child: validate with its own connection, then leave at once
        status = 1
        try:
            status = 0 if store.validate(token).user_name == "alice" else 1
            store.close()
            gc.collect()  # as a long-lived worker eventually would
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    # Same pooled session as before the fork: the child did not end it.
    assert (
        store._backend.fetchone(
            "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT 1"
        )
        == session
    )
    assert store.validate(token).user_name == "alice"


def test_sqlite_uses_wal_and_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    with LocalTokenStore(f"sqlite:///{path}") as store:
        store.issue(user_name="alice", ttl=DAY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_sqlite_waits_for_a_writer_before_switching_to_wal(tmp_path: Path) -> None:
    # Another process writing while this one opens the file (workers starting
    # together): SQLite refuses the switch to WAL at once, without its busy
    # timeout, so the store waits for the lock itself, within its timeout.
    path = tmp_path / "tokens.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    done = threading.Timer(0.3, writer.execute, ("COMMIT",))
    done.start()
    try:
        with LocalTokenStore(f"sqlite:///{path}", timeout=30) as store:
            assert store.validate(store.issue(user_name="alice", ttl=DAY).token)
    finally:
        done.join()
        writer.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


# -- outages ----------------------------------------------------------------
def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/tokens.db"
    with pytest.raises(IdentityServiceUnavailable, match=r"missing/tokens\.db"):
        LocalTokenStore(url)
    store = LocalTokenStore(url, connect=False)
    with pytest.raises(IdentityServiceUnavailable):
        store.validate(new_token())
    with pytest.raises(InvalidToken, match="malformed"):
        store.validate("not-a-token")  # decided without the database


def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IdentityServiceUnavailable, match="not a database"):
        LocalTokenStore(f"sqlite:///{path}")


def test_unreachable_postgresql_is_unavailable_and_hides_the_password() -> None:
    url = f"postgresql://authmw:s3cret-pw@127.0.0.1:{free_port()}/tokens"
    store = LocalTokenStore(url, connect=False, timeout=2)
    with pytest.raises(IdentityServiceUnavailable) as info:
        store.validate(new_token())
    assert "s3cret-pw" not in str(info.value)
    assert "***" in str(info.value)
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(IdentityServiceUnavailable):
        LocalTokenStore(url, timeout=2)


@pytest.mark.postgres
def test_postgresql_connections_killed_by_the_server_are_replaced(pg_url: str) -> None:
    import psycopg

    name = "authmw-kill-" + os.urandom(4).hex()
    with LocalTokenStore(f"{pg_url}?application_name={name}") as store:
        token = store.issue(user_name="alice", ttl=DAY).token
        assert store.validate(token).user_name == "alice"  # leaves a pooled connection
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert killed and all(row[0] for row in killed)
        assert store.validate(token).user_name == "alice"


@pytest.mark.postgres
def test_postgresql_tables_go_to_the_schema_of_the_search_path(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA tokens")
    with LocalTokenStore(with_search_path(pg_url, "tokens")) as store:
        token = store.issue(user_name="alice", ttl=DAY).token
        assert store.validate(token).user_name == "alice"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        tables = admin.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name LIKE 'authmw%%' ORDER BY table_name"
        ).fetchall()
        functions = admin.execute(
            "SELECT routine_schema, routine_name FROM information_schema.routines "
            "WHERE routine_name LIKE 'authmw%%'"
        ).fetchall()
    assert functions == [("tokens", "authmw_events_notify")]
    assert tables == [
        ("tokens", "authmw_events"),
        ("tokens", "authmw_retired_secrets"),
        ("tokens", "authmw_schema_version"),
        ("tokens", "authmw_settings"),
        ("tokens", "authmw_tokens"),
    ]


@pytest.mark.postgres
def test_postgresql_statement_timeout_turns_a_stuck_query_into_unavailable(pg_url: str) -> None:
    import psycopg

    with LocalTokenStore(pg_url, timeout=0.5) as store:
        token = store.issue(user_name="alice", ttl=DAY).token
        with psycopg.connect(pg_url) as locker:
            locker.execute("LOCK TABLE authmw_tokens IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(IdentityServiceUnavailable, match="timeout"):
                store.validate(token)
            locker.rollback()
        assert store.validate(token).user_name == "alice"


# -- async ------------------------------------------------------------------
class _GatedClock(Clock):
    """Blocks the calling thread inside validate() until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate_timed_out = False

    def __call__(self) -> float:
        if self.armed:
            self.entered.set()
            if not self.gate.wait(timeout=10):
                self.gate_timed_out = True
        return self.now


async def test_avalidate_does_not_block_the_event_loop(make_store: MakeStore) -> None:
    clock = _GatedClock()
    store = make_store(clock=clock)
    token = store.issue(user_name="alice", ttl=DAY).token
    clock.armed = True

    task = asyncio.create_task(store.avalidate(token))
    ticks = 0
    while not clock.entered.is_set():  # the loop keeps running while validate waits
        await asyncio.sleep(0.01)
        ticks += 1
    await asyncio.sleep(0)
    ticks += 1
    assert not task.done()
    clock.gate.set()
    identity = await task

    assert identity.user_name == "alice"
    assert not clock.gate_timed_out  # had the loop been blocked, only the timeout freed it
    assert ticks >= 1


async def test_avalidate_answers_like_validate(store: LocalTokenStore, clock: Clock) -> None:
    token = store.issue(user_name="alice", roles=["reader"], ttl=60).token
    assert await store.avalidate(token) == store.validate(token)
    with pytest.raises(InvalidToken, match="malformed"):
        await store.avalidate("garbage")
    clock.advance(61)
    with pytest.raises(InvalidToken, match="expired"):
        await store.avalidate(token)
    assert (await store.avalidate(token, allow_expired=True)).user_name == "alice"


# -- URLs -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/tokens", "unsupported database"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://relative.db", "sqlite:///relative.db"),
        ("", "required"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        LocalTokenStore(url)
    assert info.value.option == "url"


def test_relative_and_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with LocalTokenStore("sqlite:///relative.db") as store:
        store.issue(user_name="a", ttl=60)
    assert (tmp_path / "relative.db").exists()
    with LocalTokenStore(str(tmp_path / "plain.db")) as store:
        assert store.dialect == "sqlite"
    assert (tmp_path / "plain.db").exists()


def test_postgres_scheme_alias_and_lazy_connect() -> None:
    store = LocalTokenStore(f"postgres://u@127.0.0.1:{free_port()}/x", connect=False)
    assert store.dialect == "postgresql"


def test_sqlite_store_never_imports_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from authmw.store import LocalTokenStore\n"
        f"s = LocalTokenStore({f'sqlite:///{tmp_path}/t.db'!r})\n"
        "s.validate(s.issue(user_name='a', ttl=60).token)\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=False
    )
    assert result.returncode == 0, result.stderr
