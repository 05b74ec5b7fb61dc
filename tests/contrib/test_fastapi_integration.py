from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Security, WebSocket
from fastapi.testclient import TestClient
from starlette.requests import HTTPConnection
from starlette.testclient import WebSocketDenialResponse

from authmw import ConfigurationError, Forbidden, Identity, InMemoryValidator
from authmw.contrib.fastapi import (
    authorize,
    current_identity,
    get_identity,
    require,
    require_any_role,
    require_roles,
    setup,
)

from .conftest import (
    ADMIN_TOKEN,
    BAD_TOKEN,
    ITEM_PROJECTS,
    MEMBER_TOKEN,
    OTHER_ADMIN_TOKEN,
    POLICY,
    READER_TOKEN,
    Unavailable,
    error_of,
)


def item_target(conn: HTTPConnection) -> dict[str, Any]:
    return {"project_id": ITEM_PROJECTS[conn.path_params["item_id"]]}


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def build_app(validator: Any = None, *, install: bool = True, **options: Any) -> FastAPI:
    app = FastAPI()
    if install:
        setup(app, validator, policy=POLICY, **options)

    @app.get("/health")
    async def health(identity: Annotated[Identity | None, Depends(get_identity)]) -> Any:
        return {"status": "ok", "user": identity.user_id if identity else None}

    @app.get("/items")
    async def list_items(identity: CurrentIdentity) -> Any:
        return {"user": identity.user_id}

    @app.post("/items", status_code=201)
    def create_item(identity: Annotated[Identity, Depends(require("items:create"))]) -> Any:
        return {"created_by": identity.user_id}

    @app.delete(
        "/items/{item_id}",
        status_code=204,
        dependencies=[Depends(require("items:delete", target=item_target))],
    )
    async def delete_item(item_id: str) -> None:
        return None

    @app.put("/items/{item_id}")
    async def update_item(
        item_id: str, request_conn: HTTPConnection, identity: CurrentIdentity
    ) -> Any:
        authorize(
            request_conn,
            identity,
            "rule:admin_of_project or role:member",
            {"project_id": ITEM_PROJECTS[item_id]},
        )
        return {"updated_by": identity.user_id}

    @app.get("/admin", dependencies=[Depends(require_roles("admin"))])
    async def admin() -> Any:
        return {"admin": True}

    @app.get("/readers", dependencies=[Depends(require_any_role("reader", "auditor"))])
    async def readers() -> Any:
        return {"readers": True}

    @app.get("/scoped")
    async def scoped(
        identity: Annotated[Identity, Security(current_identity, scopes=["admin"])],
    ) -> Any:
        return {"user": identity.user_id}

    @app.get("/raises")
    async def raises(identity: CurrentIdentity) -> Any:
        raise Forbidden("not today")

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, identity: Annotated[Identity, Depends(require("role:reader"))]
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"user": identity.user_id})
        await websocket.close()

    @app.websocket("/ws-scoped")
    async def ws_scoped(
        websocket: WebSocket,
        identity: Annotated[Identity, Security(current_identity, scopes=["admin"])],
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"admin": identity.user_id})
        await websocket.close()

    return app


@pytest.fixture
def client(validator: InMemoryValidator) -> TestClient:
    return TestClient(build_app(validator))


def h(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def test_openapi_declares_every_token_source() -> None:
    app = FastAPI()
    sources = ["X-Api-Key", "Authorization: Bearer", "query: t"]
    setup(app, InMemoryValidator(), token_sources=sources)

    @app.get("/me")
    async def me(identity: Annotated[Identity, Depends(current_identity)]) -> dict[str, str]:
        return {"user": identity.user_id}

    doc = TestClient(app).get("/openapi.json").json()
    assert doc["components"]["securitySchemes"] == {
        "X-Api-Key": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": "A Keystone (or authmw) token.",
        },
        "Authorization: Bearer": {"type": "http", "scheme": "bearer"},
    }
    assert doc["paths"]["/me"]["get"]["security"] == [
        {"X-Api-Key": []},
        {"Authorization: Bearer": []},
    ]
    assert TestClient(app).get("/openapi.json").json() == doc


def test_openapi_declares_the_token_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["X-Auth-Token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "A Keystone (or authmw) token.",
    }
    paths = doc["paths"]
    assert paths["/items"]["get"]["security"] == [{"X-Auth-Token": []}]
    assert paths["/items"]["post"]["security"] == [{"X-Auth-Token": []}]
    assert paths["/admin"]["get"]["security"] == [{"X-Auth-Token": []}]
    assert paths["/scoped"]["get"]["security"] == [{"X-Auth-Token": ["admin"]}]
    # the token header is a security scheme, not an ordinary parameter
    params = paths["/items"]["get"].get("parameters", [])
    assert not any(p["name"].lower() == "x-auth-token" for p in params)


def test_public_and_anonymous(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "user": None}
    assert client.get("/health", headers=h(MEMBER_TOKEN)).json() == {
        "status": "ok",
        "user": "u-member",
    }
    for url in ("/items", "/admin", "/scoped"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
        error_of(response.content, 401)


def test_bad_token_is_401(client: TestClient) -> None:
    response = client.get("/items", headers=h(BAD_TOKEN))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    error_of(response.content, 401)


def test_allowed_and_denied(client: TestClient) -> None:
    assert client.get("/items", headers=h(READER_TOKEN)).json() == {"user": "u-reader"}
    assert client.post("/items", headers=h(MEMBER_TOKEN)).status_code == 201
    response = client.post("/items", headers=h(READER_TOKEN))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert error_of(response.content, 403) == "policy does not allow items:create"
    assert client.delete("/items/i1", headers=h(ADMIN_TOKEN)).status_code == 204
    assert client.delete("/items/i1", headers=h(OTHER_ADMIN_TOKEN)).status_code == 403
    assert client.get("/admin", headers=h(OTHER_ADMIN_TOKEN)).json() == {"admin": True}
    response = client.get("/admin", headers=h(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not allowed: requires role admin"
    assert client.get("/readers", headers=h(READER_TOKEN)).status_code == 200
    assert client.get("/readers", headers=h(OTHER_ADMIN_TOKEN)).status_code == 403


def test_security_scopes_are_roles(client: TestClient) -> None:
    assert client.get("/scoped", headers=h(OTHER_ADMIN_TOKEN)).json() == {"user": "u-other"}
    response = client.get("/scoped", headers=h(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not allowed: requires role admin"


def test_authorize_and_raised_errors(client: TestClient) -> None:
    assert client.put("/items/i2", headers=h(OTHER_ADMIN_TOKEN)).json() == {"updated_by": "u-other"}
    response = client.put("/items/i1", headers=h(READER_TOKEN))
    assert response.status_code == 403
    error_of(response.content, 403)
    response = client.get("/raises", headers=h(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not today"


def test_identity_service_down_is_503() -> None:
    response = TestClient(build_app(Unavailable())).get("/items", headers=h(MEMBER_TOKEN))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    error_of(response.content, 503)


def test_websocket(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=h(READER_TOKEN)) as ws:
        assert ws.receive_json() == {"user": "u-reader"}
    with client.websocket_connect("/ws-scoped", headers=h(ADMIN_TOKEN)) as ws:
        assert ws.receive_json() == {"admin": "u-admin"}


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/ws", None, 401),
        ("/ws", BAD_TOKEN, 401),
        ("/ws", OTHER_ADMIN_TOKEN, 403),
        ("/ws-scoped", MEMBER_TOKEN, 403),
        ("/ws-scoped", None, 401),
    ],
)
def test_websocket_denied(client: TestClient, path: str, token: str | None, status: int) -> None:
    headers = h(token) if token else {}
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect(path, headers=headers),
    ):
        pass  # pragma: no cover
    assert info.value.status_code == status
    error_of(info.value.content, status)


def test_with_the_asgi_middleware(validator: InMemoryValidator) -> None:
    app = build_app(
        validator,
        middleware=True,
        public_routes=["GET /health", "GET /openapi.json", "GET /docs"],
        delay_auth_decision=False,
    )
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/health").json() == {"status": "ok", "user": None}
    response = client.get("/items")  # rejected by the middleware itself
    assert response.status_code == 401
    error_of(response.content, 401)
    assert client.get("/items", headers=h(READER_TOKEN)).json() == {"user": "u-reader"}
    assert client.post("/items", headers=h(READER_TOKEN)).status_code == 403


def test_without_setup_status_codes_are_still_right(validator: InMemoryValidator) -> None:
    from authmw import ASGIAuthMiddleware

    app = ASGIAuthMiddleware(build_app(install=False), validator, delay_auth_decision=True)
    client = TestClient(app)
    assert client.get("/items", headers=h(READER_TOKEN)).json() == {"user": "u-reader"}
    response = client.get("/items")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    assert response.json() == {"detail": "The request you have made requires authentication."}
    response = client.get("/admin", headers=h(MEMBER_TOKEN))
    assert response.status_code == 403
    assert response.json() == {"detail": "not allowed: requires role admin"}


def test_setup_options_need_a_validator() -> None:
    with pytest.raises(ConfigurationError, match="need a validator"):
        setup(FastAPI(), delay_auth_decision=True)
    with pytest.raises(ConfigurationError, match="middleware=True needs a validator"):
        setup(FastAPI(), middleware=True)


def test_security_scopes_of_a_scoped_token_are_its_token_scopes() -> None:
    admin_key = Identity("u-key", roles=("admin",), token_scopes=("items:read",))
    read_key = Identity("u-key2", roles=("member",), token_scopes=("items:read", "admin"))
    app = FastAPI()
    setup(app, InMemoryValidator({"admin-key": admin_key, "read-key": read_key}))

    @app.get("/scoped")
    async def scoped(
        identity: Annotated[Identity, Security(current_identity, scopes=["admin"])],
    ) -> Any:
        return {"user": identity.user_id}

    client = TestClient(app)
    # The user holds the role, but the key was issued without the scope.
    response = client.get("/scoped", headers=h("admin-key"))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not allowed: requires token scope admin"
    assert client.get("/scoped", headers=h("read-key")).json() == {"user": "u-key2"}
