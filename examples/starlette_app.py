"""A small items API on Starlette, protected by authmw.

    GET    /health        public
    GET    /items         any authenticated caller
    POST   /items         role member (the item joins the caller's project)
    DELETE /items/{id}    role admin, in the item's project

Run it::

    uvicorn --app-dir examples starlette_app:app
    curl -H "X-Auth-Token: demo-admin-token" localhost:8000/items

Tokens come from the in-memory demo validator unless the environment says
otherwise: ``AUTHMW_AUTH_URL`` (+ ``AUTHMW_USERNAME``, ``AUTHMW_PASSWORD``...)
for Keystone, ``AUTHMW_DB=sqlite:///tokens.db`` for tokens issued with
``authmw token issue``. ``AUTHMW_POLICY_FILE`` may override the rules below.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authmw import AuthCore, Identity, InMemoryValidator, Validator
from authmw.contrib import validator_from_env
from authmw.contrib.starlette import (
    authentication_middleware,
    exception_handlers,
    get_identity,
    require,
)
from authmw.policy import Policy

RULES = {
    "items:list": "",  # any authenticated caller
    "items:create": "role:member",
    "items:delete": "role:admin and project_id:%(project_id)s",
}

DEMO_TOKENS = {  # token: (user, project, roles)
    "demo-reader-token": ("reader", "demo-project", ("reader",)),
    "demo-member-token": ("member", "demo-project", ("member", "reader")),
    "demo-admin-token": ("admin", "demo-project", ("admin", "member", "reader")),
    "other-admin-token": ("other-admin", "other-project", ("admin", "member", "reader")),
}


def demo_validator() -> InMemoryValidator:
    """Demo users for trying the API without an identity service."""
    return InMemoryValidator(
        {
            token: Identity(user_id=user, user_name=user, project_id=project, roles=roles)
            for token, (user, project, roles) in DEMO_TOKENS.items()
        }
    )


def load_policy() -> Policy:
    path = os.environ.get("AUTHMW_POLICY_FILE")
    return Policy.from_file(path, defaults=RULES) if path else Policy(RULES)


def create_app(validator: Validator | None = None, policy: Policy | None = None) -> Starlette:
    items: dict[str, dict[str, Any]] = {}
    core = AuthCore(validator or validator_from_env(default=demo_validator))

    def item_target(conn: HTTPConnection) -> dict[str, Any]:
        item = items.get(conn.path_params["item_id"])
        if item is None:
            raise HTTPException(404)
        return {"project_id": item["project_id"]}

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @require("items:list")
    async def list_items(request: Request) -> Response:
        return JSONResponse({"items": list(items.values())})

    @require("items:create")
    async def create_item(request: Request) -> Response:
        identity = get_identity(request)
        assert identity is not None  # @require let the request in
        if not identity.project_id:
            message = "a project-scoped token is needed"
            return JSONResponse(
                {"error": {"code": 400, "title": "Bad Request", "message": message}}, 400
            )
        try:
            body = await request.json()
        except ValueError:
            body = {}
        item = {
            "id": uuid.uuid4().hex,
            "name": str(body.get("name", "")) if isinstance(body, dict) else "",
            "project_id": identity.project_id,
            "owner": identity.user_id,
        }
        items[item["id"]] = item
        return JSONResponse(item, status_code=201)

    @require("items:delete", target=item_target)
    async def delete_item(request: Request) -> Response:
        items.pop(request.path_params["item_id"], None)
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await core.aclose()  # the validator's HTTP connections, if any

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/items", list_items, methods=["GET"]),
            Route("/items", create_item, methods=["POST"]),
            Route("/items/{item_id}", delete_item, methods=["DELETE"]),
        ],
        middleware=[authentication_middleware(core=core, policy=policy or load_policy())],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )


app = create_app()
