"""Read-only JSON-like data, and the compact form cached identities keep raw bodies in.

A Keystone project token body (catalog off) is about 600 bytes of JSON and
several kilobytes as Python dicts and strings; every cached identity keeps
one (``Identity.token_body``). :class:`CompactJSON` keeps it as raw DEFLATE
with a preset dictionary (the key names of Keystone, introspection and JWT
bodies, then the first body this process compressed: later bodies share
most of their text with it) and parses it again on each read, so it costs
about a hundred bytes and a few microseconds per read instead. A validator
holding the answer's own text keeps that (:meth:`CompactJSON.member`): the
same text parsed again gives the same value, with no encoding on the way.
"""

from __future__ import annotations

import json
import threading
import types
import zlib
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

__all__ = ["CompactJSON", "frozen", "thawed"]


def frozen(value: Any) -> Any:
    """Read-only view of JSON-like data (dicts become mapping proxies, lists tuples)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """Plain dicts and lists again (the inverse of :func:`frozen`)."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thawed(v) for v in value]
    return value


_SKELETON = json.dumps(
    {
        "methods": ["password", "token", "application_credential", "totp", "mapped"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "", "name": ""},
        "password_expires_at": None,
        "OS-FEDERATION": {"groups": [], "identity_provider": {"id": ""}, "protocol": {"id": ""}},
        "audit_ids": [],
        "expires_at": "2026-01-01T00:00:00.000000Z",
        "issued_at": "2026-01-01T00:00:00.000000Z",
        "project": {"domain": {"id": "", "name": ""}, "id": "", "name": ""},
        "domain": {"id": "", "name": ""},
        "system": {"all": True},
        "is_domain": False,
        "is_admin_project": False,
        "roles": [{"id": "", "name": "member"}, {"id": "", "name": "reader"}],
        "application_credential": {"id": "", "name": "", "restricted": True},
        "OS-TRUST:trust": {"id": "", "impersonation": False, "trustee_user": {"id": ""}},
        "active": True,
        "scope": "",
        "client_id": "",
        "token_type": "Bearer",
        "exp": 0,
        "iat": 0,
        "nbf": 0,
        "sub": "",
        "aud": "",
        "iss": "",
        "jti": "",
        "username": "",
    },
    separators=(",", ":"),
).encode()

_zdict = _SKELETON
_learned = False
_lock = threading.Lock()
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _dictionary(sample: bytes) -> bytes:
    """The preset dictionary: the first body compressed joins the skeleton, and from
    then on every body is compressed and read with that one."""
    global _zdict, _learned
    if not _learned:
        with _lock:
            if not _learned:
                _zdict = (_SKELETON + sample)[-32768:]  # DEFLATE's window
                _learned = True
    return _zdict


def _compressed(text: bytes) -> bytes:
    compressor = zlib.compressobj(
        9, zlib.DEFLATED, -15, 4, zlib.Z_DEFAULT_STRATEGY, _dictionary(text)
    )
    return compressor.compress(text) + compressor.flush()


class CompactJSON(Mapping[str, Any]):
    """A JSON object kept compressed; each read parses it (values read-only).

    Build with :meth:`of`, which keeps data that JSON cannot carry exactly as
    a plain read-only mapping instead, or with :meth:`member` from a JSON text.
    """

    __slots__ = ("_data", "_member")

    def __init__(self, text: bytes, member: str | None = None) -> None:
        self._data = _compressed(text)
        self._member = member

    @classmethod
    def member(cls, text: bytes, name: str) -> CompactJSON:
        """Member ``name`` of the JSON object ``text`` (which the caller has parsed and
        found to be an object there), kept as that text."""
        return cls(text, name)

    def packed(self) -> tuple[bytes, str | None]:
        """(compressed text, member): what :meth:`unpacked` takes back."""
        return self._data, self._member

    @classmethod
    def unpacked(cls, data: bytes, member: str | None) -> CompactJSON:
        """The body :meth:`packed` gave (nothing compressed again)."""
        body = cls.__new__(cls)
        body._data = data
        body._member = member
        return body

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        """``value`` in compact form, or frozen as it is when JSON would change it."""
        if isinstance(value, CompactJSON):
            return value
        try:
            try:
                text = _encode(value)
            except TypeError:  # mapping proxies (a frozen body): as plain dicts
                text = _encode(thawed(value))
            parsed = json.loads(text)
            exact = parsed == value or parsed == thawed(value)  # tuples come back as lists
        except (TypeError, ValueError):  # ValueError: NaN and infinities
            exact = False
        if not exact:  # non-string keys, non-JSON values: kept as they are
            result: Mapping[str, Any] = frozen(value)
            return result
        return cls(text.encode("utf-8"))

    def _parsed(self) -> Mapping[str, Any]:
        value = json.loads(zlib.decompressobj(-15, zdict=_zdict).decompress(self._data))
        if self._member is not None:
            value = value[self._member]
        parsed: Mapping[str, Any] = frozen(value)
        return parsed

    def __getitem__(self, key: str) -> Any:
        return self._parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())

    # One parse per call, not one per key (the Mapping mixins would index each key).
    def __contains__(self, key: object) -> bool:
        return key in self._parsed()

    def get(self, key: str, default: Any = None) -> Any:
        return self._parsed().get(key, default)

    def keys(self) -> KeysView[str]:
        return self._parsed().keys()

    def items(self) -> ItemsView[str, Any]:
        return self._parsed().items()

    def values(self) -> ValuesView[Any]:
        return self._parsed().values()

    def __eq__(self, other: object) -> bool:
        return self._parsed() == other

    __hash__ = None  # type: ignore[assignment]  # a mapping: unhashable, as dict

    def __repr__(self) -> str:
        return f"<CompactJSON, {len(self._data)} bytes compressed>"
