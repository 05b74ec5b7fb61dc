"""The shared Redis cache level, against the real redis-server of the test fixtures."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from _services import RedisServer, free_port
from helpers import (
    BAD,
    GOOD,
    OTHER,
    ASGIRecorder,
    Counting,
    PausedAfterRead,
    WSGIRecorder,
    call_wsgi,
    environ,
    full_identity,
    http_scope,
)

from authmw import AuthCore, ConfigurationError, Identity, InMemoryValidator, InvalidToken
from authmw._hashing import token_digest
from authmw.asgi import ASGIAuthMiddleware
from authmw.redis import RedisCache
from authmw.store import LocalTokenStore
from authmw.wsgi import WSGIAuthMiddleware

pytestmark = pytest.mark.redis

SECRET = "s" * 32 + "-shared-cache-test-secret"


@pytest.fixture
def namespace() -> str:
    return "t-" + uuid.uuid4().hex[:12]


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def shared(url: str, namespace: str, **options: Any) -> RedisCache:
    options.setdefault("secret", SECRET)
    return RedisCache.from_url(url, namespace=namespace, **options)


def wsgi(validator: Any, cache: RedisCache, **options: Any) -> WSGIAuthMiddleware:
    return WSGIAuthMiddleware(WSGIRecorder(), validator=validator, shared_cache=cache, **options)


def request(app: WSGIAuthMiddleware, token: str) -> int:
    return call_wsgi(app, environ(headers=[("X-Auth-Token", token)])).code


def entry_keys(client: redis.Redis, namespace: str) -> list[bytes]:
    keys: list[bytes] = client.keys(f"{namespace}:t:*")  # type: ignore[assignment]
    return sorted(keys)


def positive_entries(url: str, namespace: str) -> list[bytes]:
    """Keys of the identities (not rejections) stored in the namespace."""
    client = redis.Redis.from_url(url)
    return [k for k in entry_keys(client, namespace) if (client.get(k) or b"")[1:2] == b"P"]


# -- sharing between processes -------------------------------------------------


def test_second_process_makes_no_validator_call(redis_url: str, namespace: str) -> None:
    identity = full_identity()
    first_validator, second_validator = Counting({GOOD: identity}), Counting({GOOD: identity})
    first = wsgi(first_validator, shared(redis_url, namespace))
    second = wsgi(second_validator, shared(redis_url, namespace))

    assert request(first, GOOD) == 200
    assert request(second, GOOD) == 200

    assert first_validator.calls == [GOOD]
    assert second_validator.calls == []
    seen = second.app.last["authmw.identity"]  # type: ignore[attr-defined]
    assert seen == identity
    assert seen.roles == identity.roles
    assert second.stats()["shared_hits"] == 1


def test_rejection_is_shared(redis_url: str, namespace: str) -> None:
    first_validator, second_validator = Counting(), Counting()
    first = wsgi(first_validator, shared(redis_url, namespace))
    second = wsgi(second_validator, shared(redis_url, namespace))

    assert request(first, BAD) == 401
    assert request(second, BAD) == 401

    assert first_validator.calls == [BAD]
    assert second_validator.calls == []


def test_keys_are_token_digests_never_tokens(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    keys = client.keys(f"{namespace}:*")
    assert keys == [f"{namespace}:t:{token_digest(GOOD).hex()}".encode()]
    assert GOOD.encode() not in keys[0]
    assert GOOD.encode() not in client.get(keys[0])  # type: ignore[operator]


def test_token_body_is_not_stored(redis_url: str, namespace: str) -> None:
    identity = full_identity(token_body={"token": {"secret-marker": "body-only"}})
    first = wsgi(Counting({GOOD: identity}), shared(redis_url, namespace))
    second_validator = Counting()
    second = wsgi(second_validator, shared(redis_url, namespace))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    assert b"body-only" not in client.get(key)  # type: ignore[operator]
    assert request(second, GOOD) == 200
    assert second.app.last["authmw.identity"].token_body is None  # type: ignore[attr-defined]


# -- integrity -------------------------------------------------------------------


def _flip(value: bytes, index: int) -> bytes:
    return value[:index] + bytes([value[index] ^ 0x01]) + value[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "header", "mac"])
def test_tampered_entry_is_a_miss(redis_url: str, namespace: str, where: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    value: bytes = client.get(key)  # type: ignore[assignment]
    index = {"payload": len(value) - 40, "header": 2, "mac": len(value) - 1}[where]
    client.set(key, _flip(value, index), keepttl=True)

    second_validator = Counting({GOOD: full_identity()})
    cache = shared(redis_url, namespace)
    second = wsgi(second_validator, cache)
    assert request(second, GOOD) == 200
    assert second_validator.calls == [GOOD]
    assert cache.stats.rejected == 1


def test_forged_admin_payload_is_a_miss(redis_url: str, namespace: str) -> None:
    """Someone who can write to Redis but lacks the secret cannot grant roles."""
    first = wsgi(Counting({GOOD: full_identity(roles=("reader",))}), shared(redis_url, namespace))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    value: bytes = client.get(key)  # type: ignore[assignment]
    assert b'"reader"' in value
    client.set(key, value.replace(b'"reader"', b'"admin"'), keepttl=True)

    second_validator = Counting({GOOD: full_identity(roles=("reader",))})
    second = wsgi(second_validator, shared(redis_url, namespace))
    assert request(second, GOOD) == 200
    assert second_validator.calls == [GOOD]
    assert second.app.last["authmw.identity"].roles == ("reader",)  # type: ignore[attr-defined]


def test_entry_moved_under_another_token_is_a_miss(redis_url: str, namespace: str) -> None:
    admin = full_identity(user_id="admin-id", roles=("admin",))
    first = wsgi(Counting({GOOD: admin}), shared(redis_url, namespace))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    value = client.get(f"{namespace}:t:{token_digest(GOOD).hex()}")
    assert value is not None
    client.set(f"{namespace}:t:{token_digest(OTHER).hex()}", value, ex=60)

    second_validator = Counting({OTHER: full_identity(user_id="nobody", roles=("reader",))})
    second = wsgi(second_validator, shared(redis_url, namespace))
    assert request(second, OTHER) == 200
    assert second_validator.calls == [OTHER]
    assert second.app.last["authmw.identity"].user_id == "nobody"  # type: ignore[attr-defined]


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"not an entry at all", b"\x01P\x00\xff" * 30])
def test_undecodable_entry_is_a_miss(redis_url: str, namespace: str, garbage: bytes) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(f"{namespace}:t:{token_digest(GOOD).hex()}", garbage, ex=60)
    validator = Counting({GOOD: full_identity()})
    assert request(wsgi(validator, shared(redis_url, namespace)), GOOD) == 200
    assert validator.calls == [GOOD]


def test_wrong_secret_is_a_miss(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace))
    request(first, GOOD)
    other_validator = Counting({GOOD: full_identity()})
    other = wsgi(other_validator, shared(redis_url, namespace, secret="o" * 40))
    assert request(other, GOOD) == 200
    assert other_validator.calls == [GOOD]


def test_previous_secret_still_reads_during_rotation(redis_url: str, namespace: str) -> None:
    old = "old-secret-" + "o" * 32
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace, secret=old))
    request(first, GOOD)
    validator = Counting()
    rotated = shared(redis_url, namespace, secret=SECRET, previous_secrets=[old])
    assert request(wsgi(validator, rotated), GOOD) == 200
    assert validator.calls == []


def test_shared_rejection_cannot_be_forged(redis_url: str, namespace: str) -> None:
    """A written-in 'invalid' marker without the MAC does not lock a user out."""
    first = wsgi(Counting(), shared(redis_url, namespace, secret="x" * 32))
    request(first, GOOD)  # an attacker's process with another secret caches a rejection
    validator = Counting({GOOD: full_identity()})
    assert request(wsgi(validator, shared(redis_url, namespace)), GOOD) == 200
    assert validator.calls == [GOOD]


# -- encryption -------------------------------------------------------------------


def test_encrypted_entries_hide_the_identity(redis_url: str, namespace: str) -> None:
    identity = full_identity(user_name="alice-the-user", project_name="secret-project")
    first = wsgi(Counting({GOOD: identity}), shared(redis_url, namespace, encrypt=True))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    value: bytes = client.get(key)  # type: ignore[assignment]
    for clear in (b"alice-the-user", b"secret-project", b"u-123", b"Member"):
        assert clear not in value

    second_validator = Counting()
    second = wsgi(second_validator, shared(redis_url, namespace, encrypt=True))
    assert request(second, GOOD) == 200
    assert second_validator.calls == []
    assert second.app.last["authmw.identity"] == identity  # type: ignore[attr-defined]


def test_encryption_mode_must_match(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace, encrypt=True))
    request(first, GOOD)
    validator = Counting({GOOD: full_identity()})
    assert request(wsgi(validator, shared(redis_url, namespace, encrypt=False)), GOOD) == 200
    assert validator.calls == [GOOD]


def test_encrypted_tampered_entry_is_a_miss(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace, encrypt=True))
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    value: bytes = client.get(key)  # type: ignore[assignment]
    client.set(key, _flip(value, len(value) - 50), keepttl=True)
    validator = Counting({GOOD: full_identity()})
    assert request(wsgi(validator, shared(redis_url, namespace, encrypt=True)), GOOD) == 200
    assert validator.calls == [GOOD]


# -- TTL ----------------------------------------------------------------------------


def test_redis_ttl_is_the_cache_time(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace), cache_time=120)
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    assert 110_000 < client.pttl(key) <= 120_000


def test_redis_ttl_is_capped_at_token_expiry(redis_url: str, namespace: str) -> None:
    # A whole second: the expiry below is then exactly now + 30 s. From any time.time(),
    # the datetime rounds to the microsecond, up to 0.5 us later, and the TTL in
    # milliseconds (rounded up) read 30001 in about one run in twenty.
    clock = Clock(float(int(time.time())))
    expires = datetime.fromtimestamp(clock.now + 30, timezone.utc)
    first = wsgi(
        Counting({GOOD: full_identity(expires_at=expires)}),
        shared(redis_url, namespace, timer=clock),
        cache_time=300,
        timer=clock,
    )
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    assert 0 < client.pttl(key) <= 30_000


def test_max_ttl_caps_the_caller_ttl(redis_url: str, namespace: str) -> None:
    first = wsgi(
        Counting({GOOD: full_identity()}), shared(redis_url, namespace, max_ttl=20), cache_time=300
    )
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    assert 0 < client.pttl(key) <= 20_000


def test_entry_past_its_time_is_a_miss_even_if_redis_keeps_it(
    redis_url: str, namespace: str
) -> None:
    clock = Clock()
    first = wsgi(
        Counting({GOOD: full_identity()}),
        shared(redis_url, namespace, timer=clock),
        cache_time=60,
        timer=clock,
    )
    request(first, GOOD)
    client = redis.Redis.from_url(redis_url)
    (key,) = entry_keys(client, namespace)
    client.persist(key)  # as if someone kept it alive in Redis

    clock.now += 59
    early_validator = Counting()
    assert (
        request(wsgi(early_validator, shared(redis_url, namespace, timer=clock), timer=clock), GOOD)
        == 200
    )
    assert early_validator.calls == []

    clock.now += 2
    late_validator = Counting({GOOD: full_identity()})
    late_cache = shared(redis_url, namespace, timer=clock)
    assert request(wsgi(late_validator, late_cache, timer=clock), GOOD) == 200
    assert late_validator.calls == [GOOD]
    assert late_cache.stats.stale == 1


def test_expired_identity_from_redis_is_not_used(redis_url: str, namespace: str) -> None:
    clock = Clock()
    expires = datetime.fromtimestamp(clock.now + 10, timezone.utc)
    first = wsgi(
        Counting({GOOD: full_identity(expires_at=expires)}),
        shared(redis_url, namespace, timer=clock),
        timer=clock,
    )
    request(first, GOOD)
    clock.now += 11
    validator = Counting()
    assert (
        request(wsgi(validator, shared(redis_url, namespace, timer=clock), timer=clock), GOOD)
        == 401
    )
    assert validator.calls == [GOOD]


# -- revocation -------------------------------------------------------------------------


def test_revocation_is_seen_by_the_other_process(redis_url: str, namespace: str) -> None:
    identity = full_identity(audit_ids=("audit-revoke-me",))
    store = InMemoryValidator({GOOD: identity, OTHER: full_identity(audit_ids=("keep",))})
    first = wsgi(store, shared(redis_url, namespace))
    assert request(first, GOOD) == 200
    assert request(first, OTHER) == 200

    store.revoke(GOOD)  # the identity service of process one learns of it

    second_validator = Counting()  # would say "invalid", were it asked
    second = wsgi(second_validator, shared(redis_url, namespace))
    assert request(second, GOOD) == 401
    assert second_validator.calls == [GOOD]
    assert request(first, GOOD) == 401
    # Other tokens are not affected.
    assert request(second, OTHER) == 200
    assert second_validator.calls == [GOOD]


def test_revocation_marker_outlives_entries(redis_url: str, namespace: str) -> None:
    cache = shared(redis_url, namespace, max_ttl=90)
    cache.revoke("audit-x")
    client = redis.Redis.from_url(redis_url)
    (marker,) = client.keys(f"{namespace}:rev:*")
    assert b"audit-x" not in marker
    assert 80_000 < client.pttl(marker) <= 90_000


def test_revocation_applies_to_entries_written_afterwards(redis_url: str, namespace: str) -> None:
    """A process that validated just before the revocation cannot re-share the token."""
    identity = full_identity(audit_ids=("late",))
    shared(redis_url, namespace).revoke("late")
    first = wsgi(Counting({GOOD: identity}), shared(redis_url, namespace))
    request(first, GOOD)
    validator = Counting()
    assert request(wsgi(validator, shared(redis_url, namespace)), GOOD) == 401
    assert validator.calls == [GOOD]


def test_revoke_everything_retires_every_entry(redis_url: str, namespace: str) -> None:
    first = wsgi(
        Counting({GOOD: full_identity(), OTHER: full_identity()}), shared(redis_url, namespace)
    )
    request(first, GOOD)
    request(first, OTHER)
    shared(redis_url, namespace).revoke(None)

    validator = Counting({GOOD: full_identity(), OTHER: full_identity()})
    second = wsgi(validator, shared(redis_url, namespace))
    assert request(second, GOOD) == 200
    assert request(second, OTHER) == 200
    assert validator.calls == [GOOD, OTHER]

    # New entries, written after the bump, are shared again.
    third_validator = Counting()
    assert request(wsgi(third_validator, shared(redis_url, namespace)), GOOD) == 200
    assert third_validator.calls == []


def test_validation_racing_a_revocation_is_not_shared(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """A result read before the token was revoked is not written to Redis."""
    with LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db") as store:
        issued = store.issue(user_name="alice", ttl=3600)
        paused = PausedAfterRead(store)
        cache = shared(redis_url, namespace)
        app = wsgi(paused, cache)
        codes: list[int] = []
        worker = threading.Thread(target=lambda: codes.append(request(app, issued.token)))
        worker.start()
        assert paused.read.wait(10)
        assert store.revoke(issued.id)  # the middleware's cache listens to this store
        paused.release.set()
        worker.join(10)

        assert codes == [401]
        assert positive_entries(redis_url, namespace) == []
        other = Counting()  # would accept nothing; must not be asked either way
        assert request(wsgi(other, shared(redis_url, namespace)), issued.token) == 401


async def test_async_validation_racing_a_revocation_is_not_shared(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db") as store:
        issued = store.issue(user_name="alice", ttl=3600)
        paused = PausedAfterRead(store)
        cache = shared(redis_url, namespace)
        app = ASGIAuthMiddleware(ASGIRecorder(), validator=paused, shared_cache=cache)
        pending = asyncio.create_task(asgi_request(app, issued.token))
        assert await asyncio.to_thread(paused.read.wait, 10)
        assert await asyncio.to_thread(store.revoke, issued.id)
        paused.release.set()

        assert await pending == 401
        assert positive_entries(redis_url, namespace) == []
        await cache.aclose()


def test_namespaces_are_separate(redis_url: str, namespace: str) -> None:
    first = wsgi(Counting({GOOD: full_identity()}), shared(redis_url, namespace))
    request(first, GOOD)
    validator = Counting({GOOD: full_identity()})
    assert request(wsgi(validator, shared(redis_url, namespace + "-other")), GOOD) == 200
    assert validator.calls == [GOOD]


# -- a Redis writer without the secret cannot undo a revocation ---------------------------
#
# Markers and the generation counter carry no MAC: whoever can write to Redis can
# delete a marker or set the counter back. A process must not go back on a
# revocation it has seen, whatever Redis says afterwards.


def delete_markers(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    markers = client.keys(f"{namespace}:rev:*")
    assert markers
    client.delete(*markers)


def test_deleted_marker_does_not_revive_a_revoked_entry(redis_url: str, namespace: str) -> None:
    key = token_digest(GOOD)
    identity = full_identity(audit_ids=("audit-deleted-marker",))
    revoker, reader, bystander = (shared(redis_url, namespace) for _ in range(3))
    revoker.put(key, identity, 60)
    assert reader.get(key) == identity
    revoker.revoke("audit-deleted-marker")
    assert reader.get(key) is None  # the reader sees the marker...

    delete_markers(redis_url, namespace)  # ...then someone without the secret deletes it

    assert reader.get(key) is None
    assert revoker.get(key) is None
    assert reader.stats.revoked == 2 and revoker.stats.revoked == 1
    # Only a process that never saw the revocation takes the entry again.
    assert bystander.get(key) == identity


def test_generation_set_back_does_not_revive_retired_entries(
    redis_url: str, namespace: str
) -> None:
    key = token_digest(GOOD)
    client = redis.Redis.from_url(redis_url)
    writer, reader = shared(redis_url, namespace), shared(redis_url, namespace)
    writer.put(key, full_identity(), 60)
    assert reader.get(key) == full_identity()
    writer.revoke(None)
    assert reader.get(key) is None  # retired: the reader saw generation 1

    client.set(f"{namespace}:gen", 0)  # set back by someone without the secret

    assert reader.get(key) is None
    assert writer.get(key) is None
    # A process that saw the higher generation puts it back for the others.
    assert int(client.get(f"{namespace}:gen") or 0) == 1
    client.delete(f"{namespace}:gen")
    assert reader.get(key) is None
    assert int(client.get(f"{namespace}:gen") or 0) == 1


def test_revoke_everything_moves_past_the_highest_generation_seen(
    redis_url: str, namespace: str
) -> None:
    key = token_digest(GOOD)
    client = redis.Redis.from_url(redis_url)
    cache = shared(redis_url, namespace)
    client.set(f"{namespace}:gen", 5)
    cache.put(key, full_identity(), 60)
    assert cache.get(key) == full_identity()
    client.set(f"{namespace}:gen", 0)
    cache.revoke(None)
    assert int(client.get(f"{namespace}:gen") or 0) == 6
    assert cache.get(key) is None
    assert shared(redis_url, namespace).get(key) is None


def test_unreadable_generation_is_not_an_error(redis_url: str, namespace: str) -> None:
    key = token_digest(GOOD)
    client = redis.Redis.from_url(redis_url)
    cache = shared(redis_url, namespace)
    cache.put(key, full_identity(), 60)
    assert cache.get(key) == full_identity()
    cache.revoke(None)
    client.set(f"{namespace}:gen", "not a number")
    assert cache.get(key) is None  # a miss, not an exception
    fresh = shared(redis_url, namespace)
    assert fresh.get(key) is None
    cache.revoke(None)  # still works: the counter is written anew
    assert int(client.get(f"{namespace}:gen") or 0) == 2


def test_revocation_redis_did_not_record_still_holds_here(
    redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Revoked while Redis was down: entries written back later are not taken here."""
    clock = Clock(0.0)
    key, other_key = token_digest(GOOD), token_digest(OTHER)
    one_token = shared(redis_server.url, namespace, clock=clock, retry_interval=1)
    everything = shared(redis_server.url, namespace, clock=clock, retry_interval=1)
    one_token.put(key, full_identity(audit_ids=("audit-while-down",)), 60)
    one_token.put(other_key, full_identity(audit_ids=("other",)), 60)
    assert one_token.get(key) is not None and everything.get(other_key) is not None
    client = redis.Redis.from_url(redis_server.url)
    saved = {k: client.get(k) for k in (one_token._entry_key(key), one_token._entry_key(other_key))}

    redis_server.stop()
    one_token.revoke("audit-while-down")
    everything.revoke(None)
    assert len([r for r in _warnings(caplog, namespace) if "revocation" in r.getMessage()]) == 2
    redis_server.start()  # empty: write the old, authentic entries back, as a replay would
    client = redis.Redis.from_url(redis_server.url)
    for k, v in saved.items():
        assert v is not None
        client.set(k, v, ex=60)
    clock.now += 10  # past the back-off

    assert one_token.get(key) is None
    assert one_token.get(other_key) is not None  # only the revoked token
    assert everything.get(other_key) is None
    assert everything.get(key) is None


async def test_async_revocations_are_not_undone(redis_url: str, namespace: str) -> None:
    key = token_digest(GOOD)
    client = redis.Redis.from_url(redis_url)
    identity = full_identity(audit_ids=("async-marker",))
    revoker, reader = shared(redis_url, namespace), shared(redis_url, namespace)
    await revoker.aput(key, identity, 60)
    assert await reader.aget(key) == identity
    await revoker.arevoke("async-marker")
    assert await reader.aget(key) is None
    delete_markers(redis_url, namespace)
    assert await reader.aget(key) is None
    assert await revoker.aget(key) is None

    await revoker.aput(token_digest(OTHER), full_identity(), 60)
    assert await reader.aget(token_digest(OTHER)) == full_identity()
    await revoker.arevoke(None)
    assert await reader.aget(token_digest(OTHER)) is None
    client.delete(f"{namespace}:gen")
    assert await reader.aget(token_digest(OTHER)) is None
    assert await revoker.aget(token_digest(OTHER)) is None
    await revoker.aclose()
    await reader.aclose()


async def test_revoke_and_arevoke_report_a_failure_alike(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for audit_id in ("audit-1", None):
        sync_cache, async_cache = shared(url, namespace), shared(url, namespace)
        caplog.clear()
        sync_cache.revoke(audit_id)
        await async_cache.arevoke(audit_id)
        records = [r for r in _warnings(caplog, namespace) if "revocation" in r.getMessage()]
        assert len(records) == 2
        # One reporter: the same message, but for the client's own wording of the error.
        assert records[0].msg == records[1].msg
        assert [r.args[1] for r in records] == ["ConnectionError"] * 2  # type: ignore[index]
        assert "holds in this process" in records[0].getMessage()
        await async_cache.aclose()


def test_remembered_revocations_are_bounded(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound, forgetting a revocation means distrusting shared identities instead."""
    import authmw.redis

    monkeypatch.setattr(authmw.redis, "_REMEMBERED_REVOCATIONS", 2)
    clock = Clock()
    key = token_digest(GOOD)
    cache = shared(redis_url, namespace, timer=clock, max_ttl=60)
    for audit_id in ("first", "second", "third"):
        cache.revoke(audit_id)
    assert len(cache._revoked) == 2
    cache.put(key, full_identity(audit_ids=("unrelated",)), 30)
    assert cache.get(key) is None  # "first" may have been its audit id
    clock.now += 61  # every entry written before the revocations is past its time
    cache.put(key, full_identity(audit_ids=("unrelated",)), 30)
    assert cache.get(key) == full_identity(audit_ids=("unrelated",))
    cache.revoke("fourth")
    assert list(cache._revoked) == [cache._keys[0].marker("fourth")]  # the old ones expired


# -- Redis down, slow, back ---------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture, namespace: str) -> list[logging.LogRecord]:
    """Warnings of this namespace's caches (a cache's name shows it; another test's do not)."""
    return [
        r
        for r in caplog.records
        if r.name == "authmw.redis"
        and r.levelno >= logging.WARNING
        and f"namespace={namespace!r}" in r.getMessage()
    ]


def test_redis_down_then_back(
    redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authmw.redis")
    clock = Clock(0.0)
    tokens = {f"token-{n}-abcdef": full_identity(user_id=f"user-{n}") for n in range(6)}
    validator = Counting(tokens)
    # The back-off stays 5 s: a second failed subscription (its retry waits real
    # seconds) must not move the probe past the clock's +5.1 below.
    cache = shared(redis_server.url, namespace, clock=clock, retry_interval=5, max_retry_interval=5)
    other_cache = shared(redis_server.url, namespace)
    try:
        app = wsgi(validator, cache)
        assert request(app, "token-0-abcdef") == 200
        assert cache.available

        redis_server.stop()
        for n in (1, 2, 3):
            assert request(app, f"token-{n}-abcdef") == 200
        assert validator.calls == [f"token-{n}-abcdef" for n in range(4)]
        assert not cache.available
        assert len(_warnings(caplog, namespace)) == 1
        assert "unavailable" in _warnings(caplog, namespace)[0].getMessage()
        assert cache.stats.skipped > 0  # Redis was left alone during the back-off
        assert not any(t in caplog.text for t in tokens)

        redis_server.start()
        assert request(app, "token-4-abcdef") == 200  # still in back-off: not written
        clock.now += 5.1
        assert request(app, "token-5-abcdef") == 200  # probe succeeds, written
        assert cache.available
        assert len(_warnings(caplog, namespace)) == 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)

        other_validator = Counting()
        other = wsgi(other_validator, other_cache)
        assert request(other, "token-5-abcdef") == 200
        assert other_validator.calls == []
    finally:
        cache.close()  # their listeners must not report this Redis's end to later tests
        other_cache.close()


def test_redis_never_there_fails_no_request(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    validator = Counting({GOOD: full_identity()})
    cache = shared(url, namespace, retry_interval=0)
    app = wsgi(validator, cache, negative_cache_time=0)
    assert request(app, GOOD) == 200
    assert request(app, BAD) == 401
    cache.revoke("audit-1")  # logged, not raised
    assert cache.stats.errors >= 2
    assert len([r for r in _warnings(caplog, namespace) if "unavailable" in r.getMessage()]) == 1


def test_slow_redis_is_bounded_by_the_socket_timeout(namespace: str) -> None:
    """A server that accepts but never answers costs one socket timeout, then is skipped."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        validator = Counting({GOOD: full_identity(), OTHER: full_identity()})
        cache = shared(url, namespace, socket_timeout=0.05, retry_interval=30)
        app = wsgi(validator, cache)
        assert request(app, GOOD) == 200
        assert request(app, OTHER) == 200
        assert cache.stats.errors == 1
        assert cache.stats.skipped >= 2
        assert validator.calls == [GOOD, OTHER]


# -- asyncio ----------------------------------------------------------------------------------


async def asgi_request(app: ASGIAuthMiddleware, token: str) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app(http_scope(headers=[(b"x-auth-token", token.encode())]), receive, send)
    status: int = sent[0]["status"]
    return status


async def test_async_processes_share(redis_url: str, namespace: str) -> None:
    first_cache, second_cache = shared(redis_url, namespace), shared(redis_url, namespace)
    first_validator, second_validator = Counting({GOOD: full_identity()}), Counting()
    first = ASGIAuthMiddleware(ASGIRecorder(), validator=first_validator, shared_cache=first_cache)
    second = ASGIAuthMiddleware(
        ASGIRecorder(), validator=second_validator, shared_cache=second_cache
    )

    assert await asgi_request(first, GOOD) == 200
    assert await asgi_request(first, BAD) == 401
    assert await asgi_request(second, GOOD) == 200
    assert await asgi_request(second, BAD) == 401
    assert first_validator.calls == [GOOD, BAD]
    assert second_validator.calls == []
    assert second_cache.stats.hits == 1
    assert second_cache.stats.negative_hits == 1
    await first_cache.aclose()
    await second_cache.aclose()


async def test_async_concurrent_first_requests_one_call(redis_url: str, namespace: str) -> None:
    cache = shared(redis_url, namespace)
    validator = Counting({GOOD: full_identity()})
    app = ASGIAuthMiddleware(ASGIRecorder(), validator=validator, shared_cache=cache)
    codes = await asyncio.gather(*(asgi_request(app, GOOD) for _ in range(50)))
    assert codes == [200] * 50
    assert validator.calls == [GOOD]
    await cache.aclose()


async def test_async_redis_down_then_back(
    redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(0.0)
    validator = Counting(
        {GOOD: full_identity(), OTHER: full_identity(), BAD + "x": full_identity()}
    )
    cache = shared(redis_server.url, namespace, clock=clock, retry_interval=5, max_retry_interval=5)
    app = ASGIAuthMiddleware(ASGIRecorder(), validator=validator, shared_cache=cache)
    assert await asgi_request(app, GOOD) == 200

    redis_server.stop()
    assert await asgi_request(app, OTHER) == 200
    assert await asgi_request(app, BAD) == 401
    assert len(_warnings(caplog, namespace)) == 1
    assert not cache.available

    redis_server.start()
    clock.now += 5.1
    assert await asgi_request(app, BAD + "x") == 200
    assert cache.available
    assert cache.stats.writes == 2  # GOOD before the outage, the last token after it
    await cache.aclose()
    cache.close()

    reader = shared(redis_server.url, namespace)
    assert await reader.aget(token_digest(BAD + "x")) == full_identity()
    await reader.aclose()


async def test_async_revoke_and_direct_api(redis_url: str, namespace: str) -> None:
    cache = shared(redis_url, namespace)
    key = token_digest(GOOD)
    identity = full_identity(audit_ids=("async-audit",))
    assert await cache.aget(key) is None
    await cache.aput(key, identity, 60)
    assert await cache.aget(key) == identity
    await cache.arevoke("async-audit")
    assert await cache.aget(key) is None
    assert cache.stats.revoked == 1
    await cache.aput_invalid(token_digest(BAD), 60)
    with pytest.raises(InvalidToken):
        await cache.aget(token_digest(BAD))
    await cache.arevoke(None)
    assert await cache.aget(token_digest(BAD)) is None
    await cache.aclose()


def test_one_cache_serves_several_event_loops(redis_url: str, namespace: str) -> None:
    cache = shared(redis_url, namespace)
    key = token_digest(GOOD)

    async def roundtrip() -> Identity | None:
        await cache.aput(key, full_identity(), 60)
        found = await cache.aget(key)
        await cache.aclose()
        return found

    assert asyncio.run(roundtrip()) == full_identity()
    assert asyncio.run(roundtrip()) == full_identity()


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"secret": "too-short"}, "secret"),
        ({"secret": 12345}, "secret"),
        ({"secret": SECRET, "previous_secrets": ["short"]}, "previous_secrets"),
        ({"secret": SECRET, "namespace": ""}, "namespace"),
        ({"secret": SECRET, "namespace": "a b"}, "namespace"),
        ({"secret": SECRET, "max_ttl": 0}, "max_ttl"),
        ({"secret": SECRET, "socket_timeout": -1}, "socket_timeout"),
        ({"secret": SECRET, "retry_interval": float("nan")}, "retry_interval"),
    ],
)
def test_bad_options_fail_at_start_up(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisCache("redis://127.0.0.1:6379/0", **options)
    assert info.value.option == option


def test_bad_url_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisCache("http://127.0.0.1:6379/0", secret=SECRET)
    assert info.value.option == "url"
    with pytest.raises(ConfigurationError) as info:
        RedisCache(secret=SECRET)
    assert info.value.option == "url"


def test_repr_hides_the_password() -> None:
    cache = RedisCache("redis://user:hunter2-password@127.0.0.1:6379/0", secret=SECRET)
    assert "hunter2" not in repr(cache)
    assert SECRET not in repr(cache)


def test_import_authmw_does_not_import_redis() -> None:
    code = "import sys, authmw, authmw.redis; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_core_option(redis_url: str, namespace: str) -> None:
    cache = shared(redis_url, namespace)
    core = AuthCore(Counting({GOOD: full_identity()}), shared_cache=cache)
    assert core.cache.shared is cache
    assert core.authenticate(GOOD).identity == full_identity()
    assert cache.stats.writes == 1
