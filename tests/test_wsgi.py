from __future__ import annotations

import http.client
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import is_hop_by_hop
from wsgiref.validate import validator as pep3333

import httpx
import pytest
from helpers import (
    BAD,
    GOOD,
    OTHER,
    Counting,
    WSGIRecorder,
    call_wsgi,
    counting,
    environ,
    full_identity,
    outage,
)
from webob import Request

from authmw import AuthCore, ConfigurationError, Identity, WSGIAuthMiddleware

USER_KEYS = [
    "HTTP_X_USER_ID",
    "HTTP_X_USER_NAME",
    "HTTP_X_USER_DOMAIN_ID",
    "HTTP_X_USER_DOMAIN_NAME",
    "HTTP_X_PROJECT_ID",
    "HTTP_X_PROJECT_NAME",
    "HTTP_X_PROJECT_DOMAIN_ID",
    "HTTP_X_PROJECT_DOMAIN_NAME",
    "HTTP_X_DOMAIN_ID",
    "HTTP_X_DOMAIN_NAME",
    "HTTP_X_ROLES",
    "HTTP_X_IS_ADMIN_PROJECT",
    "HTTP_OPENSTACK_SYSTEM_SCOPE",
    "HTTP_X_SERVICE_CATALOG",
    "HTTP_X_TENANT_ID",
    "HTTP_X_TENANT_NAME",
    "HTTP_X_TENANT",
    "HTTP_X_USER",
    "HTTP_X_ROLE",
]


def wrap(validator: Any = None, app: Any = None, **options: Any) -> WSGIAuthMiddleware:
    return WSGIAuthMiddleware(app or WSGIRecorder(), validator or counting(), **options)


def recorder(mw: WSGIAuthMiddleware) -> WSGIRecorder:
    assert isinstance(mw.app, WSGIRecorder)
    return mw.app


# -- through webob ---------------------------------------------------------------


def test_good_token_reaches_the_app_with_its_identity() -> None:
    identity = full_identity()
    mw = wrap(counting(identity))
    response = Request.blank("/things", headers={"X-Auth-Token": GOOD}).get_response(mw)
    assert response.status_int == 200
    assert response.body == b"ok"
    seen = recorder(mw).last
    assert seen["authmw.identity"] is identity
    assert seen["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
    assert seen["HTTP_X_AUTH_TOKEN"] == GOOD  # left untouched


def test_missing_token_is_401_json_with_challenge() -> None:
    mw = wrap(www_authenticate_uri="https://keystone.example/v3")
    response = Request.blank("/").get_response(mw)
    assert response.status_int == 401
    assert response.content_type == "application/json"
    error = response.json["error"]
    assert error["code"] == 401 and error["title"] == "Unauthorized" and error["message"]
    assert response.headers["WWW-Authenticate"] == 'Keystone uri="https://keystone.example/v3"'
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert recorder(mw).environs == []


def test_blank_token_is_401() -> None:
    mw = wrap()
    response = Request.blank("/", headers={"X-Auth-Token": "   "}).get_response(mw)
    assert response.status_int == 401
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    assert recorder(mw).environs == []


def test_whitespace_around_the_token_is_stripped() -> None:
    validator = counting()
    mw = wrap(validator)
    response = Request.blank("/", headers={"X-Auth-Token": f"  {GOOD}\t"}).get_response(mw)
    assert response.status_int == 200
    assert validator.calls == [GOOD]


def test_token_header_is_configurable() -> None:
    mw = wrap(token_header="X-Api-Token")
    assert Request.blank("/", headers={"X-Auth-Token": GOOD}).get_response(mw).status_int == 401
    response = Request.blank("/", headers={"X-Api-Token": GOOD}).get_response(mw)
    assert response.status_int == 200


def test_oversized_token_is_401_without_calling_the_validator() -> None:
    validator = Counting()
    big = "t" * (8 * 1024 + 1)
    validator.answers[big] = full_identity()
    mw = wrap(validator)
    response = Request.blank("/", headers={"X-Auth-Token": big}).get_response(mw)
    assert response.status_int == 401
    assert validator.calls == []
    assert recorder(mw).environs == []


def test_two_different_tokens_folded_by_the_server_are_refused() -> None:
    validator = Counting({GOOD: full_identity(), OTHER: full_identity(user_id="u-2")})
    mw = wrap(validator)
    request = Request.blank("/")
    request.environ["HTTP_X_AUTH_TOKEN"] = f"{GOOD},{OTHER}"  # how servers join repeats
    response = request.get_response(mw)
    assert response.status_int in (400, 401)
    assert validator.calls == []
    assert recorder(mw).environs == []


def test_same_token_twice_is_accepted() -> None:
    mw = wrap()
    request = Request.blank("/")
    request.environ["HTTP_X_AUTH_TOKEN"] = f"{GOOD},{GOOD}"
    assert request.get_response(mw).status_int == 200


def test_bad_token_is_401() -> None:
    mw = wrap()
    response = Request.blank("/", headers={"X-Auth-Token": BAD}).get_response(mw)
    assert response.status_int == 401
    assert response.json["error"]["code"] == 401
    assert "WWW-Authenticate" in response.headers


def test_outage_is_503_with_retry_after() -> None:
    mw = wrap(outage(), retry_after=12)
    response = Request.blank("/", headers={"X-Auth-Token": GOOD}).get_response(mw)
    assert response.status_int == 503
    assert response.headers["Retry-After"] == "12"
    assert response.json["error"]["code"] == 503
    assert "WWW-Authenticate" not in response.headers
    assert recorder(mw).environs == []


class Exploding:
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise ZeroDivisionError("validator bug")


def test_unexpected_validator_error_is_503_not_500() -> None:
    mw = wrap(Exploding())
    response = Request.blank("/", headers={"X-Auth-Token": GOOD}).get_response(mw)
    assert response.status_int == 503
    assert response.json["error"]["code"] == 503


# -- injected headers ---------------------------------------------------------------


def test_project_token_headers() -> None:
    identity = full_identity()
    mw = wrap(counting(identity))
    call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    seen = recorder(mw).last
    expected = {
        "HTTP_X_IDENTITY_STATUS": "Confirmed",
        "HTTP_X_USER_ID": "u-123",
        "HTTP_X_USER_NAME": "alice",
        "HTTP_X_USER_DOMAIN_ID": "ud-1",
        "HTTP_X_USER_DOMAIN_NAME": "UserDomain",
        "HTTP_X_PROJECT_ID": "p-456",
        "HTTP_X_PROJECT_NAME": "Project X",
        "HTTP_X_PROJECT_DOMAIN_ID": "pd-1",
        "HTTP_X_PROJECT_DOMAIN_NAME": "ProjectDomain",
        "HTTP_X_ROLES": "Member,reader,Admin",
        "HTTP_X_IS_ADMIN_PROJECT": "False",
        "HTTP_X_TENANT_ID": "p-456",
        "HTTP_X_TENANT_NAME": "Project X",
        "HTTP_X_TENANT": "Project X",
        "HTTP_X_USER": "alice",
        "HTTP_X_ROLE": "Member,reader,Admin",
    }
    for key, value in expected.items():
        assert seen[key] == value, key
    for key in ("HTTP_X_DOMAIN_ID", "HTTP_X_DOMAIN_NAME", "HTTP_OPENSTACK_SYSTEM_SCOPE"):
        assert key not in seen
    assert "HTTP_X_SERVICE_CATALOG" not in seen


def test_domain_token_headers_omit_absent_values() -> None:
    identity = Identity("u1", domain_id="d-9", domain_name="Dom", roles=("admin",))
    mw = wrap(counting(identity))
    call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    seen = recorder(mw).last
    assert seen["HTTP_X_DOMAIN_ID"] == "d-9"
    assert seen["HTTP_X_DOMAIN_NAME"] == "Dom"
    assert seen["HTTP_X_IS_ADMIN_PROJECT"] == "True"
    for key in USER_KEYS:
        if key in seen:
            assert isinstance(seen[key], str) and seen[key] != "None", key
    for key in ("HTTP_X_PROJECT_ID", "HTTP_X_TENANT_ID", "HTTP_X_TENANT", "HTTP_X_USER_NAME"):
        assert key not in seen


def test_system_scope_header() -> None:
    mw = wrap(counting(Identity("u1", system_scope="all", roles=("reader",))))
    call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    assert recorder(mw).last["HTTP_OPENSTACK_SYSTEM_SCOPE"] == "all"


def test_no_environ_value_is_ever_none() -> None:
    mw = wrap(counting(Identity("u1")))
    call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    for key, value in recorder(mw).last.items():
        if key.startswith("HTTP_"):
            assert isinstance(value, str), key


def test_non_ascii_values_are_latin1_bytes_as_str() -> None:
    mw = wrap(counting(Identity("u1", user_name="Jürgen")))
    response = Request.blank("/", headers={"X-Auth-Token": GOOD}).get_response(mw)
    assert response.status_int == 200
    value = recorder(mw).last["HTTP_X_USER_NAME"]
    assert value.encode("latin-1").decode("utf-8") == "Jürgen"


# -- delayed decision ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", BAD, f"{GOOD},{OTHER}", "x" * 9000])
def test_delayed_mode_lets_the_app_decide(token: str | None) -> None:
    mw = wrap(delay_auth_decision=True)
    headers = [] if token is None else [("X-Auth-Token", token)]
    result = call_wsgi(mw, environ(headers=headers))
    assert result.code == 200
    seen = recorder(mw).last
    assert seen["authmw.identity"] is None
    assert seen["HTTP_X_IDENTITY_STATUS"] == "Invalid"
    for key in USER_KEYS:
        assert key not in seen


def test_delayed_mode_outage_is_invalid_not_503() -> None:
    mw = wrap(outage(), delay_auth_decision=True)
    result = call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    assert result.code == 200
    assert recorder(mw).last["HTTP_X_IDENTITY_STATUS"] == "Invalid"
    assert recorder(mw).last["authmw.identity"] is None


def test_delayed_mode_good_token_is_confirmed() -> None:
    mw = wrap(delay_auth_decision=True)
    call_wsgi(mw, environ(headers=[("X-Auth-Token", GOOD)]))
    assert recorder(mw).last["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
    assert recorder(mw).last["authmw.identity"] is not None


def test_delayed_mode_adds_the_challenge_to_the_apps_own_401() -> None:
    app = WSGIRecorder(status="401 Unauthorized", body=b"no")
    mw = wrap(app=app, delay_auth_decision=True, www_authenticate_uri="https://ks/v3")
    result = call_wsgi(mw, environ())
    assert result.code == 401
    assert result.body == b"no"
    assert result.header("WWW-Authenticate") == 'Keystone uri="https://ks/v3"'
    assert result.header("Content-Type") == "text/plain"


def test_delayed_mode_keeps_the_apps_own_challenge() -> None:
    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="app"')])
        return [b""]

    result = call_wsgi(wrap(app=app, delay_auth_decision=True), environ())
    assert result.header("WWW-Authenticate") == 'Bearer realm="app"'


@pytest.mark.parametrize("status", ["200 OK", "403 Forbidden", "404 Not Found"])
def test_delayed_mode_adds_no_challenge_to_other_statuses(status: str) -> None:
    app = WSGIRecorder(status=status)
    result = call_wsgi(wrap(app=app, delay_auth_decision=True), environ())
    assert result.status == status
    assert result.header("WWW-Authenticate") is None
    assert result.headers == [("Content-Type", "text/plain")]


# -- PEP 3333 ---------------------------------------------------------------------


def test_rejection_calls_start_response_once_and_never_the_app() -> None:
    calls: list[str] = []

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append("app")
        start_response("200 OK", [])
        return [b""]

    for validator, token, code in ((counting(), None, 401), (outage(), GOOD, 503)):
        mw = WSGIAuthMiddleware(app, validator)
        headers = [] if token is None else [("X-Auth-Token", token)]
        result = call_wsgi(mw, environ(headers=headers))
        assert result.calls == 1
        assert result.code == code
        assert not any(is_hop_by_hop(name) for name, _ in result.headers)
        assert json.loads(result.body)["error"]["code"] == code
    assert calls == []


@pytest.mark.parametrize("delayed", [False, True])
def test_passes_pep3333_validation_both_ways(delayed: bool) -> None:
    # wsgiref's validator checks the middleware as an app (outer) and as a
    # server for the wrapped app (inner): environ types, start_response use,
    # iterable closing.
    inner = pep3333(WSGIRecorder())
    mw = pep3333(WSGIAuthMiddleware(inner, counting(), delay_auth_decision=delayed))
    for headers in ([("X-Auth-Token", GOOD)], [], [("X-Auth-Token", BAD)]):
        env = environ(headers=headers)
        env["wsgi.input"] = _Input()
        env["wsgi.errors"] = sys.stderr
        result = call_wsgi(mw, env)
        assert result.calls == 1


class _Input:
    def read(self, *args: Any) -> bytes:
        return b""

    def readline(self, *args: Any) -> bytes:
        return b""

    def readlines(self, *args: Any) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def test_exc_info_is_passed_through() -> None:
    seen: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, exc_info))
        return lambda data: None

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"error"]

    for delayed in (False, True):
        seen.clear()
        mw = WSGIAuthMiddleware(app, counting(), delay_auth_decision=delayed)
        token = [] if delayed else [("X-Auth-Token", GOOD)]
        list(mw(environ(headers=token), start_response))
        assert seen[0] == ("200 OK", None)
        status, exc_info = seen[1]
        assert status == "500 Internal Server Error"
        assert exc_info is not None and isinstance(exc_info[1], RuntimeError)


def test_write_callable_is_passed_through() -> None:
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return written.append

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early ")
        return [b"late"]

    for delayed in (False, True):
        written.clear()
        mw = WSGIAuthMiddleware(app, counting(), delay_auth_decision=delayed)
        token = [] if delayed else [("X-Auth-Token", GOOD)]
        body = b"".join(mw(environ(headers=token), start_response))
        assert written == [b"early "]
        assert body == b"late"


class ClosingBody:
    """An app iterable that is not a list, with a close() that must be called."""

    def __init__(self) -> None:
        self.closed = False
        self.chunks = [b"a", b"b"]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("delayed", [False, True])
def test_close_of_the_apps_iterable_is_preserved(delayed: bool) -> None:
    bodies: list[ClosingBody] = []

    def app(env: dict[str, Any], start_response: Any) -> ClosingBody:
        start_response("200 OK", [])
        bodies.append(ClosingBody())
        return bodies[-1]

    mw = WSGIAuthMiddleware(app, counting(), delay_auth_decision=delayed)
    token = [] if delayed else [("X-Auth-Token", GOOD)]
    returned = mw(environ(headers=token), lambda *a: lambda data: None)
    assert returned is bodies[0]  # the very iterable, not a copy
    result = call_wsgi(mw, environ(headers=token))
    assert result.body == b"ab"
    assert bodies[1].closed


def test_rejection_adds_no_hop_by_hop_headers_under_a_real_server() -> None:
    # wsgiref's handler asserts on hop-by-hop headers: a violation is a 500.
    with serve(wrap()) as port:
        status, headers, _ = get(port, "/", [])
    assert status == 401
    assert not any(is_hop_by_hop(name) for name, _ in headers)


# -- through httpx.WSGITransport --------------------------------------------------------


def test_through_httpx_wsgi_transport() -> None:
    identity = full_identity()
    mw = wrap(counting(identity))
    with httpx.Client(transport=httpx.WSGITransport(app=mw), base_url="http://app") as client:
        ok = client.get("/x", headers={"X-Auth-Token": GOOD})
        assert ok.status_code == 200
        assert recorder(mw).last["authmw.identity"] is identity
        assert recorder(mw).last["HTTP_X_ROLES"] == "Member,reader,Admin"
        missing = client.get("/x")
        assert missing.status_code == 401
        assert missing.json()["error"]["title"] == "Unauthorized"
        assert missing.headers["www-authenticate"] == 'Keystone realm="authmw"'
        bad = client.get("/x", headers={"X-Auth-Token": BAD})
        assert bad.status_code == 401
    assert len(recorder(mw).environs) == 1


def test_through_httpx_wsgi_transport_outage() -> None:
    mw = wrap(outage())
    with httpx.Client(transport=httpx.WSGITransport(app=mw), base_url="http://app") as client:
        response = client.get("/", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == 503


# -- under a real WSGI server (wsgiref) ------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class serve:
    """Run a WSGI app in wsgiref's server on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return int(self.server.server_port)

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def get(
    port: int, path: str, headers: list[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def test_repeated_token_headers_under_a_real_server() -> None:
    validator = Counting({GOOD: full_identity(), OTHER: full_identity(user_id="u-2")})
    mw = wrap(validator)
    with serve(mw) as port:
        status, _, body = get(port, "/", [("X-Auth-Token", GOOD), ("X-Auth-Token", OTHER)])
        assert status == 401
        assert json.loads(body)["error"]["code"] == 401
        assert validator.calls == []
        status, _, _ = get(port, "/", [("X-Auth-Token", GOOD), ("X-Auth-Token", GOOD)])
        assert status == 200
    assert len(recorder(mw).environs) == 1


# -- construction -----------------------------------------------------------------------


def test_a_validator_or_core_is_required() -> None:
    with pytest.raises(ConfigurationError) as caught:
        WSGIAuthMiddleware(WSGIRecorder())
    assert caught.value.option == "validator"
    core = AuthCore(counting())
    with pytest.raises(ConfigurationError) as caught:
        WSGIAuthMiddleware(WSGIRecorder(), counting(), core=core)
    assert caught.value.option == "core"
    with pytest.raises(ConfigurationError) as caught:
        WSGIAuthMiddleware(WSGIRecorder(), core=core, realm="x")
    assert caught.value.option == "core"


def test_bad_option_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError) as caught:
        WSGIAuthMiddleware(WSGIRecorder(), counting(), max_token_size=-1)
    assert caught.value.option == "max_token_size"


def test_one_core_can_serve_two_apps() -> None:
    validator = counting()
    core = AuthCore(validator)
    first, second = WSGIRecorder(), WSGIRecorder()
    call_wsgi(WSGIAuthMiddleware(first, core=core), environ(headers=[("X-Auth-Token", GOOD)]))
    call_wsgi(WSGIAuthMiddleware(second, core=core), environ(headers=[("X-Auth-Token", GOOD)]))
    assert validator.calls == [GOOD]
    assert second.last["authmw.identity"] is first.last["authmw.identity"]
    assert WSGIAuthMiddleware(first, core=core).stats()["hits"] == 1
