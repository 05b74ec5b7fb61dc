"""Four real gunicorn workers on one store: a revocation from the command line reaches them all.

gunicorn (gthread) serves :mod:`loadtest.apps` with the local store as
validator and ``cache_time=300``, the app built in the master before the
workers fork (``--preload``). One keep-alive connection per worker (the
``X-Worker-Pid`` header tells which) first gets the token cached in every
worker; ``authmw token revoke`` runs as another process; then every worker
must answer 401 for that token (and still 200 for another) within a
generous bound. ``benchmarks/bench_store_revocation.py`` measures how fast.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_connections import pinned_connections, worker_request

from authmw.store import LocalTokenStore
from loadtest.servers import REPO, Server

BOUND = 20.0  # seconds; the watcher needs about 0.25 s
WORKERS = 4


def _get(conn: http.client.HTTPConnection, token: str) -> tuple[int, int]:
    """(status, worker pid) of ``GET /whoami`` with ``token`` on this connection."""
    return worker_request(conn, token)[:2]


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_every_gunicorn_worker_rejects_a_token_revoked_from_the_command_line(
    db_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    with LocalTokenStore(db_url) as store:
        victim = store.issue(user_name="alice", ttl=3600)
        bystander = store.issue(user_name="bob", ttl=3600)
    config = {
        "validator": "store",
        "store_url": db_url,
        "pid_header": True,
        "options": {"cache_time": 300},
    }
    server = Server(
        "gunicorn", config, tmp_path, threads=4, workers=WORKERS, preload=True, keep_alive=60
    )
    with server, pinned_connections(server.port, victim.token, WORKERS) as connections:
        pids = server.wait_for_workers()
        assert sorted(connections) == pids
        for conn in connections.values():
            assert _get(conn, victim.token)[0] == 200  # cached in every worker now
            assert _get(conn, bystander.token)[0] == 200

        revoked = subprocess.run(
            [sys.executable, "-m", "authmw", "token", "revoke", victim.id, "--db", db_url],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert revoked.returncode == 0, revoked.stderr

        refused: set[int] = set()
        deadline = time.monotonic() + BOUND
        while len(refused) < WORKERS and time.monotonic() < deadline:
            for pid, conn in connections.items():
                if pid in refused:
                    continue
                status, served_by = _get(conn, victim.token)
                assert served_by == pid
                if status == 401:
                    refused.add(pid)
            time.sleep(0.01)
        assert refused == set(pids), f"still accepted by {set(pids) - refused} after {BOUND} s"
        for pid, conn in connections.items():
            assert _get(conn, victim.token) == (401, pid)  # and it stays refused
            assert _get(conn, bystander.token) == (200, pid)
        assert "Traceback" not in server.log_tail(200)
