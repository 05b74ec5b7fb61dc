"""Outage behaviour around any validator: a circuit breaker and a bound on calls in flight.

After ``failure_threshold`` consecutive :class:`IdentityServiceUnavailable`
answers the breaker opens: calls fail at once for ``cooldown`` seconds, then
one probe is let through (half-open); its success closes the breaker, its
failure opens it again. At most ``max_concurrency`` validations run at once;
a caller that cannot get a slot within ``acquire_timeout`` gets a 503, so a
stalled identity service cannot pile up worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from . import _checks, _fork
from .errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from .identity import Identity
from .validators.base import Validator, ValidatorWrapper, validate_async

__all__ = ["CircuitBreaker", "GuardedValidator", "ValidationStats"]

log = logging.getLogger("authmw.resilience")

CircuitState = Literal["closed", "open", "half-open"]


class ValidationStats:
    """Outcomes and latency of the calls that reached the validator."""

    __slots__ = (
        "error",
        "invalid",
        "latency_max",
        "latency_total",
        "ok",
        "rejected_busy",
        "rejected_open",
        "unavailable",
    )

    def __init__(self) -> None:
        self.ok = 0
        self.invalid = 0
        self.unavailable = 0
        self.error = 0
        self.rejected_open = 0
        self.rejected_busy = 0
        self.latency_total = 0.0
        self.latency_max = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.latency_total += seconds
        if seconds > self.latency_max:
            self.latency_max = seconds

    @property
    def calls(self) -> int:
        return self.ok + self.invalid + self.unavailable + self.error

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {name: getattr(self, name) for name in self.__slots__}
        out["calls"] = self.calls
        return out


class CircuitBreaker:
    """Counts consecutive failures and decides whether a call may go out."""

    @_checks.checked_keywords
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = _checks.integer("failure_threshold", failure_threshold, 1)
        self.cooldown = _checks.number("circuit_cooldown", cooldown)
        self._timer = _checks.function("timer", timer)
        self._lock = threading.Lock()
        _fork.reset_after_fork(self)
        self._failures = 0
        self._opened_at = 0.0
        self._state: CircuitState = "closed"
        self._probing = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            if self._state == "open" and self._timer() - self._opened_at >= self.cooldown:
                return "half-open"
            return self._state

    def retry_after(self) -> float:
        """Seconds until the next probe may go out (0 when closed)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self.cooldown - (self._timer() - self._opened_at))

    def _after_fork(self) -> None:
        """In a forked child: a new lock (see :mod:`authmw._fork`)."""
        self._lock = threading.Lock()

    def before_call(self) -> None:
        """Raise :class:`IdentityServiceUnavailable` if the breaker is open."""
        with self._lock:
            if self._state == "closed":
                return
            if self._state == "open":
                if self._timer() - self._opened_at < self.cooldown:
                    raise IdentityServiceUnavailable("identity service circuit open")
                self._state = "half-open"
                self._probing = False
            if self._probing:
                raise IdentityServiceUnavailable("identity service circuit half-open, probing")
            self._probing = True

    def is_open(self) -> bool:
        """True while calls are refused (open and still cooling down)."""
        with self._lock:
            return self._state == "open" and self._timer() - self._opened_at < self.cooldown

    def on_success(self) -> None:
        with self._lock:
            if self._state != "closed":
                log.warning("identity service answers again; circuit closed")
            self._state = "closed"
            self._failures = 0
            self._probing = False

    def on_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state == "half-open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            ):
                if self._state == "closed":
                    log.warning(
                        "identity service failed %d times in a row; circuit open for %.1fs",
                        self._failures,
                        self.cooldown,
                    )
                self._state = "open"
                self._opened_at = self._timer()

    def on_abandon(self) -> None:
        """A probe ended with neither answer (e.g. cancelled): let another probe go."""
        with self._lock:
            self._probing = False


class GuardedValidator(ValidatorWrapper):
    """Wraps a validator with a :class:`CircuitBreaker` and a concurrency bound."""

    @_checks.checked_keywords
    def __init__(
        self,
        validator: Validator,
        *,
        breaker: CircuitBreaker | None = None,
        max_concurrency: int = 32,
        acquire_timeout: float = 5.0,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError("breaker", f"must be a CircuitBreaker, got {breaker!r}")
        self.validator = validator
        self.breaker = breaker or CircuitBreaker()
        self.max_concurrency = _checks.integer("max_concurrency", max_concurrency, 1)
        self.acquire_timeout = _checks.number("acquire_timeout", acquire_timeout)
        self.stats = ValidationStats()
        self._clock = time.perf_counter
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._async_slots: dict[int, asyncio.Semaphore] = {}
        self.in_flight = 0

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self._before_call()
        if not self._slots.acquire(timeout=self.acquire_timeout):
            self.breaker.on_abandon()
            self.stats.rejected_busy += 1
            raise IdentityServiceUnavailable("too many validations in flight")
        if self.breaker.is_open():
            # The circuit opened while we queued for a slot: do not join the pile.
            self._slots.release()
            self.stats.rejected_open += 1
            raise IdentityServiceUnavailable("identity service circuit open")
        self.in_flight += 1
        started = self._clock()
        try:
            identity = self.validator.validate(token, allow_expired=allow_expired)
        except BaseException as exc:
            self._record_failure(exc, started)
            raise
        else:
            self._record_success(started)
            return identity
        finally:
            self.in_flight -= 1
            self._slots.release()

    def _before_call(self) -> None:
        try:
            self.breaker.before_call()
        except IdentityServiceUnavailable:
            self.stats.rejected_open += 1
            raise

    def _record_success(self, started: float) -> None:
        self.stats.observe("ok", self._clock() - started)
        self.breaker.on_success()

    def _record_failure(self, exc: BaseException, started: float) -> None:
        if isinstance(exc, IdentityServiceUnavailable):
            self.stats.observe("unavailable", self._clock() - started)
            self.breaker.on_failure()
        elif isinstance(exc, InvalidToken):
            # A definite "no" is a healthy answer from the identity service.
            self.stats.observe("invalid", self._clock() - started)
            self.breaker.on_success()
        elif isinstance(exc, Exception):
            self.stats.observe("error", self._clock() - started)
            self.breaker.on_failure()
        else:  # cancelled or interrupted: no answer either way
            self.breaker.on_abandon()

    def _async_semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        semaphore = self._async_slots.get(loop_id)
        if semaphore is None:
            semaphore = self._async_slots[loop_id] = asyncio.Semaphore(self.max_concurrency)
        return semaphore

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        self._before_call()
        semaphore = self._async_semaphore()
        try:
            await asyncio.wait_for(semaphore.acquire(), self.acquire_timeout)
        except asyncio.TimeoutError:
            self.breaker.on_abandon()
            self.stats.rejected_busy += 1
            raise IdentityServiceUnavailable("too many validations in flight") from None
        except BaseException:
            self.breaker.on_abandon()
            raise
        if self.breaker.is_open():
            semaphore.release()
            self.stats.rejected_open += 1
            raise IdentityServiceUnavailable("identity service circuit open")
        self.in_flight += 1
        started = self._clock()
        try:
            identity = await validate_async(self.validator, token, allow_expired=allow_expired)
        except BaseException as exc:
            self._record_failure(exc, started)
            raise
        else:
            self._record_success(started)
            return identity
        finally:
            self.in_flight -= 1
            semaphore.release()
