"""In-process cost of a cached token, per scenario: one measurement round, as JSON.

Run by benchmarks/compare.py against two checkouts (``PYTHONPATH`` picks
which authmw is imported), or alone::

    python benchmarks/micro.py [--seconds 0.5]

Each scenario builds a middleware around a hello-world app with an in-memory
validator, makes one request (the token is then cached) and times many
more; the bare app's time is subtracted. A scenario the imported authmw
cannot build (an option it does not have yet) is reported as null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

TOKEN = "micro-benchmark-token-0123456789abcdef"


def hello_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello world\n"]


async def hello_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"Hello world\n"})


def _identity() -> Any:
    from authmw import Identity

    return Identity(
        "u-bench",
        user_name="bench",
        project_id="p-1",
        project_name="bench",
        roles=("member", "reader"),
        expires_at=datetime.now(timezone.utc) + timedelta(days=1),
        audit_ids=("a-1",),
    )


def _validator() -> Any:
    from authmw import InMemoryValidator

    return InMemoryValidator({TOKEN: _identity()})


def wsgi_call(app: Any, headers: dict[str, str]) -> Callable[[], None]:
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "*/*",
        "HTTP_USER_AGENT": "bench",
        "wsgi.url_scheme": "http",
    }
    base.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})

    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> None:
        for _ in app(dict(base), start_response):
            pass

    call()
    if not statuses[-1].startswith("200"):
        raise RuntimeError(f"the scenario answers {statuses[-1]}")
    statuses.clear()
    return call


def asgi_call(app: Any, headers: dict[str, str]) -> Callable[[], None]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"accept", b"*/*"),
            (b"user-agent", b"bench"),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))  # the first request validates, in a loop

    def call() -> None:
        # A cached token never suspends: drive the coroutine without a loop.
        coroutine = app(scope, receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        raise RuntimeError("the request suspended: the token was not cached")

    call()
    if statuses[-1] != 200:
        raise RuntimeError(f"the scenario answers {statuses[-1]}")
    statuses.clear()
    return call


def _middleware(kind: str, **options: Any) -> Any:
    from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware

    if kind == "wsgi":
        return WSGIAuthMiddleware(hello_wsgi, _validator(), **options)
    return ASGIAuthMiddleware(hello_asgi, validator=_validator(), **options)


TWO = ["X-Auth-Token", "Authorization: Bearer"]
FOUR = [*TWO, "Sec-WebSocket-Protocol: bearer", "query: access_token"]

SCENARIOS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    # name: (kind, middleware options, request headers)
    "wsgi, one header source": ("wsgi", {}, {"X-Auth-Token": TOKEN}),
    "asgi, one header source": ("asgi", {}, {"X-Auth-Token": TOKEN}),
    "wsgi, two sources, token in X-Auth-Token": (
        "wsgi",
        {"token_sources": TWO},
        {"X-Auth-Token": TOKEN},
    ),
    "wsgi, two sources, token as Bearer": (
        "wsgi",
        {"token_sources": TWO},
        {"Authorization": f"Bearer {TOKEN}"},
    ),
    "asgi, two sources, token as Bearer": (
        "asgi",
        {"token_sources": TWO},
        {"Authorization": f"Bearer {TOKEN}"},
    ),
    "asgi, four sources, token as Bearer": (
        "asgi",
        {"token_sources": FOUR},
        {"Authorization": f"Bearer {TOKEN}"},
    ),
}


def _per_call(call: Callable[[], None], seconds: float) -> float:
    """Median of 5 timings of a batch sized to last ``seconds`` in all."""
    call()
    n = 1000
    while True:
        started = time.perf_counter()
        for _ in range(n):
            call()
        elapsed = time.perf_counter() - started
        if elapsed > seconds / 5 or n > 5_000_000:
            break
        n *= 2
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()
        samples.append((time.perf_counter() - started) / n)
    samples.sort()
    return samples[2]


def measure(seconds: float) -> dict[str, float | None]:
    bare = {
        "wsgi": _per_call(wsgi_call(hello_wsgi, {}), seconds),
        "asgi": _per_call(asgi_call(hello_asgi, {}), seconds),
    }
    out: dict[str, float | None] = {}
    for name, (kind, options, headers) in SCENARIOS.items():
        try:
            app = _middleware(kind, **options)
        except Exception:  # this authmw does not know the option
            out[name] = None
            continue
        call = wsgi_call(app, headers) if kind == "wsgi" else asgi_call(app, headers)
        out[name] = (_per_call(call, seconds) - bare[kind]) * 1e6  # microseconds
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per scenario")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    json.dump(measure(args.seconds), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
