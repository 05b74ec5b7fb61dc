"""Keep-alive connections to each worker of a real gunicorn, told apart by ``X-Worker-Pid``
(loadtest.apps' ``_pid_wsgi`` adds it to every answer, 401s too)."""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Iterator


def worker_request(
    conn: http.client.HTTPConnection, token: str, method: str = "GET", path: str = "/whoami"
) -> tuple[int, int, bytes]:
    """(status, worker pid, body) of one request with ``token`` on this connection."""
    conn.request(method, path, headers={"X-Auth-Token": token})
    response = conn.getresponse()
    body = response.read()
    return response.status, int(response.getheader("X-Worker-Pid") or 0), body


@contextlib.contextmanager
def pinned_connections(
    port: int, token: str, workers: int, timeout: float = 30.0
) -> Iterator[dict[int, http.client.HTTPConnection]]:
    """One open keep-alive connection per worker, by pid (each answered 200 for
    ``token``); closed at the end. A worker that boots late (a loaded machine) is
    waited for up to ``timeout`` seconds."""
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < workers:
            assert time.monotonic() < deadline, (
                f"reached {len(found)} of {workers} workers in {timeout} s"
            )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, pid, _ = worker_request(conn, token)
            assert status == 200, status
            if pid in found:
                conn.close()
                time.sleep(0.01)  # let another worker accept the next one
            else:
                found[pid] = conn
        yield found
    finally:
        for conn in found.values():
            conn.close()
