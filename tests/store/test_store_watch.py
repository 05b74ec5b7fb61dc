"""Revocations made elsewhere reach this process's listeners: the events log and its watcher.

Two store instances on one database stand for two processes (each has its
own watcher thread); the command line and a forked child are real other
processes. Waits poll for the outcome with a generous bound: nothing here
asserts a duration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import until

import authmw
from authmw import CachedValidator, InvalidToken
from authmw.store import LocalTokenStore
from authmw.store._events import Watcher

MakeStore = Callable[..., LocalTokenStore]
REPO = str(Path(authmw.__file__).resolve().parent.parent)
DAY = 86400.0
BOUND = 20.0  # generous: the watcher needs about 0.25 s


def wait_for(condition: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    if not until(condition, bound, step=0.02):
        pytest.fail(f"not within {bound} s: {what}")


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "authmw-store-watch" and t.is_alive()]


def test_a_revocation_made_by_another_instance_drops_the_cached_token(
    make_store: MakeStore,
) -> None:
    here = make_store(clock=time.time)
    elsewhere = make_store(clock=time.time)
    heard: list[str | None] = []
    here.add_revocation_listener(heard.append)
    cache = CachedValidator(here, cache_time=300)
    issued = elsewhere.issue(user_name="alice", ttl=DAY)
    other = elsewhere.issue(user_name="bob", ttl=DAY)
    assert cache.validate(issued.token).user_name == "alice"
    assert cache.validate(other.token).user_name == "bob"

    assert elsewhere.revoke(issued.id)

    wait_for(lambda: cache.lookup(issued.token) is None, "the cache dropped the token")
    assert heard == [issued.id]
    with pytest.raises(InvalidToken, match="revoked"):
        cache.validate(issued.token)
    assert cache.lookup(other.token) is not None  # only that token


def test_the_revoking_instance_hears_its_own_revocation_once(make_store: MakeStore) -> None:
    store = make_store(clock=time.time)
    elsewhere = make_store(clock=time.time)
    first = store.issue(user_name="alice", ttl=DAY)
    second = store.issue(user_name="bob", ttl=DAY)
    store.validate(first.token)  # starts this instance's watcher
    heard: list[str | None] = []
    store.add_revocation_listener(heard.append)

    store.revoke(first.id)
    assert heard == [first.id]  # at once, in the revoking call
    elsewhere.revoke(second.id)

    # Events are read in order: once the second arrived, the first was read too.
    wait_for(lambda: second.id in heard, "the other instance's revocation arrived")
    assert heard == [first.id, second.id]


def hook_transactions(
    monkeypatch: pytest.MonkeyPatch,
    store: LocalTokenStore,
    *,
    before_commit: Callable[[], None] = lambda: None,
    after_commit: Callable[[], None] = lambda: None,
) -> None:
    """Runs ``before_commit()`` at the end of each of the store's write transactions
    (raising rolls it back) and ``after_commit()`` once it committed."""
    transaction = store._backend.transaction

    @contextlib.contextmanager
    def hooked(conn: Any) -> Iterator[None]:
        with transaction(conn):
            yield
            before_commit()
        after_commit()

    monkeypatch.setattr(store._backend, "transaction", hooked)


def test_the_revoking_instance_hears_its_own_revocation_once_if_its_watcher_reads_it_first(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interleaving a loaded machine can produce: the watcher reads the event
    # the moment it commits (PostgreSQL wakes it with NOTIFY), before revoke()
    # goes on. Forced here by holding revoke() after its commit until the
    # watcher has handled the batch.
    store = make_store(clock=time.time, watch_interval=0.05)
    issued = store.issue(user_name="alice", ttl=DAY)
    store.validate(issued.token)  # starts this instance's watcher
    watcher = store._watcher
    assert watcher is not None
    handled = threading.Event()
    dispatch = watcher._callback(watcher._dispatch)
    assert dispatch is not None

    def dispatch_then_say_so(events: Any) -> None:
        dispatch(events)
        handled.set()

    watcher._dispatch = dispatch_then_say_so

    def the_watcher_first() -> None:
        assert handled.wait(30), "the watcher never read the revocation"

    hook_transactions(monkeypatch, store, after_commit=the_watcher_first)
    heard: list[str | None] = []
    store.add_revocation_listener(heard.append)

    assert store.revoke(issued.id)
    assert heard == [issued.id]


def test_a_revocation_that_rolls_back_does_not_hide_the_next_event(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An event is marked as this instance's before its commit; a rollback must
    # unmark it, since SQLite hands the rolled-back number to the next event.
    store = make_store(clock=time.time, watch_interval=0.05)
    elsewhere = make_store(clock=time.time)
    first = store.issue(user_name="alice", ttl=DAY)
    second = store.issue(user_name="bob", ttl=DAY)
    store.validate(first.token)  # starts this instance's watcher

    def refuse() -> None:
        raise RuntimeError("the commit is refused")

    hook_transactions(monkeypatch, store, before_commit=refuse)
    with pytest.raises(RuntimeError):
        store.revoke(first.id)
    monkeypatch.undo()
    heard: list[str | None] = []
    store.add_revocation_listener(heard.append)

    assert elsewhere.revoke(second.id)
    wait_for(lambda: second.id in heard, "the other instance's revocation arrived")
    assert store.validate(first.token).user_name == "alice"  # rolled back: still valid


def test_the_command_line_revokes_for_every_process(
    make_store: MakeStore, db_url: str, tmp_path: Path
) -> None:
    store = make_store(clock=time.time)
    cache = CachedValidator(store, cache_time=300)
    issued = store.issue(user_name="alice", ttl=DAY)
    assert cache.validate(issued.token).user_name == "alice"

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "authmw", "token", "revoke", issued.id, "--db", db_url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    wait_for(lambda: cache.lookup(issued.token) is None, "the cache dropped the token")
    with pytest.raises(InvalidToken, match="revoked"):
        cache.validate(issued.token)


def test_no_watcher_before_the_first_validation(make_store: MakeStore) -> None:
    """As in gunicorn's master with --preload: it builds the app, forks, never validates."""
    store = make_store(clock=time.time)
    CachedValidator(store)  # registers its listener, as the middleware does
    issued = store.issue(user_name="alice", ttl=DAY)
    store.revoke(issued.id)
    assert store._watcher is None

    other = store.issue(user_name="bob", ttl=DAY)
    store.validate(other.token)
    assert store._watcher is not None and store._watcher.alive
    store.close()
    assert store._watcher is None


def test_a_forked_child_starts_its_own_watcher(make_store: MakeStore) -> None:
    parent = make_store(clock=time.time)
    issued = parent.issue(user_name="alice", ttl=DAY)
    assert parent.validate(issued.token).user_name == "alice"  # the parent watches too
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: cache the token, tell the parent, wait for the revocation
        status = 1
        try:
            os.close(read_end)
            cache = CachedValidator(parent, cache_time=300)
            cache.validate(issued.token)
            os.write(write_end, b"ready")
            deadline = time.monotonic() + BOUND
            while cache.lookup(issued.token) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            status = 0 if cache.lookup(issued.token) is None else 3
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        assert os.read(read_end, 5) == b"ready"
    finally:
        os.close(read_end)
    make_store(clock=time.time).revoke(issued.id)  # yet another instance
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_watcher_back_after_deleted_events_drops_everything(make_store: MakeStore) -> None:
    store = make_store(clock=time.time)
    ids = [store.issue(user_name=f"u{n}", ttl=DAY).id for n in range(3)]
    for token_id in ids:
        store.revoke(token_id)
    store._backend.execute(
        store._backend.sql("DELETE FROM authmw_events WHERE token_id <> ?"), (ids[-1],)
    )
    batches: list[list[Any]] = []
    watcher = Watcher(store._backend, 0, 0.05, lambda events: batches.append(list(events)), list)
    watcher._failing = True  # as after a database outage
    watcher.since = 1
    store._backend.run(watcher._catch_up)
    assert batches[0][0][1] is None  # everything may have changed
    assert [e[1] for e in batches[1]] == [ids[-1]]


@pytest.mark.postgres
def test_postgresql_listener_lost_falls_back_to_polling_and_reconnects(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    caplog.set_level(logging.INFO, logger="authmw.store")
    here = LocalTokenStore(pg_url, watch_interval=0.1)
    elsewhere = LocalTokenStore(pg_url)
    dbname = pg_url.rsplit("/", 1)[1]
    admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
    try:
        cache = CachedValidator(here, cache_time=300)
        tokens = [elsewhere.issue(user_name=f"user{n}", ttl=DAY) for n in range(3)]
        for issued in tokens:
            cache.validate(issued.token)

        def listeners() -> list[int]:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                rows = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'authmw-watch' "
                    "AND datname = %s",
                    (dbname,),
                ).fetchall()
            return [row[0] for row in rows]

        wait_for(lambda: len(listeners()) == 1, "the watcher listens")

        # 1. The listening connection is killed while nothing blocks a new one.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(%s)", (listeners()[0],))
        # 2. No new connection can be made: only the pool's open ones work.
        elsewhere.revoke(tokens[0].id)
        wait_for(lambda: cache.lookup(tokens[0].token) is None, "revocation seen by polling")
        assert cache.lookup(tokens[1].token) is not None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "polling" in warnings[0].getMessage()

        # 3. Connections allowed again: the watcher listens again by itself.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        wait_for(lambda: len(listeners()) == 1, "the watcher listens again")
        elsewhere.revoke(tokens[1].id)
        wait_for(lambda: cache.lookup(tokens[1].token) is None, "revocation seen again")
        assert cache.lookup(tokens[2].token) is not None
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert any("listening for changes again" in r.getMessage() for r in caplog.records)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        here.close()
        elsewhere.close()


def test_a_store_dropped_without_close_ends_its_watcher(db_url: str) -> None:
    import gc

    store = LocalTokenStore(db_url, watch_interval=0.05)
    store.validate(store.issue(user_name="alice", ttl=DAY).token)
    assert store._watcher is not None
    thread = store._watcher._thread
    assert thread in watcher_threads()
    del store
    gc.collect()
    wait_for(lambda: not thread.is_alive(), "the watcher thread ended")


def test_a_bad_watch_interval_names_the_option(db_url: str) -> None:
    from authmw import ConfigurationError

    for bad in (0, -1, "1"):
        with pytest.raises(ConfigurationError) as info:
            LocalTokenStore(db_url, watch_interval=bad, connect=False)  # type: ignore[arg-type]
        assert info.value.option == "watch_interval"


async def test_a_revocation_made_elsewhere_closes_the_tokens_open_websocket(
    make_store: MakeStore,
) -> None:
    import asyncio

    from authmw import ASGIAuthMiddleware

    here, elsewhere = make_store(clock=time.time), make_store(clock=time.time)
    issued = elsewhere.issue(user_name="alice", ttl=DAY)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    middleware = ASGIAuthMiddleware(app, validator=here, cache_time=300)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"x-auth-token", issued.token.encode())],
        "client": ("10.1.2.3", 5000),
    }
    task = asyncio.create_task(middleware(scope, inbox.get, outbox.put))
    assert (await asyncio.wait_for(outbox.get(), BOUND))["type"] == "websocket.accept"

    await asyncio.to_thread(elsewhere.revoke, issued.id)

    closed = await asyncio.wait_for(outbox.get(), BOUND)
    assert closed["type"] == "websocket.close" and closed["code"] == 1008
    await asyncio.wait_for(task, BOUND)
