"""What tracing needs from the rest of authmw, without importing OpenTelemetry.

:class:`authmw.tracing.Tracing` installs itself here; until then every
hook is a no-op. Context variables carry, for the authentication in
progress, whether the cache answered and the request's id (sent on to the
identity service).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

__all__ = ["active", "cache_outcome", "install", "outgoing", "request_id"]

cache_outcome: contextvars.ContextVar[str] = contextvars.ContextVar(
    "authmw_cache_outcome", default="miss"
)
"""``miss`` (not in the process's cache) or ``coalesced`` (waited for another request's
answer), for the authentication in progress (a cache hit never gets this far)."""

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authmw_request_id", default=None
)
"""The request id of the authentication in progress (sent to the identity service)."""

_tracing: Any = None


def install(tracing: Any) -> None:
    """Make ``tracing`` receive the hooks below (the last one installed wins)."""
    global _tracing
    _tracing = tracing


def active() -> bool:
    """True once a :class:`~authmw.tracing.Tracing` exists."""
    return _tracing is not None


@contextlib.contextmanager
def outgoing(method: str, url: str, headers: Any) -> Iterator[None]:
    """Around a validator's HTTP call: a client span, trace context into ``headers``."""
    if _tracing is None:
        yield
        return
    # Never the path or query: a v2.0 validation carries the token there.
    with _tracing.outgoing(method, urlsplit(url).netloc, headers):
        yield
