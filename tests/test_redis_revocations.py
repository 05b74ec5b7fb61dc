"""Revocations published through Redis reach every other cache at once (real redis-server)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _services import RedisServer
from helpers import Counting, full_identity, until

from authmw import CachedValidator
from authmw._redis_listen import sign
from authmw.redis import RedisCache

pytestmark = pytest.mark.redis

SECRET = "r" * 32 + "-revocations-test-secret"
TOKEN = "published-token-0123456789"
BOUND = 10.0  # generous: the measured p99 is in docs/benchmarks.md


class Process:
    """One process's view: its own validator, in-process cache and RedisCache."""

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        self.validator = Counting({TOKEN: full_identity(audit_ids=("audit-pub",))})
        self.shared = RedisCache.from_url(url, secret=SECRET, namespace=namespace, **options)
        self.cache = CachedValidator(self.validator, shared=self.shared)
        self.channel = self.shared._subscriptions[0]
        assert self.channel.subscribed.wait(BOUND), "no subscription"

    def cached(self) -> bool:
        return self.cache.lookup(TOKEN, count_miss=False) is not None

    def close(self) -> None:
        self.shared.close()


@pytest.fixture
def two(redis_url: str) -> Iterator[tuple[Process, Process]]:
    namespace = "pub-" + uuid.uuid4().hex[:8]
    a, b = Process(redis_url, namespace), Process(redis_url, namespace)
    yield a, b
    a.close()
    b.close()


def test_a_revocation_in_one_process_drops_the_entry_in_another(
    two: tuple[Process, Process],
) -> None:
    a, b = two
    a.cache.validate(TOKEN)
    b.cache.validate(TOKEN)  # b's own in-process entry (from the shared cache or its validator)
    assert b.cached()
    a.cache.invalidate("audit-pub")
    assert until(lambda: not b.cached(), BOUND), "b still serves the revoked token from its cache"
    assert not a.cached()


def test_a_revocation_of_everything_reaches_every_process(two: tuple[Process, Process]) -> None:
    a, b = two
    b.cache.validate(TOKEN)
    a.cache.invalidate(None)
    assert until(lambda: not b.cached(), BOUND)


def test_unsigned_or_foreign_messages_are_ignored(
    two: tuple[Process, Process], redis_url: str
) -> None:
    a, b = two
    b.cache.validate(TOKEN)
    channel = b.shared._channel
    client = redis.Redis.from_url(redis_url)
    received = b.channel.received
    client.publish(channel, b"audit-pub")  # no MAC
    client.publish(channel, sign(b"k" * 32, b.shared._prefix, "audit-pub"))  # another secret
    client.publish(channel, b"0" * 32 + b":audit-pub")
    a.cache.invalidate("some-other-token")  # a signed one, after them: all have been read
    assert until(lambda: b.channel.received == received + 1, BOUND)
    assert b.cached()


def test_a_lost_subscription_warns_once_and_recovers_by_itself(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = "pub-" + uuid.uuid4().hex[:8]
    caplog.set_level(logging.WARNING, logger="authmw")
    a = Process(redis_server.url, namespace, retry_interval=0.1, max_retry_interval=0.2)
    b = Process(redis_server.url, namespace, retry_interval=0.1, max_retry_interval=0.2)
    try:
        b.cache.validate(TOKEN)
        redis_server.stop()

        def warnings() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "authmw.redis"]

        assert until(lambda: len(warnings()) >= 2, BOUND)  # one per cache (two processes)
        time.sleep(1.0)  # several reconnection attempts while it is down: no more
        assert len(warnings()) == 2
        assert "revoked in other processes" in warnings()[-1].getMessage()
        assert b.cached()  # the in-process entry keeps serving (cache_time bound)
        redis_server.start()
        assert until(lambda: a.channel.subscribed.is_set() and b.channel.subscribed.is_set(), BOUND)
        a.cache.invalidate("audit-pub")
        assert until(lambda: not b.cached(), BOUND)
    finally:
        a.close()
        b.close()


def test_a_closed_subscription_reports_no_outage(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="authmw")
    a = Process(redis_server.url, "pub-" + uuid.uuid4().hex[:8])
    thread = a.channel._thread
    assert thread is not None
    a.close()
    redis_server.stop()  # while the closed listener still waits for its next message
    thread.join(BOUND)
    assert not thread.is_alive()
    assert not [r for r in caplog.records if r.name == "authmw.redis"]
