"""OpenTelemetry spans for authentication (``pip install 'authmw[otel]'``).

With ``tracing=Tracing()`` (any entry point's option) each authentication
is a span ``authmw.authenticate`` with its outcome and whether the cache
answered (``hit``: an identity or a rejection the process cached, ``miss``,
``coalesced``: waited for another request's validation); each HTTP call of a remote
validator (Keystone, introspection, JWKS) is a child span, and carries the
trace context (``traceparent``) and the request's ``X-OpenStack-Request-ID``
to the identity service, so one trace spans the middleware and the Keystone
call. User identifiers go into spans only with ``identities=True``.

Without the extra, or without ``tracing``, nothing of OpenTelemetry is
imported and nothing is computed.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from . import _telemetry

__all__ = ["Tracing"]

_cache_outcome: contextvars.ContextVar[str] = _telemetry.cache_outcome


class Tracing:
    """Spans for authentications and the validators' HTTP calls.

    ``tracer_provider`` defaults to OpenTelemetry's global one.
    """

    def __init__(self, tracer_provider: Any = None, *, identities: bool = False) -> None:
        try:
            from opentelemetry import propagate, trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "authmw.tracing needs OpenTelemetry: pip install 'authmw[otel]'"
            ) from exc
        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("authmw", tracer_provider=tracer_provider)
        self.identities = bool(identities)
        _telemetry.install(self)

    @contextlib.contextmanager
    def authentication(self, method: str, path: str) -> Iterator[Any]:
        """The span of one authentication (the current span inside the block)."""
        token = _cache_outcome.set("miss")
        with self.tracer.start_as_current_span(
            "authmw.authenticate",
            kind=self._trace.SpanKind.INTERNAL,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            try:
                yield span
            finally:
                _cache_outcome.reset(token)

    def decided(self, span: Any, outcome: str, cached: bool, identity: Any) -> None:
        """Record the outcome on ``span``."""
        span.set_attribute("authmw.outcome", outcome)
        span.set_attribute("authmw.cache", "hit" if cached else _cache_outcome.get())
        if self.identities and identity is not None:
            span.set_attribute("enduser.id", identity.user_id)
            if identity.project_id:
                span.set_attribute("authmw.project_id", identity.project_id)

    @contextlib.contextmanager
    def outgoing(self, method: str, host: str, headers: Any) -> Iterator[None]:
        """A client span around a validator's HTTP call to ``host``; puts the trace
        context (and the request id) into ``headers``."""
        with self.tracer.start_as_current_span(
            f"{method} identity service",
            kind=self._trace.SpanKind.CLIENT,
            attributes={"http.request.method": method, "server.address": host},
        ):
            self._propagate.inject(headers)
            request_id = _telemetry.request_id.get()
            if request_id:
                headers["X-OpenStack-Request-ID"] = request_id
            yield
