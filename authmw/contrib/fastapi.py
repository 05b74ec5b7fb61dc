"""FastAPI integration: dependencies that check tokens and rules, on HTTP and websocket routes.

::

    app = FastAPI()
    setup(app, validator, policy="policy.yaml")

    @app.get("/items")
    async def list_items(identity: Identity = Depends(current_identity)): ...

    @app.post("/items", dependencies=[Depends(require_roles("member"))])
    async def create_item(): ...

    @app.get("/admin")
    async def admin(identity: Identity = Security(current_identity, scopes=["admin"])): ...

Every dependency declares the ``X-Auth-Token`` API-key scheme, so it shows
up in the OpenAPI document and the docs UI. Without :func:`setup`'s
validator the dependencies use the identity the ASGI middleware (or the
Starlette backend) found. 401 without an identity (with
``WWW-Authenticate``), 403 when denied, with the middleware's JSON body
once :func:`setup` has installed the exception handlers (FastAPI's
``{"detail": ...}`` body, with the same status codes, without them).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.security import APIKeyHeader, SecurityScopes
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from .. import _checks
from .. import headers as _headers
from .._types import Receive, Scope, Send
from ..asgi import ASGIAuthMiddleware
from ..core import AuthCore
from ..errors import ConfigurationError, Forbidden, NotAuthenticated
from ..identity import Identity
from ..pipeline import Pipeline
from ..policy import Policy
from ..policy import require_any_role as _require_any_role
from ..policy import require_roles as _require_roles
from ..responses import Rejection
from ..sources import Source
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
from .starlette import IdentityCredentials, deny_websocket
from .starlette import exception_handlers as _starlette_handlers

__all__ = [
    "AuthHTTPException",
    "AuthMWState",
    "authorize",
    "current_identity",
    "get_identity",
    "require",
    "require_any_role",
    "require_roles",
    "setup",
    "token_header",
]

log = logging.getLogger("authmw.contrib.fastapi")

TargetFactory = Callable[[HTTPConnection], Any]

_DESCRIPTION = "A Keystone (or authmw) token."

token_header = APIKeyHeader(
    name=_headers.AUTH_TOKEN,
    scheme_name=_headers.AUTH_TOKEN,
    description=_DESCRIPTION,
    auto_error=False,
)
"""The API-key scheme every authmw dependency declares in the OpenAPI document.

It only documents: the credential is read by authmw's pipeline, and
:func:`setup` replaces the scheme by one per configured token source."""


class AuthHTTPException(HTTPException):
    """A 401/403/503 carrying the pipeline's :class:`~authmw.responses.Rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        headers = {k: v for k, v in rejection.headers if k.lower() != "content-type"}
        super().__init__(rejection.status, rejection.reason, headers=headers)
        self.rejection = rejection


class AuthMWState:
    """What :func:`setup` keeps on ``app.state.authmw``."""

    def __init__(self, pipeline: Pipeline | None, policy: Policy | None) -> None:
        self.pipeline = pipeline
        self.core = pipeline.core if pipeline is not None else None
        self.policy = policy


class _DeferredAuthentication:
    """Strips forged identity headers from every request; dependencies decide later."""

    def __init__(self, app: Any, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or IDENTITY_KEY in scope:
            if scope["type"] == "http" and IDENTITY_KEY not in scope:
                scope = self.pipeline.defer_scope(scope)
            await self.app(scope, receive, send)
            return
        scope = self.pipeline.defer_scope(scope)
        # The identity comes later, from a dependency: the socket is watched from accept.
        receive, send, done = self.pipeline.deferred_channels(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            done()


@_checks.passing_keywords_to(AuthCore.__init__)
def setup(
    app: FastAPI,
    validator: Validator | None = None,
    *,
    core: AuthCore | None = None,
    policy: PolicySpec = None,
    middleware: bool = False,
    **options: Any,
) -> AuthMWState:
    """Install authmw on ``app``: header stripping, exception handlers, the policy.

    By default the dependencies validate tokens (cached; nothing is
    validated on routes that use none, but forged identity headers are
    stripped from every request). ``middleware=True`` instead wraps the
    whole app in :class:`~authmw.asgi.ASGIAuthMiddleware` (every route
    authenticated unless in ``public_routes``; remember ``/docs`` and
    ``/openapi.json``).
    """
    pipeline = Pipeline.build_if_configured(validator, core, options, anonymous=True)
    state = AuthMWState(pipeline, as_policy(policy))
    app.state.authmw = state
    app.state.authmw_policy = state.policy
    app.add_exception_handler(AuthHTTPException, _handle)  # type: ignore[arg-type]
    for exc_class, handler in _starlette_handlers.items():
        app.add_exception_handler(exc_class, handler)
    if pipeline is None:
        if middleware:
            raise ConfigurationError("middleware", "middleware=True needs a validator (or core=)")
        return state
    if middleware:
        app.add_middleware(ASGIAuthMiddleware, core=pipeline.core)
    else:
        app.add_middleware(_DeferredAuthentication, pipeline=pipeline)
    _document_credentials(app, pipeline.core.sources)
    return state


def _document_credentials(app: FastAPI, sources: tuple[Source, ...]) -> None:
    """Make the OpenAPI document show every configured token source (any one will do)."""
    schemes = {str(source): _scheme(source) for source in sources if not source.websocket_only}
    if list(schemes) == [_headers.AUTH_TOKEN]:
        return
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        declared = schema.get("components", {}).get("securitySchemes", {})
        if declared.pop(_headers.AUTH_TOKEN, None) is None:
            return schema  # rewritten already (FastAPI caches the schema)
        declared.update(schemes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                security = operation.get("security")
                if security and {_headers.AUTH_TOKEN: []} in security:
                    security.remove({_headers.AUTH_TOKEN: []})
                    security.extend({name: []} for name in schemes)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _scheme(source: Source) -> dict[str, Any]:
    if source.kind == "authorization":
        return {"type": "http", "scheme": source.name.lower()}
    return {"type": "apiKey", "in": "header", "name": source.name, "description": _DESCRIPTION}


async def _handle(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, AuthHTTPException)
    rejection = exc.rejection
    if isinstance(conn, WebSocket):
        await deny_websocket(conn, rejection)
        return None
    return Response(rejection.body, rejection.status, headers=dict(rejection.headers))


def _state(conn: HTTPConnection) -> AuthMWState | None:
    app = conn.scope.get("app")
    state: AuthMWState | None = getattr(app.state, "authmw", None) if app is not None else None
    return state


_warned = False


async def get_identity(
    conn: HTTPConnection, _scheme: Annotated[str | None, Depends(token_header)]
) -> Identity | None:
    """The caller's identity or None (no token; in delayed mode also a bad one).

    A bad token raises the 401 (503 if the identity service cannot answer).
    """
    scope = conn.scope
    auth = scope.get("auth")
    if isinstance(auth, IdentityCredentials):
        return auth.identity
    state = _state(conn)
    pipeline = state.pipeline if state is not None else None
    if pipeline is None:
        if IDENTITY_KEY in scope:
            identity: Identity | None = scope[IDENTITY_KEY]
            return identity
        global _warned
        if not _warned:
            _warned = True
            log.warning(
                "no authmw identity: call authmw.contrib.fastapi.setup(app, validator) "
                "or add the ASGI middleware; every request counts as unauthenticated"
            )
        return None
    decision = await pipeline.resolve_scope(scope)
    if decision.rejection is not None:
        raise AuthHTTPException(decision.rejection)
    return decision.identity


def _policy(conn: HTTPConnection) -> Policy | None:
    state = _state(conn)
    return state.policy if state is not None else None


def _deny(exc: NotAuthenticated | Forbidden, conn: HTTPConnection) -> AuthHTTPException:
    return AuthHTTPException(rejection_for(exc, conn.scope))


async def current_identity(
    security_scopes: SecurityScopes,
    conn: HTTPConnection,
    identity: Annotated[Identity | None, Depends(get_identity)],
) -> Identity:
    """The identity (401 without one). With ``Security(current_identity, scopes=[...])``
    every scope must be held (403 otherwise): a token issued with scopes (an API key's
    ``token_scopes``) must carry each of them, its user's roles notwithstanding;
    for a token without scopes each scope is a role the identity must hold."""
    if identity is None:
        raise _deny(NotAuthenticated(), conn)
    wanted = security_scopes.scopes
    if identity.token_scopes:
        missing = [scope for scope in wanted if not identity.has_token_scope(scope)]
        what = "token scope"
    else:
        missing = [role for role in wanted if not identity.has_role(role)]
        what = "role"
    if missing:
        raise _deny(Forbidden(f"not allowed: requires {what} " + " and ".join(missing)), conn)
    return identity


def require(spec: RequirementSpec, *, target: TargetFactory | None = None) -> Callable[..., Any]:
    """A dependency: 401 without an identity, 403 unless ``spec`` allows; returns the identity.

    ``spec`` is a rule name of the policy given to :func:`setup`, an
    expression or a :class:`~authmw.policy.Requirement`. ``target(conn)``
    (sync or async) gives the target, e.g. from ``conn.path_params``.
    """
    resolver = SpecResolver(spec)

    async def dependency(
        conn: HTTPConnection, identity: Annotated[Identity | None, Depends(get_identity)]
    ) -> Identity:
        if identity is None:
            raise _deny(NotAuthenticated(), conn)
        value = None
        if target is not None:
            value = target(conn)
            if inspect.isawaitable(value):
                value = await value
        try:
            return resolver.authorize(_policy(conn), identity, value)
        except (NotAuthenticated, Forbidden) as exc:
            raise _deny(exc, conn) from None

    dependency.__name__ = f"require({spec!r})"
    return dependency


def require_roles(*roles: str) -> Callable[..., Any]:
    """A dependency needing every one of ``roles``: ``Depends(require_roles("admin"))``."""
    return require(_require_roles(*roles))


def require_any_role(*roles: str) -> Callable[..., Any]:
    """A dependency needing at least one of ``roles``."""
    return require(_require_any_role(*roles))


def authorize(
    conn: HTTPConnection,
    identity: Identity | None,
    spec: RequirementSpec,
    target: Mapping[str, Any] | None = None,
) -> Identity:
    """Check ``spec`` inside an endpoint, once the target is known; raises the 401/403."""
    try:
        if identity is None:
            raise NotAuthenticated()
        return resolver_for(spec).authorize(_policy(conn), identity, target)
    except (NotAuthenticated, Forbidden) as exc:
        raise _deny(exc, conn) from None
