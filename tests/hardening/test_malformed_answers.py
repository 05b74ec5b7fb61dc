"""Malformed identity-service answers against the real validators, over a real socket.

A loopback server (:mod:`._identity_server`) plays the identity service:
Keystone v3 (``GET /v3/auth/tokens``), Keystone v2.0 (``GET /v2.0/tokens/{id}``)
and RFC 7662 introspection (``POST /introspect``). Every answer that is not a
well-formed "valid" must end as :class:`IdentityServiceUnavailable` or
:class:`InvalidToken` (never another exception, never a partial identity),
through the validator's blocking and async forms; through the WSGI and ASGI
middleware it must be a 401 or a 503, never a 500, and no token may reach a
log record even at DEBUG (the fake Keystone echoes ``X-Subject-Token``, as
the real one does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest

from authmw import (
    ASGIAuthMiddleware,
    Identity,
    IdentityServiceUnavailable,
    InvalidToken,
    WSGIAuthMiddleware,
)
from authmw.validators.introspection import HTTPIntrospectionValidator
from authmw.validators.keystone import KeystoneValidator
from authmw.validators.keystone_v2 import KeystoneV2Validator

from ._identity_server import Answer, IdentityServer
from ._support import all_logs, assert_no_token_in_logs

USER_TOKEN = "gAAAAAmalformed-user-token-0123456789abcdefghij"
SERVICE_TOKEN = "gAAAAAmalformed-service-token-9876543210zyxwvu"
CLIENT_SECRET = "malformed-client-secret-0123456789"
SECRETS = (USER_TOKEN, SERVICE_TOKEN, CLIENT_SECRET)

FUTURE = "2099-01-01T00:00:00.000000Z"
PAST = "2001-01-01T00:00:00.000000Z"
OVERFLOW = "9999-12-31T23:59:59-01:00"  # a valid ISO string; UTC is in year 10000

OK, INVALID, UNAVAILABLE = "identity", "invalid", "unavailable"


# -- bodies ------------------------------------------------------------------------


def v3_token(**changes: Any) -> dict[str, Any]:
    token: dict[str, Any] = {
        "user": {"id": "u-1", "name": "alice", "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p-1", "name": "proj", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
        "expires_at": FUTURE,
        "issued_at": "2024-01-01T00:00:00.000000Z",
        "methods": ["password"],
        "audit_ids": ["a-1"],
        "is_admin_project": False,
    }
    for key, value in changes.items():
        if value is _DROP:
            token.pop(key, None)
        else:
            token[key] = value
    return {"token": token}


def v2_access(token: dict[str, Any] | None = None, **user: Any) -> dict[str, Any]:
    access_token = {"id": USER_TOKEN, "expires": FUTURE, "tenant": {"id": "p-1", "name": "proj"}}
    access_token.update(token or {})
    access_user: dict[str, Any] = {"id": "u-1", "name": "alice", "roles": [{"name": "member"}]}
    for key, value in user.items():
        if value is _DROP:
            access_user.pop(key, None)
        else:
            access_user[key] = value
    return {
        "access": {
            "token": {k: v for k, v in access_token.items() if v is not _DROP},
            "user": access_user,
        }
    }


def introspection(**changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "active": True,
        "sub": "u-1",
        "username": "alice",
        "scope": "member reader",
        "exp": int(time.time()) + 3600,
        "client_id": "app",
    }
    for key, value in changes.items():
        if value is _DROP:
            answer.pop(key, None)
        else:
            answer[key] = value
    return answer


_DROP = object()


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


GOOD_BODIES = {
    "v3": js(v3_token()),
    "v2": js(v2_access()),
    "introspection": js(introspection()),
}

COMMON: list[tuple[str, int, bytes, str]] = [
    ("not JSON", 200, b"<html>Service Unavailable</html>", UNAVAILABLE),
    ("200 with an empty body", 200, b"", UNAVAILABLE),
    ("JSON null", 200, b"null", UNAVAILABLE),
    ("JSON list", 200, b"[]", UNAVAILABLE),
    ("JSON string", 200, b'"ok"', UNAVAILABLE),
    ("JSON number", 200, b"1e999", UNAVAILABLE),
    ("invalid UTF-8", 200, b'{"\xff\xfe": 1}', UNAVAILABLE),
    ("deeply nested arrays", 200, b"[" * 100_000, UNAVAILABLE),
    ("deeply nested objects", 200, b'{"token":' * 50_000, UNAVAILABLE),
    ("huge garbage body (8 MB)", 200, b"x" * (8 * 1024 * 1024), UNAVAILABLE),
    ("500", 500, b'{"error": {"code": 500}}', UNAVAILABLE),
    ("502 with HTML", 502, b"<html>Bad Gateway</html>", UNAVAILABLE),
    ("503", 503, b"", UNAVAILABLE),
    ("302 redirect", 302, b"", UNAVAILABLE),
    ("401 for our own token", 401, b'{"error": {"code": 401}}', UNAVAILABLE),
    ("403 for our own token", 403, b'{"error": {"code": 403}}', UNAVAILABLE),
    ("404 unknown token", 404, b'{"error": {"code": 404}}', INVALID),
    ("418", 418, b"{}", UNAVAILABLE),
    # The request refused for its form or size: only the token varies, so
    # these are about the token (an anonymous client must not open the circuit).
    ("400 header too large", 400, b"<html>Request Header Or Cookie Too Large</html>", INVALID),
    ("413 content too large", 413, b"<html>413 Request Entity Too Large</html>", INVALID),
    ("414 URI too long", 414, b"<html>URI Too Long</html>", INVALID),
    ("431 header fields too large", 431, b"<html>Request Header Fields Too Large</html>", INVALID),
    # ... but rate limits are not (Rackspace's overLimit fault is a 413).
    ("413 overLimit", 413, js({"overLimit": {"code": 413, "retryAfter": FUTURE}}), UNAVAILABLE),
    ("429", 429, b'{"error": {"code": 429}}', UNAVAILABLE),
]

SPECIFIC: dict[str, list[tuple[str, int, bytes, str]]] = {
    "v3": [
        ("valid", 200, js(v3_token()), OK),
        ("truncated JSON", 200, js(v3_token())[:-20], UNAVAILABLE),
        ("token not an object", 200, js({"token": "abc"}), UNAVAILABLE),
        ("token null", 200, js({"token": None}), UNAVAILABLE),
        ("token empty", 200, js({"token": {}}), UNAVAILABLE),
        ("no token key", 200, js({"access": {}}), UNAVAILABLE),
        ("user missing", 200, js(v3_token(user=_DROP)), UNAVAILABLE),
        ("user not an object", 200, js(v3_token(user="u-1")), UNAVAILABLE),
        ("user.id missing", 200, js(v3_token(user={"name": "alice"})), UNAVAILABLE),
        ("user.id empty", 200, js(v3_token(user={"id": ""})), UNAVAILABLE),
        ("user.id a number", 200, js(v3_token(user={"id": 7})), UNAVAILABLE),
        ("user.id a list", 200, js(v3_token(user={"id": ["u-1"]})), UNAVAILABLE),
        ("roles a string", 200, js(v3_token(roles="admin")), UNAVAILABLE),
        ("roles an object", 200, js(v3_token(roles={"name": "admin"})), UNAVAILABLE),
        ("roles a number", 200, js(v3_token(roles=5)), UNAVAILABLE),
        ("role without a name", 200, js(v3_token(roles=[{"id": "r1"}])), UNAVAILABLE),
        ("role name a number", 200, js(v3_token(roles=[{"name": 5}])), UNAVAILABLE),
        ("role a string", 200, js(v3_token(roles=["admin"])), UNAVAILABLE),
        ("expires_at missing", 200, js(v3_token(expires_at=_DROP)), UNAVAILABLE),
        ("expires_at null", 200, js(v3_token(expires_at=None)), UNAVAILABLE),
        ("expires_at a number", 200, js(v3_token(expires_at=4102444800)), UNAVAILABLE),
        ("expires_at garbage", 200, js(v3_token(expires_at="tomorrow")), UNAVAILABLE),
        ("expires_at out of range in UTC", 200, js(v3_token(expires_at=OVERFLOW)), UNAVAILABLE),
        ("expires_at in the past", 200, js(v3_token(expires_at=PAST)), INVALID),
        ("project not an object", 200, js(v3_token(project="p-1")), UNAVAILABLE),
        (
            "project.domain not an object",
            200,
            js(v3_token(project={"id": "p", "domain": 1})),
            UNAVAILABLE,
        ),
        ("is_admin_project a string", 200, js(v3_token(is_admin_project="yes")), UNAVAILABLE),
        ("audit_ids a string", 200, js(v3_token(audit_ids="a-1")), UNAVAILABLE),
        ("methods an object", 200, js(v3_token(methods={"password": 1})), UNAVAILABLE),
        ("system a string", 200, js(v3_token(system="all")), UNAVAILABLE),
        (
            "application_credential a list",
            200,
            js(v3_token(application_credential=[1])),
            UNAVAILABLE,
        ),
    ],
    "v2": [
        ("valid", 200, js(v2_access()), OK),
        ("truncated JSON", 200, js(v2_access())[:-20], UNAVAILABLE),
        ("access not an object", 200, js({"access": "x"}), UNAVAILABLE),
        ("no access key", 200, js({"token": {}}), UNAVAILABLE),
        ("token missing", 200, js({"access": {"user": {"id": "u"}}}), UNAVAILABLE),
        (
            "user missing",
            200,
            js({"access": {"token": {"id": "t", "expires": FUTURE}}}),
            UNAVAILABLE,
        ),
        ("user.id missing", 200, js(v2_access(id=_DROP)), UNAVAILABLE),
        ("user.id a list", 200, js(v2_access(id=["u"])), UNAVAILABLE),
        ("roles a string", 200, js(v2_access(roles="admin")), UNAVAILABLE),
        ("role without a name", 200, js(v2_access(roles=[{"id": "r"}])), UNAVAILABLE),
        ("expires missing", 200, js(v2_access({"expires": _DROP})), UNAVAILABLE),
        ("expires garbage", 200, js(v2_access({"expires": "soon"})), UNAVAILABLE),
        ("expires out of range in UTC", 200, js(v2_access({"expires": OVERFLOW})), UNAVAILABLE),
        ("expires in the past", 200, js(v2_access({"expires": PAST})), INVALID),
        ("tenant a string", 200, js(v2_access({"tenant": "p-1"})), UNAVAILABLE),
        ("audit_ids a string", 200, js(v2_access({"audit_ids": "a"})), UNAVAILABLE),
        ("400 not a token", 400, b"{}", INVALID),
    ],
    "introspection": [
        ("valid", 200, js(introspection()), OK),
        ("truncated JSON", 200, js(introspection())[:-5], UNAVAILABLE),
        ("active missing", 200, js(introspection(active=_DROP)), UNAVAILABLE),
        ("active false", 200, js(introspection(active=False)), INVALID),
        ("active false and nothing else", 200, js({"active": False}), INVALID),
        (
            "no subject at all (sub, username, client_id)",
            200,
            js(introspection(sub=_DROP, username=_DROP, client_id=_DROP)),
            UNAVAILABLE,
        ),
        ("sub a list", 200, js(introspection(sub=["u"])), UNAVAILABLE),
        ("scope a number", 200, js(introspection(scope=5)), UNAVAILABLE),
        ("scope a list of numbers", 200, js(introspection(scope=[1, 2])), UNAVAILABLE),
        ("exp garbage", 200, js(introspection(exp="soon")), UNAVAILABLE),
        ("exp a boolean", 200, js(introspection(exp=True)), UNAVAILABLE),
        ("exp in the past", 200, js(introspection(exp=1000000000)), INVALID),
        ("exp out of range", 200, js(introspection(exp=10**300)), UNAVAILABLE),
        ("exp a huge integer", 200, js(introspection(exp=10**400)), UNAVAILABLE),
        ("exp ISO out of range in UTC", 200, js(introspection(exp=OVERFLOW)), UNAVAILABLE),
        ("nbf in the future", 200, js(introspection(nbf=int(time.time()) + 3600)), INVALID),
    ],
}

CASES = [
    pytest.param(flavour, status, body, expected, id=f"{flavour}: {name}")
    for flavour in ("v3", "v2", "introspection")
    for name, status, body, expected in [*SPECIFIC[flavour], *COMMON]
]


# -- validators --------------------------------------------------------------------------


def make_validator(flavour: str, url: str, timeout: float = 5.0) -> Any:
    options: dict[str, Any] = {"timeout": timeout, "http_request_max_retries": 1}
    if flavour == "v3":
        return KeystoneValidator(url + "/v3", static_token=SERVICE_TOKEN, **options)
    if flavour == "v2":
        return KeystoneV2Validator(url + "/v2.0", static_token=SERVICE_TOKEN, **options)
    return HTTPIntrospectionValidator(
        url + "/introspect", client_id="authmw", client_secret=CLIENT_SECRET, **options
    )


@pytest.fixture
def server() -> Iterator[IdentityServer]:
    with IdentityServer() as s:
        yield s


def outcome(call: Callable[[], Identity]) -> tuple[str, Identity | None]:
    try:
        identity = call()
    except InvalidToken:
        return INVALID, None
    except IdentityServiceUnavailable:
        return UNAVAILABLE, None
    return OK, identity


async def aoutcome(call: Callable[[], Any]) -> tuple[str, Identity | None]:
    try:
        identity = await call()
    except InvalidToken:
        return INVALID, None
    except IdentityServiceUnavailable:
        return UNAVAILABLE, None
    return OK, identity


def check_identity(identity: Identity | None) -> None:
    """A complete identity, as every good body describes it; never a partial one."""
    assert identity is not None
    assert identity.user_id == "u-1"
    assert identity.user_name == "alice"
    assert set(identity.roles) == {"member", "reader"} or identity.roles == ("member",)
    assert identity.expires_at is not None and identity.expires_at.year >= 2025


def wsgi_status(validator: Any) -> int:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"app"]

    middleware = WSGIAuthMiddleware(app, validator=validator)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": USER_TOKEN}
    b"".join(middleware(environ, start_response))
    return int(statuses[0][:3])


async def asgi_status(validator: Any) -> int:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    middleware = ASGIAuthMiddleware(app, validator=validator)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-auth-token", USER_TOKEN.encode())],
    }
    await middleware(scope, receive, send)
    status: int = sent[0]["status"]
    return status


MIDDLEWARE_STATUS = {OK: 200, INVALID: 401, UNAVAILABLE: 503}


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(("flavour", "status", "body", "expected"), CASES)
def test_blocking_validator_and_wsgi(
    server: IdentityServer, flavour: str, status: int, body: bytes, expected: str
) -> None:
    server.answer = Answer(status, body, _echo_headers(flavour))
    with all_logs() as logs, make_validator(flavour, server.url) as validator:
        result, identity = outcome(lambda: validator.validate(USER_TOKEN))
        assert result == expected
        if result == OK:
            check_identity(identity)
        assert wsgi_status(validator) == MIDDLEWARE_STATUS[expected]
    assert_no_token_in_logs(logs, SECRETS)
    assert server.served, "the validator never asked the server"


@pytest.mark.parametrize(("flavour", "status", "body", "expected"), CASES)
async def test_async_validator_and_asgi(
    server: IdentityServer, flavour: str, status: int, body: bytes, expected: str
) -> None:
    server.answer = Answer(status, body, _echo_headers(flavour))
    with all_logs() as logs:
        async with make_validator(flavour, server.url) as validator:
            result, identity = await aoutcome(lambda: validator.avalidate(USER_TOKEN))
            assert result == expected
            if result == OK:
                check_identity(identity)
            assert await asgi_status(validator) == MIDDLEWARE_STATUS[expected]
    assert_no_token_in_logs(logs, SECRETS)


def _echo_headers(flavour: str) -> tuple[tuple[str, str], ...]:
    headers = [("Content-Type", "application/json")]
    if flavour == "v3":
        headers.append(("X-Subject-Token", USER_TOKEN))  # as Keystone does
    return tuple(headers)


# -- the transport misbehaves ------------------------------------------------------------

FLAVOURS = ["v3", "v2", "introspection"]


def _wait_served(server: IdentityServer) -> None:
    for served in server.served:
        assert served.finished.wait(60)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_trickling_body_is_bounded_by_the_validator_timeout(
    server: IdentityServer, flavour: str, mode: str
) -> None:
    # 24 bytes every 0.3 s: each read gets data well within the 0.5 s timeout,
    # yet the whole body takes about 5 s, ten times the timeout.
    body = GOOD_BODIES[flavour].ljust(400)
    server.answer = Answer(200, body, mode="trickle", chunk=24, interval=0.3)
    with make_validator(flavour, server.url, timeout=0.5) as validator:
        if mode == "sync":
            result, _ = outcome(lambda: validator.validate(USER_TOKEN))
        else:
            result, _ = asyncio.run(aoutcome(lambda: _aclosing(validator)))
    _wait_served(server)
    assert all(s.client_gave_up for s in server.served), (
        f"the validator read a trickled answer to its end ({len(body)} bytes over "
        f"{len(body) / 24 * 0.3:.0f} s) although its timeout is 0.5 s"
    )
    assert result == UNAVAILABLE


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_endless_body_is_not_read_to_exhaustion(
    server: IdentityServer, flavour: str, mode: str
) -> None:
    server.answer = Answer(200, mode="endless", cap=32 * 1024 * 1024)
    with make_validator(flavour, server.url, timeout=5.0) as validator:
        if mode == "sync":
            result, _ = outcome(lambda: validator.validate(USER_TOKEN))
        else:
            result, _ = asyncio.run(aoutcome(lambda: _aclosing(validator)))
    _wait_served(server)
    sent = max(s.bytes_sent for s in server.served)
    assert all(s.client_gave_up for s in server.served), (
        f"the validator kept reading an endless answer ({sent // 2**20} MB, the server's cap)"
    )
    assert result == UNAVAILABLE


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("answer_mode", ["hang", "cut"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_silent_or_cut_answer_is_unavailable(
    server: IdentityServer, flavour: str, answer_mode: str, mode: str
) -> None:
    server.answer = Answer(200, GOOD_BODIES[flavour], mode=answer_mode, cap=30)
    with make_validator(flavour, server.url, timeout=1.0) as validator:
        if mode == "sync":
            result, _ = outcome(lambda: validator.validate(USER_TOKEN))
        else:
            result, _ = asyncio.run(aoutcome(lambda: _aclosing(validator)))
    assert result == UNAVAILABLE
    if answer_mode == "hang":
        _wait_served(server)
        assert all(s.client_gave_up for s in server.served)


async def _aclosing(validator: Any) -> Identity:
    try:
        identity: Identity = await validator.avalidate(USER_TOKEN)
        return identity
    finally:
        await validator.aclose()


def test_server_speaks_enough_http(server: IdentityServer) -> None:
    # The fake identity service itself: a good answer is understood by every validator.
    for flavour in FLAVOURS:
        server.answer = Answer(200, GOOD_BODIES[flavour])
        with make_validator(flavour, server.url) as validator:
            check_identity(validator.validate(USER_TOKEN))
    lines = [s.request_line for s in server.served]
    assert lines[0].startswith("GET /v3/auth/tokens")
    assert lines[1].startswith("GET /v2.0/tokens/")
    assert lines[2].startswith("POST /introspect")
    assert server.served[0].headers["x-subject-token"] == USER_TOKEN
