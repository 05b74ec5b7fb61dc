"""Item 4: memory held per cached identity (tracemalloc), with realistic Keystone identities."""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
from typing import Any

from _support import authmw_validator, authmw_wsgi, wsgi_caller
from conftest import Report

from authmw import Identity
from authmw._hashing import token_digest

MEMORY = "4. Memory per cached identity (tracemalloc, 100,000 identities)"
COUNT = int(os.environ.get("AUTHMW_BENCH_MEMORY_COUNT", "100000"))


def _variants(template: dict[str, Any], count: int) -> list[Identity]:
    """``count`` identities shaped like ``template``, each parsed from its own JSON."""
    text = json.dumps(template)
    out = []
    for n in range(count):
        data = json.loads(text)
        data["user_id"] = f"{n:032x}"
        data["audit_ids"] = [f"audit{n:017d}"]
        body = data.get("token_body")
        if body is not None:
            body["user"]["id"] = data["user_id"]
            body["audit_ids"] = data["audit_ids"]
        out.append(Identity.from_dict(data))
    return out


def test_memory_per_identity(benchmark: Any, keystone: Any, token: str, report: Report) -> None:
    validator = authmw_validator(keystone.url)
    real = validator.validate(token)
    validator.close()
    template = real.to_dict(include_token_body=True)
    lean = real.to_dict(include_token_body=False)
    results: dict[str, tuple[float, float]] = {}

    def measure(shape: dict[str, Any]) -> tuple[float, float]:
        app = authmw_wsgi(keystone.url, cache_size=COUNT + 10, cache_time=3600)
        cache = app.core.cache
        until = real.expires_timestamp
        tokens = [f"synthetic-token-{n:08d}" for n in range(COUNT)]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        identities = _variants(shape, COUNT)
        with cache._lock:
            for token_, identity in zip(tokens, identities, strict=True):
                cache.entries.positive[token_digest(token_)] = (identity, until, 0.0)
        del identities
        gc.collect()
        stored = tracemalloc.get_traced_memory()[0]
        # One request per token: the per-identity memo (decision, rendered headers) is built.
        for token_ in tokens:
            wsgi_caller(app, token_)()
        gc.collect()
        served = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(cache) == COUNT
        return (stored - before) / COUNT, (served - before) / COUNT

    def run() -> None:
        results["body"] = measure(template)
        results["lean"] = measure(lean)

    benchmark.pedantic(run, rounds=1, iterations=1)
    header = (
        "identities",
        "cached, bytes each",
        "after one request each, bytes each",
        f"MiB per {COUNT:,} (after)",
    )
    for label, key in (
        ("as KeystoneValidator returns them (raw token body kept)", "body"),
        ("without the raw token body", "lean"),
    ):
        stored, served = results[key]
        report.row(
            MEMORY,
            header,
            label,
            f"{stored:,.0f}",
            f"{served:,.0f}",
            f"{served * COUNT / 2**20:,.1f}",
        )
    report.note(
        MEMORY,
        f"Identities shaped like the demo-user project token of this Keystone "
        f"({len(json.dumps(template))} bytes as JSON), each parsed from its own JSON; "
        "'after one request' adds what the first cache hit memoises per identity "
        "(the decision and the rendered headers).",
    )
