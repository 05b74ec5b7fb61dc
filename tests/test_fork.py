"""A worker forked from a master that built the app (gunicorn ``--preload``).

A thread of the master (a revocation listener, a store watcher) may hold one
of authmw's locks at the instant of the fork; the child must not inherit it
held. Each test holds a lock in a thread, forks, and has the child do what
takes that lock, within a few seconds (exit code 2: it hung).
"""

from __future__ import annotations

import pytest
from forking import held, in_child
from helpers import Counting, full_identity

from authmw import CachedValidator, CircuitBreaker
from authmw.redis import RedisCache

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
