"""Prometheus export of the middleware counters, read from a real prometheus_client registry."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest
from _services import free_port
from helpers import (
    BAD,
    GOOD,
    OTHER,
    ASGIRecorder,
    Counting,
    WSGIRecorder,
    call_wsgi,
    environ,
    full_identity,
    outage,
    until,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authmw import AuthCore, Identity, IdentityServiceUnavailable
from authmw.asgi import ASGIAuthMiddleware
from authmw.metrics import AuthMetricsCollector, register_metrics
from authmw.redis import RedisCache
from authmw.wsgi import WSGIAuthMiddleware


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    labels.setdefault("middleware", "default")
    return registry.get_sample_value(name, labels)


def request(app: WSGIAuthMiddleware, token: str) -> int:
    return call_wsgi(app, environ(headers=[("X-Auth-Token", token)])).code


def test_cache_and_validation_counters() -> None:
    app = WSGIAuthMiddleware(WSGIRecorder(), validator=Counting({GOOD: full_identity()}))
    registry = CollectorRegistry()
    register_metrics(app, registry=registry)

    assert request(app, GOOD) == 200  # miss, validated
    assert request(app, GOOD) == 200  # hit
    assert request(app, GOOD) == 200  # hit
    assert request(app, BAD) == 401  # miss, invalid
    assert request(app, BAD) == 401  # negative hit

    assert value(registry, "authmw_cache_hits_total") == 2
    assert value(registry, "authmw_cache_misses_total") == 2
    assert value(registry, "authmw_cache_negative_hits_total") == 1
    assert value(registry, "authmw_cached_tokens") == 1
    assert value(registry, "authmw_validations_total", outcome="ok") == 1
    assert value(registry, "authmw_validations_total", outcome="invalid") == 1
    assert value(registry, "authmw_validations_total", outcome="unavailable") == 0
    assert value(registry, "authmw_identity_service_latency_seconds_count") == 2
    latency_sum = value(registry, "authmw_identity_service_latency_seconds_sum")
    latency_max = value(registry, "authmw_identity_service_latency_max_seconds")
    assert latency_sum is not None and latency_max is not None
    assert 0 < latency_max <= latency_sum
    assert value(registry, "authmw_circuit_state", state="closed") == 1
    assert value(registry, "authmw_circuit_state", state="open") == 0


def test_values_are_read_at_scrape_time() -> None:
    core = AuthCore(Counting({GOOD: full_identity()}))
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    assert value(registry, "authmw_cache_hits_total") == 0
    for _ in range(5):
        core.authenticate(GOOD)
    assert value(registry, "authmw_cache_hits_total") == 4
    core.authenticate(GOOD)
    assert value(registry, "authmw_cache_hits_total") == 5


def test_coalesced_waits_with_real_threads() -> None:
    release = threading.Event()
    entered = threading.Event()

    class Slow(Counting):
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            entered.set()
            release.wait(10)
            return super().validate(token, allow_expired=allow_expired)

    validator = Slow({GOOD: full_identity()})
    core = AuthCore(validator)
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    threads = [threading.Thread(target=core.authenticate, args=(GOOD,)) for _ in range(8)]
    threads[0].start()
    assert entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    until(lambda: (value(registry, "authmw_cache_coalesced_waits_total") or 0) >= 7, 10, 0.005)
    release.set()
    for thread in threads:
        thread.join(10)
    assert validator.calls == [GOOD]
    assert value(registry, "authmw_cache_coalesced_waits_total") == 7
    assert value(registry, "authmw_validations_total", outcome="ok") == 1


def test_circuit_open_and_refusals() -> None:
    core = AuthCore(outage(), failure_threshold=2, circuit_cooldown=60)
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    for token in (GOOD, OTHER, BAD):
        assert core.authenticate(token).rejection.status == 503  # type: ignore[union-attr]
    assert value(registry, "authmw_validations_total", outcome="unavailable") == 2
    assert value(registry, "authmw_validations_refused_total", reason="circuit_open") == 1
    assert value(registry, "authmw_circuit_state", state="open") == 1
    assert value(registry, "authmw_circuit_state", state="closed") == 0


def test_validator_errors_are_counted() -> None:
    validator = Counting()
    validator.error = RuntimeError("bug")
    core = AuthCore(validator)
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    core.authenticate(GOOD)
    assert value(registry, "authmw_validations_total", outcome="error") == 1


async def test_asgi_middleware_is_exported() -> None:
    app = ASGIAuthMiddleware(ASGIRecorder(), validator=Counting({GOOD: full_identity()}))
    registry = CollectorRegistry()
    register_metrics(app, registry=registry, name="api")
    await app.core.authenticate_async(GOOD)
    await app.core.authenticate_async(GOOD)
    assert value(registry, "authmw_cache_hits_total", middleware="api") == 1
    assert value(registry, "authmw_cache_misses_total", middleware="api") == 1


def test_several_middlewares_in_one_collector() -> None:
    api = AuthCore(Counting({GOOD: full_identity()}))
    admin = AuthCore(Counting({GOOD: full_identity()}))
    registry = CollectorRegistry()
    collector = register_metrics(api, name="api", registry=registry)
    collector.add(admin, name="admin")
    api.authenticate(GOOD)
    api.authenticate(GOOD)
    admin.authenticate(GOOD)
    assert value(registry, "authmw_cache_hits_total", middleware="api") == 1
    assert value(registry, "authmw_cache_hits_total", middleware="admin") == 0
    with pytest.raises(ValueError, match="already"):
        collector.add(api, name="api")
    collector.remove("admin")
    assert value(registry, "authmw_cache_hits_total", middleware="admin") is None


def test_exposition_parses_and_names_are_namespaced() -> None:
    core = AuthCore(Counting({GOOD: full_identity()}))
    registry = CollectorRegistry()
    register_metrics(core, registry=registry, namespace="myapp_auth")
    core.authenticate(GOOD)
    text = generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "myapp_auth_cache_hits" in names
    assert "myapp_auth_identity_service_latency_seconds" in names
    assert all(name.startswith("myapp_auth_") for name in names)
    assert GOOD not in text


def test_shared_cache_up_while_redis_answers(redis_url: str) -> None:
    core = AuthCore(
        Counting({GOOD: full_identity()}), shared_cache=RedisCache(redis_url, secret="m" * 32)
    )
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    core.authenticate(GOOD)
    assert value(registry, "authmw_shared_cache_up") == 1
    assert value(registry, "authmw_shared_cache_writes_total", result="written") == 1
    assert value(registry, "authmw_shared_cache_lookups_total", result="errors") == 0


def test_shared_cache_outage_is_visible() -> None:
    # The revocation subscription's thread finds Redis down first, whenever it runs;
    # it then waits retry_interval (real time) before trying again, while lookups
    # retry on the cache's clock, here the test's.
    now = [1000.0]
    cache = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0",
        secret="m" * 32,
        retry_interval=60.0,
        clock=lambda: now[0],
    )
    core = AuthCore(Counting({GOOD: full_identity()}), shared_cache=cache)
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    until(lambda: cache.stats.listen_errors > 0, 10)
    assert cache.stats.listen_errors == 1
    assert value(registry, "authmw_shared_cache_up") == 0
    now[0] += 61  # a retry is due: the next lookup tries Redis again
    core.authenticate(GOOD)
    assert value(registry, "authmw_shared_cache_up") == 0
    assert value(registry, "authmw_shared_cache_lookups_total", result="errors") == 1
    assert value(registry, "authmw_shared_cache_writes_total", result="dropped") == 1
    assert value(registry, "authmw_shared_cache_writes_total", result="written") == 0


def test_no_shared_cache_no_shared_samples() -> None:
    core = AuthCore(Counting())
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    assert value(registry, "authmw_shared_cache_up") is None


def test_registering_twice_in_one_registry_is_refused() -> None:
    core = AuthCore(Counting())
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        register_metrics(core, registry=registry)


def test_source_without_stats_is_refused() -> None:
    with pytest.raises(TypeError):
        AuthMetricsCollector(object())


def test_custom_stats_source() -> None:
    class Source:
        def stats(self) -> dict[str, Any]:
            return {"hits": 41, "misses": 1, "circuit_state": "half-open"}

    registry = CollectorRegistry()
    register_metrics(Source(), registry=registry)
    assert value(registry, "authmw_cache_hits_total") == 41
    assert value(registry, "authmw_circuit_state", state="half-open") == 1
    assert value(registry, "authmw_validations_total", outcome="ok") is None


_WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if the extra were not installed
import authmw, authmw.metrics
from authmw import AuthCore, InMemoryValidator
core = AuthCore(InMemoryValidator())
core.authenticate("some-token-123")
try:
    authmw.metrics.register_metrics(core)
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_without_prometheus_client_only_the_exporter_fails() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROMETHEUS], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("ImportError:")
    assert "authmw[prometheus]" in out.stdout


def test_import_authmw_does_not_import_prometheus_client() -> None:
    code = "import sys, authmw, authmw.metrics; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unavailable_is_not_an_error_outcome() -> None:
    validator = Counting()
    validator.error = IdentityServiceUnavailable("down")
    core = AuthCore(validator)
    registry = CollectorRegistry()
    register_metrics(core, registry=registry)
    core.authenticate(GOOD)
    assert value(registry, "authmw_validations_total", outcome="unavailable") == 1
    assert value(registry, "authmw_validations_total", outcome="error") == 0
