"""How long a revocation takes to reach every gunicorn worker using one token store.

    .venv/bin/python benchmarks/bench_store_revocation.py                # SQLite in a temp folder
    .venv/bin/python benchmarks/bench_store_revocation.py --postgres     # a private PostgreSQL
    .venv/bin/python benchmarks/bench_store_revocation.py --runs 200 --workers 4

gunicorn (gthread, ``--workers 4 --preload``) serves :mod:`loadtest.apps`
with the store as validator and ``cache_time=300``. Each run issues a
token, gets it cached in every worker (one keep-alive connection per
worker, told apart by ``X-Worker-Pid``), revokes it through the Python API
in this process, and then polls every worker's connection (one thread
each, a request every 2 ms) until it answers 401. A sample is the time from
the revoking commit's return to a worker's first 401; each run gives one
sample per worker; runs start after a random pause (0-0.3 s), so they do
not fall into step with the watchers' 0.25 s ticks. Prints p50 / p99 / max
over all samples, in ms.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from authmw.store import LocalTokenStore  # noqa: E402
from loadtest.servers import Server  # noqa: E402


def _get(conn: http.client.HTTPConnection, token: str) -> tuple[int, int]:
    conn.request("GET", "/whoami", headers={"X-Auth-Token": token})
    response = conn.getresponse()
    response.read()
    return response.status, int(response.getheader("X-Worker-Pid") or 0)


def _pin(port: int, token: str, workers: int) -> dict[int, http.client.HTTPConnection]:
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(400):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _, pid = _get(conn, token)
        if pid in found:
            conn.close()
        else:
            found[pid] = conn
        if len(found) == workers:
            return found
    raise RuntimeError(f"reached {len(found)} of {workers} workers")


def _run_once(
    store: LocalTokenStore, connections: dict[int, http.client.HTTPConnection]
) -> list[float]:
    issued = store.issue(user_name="bench", ttl=3600)
    for conn in connections.values():
        if _get(conn, issued.token)[0] != 200:
            raise RuntimeError("a fresh token was refused")
    seen: dict[int, float] = {}
    start = threading.Event()
    t0 = [0.0]

    def poll(pid: int, conn: http.client.HTTPConnection) -> None:
        start.wait()
        while True:
            status, served_by = _get(conn, issued.token)
            if served_by != pid:
                raise RuntimeError("a pinned connection moved to another worker")
            if status == 401:
                seen[pid] = time.perf_counter() - t0[0]
                return
            time.sleep(0.002)

    threads = [threading.Thread(target=poll, args=item) for item in connections.items()]
    for thread in threads:
        thread.start()
    store.revoke(issued.id)
    t0[0] = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join(30)
    if len(seen) != len(connections):
        raise RuntimeError("a worker did not refuse the revoked token within 30 s")
    return [seen[pid] * 1000 for pid in sorted(seen)]


def run(url: str, runs: int, workers: int, workdir: Path) -> None:
    config = {
        "validator": "store",
        "store_url": url,
        "pid_header": True,
        "options": {"cache_time": 300},
    }
    with LocalTokenStore(url) as store:
        print(f"store: {store.url} ({store.dialect}); gunicorn {workers} workers, {runs} runs")
        server = Server(
            "gunicorn", config, workdir, threads=4, workers=workers, preload=True, keep_alive=60
        )
        with server:
            server.wait_for_workers()
            warm = store.issue(user_name="warm-up", ttl=3600)
            connections = _pin(server.port, warm.token, workers)
            try:
                samples: list[float] = []
                for _ in range(runs):
                    # A random pause: runs must not fall into step with the watchers' ticks.
                    time.sleep(random.uniform(0.0, 0.3))
                    samples += _run_once(store, connections)
            finally:
                for conn in connections.values():
                    conn.close()
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  revocation to 401 in every worker: n={len(ordered)}  p50 {p50:.0f} ms  "
        f"p99 {p99:.0f} ms  max {ordered[-1]:.0f} ms  mean {statistics.fmean(ordered):.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="URL", help="an existing database")
    where.add_argument(
        "--postgres", action="store_true", help="start a private PostgreSQL (tests/_services.py)"
    )
    parser.add_argument("--runs", type=int, default=100, help="revocations to time")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="authmw-bench-"))
    try:
        if args.db:
            run(args.db, args.runs, args.workers, folder)
        elif args.postgres:
            sys.path.insert(0, str(REPO / "tests"))
            from _services import PostgresServer

            server = PostgresServer()
            server.start()
            try:
                run(server.create_database(), args.runs, args.workers, folder)
            finally:
                server.destroy()
        else:
            run(f"sqlite:///{folder}/tokens.db", args.runs, args.workers, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
