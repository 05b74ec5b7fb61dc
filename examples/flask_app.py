"""A small items API on Flask, protected by authmw.

    GET    /health        public
    GET    /items         any authenticated caller
    POST   /items         role member (the item joins the caller's project)
    DELETE /items/<id>    role admin, in the item's project

Run it::

    flask --app examples/flask_app.py run
    curl -H "X-Auth-Token: demo-member-token" -X POST localhost:5000/items -d '{"name": "x"}' \\
         -H "Content-Type: application/json"

Tokens come from the in-memory demo validator unless the environment says
otherwise: ``AUTHMW_AUTH_URL`` (+ ``AUTHMW_USERNAME``, ``AUTHMW_PASSWORD``...)
for Keystone, ``AUTHMW_DB=sqlite:///tokens.db`` for tokens issued with
``authmw token issue``. ``AUTHMW_POLICY_FILE`` may override the rules below.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from flask import Flask, abort, request

from authmw import Identity, InMemoryValidator, Validator
from authmw.contrib import validator_from_env
from authmw.contrib.flask import AuthMW, current_identity, require
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


def create_app(validator: Validator | None = None, policy: Policy | None = None) -> Flask:
    app = Flask(__name__)
    items: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    AuthMW(
        app,
        validator or validator_from_env(default=demo_validator),
        policy=policy or load_policy(),
        public_routes=["GET /health"],
    )

    def item_target(item_id: str) -> dict[str, Any]:
        item = items.get(item_id)
        if item is None:
            abort(404)
        return {"project_id": item["project_id"]}

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/items")
    @require("items:list")
    def list_items() -> Any:
        return {"items": list(items.values())}

    @app.post("/items")
    @require("items:create")
    def create_item() -> Any:
        if not current_identity.project_id:
            return {
                "error": {
                    "code": 400,
                    "title": "Bad Request",
                    "message": "a project-scoped token is needed",
                }
            }, 400
        body = request.get_json(silent=True) or {}
        item = {
            "id": uuid.uuid4().hex,
            "name": str(body.get("name", "")),
            "project_id": current_identity.project_id,
            "owner": current_identity.user_id,
        }
        with lock:
            items[item["id"]] = item
        return item, 201

    @app.delete("/items/<item_id>")
    @require("items:delete", target=item_target)
    def delete_item(item_id: str) -> Any:
        with lock:
            items.pop(item_id, None)
        return "", 204

    return app


app = create_app()
