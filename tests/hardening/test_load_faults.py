"""Load and faults under real servers: gunicorn (threads) + WSGI and uvicorn + ASGI, real Keystone.

The harness (:mod:`loadtest.harness`) drives both servers from a separate
load-generator process through the phases normal, Keystone stopped and
started again, Keystone slow, Keystone stalled beyond the timeout, Redis
(the shared cache) stopped, and normal again. The Keystone is a private copy
(``keystone_disposable``), so stopping it disturbs no other test.

CI runs one short cycle (a few thousand requests); ``AUTHMW_LONG_TESTS=1``
runs the soak (several cycles, more tokens) and also checks that the
servers' memory stays flat. Assertions are on correctness counts and
leaks, never on timing. ``AUTHMW_RELIABILITY_JSON=path`` keeps the figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness import LONG, SHORT, Harness

from ._support import LONG as LONG_RUN

pytestmark = [pytest.mark.keystone, pytest.mark.redis] + ([pytest.mark.slow] if LONG_RUN else [])


@pytest.fixture(scope="module")
def figures(
    tmp_path_factory: pytest.TempPathFactory,
    keystone: Any,
) -> Any:
    # Module scope: one run of the harness serves every assertion below.
    from _services import DisposableKeystone, RedisServer

    disposable = DisposableKeystone(keystone)
    redis = RedisServer()
    try:
        disposable.start()
        redis.start()
        workdir: Path = tmp_path_factory.mktemp("load")
        with Harness(disposable, LONG if LONG_RUN else SHORT, redis=redis, workdir=workdir) as h:
            result = h.run()
    finally:
        redis.destroy()
        disposable.destroy()
    out = os.environ.get("AUTHMW_RELIABILITY_JSON")
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return result


def phases(figures: Any, name: str) -> list[dict[str, Any]]:
    found = [p for p in figures["phases"] if p["phase"] == name]
    assert found, f"phase {name} did not run"
    return found


def test_every_phase_ran_on_both_servers(figures: Any) -> None:
    names = {(p["phase"], p["server"]) for p in figures["phases"]}
    for phase in (
        "normal",
        "keystone-down",
        "keystone-slow",
        "keystone-stalled",
        "redis-down",
        "normal-after",
        "keystone-down-stale",
    ):
        assert {(phase, "gunicorn"), (phase, "uvicorn")} <= names
    assert figures["summary"]["requests"] >= 1500


def test_no_request_was_wrongly_accepted(figures: Any) -> None:
    # Revoked, invalid and missing tokens never got a 200, nor did any token
    # get another user's identity.
    assert figures["summary"]["wrongly_accepted"] == 0


def test_no_valid_cached_token_was_rejected_in_any_phase(figures: Any) -> None:
    for phase in figures["phases"]:
        assert phase["wrongly_rejected_cached"] == 0, phase


def test_a_valid_token_is_never_told_it_is_invalid(figures: Any) -> None:
    # Outages are 503, never 401: a client must not drop a good token.
    assert figures["summary"]["valid_told_invalid"] == 0


def test_no_500_and_every_request_answered(figures: Any) -> None:
    assert figures["summary"]["server_errors"] == 0
    for phase in figures["phases"]:
        assert sum(phase["statuses"].values()) == phase["requests"]
        assert set(phase["statuses"]) <= {"200", "401", "503"}, phase["statuses"]


def test_the_faults_were_real(figures: Any) -> None:
    # Keystone really was down/stalled: fresh tokens could not be validated.
    for name in ("keystone-down", "keystone-stalled"):
        for phase in phases(figures, name):
            assert phase["unavailable"] > 0, phase
    for phase in phases(figures, "keystone-down"):
        assert phase["validations_sent"] <= 2  # the recovery probe, nothing during the outage


def test_servers_recover_once_keystone_is_back(figures: Any) -> None:
    for name in ("keystone-down", "keystone-stalled"):
        for phase in phases(figures, name):
            assert phase["recovery_s"] is not None
    for phase in phases(figures, "normal-after"):
        assert phase["unavailable"] == 0, phase


def test_cached_tokens_spare_keystone(figures: Any) -> None:
    # After the first phase the servers ask Keystone only about tokens they
    # have not seen (fresh, invalid), not about the cached majority.
    for phase in phases(figures, "normal-after"):
        assert phase["validations_sent"] < phase["requests"] // 3, phase


def test_no_thread_descriptor_or_connection_leak(figures: Any) -> None:
    for server, growth in figures["summary"]["growth_since_first_phase"].items():
        assert growth["threads"] <= 4, (server, growth)
        assert growth["fds"] <= 16, (server, growth)
        assert growth["connections"] <= 8, (server, growth)
    for phase in figures["phases"]:
        # The validator's pool to Keystone stays bounded (max_connections=32).
        assert phase["after"]["upstream_connections"] <= 32, phase


def test_memory_stays_flat_over_the_soak(figures: Any) -> None:
    for server in ("gunicorn", "uvicorn"):
        mine = [
            p
            for p in figures["phases"]
            if p["server"] == server and p["phase"] != "keystone-down-stale"  # its own servers
        ]
        rss = [p["after"]["rss_kb"] for p in mine]
        assert max(rss) < 512 * 1024, (server, rss)  # sanity bound, any run
        if figures["settings"]["cycles"] < 3:
            continue
        # Cycles cache new tokens: bounded growth. Steady phases add none: flat.
        cycled = [p for p in mine if p["phase"] != "steady"]
        second = [p for p in cycled if p["cycle"] == 2][-1]["after"]["rss_kb"]
        last = cycled[-1]["after"]["rss_kb"]
        assert last - second <= max(16 * 1024, second // 10), (server, rss)
        steady = [p["after"]["rss_kb"] for p in mine if p["phase"] == "steady"]
        assert len(steady) >= 3
        assert max(steady) - min(steady) <= 4 * 1024, (server, steady)


def test_stale_if_error_keeps_validated_users_through_an_outage(figures: Any) -> None:
    # Keystone down for longer than cache_time, stale_if_error=3600: every token
    # validated before the outage keeps working (0 errors), never-seen tokens
    # get 503, tokens revoked and seen rejected before stay 401.
    for phase in phases(figures, "keystone-down-stale"):
        assert phase["wrongly_rejected_cached"] == 0, phase
        assert phase["wrongly_accepted"] == 0, phase
        assert phase["stale_served"] > 0, phase
        assert set(phase["statuses"]) <= {"200", "401", "503"}, phase
        assert phase["statuses"].get("503", 0) == phase["unavailable"] > 0, phase
        assert phase["statuses"].get("401", 0) > 0, phase
        assert phase["recovery_s"] is not None
