"""Item 1: the cost of a request whose token is cached, and throughput under real servers."""

from __future__ import annotations

import asyncio
import statistics
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from _support import (
    asgi_batch,
    authmw_asgi,
    authmw_wsgi,
    hello_asgi,
    hello_wsgi,
    ksm_fill_cache,
    ksm_wsgi,
    load,
    server,
    wsgi_caller,
)
from conftest import Report

from authmw import Identity
from authmw._hashing import token_digest

WSGI = "1a. Cached token, WSGI: time per request (in-process call, median)"
ASGI = "1b. Cached token, ASGI: time per request (in-process call, median)"
SCALE = "1c. Cached token, WSGI: time per request vs number of tokens in the cache"
THROUGHPUT = "1d. Hello world under a real server, load from wrk in another process"

_medians: dict[str, float] = {}


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}"


def _median(benchmark: Any) -> float:
    median: float = benchmark.stats.stats.median
    return median


@pytest.mark.parametrize(
    "variant", ["bare", "authmw", "keystonemiddleware", "keystonemiddleware+catalog"]
)
def test_wsgi_cached_token(
    benchmark: Any, keystone: Any, token: str, report: Report, variant: str
) -> None:
    if variant == "bare":
        app: Any = hello_wsgi
    elif variant == "authmw":
        app = authmw_wsgi(keystone.url)
    elif variant == "keystonemiddleware":
        app = ksm_wsgi(keystone.url)
    else:
        app = ksm_wsgi(keystone.url, include_service_catalog="true")
    call = wsgi_caller(app, token)
    assert call().startswith("200")  # validates once, then the token is cached
    benchmark(call)
    median = _medians[f"wsgi-{variant}"] = _median(benchmark)
    bare = _medians.get("wsgi-bare", median)
    header = ("stack", "us per request", "overhead over bare app, us")
    overhead = "-" if variant == "bare" else _us(median - bare)
    report.row(WSGI, header, variant, _us(median), overhead)
    if variant == "keystonemiddleware" and "wsgi-authmw" in _medians:
        ours = _medians["wsgi-authmw"] - bare
        theirs = median - bare
        report.note(
            WSGI,
            f"authmw's overhead is 1/{theirs / ours:.0f} of keystonemiddleware's (catalog off).",
        )


@pytest.mark.parametrize("variant", ["bare", "authmw"])
def test_asgi_cached_token(
    benchmark: Any, keystone: Any, token: str, report: Report, variant: str
) -> None:
    app: Any = hello_asgi if variant == "bare" else authmw_asgi(keystone.url)
    batch = 100
    run = asgi_batch(app, token, batch)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(run()) == [200] * batch
        benchmark(lambda: loop.run_until_complete(run()))
    finally:
        if variant == "authmw":
            loop.run_until_complete(app.core.aclose())
        loop.close()
    median = _medians[f"asgi-{variant}"] = _median(benchmark) / batch
    bare = _medians.get("asgi-bare", median)
    overhead = "-" if variant == "bare" else _us(median - bare)
    report.row(
        ASGI,
        ("stack", "us per request", "overhead over bare app, us"),
        variant,
        _us(median),
        overhead,
    )
    if variant == "bare":
        report.note(ASGI, f"Measured as batches of {batch} sequential requests in one event loop.")


@pytest.fixture(scope="module")
def filled() -> dict[str, Any]:
    return {"count": 0}


def _synthetic(n: int, expires: datetime) -> Identity:
    return Identity(
        f"user-{n:07d}",
        user_name=f"user{n}",
        user_domain_id="default",
        project_id=f"project-{n % 1000:04d}",
        project_name=f"project{n % 1000}",
        project_domain_id="default",
        roles=("member", "reader"),
        expires_at=expires,
        audit_ids=(f"audit-{n:07d}",),
        methods=("password",),
    )


@pytest.mark.parametrize("size", [1, 1_000, 10_000, 100_000, 1_000_000])
def test_authmw_cache_size(
    benchmark: Any, keystone: Any, token: str, report: Report, filled: dict[str, Any], size: int
) -> None:
    if "app" not in filled:
        filled["app"] = authmw_wsgi(keystone.url, cache_size=1_100_000, cache_time=3600)
        assert wsgi_caller(filled["app"], token)().startswith("200")
    app = filled["app"]
    cache = app.core.cache
    expires = datetime.now(timezone.utc) + timedelta(hours=2)
    until = expires.timestamp()
    with cache._lock:  # fill the cache directly with synthetic identities
        for n in range(filled["count"], size - 1):
            cache.entries.positive[token_digest(f"synthetic-token-{n:08d}")] = (
                _synthetic(n, expires),
                until,
                until - 3600,
            )
    filled["count"] = max(filled["count"], size - 1)
    assert len(cache) == size
    call = wsgi_caller(app, token)
    assert call().startswith("200")
    benchmark(call)
    report.row(
        SCALE,
        ("stack", "tokens cached", "us per request"),
        "authmw",
        f"{size:,}",
        _us(_median(benchmark)),
    )


@pytest.mark.parametrize("size", [1, 1_000, 10_000])
def test_keystonemiddleware_cache_size(
    benchmark: Any, keystone: Any, token: str, report: Report, size: int
) -> None:
    app = ksm_wsgi(keystone.url)
    call = wsgi_caller(app, token)
    assert call().startswith("200")
    if size > 1:
        ksm_fill_cache(app, size - 1)
    assert call().startswith("200")
    benchmark(call)
    report.row(
        SCALE,
        ("stack", "tokens cached", "us per request"),
        "keystonemiddleware",
        f"{size:,}",
        _us(_median(benchmark)),
    )


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_throughput(benchmark: Any, keystone: Any, token: str, report: Report, kind: str) -> None:
    seconds, rounds = 6.0, 5
    env = {"AUTHMW_BENCH_AUTH_URL": keystone.url}
    prefix = "wsgi" if kind == "gunicorn" else "asgi"
    results: dict[str, list[float]] = {"bare": [], "authmw": []}

    def run() -> None:
        for _ in range(rounds):
            for variant in ("bare", "authmw"):
                with server(kind, f"{prefix}_{variant}", env) as port:
                    warm = load(port, token, 1.0)  # the first request validates the token
                    assert warm["rps"] > 0
                    result = load(port, token, seconds)
                    assert result["non_2xx"] == 0 and result["socket_errors"] == 0, result
                    results[variant].append(result["rps"])

    benchmark.pedantic(run, rounds=1, iterations=1)
    bare = statistics.median(results["bare"])
    ours = statistics.median(results["authmw"])
    what = "gunicorn, 1 worker, gthread 8 threads" if kind == "gunicorn" else "uvicorn, 1 worker"
    header = ("server", "bare app, req/s", "authmw, req/s", "authmw / bare")
    report.row(THROUGHPUT, header, what, f"{bare:,.0f}", f"{ours:,.0f}", f"{ours / bare:.1%}")
    if kind == "gunicorn":
        report.note(
            THROUGHPUT,
            f"Median of {rounds} alternating {seconds:g} s runs each, 16 connections, "
            "wrk 1 thread; the server and the load share the 2 cores.",
        )
