"""Steps 1 and 2 of the pipeline: strip forged identity headers, find the credentials.

One :class:`Scanner` per pipeline knows the configured sources; it reads a
WSGI environ (or Django's ``META``) or an ASGI scope's header list in one
pass, and for websockets the offered subprotocols and the query string.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import unquote

from . import headers as _headers
from .core import AuthCore
from .sources import bearer_credential

__all__ = ["ACCEPT_SUBPROTOCOL_KEY", "NO_CREDENTIALS", "Credentials", "Scanner"]

HeaderList = list[tuple[bytes, bytes]]

ACCEPT_SUBPROTOCOL_KEY = "authmw.accept_subprotocol"
"""Scope key: the subprotocol the websocket ``accept`` must select (the token came in it)."""


class Credentials(NamedTuple):
    """What a request carries: raw header values (None when absent).

    ``source`` is the index of the token's source in ``AuthCore.sources``;
    ``problem`` is ``"multiple"`` (two different tokens) or ``"malformed"``
    (a credential in a configured ``Authorization`` scheme that is not
    token68) when the request must be refused without asking the validator.
    ``preflight`` is True for a CORS preflight (``OPTIONS`` with ``Origin``
    and ``Access-Control-Request-Method``), which browsers send without
    credentials.
    """

    token: str | None = None
    service_token: str | None = None
    fiware_service: str | None = None
    fiware_service_path: str | None = None
    preflight: bool = False
    source: int = 0
    problem: str | None = None


NO_CREDENTIALS = Credentials()
_new = tuple.__new__  # builds a Credentials without the NamedTuple's Python-level __new__
_REST = (None, None, None, False, 0, None)  # a token from the first source, nothing else

# Header categories, decided once per raw header name; token sources are _TOKEN + index.
_KEEP, _STRIP, _SERVICE_TOKEN, _FIWARE_SERVICE, _FIWARE_PATH, _ORIGIN, _ACRM = range(7)
_AUTHORIZATION, _SUBPROTOCOLS, _TOKEN = 7, 8, 16
_NAME_MEMO_MAX = 4096
_ORIGIN_KEY = _headers.environ_key(_headers.ORIGIN)
_ACRM_KEY = _headers.environ_key(_headers.ACCESS_CONTROL_REQUEST_METHOD)
_FIWARE_SERVICE_KEY = _headers.environ_key(_headers.FIWARE_SERVICE)
_FIWARE_PATH_KEY = _headers.environ_key(_headers.FIWARE_SERVICE_PATH)


class Scanner:
    """Strips and finds, for one :class:`~authmw.AuthCore`'s configuration."""

    __slots__ = (
        "_auth",
        "_auth_reader",
        "_kept_names",
        "_names",
        "_query",
        "_readers",
        "_service_key",
        "_subprotocol",
        "_token_name",
        "core",
        "hide",
        "simple_key",
        "sources",
    )

    def __init__(self, core: AuthCore) -> None:
        self.core = core
        self.sources = core.sources
        self.hide = core.hide_credentials
        first = self.sources[0]
        simple = len(self.sources) == 1 and first.kind == "header" and not self.hide
        #: The environ key of the only token source when it is a header kept as
        #: sent (the common case: one dict look-up per request), else None.
        self.simple_key = first.environ_key if simple else None
        self._service_key = _headers.environ_key(core.service_token_header)
        self._auth = self._index("authorization")
        self._auth_reader = self.sources[self._auth].reader if self._auth is not None else None
        self._subprotocol = self._index("subprotocol")
        self._query = self._index("query")
        # (index, environ key, Authorization reader) of each source a WSGI request can use.
        self._readers = [
            (i, s.environ_key, s.reader) for i, s in enumerate(self.sources) if not s.websocket_only
        ]
        self._names: dict[bytes, int] = {}
        # Names seen and kept as they are (the hot path checks a request's names
        # against it in one C call), and the only token header's name.
        self._kept_names: set[bytes] = set()
        self._token_name = first.name.lower().encode("latin-1") if simple else b""

    def _index(self, kind: str) -> int | None:
        return next((i for i, s in enumerate(self.sources) if s.kind == kind), None)

    # -- WSGI environ / Django META ----------------------------------------------------------
    def environ(self, environ: MutableMapping[str, Any]) -> Credentials:
        """Strip forged identity headers from ``environ`` (in place); the credentials."""
        _headers.strip_environ(environ)
        get = environ.get
        preflight = (
            get("REQUEST_METHOD") == "OPTIONS" and _ORIGIN_KEY in environ and _ACRM_KEY in environ
        )
        fiware = self.core.fiware_service_scope
        if self.simple_key is not None:
            token, source, problem = get(self.simple_key), 0, None
            if token is None and not fiware and not preflight and self._service_key not in environ:
                return NO_CREDENTIALS
        else:
            token, source, problem = self._environ_token(environ)
        return _new(
            Credentials,
            (
                token,
                get(self._service_key),
                get(_FIWARE_SERVICE_KEY) if fiware else None,
                get(_FIWARE_PATH_KEY) if fiware else None,
                preflight,
                source,
                problem,
            ),
        )

    def _environ_token(
        self, environ: MutableMapping[str, Any]
    ) -> tuple[str | None, int, str | None]:
        get = environ.get
        first: tuple[int, str] | None = None
        more: list[tuple[int, str]] | None = None
        for index, key, read in self._readers:
            value = get(key)
            if value is None:
                continue
            if read is not None:
                value = read(value)
                if value is None:
                    continue  # another scheme: the app's
            if self.hide:
                del environ[key]
            if first is None:
                first = (index, value)
            elif more is None:
                more = [first, (index, value)]
            else:
                more.append((index, value))
        if first is None:
            return None, 0, None
        if more is None and first[1] and "," not in first[1]:
            return first[1], first[0], None  # the common case: one plain token
        return _resolve(more or [first])

    # -- ASGI scope ----------------------------------------------------------------------------
    def scope(
        self, scope: MutableMapping[str, Any]
    ) -> tuple[HeaderList, Credentials, dict[str, Any] | None]:
        """The header list without forged identity headers, the credentials, and
        other scope items to replace (websocket subprotocols and query string)."""
        websocket = scope["type"] == "websocket"
        memo_get = self._names.get
        kept: HeaderList = []
        append = kept.append
        found: list[tuple[int, bytes]] | None = None
        token: bytes | None = None  # the only token header, in the common case
        hide = self.hide
        for item in scope.get("headers") or ():
            category = memo_get(item[0])
            if category is None:
                category = self._category(item[0])
            if category == _KEEP:
                append(item)
                continue
            if category == _STRIP:
                continue
            if category == _TOKEN and token is None and found is None:
                token = item[1]
            else:
                if found is None:
                    found = [] if token is None else [(_TOKEN, token)]
                found.append((category, item[1]))
            if not (hide or category == _SUBPROTOCOLS) or not self._hidden(
                category, item[1], websocket
            ):
                append(item)
        changes: dict[str, Any] | None = None
        if websocket and (self._subprotocol is not None or self._query is not None):
            changes = {}
            more = self._websocket(scope, kept, changes)
            if more:
                found = (found or ([] if token is None else [(_TOKEN, token)])) + more
        if found is None:
            if token is None:
                return kept, NO_CREDENTIALS, changes
            return kept, _new(Credentials, (token.decode("latin-1"), *_REST)), changes
        method = "GET" if websocket else str(scope.get("method", "GET"))
        return kept, self._credentials(found, method), changes

    def scope_token(self, headers: list[tuple[bytes, bytes]]) -> tuple[HeaderList, bytes] | None:
        """For the simple configuration (:attr:`simple_key`): a copy of the header list
        and the one token header's value, when every other header name is one seen
        before and kept as it is; else None, and :meth:`scope` decides (and learns
        the names)."""
        names = dict(headers)  # C: one pass
        if len(names) != len(headers):
            return None  # a repeated header: maybe a second token
        token = names.pop(self._token_name, None)
        if token is None or not self._kept_names.issuperset(names):
            return None
        return list(headers), token

    def _hidden(self, category: int, value: bytes, websocket: bool) -> bool:
        if category == _SUBPROTOCOLS:
            return websocket  # rewritten without the token (see _websocket)
        if not self.hide:
            return False
        if category >= _TOKEN:
            return True
        if category == _AUTHORIZATION and self._auth is not None:
            scheme = self.sources[self._auth].name
            return bearer_credential(value.decode("latin-1"), scheme) is not None
        return False

    def _category(self, name: bytes) -> int:
        folded = name.lower().replace(b"_", b"-").decode("latin-1")
        core = self.core
        category = _KEEP
        for index, source in enumerate(self.sources):
            if source.kind == "header" and folded == source.name.lower():
                category = _TOKEN + index
        if category != _KEEP:
            pass
        elif folded == core.service_token_header.lower():
            category = _SERVICE_TOKEN
        elif _headers.is_stripped(folded):
            category = _STRIP
        elif folded == "authorization" and self._auth is not None:
            category = _AUTHORIZATION
        elif folded == "sec-websocket-protocol" and self._subprotocol is not None:
            category = _SUBPROTOCOLS
        elif core.fiware_service_scope and folded == _headers.FIWARE_SERVICE.lower():
            category = _FIWARE_SERVICE
        elif core.fiware_service_scope and folded == _headers.FIWARE_SERVICE_PATH.lower():
            category = _FIWARE_PATH
        elif folded == _headers.ORIGIN.lower():
            category = _ORIGIN
        elif folded == _headers.ACCESS_CONTROL_REQUEST_METHOD.lower():
            category = _ACRM
        # Bounded: names an attacker invents are classified each time once full.
        if len(self._names) < _NAME_MEMO_MAX:
            self._names[name] = category
            if category in (_KEEP, _ORIGIN, _ACRM):
                self._kept_names.add(name)
        return category

    def _websocket(
        self, scope: MutableMapping[str, Any], kept: HeaderList, changes: dict[str, Any]
    ) -> list[tuple[int, bytes]]:
        """Tokens offered as a subprotocol or in the query string, taken out of the scope."""
        found: list[tuple[int, bytes]] = []
        if self._subprotocol is not None:
            offered = [str(p) for p in scope.get("subprotocols") or ()]
            marker = self.sources[self._subprotocol].name
            position = next((i for i, p in enumerate(offered) if p.lower() == marker.lower()), None)
            if position is not None:
                token = offered[position + 1] if position + 1 < len(offered) else ""
                rest = offered[:position] + offered[position + 2 :]
                found.append((_TOKEN + self._subprotocol, token.encode("latin-1")))
                changes["subprotocols"] = rest
                changes[ACCEPT_SUBPROTOCOL_KEY] = marker
            else:
                rest = offered
            if rest:
                kept.append((b"sec-websocket-protocol", ", ".join(rest).encode("latin-1")))
        if self._query is not None:
            name = self.sources[self._query].name
            query, values = _without_parameter(scope.get("query_string") or b"", name)
            if values:
                changes["query_string"] = query
                raw_path = scope.get("raw_path")
                if raw_path and b"?" in raw_path:
                    path, _, raw_query = raw_path.partition(b"?")
                    changes["raw_path"] = path + b"?" + _without_parameter(raw_query, name)[0]
                found.extend((_TOKEN + self._query, value) for value in values)
        return found

    def _credentials(self, found: list[tuple[int, bytes]], method: str) -> Credentials:
        if len(found) == 1 and (found[0][0] >= _TOKEN or found[0][0] == _AUTHORIZATION):
            # The common case: the token alone, in one header.
            category, raw = found[0]
            token: str | None = raw.decode("latin-1")
            source = category - _TOKEN
            if category == _AUTHORIZATION and self._auth_reader is not None:
                token, source = self._auth_reader(raw.decode("latin-1")), self._auth or 0
                if token == "":
                    return _new(Credentials, (None, None, None, None, False, source, "malformed"))
            return _new(Credentials, (token, None, None, None, False, source, None))
        values: dict[int, list[bytes]] = {}
        for category, raw in found:
            values.setdefault(category, []).append(raw)
        if self.simple_key is not None:
            token, source, problem = _joined(values.get(_TOKEN)), 0, None
        else:
            token, source, problem = _resolve(self._tokens(values))
        return Credentials(
            token,
            _joined(values.get(_SERVICE_TOKEN)),
            _joined(values.get(_FIWARE_SERVICE)),
            _joined(values.get(_FIWARE_PATH)),
            method == "OPTIONS" and _ORIGIN in values and _ACRM in values,
            source,
            problem,
        )

    def _tokens(self, values: dict[int, list[bytes]]) -> list[tuple[int, str]]:
        """(source index, value) of every token-bearing value found."""
        tokens: list[tuple[int, str]] = []
        for category, raw in values.items():
            if category >= _TOKEN:
                tokens.append((category - _TOKEN, _joined(raw) or ""))
            elif category == _AUTHORIZATION and self._auth is not None:
                scheme = self.sources[self._auth].name
                for value in raw:
                    credential = bearer_credential(value.decode("latin-1"), scheme)
                    if credential is not None:
                        tokens.append((self._auth, credential))
        return tokens


def _joined(values: list[bytes] | None) -> str | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0].decode("latin-1")
    # Same form as a WSGI server's folded header: the core refuses disagreement.
    return ",".join(v.decode("latin-1") for v in values)


def _resolve(found: Iterable[tuple[int, str]]) -> tuple[str | None, int, str | None]:
    """One token from every source's values: (token, its source, problem)."""
    tokens: set[str] = set()
    first: int | None = None
    malformed: int | None = None
    for index, value in found:
        if first is None:
            first = index
        parts = {part.strip() for part in value.split(",")} - {""}
        if not parts and value == "" and malformed is None:
            malformed = index
        tokens |= parts
    if first is None:
        return None, 0, None
    if len(tokens) > 1:
        return None, first, "multiple"
    if malformed is not None:
        return None, malformed, "multiple" if tokens else "malformed"
    return (tokens.pop() if tokens else ""), first, None


def _without_parameter(query: bytes, name: str) -> tuple[bytes, list[bytes]]:
    """``query`` without parameter ``name``, and that parameter's (decoded) values."""
    kept: list[bytes] = []
    values: list[bytes] = []
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote(key.decode("latin-1")) == name:
            values.append(unquote(value.decode("latin-1")).encode("latin-1", "replace"))
        elif part:
            kept.append(part)
    return b"&".join(kept), values
