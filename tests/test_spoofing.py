"""Every forgeable identity header, in every spelling, in every mode: the app never sees it.

Each name of :data:`authmw.headers.STRIPPED_HEADERS` is sent as ``X-Roles``,
``x-roles`` and ``X_Roles`` with no token, a bad token and a good token, in
normal and delayed mode, through WSGI (a real wsgiref server, which folds
``X_Roles`` into ``HTTP_X_ROLES`` itself) and ASGI (scopes holding the exact
bytes a client sent, and Starlette's TestClient).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from helpers import (
    BAD,
    GOOD,
    ASGIRecorder,
    Counting,
    WSGIRecorder,
    call_asgi,
    full_identity,
    http_scope,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.headers import STRIPPED_HEADERS

FORGED = "forged-by-client"
SERVICE = "service-token-0123456789"
NAMES = sorted(STRIPPED_HEADERS)
SPELLINGS: list[Callable[[str], str]] = [
    lambda name: name,
    lambda name: name.lower(),
    lambda name: name.replace("-", "_"),
]
TOKENS: dict[str, str | None] = {"no token": None, "bad token": BAD, "good token": GOOD}
MODES = {"normal": False, "delayed": True}


def validator() -> Counting:
    return Counting(
        {
            GOOD: full_identity(system_scope=None),
            SERVICE: full_identity(user_id="svc", roles=("service",)),
        }
    )


def expected_status(token: str | None, delayed: bool) -> int:
    return 200 if delayed or token == GOOD else 401


# -- WSGI under a real server ----------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def wsgi_servers() -> Iterator[dict[bool, tuple[int, WSGIRecorder]]]:
    servers = {}
    threads = []
    out = {}
    for delayed in (False, True):
        app = WSGIRecorder()
        server = make_server(
            "127.0.0.1",
            0,
            WSGIAuthMiddleware(app, validator(), delay_auth_decision=delayed),
            handler_class=_Quiet,
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers[delayed] = server
        threads.append(thread)
        out[delayed] = (server.server_port, app)
    yield out
    for server in servers.values():
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join()


def wsgi_get(port: int, headers: list[tuple[str, str]]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/resource", skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def assert_clean_environ(env: dict[str, Any], token: str | None) -> None:
    forged = {k: v for k, v in env.items() if isinstance(v, str) and FORGED in v}
    assert not forged, forged
    if token == GOOD:
        assert env["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
        assert env["authmw.identity"] is not None
    else:
        assert env["HTTP_X_IDENTITY_STATUS"] == "Invalid"
        assert env["authmw.identity"] is None


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", NAMES)
def test_wsgi_app_never_sees_a_forged_header(
    wsgi_servers: dict[bool, tuple[int, WSGIRecorder]], name: str, mode: str
) -> None:
    delayed = MODES[mode]
    port, app = wsgi_servers[delayed]
    for spelling in SPELLINGS:
        for token in TOKENS.values():
            app.environs.clear()
            headers = [(spelling(name), FORGED)]
            if token is not None:
                headers.append(("X-Auth-Token", token))
            status = wsgi_get(port, headers)
            assert status == expected_status(token, delayed), (spelling(name), token)
            if status == 401:
                assert app.environs == []
                continue
            assert len(app.environs) == 1
            assert_clean_environ(app.last, token)


def test_wsgi_all_names_at_once(wsgi_servers: dict[bool, tuple[int, WSGIRecorder]]) -> None:
    # http.server allows 100 header lines: one spelling per request.
    for delayed, spelling in [(d, s) for d in (False, True) for s in SPELLINGS]:
        port, app = wsgi_servers[delayed]
        for token in TOKENS.values():
            app.environs.clear()
            headers = [(spelling(n), FORGED) for n in NAMES]
            if token is not None:
                headers.append(("X-Auth-Token", token))
            status = wsgi_get(port, headers)
            assert status == expected_status(token, delayed)
            if status == 200:
                assert_clean_environ(app.last, token)


# -- ASGI with the exact bytes a client sent ---------------------------------------------


def assert_clean_scope(scope: dict[str, Any], token: str | None) -> None:
    forged = [(n, v) for n, v in scope["headers"] if FORGED.encode() in v]
    assert not forged, forged
    status = [v for n, v in scope["headers"] if n == b"x-identity-status"]
    assert status == ([b"Confirmed"] if token == GOOD else [b"Invalid"])
    assert (scope["authmw.identity"] is not None) == (token == GOOD)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", NAMES)
async def test_asgi_app_never_sees_a_forged_header(name: str, mode: str) -> None:
    delayed = MODES[mode]
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator(), delay_auth_decision=delayed)
    for spelling in SPELLINGS:
        for token in TOKENS.values():
            app.scopes.clear()
            headers = [(spelling(name).encode(), FORGED.encode())]
            if token is not None:
                headers.append((b"x-auth-token", token.encode()))
            for scope_type in ("http", "websocket"):
                scope = http_scope(headers=headers, type=scope_type)
                incoming = [{"type": "websocket.connect"}] if scope_type == "websocket" else []
                result = await call_asgi(mw, scope, incoming)
                if expected_status(token, delayed) == 401:
                    assert app.scopes == []
                    if scope_type == "http":
                        assert result.status == 401
                    continue
                assert_clean_scope(app.last, token)


async def test_asgi_duplicates_and_mixed_spellings_at_once() -> None:
    for delayed in (False, True):
        app = ASGIRecorder()
        mw = ASGIAuthMiddleware(app, validator=validator(), delay_auth_decision=delayed)
        for token in TOKENS.values():
            app.scopes.clear()
            headers = [(s(n).encode(), FORGED.encode()) for n in NAMES for s in SPELLINGS]
            headers += [(n.upper().encode(), FORGED.encode()) for n in NAMES]
            if token is not None:
                headers.append((b"X-Auth-Token", token.encode()))
            result = await call_asgi(mw, http_scope(headers=headers))
            assert result.status == expected_status(token, delayed)
            if result.status == 200:
                assert_clean_scope(app.last, token)


def test_asgi_through_starlette_testclient() -> None:
    seen: list[Any] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        seen.append(request.scope)
        return PlainTextResponse("ok")

    for delayed in (False, True):
        app = Starlette(routes=[Route("/", endpoint)])
        app.add_middleware(ASGIAuthMiddleware, validator=validator(), delay_auth_decision=delayed)
        client = TestClient(app)
        for token in TOKENS.values():
            seen.clear()
            headers = [(s(n), FORGED) for n in NAMES for s in SPELLINGS]
            if token is not None:
                headers.append(("X-Auth-Token", token))
            response = client.get("/", headers=headers)
            assert response.status_code == expected_status(token, delayed)
            if response.status_code == 200:
                assert_clean_scope(seen[-1], token)


# -- realistic forgeries ---------------------------------------------------------------------

REALISTIC = [
    ("X-Identity-Status", "Confirmed"),
    ("X-Roles", "admin"),
    ("X_Roles", "admin"),
    ("x-role", "admin"),
    ("X-Is-Admin-Project", "True"),
    ("OpenStack-System-Scope", "all"),
    ("X-User-Id", "root"),
    ("X_User_Id", "root"),
    ("X-Project-Id", "victim-project"),
    ("X-Tenant-Id", "victim-project"),
    ("X-Service-Identity-Status", "Confirmed"),
    ("X-Service-Roles", "service"),
]


def test_delayed_mode_without_token_sees_no_forged_privileges_wsgi(
    wsgi_servers: dict[bool, tuple[int, WSGIRecorder]],
) -> None:
    port, app = wsgi_servers[True]
    app.environs.clear()
    assert wsgi_get(port, REALISTIC) == 200
    env = app.last
    assert env["HTTP_X_IDENTITY_STATUS"] == "Invalid"
    for key in (
        "HTTP_X_ROLES",
        "HTTP_X_ROLE",
        "HTTP_X_IS_ADMIN_PROJECT",
        "HTTP_OPENSTACK_SYSTEM_SCOPE",
        "HTTP_X_USER_ID",
        "HTTP_X_PROJECT_ID",
        "HTTP_X_TENANT_ID",
        "HTTP_X_SERVICE_IDENTITY_STATUS",
        "HTTP_X_SERVICE_ROLES",
    ):
        assert key not in env


async def test_delayed_mode_without_token_sees_no_forged_privileges_asgi() -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator(), delay_auth_decision=True)
    headers = [(n.encode(), v.encode()) for n, v in REALISTIC]
    await call_asgi(mw, http_scope(headers=headers))
    names = [n for n, _ in app.last["headers"]]
    assert names == [b"x-identity-status"]
    assert app.last["headers"] == [(b"x-identity-status", b"Invalid")]


def test_good_token_headers_replace_forged_ones_wsgi(
    wsgi_servers: dict[bool, tuple[int, WSGIRecorder]],
) -> None:
    port, app = wsgi_servers[False]
    app.environs.clear()
    assert wsgi_get(port, [*REALISTIC, ("X-Auth-Token", GOOD)]) == 200
    env = app.last
    assert env["HTTP_X_ROLES"] == "Member,reader,Admin"
    assert env["HTTP_X_IS_ADMIN_PROJECT"] == "False"
    assert env["HTTP_X_USER_ID"] == "u-123"
    assert env["HTTP_X_PROJECT_ID"] == "p-456"
    assert "HTTP_OPENSTACK_SYSTEM_SCOPE" not in env
    assert "HTTP_X_SERVICE_IDENTITY_STATUS" not in env
    assert "HTTP_X_SERVICE_ROLES" not in env


async def test_forged_service_headers_with_a_real_service_token() -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=validator())
    headers = [
        (b"x-service-roles", b"admin"),
        (b"X_Service_User_Id", b"root"),
        (b"x-auth-token", GOOD.encode()),
        (b"x-service-token", SERVICE.encode()),
    ]
    await call_asgi(mw, http_scope(headers=headers))
    got = app.last["headers"]
    assert [v for n, v in got if n == b"x-service-roles"] == [b"service"]
    assert [v for n, v in got if n == b"x-service-user-id"] == [b"svc"]
    assert [v for n, v in got if n == b"x-user-id"] == [b"u-123"]
    assert [v for n, v in got if n == b"x-service-identity-status"] == [b"Confirmed"]
