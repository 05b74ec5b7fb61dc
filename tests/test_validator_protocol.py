from __future__ import annotations

import asyncio
import contextvars
import threading
from datetime import datetime, timezone

import pytest
from helpers import GOOD, ASGIRecorder, call_asgi, full_identity, http_scope

from authmw import (
    ASGIAuthMiddleware,
    AsyncValidator,
    Identity,
    InMemoryValidator,
    InvalidToken,
    Validator,
)
from authmw.validators.base import validate_async

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class Blocking:
    """Blocking-only validator that holds its thread until the test lets it go."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []
        self.context: list[str] = []

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self.threads.append(threading.current_thread())
        self.context.append(request_id.get())
        self.started.set()
        # Only another task on the event loop sets this: if validate() ran on
        # the loop, nobody could, and the request would end in a 503.
        if not self.release.wait(timeout=10):
            raise RuntimeError("event loop was blocked")
        return Identity("u-" + token)


class Native:
    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise AssertionError("the blocking form must not be used under ASGI")

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self.threads.append(threading.current_thread())
        await asyncio.sleep(0)
        return Identity("u-" + token)


async def test_blocking_validator_runs_off_the_event_loop() -> None:
    validator = Blocking()
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator)
    request_id.set("req-42")
    request = asyncio.create_task(
        call_asgi(mw, http_scope(headers=[(b"x-auth-token", GOOD.encode())]))
    )
    progress = []

    async def other_task() -> None:
        # Runs while the validator is blocked: proof the loop is free.
        await asyncio.to_thread(validator.started.wait, 10)
        for i in range(3):
            progress.append(i)
            await asyncio.sleep(0)
        assert not request.done()
        validator.release.set()

    await asyncio.gather(other_task(), request)
    result = request.result()
    assert result.status == 200
    assert progress == [0, 1, 2]
    assert app.last["authmw.identity"].user_id == "u-" + GOOD
    assert validator.threads[0] is not threading.current_thread()
    assert validator.threads[0].name.startswith("authmw-validate")
    assert validator.context == ["req-42"]  # context variables follow the call


async def test_two_blocking_validations_run_at_once() -> None:
    barrier = threading.Barrier(2, timeout=10)

    class Meeting:
        def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
            barrier.wait()  # breaks (and fails the request) unless both run together
            return Identity("u-" + token)

    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=Meeting())
    results = await asyncio.gather(
        call_asgi(mw, http_scope(headers=[(b"x-auth-token", b"token-one")])),
        call_asgi(mw, http_scope(headers=[(b"x-auth-token", b"token-two")])),
    )
    assert [r.status for r in results] == [200, 200]


async def test_async_validator_is_awaited_on_the_loop() -> None:
    validator = Native()
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator)
    result = await call_asgi(mw, http_scope(headers=[(b"x-auth-token", GOOD.encode())]))
    assert result.status == 200
    assert validator.threads == [threading.current_thread()]


async def test_validate_async_helper() -> None:
    blocking = Blocking()
    blocking.release.set()
    assert (await validate_async(blocking, "t")).user_id == "u-t"
    assert blocking.threads[0] is not threading.current_thread()
    native = Native()
    assert (await validate_async(native, "t")).user_id == "u-t"
    assert native.threads == [threading.current_thread()]


def test_protocols() -> None:
    assert isinstance(InMemoryValidator(), Validator)
    assert isinstance(InMemoryValidator(), AsyncValidator)
    assert isinstance(Blocking(), Validator)
    assert not isinstance(Blocking(), AsyncValidator)
    assert isinstance(Native(), AsyncValidator)
    assert not isinstance(object(), Validator)


# -- InMemoryValidator ----------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_in_memory_add_validate_and_unknown() -> None:
    identity = full_identity()
    validator = InMemoryValidator({"t1": identity})
    assert validator.validate("t1") is identity
    with pytest.raises(InvalidToken):
        validator.validate("t2")
    validator.add("t2", Identity("u2"))
    assert validator.validate("t2").user_id == "u2"
    assert len(validator) == 2
    with pytest.raises(ValueError):
        validator.add("", Identity("u3"))


async def test_in_memory_avalidate() -> None:
    validator = InMemoryValidator({"t1": Identity("u1")})
    assert (await validator.avalidate("t1")).user_id == "u1"
    with pytest.raises(InvalidToken):
        await validator.avalidate("nope")


def test_in_memory_revoke_and_listener() -> None:
    calls: list[str | None] = []
    validator = InMemoryValidator(
        {"t1": Identity("u1", audit_ids=("a1", "chain")), "t2": Identity("u2")}
    )
    validator.add_revocation_listener(calls.append)
    assert validator.revoke("t1") is True
    with pytest.raises(InvalidToken):
        validator.validate("t1")
    assert validator.revoke("t1") is False
    assert validator.revoke("never-added") is False
    assert validator.revoke("t2") is True
    assert calls == ["a1", None]
    assert len(validator) == 0


def test_in_memory_expiry_with_injected_clock() -> None:
    clock = Clock(EXPIRES.timestamp() - 10)
    validator = InMemoryValidator({"t": Identity("u1", expires_at=EXPIRES)}, clock=clock)
    assert validator.validate("t").user_id == "u1"
    clock.now = EXPIRES.timestamp()
    with pytest.raises(InvalidToken, match="expired"):
        validator.validate("t")
    assert validator.validate("t", allow_expired=True).user_id == "u1"
    clock.now -= 0.001
    assert validator.validate("t").user_id == "u1"


def test_in_memory_leeway() -> None:
    clock = Clock(EXPIRES.timestamp() + 5)
    validator = InMemoryValidator({"t": Identity("u1", expires_at=EXPIRES)}, clock=clock, leeway=10)
    assert validator.validate("t").user_id == "u1"
    clock.now = EXPIRES.timestamp() + 11
    with pytest.raises(InvalidToken):
        validator.validate("t")


def test_in_memory_never_keeps_the_raw_token() -> None:
    secret = "in-memory-secret-token-6f1d"
    validator = InMemoryValidator({secret: Identity("u1")})
    assert secret not in repr(vars(validator))
    assert secret.encode() not in b"".join(validator._by_digest)


async def test_in_memory_expiry_through_the_middleware() -> None:
    clock = Clock(EXPIRES.timestamp() - 100)
    validator = InMemoryValidator({"t": Identity("u1", expires_at=EXPIRES)}, clock=clock)
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=validator, timer=clock)
    scope = http_scope(headers=[(b"x-auth-token", b"t")])
    assert (await call_asgi(mw, dict(scope))).status == 200
    clock.now = EXPIRES.timestamp() + 1
    assert (await call_asgi(mw, dict(scope))).status == 401


async def test_in_memory_revocation_through_the_middleware() -> None:
    validator = InMemoryValidator({"t": Identity("u1")})
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=validator)
    scope = http_scope(headers=[(b"x-auth-token", b"t")])
    assert (await call_asgi(mw, dict(scope))).status == 200
    assert (await call_asgi(mw, dict(scope))).status == 200  # now cached
    validator.revoke("t")
    assert (await call_asgi(mw, dict(scope))).status == 401
