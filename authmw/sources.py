"""Where a request carries its token: the ``token_sources`` option.

Each source is written as a string:

- ``"X-Auth-Token"`` (any header name): the whole header value is the token;
- ``"Authorization: Bearer"`` (any scheme): the ``Authorization`` header
  with that scheme (RFC 7235/6750: scheme case-insensitive, then spaces,
  then a token68 credential); other schemes are left alone for the app;
- ``"Sec-WebSocket-Protocol: bearer"``: websockets only, the subprotocol
  list a browser offers (``bearer, <token>``); the server's accept then
  selects ``bearer`` and the app never sees the token;
- ``"query: access_token"``: websockets only, a query parameter, removed
  from the query string before the app sees it. Query strings end up in
  access logs: see :class:`authmw.logging.QueryTokenFilter`.

Sources are tried all together: two different tokens in two sources (or
twice in one) are refused, never resolved by picking one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from . import _checks
from . import headers as _headers
from .errors import ConfigurationError

__all__ = ["Source", "bearer_credential", "parse_sources"]

Kind = Literal["header", "authorization", "subprotocol", "query"]

# RFC 7235 token68 (RFC 6750's b64token is the same set).
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_QUERY_NAME = re.compile(r"[A-Za-z0-9\-._~]+")
_SUBPROTOCOL = "Sec-WebSocket-Protocol"


@dataclass(frozen=True)
class Source:
    """One place a token may come from."""

    kind: Kind
    name: str
    """The header name, the Authorization scheme, the subprotocol marker or the query name."""

    @property
    def websocket_only(self) -> bool:
        return self.kind in ("subprotocol", "query")

    @property
    def header(self) -> str:
        """The header this source reads (``Authorization`` for a scheme)."""
        if self.kind == "header":
            return self.name
        if self.kind == "authorization":
            return "Authorization"
        return _SUBPROTOCOL

    @property
    def environ_key(self) -> str:
        return _headers.environ_key(self.header)

    @property
    def reader(self) -> Callable[[str], str | None] | None:
        """For an ``Authorization`` scheme, :func:`bearer_credential` bound to it."""
        return _credential_reader(self.name) if self.kind == "authorization" else None

    def challenge(self, realm: str, uri: str | None, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` challenge for this source."""
        if self.kind == "header":
            return f'Keystone uri="{uri}"' if uri else f'Keystone realm="{realm}"'
        scheme = self.name if self.kind == "authorization" else "Bearer"
        challenge = f'{scheme} realm="{realm}"'
        if error:
            challenge += f', error="{error}"'
        return challenge

    def __str__(self) -> str:
        if self.kind == "header":
            return self.name
        if self.kind == "authorization":
            return f"Authorization: {self.name}"
        if self.kind == "subprotocol":
            return f"{_SUBPROTOCOL}: {self.name}"
        return f"query: {self.name}"


def _parse(spec: object) -> Source:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError("token_sources", f"empty or non-string source {spec!r}")
    name, colon, rest = (part.strip() for part in spec.partition(":"))
    if not colon:
        header = _checks.header_name("token_sources", name)
        if header.lower() == "authorization":
            raise ConfigurationError("token_sources", "name the scheme: 'Authorization: Bearer'")
        if _headers.is_stripped(header):
            raise ConfigurationError(
                "token_sources", f"{header} is an identity header authmw strips"
            )
        return Source("header", header)
    if not rest:
        raise ConfigurationError("token_sources", f"nothing after ':' in {spec!r}")
    folded = name.lower()
    if folded == "authorization":
        if not _SCHEME.fullmatch(rest):
            raise ConfigurationError("token_sources", f"not an auth scheme: {rest!r}")
        return Source("authorization", rest)
    if folded == _SUBPROTOCOL.lower():
        if not _SCHEME.fullmatch(rest):
            raise ConfigurationError("token_sources", f"not a subprotocol name: {rest!r}")
        return Source("subprotocol", rest)
    if folded == "query":
        if not _QUERY_NAME.fullmatch(rest):
            raise ConfigurationError("token_sources", f"not a query parameter name: {rest!r}")
        return Source("query", rest)
    raise ConfigurationError(
        "token_sources",
        f"unknown source {spec!r}: use a header name, 'Authorization: <scheme>', "
        f"'{_SUBPROTOCOL}: <marker>' or 'query: <name>'",
    )


def parse_sources(specs: Iterable[str] | str) -> tuple[Source, ...]:
    """The ``token_sources`` option, checked (``ConfigurationError`` naming it)."""
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, Iterable):
        raise ConfigurationError("token_sources", f"must be a list of sources, got {specs!r}")
    sources = tuple(_parse(spec) for spec in specs)
    if not sources:
        raise ConfigurationError("token_sources", "needs at least one source")
    if not any(not source.websocket_only for source in sources):
        raise ConfigurationError("token_sources", "needs a source that HTTP requests can use")
    seen: set[tuple[str, str]] = set()
    for source in sources:
        key = (source.kind, source.name.lower())
        if key in seen:
            raise ConfigurationError("token_sources", f"{source} is listed twice")
        seen.add(key)
    kinds = [s.kind for s in sources]
    if kinds.count("authorization") > 1 or kinds.count("subprotocol") > 1:
        raise ConfigurationError(
            "token_sources", "one Authorization scheme and one subprotocol at most"
        )
    return sources


def bearer_credential(value: str, scheme: str) -> str | None:
    """The credential of an ``Authorization`` value in ``scheme``.

    None when the value is in another scheme (it belongs to the app); ``""``
    when it is in this scheme but malformed (no credential, not token68, or
    more than one).
    """
    return _credential_reader(scheme)(value)


@functools.lru_cache(maxsize=64)
def _credential_reader(scheme: str) -> Callable[[str], str | None]:
    """:func:`bearer_credential` for one scheme, with its regular expressions compiled."""
    whole = re.compile(rf"[ \t]*{re.escape(scheme)} +({_TOKEN68.pattern})[ \t]*", re.IGNORECASE)
    ours = re.compile(rf"[ \t]*{re.escape(scheme)}(?: |$)", re.IGNORECASE)
    match_whole, match_ours = whole.fullmatch, ours.match

    def read(value: str) -> str | None:
        found = match_whole(value)
        if found is not None:
            return found.group(1)
        return "" if match_ours(value) is not None else None

    return read
