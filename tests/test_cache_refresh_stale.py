"""refresh_after (background re-validation of old entries) and stale_if_error (outages)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import Counting, call_wsgi, environ, full_identity

from authmw import (
    AuthCore,
    CachedValidator,
    IdentityServiceUnavailable,
    InvalidToken,
    WSGIAuthMiddleware,
)

TOKEN = "refresh-token-0123456789"
OTHER = "other-token-0123456789"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gated(Counting):
    """A counting validator whose calls can be held at a gate."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__(answers)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.left = threading.Event()

    def validate(self, token: str, *, allow_expired: bool = False) -> Any:
        self.entered.set()
        self.gate.wait(10)
        try:
            return super().validate(token, allow_expired=allow_expired)
        finally:
            self.left.set()


def refreshed(cache: CachedValidator, validator: Gated) -> None:
    assert validator.left.wait(10), "no background re-validation happened"
    for _ in range(1000):  # the refresh stores its answer right after the call
        if not cache._refreshing:
            return
        threading.Event().wait(0.005)
    raise AssertionError("the re-validation never finished")


# -- refresh_after ------------------------------------------------------------------------------


def test_a_hit_from_header_bytes_refreshes_with_the_token_as_text() -> None:
    clock = Clock()
    validator = Gated({TOKEN: full_identity(roles=("member", "admin"))})
    cache = CachedValidator(validator, cache_time=300, refresh_after=60, timer=clock)
    cache.validate(TOKEN)
    clock.now += 61
    validator.answers[TOKEN] = full_identity(roles=("member",))
    found = cache.hit(TOKEN.encode())
    assert found is not None and found.has_role("admin")  # served at once
    refreshed(cache, validator)
    assert validator.calls == [TOKEN, TOKEN]  # the validator got a str, as always
    assert all(type(call) is str for call in validator.calls)
    found = cache.hit(TOKEN.encode())
    assert found is not None and not found.has_role("admin")


def test_an_old_entry_is_served_and_refreshed_once_in_the_background() -> None:
    clock = Clock()
    validator = Gated({TOKEN: full_identity(roles=("member", "admin"))})
    cache = CachedValidator(validator, cache_time=300, refresh_after=60, timer=clock)
    assert cache.validate(TOKEN).has_role("admin")
    assert validator.calls == [TOKEN]
    clock.now += 30
    assert cache.validate(TOKEN).has_role("admin")  # young entry: no refresh
    assert len(validator.calls) == 1
    validator.answers[TOKEN] = full_identity(roles=("member",))  # admin role removed
    validator.gate.clear()
    validator.left.clear()
    clock.now += 40
    for _ in range(20):  # served at once, from the cache, while one refresh runs
        assert cache.validate(TOKEN).has_role("admin")
    assert validator.entered.wait(10)
    validator.gate.set()
    refreshed(cache, validator)
    assert len(validator.calls) == 2  # one re-validation for twenty hits
    assert not cache.validate(TOKEN).has_role("admin")
    assert cache.stats.refreshed == 1


def test_a_refresh_that_finds_the_token_invalid_evicts_it() -> None:
    clock = Clock()
    validator = Gated({TOKEN: full_identity()})
    cache = CachedValidator(validator, refresh_after=10, timer=clock)
    cache.validate(TOKEN)
    del validator.answers[TOKEN]
    validator.left.clear()
    clock.now += 11
    assert cache.validate(TOKEN) is not None  # the hit that triggers the refresh
    refreshed(cache, validator)
    with pytest.raises(InvalidToken):
        cache.validate(TOKEN)


def test_an_outage_during_a_refresh_keeps_the_entry() -> None:
    clock = Clock()
    validator = Gated({TOKEN: full_identity()})
    cache = CachedValidator(validator, refresh_after=10, timer=clock)
    cache.validate(TOKEN)
    validator.error = IdentityServiceUnavailable("down")
    validator.left.clear()
    clock.now += 11
    cache.validate(TOKEN)
    refreshed(cache, validator)
    validator.error = None
    calls = len(validator.calls)
    assert cache.validate(TOKEN) is not None  # still cached (and refreshed again)
    assert cache.stats.refreshed == 0
    assert len(validator.calls) >= calls


# -- stale_if_error ----------------------------------------------------------------------------


@pytest.fixture
def outage_cache() -> tuple[CachedValidator, Counting, Clock]:
    clock = Clock()
    validator = Counting({TOKEN: full_identity(), OTHER: full_identity(user_id="u-other")})
    cache = CachedValidator(
        validator, cache_time=60, negative_cache_time=5, stale_if_error=3600, timer=clock
    )
    return cache, validator, clock


def test_an_identity_is_served_stale_through_an_outage(
    outage_cache: tuple[CachedValidator, Counting, Clock],
) -> None:
    cache, validator, clock = outage_cache
    assert not cache.validate(TOKEN).stale
    validator.error = IdentityServiceUnavailable("down")
    clock.now += 600  # past cache_time
    served = cache.validate(TOKEN)
    assert served.stale and served.user_id == "u-123"
    assert cache.stats.stale_served == 1
    with pytest.raises(IdentityServiceUnavailable):
        cache.validate("never-seen-token-0123")  # unknown tokens: 503
    clock.now += 3600  # past the bound: 503, never 401
    with pytest.raises(IdentityServiceUnavailable):
        cache.validate(TOKEN)
    validator.error = None
    assert not cache.validate(TOKEN).stale  # recovered without restart


def test_rejected_and_revoked_tokens_stay_rejected_through_the_outage(
    outage_cache: tuple[CachedValidator, Counting, Clock],
) -> None:
    cache, validator, clock = outage_cache
    cache.validate(OTHER)
    with pytest.raises(InvalidToken):
        cache.validate("rejected-token-0123456")
    cache.invalidate("audit-1")  # full_identity()'s audit id: OTHER revoked...
    validator.error = IdentityServiceUnavailable("down")
    clock.now += 600
    with pytest.raises(InvalidToken):
        cache.validate("rejected-token-0123456")  # rejected before: 401, not 503
    with pytest.raises(InvalidToken):
        cache.validate(OTHER)  # revoked before: 401, not stale
    assert cache.stats.stale_served == 0


def test_an_expired_token_is_never_served_stale(
    outage_cache: tuple[CachedValidator, Counting, Clock],
) -> None:
    from datetime import datetime, timezone

    cache, validator, clock = outage_cache
    soon = datetime.fromtimestamp(clock.now + 120, timezone.utc)
    validator.answers[TOKEN] = full_identity(expires_at=soon)
    cache.validate(TOKEN)
    validator.error = IdentityServiceUnavailable("down")
    clock.now += 600
    with pytest.raises(IdentityServiceUnavailable):
        cache.validate(TOKEN)


def test_stale_identities_through_the_middleware_with_the_circuit_open() -> None:
    clock = Clock()
    validator = Counting({TOKEN: full_identity()})
    app_seen: list[Any] = []

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        app_seen.append(env["authmw.identity"])
        start_response("200 OK", [])
        return [b"ok"]

    middleware = WSGIAuthMiddleware(
        app, validator, cache_time=60, stale_if_error=3600, failure_threshold=1, timer=clock
    )
    request = environ(headers=[("X-Auth-Token", TOKEN)])
    assert call_wsgi(middleware, dict(request)).code == 200
    validator.error = IdentityServiceUnavailable("down")
    clock.now += 120
    for _ in range(3):  # first an outage, then the open circuit: both serve stale
        assert call_wsgi(middleware, dict(request)).code == 200
    assert [identity.stale for identity in app_seen] == [False, True, True, True]
    assert len(validator.calls) == 2
    assert middleware.stats()["stale_served"] == 3
    unknown = environ(headers=[("X-Auth-Token", "never-seen-token-0123")])
    assert call_wsgi(middleware, unknown).code == 503


def test_options_are_checked() -> None:
    from authmw import ConfigurationError

    for bad in ({"refresh_after": 0}, {"refresh_after": -1}, {"stale_if_error": float("nan")}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            AuthCore(Counting(), **bad)
