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

With ``refresh_after``, a hit on an entry older than that is still served
and one background re-validation (coalesced, never on the request's path)
replaces or evicts it: a role removed in the identity service is seen
within ``refresh_after`` plus one validation. With ``stale_if_error``, while
the validator cannot answer, an identity validated earlier and not expired
is served past ``cache_time`` for up to that many seconds (marked
``identity.stale``); a token this process saw rejected or revoked stays
rejected. Neither happens after a definite rejection.

A shared cache that publishes revocations (Redis) tells this cache about
revocations made in other processes at once.

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

from . import _checks, _fork, _telemetry
from ._entries import Entries, Lifetimes, stored_at
from .errors import IdentityServiceUnavailable, InvalidToken
from .identity import Identity
from .validators.base import (
    Revocation,
    RevocationListener,
    Validator,
    ValidatorWrapper,
    blocking_executor,
    validate_async,
)

__all__ = ["CacheStats", "CachedValidator", "SharedCache"]

log = logging.getLogger("authmw.cache")

_sha256 = hashlib.sha256

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
        "refreshed",
        "revalidated",
        "shared_hits",
        "stale_served",
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
        self.refreshed = 0  # background re-validations (refresh_after) that completed
        self.stale_served = 0  # identities served past cache_time in an outage

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
    requests stays on. ``refresh_after`` and ``stale_if_error``: see the
    module docstring. ``timer`` returns POSIX seconds and is injectable for
    tests.
    """

    @_checks.checked_keywords
    def __init__(
        self,
        validator: Validator,
        *,
        cache_time: float = 300.0,
        negative_cache_time: float = 10.0,
        maxsize: int = 10_000,
        negative_maxsize: int = 10_000,
        shared: SharedCache | None = None,
        refresh_after: float | None = None,
        stale_if_error: float = 0.0,
        timer: Callable[[], float] = time.time,
        flight_timeout: float = 60.0,
    ) -> None:
        lifetimes = Lifetimes(
            _checks.number("cache_time", cache_time),
            _checks.number("negative_cache_time", negative_cache_time),
            _checks.number("stale_if_error", stale_if_error),
        )
        self.validator = validator
        self.cache_time = lifetimes.cache_time
        self.negative_cache_time = lifetimes.negative_cache_time
        self.stale_if_error = lifetimes.stale_if_error
        self.refresh_after = (
            None if refresh_after is None else _checks.positive("refresh_after", refresh_after)
        )
        self.shared = shared
        self.stats = CacheStats()
        self.entries = Entries(
            lifetimes,
            _checks.integer("cache_size", maxsize, 1),
            _checks.integer("negative_cache_size", negative_maxsize, 1),
            keep_stored_at=self.refresh_after is not None,
        )
        self._lock = self.entries.lock
        self._positive = self.entries.positive
        self._timer = _checks.function("timer", timer)
        self._flight_timeout = _checks.number("flight_timeout", flight_timeout)
        self._flights: dict[bytes, _Flight] = {}
        self._tasks: dict[tuple[bytes, int], asyncio.Task[Identity]] = {}
        self._refreshing: set[bytes] = set()
        self._listeners: list[RevocationListener] = []
        # Registered with the validator's revocations at the first miss (see _listen).
        self._listening = False
        self._listen_lock = threading.Lock()
        _fork.reset_after_fork(self)
        subscribe = getattr(shared, "subscribe", None)
        if subscribe is not None:  # revocations made in other processes
            subscribe(self._revoked_elsewhere)

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`authmw._fork`): a new lock, and no wait on the
        parent's validations in flight, which the child would never see end."""
        self.entries.after_fork()
        self._lock = self.entries.lock
        self._listen_lock = threading.Lock()
        self._flights = {}
        self._tasks = {}
        self._refreshing = set()

    # -- the hot path ------------------------------------------------------
    def hit(self, token: str | bytes) -> Identity | None:
        """The identity of a fresh entry for exactly ``token``, else None: no I/O,
        no lock, no exception.

        The request's hot path, given the raw credential as sent (a str, or the
        bytes of an ASGI header value): only tokens that passed the core's checks
        are ever stored, so a hit is one of them. Misses, remembered rejections
        and outages are for :meth:`lookup`.
        """
        now = self._timer()
        # A stored token is ASCII, so its key (_cache_key) is the hash of the bytes as
        # sent; other bytes, or a str that encodes to them, never match one.
        # surrogatepass: any str hashes.
        key = _sha256(
            token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
        ).digest()
        positive = self._positive
        entry = positive.get(key)
        if entry is None or now >= entry[1]:
            return None
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager per request)
            positive.move_to_end(key)  # C: atomic, so no lock (see authmw._entries)
        except KeyError:
            pass  # dropped meanwhile (revoked): this request was just ahead of it
        self.stats.hits += 1
        if self.refresh_after is not None and now - stored_at(entry) >= self.refresh_after:
            self._refresh(key, token if isinstance(token, str) else token.decode("latin-1"), False)
        return entry[0]

    def lookup(
        self, token: str, allow_expired: bool = False, *, count_miss: bool = True
    ) -> Identity | None:
        """Cached identity for ``token``, or None on a miss; never does I/O.

        Raises :class:`InvalidToken` when a recent rejection is remembered.
        """
        key = _cache_key(token, allow_expired)
        now = self._timer()
        with self._lock:
            found = self._cached(key, now)
            if found is None and count_miss:
                self.stats.misses += 1
        if found is None:
            if not self._listening:
                self._listen()
            return None
        identity, stored_at = found
        if self.refresh_after is not None and now - stored_at >= self.refresh_after:
            self._refresh(key, token, allow_expired)
        return identity

    def _listen(self) -> None:
        """Register with the validator's revocations, once, before anything is stored.
        Not when made: a gunicorn master that builds the app (``--preload``) serves
        nothing, so its validator starts no thread its workers would be forked in
        the middle of (Keystone's revocation follower starts with its first listener)."""
        with self._listen_lock:  # misses wait here until the registration is done
            if self._listening:
                return
            listen = getattr(self.validator, "add_revocation_listener", None)
            if listen is not None:
                listen(self.invalidate)
            self._listening = True

    def _cached(self, key: bytes, now: float) -> tuple[Identity, float] | None:
        """Look ``key`` up, counting; the caller holds the lock."""
        try:
            found = self.entries.fresh(key, now)
        except InvalidToken:
            self.stats.negative_hits += 1
            raise
        if found is not None:
            self.stats.hits += 1
        return found

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
                found = self._cached(key, now)
                if found is not None:
                    return found[0]
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
                else:
                    self.stats.coalesced += 1
                    _telemetry.cache_outcome.set("coalesced")
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
        try:
            for _attempt in range(_ATTEMPTS):
                since = self.entries.epoch()
                identity, from_shared = self._fetch(key, token, allow_expired)
                ttl = self._store(key, identity, allow_expired, since)
                if ttl is None:
                    continue  # a revocation came in meanwhile: ask again
                if self.shared is not None and ttl > 0 and not from_shared:
                    self.shared.put(key, identity, ttl)
                return identity
        except IdentityServiceUnavailable as exc:
            return self._stale_or_raise(key, allow_expired, exc)
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
            found = self._cached(key, now)
            if found is not None:
                return found[0]
            task = self._tasks.get(task_key)
            if task is None or task.done():
                task = loop.create_task(self._afetch(key, token, allow_expired))
                self._tasks[task_key] = task
                task.add_done_callback(lambda t: self._task_done(task_key, t))
            else:
                self.stats.coalesced += 1
                _telemetry.cache_outcome.set("coalesced")
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
        try:
            for _attempt in range(_ATTEMPTS):
                since = self.entries.epoch()
                identity, from_shared = await self._afetch_once(key, token, allow_expired)
                ttl = self._store(key, identity, allow_expired, since)
                if ttl is None:
                    continue  # a revocation came in meanwhile: ask again
                if self.shared is not None and ttl > 0 and not from_shared:
                    await self.shared.aput(key, identity, ttl)
                return identity
        except IdentityServiceUnavailable as exc:
            return self._stale_or_raise(key, allow_expired, exc)
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

    # -- refresh and stale answers -------------------------------------------------------------
    def _refresh(self, key: bytes, token: str, allow_expired: bool) -> None:
        """Start one background re-validation of ``key`` unless one runs already."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        try:
            blocking_executor().submit(self._refresh_now, key, token, allow_expired)
        except RuntimeError:  # interpreter shutting down
            with self._lock:
                self._refreshing.discard(key)

    def _refresh_now(self, key: bytes, token: str, allow_expired: bool) -> None:
        try:
            since = self.entries.epoch()
            identity = self.validator.validate(token, allow_expired=allow_expired)
        except InvalidToken:
            self._store_invalid(key)
            if self.shared is not None:
                self.shared.put_invalid(key, self.negative_cache_time)
            self.stats.refreshed += 1
        except Exception as exc:  # an outage: keep the entry as it is
            log.debug("background re-validation failed (%s); entry kept", type(exc).__name__)
        else:
            ttl = self._store(key, identity, allow_expired, since)
            if ttl and self.shared is not None:
                self.shared.put(key, identity, ttl)
            self.stats.refreshed += 1
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _stale_or_raise(
        self, key: bytes, allow_expired: bool, outage: IdentityServiceUnavailable
    ) -> Identity:
        """In an outage: the identity validated earlier (marked stale), 401 for a token
        rejected or revoked here, else the outage itself (503)."""
        if self.stale_if_error > 0:
            identity = self.entries.stale(key, self._timer(), allow_expired)
            if identity is not None:
                self.stats.stale_served += 1
                log.info("identity service unavailable: serving a cached identity (stale)")
                return identity.served_stale()
        raise outage

    # -- storage -----------------------------------------------------------
    def _usable(self, identity: Identity, allow_expired: bool) -> bool:
        now = self._timer()
        if not allow_expired and identity.is_expired(now):
            return False
        return not self.entries.matched(identity, now)

    def _store(
        self, key: bytes, identity: Identity, allow_expired: bool, since: int
    ) -> float | None:
        ttl = self.entries.store(key, identity, allow_expired, since, self._timer())
        if ttl is None:
            self.stats.revalidated += 1
        elif ttl > 0:
            self.stats.stored += 1
        return ttl

    def _store_invalid(self, key: bytes) -> None:
        self.stats.invalid += 1
        self.entries.store_invalid(key, self._timer())

    def invalidate(self, audit_id: Revocation = None) -> None:
        """Drop the entries of the tokens a revocation names: a token's audit id, a
        matcher (Keystone's revocation events), or None for every entry.

        Validations in flight that may concern the token are voided (see the
        module docstring); the shared cache is told too.
        """
        dropped = self.entries.revoke(audit_id, self._timer())
        if self.shared is not None:
            if audit_id is None or isinstance(audit_id, str):
                self.shared.revoke(audit_id)
            else:
                for audit in {i.audit_ids[0] for i in dropped if i.audit_ids}:
                    self.shared.revoke(audit)
        self._tell(audit_id)

    def _revoked_elsewhere(self, audit_id: str | None) -> None:
        """A revocation another process published: drop it here, without publishing it."""
        self.entries.revoke(audit_id, self._timer())
        self._tell(audit_id)

    def _tell(self, revocation: Revocation) -> None:
        for listener in list(self._listeners):
            try:
                listener(revocation)
            except Exception:
                log.exception("revocation listener %r failed", listener)

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """Call ``listener(revocation)`` after each revocation seen here (from any thread)."""
        self._listeners.append(listener)

    def clear(self) -> None:
        """Forget every positive and negative entry."""
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)
