from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from helpers import (
    BAD,
    GOOD,
    OTHER,
    ASGIRecorder,
    Counting,
    asgi_header,
    call_asgi,
    counting,
    full_identity,
    http_scope,
    outage,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from authmw import ASGIAuthMiddleware, AuthCore, ConfigurationError, Identity

INJECTED_NAMES = {
    b"x-identity-status",
    b"x-user-id",
    b"x-user-name",
    b"x-user-domain-id",
    b"x-user-domain-name",
    b"x-project-id",
    b"x-project-name",
    b"x-project-domain-id",
    b"x-project-domain-name",
    b"x-domain-id",
    b"x-domain-name",
    b"x-roles",
    b"x-is-admin-project",
    b"openstack-system-scope",
    b"x-service-catalog",
    b"x-tenant-id",
    b"x-tenant-name",
    b"x-tenant",
    b"x-user",
    b"x-role",
}


class Seen:
    def __init__(self) -> None:
        self.scopes: list[Any] = []
        self.events: list[str] = []

    @property
    def last(self) -> Any:
        return self.scopes[-1]


def starlette_app(seen: Seen, status: int = 200) -> Starlette:
    async def home(request: Request) -> Response:
        seen.scopes.append(request.scope)
        identity = request.scope["authmw.identity"]
        return JSONResponse(
            {
                "user": identity.user_id if identity else None,
                "roles": request.headers.get("x-roles"),
            },
            status_code=status,
        )

    async def ws(websocket: WebSocket) -> None:
        seen.scopes.append(websocket.scope)
        await websocket.accept()
        identity = websocket.scope["authmw.identity"]
        await websocket.send_json({"user": identity.user_id if identity else None})
        await websocket.close()

    async def ws_deny(websocket: WebSocket) -> None:
        seen.scopes.append(websocket.scope)
        await websocket.send_denial_response(PlainTextResponse("go away", status_code=401))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.events.append("startup")
        yield
        seen.events.append("shutdown")

    return Starlette(
        routes=[
            Route("/", home, methods=["GET", "POST"]),
            Route("/{path:path}", home),
            WebSocketRoute("/ws", ws),
            WebSocketRoute("/ws-deny", ws_deny),
        ],
        lifespan=lifespan,
    )


def client_for(validator: Any = None, status: int = 200, **options: Any) -> tuple[TestClient, Seen]:
    seen = Seen()
    app = starlette_app(seen, status)
    app.add_middleware(ASGIAuthMiddleware, validator=validator or counting(), **options)
    return TestClient(app), seen


# -- http through Starlette's TestClient ---------------------------------------------


def test_good_token_reaches_the_app() -> None:
    identity = full_identity()
    client, seen = client_for(counting(identity))
    response = client.get("/", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 200
    assert response.json() == {"user": "u-123", "roles": "Member,reader,Admin"}
    assert seen.last["authmw.identity"] is identity
    assert asgi_header(seen.last, b"x-identity-status") == [b"Confirmed"]
    assert asgi_header(seen.last, b"x-auth-token") == [GOOD.encode()]  # untouched


def test_missing_token_is_401_json_with_challenge() -> None:
    client, seen = client_for(www_authenticate_uri="https://keystone.example/v3")
    response = client.get("/")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized" and error["message"]
    assert response.headers["www-authenticate"] == 'Keystone uri="https://keystone.example/v3"'
    assert seen.scopes == []


@pytest.mark.parametrize("value", ["", "  ", BAD])
def test_blank_or_bad_token_is_401(value: str) -> None:
    client, seen = client_for(realm="api")
    response = client.get("/", headers={"X-Auth-Token": value})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Keystone realm="api"'
    assert seen.scopes == []


def test_whitespace_is_stripped() -> None:
    validator = counting()
    client, _ = client_for(validator)
    assert client.get("/", headers={"X-Auth-Token": f" {GOOD}  "}).status_code == 200
    assert validator.calls == [GOOD]


def test_token_header_is_configurable() -> None:
    client, _ = client_for(token_header="X-Api-Token")
    assert client.get("/", headers={"X-Auth-Token": GOOD}).status_code == 401
    assert client.get("/", headers={"X-Api-Token": GOOD}).status_code == 200


def test_oversized_token_is_401_without_calling_the_validator() -> None:
    big = "t" * 8193
    validator = Counting({big: full_identity()})
    client, seen = client_for(validator)
    assert client.get("/", headers={"X-Auth-Token": big}).status_code == 401
    assert validator.calls == []
    assert seen.scopes == []


def test_two_different_token_headers_are_refused() -> None:
    validator = Counting({GOOD: full_identity(), OTHER: full_identity(user_id="u-2")})
    client, seen = client_for(validator)
    response = client.get("/", headers=[("X-Auth-Token", GOOD), ("X-Auth-Token", OTHER)])
    assert response.status_code in (400, 401)
    assert validator.calls == []
    assert seen.scopes == []
    same = client.get("/", headers=[("X-Auth-Token", GOOD), ("x-auth-token", GOOD)])
    assert same.status_code == 200


def test_outage_is_503_with_retry_after() -> None:
    client, seen = client_for(outage(), retry_after=9)
    response = client.get("/", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "9"
    assert response.json()["error"] == {
        "code": 503,
        "title": "Service Unavailable",
        "message": response.json()["error"]["message"],
    }
    assert "www-authenticate" not in response.headers
    assert seen.scopes == []


class Exploding:
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise AttributeError("validator bug")


class ExplodingAsync:
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise AssertionError("not used")

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise LookupError("async validator bug")


@pytest.mark.parametrize("validator", [Exploding(), ExplodingAsync()])
def test_unexpected_validator_error_is_503_not_500(validator: Any) -> None:
    client, _ = client_for(validator)
    response = client.get("/", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 503


# -- injected headers --------------------------------------------------------------------


def test_injected_headers_are_lower_case_bytes() -> None:
    client, seen = client_for(counting(full_identity()))
    client.get("/", headers={"X-Auth-Token": GOOD})
    headers = seen.last["headers"]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
    injected = {n: v for n, v in headers if n in INJECTED_NAMES}
    assert injected == {
        b"x-identity-status": b"Confirmed",
        b"x-user-id": b"u-123",
        b"x-user-name": b"alice",
        b"x-user-domain-id": b"ud-1",
        b"x-user-domain-name": b"UserDomain",
        b"x-project-id": b"p-456",
        b"x-project-name": b"Project X",
        b"x-project-domain-id": b"pd-1",
        b"x-project-domain-name": b"ProjectDomain",
        b"x-roles": b"Member,reader,Admin",
        b"x-is-admin-project": b"False",
        b"x-tenant-id": b"p-456",
        b"x-tenant-name": b"Project X",
        b"x-tenant": b"Project X",
        b"x-user": b"alice",
        b"x-role": b"Member,reader,Admin",
    }
    for name in injected:
        assert len(asgi_header(seen.last, name)) == 1


def test_system_and_domain_scope_headers_omit_absent_values() -> None:
    identity = Identity("u1", system_scope="all", domain_id="d", roles=("admin",))
    client, seen = client_for(counting(identity))
    client.get("/", headers={"X-Auth-Token": GOOD})
    assert asgi_header(seen.last, b"openstack-system-scope") == [b"all"]
    assert asgi_header(seen.last, b"x-domain-id") == [b"d"]
    assert asgi_header(seen.last, b"x-is-admin-project") == [b"True"]
    for name in (b"x-project-id", b"x-user-name", b"x-tenant", b"x-domain-name"):
        assert asgi_header(seen.last, name) == []
    assert all(v != b"None" for _, v in seen.last["headers"])


async def test_upper_case_header_names_from_the_server_are_understood() -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=counting())
    scope = http_scope(headers=[(b"X-Auth-Token", GOOD.encode()), (b"X-Roles", b"admin")])
    result = await call_asgi(mw, scope)
    assert result.status == 200
    assert asgi_header(app.last, b"x-roles") == [b"Member,reader,Admin"]


# -- delayed decision --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [[], [("X-Auth-Token", BAD)], [("X-Auth-Token", GOOD), ("X-Auth-Token", OTHER)]]
)
def test_delayed_mode_lets_the_app_decide(headers: list[tuple[str, str]]) -> None:
    client, seen = client_for(delay_auth_decision=True)
    response = client.get("/", headers=headers)
    assert response.status_code == 200
    assert response.json()["user"] is None
    assert seen.last["authmw.identity"] is None
    assert asgi_header(seen.last, b"x-identity-status") == [b"Invalid"]
    assert not any(n in INJECTED_NAMES - {b"x-identity-status"} for n, _ in seen.last["headers"])


def test_delayed_mode_outage_is_invalid() -> None:
    client, seen = client_for(outage(), delay_auth_decision=True)
    assert client.get("/", headers={"X-Auth-Token": GOOD}).status_code == 200
    assert asgi_header(seen.last, b"x-identity-status") == [b"Invalid"]
    assert seen.last["authmw.identity"] is None


def test_delayed_mode_adds_the_challenge_to_the_apps_own_401() -> None:
    client, _ = client_for(status=401, delay_auth_decision=True, www_authenticate_uri="https://ks")
    response = client.get("/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Keystone uri="https://ks"'
    assert response.json() == {"user": None, "roles": None}


def test_delayed_mode_adds_no_challenge_to_a_200() -> None:
    client, _ = client_for(delay_auth_decision=True)
    assert "www-authenticate" not in client.get("/").headers


def test_delayed_mode_adds_the_challenge_to_a_websocket_denial() -> None:
    client, _ = client_for(delay_auth_decision=True)
    with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect("/ws-deny"):
        pass
    assert caught.value.status_code == 401
    assert caught.value.headers["www-authenticate"] == 'Keystone realm="authmw"'
    assert caught.value.content == b"go away"


# -- websocket -----------------------------------------------------------------------------


def test_websocket_with_good_token() -> None:
    client, seen = client_for()
    with client.websocket_connect("/ws", headers={"X-Auth-Token": GOOD}) as ws:
        assert ws.receive_json() == {"user": "u-123"}
    assert asgi_header(seen.last, b"x-roles") == [b"Member,reader,Admin"]


@pytest.mark.parametrize("token", [None, BAD])
def test_rejected_websocket_gets_a_real_401_through_the_extension(token: str | None) -> None:
    client, seen = client_for()
    headers = {"X-Auth-Token": token} if token else {}
    with (
        pytest.raises(WebSocketDenialResponse) as caught,
        client.websocket_connect("/ws", headers=headers),
    ):
        pass
    denial = caught.value
    assert denial.status_code == 401
    assert denial.json()["error"]["code"] == 401
    assert denial.headers["www-authenticate"] == 'Keystone realm="authmw"'
    assert seen.scopes == []


def test_websocket_outage_through_the_extension_is_503() -> None:
    client, _ = client_for(outage())
    with (
        pytest.raises(WebSocketDenialResponse) as caught,
        client.websocket_connect("/ws", headers={"X-Auth-Token": GOOD}),
    ):
        pass
    assert caught.value.status_code == 503
    assert "retry-after" in caught.value.headers


def without_extensions(app: Any) -> Any:
    """A server that does not offer websocket.http.response."""

    async def server(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {k: v for k, v in scope.items() if k != "extensions"}
        await app(scope, receive, send)

    return server


@pytest.mark.parametrize(("validator", "code"), [(counting(), 1008), (outage(), 1013)])
def test_websocket_without_the_extension_is_closed_before_accept(
    validator: Counting, code: int
) -> None:
    seen = Seen()
    app = ASGIAuthMiddleware(starlette_app(seen), validator=validator)
    client = TestClient(without_extensions(app))
    token = BAD if code == 1008 else GOOD
    with (
        pytest.raises(WebSocketDisconnect) as caught,
        client.websocket_connect("/ws", headers={"X-Auth-Token": token}),
    ):
        pass
    assert not isinstance(caught.value, WebSocketDenialResponse)
    assert caught.value.code == code
    assert seen.scopes == []


async def websocket_messages(
    mw: Any, headers: list[tuple[bytes, bytes]], extensions: dict[str, Any] | None
) -> list[dict[str, Any]]:
    scope = http_scope("/ws", headers, type="websocket", scheme="ws", subprotocols=[])
    del scope["method"]
    if extensions is not None:
        scope["extensions"] = extensions
    result = await call_asgi(mw, scope, [{"type": "websocket.connect"}])
    return result.messages


@pytest.mark.parametrize(
    ("validator", "headers", "code"),
    [
        (counting(), [], 1008),
        (counting(), [(b"x-auth-token", BAD.encode())], 1008),
        (outage(), [(b"x-auth-token", GOOD.encode())], 1013),
    ],
)
async def test_websocket_close_codes_called_directly(
    validator: Counting, headers: list[tuple[bytes, bytes]], code: int
) -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator)
    extensions: dict[str, Any] | None
    for extensions in (None, {}, {"other": {}}):
        messages = await websocket_messages(mw, headers, extensions)
        assert messages == [{"type": "websocket.close", "code": code, "reason": ""}]
    denied = await websocket_messages(mw, headers, {"websocket.http.response": {}})
    assert [m["type"] for m in denied] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert denied[0]["status"] == (503 if code == 1013 else 401)
    assert json.loads(denied[1]["body"])["error"]["code"] == denied[0]["status"]
    assert app.scopes == []


async def test_rejected_websocket_whose_client_left_sends_nothing() -> None:
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=counting())
    scope = http_scope("/ws", [], type="websocket", scheme="ws")
    result = await call_asgi(mw, scope, [{"type": "websocket.disconnect", "code": 1001}])
    assert result.messages == []


# -- lifespan and other scopes -----------------------------------------------------------------


def test_lifespan_passes_through_and_closes_the_validator() -> None:
    validator = counting()
    client, seen = client_for(validator)
    with client:
        assert seen.events == ["startup"]
        assert client.get("/", headers={"X-Auth-Token": GOOD}).status_code == 200
        assert not validator.aclosed
    assert seen.events == ["startup", "shutdown"]
    assert validator.aclosed


async def test_unknown_scope_types_pass_through_untouched() -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    validator = counting()
    mw = ASGIAuthMiddleware(app, validator=validator)

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "custom", "headers": [(b"x-roles", b"admin")]}
    await mw(scope, receive, send)
    assert calls == [(scope, receive, send)]
    assert calls[0][0] is scope
    assert scope == {"type": "custom", "headers": [(b"x-roles", b"admin")]}
    assert validator.calls == []


@pytest.mark.parametrize("delayed", [False, True])
async def test_the_servers_scope_is_not_mutated(delayed: bool) -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=counting(), delay_auth_decision=delayed)
    for headers in (
        [(b"x-auth-token", GOOD.encode()), (b"x-roles", b"admin"), (b"host", b"h")],
        [(b"x-roles", b"admin")],
    ):
        scope = http_scope(headers=headers)
        before = copy.deepcopy(scope)
        original_headers = scope["headers"]
        await call_asgi(mw, scope)
        assert scope == before
        assert scope["headers"] is original_headers
        assert "authmw.identity" not in scope
    assert app.scopes and all(s is not scope for s in app.scopes)


# -- through httpx.ASGITransport ---------------------------------------------------------------


async def test_through_httpx_asgi_transport() -> None:
    seen = Seen()
    identity = full_identity()
    app = ASGIAuthMiddleware(starlette_app(seen), validator=counting(identity))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        ok = await client.get("/", headers={"X-Auth-Token": GOOD})
        assert ok.status_code == 200
        assert ok.json()["roles"] == "Member,reader,Admin"
        assert seen.last["authmw.identity"] is identity
        missing = await client.get("/")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == 401
        assert missing.headers["www-authenticate"] == 'Keystone realm="authmw"'
        twice = await client.get("/", headers=[("X-Auth-Token", GOOD), ("X-Auth-Token", OTHER)])
        assert twice.status_code == 401
    assert len(seen.scopes) == 1


async def test_through_httpx_asgi_transport_outage() -> None:
    app = ASGIAuthMiddleware(starlette_app(Seen()), validator=outage())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/", headers={"X-Auth-Token": GOOD}, content=b"x")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


# -- construction -----------------------------------------------------------------------------


def test_a_validator_or_core_is_required() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ASGIAuthMiddleware(ASGIRecorder())
    assert caught.value.option == "validator"
    with pytest.raises(ConfigurationError) as caught:
        ASGIAuthMiddleware(ASGIRecorder(), counting(), core=AuthCore(counting()))
    assert caught.value.option == "core"


def test_bad_option_fails_when_starlette_builds_the_stack() -> None:
    app = Starlette()
    app.add_middleware(ASGIAuthMiddleware, validator=counting(), public_routes="GET /x")
    with pytest.raises(ConfigurationError) as caught:
        TestClient(app).get("/")
    assert caught.value.option == "public_routes"


def test_stats() -> None:
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=counting())
    assert mw.stats()["hits"] == 0
    body = json.dumps(mw.stats())
    assert "hits" in body
