"""A brake on clients that hammer the service with bad credentials.

``Throttle(failures=20, window=60)`` (the ``throttle`` option of every entry
point; off by default) gives each client address a budget of failed
authentications per window. A validation that has to ask the identity
service first reserves a unit of its client's budget; a success or an
outage gives it back, a rejection keeps it (a request without a token, or
with only a malformed one, is answered 401 without asking and uses none).
A client past its budget gets 429 with ``Retry-After`` without the
identity service being asked, while its tokens already in the cache keep
working (a cache hit reserves nothing). Reserving before asking keeps the
bound exact under concurrency: a flood of unique bad tokens from one
address costs at most the budget in identity-service calls per window.

With a shared cache that counts (Redis), the budget is shared by every
process and host; otherwise each process has its own. The client address is
the connection's, or a trusted proxy's ``X-Forwarded-For`` (the
``trusted_proxies`` option); a request whose address is unknown is not
throttled. The shared cache holds digests of the addresses, not the
addresses. See docs/throttling.md.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from . import _checks

__all__ = ["Counter", "Throttle"]

_CLIENTS = 100_000  # addresses remembered per process


class Counter(Protocol):
    """A shared counter: ``count(key, delta, window)`` adds ``delta`` to the count of
    ``key`` in the window (created with that lifetime) and returns the new count, or
    None when the store cannot answer (the process counts alone then)."""

    def count(self, key: bytes, delta: int, window: float) -> int | None: ...
    async def acount(self, key: bytes, delta: int, window: float) -> int | None: ...


class Throttle:
    """``failures`` failed authentications per client address per ``window`` seconds."""

    @_checks.checked_keywords
    def __init__(
        self,
        failures: int = 20,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.failures = _checks.integer("failures", failures, 1)
        self.window = _checks.positive("window", window)
        self._clock = _checks.function("clock", clock)
        self._lock = threading.Lock()
        self._counts: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.counter: Counter | None = None
        self.throttled = 0  # requests answered 429

    def share(self, counter: Any) -> None:
        """Count in ``counter`` (a shared cache with ``count``/``acount``) when it can."""
        if callable(getattr(counter, "count", None)) and callable(getattr(counter, "acount", None)):
            self.counter = counter

    def _slot(self, client: str) -> tuple[tuple[str, int], bytes, float]:
        now = self._clock()
        index = int(now // self.window)
        left = (index + 1) * self.window - now
        key = b"throttle:" + hashlib.sha256(f"{index}\0{client}".encode()).hexdigest()[:32].encode()
        return (client, index), key, left

    def _local(self, slot: tuple[str, int], delta: int) -> int:
        with self._lock:
            count = self._counts.pop(slot, 0) + delta
            self._counts[slot] = max(count, 0)
            while len(self._counts) > _CLIENTS:
                self._counts.popitem(last=False)
            return count

    def _verdict(self, slot: tuple[str, int], shared: int | None, left: float) -> float | None:
        count = self._local(slot, 1) if shared is None else shared
        if count <= self.failures:
            return None
        self.throttled += 1
        return max(1.0, math.ceil(left))

    def reserve(self, client: str | None) -> float | None:
        """Take a unit of ``client``'s budget: None to go ahead, or the seconds to wait (429)."""
        if client is None:
            return None
        slot, key, left = self._slot(client)
        shared = self.counter.count(key, 1, self.window) if self.counter is not None else None
        return self._verdict(slot, shared, left)

    async def areserve(self, client: str | None) -> float | None:
        """Awaitable :meth:`reserve`."""
        if client is None:
            return None
        slot, key, left = self._slot(client)
        counter = self.counter
        shared = await counter.acount(key, 1, self.window) if counter is not None else None
        return self._verdict(slot, shared, left)

    def release(self, client: str | None) -> None:
        """Give the unit back: the validation did not fail (or could not tell)."""
        if client is None:
            return
        slot, key, _ = self._slot(client)
        if self.counter is None or self.counter.count(key, -1, self.window) is None:
            self._local(slot, -1)

    async def arelease(self, client: str | None) -> None:
        """Awaitable :meth:`release`."""
        if client is None:
            return
        slot, key, _ = self._slot(client)
        counter = self.counter
        if counter is None or await counter.acount(key, -1, self.window) is None:
            self._local(slot, -1)
