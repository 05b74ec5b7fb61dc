"""Option checks shared by every public constructor: one rule per kind, one error style.

Every check raises :class:`~authmw.ConfigurationError` naming the option.
Numbers must be real, finite numbers (never ``bool``, NaN or infinity);
flags must be ``bool`` (``bool("false")`` is True, so strings from a
configuration file are converted by whoever reads that file). Unknown
keyword names get a "did you mean" through :func:`checked_keywords`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from .errors import ConfigurationError

__all__ = [
    "checked_keywords",
    "flag",
    "function",
    "header_name",
    "header_text",
    "integer",
    "keyword_names",
    "names",
    "number",
    "passing_keywords_to",
    "positive",
    "text",
    "unknown_option",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def number(option: str, value: Any, minimum: float = 0.0, *, maximum: float | None = None) -> float:
    """A finite number within ``[minimum, maximum]``, as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value >= minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"from {minimum:g} to {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise ConfigurationError(option, f"must be a finite number {bounds}, got {value!r}")
    return float(value)


def positive(option: str, value: Any) -> float:
    """A finite number > 0."""
    seconds = number(option, value)
    if seconds <= 0:
        raise ConfigurationError(option, f"must be a finite number > 0, got {value!r}")
    return seconds


def integer(option: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An ``int`` (not a bool) within ``[minimum, maximum]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigurationError(option, f"must be an integer {bounds}, got {value!r}")
    return value


def flag(option: str, value: Any) -> bool:
    """``True`` or ``False``, nothing else."""
    if not isinstance(value, bool):
        raise ConfigurationError(option, f"must be True or False, got {value!r}")
    return value


def text(option: str, value: Any) -> str:
    """A non-blank string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(option, f"must be a non-empty string, got {value!r}")
    return value.strip()


def header_name(option: str, value: Any) -> str:
    """An HTTP header name (letters, digits and ``-``)."""
    if not isinstance(value, str) or not value or not value.replace("-", "").isalnum():
        raise ConfigurationError(option, f"must be a header name, got {value!r}")
    if not value.isascii():
        raise ConfigurationError(option, f"must be an ASCII header name, got {value!r}")
    return value


def header_text(option: str, value: Any) -> str:
    """Text that can go inside a quoted header parameter."""
    if (
        not isinstance(value, str)
        or '"' in value
        or "\\" in value
        or not value.isprintable()
        or not value.isascii()
    ):
        raise ConfigurationError(
            option, f"must be ASCII text without quotes or control characters, got {value!r}"
        )
    return value


def function(option: str, value: T) -> T:
    """Something callable."""
    if not callable(value):
        raise ConfigurationError(option, f"must be callable, got {value!r}")
    return value


def names(option: str, value: Any) -> tuple[str, ...]:
    """Non-empty strings, from a list or a comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ConfigurationError(option, f"must be a list of names, got {value!r}")
    return tuple(item.strip() for item in value)


def unknown_option(name: str, known: Iterable[str]) -> ConfigurationError:
    """The error for an option nobody knows, with the closest known name."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigurationError(name, f"unknown option{hint}")


def keyword_names(func: Callable[..., Any]) -> tuple[str, ...]:
    """The names ``func`` accepts as keywords."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(
        name
        for name, parameter in inspect.signature(func).parameters.items()
        if parameter.kind in kinds and name != "self"
    )


def checked_keywords(func: Callable[P, R]) -> Callable[P, R]:
    """Refuse misspelled keywords with :class:`ConfigurationError` and a "did you mean".

    Without it a misspelled option is a bare ``TypeError`` from Python;
    with it every public constructor answers a typo the same way.
    """
    return _checked(func, frozenset(keyword_names(func)))


def passing_keywords_to(
    target: Callable[..., Any],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Like :func:`checked_keywords` for a function whose ``**options`` go to ``target``."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return _checked(func, frozenset(keyword_names(func)) | frozenset(keyword_names(target)))

    return decorate


def _checked(func: Callable[P, R], known: frozenset[str]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for name in kwargs:
            if name not in known:
                raise unknown_option(name, sorted(known))
        return func(*args, **kwargs)

    return wrapper
