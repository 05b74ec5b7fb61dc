"""The request pipeline: every per-request step, once, for every entry point.

    strip -> find the credentials -> public route -> decide -> inject -> answer

Entry points (the WSGI and ASGI middleware, Django, DRF, Starlette, FastAPI,
Flask) only translate their framework's request into these steps' input
and the result back; none of them reads a header name, strips a header,
builds an error body or picks a status. Requests come in two shapes, a
WSGI environ (also Django's ``request.META``) and an ASGI scope's header
list; each step has a form for each.

Stripping happens first, on every request, public routes and rejected
requests included: a client-sent identity header never reaches the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, NamedTuple

from . import headers as _headers
from .core import AuthCore, Decision
from .errors import ConfigurationError
from .responses import Rejection, websocket_close_code
from .validators.base import Validator

__all__ = ["ANONYMOUS", "PUBLIC", "Credentials", "Pipeline"]

Environ = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StartResponse = Callable[..., Any]
HeaderList = list[tuple[bytes, bytes]]

IDENTITY_KEY = _headers.IDENTITY_KEY
SERVICE_IDENTITY_KEY = _headers.SERVICE_IDENTITY_KEY
RESPONSES_KEY = _headers.RESPONSES_KEY
CREDENTIALS_KEY = "authmw.credentials"
"""Where a pipeline that decides later (FastAPI dependencies) keeps what the scan found."""


class Credentials(NamedTuple):
    """What a request carries: raw header values (None when absent).

    ``preflight`` is True for a CORS preflight (``OPTIONS`` with ``Origin``
    and ``Access-Control-Request-Method``), which browsers send without
    credentials.
    """

    token: str | None = None
    service_token: str | None = None
    fiware_service: str | None = None
    fiware_service_path: str | None = None
    preflight: bool = False


PUBLIC = Decision(None, status="Invalid", public=True)
"""The decision for a request on a public route: nothing checked, no identity."""
ANONYMOUS = Decision(None, status="Invalid")
"""The decision for a request without credentials where anonymous requests pass."""

_NO_CREDENTIALS = Credentials()

# Header categories for ASGI header lists, decided once per raw header name.
_KEEP, _STRIP, _TOKEN, _SERVICE_TOKEN, _FIWARE_SERVICE, _FIWARE_PATH, _ORIGIN, _ACRM = range(8)
_NAME_MEMO_MAX = 4096
_STATUS_KEY = _headers.environ_key(_headers.IDENTITY_STATUS)
_SERVICE_STATUS_KEY = _headers.environ_key(_headers.SERVICE_IDENTITY_STATUS)
_FIWARE_SERVICE_KEY = _headers.environ_key(_headers.FIWARE_SERVICE)
_FIWARE_PATH_KEY = _headers.environ_key(_headers.FIWARE_SERVICE_PATH)
_ORIGIN_KEY = _headers.environ_key(_headers.ORIGIN)
_ACRM_KEY = _headers.environ_key(_headers.ACCESS_CONTROL_REQUEST_METHOD)
_STATUS_NAME = _headers.IDENTITY_STATUS.lower().encode()
_SERVICE_STATUS_NAME = _headers.SERVICE_IDENTITY_STATUS.lower().encode()


class Pipeline:
    """The per-request steps for one :class:`~authmw.AuthCore`.

    ``anonymous``: a request that carries no credential at all is passed on
    without an identity (``X-Identity-Status: Invalid``) instead of being
    answered 401, for integrations where each route decides (Starlette's
    authentication, FastAPI dependencies, DRF). A bad credential is still
    answered 401 (unless the core delays decisions).
    """

    __slots__ = ("_names", "_service_key", "_token_key", "anonymous", "core", "responses")

    def __init__(self, core: AuthCore, *, anonymous: bool = False) -> None:
        self.core = core
        self.responses = core.responses
        self.anonymous = anonymous
        self._token_key = _headers.environ_key(core.token_header)
        self._service_key = _headers.environ_key(core.service_token_header)
        self._names: dict[bytes, int] = {}

    @classmethod
    def build(
        cls,
        validator: Validator | None,
        core: AuthCore | None,
        options: dict[str, Any],
        *,
        anonymous: bool = False,
    ) -> Pipeline:
        """A pipeline on ``core``, or on a core built from ``validator`` and ``options``."""
        return cls(AuthCore.for_middleware(validator, core, options), anonymous=anonymous)

    @classmethod
    def build_if_configured(
        cls,
        validator: Validator | None,
        core: AuthCore | None,
        options: dict[str, Any],
        *,
        anonymous: bool = False,
    ) -> Pipeline | None:
        """Like :meth:`build`, but None without a validator or core (an integration that
        only reads what a middleware further out found)."""
        if validator is None and core is None:
            if options:
                raise ConfigurationError(
                    next(iter(options)), "middleware options need a validator (or core=)"
                )
            return None
        return cls.build(validator, core, options, anonymous=anonymous)

    # -- 1, 2: strip, find the credentials ----------------------------------------------
    def scan_environ(self, environ: Environ) -> Credentials:
        """Strip forged identity headers from ``environ`` (in place); the credentials."""
        _headers.strip_environ(environ)
        get = environ.get
        preflight = (
            get("REQUEST_METHOD") == "OPTIONS" and _ORIGIN_KEY in environ and _ACRM_KEY in environ
        )
        if self.core.fiware_service_scope:
            return Credentials(
                get(self._token_key),
                get(self._service_key),
                get(_FIWARE_SERVICE_KEY),
                get(_FIWARE_PATH_KEY),
                preflight,
            )
        token, service = get(self._token_key), get(self._service_key)
        if token is None and service is None and not preflight:
            return _NO_CREDENTIALS
        return Credentials(token, service, preflight=preflight)

    def scan_headers(
        self, headers: Iterable[tuple[bytes, bytes]], method: str
    ) -> tuple[HeaderList, Credentials]:
        """The header list without forged identity headers, and the credentials."""
        memo_get = self._names.get
        kept: HeaderList = []
        found: list[tuple[int, bytes]] = []
        for item in headers:
            category = memo_get(item[0])
            if category is None:
                category = self._category(item[0])
            if category == _KEEP:
                kept.append(item)
            elif category != _STRIP:
                kept.append(item)
                found.append((category, item[1]))
        if not found:
            return kept, _NO_CREDENTIALS
        return kept, self._credentials(found, method)

    def _category(self, name: bytes) -> int:
        folded = name.lower().replace(b"_", b"-").decode("latin-1")
        core = self.core
        if folded == core.token_header.lower():
            category = _TOKEN
        elif folded == core.service_token_header.lower():
            category = _SERVICE_TOKEN
        elif _headers.is_stripped(folded):
            category = _STRIP
        elif folded == _headers.FIWARE_SERVICE.lower() and core.fiware_service_scope:
            category = _FIWARE_SERVICE
        elif folded == _headers.FIWARE_SERVICE_PATH.lower() and core.fiware_service_scope:
            category = _FIWARE_PATH
        elif folded == _headers.ORIGIN.lower():
            category = _ORIGIN
        elif folded == _headers.ACCESS_CONTROL_REQUEST_METHOD.lower():
            category = _ACRM
        else:
            category = _KEEP
        # Bounded: names an attacker invents are classified each time once full.
        if len(self._names) < _NAME_MEMO_MAX:
            self._names[name] = category
        return category

    @staticmethod
    def _credentials(found: list[tuple[int, bytes]], method: str) -> Credentials:
        values: dict[int, list[bytes]] = {}
        for category, value in found:
            values.setdefault(category, []).append(value)
        preflight = method == "OPTIONS" and _ORIGIN in values and _ACRM in values
        return Credentials(
            _joined(values.get(_TOKEN)),
            _joined(values.get(_SERVICE_TOKEN)),
            _joined(values.get(_FIWARE_SERVICE)),
            _joined(values.get(_FIWARE_PATH)),
            preflight,
        )

    # -- 3: public routes ------------------------------------------------------------------
    def is_public_environ(
        self, environ: Environ, credentials: Credentials, raw_path: str | None = None
    ) -> bool:
        """True if this WSGI request is on a public route."""
        routes = self.core.public_routes
        return routes.enabled and routes.match(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            raw_path or environ.get("RAW_URI") or environ.get("REQUEST_URI"),
            credentials.preflight,
        )

    def is_public_scope(self, scope: Scope, credentials: Credentials) -> bool:
        """True if this ASGI request is on a public route (``path`` without ``root_path``)."""
        routes = self.core.public_routes
        if not routes.enabled:
            return False
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        raw_path = scope.get("raw_path")
        return routes.match(
            _method(scope),
            path,
            raw_path.decode("latin-1") if raw_path else None,
            credentials.preflight,
        )

    # -- 4: decide -----------------------------------------------------------------------------
    def decide(self, credentials: Credentials) -> Decision:
        """The decision for these credentials, blocking on the validator when needed."""
        if credentials.token is None and credentials.service_token is None and self.anonymous:
            return ANONYMOUS
        return self.core.authenticate(*credentials[:4])

    async def adecide(self, credentials: Credentials) -> Decision:
        """The decision for these credentials, awaiting the validator when needed."""
        if credentials.token is None and credentials.service_token is None and self.anonymous:
            return ANONYMOUS
        return await self.core.authenticate_async(*credentials[:4])

    # -- 5: inject -------------------------------------------------------------------------------
    @staticmethod
    def inject_environ(environ: Environ, decision: Decision) -> None:
        """Put the identity and its headers into ``environ``."""
        items = decision.environ_items
        if items is None:
            items = decision.environ_items = _environ_items(decision)
        environ.update(items)

    @staticmethod
    def inject_scope(scope: Scope, decision: Decision) -> None:
        """Put the identity into ``scope`` and its headers into ``scope["headers"]`` (in place)."""
        items = decision.header_items
        if items is None:
            items = decision.header_items = _header_items(decision)
        if items:
            scope["headers"].extend(items)
        scope[IDENTITY_KEY] = decision.identity
        if decision.service_status is not None:
            scope[SERVICE_IDENTITY_KEY] = decision.service_identity

    # -- the whole run, per request shape -------------------------------------------------------
    def run_environ(self, environ: Environ, raw_path: str | None = None) -> Decision:
        """Every step on a WSGI environ (changed in place); answer the rejection if any."""
        credentials = self.scan_environ(environ)
        environ[RESPONSES_KEY] = self.responses
        if self.is_public_environ(environ, credentials, raw_path):
            decision = PUBLIC
        else:
            decision = self.decide(credentials)
        if decision.rejection is None:
            self.inject_environ(environ, decision)
        return decision

    async def arun_environ(self, environ: Environ, raw_path: str | None = None) -> Decision:
        """:meth:`run_environ`, awaiting the validator."""
        credentials = self.scan_environ(environ)
        environ[RESPONSES_KEY] = self.responses
        if self.is_public_environ(environ, credentials, raw_path):
            decision = PUBLIC
        else:
            decision = await self.adecide(credentials)
        if decision.rejection is None:
            self.inject_environ(environ, decision)
        return decision

    def prepare_scope(self, scope: Scope, *, copy: bool = True) -> tuple[Scope, Credentials | None]:
        """Strip: a scope whose ``headers`` hold no forged identity header.

        ``copy``: the result is a shallow copy (the server's scope is never
        changed); else ``scope`` is changed in place (for code that runs
        after its request objects were made). The credentials are None on a
        public route.
        """
        headers, credentials = self.scan_headers(scope.get("headers") or (), _method(scope))
        if copy:
            scope = dict(scope)
            scope["headers"] = headers
        else:
            current = scope.get("headers")
            if isinstance(current, list):
                current[:] = headers  # request objects made earlier hold this list
            else:
                scope["headers"] = headers
        scope[RESPONSES_KEY] = self.responses
        if self.is_public_scope(scope, credentials):
            scope[IDENTITY_KEY] = None
            return scope, None
        return scope, credentials

    async def run_scope(self, scope: Scope, *, copy: bool = True) -> tuple[Scope, Decision]:
        """Every step on an ASGI scope; the scope to call the app with and the decision."""
        scope, credentials = self.prepare_scope(scope, copy=copy)
        if credentials is None:
            return scope, PUBLIC
        decision = await self.adecide(credentials)
        if decision.rejection is None:
            self.inject_scope(scope, decision)
        return scope, decision

    def defer_scope(self, scope: Scope) -> Scope:
        """Strip now, decide later (:meth:`resolve_scope`): the scope keeps the credentials."""
        scope, credentials = self.prepare_scope(scope)
        if credentials is not None:
            scope[CREDENTIALS_KEY] = credentials
        return scope

    async def resolve_scope(self, scope: Scope) -> Decision:
        """Decide later: for a scope :meth:`prepare_scope` kept the credentials of."""
        if IDENTITY_KEY in scope:
            identity = scope[IDENTITY_KEY]
            return Decision(identity) if identity is not None else ANONYMOUS
        credentials = scope.get(CREDENTIALS_KEY)
        if not isinstance(credentials, Credentials):
            credentials = _NO_CREDENTIALS
        decision = await self.adecide(credentials)
        if decision.rejection is None:
            self.inject_scope(scope, decision)
        return decision

    # -- 6: answer --------------------------------------------------------------------------------
    def challenging_start_response(self, start_response: StartResponse) -> StartResponse:
        """``start_response`` adding the challenge to the app's own 401 (no identity)."""
        challenge = self.responses.challenge_header
        needs = self.responses.needs_challenge

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[:3] == "401" and needs(401, (n for n, _ in headers)):
                headers = [*headers, challenge]
            return start_response(status, headers, exc_info)

        return start

    def challenging_send(self, send: Send) -> Send:
        """ASGI ``send`` adding the challenge to the app's own 401 (no identity)."""
        name, value = self.responses.challenge_header
        challenge = (name.lower().encode("latin-1"), value.encode("latin-1"))
        needs = self.responses.needs_challenge
        starts = ("http.response.start", "websocket.http.response.start")

        async def challenging_send(message: Message) -> None:
            if message.get("type") in starts and message.get("status") == 401:
                response_headers = list(message.get("headers") or ())
                if needs(401, (n for n, _ in response_headers)):
                    message = dict(message)
                    message["headers"] = [*response_headers, challenge]
            await send(message)

        return challenging_send

    @staticmethod
    async def send_rejection(
        scope: Scope, receive: Receive, send: Send, rejection: Rejection
    ) -> None:
        """Answer an ASGI request with ``rejection`` (HTTP, or a websocket before accept)."""
        headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in rejection.headers]
        if scope["type"] == "http":
            await send(
                {"type": "http.response.start", "status": rejection.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": rejection.body})
            return
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # client already gone
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": rejection.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": rejection.body})
            return
        await send(
            {
                "type": "websocket.close",
                "code": websocket_close_code(rejection.status),
                "reason": "",
            }
        )


def _method(scope: Scope) -> str:
    return str(scope.get("method", "GET")) if scope["type"] == "http" else "GET"


def _joined(values: list[bytes] | None) -> str | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0].decode("latin-1")
    # Same form as a WSGI server's folded header: the core refuses disagreement.
    return ",".join(v.decode("latin-1") for v in values)


def _environ_items(decision: Decision) -> tuple[tuple[str, Any], ...]:
    if decision.public:
        return ((IDENTITY_KEY, None),)
    identity = decision.identity
    items: list[tuple[str, Any]] = [(IDENTITY_KEY, identity), (_STATUS_KEY, decision.status)]
    if identity is not None:
        items.extend(_headers.wsgi_items(identity))
    if decision.service_status is not None:
        service = decision.service_identity
        items.append((_SERVICE_STATUS_KEY, decision.service_status))
        items.append((SERVICE_IDENTITY_KEY, service))
        if service is not None and decision.service_status == "Confirmed":
            items.extend(_headers.wsgi_items(service, service=True))
    return tuple(items)


def _header_items(decision: Decision) -> tuple[tuple[bytes, bytes], ...]:
    if decision.public:
        return ()
    identity = decision.identity
    items: list[tuple[bytes, bytes]] = []
    if identity is not None:
        items.extend(_headers.asgi_items(identity))
    items.append((_STATUS_NAME, decision.status.encode()))
    if decision.service_status is not None:
        items.append((_SERVICE_STATUS_NAME, decision.service_status.encode()))
        service = decision.service_identity
        if service is not None and decision.service_status == "Confirmed":
            items.extend(_headers.asgi_items(service, service=True))
    return tuple(items)
