"""Prometheus export of the middleware's counters (optional ``prometheus`` extra).

The collector reads ``stats()`` of each registered middleware when
Prometheus scrapes, so requests pay nothing for it::

    from prometheus_client import make_wsgi_app
    from authmw.metrics import register_metrics

    app = WSGIAuthMiddleware(app, validator=...)
    register_metrics(app)                      # into prometheus_client's default registry
    metrics_app = make_wsgi_app()              # serve it on /metrics, outside the middleware

Several middlewares go into one collector, told apart by a ``middleware``
label: ``collector = register_metrics(api, name="api"); collector.add(admin, name="admin")``.

``prometheus_client`` is imported only here, when a collector is built;
without it installed, ``import authmw`` and ``import authmw.metrics`` work
and only building a collector raises :class:`ImportError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["AuthMetricsCollector", "register_metrics"]

_OUTCOMES = ("ok", "invalid", "unavailable", "error")
_REFUSALS = (("circuit_open", "validations_rejected_open"), ("busy", "validations_rejected_busy"))
_CIRCUIT_STATES = ("closed", "open", "half-open")
_CACHE_COUNTERS = (
    ("cache_hits", "hits", "Requests answered from the in-process cache."),
    ("cache_misses", "misses", "Requests whose token was not in the in-process cache."),
    ("cache_negative_hits", "negative_hits", "Requests rejected from the negative cache."),
    ("cache_shared_hits", "shared_hits", "Identities found in the shared (Redis) cache."),
    (
        "cache_coalesced_waits",
        "coalesced",
        "Requests that waited for a validation already in flight for the same token.",
    ),
)
_SHARED_RESULTS = (
    "hits",
    "negative_hits",
    "misses",
    "revoked",
    "stale",
    "rejected",
    "errors",
    "skipped",
)


def _prometheus() -> Any:
    try:
        import prometheus_client.core
    except ImportError as exc:
        raise ImportError(
            "authmw.metrics needs prometheus-client: pip install 'authmw[prometheus]'"
        ) from exc
    return prometheus_client.core


def _core_of(source: Any) -> Any:
    """The AuthCore behind a middleware (or the source itself)."""
    core = getattr(source, "core", None)
    return core if core is not None else source


class AuthMetricsCollector:
    """A Prometheus collector over one or more authmw middlewares.

    ``source`` is an :class:`~authmw.AuthCore`, a WSGI/ASGI middleware or
    anything with a ``stats()`` method returning the same keys.
    ``namespace`` prefixes every metric name.
    """

    def __init__(
        self, source: Any = None, *, name: str = "default", namespace: str = "authmw"
    ) -> None:
        self._prom = _prometheus()
        self.namespace = namespace
        self._sources: dict[str, Any] = {}
        self._lock = threading.Lock()
        if source is not None:
            self.add(source, name=name)

    def add(self, source: Any, *, name: str = "default") -> None:
        """Export ``source`` with the label ``middleware=name``."""
        if not callable(getattr(_core_of(source), "stats", None)):
            raise TypeError(f"{source!r} has no stats() method")
        with self._lock:
            if name in self._sources:
                raise ValueError(f"a middleware named {name!r} is already exported")
            self._sources[name] = source

    def remove(self, name: str) -> None:
        """Stop exporting the middleware added under ``name``."""
        with self._lock:
            del self._sources[name]

    def describe(self) -> Iterator[Any]:
        """The metric families, without samples (for the registry's duplicate check)."""
        return iter(self._families({}))

    def collect(self) -> Iterator[Any]:
        """Read every middleware's ``stats()`` now and yield the metric families."""
        with self._lock:
            sources = dict(self._sources)
        return iter(self._families(sources))

    def _families(self, sources: Mapping[str, Any]) -> list[Any]:
        prom = self._prom
        ns = self.namespace
        label = ["middleware"]

        def counter(name: str, doc: str, labels: list[str] = label) -> Any:
            return prom.CounterMetricFamily(f"{ns}_{name}", doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str] = label) -> Any:
            return prom.GaugeMetricFamily(f"{ns}_{name}", doc, labels=labels)

        cache = [(counter(n, doc), key) for n, key, doc in _CACHE_COUNTERS]
        cached_tokens = gauge("cached_tokens", "Identities held in the in-process cache.")
        validations = counter(
            "validations",
            "Calls that reached the identity service, by outcome.",
            ["middleware", "outcome"],
        )
        refused = counter(
            "validations_refused",
            "Validations refused without calling the identity service, by reason.",
            ["middleware", "reason"],
        )
        in_flight = gauge("validations_in_flight", "Validations running right now.")
        latency = prom.SummaryMetricFamily(
            f"{ns}_identity_service_latency_seconds",
            "Time spent in calls to the identity service.",
            labels=label,
        )
        latency_max = gauge(
            "identity_service_latency_max_seconds",
            "Longest call to the identity service since start.",
        )
        circuit = gauge(
            "circuit_state",
            "Circuit breaker state in front of the identity service (1 = current state).",
            ["middleware", "state"],
        )
        shared_ops = counter(
            "shared_cache_lookups",
            "Lookups in the shared (Redis) cache, by result.",
            ["middleware", "result"],
        )
        shared_writes = counter(
            "shared_cache_writes",
            "Writes to the shared (Redis) cache, by result.",
            ["middleware", "result"],
        )
        shared_up = gauge(
            "shared_cache_up", "1 while the shared cache answers, 0 during an outage."
        )

        for name, source in sources.items():
            core = _core_of(source)
            stats = core.stats()
            for family, key in cache:
                if key in stats:
                    family.add_metric([name], stats[key])
            if "cached_tokens" in stats:
                cached_tokens.add_metric([name], stats["cached_tokens"])
            if "validations_calls" in stats:
                for outcome in _OUTCOMES:
                    validations.add_metric([name, outcome], stats[f"validations_{outcome}"])
                for reason, key in _REFUSALS:
                    refused.add_metric([name, reason], stats[key])
                in_flight.add_metric([name], stats["validations_in_flight"])
                latency.add_metric(
                    [name],
                    count_value=stats["validations_calls"],
                    sum_value=stats["validations_latency_total"],
                )
                latency_max.add_metric([name], stats["validations_latency_max"])
            state = stats.get("circuit_state")
            if state is not None:
                for candidate in _CIRCUIT_STATES:
                    circuit.add_metric([name, candidate], 1.0 if state == candidate else 0.0)
            shared = getattr(getattr(core, "cache", None), "shared", None)
            shared_stats = getattr(shared, "stats", None)
            if shared_stats is not None and callable(getattr(shared_stats, "as_dict", None)):
                counts = shared_stats.as_dict()
                for result in _SHARED_RESULTS:
                    if result in counts:
                        shared_ops.add_metric([name, result], counts[result])
                shared_writes.add_metric([name, "written"], counts.get("writes", 0))
                shared_writes.add_metric([name, "dropped"], counts.get("dropped_writes", 0))
                available = getattr(shared, "available", True)
                shared_up.add_metric([name], 1.0 if available else 0.0)

        return [
            *(family for family, _ in cache),
            cached_tokens,
            validations,
            refused,
            in_flight,
            latency,
            latency_max,
            circuit,
            shared_ops,
            shared_writes,
            shared_up,
        ]


def register_metrics(
    source: Any,
    *,
    name: str = "default",
    registry: Any = None,
    namespace: str = "authmw",
) -> AuthMetricsCollector:
    """Export ``source``'s counters into ``registry`` (prometheus_client's default when None)."""
    collector = AuthMetricsCollector(source, name=name, namespace=namespace)
    if registry is None:
        import prometheus_client

        registry = prometheus_client.REGISTRY
    registry.register(collector)
    return collector
