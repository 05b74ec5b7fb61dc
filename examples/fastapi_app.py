"""A small items API on FastAPI, protected by authmw.

    GET    /health        public
    GET    /items         any authenticated caller
    POST   /items         role member (the item joins the caller's project)
    DELETE /items/{id}    role admin, in the item's project
    WS     /items/ws      any authenticated caller: the items, then closes

Run it (the docs at /docs have an "Authorize" button for X-Auth-Token)::

    uvicorn --app-dir examples fastapi_app:app

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
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, WebSocket
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from authmw import Identity, InMemoryValidator, Validator
from authmw.contrib import validator_from_env
from authmw.contrib.fastapi import require, setup
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


class NewItem(BaseModel):
    name: str = ""


def create_app(validator: Validator | None = None, policy: Policy | None = None) -> FastAPI:
    items: dict[str, dict[str, Any]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if auth.core is not None:
            await auth.core.aclose()  # the validator's HTTP connections, if any

    app = FastAPI(title="Items", lifespan=lifespan)
    auth = setup(
        app,
        validator or validator_from_env(default=demo_validator),
        policy=policy or load_policy(),
    )

    def item_target(conn: HTTPConnection) -> dict[str, Any]:
        item = items.get(conn.path_params["item_id"])
        if item is None:
            raise HTTPException(404, "no such item")
        return {"project_id": item["project_id"]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items", dependencies=[Depends(require("items:list"))])
    async def list_items() -> dict[str, Any]:
        return {"items": list(items.values())}

    @app.post("/items", status_code=201)
    async def create_item(
        body: NewItem, identity: Annotated[Identity, Depends(require("items:create"))]
    ) -> dict[str, Any]:
        if not identity.project_id:
            raise HTTPException(400, "a project-scoped token is needed")
        item = {
            "id": uuid.uuid4().hex,
            "name": body.name,
            "project_id": identity.project_id,
            "owner": identity.user_id,
        }
        items[item["id"]] = item
        return item

    @app.delete(
        "/items/{item_id}",
        status_code=204,
        dependencies=[Depends(require("items:delete", target=item_target))],
    )
    async def delete_item(item_id: str) -> None:
        items.pop(item_id, None)

    @app.websocket("/items/ws")
    async def items_feed(
        websocket: WebSocket, identity: Annotated[Identity, Depends(require("items:list"))]
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"user": identity.user_id, "items": list(items.values())})
        await websocket.close()

    return app


app = create_app()
