"""Forward-auth: ``authmw serve`` checks per second; latency nginx's auth subrequest adds.

    .venv/bin/python benchmarks/bench_gateway.py [--seconds 6] [--runs 3]

- Checks per second: wrk (another process, 1 thread, 16 connections) sends
  nginx-style check requests (``X-Original-Method``, ``X-Original-URI``, a
  cached token) straight to ``authmw serve --gateway nginx`` under uvicorn,
  1 worker; the validator is the local token store (SQLite), asked once:
  every later check is a cache hit.
- Added latency: the same upstream (an nginx answering 200 "ok" itself)
  behind two nginx front ends, one plain ``proxy_pass`` and one with
  examples/gateways/nginx/ included (auth_request to the same authmw
  server); wrk with 1 connection (one request at a time) and with 16,
  p50 / p99 of each, and the differences.

Median of ``--runs`` runs of ``--seconds`` each, front ends alternated.
Needs nginx and wrk (Debian: apt-get install nginx-light wrk). No timing
assertion: a run whose answers are not all 2xx is an error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from gateway._servers import Nginx, Serve, free_port, nginx_binary, wait_for_port  # noqa: E402

from authmw.store import LocalTokenStore  # noqa: E402

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: float, connections: int, headers: dict[str, str]) -> dict[str, float]:
    """rps, p50 and p99 (ms) of one wrk run; refuses a run with non-2xx answers."""
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        pct: float(value) * _UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)
    }
    return {"rps": rps, "p50": latency["50"], "p99": latency["99"]}


class StaticUpstream:
    """An nginx answering ``200 ok`` itself: the fastest upstream there is."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "upstream"
        self.dir.mkdir()
        self.port = free_port()
        temp = " ".join(
            f"{kind}_temp_path {self.dir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.dir / "nginx.conf").write_text(
            f"daemon off; worker_processes 1; {'user root root;' if os.geteuid() == 0 else ''}"
            f" error_log {self.dir / 'error.log'}; pid {self.dir / 'nginx.pid'};"
            " events { worker_connections 1024; }"
            f" http {{ access_log off; {temp} server {{ listen 127.0.0.1:{self.port};"
            ' location / { return 200 "ok"; } } }'
        )
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, self.proc, "nginx upstream", self.dir / "error.log")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="authmw-bench-gateway-"))
    url = f"sqlite:///{workdir / 'tokens.db'}"
    with LocalTokenStore(url) as store:
        token = store.issue(user_name="bench", project_name="demo", roles=["member"], ttl=3600)
    serve = Serve(
        workdir,
        {
            "serve": {"gateway": "nginx", "log_level": "warning"},
            "validator": {"type": "store", "url": url},
        },
    ).start()
    upstream = StaticUpstream(workdir)
    plain = Nginx(workdir, upstream.port, None).start()
    guarded = Nginx(workdir, upstream.port, serve.port).start()
    results: dict[str, list[dict[str, float]]] = {}
    auth = {"X-Auth-Token": token.token}
    check = {"X-Original-Method": "GET", "X-Original-URI": "/items?limit=10", **auth}
    try:
        wrk(guarded.url + "/items", 2, 4, auth)  # warm up: validate once, fill pools
        for _ in range(args.runs):
            cases: list[tuple[str, str, int, dict[str, str]]] = [
                ("checks", serve.url + "/_authmw", 16, check),
                ("plain c1", plain.url + "/items", 1, auth),
                ("auth c1", guarded.url + "/items", 1, auth),
                ("plain c16", plain.url + "/items", 16, auth),
                ("auth c16", guarded.url + "/items", 16, auth),
            ]
            for name, target, connections, headers in cases:
                results.setdefault(name, []).append(wrk(target, args.seconds, connections, headers))
    finally:
        guarded.stop()
        plain.stop()
        upstream.stop()
        serve.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"authmw serve (uvicorn, 1 worker), cached token: {median(results['checks'], 'rps'):,.0f}"
        " checks/s (wrk -t1 -c16)"
    )
    print(
        "| connections | nginx alone p50 / p99, ms | nginx + auth_request p50 / p99, ms "
        "| added p50 / p99, ms | req/s alone / with auth |"
    )
    print("| --- | --- | --- | --- | --- |")
    for c in ("c1", "c16"):
        alone, withauth = results[f"plain {c}"], results[f"auth {c}"]
        a50, a99 = median(alone, "p50"), median(alone, "p99")
        w50, w99 = median(withauth, "p50"), median(withauth, "p99")
        print(
            f"| {c[1:]} | {a50:.2f} / {a99:.2f} | {w50:.2f} / {w99:.2f} "
            f"| {w50 - a50:.2f} / {w99 - a99:.2f} "
            f"| {median(alone, 'rps'):,.0f} / {median(withauth, 'rps'):,.0f} |"
        )
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    print(
        f"median of {args.runs} runs of {args.seconds:g} s; load average "
        f"{os.getloadavg()[0]:.2f}; {version.stdout.splitlines()[0]}"
    )


if __name__ == "__main__":
    main()
