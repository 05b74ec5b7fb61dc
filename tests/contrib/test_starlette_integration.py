from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from authmw import ASGIAuthMiddleware, ConfigurationError, Forbidden, InMemoryValidator
from authmw.contrib.starlette import (
    authentication_middleware,
    authorize,
    exception_handlers,
    get_identity,
    require,
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


def item_target(request: Any) -> dict[str, Any]:
    return {"project_id": ITEM_PROJECTS[request.path_params["item_id"]]}


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "authenticated": request.user.is_authenticated})


@require("items:list")
async def list_items(request: Request) -> Response:
    return JSONResponse(
        {
            "user": request.user.identity,
            "name": request.user.display_name,
            "scopes": request.auth.scopes,
        }
    )


@require("items:create")
def create_item(request: Request) -> Response:  # a sync endpoint
    return JSONResponse({"created_by": get_identity(request).user_id}, status_code=201)  # type: ignore[union-attr]


@require("items:delete", target=item_target)
async def delete_item(request: Request) -> Response:
    return Response(status_code=204)


async def update_item(request: Request) -> Response:
    target = item_target(request)
    identity = authorize(request, "rule:admin_of_project or role:member", target)
    return JSONResponse({"updated_by": identity.user_id})


@requires("admin")
async def starlette_admin(request: Request) -> Response:
    return JSONResponse({"admin": True})


class Reports(HTTPEndpoint):
    @require("role:reader and project_id:p1")
    async def get(self, request: Request) -> Response:
        return JSONResponse({"report": True})


async def raises(request: Request) -> Response:
    raise Forbidden("not today")


@require("role:reader")
async def ws_items(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"user": websocket.user.identity})
    await websocket.close()


async def ws_raises(websocket: WebSocket) -> None:
    authorize(websocket, "role:admin")
    await websocket.accept()
    await websocket.send_json({"admin": True})
    await websocket.close()


ROUTES = [
    Route("/health", health),
    Route("/items", list_items, methods=["GET"]),
    Route("/items", create_item, methods=["POST"]),
    Route("/items/{item_id}", delete_item, methods=["DELETE"]),
    Route("/items/{item_id}", update_item, methods=["PUT"]),
    Route("/starlette-admin", starlette_admin),
    Route("/reports", Reports),
    Route("/raises", raises),
    WebSocketRoute("/ws", ws_items),
    WebSocketRoute("/ws-raises", ws_raises),
]


def build_app(validator: Any = None, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[authentication_middleware(validator, policy=POLICY, **options)],
        exception_handlers=exception_handlers,
    )


@pytest.fixture
def client(validator: InMemoryValidator) -> TestClient:
    return TestClient(build_app(validator))


def h(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


def test_anonymous_requests(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "authenticated": False}
    response = client.get("/items")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    error_of(response.content, 401)


def test_bad_token_is_401_not_400(client: TestClient) -> None:
    for url in ("/items", "/health"):
        response = client.get(url, headers=h(BAD_TOKEN))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
        error_of(response.content, 401)


def test_user_and_scopes(client: TestClient) -> None:
    body = client.get("/items", headers=h(MEMBER_TOKEN)).json()
    assert body == {
        "user": "u-member",
        "name": "u-member",
        "scopes": ["authenticated", "Member", "member", "reader"],
    }


def test_allowed_and_denied(client: TestClient) -> None:
    assert client.post("/items", headers=h(MEMBER_TOKEN)).status_code == 201
    response = client.post("/items", headers=h(READER_TOKEN))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert error_of(response.content, 403) == "policy does not allow items:create"
    assert client.delete("/items/i1", headers=h(ADMIN_TOKEN)).status_code == 204
    response = client.delete("/items/i1", headers=h(OTHER_ADMIN_TOKEN))
    assert response.status_code == 403
    error_of(response.content, 403)
    assert client.get("/reports", headers=h(READER_TOKEN)).json() == {"report": True}
    assert client.get("/reports", headers=h(OTHER_ADMIN_TOKEN)).status_code == 403


def test_authorize_and_raised_errors(client: TestClient) -> None:
    assert client.put("/items/i2", headers=h(OTHER_ADMIN_TOKEN)).json() == {"updated_by": "u-other"}
    response = client.put("/items/i2", headers=h(READER_TOKEN))
    assert response.status_code == 403
    error_of(response.content, 403)
    response = client.get("/raises", headers=h(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not today"


def test_starlettes_own_requires_sees_roles(client: TestClient) -> None:
    assert client.get("/starlette-admin", headers=h(OTHER_ADMIN_TOKEN)).json() == {"admin": True}
    assert client.get("/starlette-admin", headers=h(MEMBER_TOKEN)).status_code == 403


def test_identity_service_down_is_503() -> None:
    response = TestClient(build_app(Unavailable())).get("/items", headers=h(MEMBER_TOKEN))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    error_of(response.content, 503)


def test_websocket_allowed(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=h(READER_TOKEN)) as ws:
        assert ws.receive_json() == {"user": "u-reader"}


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/ws", None, 401),
        ("/ws", BAD_TOKEN, 401),
        ("/ws", OTHER_ADMIN_TOKEN, 403),
        ("/ws-raises", MEMBER_TOKEN, 403),
        ("/ws-raises", None, 401),
    ],
)
def test_websocket_denied_with_http_response(
    client: TestClient, path: str, token: str | None, status: int
) -> None:
    headers = h(token) if token else {}
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect(path, headers=headers),
    ):
        pass  # pragma: no cover
    assert info.value.status_code == status
    error_of(info.value.content, status)
    if status == 401:
        assert info.value.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'


async def _websocket_close_code(app: Any, path: str, token: str | None) -> list[dict[str, Any]]:
    """Drive ``app`` as a server without the denial-response extension would."""
    headers = [(b"x-auth-token", token.encode())] if token else []
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": headers,
        "subprotocols": [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "app": app,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
    }
    received = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return received.pop(0) if received else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "token"), [("/ws", None), ("/ws", BAD_TOKEN), ("/ws", OTHER_ADMIN_TOKEN)]
)
async def test_websocket_denied_without_the_extension_closes_1008(
    validator: InMemoryValidator, path: str, token: str | None
) -> None:
    sent = await _websocket_close_code(build_app(validator), path, token)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def test_behind_the_asgi_middleware(validator: InMemoryValidator) -> None:
    app = ASGIAuthMiddleware(
        build_app(None), validator, public_routes=["GET /health"], delay_auth_decision=True
    )
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok", "authenticated": False}
    assert client.get("/items", headers=h(READER_TOKEN)).json()["user"] == "u-reader"
    for headers in ({}, h(BAD_TOKEN)):
        response = client.get("/items", headers=headers)
        assert response.status_code == 401
        error_of(response.content, 401)
    assert client.post("/items", headers=h(READER_TOKEN)).status_code == 403
    with client.websocket_connect("/ws", headers=h(READER_TOKEN)) as ws:
        assert ws.receive_json() == {"user": "u-reader"}


def test_backend_options_need_a_validator() -> None:
    with pytest.raises(ConfigurationError, match="need a validator"):
        authentication_middleware(delay_auth_decision=True)
