"""A worker forked from a master that built the app (gunicorn ``--preload``).

A thread of the master (a revocation listener, a store watcher) may hold one
of authmw's locks at the instant of the fork; the child must not inherit it
held. Each test holds a lock in a thread, forks, and has the child do what
takes that lock, within a few seconds (exit code 2: it hung).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from forking import held, in_child
from helpers import Counting, full_identity

from authmw import CachedValidator, CircuitBreaker, LocalTokenStore
from authmw._websockets import SocketWatch
from authmw.redis import RedisCache
from authmw.validators._jwks import RemoteKeys
from authmw.validators.base import run_blocking

SECRET = b"s" * 32


def test_a_child_caches_although_a_parent_thread_held_the_cache_lock() -> None:
    validator = Counting({"t1": full_identity(), "t2": full_identity(user_id="u2")})
    cached = CachedValidator(validator, cache_time=60)
    cached.validate("t1")
    with held(cached.entries.lock):
        assert in_child(lambda: cached.validate("t2")) == 0
        assert in_child(lambda: cached.invalidate("audit-1")) == 0
    assert cached.validate("t1").user_id == "u-123"  # the parent's lock works as before


def test_a_child_breaker_works_although_a_parent_thread_held_its_lock() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10)
    with held(breaker._lock):
        assert in_child(breaker.before_call) == 0


class _Broken:
    """Registered for forks, but its reset fails, and so does its repr."""

    def _after_fork(self) -> None:
        raise RuntimeError("reset failed")

    def __repr__(self) -> str:
        raise AttributeError("half-built")


def test_a_failing_reset_leaves_the_other_resets_to_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from authmw import _fork

    broken = [_Broken() for _ in range(3)]  # some come before the breaker, whatever the order
    for owner in broken:
        _fork.reset_after_fork(owner)
    breaker = CircuitBreaker(failure_threshold=3, cooldown=10)
    more = [_Broken() for _ in range(3)]
    for owner in more:
        _fork.reset_after_fork(owner)
    with caplog.at_level("ERROR", logger="authmw"), held(breaker._lock):
        assert in_child(breaker.before_call) == 0


@pytest.mark.parametrize("operation", ["get", "revoke"])
def test_a_child_shared_cache_works_although_a_parent_thread_held_its_lock(
    redis_url: str, operation: str
) -> None:
    cache = RedisCache.from_url(redis_url, secret=SECRET)
    cache.put(b"k" * 32, full_identity(), 60)

    def use() -> None:
        if operation == "get":
            assert cache.get(b"k" * 32) is not None
        else:
            cache.revoke("audit-1")

    with held(cache._lock):
        assert in_child(use) == 0


def test_a_child_runs_blocking_validations_after_the_parent_did() -> None:
    # The parent's worker pool counts idle threads that are not in the child: it would
    # never start one, and every async call of a blocking validator would wait forever.
    identity = full_identity()
    assert asyncio.run(run_blocking(lambda: identity)) is identity
    assert in_child(lambda: asyncio.run(run_blocking(lambda: identity))) == 0


def test_a_child_closes_websockets_although_a_parent_thread_held_the_watch_lock() -> None:
    watch = SocketWatch()
    with held(watch._lock):  # as the Redis subscription thread does, closing sockets
        assert in_child(lambda: watch.revoked("audit-1")) == 0


def test_a_child_store_validates_although_a_parent_thread_held_its_pool_lock(
    tmp_path: Path,
) -> None:
    store = LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db")
    token = store.issue(user_name="alice", ttl=3600).token
    assert store.validate(token).user_name == "alice"
    with held(store._backend._pool._lock):  # as the watcher thread does, reading events

        def validate() -> None:
            assert store.validate(token).user_name == "alice"

        assert in_child(validate) == 0
    store.close()


def test_a_child_fetches_keys_although_the_parent_had_a_fetch_in_flight() -> None:
    keys = RemoteKeys(
        "https://issuer.example",
        jwks_uri="https://issuer.example/jwks",
        allowed=frozenset({"RS256"}),
        max_age=300,
        min_refresh_interval=10,
        max_stale=3600,
        wait_timeout=3,
        clock=time.monotonic,
        on_retired=lambda markers: None,
    )
    fetching = keys.key_for("k1", "RS256")  # the parent's fetch, stopped at its request
    assert isinstance(next(fetching), httpx.Request)

    def leads_a_fetch() -> None:
        # Not a Wait on the parent's fetch, which would never end in the child.
        assert isinstance(next(keys.key_for("k1", "RS256")), httpx.Request)

    assert in_child(leads_a_fetch) == 0
    fetching.close()


def test_a_child_of_a_process_that_closed_its_subscription_does_not_subscribe(
    redis_url: str,
) -> None:
    cache = RedisCache.from_url(redis_url, secret=SECRET)
    channel = cache.subscribe(lambda audit_id: None)
    assert channel.subscribed.wait(10)
    channel.close()

    def no_subscription() -> None:
        assert not any(t.name == "authmw-redis-revocations" for t in threading.enumerate())
        assert not channel.subscribed.is_set()

    assert in_child(no_subscription) == 0
