"""HTTPIntrospectionValidator against a real HTTP server on 127.0.0.1 (Starlette under uvicorn).

The server speaks RFC 7662 (``POST /oauth2/introspect``, client authentication
with HTTP Basic or a bearer token) and a token-acquire API
(``POST /suite-api/api/auth/token/acquire``, ``GET /suite-api/api/auth/currentuser``
with ``Authorization: vRealizeOpsToken <token>``), with bodies in their
documented formats.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import httpx
import pytest
import uvicorn
from forking import held, in_child
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authmw import IdentityServiceUnavailable, InvalidToken
from authmw.client.acquire import TokenAcquireAuth
from authmw.errors import ConfigurationError
from authmw.validators.introspection import (
    HTTPIntrospectionValidator,
    IntrospectionMapping,
    IntrospectionStyle,
)

# RFC 7662 section 2.2's example answer (times are its own).
RFC_ANSWER: dict[str, Any] = {
    "active": True,
    "client_id": "l238j323ds-23ij4",
    "username": "jdoe",
    "scope": "read write dolphin",
    "sub": "Z5O3upPC88QrAjx00dis",
    "aud": "https://protected.example.net/resource",
    "iss": "https://server.example.com/",
    "exp": 1419356238,
    "iat": 1419350238,
    "extra_field": "and more",
}
RFC_NOW = 1419350238 + 60
CLIENT_ID = "rs-api"
CLIENT_SECRET = "s3cr3t:/+ &x"  # characters that RFC 6749 form-encoding changes
USER_TOKEN = "2YotnFZFEjr1zCsicMWpAA"


class Clock:
    def __init__(self, now: float = RFC_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class State:
    answers: dict[str, Any] = field(default_factory=dict)
    bearer: set[str] = field(default_factory=set)
    ops_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    introspections: list[dict[str, Any]] = field(default_factory=list)
    acquires: int = 0
    status_override: int | None = None
    delay: float = 0.0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def _client_ok(request: Request, state: State) -> bool:
    value = request.headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme == "Basic":
        decoded = base64.b64decode(credentials).decode()
        client_id, _, secret = decoded.partition(":")
        return (unquote_plus(client_id), unquote_plus(secret)) == (CLIENT_ID, CLIENT_SECRET)
    if scheme == "Bearer":
        return credentials in state.bearer
    return False


def build_app(state: State) -> Starlette:
    async def introspect(request: Request) -> Response:
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.status_override is not None:
            return JSONResponse({"error": "server_error"}, status_code=state.status_override)
        # parsed by hand: Starlette's form parser needs python-multipart
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        form = dict(parse_qsl((await request.body()).decode(), strict_parsing=True))
        state.introspections.append(
            {
                "form": form,
                "authorization": request.headers.get("authorization"),
                "port": request.client.port if request.client else None,  # the caller's
            }
        )
        if not _client_ok(request, state):
            return JSONResponse(
                {"error": "invalid_client"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="introspect"'},
            )
        answer = state.answers.get(str(form.get("token")))
        return JSONResponse(answer if answer is not None else {"active": False})

    async def acquire(request: Request) -> Response:
        body = await request.json()
        if body.get("password") != "VMware1!":
            return JSONResponse({"message": "Invalid username or password"}, status_code=401)
        state.acquires += 1
        token = f"{uuid.uuid4()}::{uuid.uuid4()}"
        user = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, body["username"])),
            "username": body["username"],
            "firstName": "Jane",
            "lastName": "Doe",
            "emailAddress": f"{body['username']}@example.com",
            "distinguishedName": f"CN={body['username']},OU=Users,DC=example,DC=com",
            "enabled": True,
            "groupIds": [],
            "roleNames": ["Administrator", "ReadOnly"],
            "lastLoginTime": 1700000000000,
        }
        state.ops_tokens[token] = user
        state.bearer.add(token)
        validity = int((time.time() + 6 * 3600) * 1000)
        return JSONResponse(
            {"token": token, "validity": validity, "expiresAt": "later", "roles": user["roleNames"]}
        )

    async def current_user(request: Request) -> Response:
        if state.status_override is not None:
            return JSONResponse({"message": "boom"}, status_code=state.status_override)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = state.ops_tokens.get(token) if scheme == "vRealizeOpsToken" else None
        if user is None:
            return JSONResponse({"message": "Authentication failed"}, status_code=401)
        return JSONResponse(user)

    async def release(request: Request) -> Response:
        _, _, token = request.headers.get("authorization", "").partition(" ")
        state.ops_tokens.pop(token, None)
        state.bearer.discard(token)
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/oauth2/introspect", introspect, methods=["POST"]),
            Route("/suite-api/api/auth/token/acquire", acquire, methods=["POST"]),
            Route("/suite-api/api/auth/token/release", release, methods=["POST"]),
            Route("/suite-api/api/auth/currentuser", current_user, methods=["GET"]),
        ]
    )


@dataclass
class Server:
    url: str
    state: State


@pytest.fixture(scope="module")
def _server() -> Iterator[Server]:
    state = State()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(state), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    yield Server(f"http://127.0.0.1:{port}", state)
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def server(_server: Server) -> Server:
    _server.state.reset()
    _server.state.answers[USER_TOKEN] = dict(RFC_ANSWER)
    return _server


def rfc(server: Server, **kwargs: Any) -> HTTPIntrospectionValidator:
    if "auth" not in kwargs:
        kwargs.setdefault("client_id", CLIENT_ID)
        kwargs.setdefault("client_secret", CLIENT_SECRET)
    kwargs.setdefault("clock", Clock())
    return HTTPIntrospectionValidator(server.url + "/oauth2/introspect", **kwargs)


# -- RFC 7662 -------------------------------------------------------------------------------


def test_rfc7662_answer_becomes_an_identity(server: Server) -> None:
    with rfc(server) as validator:
        identity = validator.validate(USER_TOKEN)
    assert identity.user_id == "Z5O3upPC88QrAjx00dis"
    assert identity.user_name == "jdoe"
    assert identity.roles == ("read", "write", "dolphin")  # scope -> roles
    assert identity.expires_at == datetime.fromtimestamp(1419356238, timezone.utc)
    assert identity.issued_at == datetime.fromtimestamp(1419350238, timezone.utc)
    assert identity.extra["client_id"] == "l238j323ds-23ij4"
    assert identity.extra["aud"] == "https://protected.example.net/resource"
    assert identity.scope == "unscoped"
    (call,) = server.state.introspections
    assert call["form"] == {"token": USER_TOKEN}
    assert call["authorization"].startswith("Basic ")


def test_token_type_hint_is_sent(server: Server) -> None:
    with rfc(server, token_type_hint="access_token") as validator:
        validator.validate(USER_TOKEN)
    assert server.state.introspections[0]["form"] == {
        "token": USER_TOKEN,
        "token_type_hint": "access_token",
    }


def test_inactive_token_is_invalid(server: Server) -> None:
    with rfc(server) as validator, pytest.raises(InvalidToken, match="not active"):
        validator.validate("unknown-token-0123")


@pytest.mark.parametrize("active", [False, "true", 1, None])
def test_only_a_true_active_flag_is_active(server: Server, active: Any) -> None:
    server.state.answers[USER_TOKEN]["active"] = active
    with rfc(server) as validator, pytest.raises((InvalidToken, IdentityServiceUnavailable)):
        validator.validate(USER_TOKEN)


def test_missing_active_flag_is_malformed(server: Server) -> None:
    del server.state.answers[USER_TOKEN]["active"]
    with rfc(server) as validator, pytest.raises(IdentityServiceUnavailable, match="malformed"):
        validator.validate(USER_TOKEN)


def test_expired_and_not_yet_valid_tokens(server: Server) -> None:
    clock = Clock(1419356238 + 5)
    with rfc(server, clock=clock, expiry_leeway=10) as validator:
        assert validator.validate(USER_TOKEN).user_name == "jdoe"  # within the leeway
        clock.now = 1419356238 + 11
        with pytest.raises(InvalidToken, match="expired"):
            validator.validate(USER_TOKEN)
        assert validator.validate(USER_TOKEN, allow_expired=True).user_name == "jdoe"
        server.state.answers[USER_TOKEN]["nbf"] = clock.now + 60
        with pytest.raises(InvalidToken, match="not valid yet"):
            validator.validate(USER_TOKEN, allow_expired=True)


def test_client_credentials_without_user_fall_back_to_client_id(server: Server) -> None:
    server.state.answers["cc-token-0123"] = {
        "active": True,
        "client_id": "batch-job",
        "scope": "metrics:write",
        "exp": RFC_NOW + 60,
    }
    with rfc(server) as validator:
        identity = validator.validate("cc-token-0123")
    assert identity.user_id == "batch-job" and identity.user_name is None
    assert identity.roles == ("metrics:write",)


def test_wrong_client_secret_is_unavailable_not_invalid(server: Server) -> None:
    with (
        rfc(server, client_secret="wrong") as validator,
        pytest.raises(IdentityServiceUnavailable, match="refused authmw's credentials"),
    ):
        validator.validate(USER_TOKEN)
    assert len(server.state.introspections) == 1  # static credentials: no point retrying


def test_bearer_credentials_are_renewed_once_when_refused(server: Server) -> None:
    auth = TokenAcquireAuth(
        server.url + "/suite-api", username="svc", password="VMware1!", header_scheme="Bearer"
    )
    with rfc(server, auth=auth) as validator:
        assert validator.validate(USER_TOKEN).user_name == "jdoe"
        server.state.bearer.clear()  # the introspection server forgot our token
        assert validator.validate(USER_TOKEN).user_name == "jdoe"
        assert server.state.acquires == 2
        server.state.bearer.clear()
        server.state.acquires = 0
        original = auth.parse_token_response

        def forgetful(response: httpx.Response) -> Any:
            token = original(response)
            server.state.bearer.clear()  # every new token is refused too
            return token

        auth.parse_token_response = forgetful  # type: ignore[method-assign]
        with pytest.raises(IdentityServiceUnavailable, match="refused"):
            validator.validate(USER_TOKEN)
    assert server.state.acquires == 1  # renewed once, then gave up


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_unavailable(server: Server, status: int) -> None:
    server.state.status_override = status
    with rfc(server) as validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(USER_TOKEN)


def test_404_is_invalid_by_default_and_configurable(server: Server) -> None:
    server.state.status_override = 404
    with rfc(server) as validator, pytest.raises(InvalidToken):
        validator.validate(USER_TOKEN)
    with rfc(server, invalid_statuses=()) as validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(USER_TOKEN)


def test_hung_endpoint_times_out(server: Server) -> None:
    server.state.delay = 2.0
    with (
        rfc(server, timeout=0.2, http_request_max_retries=0) as validator,
        pytest.raises(IdentityServiceUnavailable, match="unreachable"),
    ):
        validator.validate(USER_TOKEN)


def test_endpoint_down_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    validator = HTTPIntrospectionValidator(
        f"http://127.0.0.1:{port}/introspect", client_id="a", client_secret="b"
    )
    with validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(USER_TOKEN)


@pytest.fixture
def hanging_up() -> Iterator[tuple[str, list[int]]]:
    """A TCP server on 127.0.0.1 that closes every connection at once; counts them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = sock.accept()[0]
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/introspect", accepted
    stop.set()
    thread.join()
    sock.close()


@pytest.mark.parametrize(("style", "tries"), [("rfc7662", 1), ("header", 3)])
def test_dropped_connections_are_retried_for_gets_only(
    hanging_up: tuple[str, list[int]], style: IntrospectionStyle, tries: int
) -> None:
    url, accepted = hanging_up
    validator = HTTPIntrospectionValidator(url, style=style, http_request_max_retries=2)
    with validator, pytest.raises(IdentityServiceUnavailable, match="unreachable"):
        validator.validate(USER_TOKEN)  # rfc7662 POSTs the token: not sent twice
    assert len(accepted) == tries


async def test_avalidate_and_concurrent_tasks(server: Server) -> None:
    auth = TokenAcquireAuth(
        server.url + "/suite-api", username="svc", password="VMware1!", header_scheme="Bearer"
    )
    validator = rfc(server, auth=auth)
    try:
        identities = await asyncio.gather(*(validator.avalidate(USER_TOKEN) for _ in range(10)))
        assert {i.user_name for i in identities} == {"jdoe"}
        with pytest.raises(InvalidToken):
            await validator.avalidate("unknown-token-0123")
    finally:
        await validator.aclose()
    assert server.state.acquires == 1  # one service token for all tasks


def test_a_forked_child_opens_its_own_connections(server: Server) -> None:
    # gunicorn --preload: a worker forked after the master used the validator must not
    # share its pooled connection, or two processes would read each other's answers.
    with rfc(server) as validator:
        validator.validate(USER_TOKEN)
        assert in_child(lambda: validator.validate(USER_TOKEN)) == 0
        validator.validate(USER_TOKEN)  # the parent keeps its own
    parent, child, parent_again = (call["port"] for call in server.state.introspections)
    assert child != parent == parent_again


def test_nothing_secret_is_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with rfc(server) as validator:
        validator.validate(USER_TOKEN)
        with pytest.raises(InvalidToken):
            validator.validate("unknown-token-0123")
    assert caplog.records
    for secret in (USER_TOKEN, "unknown-token-0123", CLIENT_SECRET):
        assert secret not in caplog.text


# -- a token-acquire API's "current user" endpoint ---------------------------------------------


def current_user_validator(server: Server, **kwargs: Any) -> HTTPIntrospectionValidator:
    return HTTPIntrospectionValidator(
        server.url + "/suite-api/api/auth/currentuser",
        style="header",
        token_header="Authorization",
        token_scheme="vRealizeOpsToken",
        **kwargs,
    )


def test_a_forked_child_gets_a_token_although_a_parent_thread_was_getting_one(
    server: Server,
) -> None:
    auth = TokenAcquireAuth(server.url + "/suite-api", username="jdoe", password="VMware1!")
    with held(auth._sync_lock):  # as a parent thread does while it gets a token

        def get_token() -> None:
            with httpx.Client() as client:
                assert auth.get_token(client)

        assert in_child(get_token) == 0


def test_current_user_endpoint_validates_acquired_tokens(server: Server) -> None:
    auth = TokenAcquireAuth(server.url + "/suite-api", username="jdoe", password="VMware1!")
    with httpx.Client() as client:
        token = auth.get_token(client)
        with current_user_validator(server) as validator:
            identity = validator.validate(token)
            assert identity.user_id == str(uuid.uuid5(uuid.NAMESPACE_DNS, "jdoe"))
            assert identity.user_name == "jdoe"
            assert identity.roles == ("Administrator", "ReadOnly")
            assert identity.expires_at is None
            assert identity.extra["email"] == "jdoe@example.com"
            auth.release(client)  # the token is given back: no longer valid
            with pytest.raises(InvalidToken):
                validator.validate(token)


async def test_current_user_endpoint_async(server: Server) -> None:
    auth = TokenAcquireAuth(server.url + "/suite-api", username="ops", password="VMware1!")
    async with httpx.AsyncClient() as client:
        token = await auth.aget_token(client)
    async with current_user_validator(server) as validator:
        assert (await validator.avalidate(token)).user_name == "ops"
        with pytest.raises(InvalidToken):
            await validator.avalidate("not-a-known-token")


@pytest.mark.parametrize(
    ("status", "error"), [(403, InvalidToken), (502, IdentityServiceUnavailable)]
)
def test_current_user_status_mapping(server: Server, status: int, error: type[Exception]) -> None:
    server.state.status_override = status
    with current_user_validator(server) as validator, pytest.raises(error):
        validator.validate("whatever-token-0123")


# -- the mapping, without I/O -------------------------------------------------------------------


def interpret(answer: Any, mapping: IntrospectionMapping, *, now: float = RFC_NOW) -> Any:
    validator = HTTPIntrospectionValidator(
        "http://127.0.0.1:9/x", style="header", mapping=mapping, clock=Clock(now)
    )
    import json

    return validator.interpret(200, json.dumps(answer).encode(), "the-token")


def test_nested_paths_role_objects_and_fallbacks() -> None:
    mapping = IntrospectionMapping(
        active=None,
        user_id=("user.uuid", "user.id"),
        user_name="user.login",
        project_id="tenant.id",
        project_name="tenant.name",
        user_domain_name="user.domain",
        roles="user.roles",
        role_key="name",
        expires_at="token.expiresAt",
        issued_at=None,
        not_before=None,
        extra={"region": "tenant.region"},
    )
    identity = interpret(
        {
            "user": {
                "id": 42,
                "login": "jane",
                "domain": "corp",
                "roles": [{"name": "admin"}, {"name": "reader"}, {"name": "admin"}],
            },
            "tenant": {"id": "t-1", "name": "gardens", "region": "eu-de"},
            "token": {"expiresAt": "2030-01-01T00:00:00+01:00"},
        },
        mapping,
    )
    assert identity.user_id == "42"
    assert identity.user_name == "jane"
    assert identity.user_domain_name == "corp"
    assert (identity.project_id, identity.project_name) == ("t-1", "gardens")
    assert identity.scope == "project"
    assert identity.roles == ("admin", "reader")
    assert identity.expires_at == datetime(2029, 12, 31, 23, tzinfo=timezone.utc)
    assert identity.extra == {"region": "eu-de"}


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1893456000, "auto", 1893456000),
        (1893456000123, "auto", 1893456000.123),
        ("1893456000000", "ms", 1893456000),
        ("2030-01-01T00:00:00Z", "auto", 1893456000),
        (1893456000, "s", 1893456000),
    ],
)
def test_expiry_formats(value: Any, unit: Any, expected: float) -> None:
    mapping = IntrospectionMapping(active=None, user_id="id", expires_at="exp", time_unit=unit)
    identity = interpret({"id": "u", "exp": value}, mapping)
    assert identity.expires_timestamp == pytest.approx(expected)


def test_roles_separator_and_keycloak_style_roles() -> None:
    comma = IntrospectionMapping(active=None, user_id="sub", roles="groups", roles_separator=",")
    assert interpret({"sub": "u", "groups": "a, b,,c"}, comma).roles == ("a", "b", "c")
    keycloak = IntrospectionMapping.rfc7662(roles="realm_access.roles")
    answer = {"active": True, "sub": "u", "realm_access": {"roles": ["offline_access", "admin"]}}
    assert interpret(answer, keycloak).roles == ("offline_access", "admin")


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "active",
        {"active": True},
        {"active": True, "sub": ""},
        {"active": True, "sub": ["u"]},
        {"active": True, "sub": "u", "scope": 3},
        {"active": True, "sub": "u", "scope": ["a", 1]},
        {"active": True, "sub": "u", "exp": "soon"},
        {"active": True, "sub": "u", "exp": True},
        {"active": True, "sub": "u", "username": {"n": 1}},
    ],
)
def test_malformed_answers_are_unavailable(answer: Any) -> None:
    with pytest.raises(IdentityServiceUnavailable, match="malformed"):
        interpret(answer, IntrospectionMapping.rfc7662())


def test_token_echoed_in_the_answer_is_not_kept() -> None:
    identity = interpret(
        {"active": True, "sub": "u", "access_token": "the-token"}, IntrospectionMapping()
    )
    assert identity.token_body is not None and "access_token" not in identity.token_body


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"style": "cookie"}, "style"),
        ({"client_id": "a"}, "client_secret"),
        ({"client_secret": "a"}, "client_id"),
        ({"client_id": "", "client_secret": "b"}, "client_id"),
        ({"auth": "bearer"}, "auth"),
        ({"token_scheme": "two words"}, "token_scheme"),
        ({"method": "DELETE"}, "method"),
        ({"invalid_statuses": (200,)}, "invalid_statuses"),
        ({"expiry_leeway": -1}, "expiry_leeway"),
        ({"mapping": IntrospectionMapping(user_id="")}, "mapping.user_id"),
        ({"mapping": IntrospectionMapping(roles="a..b")}, "mapping.roles"),
        ({"mapping": IntrospectionMapping(time_unit="days")}, "mapping.time_unit"),  # type: ignore[arg-type]
        ({"mapping": {"user_id": "sub"}}, "mapping"),
        (
            {"style": "header", "client_id": "a", "client_secret": "b"},
            "token_header",
        ),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_configuration_mistakes_fail_at_construction(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HTTPIntrospectionValidator("https://idp.example.com/introspect", **kwargs)
    assert info.value.option == option


@pytest.mark.parametrize("url", ["", "idp.example.com/introspect", "ftp://idp/x"])
def test_bad_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HTTPIntrospectionValidator(url)
    assert info.value.option == "url"


def test_request_shapes_without_io() -> None:
    form = HTTPIntrospectionValidator(
        "https://idp.example.com/introspect", client_id="a b", client_secret="c:d"
    ).build_request("tok-123")
    assert form.method == "POST"
    assert form.content == b"token=tok-123"
    assert form.headers["Authorization"] == "Basic " + base64.b64encode(b"a+b:c%3Ad").decode()
    header = HTTPIntrospectionValidator(
        "https://ops.example.com/suite-api/api/auth/currentuser",
        style="header",
        token_header="X-Auth-Token",
        token_scheme=None,
    ).build_request("tok-123")
    assert (header.method, header.headers["X-Auth-Token"]) == ("GET", "tok-123")
    with pytest.raises(InvalidToken):
        HTTPIntrospectionValidator("https://idp.example.com/i").build_request("bad token")
