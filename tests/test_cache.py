from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import PausedAfterRead

from authmw import (
    CachedValidator,
    Identity,
    IdentityServiceUnavailable,
    InMemoryValidator,
    InvalidToken,
)
from authmw._hashing import token_digest
from authmw.store import LocalTokenStore
from authmw.validators.base import RevocationListener


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def identity(user: str = "u1", expires: float | None = None, audit: str | None = None) -> Identity:
    return Identity(
        user,
        roles=("member",),
        expires_at=None if expires is None else datetime.fromtimestamp(expires, timezone.utc),
        audit_ids=(audit,) if audit else (),
    )


class Counting:
    """Blocking validator that counts calls and can be told how to answer."""

    def __init__(self, answers: dict[str, Identity] | None = None) -> None:
        self.answers = answers or {}
        self.calls = 0
        self.error: Exception | None = None
        self.lock = threading.Lock()

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        with self.lock:
            self.calls += 1
        if self.error is not None:
            raise self.error
        try:
            return self.answers[token]
        except KeyError:
            raise InvalidToken("unknown") from None


def test_hit_does_not_call_validator_again() -> None:
    inner = Counting({"t": identity()})
    cache = CachedValidator(inner, timer=Clock())
    first = cache.validate("t")
    assert cache.validate("t") is first
    assert inner.calls == 1
    assert cache.stats.hits == 1 and cache.stats.misses == 1


def test_entry_expires_after_cache_time() -> None:
    clock = Clock()
    inner = Counting({"t": identity()})
    cache = CachedValidator(inner, cache_time=60, timer=clock)
    cache.validate("t")
    clock.now += 59
    cache.validate("t")
    assert inner.calls == 1
    clock.now += 2
    cache.validate("t")
    assert inner.calls == 2


def test_entry_never_outlives_its_token() -> None:
    clock = Clock()
    inner = InMemoryValidator(clock=clock)
    inner.add("t", identity(expires=clock.now + 10))
    cache = CachedValidator(inner, cache_time=300, timer=clock)
    assert cache.validate("t").user_id == "u1"
    clock.now += 11
    assert cache.lookup("t") is None
    with pytest.raises(InvalidToken):
        cache.validate("t")


def test_token_already_expired_is_not_cached() -> None:
    clock = Clock()
    inner = Counting({"t": identity(expires=clock.now - 1)})
    cache = CachedValidator(inner, timer=clock)
    cache.validate("t")
    cache.validate("t")
    assert inner.calls == 2
    assert len(cache) == 0


def test_lru_bound_evicts_least_recently_used() -> None:
    inner = Counting({t: identity(t) for t in "abc"})
    cache = CachedValidator(inner, maxsize=2, timer=Clock())
    cache.validate("a")
    cache.validate("b")
    cache.validate("a")  # a is now the most recently used
    cache.validate("c")  # evicts b
    assert len(cache) == 2
    assert cache.lookup("a") is not None
    assert cache.lookup("b") is None


def test_keys_are_digests_never_raw_tokens() -> None:
    token = "secret-token-value"
    cache = CachedValidator(Counting({token: identity()}), timer=Clock())
    cache.validate(token)
    keys = list(cache.entries.positive.keys())
    assert keys == [token_digest(token)]
    assert all(token.encode() not in key for key in keys)


def test_rejection_is_remembered_for_negative_cache_time() -> None:
    clock = Clock()
    inner = Counting()
    cache = CachedValidator(inner, negative_cache_time=5, timer=clock)
    for _ in range(100):
        with pytest.raises(InvalidToken):
            cache.validate("bad")
    assert inner.calls == 1
    assert cache.stats.negative_hits == 99
    clock.now += 6
    with pytest.raises(InvalidToken):
        cache.validate("bad")
    assert inner.calls == 2


def test_negative_cache_can_be_turned_off() -> None:
    inner = Counting()
    cache = CachedValidator(inner, negative_cache_time=0, timer=Clock())
    for _ in range(3):
        with pytest.raises(InvalidToken):
            cache.validate("bad")
    assert inner.calls == 3


def test_outages_are_never_cached() -> None:
    inner = Counting({"t": identity()})
    inner.error = IdentityServiceUnavailable("down")
    cache = CachedValidator(inner, timer=Clock())
    for _ in range(3):
        with pytest.raises(IdentityServiceUnavailable):
            cache.validate("t")
    assert inner.calls == 3
    inner.error = None
    assert cache.validate("t").user_id == "u1"


def test_cache_time_zero_reaches_validator_every_time() -> None:
    inner = InMemoryValidator()
    inner.add("t", identity())
    counting = Counting()
    counting.validate = lambda token, allow_expired=False: (  # type: ignore[method-assign]
        setattr(counting, "calls", counting.calls + 1) or inner.validate(token)
    )
    cache = CachedValidator(counting, cache_time=0, timer=Clock())
    cache.validate("t")
    cache.validate("t")
    assert counting.calls == 2
    inner.revoke("t")
    with pytest.raises(InvalidToken):
        cache.validate("t")


def test_revocation_in_same_process_takes_effect_at_once() -> None:
    inner = InMemoryValidator()
    inner.add("t", identity(audit="audit-1"))
    inner.add("other", identity("u2", audit="audit-2"))
    cache = CachedValidator(inner, cache_time=3600, timer=Clock())
    cache.validate("t")
    cache.validate("other")
    assert inner.revoke("t")
    with pytest.raises(InvalidToken):
        cache.validate("t")
    assert cache.lookup("other") is not None  # only the revoked token's entry went


def test_revocation_without_audit_id_clears_everything() -> None:
    inner = InMemoryValidator()
    inner.add("t", identity())
    inner.add("other", identity("u2"))
    cache = CachedValidator(inner, timer=Clock())
    cache.validate("t")
    cache.validate("other")
    inner.revoke("t")
    assert len(cache) == 0
    assert cache.validate("other").user_id == "u2"


def test_allow_expired_is_a_separate_entry() -> None:
    clock = Clock()
    inner = InMemoryValidator(clock=clock)
    inner.add("t", identity(expires=clock.now - 5))
    cache = CachedValidator(inner, timer=clock)
    assert cache.validate("t", allow_expired=True).user_id == "u1"
    with pytest.raises(InvalidToken):
        cache.validate("t")


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ValueError, match="cache_time"):
        CachedValidator(Counting(), cache_time=-1)
    with pytest.raises(ValueError, match="cache_size"):
        CachedValidator(Counting(), maxsize=0)


# -- single-flight with real threads ---------------------------------------------


class Gate(Counting):
    """Validator that blocks every call until released."""

    def __init__(self, answers: dict[str, Identity]) -> None:
        super().__init__(answers)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first: BaseException | None = None

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        with self.lock:
            self.calls += 1
            fail = self.fail_first
            self.fail_first = None
        self.entered.set()
        assert self.release.wait(10)
        if fail is not None:
            raise fail
        return self._answer(token)

    def _answer(self, token: str) -> Identity:
        if self.error is not None:
            raise self.error
        try:
            return self.answers[token]
        except KeyError:
            raise InvalidToken("unknown") from None


def run_threads(n: int, target: object) -> tuple[list[object], list[threading.Thread]]:
    results: list[object] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            value: object = target()  # type: ignore[operator]
        except BaseException as exc:
            value = exc
        with lock:
            results.append(value)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


def wait_for_waiters(cache: CachedValidator, n: int) -> None:
    for _ in range(2000):
        if cache.stats.coalesced >= n:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"only {cache.stats.coalesced} of {n} callers joined the flight")


def test_concurrent_threads_share_one_validation() -> None:
    gate = Gate({"t": identity()})
    cache = CachedValidator(gate, timer=Clock())
    results, threads = run_threads(50, lambda: cache.validate("t"))
    assert gate.entered.wait(10)
    wait_for_waiters(cache, 49)
    gate.release.set()
    for t in threads:
        t.join(10)
    assert gate.calls == 1
    assert len(results) == 50
    assert all(isinstance(r, Identity) and r.user_id == "u1" for r in results)


def test_threads_share_a_definite_rejection_and_an_outage_is_not_cached() -> None:
    gate = Gate({})
    cache = CachedValidator(gate, timer=Clock())
    results, threads = run_threads(10, lambda: cache.validate("bad"))
    assert gate.entered.wait(10)
    wait_for_waiters(cache, 9)
    gate.release.set()
    for t in threads:
        t.join(10)
    assert gate.calls == 1
    assert all(isinstance(r, InvalidToken) for r in results)

    gate2 = Gate({"t": identity()})
    gate2.error = IdentityServiceUnavailable("down")
    cache2 = CachedValidator(gate2, timer=Clock())
    results, threads = run_threads(10, lambda: cache2.validate("t"))
    assert gate2.entered.wait(10)
    wait_for_waiters(cache2, 9)
    gate2.release.set()
    for t in threads:
        t.join(10)
    assert all(isinstance(r, IdentityServiceUnavailable) for r in results)
    gate2.error = None
    assert cache2.validate("t").user_id == "u1"  # nothing was cached
    assert gate2.calls == 2


def test_failing_first_thread_does_not_poison_the_others() -> None:
    gate = Gate({"t": identity()})
    gate.fail_first = RuntimeError("bug in the first call")
    cache = CachedValidator(gate, timer=Clock())
    results, threads = run_threads(5, lambda: cache.validate("t"))
    assert gate.entered.wait(10)
    wait_for_waiters(cache, 4)
    gate.release.set()
    for t in threads:
        t.join(10)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert sum(isinstance(r, Identity) for r in results) == 4
    assert gate.calls == 2  # one retry by a waiter, not one per waiter


def test_lock_is_not_held_during_validation() -> None:
    gate = Gate({"slow": identity("slow"), "cached": identity("cached")})
    gate.release.set()
    cache = CachedValidator(gate, timer=Clock())
    cache.validate("cached")
    gate.release.clear()
    gate.entered.clear()
    _, threads = run_threads(1, lambda: cache.validate("slow"))
    assert gate.entered.wait(10)
    # The slow validation is blocked inside the validator; the cache must still answer.
    done = threading.Event()
    result: list[Identity | None] = []

    def reader() -> None:
        result.append(cache.lookup("cached"))
        done.set()

    threading.Thread(target=reader).start()
    assert done.wait(5), "lookup blocked behind a validation in progress"
    assert result[0] is not None and result[0].user_id == "cached"
    gate.release.set()
    threads[0].join(10)


# -- single-flight with real asyncio tasks ----------------------------------------


class AsyncGate:
    def __init__(self, answers: dict[str, Identity]) -> None:
        self.answers = answers
        self.calls = 0
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise AssertionError("the blocking form must not be used under asyncio")

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        try:
            return self.answers[token]
        except KeyError:
            raise InvalidToken("unknown") from None


async def test_concurrent_tasks_share_one_validation() -> None:
    gate = AsyncGate({"t": identity()})
    cache = CachedValidator(gate, timer=Clock())
    tasks = [asyncio.create_task(cache.avalidate("t")) for _ in range(100)]
    await gate.entered.wait()
    await asyncio.sleep(0)
    gate.release.set()
    results = await asyncio.gather(*tasks)
    assert gate.calls == 1
    assert {r.user_id for r in results} == {"u1"}
    assert cache.stats.coalesced == 99


async def test_cancelled_first_task_does_not_strand_the_others() -> None:
    gate = AsyncGate({"t": identity()})
    cache = CachedValidator(gate, timer=Clock())
    first = asyncio.create_task(cache.avalidate("t"))
    await gate.entered.wait()
    others = [asyncio.create_task(cache.avalidate("t")) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.release.set()
    results = await asyncio.gather(*others)
    assert {r.user_id for r in results} == {"u1"}
    assert gate.calls == 1
    assert cache.lookup("t") is not None  # the shared validation still filled the cache


async def test_async_rejection_is_cached_negatively() -> None:
    gate = AsyncGate({})
    gate.release.set()
    cache = CachedValidator(gate, timer=Clock())
    for _ in range(5):
        with pytest.raises(InvalidToken):
            await cache.avalidate("bad")
    assert gate.calls == 1


async def test_blocking_validator_is_coalesced_under_asyncio() -> None:
    gate = Gate({"t": identity()})
    cache = CachedValidator(gate, timer=Clock())
    tasks = [asyncio.create_task(cache.avalidate("t")) for _ in range(20)]
    await asyncio.to_thread(gate.entered.wait, 10)
    await asyncio.sleep(0.01)
    gate.release.set()
    results = await asyncio.gather(*tasks)
    assert gate.calls == 1
    assert {r.user_id for r in results} == {"u1"}


# -- second level (shared cache protocol) ---------------------------------------------


class DictShared:
    """A SharedCache in a dict, to check what the cache asks of the second level."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Identity] = {}
        self.invalid: dict[bytes, float] = {}
        self.put_invalid_calls = 0
        self.gets = 0

    def get(self, key: bytes) -> Identity | None:
        self.gets += 1
        if key in self.invalid:
            raise InvalidToken("rejected by another process")
        return self.entries.get(key)

    def put(self, key: bytes, identity: Identity, ttl: float) -> None:
        self.entries[key] = identity

    def put_invalid(self, key: bytes, ttl: float) -> None:
        self.put_invalid_calls += 1
        self.invalid[key] = ttl

    def revoke(self, audit_id: str | None) -> None:
        self.entries.clear()

    async def aget(self, key: bytes) -> Identity | None:
        return self.get(key)

    async def aput(self, key: bytes, identity: Identity, ttl: float) -> None:
        self.put(key, identity, ttl)

    async def aput_invalid(self, key: bytes, ttl: float) -> None:
        self.put_invalid(key, ttl)


def test_second_level_hit_skips_the_validator_and_is_not_written_back() -> None:
    shared = DictShared()
    first = CachedValidator(Counting({"t": identity()}), shared=shared, timer=Clock())
    first.validate("t")
    inner = Counting({"t": identity()})
    second = CachedValidator(inner, shared=shared, timer=Clock())
    assert second.validate("t").user_id == "u1"
    assert inner.calls == 0
    assert second.stats.shared_hits == 1


def test_shared_rejection_is_remembered_locally_and_not_renewed() -> None:
    shared = DictShared()
    with pytest.raises(InvalidToken):
        CachedValidator(Counting(), shared=shared, timer=Clock()).validate("bad")
    assert shared.put_invalid_calls == 1
    inner = Counting()
    other = CachedValidator(inner, shared=shared, timer=Clock())
    for _ in range(3):
        with pytest.raises(InvalidToken):
            other.validate("bad")
    assert inner.calls == 0
    assert shared.gets == 2  # the first "bad" above, then once here: later ones hit locally
    assert shared.put_invalid_calls == 1  # a rejection read from Redis is not written back


async def test_async_shared_rejection_is_remembered_locally_and_not_renewed() -> None:
    shared = DictShared()
    with pytest.raises(InvalidToken):
        await CachedValidator(Counting(), shared=shared, timer=Clock()).avalidate("bad")
    inner = Counting()
    other = CachedValidator(inner, shared=shared, timer=Clock())
    for _ in range(3):
        with pytest.raises(InvalidToken):
            await other.avalidate("bad")
    assert inner.calls == 0
    assert shared.gets == 2
    assert shared.put_invalid_calls == 1


# -- a revocation while a validation is in flight -------------------------------------
#
# The validator below reads the (still valid) row from a real SQLite store, then
# stops on an Event while the test revokes the token; the result it then returns
# was obtained before the revocation and must neither be cached nor accepted.


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalTokenStore]:
    with LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db") as store:
        yield store


def test_token_revoked_during_its_validation_is_not_accepted(
    local_store: LocalTokenStore,
) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    paused = PausedAfterRead(local_store)
    cache = CachedValidator(paused, cache_time=300)
    results, threads = run_threads(2, lambda: cache.validate(issued.token))
    assert paused.read.wait(10)
    wait_for_waiters(cache, 1)  # the second thread waits for the same validation

    assert local_store.revoke(issued.id)
    paused.release.set()
    for t in threads:
        t.join(10)

    # Both callers were answered from a validation made after the revocation.
    assert len(results) == 2 and all(isinstance(r, InvalidToken) for r in results), results
    assert len(cache) == 0  # no identity cached for it
    with pytest.raises(InvalidToken):
        cache.validate(issued.token)


def test_revoke_everything_during_a_validation_validates_again(
    local_store: LocalTokenStore,
) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    paused = PausedAfterRead(local_store)
    cache = CachedValidator(paused, cache_time=300)
    results, threads = run_threads(1, lambda: cache.validate(issued.token))
    assert paused.read.wait(10)
    cache.invalidate(None)  # "anything may have changed"
    paused.release.set()
    threads[0].join(10)
    assert isinstance(results[0], Identity)
    assert paused.calls == 2  # the answer came from a validation after the revocation
    assert cache.stats.revalidated == 1
    assert cache.validate(issued.token).user_name == "alice"
    assert paused.calls == 2  # and that one was cached


def test_revocation_of_another_token_keeps_the_result(local_store: LocalTokenStore) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    other = local_store.issue(user_name="bob", ttl=3600)
    paused = PausedAfterRead(local_store)
    cache = CachedValidator(paused, cache_time=300)
    results, threads = run_threads(1, lambda: cache.validate(issued.token))
    assert paused.read.wait(10)
    assert local_store.revoke(other.id)
    paused.release.set()
    threads[0].join(10)
    assert isinstance(results[0], Identity)
    assert paused.calls == 1
    assert cache.lookup(issued.token) is not None


async def test_token_revoked_during_an_async_validation_is_not_accepted(
    local_store: LocalTokenStore,
) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    paused = PausedAfterRead(local_store)  # blocking: runs in authmw's worker threads
    cache = CachedValidator(paused, cache_time=300)
    tasks = [asyncio.create_task(cache.avalidate(issued.token)) for _ in range(3)]
    assert await asyncio.to_thread(paused.read.wait, 10)

    assert await asyncio.to_thread(local_store.revoke, issued.id)
    paused.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, InvalidToken) for r in results), results
    assert len(cache) == 0  # no identity cached for it
    with pytest.raises(InvalidToken):
        await cache.avalidate(issued.token)


class AsyncPausedAfterRead(PausedAfterRead):
    """Native async form of :class:`PausedAfterRead`, paused on an asyncio.Event."""

    def __init__(self, validator: LocalTokenStore) -> None:
        super().__init__(validator)
        self.store = validator
        self.aread = asyncio.Event()
        self.arelease = asyncio.Event()

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self.calls += 1
        identity = await self.store.avalidate(token, allow_expired=allow_expired)
        if self.calls == 1:
            self.aread.set()
            await self.arelease.wait()
        return identity


async def test_token_revoked_during_a_native_async_validation_is_not_accepted(
    local_store: LocalTokenStore,
) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    paused = AsyncPausedAfterRead(local_store)
    cache = CachedValidator(paused, cache_time=300)
    task = asyncio.create_task(cache.avalidate(issued.token))
    await paused.aread.wait()
    assert await asyncio.to_thread(local_store.revoke, issued.id)
    paused.arelease.set()
    with pytest.raises(InvalidToken):
        await task
    assert paused.calls == 2
    assert len(cache) == 0  # no identity cached for it


class RevokesEverythingEachTime(PausedAfterRead):
    """Every validation is overtaken by a revoke-everything (None) of its validator."""

    def __init__(self, validator: LocalTokenStore) -> None:
        super().__init__(validator)
        self.release.set()
        self.listeners: list[RevocationListener] = []

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        self.listeners.append(listener)

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        identity = super().validate(token, allow_expired=allow_expired)
        for listener in self.listeners:
            listener(None)
        return identity


async def test_validations_overtaken_again_and_again_end_in_unavailable(
    local_store: LocalTokenStore,
) -> None:
    issued = local_store.issue(user_name="alice", ttl=3600)
    validator = RevokesEverythingEachTime(local_store)
    cache = CachedValidator(validator, cache_time=300)
    with pytest.raises(IdentityServiceUnavailable):
        cache.validate(issued.token)
    assert validator.calls == 3
    with pytest.raises(IdentityServiceUnavailable):
        await cache.avalidate(issued.token)
    assert validator.calls == 6
    assert len(cache) == 0
    assert cache.stats.revalidated == 6
