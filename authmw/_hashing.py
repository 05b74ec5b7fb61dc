"""Token digests: the only form in which a token is kept or logged."""

from __future__ import annotations

import hashlib

__all__ = ["fingerprint", "token_digest"]


def token_digest(token: str) -> bytes:
    """SHA-256 of the token, the key of every cache entry."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def fingerprint(token: str) -> str:
    """Short, non-reversible tag for log records: 8 hex digits of the SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:8]
