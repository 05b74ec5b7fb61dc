"""Item 5: latency while the identity service stalls for 2 s (a delaying proxy in front of it)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import pytest
from _support import (
    PeakSampler,
    StallProxy,
    authmw_wsgi,
    ksm_wsgi,
    percentile,
    wsgi_caller,
)
from conftest import Report

STALL = "5. Identity service stalled for 2 s (delaying TCP proxy), 32 threads, new tokens"
STALL_SECONDS = 2.0
THREADS = 32
PER_THREAD = 2
TIMEOUT = 1.0


def _run_clients(calls: list[Any], hot: Any) -> tuple[list[tuple[str, float]], list[float]]:
    """THREADS threads make their calls in turn; one more thread loops on a cached token."""
    results: list[tuple[str, float]] = []
    hot_latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS + 1)
    done = threading.Event()

    def client(mine: list[Any]) -> None:
        barrier.wait()
        for call in mine:
            started = time.perf_counter()
            status = call()
            elapsed = time.perf_counter() - started
            with lock:
                results.append((status, elapsed))

    def hot_client() -> None:
        barrier.wait()
        while not done.is_set():
            started = time.perf_counter()
            hot()
            hot_latencies.append(time.perf_counter() - started)
            time.sleep(0.001)

    threads = [
        threading.Thread(target=client, args=(calls[i * PER_THREAD : (i + 1) * PER_THREAD],))
        for i in range(THREADS)
    ]
    hot_thread = threading.Thread(target=hot_client)
    for thread in [*threads, hot_thread]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    hot_thread.join()
    return results, hot_latencies


@pytest.mark.parametrize(
    "variant",
    [
        "authmw (timeout 1 s, defaults: max_concurrency 32, breaker after 5 failures)",
        "authmw (timeout 1 s, max_concurrency 8, acquire_timeout 0.5 s)",
        "keystonemiddleware (defaults: no timeout)",
    ],
)
def test_stall(benchmark: Any, keystone: Any, report: Report, variant: str) -> None:
    port = urlsplit(keystone.url).port
    assert port is not None
    tokens = keystone.issue_tokens(THREADS * PER_THREAD + 1)
    hot_token = tokens.pop()
    with contextlib.ExitStack() as stack:
        proxy = StallProxy(port, STALL_SECONDS)
        stack.callback(proxy.close)
        proxied = f"http://127.0.0.1:{proxy.port}/v3"
        if variant.startswith("authmw"):
            options: dict[str, Any] = {}
            if "max_concurrency 8" in variant:
                options = {"max_concurrency": 8, "acquire_timeout": 0.5}
            app = authmw_wsgi(proxied, validator_options={"timeout": TIMEOUT}, **options)
            guarded = app.core.cache.validator

            def read_in_flight() -> int:
                count: int = guarded.in_flight
                return count
        else:
            # keystonemiddleware validates at the catalog's identity endpoint: a region
            # whose endpoints are the proxy sends it there. It has no in-flight
            # counter: count the requests inside it instead.
            stack.enter_context(keystone.identity_region("bench-stall", proxied))
            outer = ksm_wsgi(proxied, region_name="bench-stall")
            counter = {"n": 0}
            lock = threading.Lock()

            def app_with_count(environ: Any, start_response: Any) -> Any:
                with lock:
                    counter["n"] += 1
                try:
                    return outer(environ, start_response)
                finally:
                    with lock:
                        counter["n"] -= 1

            app = app_with_count

            def read_in_flight() -> int:
                return counter["n"]

        hot = wsgi_caller(app, hot_token)
        assert hot().startswith("200")  # service token fetched, hot token cached
        calls = [wsgi_caller(app, t) for t in tokens]
        outcome: dict[str, Any] = {}

        def run() -> None:
            proxy.stall()
            try:
                with PeakSampler(read_in_flight) as peak:
                    outcome["results"], outcome["hot"] = _run_clients(calls, hot)
                outcome["peak"] = peak.peak
            finally:
                proxy.resume()

        started = time.perf_counter()
        benchmark.pedantic(run, rounds=1, iterations=1)
        wall = time.perf_counter() - started

    latencies = [seconds for _, seconds in outcome["results"]]
    statuses = Counter(status.split()[0] for status, _ in outcome["results"])
    hot_latencies = outcome["hot"]
    header = (
        "stack",
        "requests",
        "statuses",
        "p50, s",
        "p99, s",
        "max, s",
        "peak in flight",
        "cached token p99, ms (during the stall)",
        "all done in, s",
    )
    report.row(
        STALL,
        header,
        variant,
        len(latencies),
        " ".join(f"{code}x{count}" for code, count in sorted(statuses.items())),
        f"{percentile(latencies, 50):.3f}",
        f"{percentile(latencies, 99):.3f}",
        f"{max(latencies):.3f}",
        outcome["peak"],
        f"{percentile(hot_latencies, 99) * 1000:.2f}",
        f"{wall:.1f}",
    )
    if variant.startswith("keystonemiddleware"):
        report.note(
            STALL,
            "Peak in flight: authmw's validations in flight (GuardedValidator.in_flight); for "
            "keystonemiddleware, requests inside the middleware (it has no bound of its own). "
            f"Each of {THREADS} threads sends {PER_THREAD} never-seen tokens one after the other "
            "while another thread repeats a cached token.",
        )
