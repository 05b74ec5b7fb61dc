"""The layers around a validator: cache (outside) and guard (inside), built once.

``validator`` -> ``GuardedValidator`` (circuit breaker, concurrency bound) ->
``CachedValidator`` (LRU, negative cache, single-flight, shared cache). A
layer the caller built already is used as it is; options for a layer the
caller built are refused, never silently dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _checks
from .cache import CachedValidator
from .errors import ConfigurationError
from .resilience import CircuitBreaker, GuardedValidator
from .validators.base import Validator
from .validators.chain import ChainValidator

__all__ = ["CACHE_DEFAULTS", "GUARD_DEFAULTS", "build_stack"]

CACHE_DEFAULTS: Mapping[str, Any] = {
    "cache_time": 300.0,
    "negative_cache_time": 10.0,
    "cache_size": 10_000,
    "shared_cache": None,
    "refresh_after": None,
    "stale_if_error": 0.0,
}
GUARD_DEFAULTS: Mapping[str, Any] = {
    "failure_threshold": 5,
    "circuit_cooldown": 10.0,
    "max_concurrency": 32,
    "acquire_timeout": 5.0,
}

SHARED_CACHE_METHODS = ("get", "put", "put_invalid", "revoke", "aget", "aput", "aput_invalid")


def _given(options: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    return [name for name, default in defaults.items() if options[name] != default]


def _guard(validator: Validator, options: Mapping[str, Any]) -> GuardedValidator:
    breaker = CircuitBreaker(options["failure_threshold"], options["circuit_cooldown"])
    return GuardedValidator(
        validator,
        breaker=breaker,
        max_concurrency=options["max_concurrency"],
        acquire_timeout=options["acquire_timeout"],
    )


def _refuse(names: list[str], layer: str) -> None:
    if names:
        raise ConfigurationError(
            names[0], f"the validator is a prebuilt {layer}: set this option on it instead"
        )


def build_stack(
    validator: Validator,
    options: Mapping[str, Any],
    timer: Callable[[], float] = time.time,
) -> tuple[CachedValidator, tuple[GuardedValidator, ...]]:
    """The cache and the guards around ``validator``.

    ``options`` holds every name of :data:`CACHE_DEFAULTS` and
    :data:`GUARD_DEFAULTS`. A :class:`~authmw.ChainValidator` gets one guard
    per member (an outage of one does not open the others' breakers) and
    the cache in front of the whole chain. A prebuilt :class:`CachedValidator`
    must have guards inside it, or the circuit breaker would be missing.
    """
    shared = options["shared_cache"]
    if shared is not None and not all(
        callable(getattr(shared, name, None)) for name in SHARED_CACHE_METHODS
    ):
        raise ConfigurationError(
            "shared_cache", f"must implement {', '.join(SHARED_CACHE_METHODS)}, got {shared!r}"
        )
    if isinstance(validator, CachedValidator):
        _refuse(
            _given(options, CACHE_DEFAULTS) + _given(options, GUARD_DEFAULTS), "CachedValidator"
        )
        guards = _guards_inside(validator.validator)
        if guards is None:
            raise ConfigurationError(
                "validator",
                "a prebuilt CachedValidator needs a GuardedValidator inside "
                "(CachedValidator(GuardedValidator(v))), or there is no circuit breaker",
            )
        return validator, guards
    if isinstance(validator, GuardedValidator):
        _refuse(_given(options, GUARD_DEFAULTS), "GuardedValidator")
    guarded = _guarded(validator, options)
    guards = _guards_inside(guarded)
    assert guards is not None
    cache = CachedValidator(
        guarded,
        cache_time=options["cache_time"],
        negative_cache_time=options["negative_cache_time"],
        maxsize=_checks.integer("cache_size", options["cache_size"], 1),
        shared=shared,
        refresh_after=options["refresh_after"],
        stale_if_error=options["stale_if_error"],
        timer=timer,
    )
    return cache, guards


def _guarded(validator: Validator, options: Mapping[str, Any]) -> Validator:
    if isinstance(validator, GuardedValidator):
        return validator
    if isinstance(validator, ChainValidator):
        return validator.with_members(lambda member: _guarded(member, options))
    return _guard(validator, options)


def _guards_inside(validator: Validator) -> tuple[GuardedValidator, ...] | None:
    """The guards of a guarded validator or of a chain of guarded ones (None if any is bare)."""
    if isinstance(validator, GuardedValidator):
        return (validator,)
    if isinstance(validator, ChainValidator):
        guards: list[GuardedValidator] = []
        for member in validator.members:
            inside = _guards_inside(member)
            if inside is None:
                return None
            guards.extend(inside)
        return tuple(guards)
    return None
