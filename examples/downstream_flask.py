"""A Flask service that calls another service with a token of its own.

Two small apps, each protected by authmw (incoming ``X-Auth-Token``):

- inventory, ``create_inventory()``: ``GET /stock/<sku>``, for callers with
  the ``service`` role only; it answers with the stock and who asked.
- orders, ``create_app()``: ``GET /availability/<sku>``, for any
  authenticated user; it asks the inventory as *itself*, with a token it
  acquires through :mod:`authmw.client`, never with the user's token.

The outgoing token belongs to one long-lived ``httpx.Client`` made at
start-up: its ``auth`` logs in, puts ``X-Auth-Token`` on every call, renews
the token before it expires, and renews it once more and retries when the
inventory answers 401 (the token was revoked).

Run the inventory, then the orders service (two terminals), then ask::

    flask --app 'examples/downstream_flask.py:create_inventory()' run -p 5001
    INVENTORY_URL=http://127.0.0.1:5001 flask --app 'examples/downstream_flask.py:create_app()' run
    curl -H "X-Auth-Token: demo-user-token" localhost:5000/availability/hammer

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

import atexit
import os
from collections.abc import Mapping
from typing import Any

import httpx
from flask import Flask

from authmw import ConfigurationError, Identity, IdentityServiceUnavailable, InMemoryValidator
from authmw.client import (
    AuthenticationFailed,
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    StaticToken,
    TokenAuth,
)
from authmw.contrib import validator_from_env
from authmw.contrib.flask import AuthMW, current_identity, require

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


def _error(status: int, title: str, message: str) -> tuple[dict[str, Any], int]:
    return {"error": {"code": status, "title": title, "message": message}}, status


def create_inventory(**options: Any) -> Flask:
    """The downstream service; ``options`` go to the middleware (e.g. ``cache_time``)."""
    app = Flask("inventory")
    validator = validator_from_env(default=demo_validator)
    AuthMW(app, validator, public_routes=["GET /health"], **options)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/stock/<sku>")
    @require("role:service")
    def stock(sku: str) -> Any:
        caller = {
            "user_id": current_identity.user_id,
            "user_name": current_identity.user_name,
            "project_name": current_identity.project_name,
            "roles": list(current_identity.roles),
        }
        return {"sku": sku, "in_stock": STOCK.get(sku, 0), "caller": caller}

    return app


def create_app(inventory_url: str | None = None, **options: Any) -> Flask:
    """The orders service; ``options`` go to the middleware."""
    app = Flask("orders")
    validator = validator_from_env(default=demo_validator)
    AuthMW(app, validator, public_routes=["GET /health"], **options)
    inventory = httpx.Client(
        base_url=inventory_url or os.environ.get("INVENTORY_URL", "http://127.0.0.1:5001"),
        auth=service_auth(),
        timeout=5.0,
    )
    app.extensions["inventory"] = inventory
    atexit.register(inventory.close)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/availability/<sku>")
    @require("@")  # any authenticated user
    def availability(sku: str) -> Any:
        try:
            answer = inventory.get(f"/stock/{sku}")
        except (httpx.TransportError, IdentityServiceUnavailable, AuthenticationFailed) as exc:
            # The inventory, or the identity service we log in to, cannot be used now.
            app.logger.warning("inventory call failed: %s", type(exc).__name__)
            body, status = _error(503, "Service Unavailable", "the inventory cannot be reached")
            return body, status, {"Retry-After": "5"}
        if answer.status_code != 200:
            return _error(502, "Bad Gateway", f"the inventory answered {answer.status_code}")
        stock = answer.json()
        return {
            "sku": sku,
            "available": stock["in_stock"] > 0,
            "asked_by": current_identity.user_name,
            "inventory_saw": stock["caller"],
        }

    return app
