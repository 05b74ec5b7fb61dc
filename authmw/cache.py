"""In-process token cache with negative caching and single-flight, wrapping any validator.

Entries are keyed by the SHA-256 digest of the token, never the token. An
entry lives ``min(cache_time, token expiry - now)`` and is re-checked on
every lookup. Definite rejections (:class:`InvalidToken`) are remembered for
``negative_cache_time``; outages are never cached. Concurrent requests for
the same uncached token share one validation: threads wait on the first
caller, asyncio tasks await one shielded task, so a cancelled or failing
first caller neither strands nor poisons the others.

The lock guards the dictionaries only; no I/O ever runs under it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cachetools import LRUCache

from .errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from .identity import Identity
from .validators.base import Validator, ValidatorWrapper, validate_async

__all__ = ["CacheStats", "CachedValidator", "SharedCache"]

log = logging.getLogger("authmw.cache")

_sha256 = hashlib.sha256


class SharedCache(Protocol):
    """A second cache level shared between processes (e.g. :class:`authmw.redis.RedisCache`).

    Implementations never raise for their own failures: a broken or
    unreachable backend answers ``None`` (a miss) and drops writes.
    ``get`` raises :class:`InvalidToken` for a remembered rejection.
    """

    def get(self, key: bytes) -> Identity | None: ...
    def put(self, key: bytes, identity: Identity, ttl: float) -> None: ...
    def put_invalid(self, key: bytes, ttl: float) -> None: ...
    def revoke(self, audit_id: str | None) -> None: ...
    async def aget(self, key: bytes) -> Identity | None: ...
    async def aput(self, key: bytes, identity: Identity, ttl: float) -> None: ...
    async def aput_invalid(self, key: bytes, ttl: float) -> None: ...


class CacheStats:
    """Counters of one cache; read them with :meth:`as_dict`."""

    __slots__ = ("coalesced", "hits", "invalid", "misses", "negative_hits", "shared_hits", "stored")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.shared_hits = 0
        self.coalesced = 0
        self.stored = 0
        self.invalid = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Flight:
    """One validation in progress, shared by the threads that want its result."""

    __slots__ = ("done", "error", "identity")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.identity: Identity | None = None
        self.error: BaseException | None = None


class _SharedRejection(InvalidToken):
    """A rejection found in the shared cache (not to be written back to it)."""


def _cache_key(token: str, allow_expired: bool) -> bytes:
    digest = _sha256(token.encode("utf-8", "surrogateescape")).digest()
    return digest + b"\x01" if allow_expired else digest


class CachedValidator(ValidatorWrapper):
    """Wraps a validator with an LRU cache, a negative cache and single-flight.

    ``cache_time=0`` turns positive caching off (every request reaches the
    validator, so revocation is immediate); coalescing of simultaneous
    requests stays on. ``timer`` returns POSIX seconds and is injectable for
    tests.
    """

    def __init__(
        self,
        validator: Validator,
        *,
        cache_time: float = 300.0,
        negative_cache_time: float = 10.0,
        maxsize: int = 10_000,
        negative_maxsize: int = 10_000,
        shared: SharedCache | None = None,
        timer: Callable[[], float] = time.time,
        flight_timeout: float = 60.0,
    ) -> None:
        for option, value in (
            ("cache_time", cache_time),
            ("negative_cache_time", negative_cache_time),
            ("flight_timeout", flight_timeout),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(option, f"must be a number >= 0, got {value!r}")
        for option, size in (("cache_size", maxsize), ("negative_cache_size", negative_maxsize)):
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ConfigurationError(option, f"must be an integer >= 1, got {size!r}")
        self.validator = validator
        self.cache_time = float(cache_time)
        self.negative_cache_time = float(negative_cache_time)
        self.shared = shared
        self.stats = CacheStats()
        self._timer = timer
        self._flight_timeout = flight_timeout
        self._lock = threading.Lock()
        # key -> (identity, valid_until)
        self._positive: LRUCache[bytes, tuple[Identity, float]] = LRUCache(maxsize)
        # key -> valid_until
        self._negative: LRUCache[bytes, float] = LRUCache(negative_maxsize)
        self._flights: dict[bytes, _Flight] = {}
        self._tasks: dict[tuple[bytes, int], asyncio.Task[Identity]] = {}
        listen = getattr(validator, "add_revocation_listener", None)
        if listen is not None:
            listen(self.invalidate)

    # -- the hot path ------------------------------------------------------
    def lookup(
        self, token: str, allow_expired: bool = False, *, count_miss: bool = True
    ) -> Identity | None:
        """Cached identity for ``token``, or None on a miss; never does I/O.

        Raises :class:`InvalidToken` when a recent rejection is remembered.
        """
        key = _cache_key(token, allow_expired)
        now = self._timer()
        with self._lock:
            identity = self._cached(key, now)
            if identity is None and count_miss:
                self.stats.misses += 1
        return identity

    def _cached(self, key: bytes, now: float) -> Identity | None:
        """Look ``key`` up; the caller holds the lock."""
        entry = self._positive.get(key)
        if entry is not None:
            if now < entry[1]:
                self.stats.hits += 1
                return entry[0]
            del self._positive[key]
        until = self._negative.get(key)
        if until is not None:
            if now < until:
                self.stats.negative_hits += 1
                raise InvalidToken("token rejected recently (cached)")
            del self._negative[key]
        return None

    # -- blocking ----------------------------------------------------------
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Identity for ``token`` from the cache, a validation in flight, or the validator."""
        identity = self.lookup(token, allow_expired)
        if identity is not None:
            return identity
        key = _cache_key(token, allow_expired)
        for _attempt in range(3):
            now = self._timer()
            with self._lock:
                # Another thread may have finished this validation since our lookup.
                cached = self._cached(key, now)
                if cached is not None:
                    return cached
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
                else:
                    self.stats.coalesced += 1
            if leader:
                return self._lead(flight, key, token, allow_expired)
            if not flight.done.wait(self._flight_timeout):
                raise IdentityServiceUnavailable("timed out waiting for a validation in flight")
            if flight.identity is not None:
                return flight.identity
            if isinstance(flight.error, (InvalidToken, IdentityServiceUnavailable)):
                raise type(flight.error)(*flight.error.args)
            # The first caller died of something else: try again ourselves.
        raise IdentityServiceUnavailable("validation abandoned repeatedly")

    def _lead(self, flight: _Flight, key: bytes, token: str, allow_expired: bool) -> Identity:
        try:
            identity, from_shared = self._fetch(key, token, allow_expired)
        except InvalidToken as exc:
            flight.error = exc
            self._store_invalid(key)
            if self.shared is not None and not isinstance(exc, _SharedRejection):
                self.shared.put_invalid(key, self.negative_cache_time)
            raise
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.identity = identity
            ttl = self._store(key, identity, allow_expired)
            if self.shared is not None and ttl > 0 and not from_shared:
                self.shared.put(key, identity, ttl)
            return identity
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _fetch(self, key: bytes, token: str, allow_expired: bool) -> tuple[Identity, bool]:
        if self.shared is not None:
            try:
                identity = self.shared.get(key)
            except InvalidToken as exc:
                raise _SharedRejection(*exc.args) from None
            if identity is not None and self._usable(identity, allow_expired):
                self.stats.shared_hits += 1
                return identity, True
        return self.validator.validate(token, allow_expired=allow_expired), False

    # -- async -------------------------------------------------------------
    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Awaitable :meth:`validate`: concurrent tasks share one shielded validation."""
        identity = self.lookup(token, allow_expired)
        if identity is not None:
            return identity
        key = _cache_key(token, allow_expired)
        loop = asyncio.get_running_loop()
        task_key = (key, id(loop))
        now = self._timer()
        with self._lock:
            cached = self._cached(key, now)
            if cached is not None:
                return cached
            task = self._tasks.get(task_key)
            if task is None or task.done():
                task = loop.create_task(self._afetch(key, token, allow_expired))
                self._tasks[task_key] = task
                task.add_done_callback(lambda t: self._task_done(task_key, t))
            else:
                self.stats.coalesced += 1
        # shield: a cancelled caller must not cancel the validation the others wait for.
        return await asyncio.shield(task)

    def _task_done(self, task_key: tuple[bytes, int], task: asyncio.Task[Identity]) -> None:
        with self._lock:
            if self._tasks.get(task_key) is task:
                del self._tasks[task_key]
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter went away

    async def _afetch(self, key: bytes, token: str, allow_expired: bool) -> Identity:
        shared = self.shared
        if shared is not None:
            try:
                identity = await shared.aget(key)
            except InvalidToken:
                # Remembered by another process: remember it here too, but do
                # not write it back (that would keep it alive for ever).
                self._store_invalid(key)
                raise
            if identity is not None and self._usable(identity, allow_expired):
                self.stats.shared_hits += 1
                self._store(key, identity, allow_expired)
                return identity
        try:
            identity = await validate_async(self.validator, token, allow_expired=allow_expired)
        except InvalidToken:
            self._store_invalid(key)
            if shared is not None:
                await shared.aput_invalid(key, self.negative_cache_time)
            raise
        ttl = self._store(key, identity, allow_expired)
        if shared is not None and ttl > 0:
            await shared.aput(key, identity, ttl)
        return identity

    # -- storage -----------------------------------------------------------
    def _usable(self, identity: Identity, allow_expired: bool) -> bool:
        return allow_expired or not identity.is_expired(self._timer())

    def _store(self, key: bytes, identity: Identity, allow_expired: bool) -> float:
        """Cache ``identity``; returns the TTL given (0 when not cached)."""
        now = self._timer()
        until = now + self.cache_time
        if not allow_expired:
            until = min(until, identity.expires_timestamp)
        ttl = until - now
        if ttl <= 0:
            return 0.0
        with self._lock:
            self._positive[key] = (identity, until)
            self._negative.pop(key, None)
            self.stats.stored += 1
        return ttl

    def _store_invalid(self, key: bytes) -> None:
        with self._lock:
            self.stats.invalid += 1
            if self.negative_cache_time > 0:
                self._negative[key] = self._timer() + self.negative_cache_time
            self._positive.pop(key, None)

    def invalidate(self, audit_id: str | None = None) -> None:
        """Drop entries of the token with ``audit_id`` (every entry when None)."""
        with self._lock:
            if audit_id is None:
                self._positive.clear()
            else:
                stale = [k for k, (i, _) in self._positive.items() if audit_id in i.audit_ids]
                for k in stale:
                    del self._positive[k]
        if self.shared is not None:
            self.shared.revoke(audit_id)

    def clear(self) -> None:
        """Forget every positive and negative entry."""
        with self._lock:
            self._positive.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self._positive)
