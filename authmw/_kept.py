"""How identities keep their values compactly: a cache holds many of them.

Values many identities hold (domains, projects, role lists) are kept once;
timestamps are kept as POSIX seconds when a float gives them back exactly.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["EMPTY", "datetime_of", "lowered", "moment", "shared", "shared_strings", "strings"]

EMPTY: Mapping[str, Any] = types.MappingProxyType({})
"""The empty read-only mapping every identity without extras or restrictions holds."""

SHARED_MAX = 65_536
_values: dict[Any, Any] = {}
_lowered: dict[tuple[str, ...], frozenset[str]] = {}


def _aware_utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"Identity.{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Identity.{name} must be timezone-aware")
    return value.astimezone(timezone.utc)


def shared(value: Any) -> Any:
    """One object for equal values many identities hold (domains, projects, role lists),
    so a cache of many identities keeps each once. Bounded: once full, values are
    kept as they come."""
    if value is None:
        return None
    try:
        found = _values.get(value)
    except TypeError:  # unhashable: not a value identities share
        return value
    if found is not None:
        return found
    if len(_values) < SHARED_MAX:
        return _values.setdefault(value, value)
    return value


def lowered(roles: tuple[str, ...]) -> frozenset[str]:
    """The lower-cased set of ``roles``, shared like :func:`shared` values."""
    found = _lowered.get(roles)
    if found is None:
        # str.lower(), as oslo.policy: casefold() would make "\u017fervice" (long s)
        # the role "service".
        found = frozenset(r.lower() for r in roles)
        if len(_lowered) < SHARED_MAX:
            found = _lowered.setdefault(roles, found)
    return found


def moment(value: datetime | None, name: str) -> float | datetime | None:
    """``value`` as kept: POSIX seconds when a float gives it back exactly (24 bytes
    instead of a datetime's 48), else the UTC datetime itself."""
    utc = _aware_utc(value, name)
    if utc is None:
        return None
    seconds = utc.timestamp()
    try:
        if datetime.fromtimestamp(seconds, timezone.utc) == utc:
            return seconds
    except (OverflowError, OSError, ValueError):  # before 1970 on some platforms, year 1
        pass
    return utc


def datetime_of(moment: float | datetime | None) -> datetime | None:
    """The datetime :func:`moment` kept."""
    if moment is None or isinstance(moment, datetime):
        return moment
    return datetime.fromtimestamp(moment, timezone.utc)


def strings(name: str, value: Iterable[str]) -> tuple[str, ...]:
    """``value`` as a tuple of strings; ``Identity.<name>`` is named when it is not one."""
    if isinstance(value, str):
        raise TypeError(f"Identity.{name} must be a sequence of strings, not a string")
    values = tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"Identity.{name} must contain only strings")
    return values


def shared_strings(name: str, value: Iterable[str]) -> tuple[str, ...]:
    """:func:`strings`, the tuple and each string kept once (see :func:`shared`)."""
    kept: tuple[str, ...] = shared(tuple(shared(v) for v in strings(name, value)))
    return kept
