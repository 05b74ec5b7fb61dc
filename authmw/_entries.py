"""The in-process cache's entries and revocation bookkeeping, behind one lock.

Positive entries are ``key -> (identity, fresh_until, stored_at)``: served
until ``fresh_until`` (the earlier of ``stored_at + cache_time`` and the
token's expiry); kept, for an identity service outage only, until
``stored_at + cache_time + stale_if_error`` (``stale_if_error``). Without
``stale_if_error`` nor ``refresh_after`` nothing needs ``stored_at``, and
entries are ``(identity, fresh_until)``: 32 bytes less each. Negative entries are
``key -> (fresh_until, stale_until)``: a recent rejection answers 401 until
``fresh_until``, and during an outage until ``stale_until``. A token revoked
here becomes a negative entry that answers 401 in outages only.

Each revocation moves an epoch forward and is logged, so a validation that
started before it can tell whether its answer may be stale (see
:meth:`Entries.revoked_since`). Keys are SHA-256 digests of tokens. The lock
guards the dictionaries only; no I/O runs under it.

Both maps are ``OrderedDict`` LRUs (``get`` and ``move_to_end`` run in C):
the hot path (:meth:`~authmw.cache.CachedValidator.hit`) reads ``positive``
without the lock, as each of those operations is atomic; writers hold it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import NamedTuple, TypeVar

from .errors import InvalidToken
from .identity import Identity
from .validators.base import Revocation, RevocationMatcher, revokes

__all__ = ["Entries", "Entry", "Lifetimes", "stored_at"]

# Revocations remembered for validations in flight; one older than this many
# revocations ago counts as concerning every token.
_REVOCATION_LOG = 1024
# Revocation matchers (Keystone events) applied to shared-cache answers.
_MATCHERS = 256


_K = TypeVar("_K")
_V = TypeVar("_V")


def _put(entries: OrderedDict[_K, _V], key: _K, value: _V, maxsize: int) -> None:
    """Insert as most recently used; evict the least recently used past ``maxsize``."""
    entries[key] = value
    entries.move_to_end(key)
    if len(entries) > maxsize:
        entries.popitem(last=False)


Entry = tuple[Identity, float] | tuple[Identity, float, float]
"""(identity, fresh_until[, stored_at])"""


def stored_at(entry: Entry) -> float:
    """When ``entry`` was stored (0.0 when its cache does not keep it)."""
    return entry[2] if len(entry) > 2 else 0.0


class Lifetimes(NamedTuple):
    """How long entries live (seconds)."""

    cache_time: float
    negative_cache_time: float
    stale_if_error: float


class Entries:
    """Positive and negative entries with their deadlines; thread-safe."""

    def __init__(
        self, lifetimes: Lifetimes, maxsize: int, negative_maxsize: int, *, keep_stored_at: bool
    ) -> None:
        self.lifetimes = lifetimes
        self.keep_stored_at = keep_stored_at or lifetimes.stale_if_error > 0
        self.lock = threading.Lock()
        self.maxsize = maxsize
        self.negative_maxsize = negative_maxsize
        # Kept past freshness for outages only, until stored_at + this.
        self._kept = lifetimes.cache_time + lifetimes.stale_if_error
        self.positive: OrderedDict[bytes, Entry] = OrderedDict()
        self._negative: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._epoch = 0
        self._revocations: deque[Revocation] = deque(maxlen=_REVOCATION_LOG)
        # (until, matcher): recent revocations naming tokens by what they are.
        self._matchers: deque[tuple[float, RevocationMatcher]] = deque(maxlen=_MATCHERS)

    def after_fork(self) -> None:
        """In a forked child: a new lock (see :mod:`authmw._fork`)."""
        self.lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------
    def fresh(self, key: bytes, now: float) -> tuple[Identity, float] | None:
        """(identity, stored_at) of a fresh entry, or None; raises InvalidToken for a
        recent rejection. Drops entries past every use. The caller holds the lock."""
        entry = self.positive.get(key)
        if entry is not None:
            if now < entry[1]:
                self.positive.move_to_end(key)
                return entry[0], stored_at(entry)
            if now >= self._kept_until(entry):
                del self.positive[key]
        rejected = self._negative.get(key)
        if rejected is not None:
            if now < rejected[0]:
                self._negative.move_to_end(key)
                raise InvalidToken("token rejected recently (cached)")
            if now >= rejected[1]:
                del self._negative[key]
        return None

    def stale(self, key: bytes, now: float, allow_expired: bool) -> Identity | None:
        """For an outage: an identity validated earlier, still within ``stale_if_error``
        and not expired; raises InvalidToken for a token rejected or revoked here."""
        with self.lock:
            rejected = self._negative.get(key)
            if rejected is not None and now < rejected[1]:
                raise InvalidToken("token rejected before the outage")
            entry = self.positive.get(key)
        if entry is None or now >= self._kept_until(entry):
            return None
        identity = entry[0]
        if not allow_expired and identity.is_expired(now):
            return None
        return identity

    def _kept_until(self, entry: Entry) -> float:
        return entry[2] + self._kept if len(entry) > 2 else entry[1]

    # -- writing -----------------------------------------------------------------------------
    def store(
        self, key: bytes, identity: Identity, allow_expired: bool, since: int, now: float
    ) -> float | None:
        """Cache ``identity``, validated since revocation epoch ``since``.

        Returns the TTL given (0 when not cached), or None when a revocation
        that may concern the token came in meanwhile: then nothing is cached
        and the answer must not be used.
        """
        lifetimes = self.lifetimes
        fresh_until = now + lifetimes.cache_time
        stale_until = fresh_until + lifetimes.stale_if_error
        if not allow_expired:
            expiry = identity.expires_timestamp
            fresh_until, stale_until = min(fresh_until, expiry), min(stale_until, expiry)
        ttl = fresh_until - now
        with self.lock:
            if self.revoked_since(since, identity):
                return None
            if stale_until <= now:
                return 0.0
            entry: Entry = (
                (identity, fresh_until, now) if self.keep_stored_at else (identity, fresh_until)
            )
            _put(self.positive, key, entry, self.maxsize)
            self._negative.pop(key, None)
        return max(ttl, 0.0)

    def store_invalid(self, key: bytes, now: float) -> None:
        lifetimes = self.lifetimes
        fresh_until = now + lifetimes.negative_cache_time
        stale_until = max(fresh_until, now + lifetimes.stale_if_error)
        with self.lock:
            if fresh_until > now or stale_until > now:
                _put(self._negative, key, (fresh_until, stale_until), self.negative_maxsize)
            self.positive.pop(key, None)

    def revoke(self, revocation: Revocation, now: float) -> list[Identity]:
        """Drop the entries ``revocation`` names; the identities dropped.

        With ``stale_if_error`` a token revoked by audit id or matcher is
        remembered as rejected for outages (a revocation of everything only
        drops entries: it does not say any token is bad).
        """
        keep_rejected = self.lifetimes.stale_if_error > 0 and revocation is not None
        with self.lock:
            self._epoch += 1
            self._revocations.append(revocation)
            if revocation is not None and not isinstance(revocation, str):
                self._matchers.append((now + self._horizon(), revocation))
            if revocation is None:
                dropped = [entry[0] for entry in self.positive.values()]
                self.positive.clear()
                return dropped
            doomed = [
                (key, entry[0])
                for key, entry in self.positive.items()
                if revokes(revocation, entry[0])
            ]
            for key, _ in doomed:
                del self.positive[key]
                if keep_rejected:
                    entry = (now, now + self.lifetimes.stale_if_error)
                    _put(self._negative, key, entry, self.negative_maxsize)
        return [identity for _, identity in doomed]

    def _horizon(self) -> float:
        """How long a shared-cache answer may predate a revocation it must honour."""
        return self.lifetimes.cache_time + self.lifetimes.stale_if_error

    # -- revocation bookkeeping --------------------------------------------------------------
    def epoch(self) -> int:
        with self.lock:
            return self._epoch

    def revoked_since(self, since: int, identity: Identity) -> bool:
        """Whether a revocation after epoch ``since`` may concern ``identity`` (lock held)."""
        missed = self._epoch - since
        if missed == 0:
            return False
        if missed > len(self._revocations):
            return True  # some fell out of the log: assume the worst
        return any(revokes(self._revocations[-i], identity) for i in range(1, missed + 1))

    def matched(self, identity: Identity, now: float) -> bool:
        """Whether a recent revocation event names ``identity`` (for shared-cache answers)."""
        with self.lock:
            while self._matchers and self._matchers[0][0] <= now:
                self._matchers.popleft()
            matchers = [matcher for _, matcher in self._matchers]
        return any(matcher.matches(identity) for matcher in matchers)

    def clear(self) -> None:
        with self.lock:
            self.positive.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self.positive)
