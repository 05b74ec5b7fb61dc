"""Durations written the way people type them: ``30d``, ``12h``, ``1h30m``, ``3600``."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ``ValueError`` with a readable message.

    Accepts a number of seconds (``3600``) or parts with units ``s m h d w``
    (``30d``, ``1h30m``). The result must be positive.
    """
    value = text.strip().lower()
    if value.isdigit():
        seconds = float(int(value))
    elif _WHOLE.fullmatch(value):
        seconds = float(sum(int(n) * _UNITS[u] for n, u in _PART.findall(value)))
    else:
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit s, m, h, d or w (e.g. 30d, 12h)"
        )
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Shortest exact form of ``seconds`` (``2592000`` -> ``30d``)."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds:g}s"
    for unit in ("w", "d", "h", "m"):
        if whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"
