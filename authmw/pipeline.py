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

from collections.abc import Callable
from typing import Any

from . import _inject
from . import headers as _headers
from ._answer import Answering
from ._observe import Observer
from ._scan import NO_CREDENTIALS, Credentials, HeaderList, Scanner
from ._types import Environ, Scope
from ._websockets import SocketWatch
from .core import AuthCore, Decision
from .errors import ConfigurationError
from .identity import Identity
from .restrictions import Refusal, RequestFacts, refusal
from .validators.base import Validator

__all__ = ["ANONYMOUS", "PUBLIC", "Credentials", "Pipeline"]

Access = Callable[[Identity, RequestFacts], "Refusal | None"]
"""A check of a confirmed identity against the request (the forward-auth server's
route policy): None to allow, or a :class:`~authmw.restrictions.Refusal`."""

IDENTITY_KEY = _headers.IDENTITY_KEY
SERVICE_IDENTITY_KEY = _headers.SERVICE_IDENTITY_KEY
RESPONSES_KEY = _headers.RESPONSES_KEY
CREDENTIALS_KEY = "authmw.credentials"
"""Where a pipeline that decides later (FastAPI dependencies) keeps what the scan found."""

PUBLIC = Decision(None, status="Invalid", public=True)
"""The decision for a request on a public route: nothing checked, no identity."""
ANONYMOUS = Decision(None, status="Invalid")
"""The decision for a request without credentials where anonymous requests pass."""

_FORWARDED_KEY = _headers.environ_key(_headers.X_FORWARDED_FOR)
_FORWARDED_NAME = _headers.X_FORWARDED_FOR.lower().encode()
_REQUEST_ID_KEYS = tuple(_headers.environ_key(name) for name in _headers.REQUEST_IDS)
_REQUEST_ID_NAMES = frozenset(name.lower().encode() for name in _headers.REQUEST_IDS)


class Pipeline(Answering):
    """The per-request steps for one :class:`~authmw.AuthCore`.

    ``anonymous``: a request that carries no credential at all is passed on
    without an identity (``X-Identity-Status: Invalid``) instead of being
    answered 401, for integrations where each route decides (Starlette's
    authentication, FastAPI dependencies, DRF). A bad credential is still
    answered 401 (unless the core delays decisions).

    ``access``: checked for every confirmed identity, cache hits included,
    after the token's own restrictions and in the same way (a refusal is
    answered 403, or 401).
    """

    __slots__ = (
        "_fast_key",
        "_service_key",
        "access",
        "anonymous",
        "core",
        "observer",
        "responses",
        "scanner",
        "sockets",
    )

    def __init__(
        self, core: AuthCore, *, anonymous: bool = False, access: Access | None = None
    ) -> None:
        self.core = core
        self.access = access
        self.responses = core.responses
        self.anonymous = anonymous
        self.scanner = Scanner(core)
        self.sockets = SocketWatch(core.timer)
        core.cache.add_revocation_listener(self.sockets.revoked)
        # Audit, tracing, throttling: a slower path of its own, taken only when asked for.
        watched = core.on_decision, core.tracing, core.throttle
        self.observer = Observer(self) if any(w is not None for w in watched) else None
        # The hot path (see _cached_environ) serves the common configuration: one
        # token header kept as sent, no FIWARE scope, nothing observed.
        fast = self.observer is None and not core.fiware_service_scope
        self._fast_key = self.scanner.simple_key if fast else None
        self._service_key = _headers.environ_key(core.service_token_header)

    @classmethod
    def build(
        cls,
        validator: Validator | None,
        core: AuthCore | None,
        options: dict[str, Any],
        *,
        anonymous: bool = False,
        access: Access | None = None,
    ) -> Pipeline:
        """A pipeline on ``core``, or on a core built from ``validator`` and ``options``."""
        core = AuthCore.for_middleware(validator, core, options)
        return cls(core, anonymous=anonymous, access=access)

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
        return self.scanner.environ(environ)

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
    def cached_decision(self, credentials: Credentials) -> Decision | None:
        """The decision when no validator call is needed (refusals, anonymity, the
        in-process cache), else None."""
        if credentials.problem is not None:
            return self.core.refuse(credentials.problem, credentials.source)
        if credentials.service_token is None:
            if credentials.token is None and self.anonymous:
                return ANONYMOUS
            if not self.core.fiware_service_scope:
                return self.core.cached(credentials.token, credentials.source)
        return None

    def decide(self, credentials: Credentials) -> Decision:
        """The decision for these credentials, blocking on the validator when needed."""
        decision = self.cached_decision(credentials)
        return decision if decision is not None else self.validated(credentials)

    async def adecide(self, credentials: Credentials) -> Decision:
        """The decision for these credentials, awaiting the validator when needed."""
        decision = self.cached_decision(credentials)
        return decision if decision is not None else await self.avalidated(credentials)

    def validated(self, credentials: Credentials) -> Decision:
        """The decision, asking the validator (blocking)."""
        return self.core.authenticate(
            credentials.token,
            credentials.service_token,
            credentials.fiware_service,
            credentials.fiware_service_path,
            credentials.source,
        )

    async def avalidated(self, credentials: Credentials) -> Decision:
        """The decision, asking the validator (awaiting)."""
        return await self.core.authenticate_async(
            credentials.token,
            credentials.service_token,
            credentials.fiware_service,
            credentials.fiware_service_path,
            credentials.source,
        )

    # -- what restrictions, audit and throttling look at -------------------------------------
    def environ_facts(self, environ: Environ) -> RequestFacts:
        """The request's facts (client through ``trusted_proxies``, request id)."""
        get = environ.get
        return RequestFacts(
            get("REQUEST_METHOD", ""),
            get("PATH_INFO", ""),
            self.core.clients.client(get("REMOTE_ADDR"), get(_FORWARDED_KEY)),
            False,
            get("SCRIPT_NAME", ""),
            next((get(key) for key in _REQUEST_ID_KEYS if key in environ), None),
        )

    def scope_facts(self, scope: Scope) -> RequestFacts:
        """The facts of an ASGI request (path inside the app, ``root_path`` apart)."""
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        forwarded: list[str] = []
        request_id = None
        for name, value in scope.get("headers") or ():
            folded = name.lower()
            if folded == _FORWARDED_NAME:
                forwarded.append(value.decode("latin-1"))
            elif folded in _REQUEST_ID_NAMES and request_id is None:
                request_id = value.decode("latin-1")
        client = scope.get("client")
        return RequestFacts(
            _method(scope),
            path,
            self.core.clients.client(client[0] if client else None, ",".join(forwarded)),
            False,
            root_path,
            request_id,
        )

    def restricted(self, decision: Decision, request: RequestFacts, source: int = 0) -> Decision:
        """The decision once the token's own restrictions, then ``access``, have looked
        at ``request`` (a 401 challenges as the token's ``source`` does)."""
        identity = decision.identity
        if identity is None or not (identity.restrictions or self.access):
            return decision
        request = request._replace(service_token=decision.service_status == "Confirmed")
        refused = None
        if identity.restrictions:
            token_id = identity.audit_ids[0] if identity.audit_ids else None
            refused = refusal(identity.restrictions, request, token_id)
        if refused is None and self.access is not None:
            refused = self.access(identity, request)
        if refused is None:
            return decision
        if refused.status == 401:
            if self.core.delay_auth_decision:
                return Decision(
                    None,
                    status="Invalid",
                    service_identity=decision.service_identity,
                    service_status=decision.service_status,
                )
            return Decision(None, self.core.unauthorized(refused.message, source))
        return Decision(None, self.responses.forbidden(refused.message))

    # -- 5: inject -------------------------------------------------------------------------------
    inject_environ = staticmethod(_inject.inject_environ)
    inject_scope = staticmethod(_inject.inject_scope)
    header_items = staticmethod(_inject.scope_header_items)

    # -- the whole run, per request shape -------------------------------------------------------
    def run_environ(self, environ: Environ, raw_path: str | None = None) -> Decision:
        """Every step on a WSGI environ (changed in place); answer the rejection if any."""
        if self._fast_key is not None:
            decision = self._cached_environ(environ, self._fast_key, raw_path)
            if decision is not None:
                return decision
        credentials = self.scanner.environ(environ)
        environ[RESPONSES_KEY] = self.responses
        if self.is_public_environ(environ, credentials, raw_path):
            return self._public_environ(environ)
        if self.observer is not None:
            decision = self.observer.decide(credentials, self.environ_facts(environ))
            return self._inject_environ(environ, decision)
        return self._finish_environ(environ, self.decide(credentials), credentials.source)

    async def arun_environ(self, environ: Environ, raw_path: str | None = None) -> Decision:
        """:meth:`run_environ`, awaiting the validator."""
        if self._fast_key is not None:
            decision = self._cached_environ(environ, self._fast_key, raw_path)
            if decision is not None:
                return decision
        credentials = self.scanner.environ(environ)
        environ[RESPONSES_KEY] = self.responses
        if self.is_public_environ(environ, credentials, raw_path):
            return self._public_environ(environ)
        if self.observer is not None:
            decision = await self.observer.adecide(credentials, self.environ_facts(environ))
            return self._inject_environ(environ, decision)
        return self._finish_environ(environ, await self.adecide(credentials), credentials.source)

    def _cached_environ(self, environ: Environ, key: str, raw_path: str | None) -> Decision | None:
        """The hot path: the steps for a request whose token the cache knows, with
        fewer calls; None sends the request down the full path (nothing is lost:
        stripping twice is harmless)."""
        _headers.strip_environ(environ)
        token = environ.get(key)
        if token is None or self._service_key in environ:
            return None
        if self.core.public_routes.enabled and (
            environ.get("REQUEST_METHOD") == "OPTIONS"  # a preflight maybe: the full path
            or self.is_public_environ(environ, NO_CREDENTIALS, raw_path)
        ):
            return None
        decision = self.core.cached(token)  # also a remembered rejection, once counted
        if decision is None:
            return None
        environ[RESPONSES_KEY] = self.responses
        identity = decision.identity
        if identity is not None and not (identity.restrictions or self.access):
            _inject.inject_environ(environ, decision)
            return decision
        return self._finish_environ(environ, decision)

    def _public_environ(self, environ: Environ) -> Decision:
        if self.observer is not None:
            self.observer.record(PUBLIC, None, self.environ_facts(environ), None, False)
        return self._inject_environ(environ, PUBLIC)

    def _finish_environ(self, environ: Environ, decision: Decision, source: int = 0) -> Decision:
        identity = decision.identity
        if identity is not None and (identity.restrictions or self.access):
            decision = self.restricted(decision, self.environ_facts(environ), source)
        return self._inject_environ(environ, decision)

    def _inject_environ(self, environ: Environ, decision: Decision) -> Decision:
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
        headers, credentials, changes = self.scanner.scope(scope)
        if copy:
            scope = dict(scope)
            scope["headers"] = headers
        else:
            current = scope.get("headers")
            if isinstance(current, list):
                current[:] = headers  # request objects made earlier hold this list
            else:
                scope["headers"] = headers
        if changes:
            scope.update(changes)
        scope[RESPONSES_KEY] = self.responses
        if self.core.public_routes.enabled and self.is_public_scope(scope, credentials):
            scope[IDENTITY_KEY] = None
            return scope, None
        return scope, credentials

    def begin_scope(self, scope: Scope, *, copy: bool = True) -> tuple[Scope, Decision | None]:
        """Every step that needs no validator call: the scope to call the app with, and
        the decision, or None when :meth:`resolve_scope` must await the validator."""
        if self._fast_key is not None and copy and scope["type"] == "http":
            found = self.scanner.scope_token(scope.get("headers") or [])
            if found is not None:
                decided = self._cached_scope(scope, *found)
                if decided is not None:
                    return decided
        scope, credentials = self.prepare_scope(scope, copy=copy)
        if credentials is None:
            if self.observer is not None:
                self.observer.record(PUBLIC, None, self.scope_facts(scope), None, False)
            return scope, PUBLIC
        if self.observer is not None:  # the whole decision in resolve_scope, observed
            scope[CREDENTIALS_KEY] = credentials
            return scope, None
        decision = self.cached_decision(credentials)
        if decision is None:
            scope[CREDENTIALS_KEY] = credentials
            return scope, None
        identity = decision.identity
        if identity is not None:
            if identity.restrictions or self.access:
                return scope, self._finish_scope(scope, decision, credentials.source)
            _inject.inject_scope(scope, decision)  # the hot path: a cached token
            return scope, decision
        return scope, self._finish_scope(scope, decision, credentials.source)

    def _cached_scope(
        self, scope: Scope, headers: HeaderList, token: bytes
    ) -> tuple[Scope, Decision] | None:
        """The hot path of :meth:`begin_scope` (see :meth:`_cached_environ`): a copy of
        ``scope`` with ``headers`` and the identity, or None for the full path."""
        if self.core.public_routes.enabled and (
            scope.get("method") == "OPTIONS"  # a preflight maybe: the full path
            or self.is_public_scope(scope, NO_CREDENTIALS)
        ):
            return None
        decision = self.core.cached(token)
        if decision is None:
            return None
        scope = dict(scope)
        scope["headers"] = headers
        scope[RESPONSES_KEY] = self.responses
        identity = decision.identity
        if identity is not None and not (identity.restrictions or self.access):
            _inject.inject_scope(scope, decision)
            return scope, decision
        return scope, self._finish_scope(scope, decision)

    async def run_scope(self, scope: Scope, *, copy: bool = True) -> tuple[Scope, Decision]:
        """Every step on an ASGI scope; the scope to call the app with and the decision."""
        scope, decision = self.begin_scope(scope, copy=copy)
        if decision is None:
            decision = await self.resolve_scope(scope)
        return scope, decision

    def defer_scope(self, scope: Scope) -> Scope:
        """Strip now, decide later (:meth:`resolve_scope`): the scope keeps the credentials."""
        scope, credentials = self.prepare_scope(scope)
        if credentials is not None:
            scope[CREDENTIALS_KEY] = credentials
        return scope

    async def resolve_scope(self, scope: Scope) -> Decision:
        """Decide, awaiting the validator, for a scope whose credentials
        :meth:`begin_scope` or :meth:`defer_scope` kept."""
        if IDENTITY_KEY in scope:
            identity = scope[IDENTITY_KEY]
            return Decision(identity) if identity is not None else ANONYMOUS
        credentials = scope.pop(CREDENTIALS_KEY, None)
        if not isinstance(credentials, Credentials):
            credentials = NO_CREDENTIALS
        if self.observer is not None:
            decision = await self.observer.adecide(credentials, self.scope_facts(scope))
            if decision.rejection is None:
                self.inject_scope(scope, decision)
            return decision
        return self._finish_scope(scope, await self.adecide(credentials), credentials.source)

    def _finish_scope(self, scope: Scope, decision: Decision, source: int = 0) -> Decision:
        identity = decision.identity
        if identity is not None and (identity.restrictions or self.access):
            decision = self.restricted(decision, self.scope_facts(scope), source)
        if decision.rejection is None:
            self.inject_scope(scope, decision)
        return decision


def _method(scope: Scope) -> str:
    return str(scope.get("method", "GET")) if scope["type"] == "http" else "GET"
