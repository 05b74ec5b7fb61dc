"""In-process token cache with negative caching and single-flight, wrapping any validator.

Entries are keyed by the SHA-256 digest of the token, never the token. An
entry lives ``min(cache_time, token expiry - now)`` and is re-checked on
every lookup. Definite rejections (:class:`InvalidToken`) are remembered for
``negative_cache_time``; outages are never cached. Concurrent requests for
the same uncached token share one validation: threads wait on the first
caller, asyncio tasks await one shielded task, so a cancelled or failing
first caller neither strands nor poisons the others.

A revocation reported while a validation is in flight (``invalidate``, the
validator's revocation listener) voids that validation's positive answer if
the revocation may concern the token (same audit id, or ``None``): the answer
was possibly read before the revocation, so it is neither cached (here or in
the shared cache) nor returned; the token is validated again, and the
callers waiting for it get that second answer. Each check-and-store happens
under the lock, so a revocation either sees the entry (and drops it) or
voids it.

The lock guards the dictionaries only; no I/O ever runs under it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from cachetools import LRUCache

from .errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from .identity import Identity
from .validators.base import RevocationListener, Validator, ValidatorWrapper, validate_async

__all__ = ["CacheStats", "CachedValidator", "SharedCache"]

log = logging.getLogger("authmw.cache")

_sha256 = hashlib.sha256

# Revocations remembered for validations in flight; one older than this many
# revocations ago counts as concerning every token.
_REVOCATION_LOG = 1024
# Validations of one token voided in a row by revocations before giving up (503).
_ATTEMPTS = 3


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

    __slots__ = (
        "coalesced",
        "hits",
        "invalid",
        "misses",
        "negative_hits",
        "revalidated",
        "shared_hits",
        "stored",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.shared_hits = 0
        self.coalesced = 0
        self.stored = 0
        self.invalid = 0
        self.revalidated = 0  # answers voided by a revocation during their validation

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Flight:
    """One validation in progress, shared by the threads that want its result."""

    __slots__ = ("done", "error", "identity")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.identity: Identity | None = None
        self.error: BaseException | None = None


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
        # Revocations so far, and the audit ids of the latest (None: every token).
        self._epoch = 0
        self._revocations: deque[str | None] = deque(maxlen=_REVOCATION_LOG)
        self._tasks: dict[tuple[bytes, int], asyncio.Task[Identity]] = {}
        self._listeners: list[RevocationListener] = []
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
            identity = self._settle(key, token, allow_expired)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.identity = identity
            return identity
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _settle(self, key: bytes, token: str, allow_expired: bool) -> Identity:
        """An answer not older than any revocation that may concern it, cached."""
        for _attempt in range(_ATTEMPTS):
            since = self._revocation_epoch()
            identity, from_shared = self._fetch(key, token, allow_expired)
            ttl = self._store(key, identity, allow_expired, since)
            if ttl is None:
                continue  # a revocation came in meanwhile: ask again
            if self.shared is not None and ttl > 0 and not from_shared:
                self.shared.put(key, identity, ttl)
            return identity
        raise IdentityServiceUnavailable("revocations kept overtaking the token's validation")

    def _fetch(self, key: bytes, token: str, allow_expired: bool) -> tuple[Identity, bool]:
        """(identity, found in the shared cache); remembers a rejection and raises it."""
        shared = self.shared
        if shared is not None:
            try:
                identity = shared.get(key)
            except InvalidToken:
                # Remembered by another process: remember it here too, but do
                # not write it back (that would keep it alive for ever).
                self._store_invalid(key)
                raise
            if identity is not None and self._usable(identity, allow_expired):
                self.stats.shared_hits += 1
                return identity, True
        try:
            return self.validator.validate(token, allow_expired=allow_expired), False
        except InvalidToken:
            self._store_invalid(key)
            if shared is not None:
                shared.put_invalid(key, self.negative_cache_time)
            raise

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
        """Awaitable :meth:`_settle`."""
        for _attempt in range(_ATTEMPTS):
            since = self._revocation_epoch()
            identity, from_shared = await self._afetch_once(key, token, allow_expired)
            ttl = self._store(key, identity, allow_expired, since)
            if ttl is None:
                continue  # a revocation came in meanwhile: ask again
            if self.shared is not None and ttl > 0 and not from_shared:
                await self.shared.aput(key, identity, ttl)
            return identity
        raise IdentityServiceUnavailable("revocations kept overtaking the token's validation")

    async def _afetch_once(
        self, key: bytes, token: str, allow_expired: bool
    ) -> tuple[Identity, bool]:
        """Awaitable :meth:`_fetch`."""
        shared = self.shared
        if shared is not None:
            try:
                identity = await shared.aget(key)
            except InvalidToken:
                self._store_invalid(key)
                raise
            if identity is not None and self._usable(identity, allow_expired):
                self.stats.shared_hits += 1
                return identity, True
        try:
            identity = await validate_async(self.validator, token, allow_expired=allow_expired)
        except InvalidToken:
            self._store_invalid(key)
            if shared is not None:
                await shared.aput_invalid(key, self.negative_cache_time)
            raise
        return identity, False

    # -- storage -----------------------------------------------------------
    def _usable(self, identity: Identity, allow_expired: bool) -> bool:
        return allow_expired or not identity.is_expired(self._timer())

    def _revocation_epoch(self) -> int:
        with self._lock:
            return self._epoch

    def _revoked_since(self, since: int, identity: Identity) -> bool:
        """Whether a revocation after epoch ``since`` may concern ``identity`` (lock held)."""
        missed = self._epoch - since
        if missed == 0:
            return False
        if missed > len(self._revocations):
            return True  # some fell out of the log: assume the worst
        audit_ids = identity.audit_ids
        for index in range(1, missed + 1):
            audit_id = self._revocations[-index]
            if audit_id is None or audit_id in audit_ids:
                return True
        return False

    def _store(
        self, key: bytes, identity: Identity, allow_expired: bool, since: int
    ) -> float | None:
        """Cache ``identity`` validated since revocation epoch ``since``.

        Returns the TTL given (0 when not cached), or None when a revocation
        came in meanwhile that may concern the token: then nothing is cached
        and the answer must not be used.
        """
        now = self._timer()
        until = now + self.cache_time
        if not allow_expired:
            until = min(until, identity.expires_timestamp)
        ttl = until - now
        with self._lock:
            if self._revoked_since(since, identity):
                self.stats.revalidated += 1
                return None
            if ttl <= 0:
                return 0.0
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
        """Drop entries of the token with ``audit_id`` (every entry when None).

        Validations in flight that may concern the token are voided (see the
        module docstring); the shared cache is told too.
        """
        with self._lock:
            self._epoch += 1
            self._revocations.append(audit_id)
            if audit_id is None:
                self._positive.clear()
            else:
                stale = [k for k, (i, _) in self._positive.items() if audit_id in i.audit_ids]
                for k in stale:
                    del self._positive[k]
        if self.shared is not None:
            self.shared.revoke(audit_id)
        for listener in list(self._listeners):
            try:
                listener(audit_id)
            except Exception:
                log.exception("revocation listener %r failed", listener)

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Call ``listener(audit_id)`` after each :meth:`invalidate` (from any thread)."""
        self._listeners.append(listener)

    def clear(self) -> None:
        """Forget every positive and negative entry."""
        with self._lock:
            self._positive.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self._positive)
