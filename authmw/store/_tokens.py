"""Token strings: generation, format check and the hash that is stored.

A token looks like ``amw_`` + 43 base62 characters (256 random bits) + 6
base62 characters of CRC32 checksum, 53 characters in all. Secret scanners
can match ``\\bamw_[0-9A-Za-z]{49}\\b`` and verify the checksum offline;
validators reject a mistyped token without a database round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

__all__ = [
    "PREFIX",
    "TOKEN_LENGTH",
    "TOKEN_PATTERN",
    "TokenHasher",
    "is_well_formed",
    "new_token",
]

PREFIX = "amw_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(_ALPHABET)
_BODY_LEN = 43  # ceil(256 / log2(62))
_CHECK_LEN = 6  # 62**6 > 2**32
TOKEN_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
TOKEN_PATTERN = r"\bamw_[0-9A-Za-z]{49}\b"  # noqa: S105 - a pattern, not a secret
"""Regular expression a secret scanner can use to find authmw tokens."""


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def new_token() -> str:
    """A fresh token: 256 bits from :mod:`secrets`, prefix and checksum."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """True if ``token`` has the authmw shape and a matching checksum."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX) or not token.isascii():
        return False
    body = token[len(PREFIX) : len(PREFIX) + _BODY_LEN]
    check = token[len(PREFIX) + _BODY_LEN :]
    if not _ALPHABET_SET.issuperset(body):
        return False
    return hmac.compare_digest(_checksum(body), check)


class TokenHasher:
    """Turns a token into the digest kept in the store.

    With a pepper: HMAC-SHA-256 keyed by the pepper, so a stolen database
    alone does not allow checking guesses. Without: plain SHA-256, which
    is enough for 256-bit random tokens. ``scheme`` names the choice (and
    a fingerprint of the pepper) so a store refuses to open with another.
    """

    __slots__ = ("_mac", "scheme")

    def __init__(self, pepper: bytes | None = None) -> None:
        if pepper is None:
            self._mac: hmac.HMAC | None = None
            self.scheme = "sha256"
        else:
            self._mac = hmac.new(pepper, digestmod=hashlib.sha256)
            check = hmac.new(pepper, b"authmw pepper check", hashlib.sha256).hexdigest()[:16]
            self.scheme = f"hmac-sha256:{check}"

    def __call__(self, token: str) -> bytes:
        data = token.encode("utf-8", "surrogateescape")
        if self._mac is None:
            return hashlib.sha256(data).digest()
        mac = self._mac.copy()
        mac.update(data)
        return mac.digest()
