"""Local API tokens: issue them, keep only their hash, validate them (SQLite or PostgreSQL)."""

from __future__ import annotations

from ._store import DEFAULT_URL, IssuedToken, LocalTokenStore, TokenRecord
from ._tokens import TOKEN_PATTERN, is_well_formed
from ._ttl import format_duration, parse_duration

__all__ = [
    "DEFAULT_URL",
    "TOKEN_PATTERN",
    "IssuedToken",
    "LocalTokenStore",
    "TokenRecord",
    "format_duration",
    "is_well_formed",
    "parse_duration",
]
