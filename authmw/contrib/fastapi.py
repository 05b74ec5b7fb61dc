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

from ..asgi import ASGIAuthMiddleware
from ..core import AuthCore
from ..errors import Forbidden, NotAuthenticated
from ..identity import Identity
from ..policy import Policy
from ..policy import require_any_role as _require_any_role
from ..policy import require_roles as _require_roles
from ..validators.base import Validator
from . import (
    DEFAULT_CHALLENGE,
    IDENTITY_KEY,
    Denial,
    PolicySpec,
    RequirementSpec,
    SpecResolver,
    as_policy,
    denial_for,
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

token_header = APIKeyHeader(
    name="X-Auth-Token",
    scheme_name="X-Auth-Token",
    description="A Keystone (or authmw) token.",
    auto_error=False,
)
"""The ``X-Auth-Token`` API-key scheme every authmw dependency declares."""


class AuthHTTPException(HTTPException):
    """A 401/403/503 with authmw's JSON body (used by the exception handler)."""

    def __init__(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...], message: str
    ):
        super().__init__(status, message, headers={k: v for k, v in headers if k != "Content-Type"})
        self.body = body

    @classmethod
    def from_denial(cls, denial: Denial) -> AuthHTTPException:
        return cls(denial.status, denial.body, denial.headers, denial.message)


class AuthMWState:
    """What :func:`setup` keeps on ``app.state.authmw``."""

    def __init__(self, core: AuthCore | None, policy: Policy | None) -> None:
        self.core = core
        self.policy = policy

    @property
    def challenge(self) -> str:
        return self.core.www_authenticate if self.core is not None else DEFAULT_CHALLENGE


def setup(
    app: FastAPI,
    validator: Validator | None = None,
    *,
    core: AuthCore | None = None,
    policy: PolicySpec = None,
    middleware: bool = False,
    **options: Any,
) -> AuthMWState:
    """Install exception handlers; keep the validator's AuthCore and the policy.

    By default the dependencies validate tokens (cached; nothing happens on
    routes that use none). ``middleware=True`` instead wraps the whole app
    in :class:`~authmw.asgi.ASGIAuthMiddleware` (every route authenticated
    unless in ``public_routes``; remember ``/docs`` and ``/openapi.json``).
    """
    if core is None and validator is not None:
        core = AuthCore(validator, **options)
    elif options:
        raise TypeError("options need a validator (or pass core=)")
    state = AuthMWState(core, as_policy(policy))
    app.state.authmw = state
    app.state.authmw_policy = state.policy
    app.add_exception_handler(AuthHTTPException, _handle)  # type: ignore[arg-type]
    for exc_class, handler in _starlette_handlers.items():
        app.add_exception_handler(exc_class, handler)
    if middleware:
        if core is None:
            raise TypeError("middleware=True needs a validator (or core=)")
        app.add_middleware(ASGIAuthMiddleware, core=core)
    return state


async def _handle(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, AuthHTTPException)
    headers = dict(exc.headers or {})
    headers["Content-Type"] = "application/json"
    response = Response(exc.body, exc.status_code, headers=headers)
    if isinstance(conn, WebSocket):
        await deny_websocket(conn, response)
        return None
    return response


def _state(conn: HTTPConnection) -> AuthMWState | None:
    app = conn.scope.get("app")
    state: AuthMWState | None = getattr(app.state, "authmw", None) if app is not None else None
    return state


_warned = False


async def get_identity(
    conn: HTTPConnection, token: Annotated[str | None, Depends(token_header)]
) -> Identity | None:
    """The caller's identity or None (no token; in delayed mode also a bad one).

    A bad token raises the 401 (503 if the identity service cannot answer).
    """
    scope = conn.scope
    if IDENTITY_KEY in scope:
        identity: Identity | None = scope[IDENTITY_KEY]
        return identity
    auth = scope.get("auth")
    if isinstance(auth, IdentityCredentials):
        return auth.identity
    state = _state(conn)
    if state is None or state.core is None:
        global _warned
        if not _warned:
            _warned = True
            log.warning(
                "no authmw identity: call authmw.contrib.fastapi.setup(app, validator) "
                "or add the ASGI middleware; every request counts as unauthenticated"
            )
        return None
    if token is None:
        return None
    core = state.core
    decision = await core.authenticate_async(token, conn.headers.get(core.service_token_header))
    rejection = decision.rejection
    if rejection is not None:
        raise AuthHTTPException(
            rejection.status, rejection.body, rejection.headers, rejection.reason or "rejected"
        )
    scope[IDENTITY_KEY] = decision.identity
    return decision.identity


def _challenge(conn: HTTPConnection) -> str:
    state = _state(conn)
    return state.challenge if state is not None else DEFAULT_CHALLENGE


def _policy(conn: HTTPConnection) -> Policy | None:
    state = _state(conn)
    return state.policy if state is not None else None


def _deny(exc: NotAuthenticated | Forbidden, conn: HTTPConnection) -> AuthHTTPException:
    return AuthHTTPException.from_denial(denial_for(exc, _challenge(conn)))


async def current_identity(
    security_scopes: SecurityScopes,
    conn: HTTPConnection,
    identity: Annotated[Identity | None, Depends(get_identity)],
) -> Identity:
    """The identity (401 without one). With ``Security(current_identity, scopes=[...])``
    every scope is a role the identity must hold (403 otherwise)."""
    if identity is None:
        raise _deny(NotAuthenticated(), conn)
    missing = [role for role in security_scopes.scopes if not identity.has_role(role)]
    if missing:
        raise _deny(Forbidden("not allowed: requires role " + " and ".join(missing)), conn)
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
