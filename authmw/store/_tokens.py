"""Token strings: generation, format check and the hash that is stored.

A token looks like ``amw_`` + 43 base62 characters (256 random bits) + 6
base62 characters of CRC32 checksum, 53 characters in all. Secret scanners
can match ``\\bamw_[0-9A-Za-z]{49}\\b`` and verify the checksum offline;
validators reject a mistyped token without a database round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import zlib
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = [
    "PREFIX",
    "TOKEN_LENGTH",
    "TOKEN_PATTERN",
    "PepperRing",
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
            self.scheme = f"hmac-sha256:{fingerprint(pepper)}"

    def __call__(self, token: str) -> bytes:
        data = token.encode("utf-8", "surrogateescape")
        if self._mac is None:
            return hashlib.sha256(data).digest()
        mac = self._mac.copy()
        mac.update(data)
        return mac.digest()


def fingerprint(pepper: bytes) -> str:
    """What the store records to recognise a pepper (not enough to recover it)."""
    return hmac.new(pepper, b"authmw pepper check", hashlib.sha256).hexdigest()[:16]


_PEPPER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LEGACY_PEPPER_ID = "1"
"""The id of a pepper given alone (``pepper="..."``), and of a store's first pepper."""


class PepperRing:
    """The peppers a store instance knows, by id; new tokens use the newest (the last).

    ``pepper`` is None (plain SHA-256), one secret (id ``"1"``), or a
    mapping of ids to secrets, oldest first. Secrets are at least 16 bytes.
    """

    def __init__(self, pepper: str | bytes | Mapping[str, str | bytes] | None) -> None:
        if pepper is None:
            self.hashers: dict[str | None, TokenHasher] = {None: TokenHasher(None)}
        elif isinstance(pepper, (str, bytes)):
            self.hashers = {LEGACY_PEPPER_ID: TokenHasher(_secret(LEGACY_PEPPER_ID, pepper))}
        elif isinstance(pepper, Mapping):
            if not pepper:
                raise ConfigurationError("pepper", "give at least one pepper")
            self.hashers = {}
            for key, secret in pepper.items():
                if not isinstance(key, str) or not _PEPPER_ID.fullmatch(key):
                    raise ConfigurationError(
                        "pepper", f"pepper id {key!r}: use 1-64 letters, digits, '.', '_' or '-'"
                    )
                self.hashers[key] = TokenHasher(_secret(key, secret))
        else:
            raise ConfigurationError(
                "pepper", "must be a secret or a mapping of pepper ids to secrets"
            )
        self.newest: str | None = list(self.hashers)[-1]
        self.peppered = self.newest is not None
        self._reindex()

    def _reindex(self) -> None:
        #: Pepper id -> position of its digest in :meth:`digests`.
        self.index: dict[str | None, int] = {key: n for n, key in enumerate(self.hashers)}
        self._hashers = tuple(self.hashers.values())

    def hasher(self, pepper_id: str | None) -> TokenHasher | None:
        return self.hashers.get(pepper_id)

    def digests(self, token: str) -> list[bytes]:
        """The token's digest under each pepper (one per pepper, newest last)."""
        return [hasher(token) for hasher in self._hashers]

    def fingerprints(self) -> dict[str, str]:
        """Pepper id -> fingerprint, for the store's records."""
        return {
            key: hasher.scheme.split(":", 1)[1]
            for key, hasher in self.hashers.items()
            if key is not None
        }

    def drop(self, pepper_id: str) -> None:
        """Forget a retired pepper (never the newest)."""
        if pepper_id != self.newest:
            self.hashers.pop(pepper_id, None)
            self._reindex()


def pepper_from_environment(
    environ: Mapping[str, str],
) -> str | dict[str, str] | None:
    """``AUTHMW_PEPPER`` (one secret) or ``AUTHMW_PEPPERS`` (a JSON object of pepper ids to
    secrets, oldest first); ConfigurationError naming the variable for a mistake."""
    single, many = environ.get("AUTHMW_PEPPER") or None, environ.get("AUTHMW_PEPPERS") or None
    if single and many:
        raise ConfigurationError("AUTHMW_PEPPERS", "set AUTHMW_PEPPER or AUTHMW_PEPPERS, not both")
    if many is None:
        return single
    try:
        value = json.loads(many)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigurationError(
            "AUTHMW_PEPPERS",
            'must be a JSON object of pepper ids to secrets, oldest first: {"1": "..."}',
        )
    return value


def _secret(pepper_id: str, value: str | bytes) -> bytes:
    secret = value.encode("utf-8") if isinstance(value, str) else value
    if not isinstance(secret, bytes) or len(secret) < 16:
        what = "pepper" if pepper_id == LEGACY_PEPPER_ID else f"pepper {pepper_id!r}"
        raise ConfigurationError(
            "pepper", f"{what} must be at least 16 bytes (use a random secret)"
        )
    return secret
