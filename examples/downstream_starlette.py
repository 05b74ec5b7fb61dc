"""A Starlette service that calls another service with a token of its own.

Two small apps, each protected by authmw's ASGI middleware (incoming ``X-Auth-Token``):

- inventory, ``create_inventory()``: ``GET /stock/{sku}``, for callers with
  the ``service`` role only; it answers with the stock and who asked.
- orders, ``create_app()``: ``GET /availability/{sku}``, for any
  authenticated user; it asks the inventory as *itself*, with a token it
  acquires through :mod:`authmw.client`, never with the user's token.

The outgoing token belongs to one ``httpx.AsyncClient`` opened at start-up
and closed at shutdown (the app's lifespan): its ``auth`` logs in, puts
``X-Auth-Token`` on every call, renews the token before it expires, and
renews it once more and retries when the inventory answers 401 (the token
was revoked). Concurrent requests share one token and one renewal.

Run the inventory, then the orders service (two terminals), then ask::

    uvicorn --factory --app-dir examples downstream_starlette:create_inventory --port 8001
    export INVENTORY_URL=http://127.0.0.1:8001
    uvicorn --factory --app-dir examples downstream_starlette:create_app
    curl -H "X-Auth-Token: demo-user-token" localhost:8000/availability/hammer

Configuration, the same variables for both apps (the ``authmw`` command's names):

- nothing: demo tokens, ``demo-user-token`` for a user and
  ``demo-service-token`` for the orders service;
- ``AUTHMW_DB=sqlite:///tokens.db``: tokens of the local store; the orders
  service sends ``AUTHMW_STATIC_TOKEN``, issued with
  ``authmw token issue --user orders --role service -q``;
- ``AUTHMW_AUTH_URL`` with ``AUTHMW_USERNAME``, ``AUTHMW_PASSWORD``,
  ``AUTHMW_USER_DOMAIN_NAME``, ``AUTHMW_PROJECT_NAME``,
  ``AUTHMW_PROJECT_DOMAIN_NAME`` (or ``AUTHMW_APPLICATION_CREDENTIAL_ID`` and
  ``_SECRET``): Keystone. The service account validates incoming tokens and
  logs in for the outgoing calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authmw import (
    ASGIAuthMiddleware,
    ConfigurationError,
    Identity,
    IdentityServiceUnavailable,
    InMemoryValidator,
)
from authmw.client import (
    AuthenticationFailed,
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    StaticToken,
    TokenAuth,
)
from authmw.contrib import validator_from_env
from authmw.contrib.starlette import get_identity, require

log = logging.getLogger("orders")

DEMO_TOKENS = {  # token: (user, roles)
    "demo-user-token": ("alice", ("member", "reader")),
    "demo-service-token": ("orders", ("service",)),
}
STOCK = {"hammer": 12, "saw": 0, "drill": 3}


def demo_validator() -> InMemoryValidator:
    """Fixed tokens for trying the two apps without an identity service."""
    return InMemoryValidator(
        {
            token: Identity(
                user_id=user, user_name=user, project_id="demo", project_name="demo", roles=roles
            )
            for token, (user, roles) in DEMO_TOKENS.items()
        }
    )


def service_auth(env: Mapping[str, str] = os.environ) -> TokenAuth:
    """The token this service sends downstream, from the same variables as its validator."""
    auth_url = env.get("AUTHMW_AUTH_URL")
    if env.get("AUTHMW_STATIC_TOKEN"):
        return StaticToken(env["AUTHMW_STATIC_TOKEN"])  # used as is, never renewed
    if not auth_url:
        if env.get("AUTHMW_DB"):
            raise ConfigurationError(
                "AUTHMW_STATIC_TOKEN",
                "the orders service needs a token of the store: "
                "authmw token issue --user orders --role service -q",
            )
        return StaticToken("demo-service-token")
    if env.get("AUTHMW_APPLICATION_CREDENTIAL_ID"):
        return KeystoneV3ApplicationCredential(
            auth_url,
            application_credential_id=env["AUTHMW_APPLICATION_CREDENTIAL_ID"],
            application_credential_secret=env.get("AUTHMW_APPLICATION_CREDENTIAL_SECRET", ""),
        )
    return KeystoneV3Password(
        auth_url,
        username=env.get("AUTHMW_USERNAME"),
        password=env.get("AUTHMW_PASSWORD", ""),
        user_domain_name=env.get("AUTHMW_USER_DOMAIN_NAME"),
        project_name=env.get("AUTHMW_PROJECT_NAME"),
        project_domain_name=env.get("AUTHMW_PROJECT_DOMAIN_NAME"),
    )


def _error(
    status: int, title: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = {"error": {"code": status, "title": title, "message": message}}
    return JSONResponse(body, status, headers=headers)


def create_inventory(**options: Any) -> Starlette:
    """The downstream service; ``options`` go to the middleware (e.g. ``cache_time``)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @require("role:service")
    async def stock(request: Request) -> Response:
        identity = get_identity(request)
        assert identity is not None  # @require let the request in
        sku = request.path_params["sku"]
        caller = {
            "user_id": identity.user_id,
            "user_name": identity.user_name,
            "project_name": identity.project_name,
            "roles": list(identity.roles),
        }
        return JSONResponse({"sku": sku, "in_stock": STOCK.get(sku, 0), "caller": caller})

    app = Starlette(routes=[Route("/health", health), Route("/stock/{sku}", stock)])
    validator = validator_from_env(default=demo_validator)
    app.add_middleware(
        ASGIAuthMiddleware, validator=validator, public_routes=["GET /health"], **options
    )
    return app


def create_app(inventory_url: str | None = None, **options: Any) -> Starlette:
    """The orders service; ``options`` go to the middleware."""
    url = inventory_url or os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
    auth = service_auth()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=url, auth=auth, timeout=5.0) as inventory:
            app.state.inventory = inventory
            yield

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @require("@")  # any authenticated user
    async def availability(request: Request) -> Response:
        identity = get_identity(request)
        assert identity is not None
        sku = request.path_params["sku"]
        inventory: httpx.AsyncClient = request.app.state.inventory
        try:
            answer = await inventory.get(f"/stock/{sku}")
        except (httpx.TransportError, IdentityServiceUnavailable, AuthenticationFailed) as exc:
            # The inventory, or the identity service we log in to, cannot be used now.
            log.warning("inventory call failed: %s", type(exc).__name__)
            message = "the inventory cannot be reached"
            return _error(503, "Service Unavailable", message, {"Retry-After": "5"})
        if answer.status_code != 200:
            message = f"the inventory answered {answer.status_code}"
            return _error(502, "Bad Gateway", message)
        stock = answer.json()
        return JSONResponse(
            {
                "sku": sku,
                "available": stock["in_stock"] > 0,
                "asked_by": identity.user_name,
                "inventory_saw": stock["caller"],
            }
        )

    app = Starlette(
        routes=[Route("/health", health), Route("/availability/{sku}", availability)],
        lifespan=lifespan,
    )
    validator = validator_from_env(default=demo_validator)
    app.add_middleware(
        ASGIAuthMiddleware, validator=validator, public_routes=["GET /health"], **options
    )
    return app
