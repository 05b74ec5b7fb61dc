"""Fallback load generator when wrk is missing: ``python loadgen.py URL SECONDS CONNS [TOKEN]``.

Keep-alive HTTP/1.1 GETs from CONNECTIONS threads for SECONDS; prints JSON
``{"rps": ..., "requests": ..., "non_2xx": ...}``. Slower than wrk (the
client's own cost is counted), so use it only to compare runs made with it.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    token = sys.argv[4] if len(sys.argv) > 4 else None
    parts = urlsplit(url)
    headers = {"X-Auth-Token": token} if token else {}
    counts = [0] * connections
    bad = [0] * connections
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        while time.monotonic() < deadline:
            conn.request("GET", parts.path or "/", headers=headers)
            response = conn.getresponse()
            response.read()
            counts[index] += 1
            if response.status >= 300:
                bad[index] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(counts)
    print(json.dumps({"rps": total / elapsed, "requests": total, "non_2xx": sum(bad)}))


if __name__ == "__main__":
    main()
