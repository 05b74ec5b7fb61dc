"""How fast a revocation reaches a cache that did not make it, and what it costs Keystone.

    .venv/bin/python benchmarks/bench_revocation.py [--rounds 200] [--keystone-rounds 20]

- Redis pub/sub: two caches on one real redis-server (a private one started
  here), each with its own RedisCache; the time from ``invalidate()`` in one
  until the other's in-process entry is gone, over ``--rounds`` tokens.
- Keystone follower: a token cached by a WSGI middleware (``cache_time=300``,
  ``revocation_poll_interval=1``) is revoked in Keystone (the benchmarks'
  own, see _support.BenchKeystone); the time until the middleware answers
  401, over ``--keystone-rounds`` tokens; and the follower's requests per
  minute (one per interval per process).

Prints p50 / p99 / max in milliseconds and the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import SERVICE, BenchKeystone, free_port, wait_port  # noqa: E402

from authmw import Identity, InMemoryValidator, WSGIAuthMiddleware  # noqa: E402
from authmw.cache import CachedValidator  # noqa: E402
from authmw.redis import RedisCache  # noqa: E402
from authmw.validators.keystone import KeystoneValidator  # noqa: E402


def _wait(condition: Callable[[], bool], started: float, limit: float = 30.0) -> float:
    """Seconds from ``started`` (perf_counter) until ``condition`` holds."""
    while not condition():
        if time.perf_counter() - started > limit:
            raise RuntimeError("the revocation never arrived")
        time.sleep(0.0005)
    return time.perf_counter() - started


def _summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (
        f"{name}: n={len(ms)} p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


def redis_pubsub(rounds: int) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (bash scripts/install-services.sh)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="authmw-bench-redis-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process=server)
        time.sleep(0.2)  # the port opens a moment before redis-server accepts commands
        url = f"redis://127.0.0.1:{port}/0"
        tokens = {
            f"bench-token-{n:06d}": Identity("u", audit_ids=(f"a-{n}",)) for n in range(rounds)
        }
        caches = []
        for _ in range(2):
            shared = RedisCache.from_url(url, secret="b" * 40, namespace="bench")
            caches.append(CachedValidator(InMemoryValidator(dict(tokens)), shared=shared))
            shared._subscriptions[0].subscribed.wait(10)
        a, b = caches
        seconds = []
        for n, token in enumerate(tokens):
            b.validate(token)
            started = time.perf_counter()
            a.invalidate(f"a-{n}")
            seconds.append(_wait(lambda t=token: b.lookup(t, count_miss=False) is None, started))
        return _summary("Redis pub/sub, revocation to the other cache", seconds)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def keystone_follower(rounds: int) -> str:
    keystone = BenchKeystone()
    keystone.start()
    try:
        validator = KeystoneValidator(keystone.url, revocation_poll_interval=1, **SERVICE)

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            return [b"ok"]

        middleware = WSGIAuthMiddleware(app, validator, cache_time=300)
        statuses: list[str] = []

        def status(token: str) -> str:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": token}
            middleware(environ, lambda s, h, e=None: statuses.append(s))
            return statuses[-1]

        seconds = []
        started_polls, started = 0, time.monotonic()
        for _ in range(rounds):
            token = keystone.issue_token()
            assert status(token).startswith("200")
            if not started_polls:
                started_polls, started = validator.revocations.polls, time.monotonic()  # type: ignore[union-attr]
            admin = keystone.admin_token()
            revoked_at = time.perf_counter()
            response = keystone.client.delete(
                f"{keystone.url}/auth/tokens",
                headers={"X-Auth-Token": admin, "X-Subject-Token": token},
            )
            response.raise_for_status()
            seconds.append(_wait(lambda t=token: status(t).startswith("401"), revoked_at))
        minutes = (time.monotonic() - started) / 60
        polls = validator.revocations.polls - started_polls  # type: ignore[union-attr]
        validator.close()
        return (
            _summary("Keystone follower (interval 1 s), revoked to 401", seconds)
            + f"\nKeystone load from the follower: {polls / minutes:.0f} requests per minute "
            "per process"
        )
    finally:
        keystone.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--keystone-rounds", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print(redis_pubsub(args.rounds))
    print(keystone_follower(args.keystone_rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
