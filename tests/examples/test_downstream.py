"""The downstream examples, run for real: both apps served on 127.0.0.1 (werkzeug for
Flask, uvicorn with its lifespan for Starlette), a real Keystone or a real SQLite store.

The orders service calls the inventory with a token it acquired itself; the
inventory echoes the identity it saw.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from examples_support import keystone_env, load_example
from werkzeug.serving import WSGIRequestHandler, make_server

from authmw import ConfigurationError
from authmw.client import TokenAuth
from authmw.store import LocalTokenStore

MODULES = {
    "flask": load_example("downstream_flask.py"),
    "starlette": load_example("downstream_starlette.py"),
}


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """uvicorn with the app's lifespan (start-up and shutdown run for real)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Running:
    kind: str
    orders: Any  # the orders app object
    orders_url: str
    inventory_url: str

    @property
    def auth(self) -> TokenAuth:
        """The orders service's outgoing auth (holds the acquired token)."""
        client = (
            self.orders.extensions["inventory"]
            if self.kind == "flask"
            else self.orders.state.inventory
        )
        auth = client.auth
        assert isinstance(auth, TokenAuth)
        return auth

    def get(self, path: str, token: str | None = None, *, base: str | None = None) -> Any:
        headers = {"X-Auth-Token": token} if token else {}
        return httpx.get((base or self.orders_url) + path, headers=headers, timeout=30)


@contextlib.contextmanager
def running(kind: str, **inventory_options: Any) -> Iterator[Running]:
    """Start the inventory, then the orders service pointed at it."""
    module: ModuleType = MODULES[kind]
    serve = serve_wsgi if kind == "flask" else serve_asgi
    inventory = module.create_inventory(**inventory_options)
    with serve(inventory) as inventory_url:
        orders = module.create_app(inventory_url)
        try:
            with serve(orders) as orders_url:
                yield Running(kind, orders, orders_url, inventory_url)
        finally:
            if kind == "flask":  # no lifespan in WSGI: what atexit would close
                orders.extensions["inventory"].close()
                orders.extensions["authmw"].core.close()
                inventory.extensions["authmw"].core.close()


@pytest.fixture(params=sorted(MODULES))
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in list(os.environ):
        if name.startswith("AUTHMW_") or name == "INVENTORY_URL":
            monkeypatch.delenv(name)
    return str(request.param)


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def assert_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    return str(error["message"])


def test_demo_tokens(kind: str) -> None:
    with running(kind) as svc:
        assert svc.get("/health").json() == {"status": "ok"}
        response = svc.get("/availability/hammer", "demo-user-token")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "sku": "hammer",
            "available": True,
            "asked_by": "alice",
            "inventory_saw": {
                "user_id": "orders",
                "user_name": "orders",
                "project_name": "demo",
                "roles": ["service"],
            },
        }
        assert svc.get("/availability/saw", "demo-user-token").json()["available"] is False
        assert_error(svc.get("/availability/hammer"), 401)
        assert_error(svc.get("/availability/hammer", "not-a-token"), 401)
        # The user's own token is not good enough for the inventory: it wants a service.
        assert_error(svc.get("/stock/hammer", "demo-user-token", base=svc.inventory_url), 403)
        assert_error(svc.get("/stock/hammer", base=svc.inventory_url), 401)


def test_keystone_inventory_sees_the_acquired_token(
    kind: str, keystone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch, keystone_env(keystone))
    user_token = keystone.issue_token("demo-user", project="demo-project", project_domain="demo")
    with running(kind) as svc:
        response = svc.get("/availability/drill", user_token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["asked_by"] == "demo-user"
        service_user = keystone.user("service-user")
        assert body["inventory_saw"] == {
            "user_id": service_user["id"],
            "user_name": "service-user",
            "project_name": "service",
            "roles": ["service"],
        }
        held = svc.auth.token
        assert held is not None and held.token != user_token
        token = keystone.token_body(held.token)["token"]
        assert token["user"]["name"] == "service-user"
        assert token["project"]["name"] == "service"


def test_keystone_renews_a_revoked_token_once_and_retries(
    kind: str, keystone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch, keystone_env(keystone))
    user_token = keystone.issue_token("demo-user", project="demo-project", project_domain="demo")
    # cache_time=0: the inventory asks Keystone on every call, so it sees the revocation now.
    with running(kind, cache_time=0) as svc:
        assert svc.get("/availability/hammer", user_token).status_code == 200
        held = svc.auth.token
        assert held is not None
        keystone.revoke(held.token)
        assert keystone.check(held.token).status_code == 404

        # The inventory answers 401 to the revoked token; the client logs in
        # again and retries, and the user never notices.
        response = svc.get("/availability/hammer", user_token)
        assert response.status_code == 200, response.text
        assert response.json()["inventory_saw"]["user_name"] == "service-user"
        renewed = svc.auth.token
        assert renewed is not None and renewed.token != held.token
        assert keystone.check(renewed.token).status_code == 200


def test_keystone_application_credential(
    kind: str, keystone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cred = keystone.application_credential
    use_env(
        monkeypatch,
        {
            "AUTHMW_AUTH_URL": keystone.url,
            "AUTHMW_APPLICATION_CREDENTIAL_ID": cred["id"],
            "AUTHMW_APPLICATION_CREDENTIAL_SECRET": cred["secret"],
        },
    )
    user_token = keystone.issue_token("alice", project="alpha")
    with running(kind) as svc:
        response = svc.get("/availability/hammer", user_token)
        assert response.status_code == 200, response.text
        assert response.json()["asked_by"] == "alice"
        assert response.json()["inventory_saw"]["user_name"] == "service-user"
        held = svc.auth.token
        assert held is not None
        token = keystone.token_body(held.token)["token"]
        assert token["methods"] == ["application_credential"]
        assert token["application_credential"]["id"] == cred["id"]


def test_503_while_the_identity_service_is_down(
    kind: str, keystone_disposable: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = keystone_disposable
    use_env(monkeypatch, keystone_env(ks))
    user_token = ks.issue_token("demo-user", project="demo-project", project_domain="demo")
    with running(kind) as svc:
        assert svc.get("/availability/hammer", user_token).status_code == 200
        before = svc.auth.token
        assert before is not None

        # The user's token is cached by the orders service, but its own token
        # must be fetched again while Keystone is down.
        svc.auth.invalidate()
        ks.stop()
        response = svc.get("/availability/hammer", user_token)
        assert assert_error(response, 503) == "the inventory cannot be reached"
        assert response.headers["Retry-After"] == "5"
        assert svc.auth.token is None

        ks.start()  # back, without restarting either app
        response = svc.get("/availability/hammer", user_token)
        assert response.status_code == 200, response.text
        after = svc.auth.token
        assert after is not None and after.token != before.token


def test_local_store_with_a_static_service_token(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'tokens.db'}"
    with LocalTokenStore(db) as store:
        user = store.issue(user_name="bob", project_name="shop", roles=["member"], ttl=3600)
        service = store.issue(user_name="orders", project_name="shop", roles=["service"], ttl=3600)
    use_env(monkeypatch, {"AUTHMW_DB": db, "AUTHMW_STATIC_TOKEN": service.token})
    with running(kind, cache_time=0) as svc:
        response = svc.get("/availability/hammer", user.token)
        assert response.status_code == 200, response.text
        assert response.json()["asked_by"] == "bob"
        assert response.json()["inventory_saw"] == {
            "user_id": "orders",
            "user_name": "orders",
            "project_name": "shop",
            "roles": ["service"],
        }
        with LocalTokenStore(db) as store:
            assert store.revoke(service.id)
        # A static token cannot be renewed: the inventory's 401 stays a failure.
        message = assert_error(svc.get("/availability/hammer", user.token), 502)
        assert message == "the inventory answered 401"


def test_local_store_without_a_service_token_fails_at_start_up(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_env(monkeypatch, {"AUTHMW_DB": f"sqlite:///{tmp_path / 'tokens.db'}"})
    with pytest.raises(ConfigurationError) as info:
        MODULES[kind].create_app("http://127.0.0.1:9")
    assert info.value.option == "AUTHMW_STATIC_TOKEN"
