"""Items 2 and 3: how many validation calls reach Keystone (counted in its access log)."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _support import asgi_batch, authmw_asgi, authmw_wsgi, ksm_wsgi, percentile, wsgi_caller
from conftest import Report

CONCURRENT = "2. 100 concurrent first requests with one fresh token"
INVALID = "3. One invalid token, repeated"

CLIENTS = 100


def _threads_at_once(call: Any, count: int) -> list[tuple[str, float]]:
    """``count`` threads released together, each making one request; (status, seconds) each."""
    barrier = threading.Barrier(count)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        started = time.perf_counter()
        status = call()
        elapsed = time.perf_counter() - started
        with lock:
            results.append((status, elapsed))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize(
    "variant", ["authmw WSGI (threads)", "authmw ASGI (tasks)", "keystonemiddleware (threads)"]
)
def test_concurrent_first_requests(
    benchmark: Any, keystone: Any, report: Report, variant: str
) -> None:
    warm_token, fresh_token = keystone.issue_token(), keystone.issue_token()
    outcome: dict[str, Any] = {}
    if variant.startswith("authmw ASGI"):
        app = authmw_asgi(keystone.url)
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(asgi_batch(app, warm_token, 1)()) == [200]

        async def burst() -> list[tuple[str, float]]:
            one = asgi_batch(app, fresh_token, 1)

            async def timed() -> tuple[str, float]:
                started = time.perf_counter()
                statuses = await one()
                return str(statuses[-1]), time.perf_counter() - started

            return list(await asyncio.gather(*(timed() for _ in range(CLIENTS))))

        def action() -> None:
            outcome["results"] = loop.run_until_complete(burst())

        try:
            calls = benchmark.pedantic(lambda: keystone.count_calls(action), rounds=1, iterations=1)
        finally:
            loop.run_until_complete(app.core.aclose())
            loop.close()
    else:
        app = authmw_wsgi(keystone.url) if variant.startswith("authmw") else ksm_wsgi(keystone.url)
        assert wsgi_caller(app, warm_token)().startswith("200")  # service token fetched
        call = wsgi_caller(app, fresh_token)

        def action() -> None:
            outcome["results"] = _threads_at_once(call, CLIENTS)

        calls = benchmark.pedantic(lambda: keystone.count_calls(action), rounds=1, iterations=1)
    results = outcome["results"]
    ok = sum(1 for status, _ in results if status.startswith("200"))
    latencies = [seconds for _, seconds in results]
    header = (
        "stack",
        "Keystone validation calls",
        "requests 200",
        "median latency, ms",
        "max latency, ms",
    )
    report.row(
        CONCURRENT,
        header,
        variant,
        calls,
        f"{ok}/{CLIENTS}",
        f"{statistics.median(latencies) * 1000:.0f}",
        f"{max(latencies) * 1000:.0f}",
    )


INVALID_REQUESTS = int(os.environ.get("AUTHMW_BENCH_INVALID_REQUESTS", "10000"))
KSM_INVALID_REQUESTS = int(os.environ.get("AUTHMW_BENCH_KSM_INVALID_REQUESTS", "1000"))
PACED_SECONDS = float(os.environ.get("AUTHMW_BENCH_PACED_SECONDS", "30"))
_INVALID_HEADER = ("stack", "requests", "over, s", "Keystone validation calls", "requests 401")


def test_invalid_token_burst_authmw(benchmark: Any, keystone: Any, report: Report) -> None:
    app = authmw_wsgi(keystone.url, negative_cache_time=10)
    assert wsgi_caller(app, keystone.issue_token())().startswith("200")
    call = wsgi_caller(app, keystone.invalid_token())
    statuses: list[str] = []

    def action() -> None:
        with ThreadPoolExecutor(8) as pool:
            statuses.extend(pool.map(lambda _: call(), range(INVALID_REQUESTS)))

    started = time.perf_counter()
    calls = benchmark.pedantic(lambda: keystone.count_calls(action), rounds=1, iterations=1)
    elapsed = time.perf_counter() - started - 1.0  # minus the access-log settle time
    rejected = sum(1 for s in statuses if s.startswith("401"))
    report.row(
        INVALID,
        _INVALID_HEADER,
        "authmw (negative_cache_time=10), 8 threads",
        f"{INVALID_REQUESTS:,}",
        f"{elapsed:.1f}",
        calls,
        f"{rejected:,}",
    )


def test_invalid_token_paced_authmw(benchmark: Any, keystone: Any, report: Report) -> None:
    """The same count spread over PACED_SECONDS: calls bounded by seconds / negative TTL."""
    app = authmw_wsgi(keystone.url, negative_cache_time=10)
    assert wsgi_caller(app, keystone.issue_token())().startswith("200")
    call = wsgi_caller(app, keystone.invalid_token())
    interval = PACED_SECONDS / INVALID_REQUESTS
    statuses: list[str] = []

    def action() -> None:
        start = time.perf_counter()
        for n in range(INVALID_REQUESTS):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            statuses.append(call())

    started = time.perf_counter()
    calls = benchmark.pedantic(lambda: keystone.count_calls(action), rounds=1, iterations=1)
    elapsed = time.perf_counter() - started - 1.0
    rejected = sum(1 for s in statuses if s.startswith("401"))
    report.row(
        INVALID,
        _INVALID_HEADER,
        "authmw (negative_cache_time=10), paced",
        f"{INVALID_REQUESTS:,}",
        f"{elapsed:.1f}",
        calls,
        f"{rejected:,}",
    )


def test_invalid_token_keystonemiddleware(benchmark: Any, keystone: Any, report: Report) -> None:
    app = ksm_wsgi(keystone.url)
    assert wsgi_caller(app, keystone.issue_token())().startswith("200")
    call = wsgi_caller(app, keystone.invalid_token())
    statuses: list[str] = []
    latencies: list[float] = []

    def timed(_: int) -> str:
        started = time.perf_counter()
        status = call()
        latencies.append(time.perf_counter() - started)
        return status

    def action() -> None:
        with ThreadPoolExecutor(8) as pool:
            statuses.extend(pool.map(timed, range(KSM_INVALID_REQUESTS)))

    started = time.perf_counter()
    calls = benchmark.pedantic(lambda: keystone.count_calls(action), rounds=1, iterations=1)
    elapsed = time.perf_counter() - started - 1.0
    rejected = sum(1 for s in statuses if s.startswith("401"))
    report.row(
        INVALID,
        _INVALID_HEADER,
        "keystonemiddleware, 8 threads",
        f"{KSM_INVALID_REQUESTS:,}",
        f"{elapsed:.1f}",
        calls,
        f"{rejected:,}",
    )
    if KSM_INVALID_REQUESTS != INVALID_REQUESTS:
        report.note(
            INVALID,
            f"keystonemiddleware ran {KSM_INVALID_REQUESTS:,} requests, not "
            f"{INVALID_REQUESTS:,}: each one is a Keystone call "
            f"(p50 {percentile(latencies, 50) * 1000:.0f} ms here); set "
            "AUTHMW_BENCH_KSM_INVALID_REQUESTS=10000 for the full count.",
        )
