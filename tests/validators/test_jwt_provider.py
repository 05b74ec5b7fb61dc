"""JWTValidator against a real OpenID Connect provider (oidc-provider, tests/_services.py).

Discovery, every signing algorithm, key rotation done by the provider,
10,000 tokens with made-up kids, outages with a warm key set, broken JWKS
answers. Requests are counted on the provider's side. Where a test spans
minutes of key age, the validator's clock is a :class:`Clock` the test moves
forward (the provider and the network stay real); nothing else is simulated.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from typing import Any

import pytest
from _services import OIDCProvider
from jwt_tokens import SigningKey, claims, token

from authmw import (
    CachedValidator,
    GuardedValidator,
    IdentityServiceUnavailable,
    InvalidToken,
    Issuer,
    JWTValidator,
)

RS = OIDCProvider.RESOURCES["RS256"]


class Clock:
    """A clock the test moves forward; starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def issuer(provider: OIDCProvider, **options: Any) -> Issuer:
    values: dict[str, Any] = {
        "audiences": list(provider.RESOURCES.values()),
        "token_type": "at+jwt",
    }
    values.update(options)
    return Issuer(provider.url, **values)


def forged(provider: OIDCProvider, kid: str) -> str:
    """A well-formed token for the provider's issuer and audience, under a made-up kid."""
    return token(ATTACKER, claims(iss=provider.url, aud=RS), header={"kid": kid, "typ": "at+jwt"})


ATTACKER = SigningKey.rsa("attacker")


def kid_of(text: str) -> str:
    header = text.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def test_discovery_then_every_algorithm(oidc_provider: OIDCProvider) -> None:
    v = JWTValidator(issuer(oidc_provider))
    for alg, resource in oidc_provider.RESOURCES.items():
        identity = v.validate(oidc_provider.token("admin", resource))
        assert identity.user_id == "admin"
        assert identity.user_name == "admin-bot"
        assert identity.roles == ("admin", "member", "reader")
        assert identity.extra["claims"]["aud"] == resource, alg
        assert identity.extra["client_id"] == "admin"
        again = asyncio.run(v.avalidate(oidc_provider.token("reader", resource, "items:read")))
        assert again.roles == ("reader", "items:read")
    # One discovery, one JWKS fetch for all of it.
    assert oidc_provider.stats() | {"token": 0} == {"discovery": 1, "jwks": 1, "token": 0}


def test_jwks_uri_given_needs_no_discovery(oidc_provider: OIDCProvider) -> None:
    v = JWTValidator(issuer(oidc_provider, jwks_uri=f"{oidc_provider.url}/jwks"))
    assert v.validate(oidc_provider.token()).user_id == "reader"
    assert oidc_provider.stats()["discovery"] == 0


def test_other_audiences_and_id_token_types_are_refused(oidc_provider: OIDCProvider) -> None:
    v = JWTValidator(issuer(oidc_provider, audiences=RS))
    assert v.validate(oidc_provider.token(resource=RS))
    with pytest.raises(InvalidToken, match="aud"):
        v.validate(oidc_provider.token(resource=oidc_provider.OTHER_AUDIENCE))
    with pytest.raises(InvalidToken, match="aud"):
        v.validate(oidc_provider.token(resource=oidc_provider.RESOURCES["ES256"]))
    only_rs = JWTValidator(issuer(oidc_provider, algorithms=["RS256"]))
    with pytest.raises(InvalidToken, match="not allowed"):
        only_rs.validate(oidc_provider.token(resource=oidc_provider.RESOURCES["ES256"]))


def test_first_tokens_from_threads_and_tasks_share_one_fetch(oidc_provider: OIDCProvider) -> None:
    v = JWTValidator(issuer(oidc_provider))
    tokens = [oidc_provider.token(resource=r) for r in oidc_provider.RESOURCES.values()]
    oidc_provider.reset_stats()
    barrier = threading.Barrier(33)

    def in_thread(n: int) -> str:
        barrier.wait()
        return v.validate(tokens[n % len(tokens)]).user_id

    async def in_tasks() -> list[str]:
        barrier.wait()
        found = await asyncio.gather(*(v.avalidate(t) for t in tokens * 8))
        return [i.user_id for i in found]

    with concurrent.futures.ThreadPoolExecutor(33) as pool:
        threads = [pool.submit(in_thread, n) for n in range(32)]
        tasks = pool.submit(asyncio.run, in_tasks())
        users = [f.result() for f in threads] + tasks.result()
    assert users == ["reader"] * 64
    assert oidc_provider.stats() == {"discovery": 1, "jwks": 1, "token": 0}


def test_rotation_new_key_at_once_retired_key_after_the_next_fetch(
    oidc_provider: OIDCProvider,
) -> None:
    clock = Clock()
    v = JWTValidator(issuer(oidc_provider), keys_max_age=300, min_refresh_interval=30, clock=clock)
    cache = CachedValidator(GuardedValidator(v), timer=clock)
    old_token = oidc_provider.token("admin")
    assert cache.validate(old_token).user_id == "admin"  # cached from now on
    old_kid = oidc_provider.signing_kid()

    # The provider publishes a new key and signs with it: the first token is accepted.
    new_kid = oidc_provider.publish_key("RS256")
    oidc_provider.sign_with(new_kid)
    clock.advance(31)  # the last fetch was at start-up; one more is allowed now
    new_token = oidc_provider.token("reader")
    assert kid_of(new_token) == new_kid
    assert cache.validate(new_token).user_id == "reader"
    assert oidc_provider.stats()["jwks"] == 2

    # The old key is retired: its tokens work until the next successful fetch...
    oidc_provider.retire_key(old_kid)
    assert v.validate(old_token).user_id == "admin"
    assert cache.validate(old_token).user_id == "admin"
    # ...which the key set's age brings: then they stop, cached or not.
    clock.advance(301)
    assert v.validate(oidc_provider.token("reader")).user_id == "reader"
    assert oidc_provider.stats()["jwks"] == 3
    with pytest.raises(InvalidToken, match="unknown key"):
        v.validate(old_token)
    with pytest.raises(InvalidToken):
        cache.validate(old_token)
    assert cache.stats.revalidated == 0  # dropped, not voided in flight
    assert cache.validate(new_token).user_id == "reader"


def test_new_key_via_unknown_kid_without_waiting_for_the_key_age(
    oidc_provider: OIDCProvider,
) -> None:
    v = JWTValidator(issuer(oidc_provider), min_refresh_interval=1.0)
    assert v.validate(oidc_provider.token())
    oidc_provider.sign_with(oidc_provider.publish_key("ES256"))
    time.sleep(1.0)  # the start-up fetch counts for min_refresh_interval
    fresh = oidc_provider.token("admin", oidc_provider.RESOURCES["ES256"])
    assert asyncio.run(v.avalidate(fresh)).user_id == "admin"
    assert oidc_provider.stats()["jwks"] == 2


def test_10000_unknown_kids_one_fetch_per_interval(oidc_provider: OIDCProvider) -> None:
    """The clock moves 10 intervals; threads and tasks send 1,000 made-up kids in each."""
    clock = Clock()
    v = JWTValidator(issuer(oidc_provider), min_refresh_interval=30, clock=clock)
    guarded = GuardedValidator(v, max_concurrency=64)
    good = oidc_provider.token()
    assert guarded.validate(good)
    oidc_provider.reset_stats()
    answers: dict[str, int] = {}
    lock = threading.Lock()

    def count(outcome: str) -> None:
        with lock:
            answers[outcome] = answers.get(outcome, 0) + 1

    def one(kid: str) -> None:
        try:
            guarded.validate(forged(oidc_provider, kid))
            count("accepted")
        except InvalidToken:
            count("401")
        except IdentityServiceUnavailable:
            count("503")

    async def many(kids: list[str]) -> None:
        async def one_async(kid: str) -> None:
            try:
                await guarded.avalidate(forged(oidc_provider, kid))
                count("accepted")
            except InvalidToken:
                count("401")
            except IdentityServiceUnavailable:
                count("503")

        await asyncio.gather(*(one_async(kid) for kid in kids))

    intervals = 10
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(intervals):
            clock.advance(30)
            kids = [uuid.uuid4().hex for _ in range(1000)]
            batch = [pool.submit(one, kid) for kid in kids[:500]]
            asyncio.run(many(kids[500:]))
            for future in batch:
                future.result()
    assert answers == {"401": 10_000}
    # At most one JWKS request per min_refresh_interval; here exactly one per interval.
    assert oidc_provider.stats()["jwks"] == intervals
    assert guarded.breaker.state == "closed"
    assert guarded.validate(good).user_id == "reader"


def test_unknown_kids_at_full_speed_respect_the_interval(oidc_provider: OIDCProvider) -> None:
    """Real time: 10,000 made-up kids from 8 threads as fast as they go."""
    interval = 0.05
    v = JWTValidator(issuer(oidc_provider), min_refresh_interval=interval)
    assert v.validate(oidc_provider.token())
    oidc_provider.reset_stats()
    tokens = [forged(oidc_provider, uuid.uuid4().hex) for _ in range(10_000)]
    refused = 0

    def run(chunk: list[str]) -> int:
        n = 0
        for text in chunk:
            try:
                v.validate(text)
            except InvalidToken:
                n += 1
        return n

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        refused = sum(pool.map(run, [tokens[i::8] for i in range(8)]))
    elapsed = time.monotonic() - started
    assert refused == 10_000
    fetches = oidc_provider.stats()["jwks"]
    assert fetches <= elapsed / interval + 1, (fetches, elapsed)


def test_outage_with_warm_keys_valid_until_max_stale_then_503(
    oidc_provider: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    v = JWTValidator(
        issuer(oidc_provider),
        keys_max_age=60,
        min_refresh_interval=10,
        max_stale=300,
        clock=clock,
    )
    tokens = [oidc_provider.token(c, r) for c in ("reader", "admin") for r in (RS,)] + [
        oidc_provider.token("admin", oidc_provider.RESOURCES["ES256"])
    ]
    assert all(v.validate(t) for t in tokens)  # warm
    oidc_provider.stop()

    rejected = 0
    elapsed = 0.0
    with caplog.at_level(logging.WARNING, logger="authmw.jwt"):
        while elapsed + 7 <= 300:  # past keys_max_age (60 s), up to max_stale
            clock.advance(7)
            elapsed += 7
            for n, text in enumerate(tokens):
                try:
                    if n % 2:
                        asyncio.run(v.avalidate(text))
                    else:
                        v.validate(text)
                except (InvalidToken, IdentityServiceUnavailable):
                    rejected += 1
            # A made-up kid during the outage is still a 401, never a 503.
            with pytest.raises(InvalidToken):
                v.validate(forged(oidc_provider, uuid.uuid4().hex))
    assert rejected == 0
    failed_fetches = [r for r in caplog.records if "cannot fetch the keys" in r.getMessage()]
    # Retried at most once per min_refresh_interval while down.
    assert 1 <= len(failed_fetches) <= 300 / 10

    clock.advance(301 - elapsed)
    for text in tokens:
        with pytest.raises(IdentityServiceUnavailable):
            v.validate(text)
        with pytest.raises(IdentityServiceUnavailable):
            asyncio.run(v.avalidate(text))

    oidc_provider.start()  # back, with the same keys
    clock.advance(10)
    assert all(v.validate(t) for t in tokens)


def test_cold_start_with_the_provider_down_is_503_not_401(oidc_provider: OIDCProvider) -> None:
    good = oidc_provider.token()
    oidc_provider.stop()
    v = JWTValidator(issuer(oidc_provider), min_refresh_interval=0.2)
    with pytest.raises(IdentityServiceUnavailable):
        v.validate(good)
    with pytest.raises(IdentityServiceUnavailable):
        asyncio.run(v.avalidate(forged(oidc_provider, "x")))
    oidc_provider.start()
    time.sleep(0.2)
    assert v.validate(good).user_id == "reader"


@pytest.mark.parametrize("fault", ["500", "redirect", "huge", "garbage"])
def test_broken_jwks_answers_keep_the_last_good_keys(
    oidc_provider: OIDCProvider, fault: str
) -> None:
    clock = Clock()
    v = JWTValidator(issuer(oidc_provider), keys_max_age=60, min_refresh_interval=10, clock=clock)
    good = oidc_provider.token()
    assert v.validate(good)
    old_kid = oidc_provider.signing_kid()
    oidc_provider.sign_with(oidc_provider.publish_key())
    oidc_provider.jwks_fault(fault)
    clock.advance(61)
    assert v.validate(good).user_id == "reader"  # the refresh failed; the old set works
    with pytest.raises(InvalidToken):
        v.validate(oidc_provider.token())  # signed with the new key: unknown until a fetch works
    assert oidc_provider.stats()["jwks"] >= 2
    oidc_provider.jwks_fault("ok")
    oidc_provider.retire_key(old_kid)
    clock.advance(10)
    assert v.validate(oidc_provider.token()).user_id == "reader"
    with pytest.raises(InvalidToken):
        v.validate(good)  # its key is gone from a good answer


def test_a_hung_provider_costs_a_bounded_wait_and_strands_nobody() -> None:
    """A listener that accepts connections and never answers: timeouts, then 503 for all."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        v = JWTValidator(Issuer(url, audiences=RS), timeout=0.5, http_request_max_retries=0)
        text = token(ATTACKER, claims(iss=url, aud=RS))

        async def both() -> list[Any]:
            leader = asyncio.ensure_future(v.avalidate(text))
            await asyncio.sleep(0.05)
            others = [asyncio.ensure_future(v.avalidate(text)) for _ in range(10)]
            await asyncio.sleep(0.05)
            leader.cancel()
            return await asyncio.gather(leader, *others, return_exceptions=True)

        results = asyncio.run(both())
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(isinstance(r, IdentityServiceUnavailable) for r in results[1:])
        with pytest.raises(IdentityServiceUnavailable):
            v.validate(text)
    finally:
        server.close()
