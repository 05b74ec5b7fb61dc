"""The self-service token API mounted in Flask, Starlette and FastAPI apps, behind authmw's
middleware (Django: tests/examples/test_django_admin.py, through the example project)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.store import LocalTokenStore
from authmw.store.selfservice import TokenService

MakeStore = Callable[..., LocalTokenStore]


def data(response: Any) -> Any:
    """The JSON body (Flask's test client has it as a property, httpx as a method)."""
    return response.json() if callable(response.json) else response.json


def flask_app(store: LocalTokenStore) -> Any:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    service = TokenService(store)
    app.wsgi_app = WSGIAuthMiddleware(  # type: ignore[method-assign]
        DispatcherMiddleware(app.wsgi_app, {"/tokens": service.wsgi}), store
    )
    return app.test_client()


def starlette_app(store: LocalTokenStore) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    app = Starlette(
        routes=[Route("/hello", hello), Mount("/tokens", app=TokenService(store).asgi)],
        middleware=[Middleware(ASGIAuthMiddleware, validator=store)],
    )
    return TestClient(app)


def fastapi_app(store: LocalTokenStore) -> Any:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.mount("/tokens", TokenService(store).asgi)
    app.add_middleware(ASGIAuthMiddleware, validator=store)
    return TestClient(app)


@pytest.mark.parametrize("make_app", [flask_app, starlette_app, fastapi_app])
def test_mounted_in_a_framework(make_store: MakeStore, make_app: Callable[..., Any]) -> None:
    store = make_store()
    alice = store.issue(user_name="alice", project_name="p1", roles=["member"], ttl=86400)
    client = make_app(store)
    headers = {"X-Auth-Token": alice.token}

    assert client.get("/hello", headers=headers).status_code == 200
    assert client.get("/tokens/").status_code == 401
    listed = client.get("/tokens/", headers=headers)
    assert listed.status_code == 200
    assert [r["id"] for r in data(listed)] == [alice.id]
    issued = client.post("/tokens/", json={"description": "laptop"}, headers=headers)
    assert issued.status_code == 201
    new = data(issued)
    assert new["record"]["description"] == "laptop"
    assert store.validate(new["token"]).user_id == "alice"
    assert client.post("/tokens/", json={"roles": ["admin"]}, headers=headers).status_code == 403
    gone = client.delete(f"/tokens/{new['record']['id']}", headers=headers)
    assert gone.status_code == 204
    assert data(client.get(f"/tokens/{new['record']['id']}", headers=headers))["revoked_at"]


def test_the_api_module_imports_no_framework() -> None:
    code = (
        "import sys, authmw.store.selfservice\n"
        "print(sorted(m for m in ('flask', 'django', 'starlette', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
