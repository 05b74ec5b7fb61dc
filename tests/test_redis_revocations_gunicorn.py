"""Real gunicorn workers: a revocation made in one reaches the others through Redis pub/sub.

gunicorn (gthread, ``--preload``: the app is built in the master, the
workers fork from it) serves tests/redis_workers_wsgi.py: a local token
store (SQLite) as validator, ``cache_time=300``, a :class:`RedisCache` on
the suite's real redis-server as shared cache (same secret and namespace
in every worker), and the store's watcher turned off (``watch_interval=None``),
so Redis pub/sub is the only way a revocation made in one worker can reach
the in-process caches of the others.

One keep-alive connection per worker (``X-Worker-Pid`` tells which) gets the
token cached in every worker; one worker revokes it (``POST /_lt/revoke/ID``);
every other worker must then answer 401 within a generous bound. The control
runs the same without the shared cache: the other workers keep accepting the
token from their caches (until ``cache_time``, far beyond the 2 s looked at).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_connections import pinned_connections, worker_request

from authmw.store import IssuedToken, LocalTokenStore
from loadtest.servers import Server

pytestmark = pytest.mark.redis

TESTS = Path(__file__).resolve().parent
WORKERS = 4
BOUND = 10.0  # seconds; generous (the message takes milliseconds)
CONTROL_WAIT = 2.0  # seconds the control's other workers are watched
SECRET = "w" * 32 + "-gunicorn-revocations-secret"


class WorkersServer(Server):
    """loadtest.servers.Server running tests/redis_workers_wsgi.py instead of loadtest.apps."""

    def command(self) -> list[str]:
        command = super().command()
        assert command[-1] == "loadtest.apps:wsgi_app()"
        return [*command[:-1], "--pythonpath", str(TESTS), "redis_workers_wsgi:application()"]


def _call(
    conn: http.client.HTTPConnection, token: str, method: str = "GET", path: str = "/whoami"
) -> tuple[int, int, dict[str, Any] | None]:
    """(status, worker pid, JSON body of a 200) of one request on this connection."""
    status, pid, body = worker_request(conn, token, method, path)
    return status, pid, json.loads(body) if status == 200 else None


def _status(conn: http.client.HTTPConnection, token: str, pid: int) -> int:
    status, served_by, _ = _call(conn, token)
    assert served_by == pid  # the keep-alive connection stays with its worker
    return status


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[str, IssuedToken, IssuedToken]:
    """(store URL, the token to revoke, a bystander's token)."""
    url = f"sqlite:///{tmp_path}/tokens.db"
    with LocalTokenStore(url) as store:
        return url, store.issue(user_name="alice", ttl=3600), store.issue(user_name="bob", ttl=3600)


@contextlib.contextmanager
def revoked_in_one_worker(
    config: dict[str, Any], workdir: Path, victim: IssuedToken, bystander: IssuedToken
) -> Iterator[tuple[Server, dict[int, http.client.HTTPConnection]]]:
    """Start the workers, cache both tokens in each, revoke ``victim`` in one of them;
    yields (server, connections to the other workers by pid)."""
    server = WorkersServer(
        "gunicorn", config, workdir, threads=4, workers=WORKERS, preload=True, keep_alive=60
    )
    with server, pinned_connections(server.port, victim.token, WORKERS) as connections:
        pids = server.wait_for_workers()
        assert sorted(connections) == pids
        deadline = time.monotonic() + BOUND
        for pid, conn in connections.items():
            assert _status(conn, victim.token, pid) == 200  # cached in every worker now
            while True:
                status, _, seen = _call(conn, bystander.token)
                assert status == 200 and seen is not None
                # Subscribed (with a shared cache) before anything is published.
                if seen["subscribed"] is not False or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            subscribed = True if config.get("redis_url") else None
            assert seen["subscribed"] is subscribed, (seen, server.log_tail(40))

        revoker, *others = pids
        conn = connections[revoker]
        status, served_by, seen = _call(conn, bystander.token, "POST", f"/_lt/revoke/{victim.id}")
        assert (status, served_by) == (200, revoker)
        assert seen is not None and seen["revoked"] is True
        assert _status(conn, victim.token, revoker) == 401  # at once where it was revoked
        assert _status(conn, bystander.token, revoker) == 200
        yield server, {pid: connections[pid] for pid in others}


def test_a_revocation_in_one_worker_reaches_the_others_through_redis(
    redis_url: str, tokens: tuple[str, IssuedToken, IssuedToken], tmp_path: Path
) -> None:
    url, victim, bystander = tokens
    config = {
        "store_url": url,
        "cache_time": 300,
        "redis_url": redis_url,
        "redis_secret": SECRET,
        "namespace": "workers-" + uuid.uuid4().hex[:8],
    }
    with revoked_in_one_worker(config, tmp_path, victim, bystander) as (server, others):
        refused: set[int] = set()
        deadline = time.monotonic() + BOUND
        while len(refused) < len(others) and time.monotonic() < deadline:
            for pid, conn in others.items():
                if pid not in refused and _status(conn, victim.token, pid) == 401:
                    refused.add(pid)
            time.sleep(0.01)
        assert refused == set(others), f"still accepted by {set(others) - refused} after {BOUND} s"
        for pid, conn in others.items():
            assert _status(conn, victim.token, pid) == 401  # and it stays refused
            assert _status(conn, bystander.token, pid) == 200
        assert "Traceback" not in server.log_tail(200)


def test_without_the_shared_cache_the_other_workers_keep_the_token_until_cache_time(
    tokens: tuple[str, IssuedToken, IssuedToken], tmp_path: Path
) -> None:
    url, victim, bystander = tokens
    config = {"store_url": url, "cache_time": 300}
    with revoked_in_one_worker(config, tmp_path, victim, bystander) as (server, others):
        deadline = time.monotonic() + CONTROL_WAIT
        while time.monotonic() < deadline:
            for pid, conn in others.items():
                assert _status(conn, victim.token, pid) == 200  # from its own cache
            time.sleep(0.05)
        assert "Traceback" not in server.log_tail(200)
