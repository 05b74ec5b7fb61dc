"""Starlette integration: an ``AuthenticationBackend``, ``@require(...)`` and error handlers.

::

    app = Starlette(
        routes=routes,
        middleware=[authentication_middleware(validator, policy="policy.yaml")],
        exception_handlers=exception_handlers,
    )

    @require("items:delete", target=lambda request: {"project_id": ...})
    async def delete_item(request): ...

``request.user`` is an :class:`IdentityUser`, ``request.auth`` an
:class:`IdentityCredentials` whose scopes are ``"authenticated"`` plus the
roles (as given and lower-cased), so Starlette's own ``@requires("admin")``
works too. A bad token is answered 401 (not Starlette's default 400).
Starlette's ``@requires`` answers 403 even when nobody is authenticated;
:func:`require` answers 401 then, 403 only for a denied identity.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .. import _checks
from ..core import AuthCore
from ..errors import AuthError, Forbidden, IdentityServiceUnavailable, NotAuthenticated
from ..identity import Identity
from ..pipeline import Pipeline
from ..policy import Policy
from ..responses import Rejection, websocket_close_code
from ..validators.base import Validator
from . import (
    IDENTITY_KEY,
    PolicySpec,
    RequirementSpec,
    SpecResolver,
    as_policy,
    rejection_for,
    resolver_for,
)

__all__ = [
    "POLICY_KEY",
    "AuthMWAuthenticationMiddleware",
    "AuthMWBackend",
    "IdentityCredentials",
    "IdentityUser",
    "RejectedCredentials",
    "authentication_middleware",
    "authorize",
    "deny_websocket",
    "exception_handlers",
    "get_identity",
    "get_policy",
    "on_error",
    "require",
]

F = TypeVar("F", bound=Callable[..., Any])
TargetFactory = Callable[[HTTPConnection], "Mapping[str, Any] | None"]

POLICY_KEY = "authmw.policy"


class IdentityUser(BaseUser):
    """``request.user`` for a token; ``identity`` is the user id, as Starlette expects."""

    def __init__(self, identity: Identity) -> None:
        self.token_identity = identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.token_identity.user_name or self.token_identity.user_id

    @property
    def identity(self) -> str:
        return self.token_identity.user_id

    @property
    def roles(self) -> tuple[str, ...]:
        return self.token_identity.roles


class IdentityCredentials(AuthCredentials):
    """``request.auth``: scopes for ``@requires``, and the :class:`~authmw.Identity`."""

    def __init__(self, identity: Identity) -> None:
        scopes = ["authenticated"]
        for role in identity.roles:
            for name in (role, role.lower()):
                if name not in scopes:
                    scopes.append(name)
        super().__init__(scopes)
        self.identity = identity


class RejectedCredentials(AuthenticationError):
    """The token was rejected; carries the response the middleware would send."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason or "invalid credentials")
        self.rejection = rejection


class AuthMWBackend(AuthenticationBackend):
    """Authenticates through authmw's pipeline (or takes the identity
    :class:`~authmw.asgi.ASGIAuthMiddleware` already found).

    With neither ``validator`` nor ``core`` it only reads that middleware's
    result. A request without a token is anonymous (routes decide); a bad
    token raises :class:`RejectedCredentials` (401, or 503 when the
    identity service cannot answer). Inside Starlette's own
    ``AuthenticationMiddleware`` the request's scope is cleaned in place;
    :func:`authentication_middleware` gives the app a cleaned copy instead.
    """

    @_checks.passing_keywords_to(AuthCore.__init__)
    def __init__(
        self, validator: Validator | None = None, *, core: AuthCore | None = None, **options: Any
    ) -> None:
        self.pipeline = Pipeline.build_if_configured(validator, core, options, anonymous=True)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        scope = conn.scope
        if IDENTITY_KEY not in scope and self.pipeline is not None:
            _, decision = await self.pipeline.run_scope(scope, copy=False)
            if decision.rejection is not None:
                raise RejectedCredentials(decision.rejection)
        return _auth(scope.get(IDENTITY_KEY))


def _auth(identity: Identity | None) -> tuple[AuthCredentials, BaseUser] | None:
    if identity is None:
        return None
    return IdentityCredentials(identity), IdentityUser(identity)


def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """``AuthenticationMiddleware`` error handler: the pipeline's 401/503, never 400."""
    if isinstance(exc, RejectedCredentials):
        return _response(exc.rejection)
    return _response(rejection_for(NotAuthenticated(str(exc) or ""), conn.scope))


_on_error = on_error


class AuthMWAuthenticationMiddleware(AuthenticationMiddleware):
    """Starlette's middleware on authmw's pipeline, plus the policy in scope.

    With an :class:`AuthMWBackend` the app gets a copy of the scope without
    forged identity headers and with the identity's; a rejected websocket
    gets the HTTP response when the server offers the denial-response
    extension, else a close with code 1008 (1013 for 503).
    """

    def __init__(
        self,
        app: ASGIApp,
        backend: AuthenticationBackend,
        on_error: Callable[[HTTPConnection, AuthenticationError], Response] | None = None,
        policy: PolicySpec = None,
    ) -> None:
        super().__init__(app, backend, on_error or _on_error)
        self.policy = as_policy(policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        pipeline = getattr(self.backend, "pipeline", None)
        if not isinstance(pipeline, Pipeline) or IDENTITY_KEY in scope:
            await self._with_backend(scope, receive, send)
            return
        scope, decision = pipeline.begin_scope(scope)
        if decision is None:  # not in the cache: ask the validator
            decision = await pipeline.resolve_scope(scope)
        if decision.rejection is not None:
            await pipeline.send_rejection(scope, receive, send, decision.rejection)
            return
        self._set_user(scope, _auth(decision.identity))
        receive, send, done = pipeline.app_channels(scope, decision, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            if done is not None:
                done()

    async def _with_backend(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's own flow, for other backends or an identity found further out."""
        conn = HTTPConnection(scope)
        try:
            auth_result = await self.backend.authenticate(conn)
        except AuthenticationError as exc:
            response = self.on_error(conn, exc)
            if scope["type"] == "websocket":
                await _deny_websocket_response(WebSocket(scope, receive, send), response)
            else:
                await response(scope, receive, send)
            return
        self._set_user(scope, auth_result)
        await self.app(scope, receive, send)

    def _set_user(self, scope: Scope, auth: tuple[AuthCredentials, BaseUser] | None) -> None:
        if self.policy is not None:
            scope[POLICY_KEY] = self.policy
        scope["auth"], scope["user"] = auth or (AuthCredentials(), UnauthenticatedUser())


@_checks.passing_keywords_to(AuthCore.__init__)
def authentication_middleware(
    validator: Validator | None = None,
    *,
    core: AuthCore | None = None,
    policy: PolicySpec = None,
    **options: Any,
) -> Middleware:
    """``Middleware(...)`` entry for ``Starlette(middleware=[...])``."""
    backend = AuthMWBackend(validator, core=core, **options)
    return Middleware(AuthMWAuthenticationMiddleware, backend=backend, policy=policy)


def get_identity(conn: HTTPConnection) -> Identity | None:
    """The connection's identity (from the backend or the ASGI middleware), or None."""
    auth = conn.scope.get("auth")
    if isinstance(auth, IdentityCredentials):
        return auth.identity
    identity: Identity | None = conn.scope.get(IDENTITY_KEY)
    return identity


def get_policy(conn: HTTPConnection) -> Policy | None:
    """The policy set by :func:`authentication_middleware` (or ``app.state.authmw_policy``)."""
    policy: Policy | None = conn.scope.get(POLICY_KEY)
    if policy is None and "app" in conn.scope:
        policy = getattr(conn.app.state, "authmw_policy", None)
    return policy


def _response(rejection: Rejection) -> Response:
    return Response(rejection.body, rejection.status, headers=dict(rejection.headers))


async def deny_websocket(websocket: WebSocket, rejection: Rejection) -> None:
    """Refuse a websocket before ``accept``: the HTTP response if the server can send one."""
    await _deny_websocket_response(websocket, _response(rejection))


async def _deny_websocket_response(websocket: WebSocket, response: Response) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=websocket_close_code(response.status_code))


def authorize(
    conn: HTTPConnection, spec: RequirementSpec, target: Mapping[str, Any] | None = None
) -> Identity:
    """Check ``spec`` inside an endpoint; raises ``NotAuthenticated``/``Forbidden``
    (answered by :data:`exception_handlers`)."""
    identity = get_identity(conn)
    if identity is None:
        raise NotAuthenticated()
    return resolver_for(spec).authorize(get_policy(conn), identity, target)


def _denial(
    resolver: SpecResolver, target: TargetFactory | None, conn: HTTPConnection
) -> Rejection | None:
    identity = get_identity(conn)
    try:
        if identity is None:
            raise NotAuthenticated()
        resolver.authorize(get_policy(conn), identity, target(conn) if target else None)
    except (NotAuthenticated, Forbidden) as exc:
        return rejection_for(exc, conn.scope)
    return None


def _connection(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError("@require needs an endpoint that takes a Request or WebSocket")


def require(spec: RequirementSpec, *, target: TargetFactory | None = None) -> Callable[[F], F]:
    """Endpoint decorator: 401 without an identity, 403 unless ``spec`` allows.

    Works on request and websocket endpoints (a websocket is refused before
    ``accept``) and on ``HTTPEndpoint`` methods. ``target(request)`` gives the
    target the rule is checked against.
    """
    resolver = SpecResolver(spec)

    def decorator(endpoint: F) -> F:
        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                conn = _connection(args, kwargs)
                denial = _denial(resolver, target, conn)
                if denial is None:
                    return await endpoint(*args, **kwargs)
                if isinstance(conn, WebSocket):
                    await deny_websocket(conn, denial)
                    return None
                return _response(denial)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(endpoint)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                denial = _denial(resolver, target, _connection(args, kwargs))
                if denial is not None:
                    return _response(denial)
                return endpoint(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__authmw_requirement__ = resolver
        return cast(F, wrapper)

    return decorator


async def handle_auth_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    """Exception handler: authmw errors raised in endpoints become 401/403/503."""
    rejection = rejection_for(cast(AuthError, exc), conn.scope)
    if isinstance(conn, WebSocket):
        await deny_websocket(conn, rejection)
        return None
    return _response(rejection)


exception_handlers: dict[Any, Callable[..., Any]] = {
    NotAuthenticated: handle_auth_error,
    Forbidden: handle_auth_error,
    IdentityServiceUnavailable: handle_auth_error,
}
"""Pass as ``Starlette(exception_handlers=...)`` (or merge into yours)."""
