"""Every public constructor refuses a bad option the same way: ConfigurationError naming it.

Numbers refuse NaN, infinity and bools; flags refuse anything but a bool;
a misspelled keyword gets "did you mean"; options for a layer the caller
built (cache, guard) are refused instead of dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from helpers import counting

from authmw import (
    ASGIAuthMiddleware,
    AuthCore,
    CachedValidator,
    CircuitBreaker,
    ConfigurationError,
    GuardedValidator,
    InMemoryValidator,
    WSGIAuthMiddleware,
)


def _app(*args: Any) -> None:
    return None


def _fastapi_setup(**options: Any) -> Any:
    from fastapi import FastAPI

    from authmw.contrib.fastapi import setup

    return setup(FastAPI(), counting(), **options)


def _flask(**options: Any) -> Any:
    from flask import Flask

    from authmw.contrib.flask import AuthMW

    return AuthMW(Flask(__name__), counting(), **options)


def _starlette(**options: Any) -> Any:
    from authmw.contrib.starlette import authentication_middleware

    return authentication_middleware(counting(), **options)


def _starlette_backend(**options: Any) -> Any:
    from authmw.contrib.starlette import AuthMWBackend

    return AuthMWBackend(counting(), **options)


CORE_ENTRY_POINTS: dict[str, Callable[..., Any]] = {
    "AuthCore": lambda **o: AuthCore(counting(), **o),
    "WSGIAuthMiddleware": lambda **o: WSGIAuthMiddleware(_app, counting(), **o),
    "ASGIAuthMiddleware": lambda **o: ASGIAuthMiddleware(_app, counting(), **o),
    "fastapi.setup": _fastapi_setup,
    "flask.AuthMW": _flask,
    "starlette.authentication_middleware": _starlette,
    "starlette.AuthMWBackend": _starlette_backend,
}

BAD_NUMBERS = [math.nan, math.inf, -math.inf, True, "5", -1]


@pytest.mark.parametrize("entry", list(CORE_ENTRY_POINTS))
@pytest.mark.parametrize(
    "option",
    ["cache_time", "negative_cache_time", "retry_after", "circuit_cooldown", "acquire_timeout"],
)
def test_numbers_refuse_nan_infinity_bools_and_strings(entry: str, option: str) -> None:
    for value in BAD_NUMBERS:
        with pytest.raises(ConfigurationError, match=f"^{option}: ") as caught:
            CORE_ENTRY_POINTS[entry](**{option: value})
        assert caught.value.option == option


@pytest.mark.parametrize("entry", list(CORE_ENTRY_POINTS))
@pytest.mark.parametrize(
    "option", ["cache_size", "failure_threshold", "max_concurrency", "max_token_size"]
)
def test_integers_refuse_bools_floats_and_small_values(entry: str, option: str) -> None:
    for value in (True, 2.5, 0, math.nan):
        with pytest.raises(ConfigurationError, match=f"^{option}: "):
            CORE_ENTRY_POINTS[entry](**{option: value})


@pytest.mark.parametrize("entry", list(CORE_ENTRY_POINTS))
def test_flags_refuse_strings(entry: str) -> None:
    for option in ("delay_auth_decision", "fiware_service_scope", "service_token_roles_required"):
        with pytest.raises(ConfigurationError, match=f"^{option}: "):
            CORE_ENTRY_POINTS[entry](**{option: "false"})


@pytest.mark.parametrize("entry", list(CORE_ENTRY_POINTS))
def test_misspelled_option_gets_a_hint(entry: str) -> None:
    with pytest.raises(
        ConfigurationError, match="cache_tme: unknown option; did you mean 'cache_time'"
    ):
        CORE_ENTRY_POINTS[entry](cache_tme=5)


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: CircuitBreaker(True), "failure_threshold"),
        (lambda: CircuitBreaker(5, math.nan), "circuit_cooldown"),
        (lambda: CircuitBreaker(5, math.inf), "circuit_cooldown"),
        (lambda: GuardedValidator(InMemoryValidator(), max_concurrency=True), "max_concurrency"),
        (
            lambda: GuardedValidator(InMemoryValidator(), acquire_timeout=math.inf),
            "acquire_timeout",
        ),
        (lambda: GuardedValidator(InMemoryValidator(), breaker=5), "breaker"),  # type: ignore[arg-type]
        (lambda: GuardedValidator(InMemoryValidator(), max_concurency=3), "max_concurency"),  # type: ignore[call-arg]
    ],
)
def test_layers_check_their_own_options(build: Callable[[], Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert caught.value.option == option


def test_options_for_a_prebuilt_layer_are_refused_not_dropped() -> None:
    guarded = GuardedValidator(InMemoryValidator())
    cached = CachedValidator(guarded, cache_time=300)
    with pytest.raises(ConfigurationError, match=r"^cache_time: .*prebuilt CachedValidator"):
        AuthCore(cached, cache_time=1)
    with pytest.raises(ConfigurationError, match=r"^failure_threshold: .*prebuilt"):
        AuthCore(cached, failure_threshold=99)
    with pytest.raises(ConfigurationError, match=r"^max_concurrency: .*prebuilt GuardedValidator"):
        AuthCore(guarded, max_concurrency=2)
    core = AuthCore(cached)
    assert core.cache is cached and core.guard is guarded and core.breaker is guarded.breaker
    core = AuthCore(guarded, cache_time=1)
    assert core.guard is guarded and core.cache.cache_time == 1.0


def test_a_prebuilt_cache_without_a_circuit_breaker_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^validator: .*GuardedValidator"):
        AuthCore(CachedValidator(InMemoryValidator()))
