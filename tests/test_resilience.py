from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from authmw import (
    CircuitBreaker,
    GuardedValidator,
    Identity,
    IdentityServiceUnavailable,
    InMemoryValidator,
    InvalidToken,
    WSGIAuthMiddleware,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self.calls += 1
        if self.down:
            raise IdentityServiceUnavailable("connection refused")
        if token == "bad":
            raise InvalidToken("no")
        return Identity("u-" + token)


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    inner = Flaky()
    guarded = GuardedValidator(inner, breaker=CircuitBreaker(3, 10.0, timer=clock))
    for _ in range(3):
        with pytest.raises(IdentityServiceUnavailable):
            guarded.validate("t")
    assert inner.calls == 3
    assert guarded.breaker.state == "open"
    for _ in range(20):
        with pytest.raises(IdentityServiceUnavailable, match="circuit open"):
            guarded.validate("t")
    assert inner.calls == 3  # fast failures never reached the identity service
    assert guarded.stats.rejected_open == 20

    clock.now += 10
    assert guarded.breaker.state == "half-open"
    with pytest.raises(IdentityServiceUnavailable):
        guarded.validate("t")  # the probe fails: open again
    assert inner.calls == 4
    assert guarded.breaker.state == "open"

    clock.now += 10
    inner.down = False
    assert guarded.validate("t").user_id == "u-t"
    assert guarded.breaker.state == "closed"
    assert guarded.validate("x").user_id == "u-x"


def test_invalid_token_is_a_healthy_answer() -> None:
    inner = Flaky()
    inner.down = False
    guarded = GuardedValidator(inner, breaker=CircuitBreaker(2, 10.0))
    for _ in range(10):
        with pytest.raises(InvalidToken):
            guarded.validate("bad")
    assert guarded.breaker.state == "closed"
    assert guarded.stats.invalid == 10


def test_failures_must_be_consecutive() -> None:
    inner = Flaky()
    guarded = GuardedValidator(inner, breaker=CircuitBreaker(3, 10.0))
    for _ in range(5):
        inner.down = True
        for _ in range(2):
            with pytest.raises(IdentityServiceUnavailable):
                guarded.validate("t")
        inner.down = False
        guarded.validate("t")
    assert guarded.breaker.state == "closed"


def test_only_one_probe_at_a_time_when_half_open() -> None:
    clock = Clock()
    release = threading.Event()
    entered = threading.Event()

    class Slow:
        calls = 0

        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            Slow.calls += 1
            entered.set()
            assert release.wait(10)
            return Identity("u")

    breaker = CircuitBreaker(1, 5.0, timer=clock)
    breaker.on_failure()
    clock.now += 5
    guarded = GuardedValidator(Slow(), breaker=breaker)
    probe = threading.Thread(target=guarded.validate, args=("t",))
    probe.start()
    assert entered.wait(10)
    with pytest.raises(IdentityServiceUnavailable, match="probing"):
        guarded.validate("t")
    release.set()
    probe.join(10)
    assert Slow.calls == 1
    assert breaker.state == "closed"


def test_concurrency_bound_turns_excess_callers_away() -> None:
    release = threading.Event()
    inside = threading.Semaphore(0)
    peak = {"now": 0, "max": 0}
    lock = threading.Lock()

    class Stalled:
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            with lock:
                peak["now"] += 1
                peak["max"] = max(peak["max"], peak["now"])
            inside.release()
            release.wait(10)
            with lock:
                peak["now"] -= 1
            return Identity("u")

    guarded = GuardedValidator(Stalled(), max_concurrency=2, acquire_timeout=0.05)
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(guarded.validate("t"))
        except IdentityServiceUnavailable as exc:
            outcomes.append(exc)

    holders = [threading.Thread(target=call) for _ in range(2)]
    for t in holders:
        t.start()
    for _ in range(2):
        assert inside.acquire(timeout=10)
    extra = [threading.Thread(target=call) for _ in range(5)]
    for t in extra:
        t.start()
    for t in extra:
        t.join(10)
    assert sum(isinstance(o, IdentityServiceUnavailable) for o in outcomes) == 5
    release.set()
    for t in holders:
        t.join(10)
    assert peak["max"] == 2
    assert guarded.stats.rejected_busy == 5
    assert sum(isinstance(o, Identity) for o in outcomes) == 2


async def test_async_concurrency_bound() -> None:
    release = asyncio.Event()
    running = 0
    peak = 0

    class Stalled:
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            raise AssertionError("async path expected")

        async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            return Identity("u")

    guarded = GuardedValidator(Stalled(), max_concurrency=3, acquire_timeout=0.05)
    tasks = [asyncio.create_task(guarded.avalidate(f"t{i}")) for i in range(8)]
    # Release the holders only once the five others gave up (not after a fixed
    # sleep, which a stalled loop could outlast before their timeouts start).
    pending: set[asyncio.Task[Identity]] = set(tasks)
    while len(pending) > 3:
        done, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break  # the counts below say what went wrong
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3
    assert sum(isinstance(r, Identity) for r in results) == 3
    assert sum(isinstance(r, IdentityServiceUnavailable) for r in results) == 5


def test_middleware_answers_503_fast_while_open_and_keeps_serving_cached_tokens() -> None:
    backend = InMemoryValidator()
    backend.add("cached", Identity("u-cached"))
    state = {"down": False, "calls": 0}

    class Switchable:
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            state["calls"] += 1
            if state["down"]:
                raise IdentityServiceUnavailable("down")
            return backend.validate(token)

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"ok"]

    mw = WSGIAuthMiddleware(
        app, Switchable(), failure_threshold=2, circuit_cooldown=30, retry_after=1
    )
    client = httpx.Client(transport=httpx.WSGITransport(app=mw), base_url="http://app")
    assert client.get("/", headers={"X-Auth-Token": "cached"}).status_code == 200
    state["down"] = True
    for i in range(2):
        assert client.get("/", headers={"X-Auth-Token": f"new{i}"}).status_code == 503
    calls = state["calls"]
    response = client.get("/", headers={"X-Auth-Token": "new-again"})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 29  # the cooldown, not the default
    assert json.loads(response.content)["error"]["code"] == 503
    assert state["calls"] == calls  # open circuit: no call went out
    assert client.get("/", headers={"X-Auth-Token": "cached"}).status_code == 200
    stats = mw.stats()
    assert stats["circuit_state"] == "open"
    assert stats["validations_rejected_open"] == 1


def test_caller_queued_for_a_slot_is_turned_away_if_the_circuit_opened_meanwhile() -> None:
    release = threading.Event()
    inside = threading.Event()
    calls = {"n": 0}

    class Stalled:
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            calls["n"] += 1
            inside.set()
            release.wait(10)
            raise IdentityServiceUnavailable("timed out")

    breaker = CircuitBreaker(1, 60.0)
    guarded = GuardedValidator(Stalled(), breaker=breaker, max_concurrency=1, acquire_timeout=10)
    outcomes: list[BaseException] = []

    def call() -> None:
        try:
            guarded.validate("t")
        except IdentityServiceUnavailable as exc:
            outcomes.append(exc)

    holder = threading.Thread(target=call)
    holder.start()
    assert inside.wait(10)
    queued = threading.Thread(target=call)
    queued.start()
    release.set()  # the holder fails, the breaker opens, the queued caller gets the slot
    holder.join(10)
    queued.join(10)
    assert calls["n"] == 1
    assert breaker.state == "open"
    assert any("circuit open" in str(e) for e in outcomes)
