"""The load generator, run as its own process: ``python -m loadtest.gen PLAN.json OUT.json``.

The plan lists the servers (``targets``: name -> base URL), the number of
keep-alive connections per server (``concurrency``) and the requests, each
``{"target": name, "kind": ..., "token": str | None, "user_id": str | None}``.
Requests to one server are spread over its connections in plan order. The
output holds one row per request, in plan order: ``[status, latency_ms,
user_id_seen, started_s]`` (status 0: no HTTP answer).
"""

from __future__ import annotations

import http.client
import json
import queue
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main", "run_plan"]

_TIMEOUT = 60.0


def _worker(
    url: str, jobs: queue.Queue[tuple[int, dict[str, Any]] | None], rows: list[Any], t0: float
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conn: http.client.HTTPConnection | None = None
    while True:
        job = jobs.get()
        if job is None:
            break
        index, request = job
        headers = {"X-Auth-Token": request["token"]} if request.get("token") is not None else {}
        started = time.perf_counter()
        status, seen = 0, None
        for _attempt in (1, 2):  # one retry on a keep-alive connection the server closed
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=_TIMEOUT)
            try:
                conn.request("GET", request.get("path", "/items"), headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                if status == 200:
                    seen = (json.loads(body).get("identity") or {}).get("user_id")
                if response.will_close:
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                started = time.perf_counter()
        latency = (time.perf_counter() - started) * 1000.0
        rows[index] = [status, round(latency, 3), seen, round(started - t0, 4)]
    if conn is not None:
        conn.close()


def run_plan(plan: dict[str, Any]) -> list[Any]:
    """Send every request of ``plan``; the rows, in plan order."""
    requests: list[dict[str, Any]] = plan["requests"]
    rows: list[Any] = [None] * len(requests)
    t0 = time.perf_counter()
    threads = []
    queues: dict[str, queue.Queue[tuple[int, dict[str, Any]] | None]] = {}
    for name, url in plan["targets"].items():
        queues[name] = queue.Queue()
        for _ in range(plan.get("concurrency", 8)):
            thread = threading.Thread(target=_worker, args=(url, queues[name], rows, t0))
            thread.start()
            threads.append(thread)
    for index, request in enumerate(requests):
        queues[request["target"]].put((index, request))
    for name, q in queues.items():
        for _ in range(plan.get("concurrency", 8)):
            q.put(None)
        del name
    for thread in threads:
        thread.join()
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m loadtest.gen PLAN.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        plan = json.load(f)
    rows = run_plan(plan)
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
