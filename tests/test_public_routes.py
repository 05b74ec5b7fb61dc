from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from helpers import (
    GOOD,
    ASGIRecorder,
    WSGIRecorder,
    call_asgi,
    call_wsgi,
    counting,
    environ,
    http_scope,
)

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware

RULES = ["GET /healthz", "GET,HEAD /status", "/static/*", "OPTIONS *"]

PUBLIC = [
    ("GET", "/healthz"),
    ("GET", "/status"),
    ("HEAD", "/status"),
    ("GET", "/static/app.js"),
    ("POST", "/static/upload"),
    ("GET", "/static/"),
    ("GET", "/static/a/b/c.css"),
    ("OPTIONS", "/anything/at/all"),
    ("OPTIONS", "*"),
]

# What makes an OPTIONS request a CORS preflight: "OPTIONS *" lets only those through.
PREFLIGHT = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "DELETE")]

PRIVATE = [
    ("POST", "/healthz"),
    ("DELETE", "/healthz"),
    ("POST", "/status"),
    ("GET", "/healthz/"),
    ("GET", "/healthzx"),
    ("GET", "/healthz/sub"),
    ("GET", "/static"),
    ("GET", "/staticx/a"),
    ("GET", "/admin"),
    ("get", "/healthz"),
    ("GET", ""),
    ("OPTIONS", "/admin"),  # not a preflight: no Origin / Access-Control-Request-Method
]

# Paths that look public before normalisation and are not after it.
BYPASSES = [
    "/healthz/../admin",
    "/healthz/./../admin",
    "/healthz/.",
    "/healthz/..",
    "//healthz",
    "/healthz//",
    "/static/../admin",
    "/static/./../admin",
    "/static//../admin",
    "/static/..\\admin",
    "/static/%2e%2e/admin",
    "/static/..%2fadmin",
    "/static/%2E%2E%2Fadmin",
    "/healthz%2f..%2fadmin",
    "/static/a%00.js",
    "/static/%252e%252e/admin",
    "healthz",
]


def wsgi(**options: Any) -> tuple[WSGIAuthMiddleware, WSGIRecorder]:
    app = WSGIRecorder()
    return WSGIAuthMiddleware(app, counting(), public_routes=RULES, **options), app


def asgi(**options: Any) -> tuple[ASGIAuthMiddleware, ASGIRecorder]:
    app = ASGIRecorder()
    return ASGIAuthMiddleware(app, validator=counting(), public_routes=RULES, **options), app


@pytest.mark.parametrize(("method", "path"), PUBLIC)
def test_public_routes_skip_authentication_wsgi(method: str, path: str) -> None:
    mw, app = wsgi()
    headers = PREFLIGHT if method == "OPTIONS" else []
    result = call_wsgi(mw, environ(path, method=method, headers=headers))
    assert result.code == 200
    assert app.last["authmw.identity"] is None


@pytest.mark.parametrize(("method", "path"), PUBLIC)
async def test_public_routes_skip_authentication_asgi(method: str, path: str) -> None:
    mw, app = asgi()
    preflight = [(n.lower().encode(), v.encode()) for n, v in PREFLIGHT]
    headers = preflight if method == "OPTIONS" else []
    result = await call_asgi(mw, http_scope(path, method=method, headers=headers))
    assert result.status == 200
    assert app.last["authmw.identity"] is None


@pytest.mark.parametrize("missing", [name for name, _ in PREFLIGHT])
def test_options_rule_lets_only_cors_preflights_through(missing: str) -> None:
    # A Django function view or a Flask view listing OPTIONS runs its body
    # for any OPTIONS request: only a real preflight may skip authentication.
    mw, app = wsgi()
    headers = [(n, v) for n, v in PREFLIGHT if n != missing]
    assert call_wsgi(mw, environ("/items", method="OPTIONS", headers=headers)).code == 401
    assert call_wsgi(mw, environ("/items", method="OPTIONS", headers=PREFLIGHT)).code == 200
    assert app.last["authmw.identity"] is None
    assert len(app.environs) == 1


async def test_any_options_rule_lets_every_options_request_through() -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(app, validator=counting(), public_routes=["ANY-OPTIONS *"])
    assert (await call_asgi(mw, http_scope("/items", method="OPTIONS"))).status == 200
    assert (await call_asgi(mw, http_scope("/items", method="GET"))).status == 401
    assert len(app.scopes) == 1


@pytest.mark.parametrize(("method", "path"), PRIVATE)
def test_other_routes_need_a_token_wsgi(method: str, path: str) -> None:
    mw, app = wsgi()
    assert call_wsgi(mw, environ(path, method=method)).code == 401
    assert app.environs == []
    assert call_wsgi(mw, environ(path, method=method, headers=[("X-Auth-Token", GOOD)])).code == 200


@pytest.mark.parametrize(("method", "path"), PRIVATE)
async def test_other_routes_need_a_token_asgi(method: str, path: str) -> None:
    mw, app = asgi()
    assert (await call_asgi(mw, http_scope(path, method=method))).status == 401
    assert app.scopes == []


@pytest.mark.parametrize("path", BYPASSES)
def test_unnormalised_paths_are_not_public_wsgi(path: str) -> None:
    mw, app = wsgi()
    # As the raw request line (gunicorn's RAW_URI, others' REQUEST_URI) and as
    # PATH_INFO, both undecoded and decoded the way servers decode it.
    decoded = path.replace("%2f", "/").replace("%2F", "/").replace("%2e", ".").replace("%2E", ".")
    for path_info in {path, decoded}:
        for raw_key in ("RAW_URI", "REQUEST_URI", None):
            extra: dict[str, Any] = {raw_key: path} if raw_key else {}
            result = call_wsgi(mw, environ(path_info, **extra))
            assert result.code == 401, (path_info, raw_key)
    assert app.environs == []


@pytest.mark.parametrize("path", BYPASSES)
async def test_unnormalised_paths_are_not_public_asgi(path: str) -> None:
    mw, app = asgi()
    decoded = path.replace("%2f", "/").replace("%2F", "/").replace("%2e", ".").replace("%2E", ".")
    for scope_path in {path, decoded}:
        for raw_path in (path.encode(), None):
            for scope_type in ("http", "websocket"):
                scope = http_scope(scope_path, raw_path=raw_path, type=scope_type)
                incoming = [{"type": "websocket.connect"}] if scope_type == "websocket" else []
                result = await call_asgi(mw, scope, incoming)
                if scope_type == "http":
                    assert result.status == 401, (scope_path, raw_path)
    assert app.scopes == []


def test_clean_raw_uri_with_a_query_string_stays_public() -> None:
    mw, _ = wsgi()
    env = environ("/healthz", RAW_URI="/healthz?verbose=1", QUERY_STRING="verbose=1")
    assert call_wsgi(mw, env).code == 200
    env = environ("/static/my file.js", RAW_URI="/static/my%20file.js")
    assert call_wsgi(mw, env).code == 200


def test_public_path_behind_a_dirty_raw_uri_is_not_public() -> None:
    # A front end normalised the path, but the client asked for something else.
    mw, _ = wsgi()
    assert call_wsgi(mw, environ("/healthz", RAW_URI="/healthz/../admin")).code == 401
    assert call_wsgi(mw, environ("/healthz", RAW_URI="/x/..%2fhealthz")).code == 401


@pytest.mark.parametrize(
    ("script_name", "path_info"),
    [
        ("/healthz", ""),
        ("/healthz", "/"),
        ("/healthz", "/admin"),
        ("/healthz", "/../admin"),
        ("/static", "/../admin"),
        ("/static/", "admin"),
        ("/healthz/..", "/admin"),
    ],
)
def test_script_name_tricks_are_not_public(script_name: str, path_info: str) -> None:
    # Rules match the app's own path (PATH_INFO); a SCRIPT_NAME that looks
    # public never makes the path under it public.
    mw, app = wsgi()
    result = call_wsgi(mw, environ(path_info, SCRIPT_NAME=script_name))
    assert result.code == 401
    assert app.environs == []


def test_rules_apply_below_the_mount_point() -> None:
    mw, app = wsgi()
    env = environ("/healthz", SCRIPT_NAME="/api", RAW_URI="/api/healthz")
    assert call_wsgi(mw, env).code == 200
    assert app.last["SCRIPT_NAME"] == "/api"


@pytest.mark.parametrize(
    ("root_path", "path", "public"),
    [
        ("/api", "/api/healthz", True),
        ("/api", "/healthz", True),
        ("/healthz", "/healthz", False),
        ("/healthz", "/healthz/admin", False),
        ("/healthz", "/healthz/../admin", False),
        ("/api", "/api//healthz", False),
        ("/ap", "/api/healthz", False),
    ],
)
async def test_asgi_root_path(root_path: str, path: str, public: bool) -> None:
    mw, _ = asgi()
    result = await call_asgi(mw, http_scope(path, root_path=root_path))
    assert result.status == (200 if public else 401)


def forged() -> list[tuple[str, str]]:
    return [
        ("X-Roles", "admin"),
        ("X_Is_Admin_Project", "True"),
        ("openstack-system-scope", "all"),
        ("X-Identity-Status", "Confirmed"),
        ("X-User-Id", "root"),
    ]


@pytest.mark.parametrize("delayed", [False, True])
def test_public_routes_still_strip_forged_headers_wsgi(delayed: bool) -> None:
    mw, app = wsgi(delay_auth_decision=delayed)
    assert call_wsgi(mw, environ("/healthz", headers=forged())).code == 200
    env = app.last
    for key in (
        "HTTP_X_ROLES",
        "HTTP_X_IS_ADMIN_PROJECT",
        "HTTP_OPENSTACK_SYSTEM_SCOPE",
        "HTTP_X_IDENTITY_STATUS",
        "HTTP_X_USER_ID",
    ):
        assert key not in env
    assert env["authmw.identity"] is None


@pytest.mark.parametrize("delayed", [False, True])
async def test_public_routes_still_strip_forged_headers_asgi(delayed: bool) -> None:
    mw, app = asgi(delay_auth_decision=delayed)
    headers = [(n.encode(), v.encode()) for n, v in forged()] + [(b"accept", b"*/*")]
    scope = http_scope("/healthz", headers=headers)
    assert (await call_asgi(mw, scope)).status == 200
    assert app.last["headers"] == [(b"accept", b"*/*")]
    assert app.last["authmw.identity"] is None
    assert scope["headers"] == headers  # the server's own list is untouched


def test_public_route_does_not_call_the_validator() -> None:
    validator = counting()
    app = WSGIRecorder()
    mw = WSGIAuthMiddleware(app, validator, public_routes=["GET /healthz"])
    call_wsgi(mw, environ("/healthz", headers=[("X-Auth-Token", GOOD)]))
    assert validator.calls == []


def test_any_path_rule() -> None:
    mw = WSGIAuthMiddleware(WSGIRecorder(), counting(), public_routes=["*"])
    assert call_wsgi(mw, environ("/anything", method="DELETE")).code == 200


# -- under a real WSGI server ---------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, WSGIRecorder]]:
    app = WSGIRecorder()
    mw = WSGIAuthMiddleware(app, counting(), public_routes=RULES)
    httpd = make_server("127.0.0.1", 0, mw, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port, app
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def request(
    port: int, method: str, target: str, headers: list[tuple[str, str]] | None = None
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=False, skip_accept_encoding=True)
        for name, value in headers or ():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# http.server itself turns a leading "//" into "/", so the app really is asked
# for /healthz there; "//healthz" is covered by the direct tests above.
@pytest.mark.parametrize(
    "target",
    [p for p in BYPASSES if p.startswith("/") and not p.startswith("//") and "\\" not in p]
    + ["/%68ealthz/../admin"],
)
def test_bypass_attempts_against_a_real_server(
    server: tuple[int, WSGIRecorder], target: str
) -> None:
    port, app = server
    app.environs.clear()
    assert request(port, "GET", target) == 401
    assert app.environs == []


def test_public_route_under_a_real_server(server: tuple[int, WSGIRecorder]) -> None:
    port, _ = server
    assert request(port, "GET", "/healthz") == 200
    assert request(port, "GET", "/healthz?x=1") == 200
    assert request(port, "OPTIONS", "*", PREFLIGHT) == 200
    assert request(port, "OPTIONS", "/items") == 401
    assert request(port, "POST", "/healthz") == 401
