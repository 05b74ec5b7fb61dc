"""No raw token reaches a log record, at any level; bad tokens never log a WARNING."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from helpers import (
    ASGIRecorder,
    Counting,
    WSGIRecorder,
    call_asgi,
    call_wsgi,
    environ,
    full_identity,
    http_scope,
)
from starlette.testclient import TestClient

from authmw import (
    ASGIAuthMiddleware,
    Identity,
    IdentityServiceUnavailable,
    InvalidToken,
    WSGIAuthMiddleware,
)
from authmw._hashing import fingerprint

SECRET = "gAAAAABsecret-token-7f3a9c1e5b"
SECRET_BAD = "gAAAAABsecret-bad-token-0d2e4f6a"
SECRET_SERVICE = "gAAAAABsecret-service-token-11aa22bb"
SECRETS = (SECRET, SECRET_BAD, SECRET_SERVICE)


def record_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        texts.append(repr(record.msg))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    texts.append(caplog.text)  # formatted, with tracebacks
    return texts


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for text in record_texts(caplog):
        for secret in SECRETS:
            assert secret not in text
            # a token cut in half is still a leak
            assert secret[len(secret) // 2 :] not in text


class Chatty:
    """A validator whose error messages quote the token, as Keystone's 404 body does."""

    def __init__(self) -> None:
        self.mode = "ok"

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        if self.mode == "invalid" or token == SECRET_BAD:
            raise InvalidToken(f"Could not find token: {token}.")
        if self.mode == "down":
            raise IdentityServiceUnavailable(f"timed out validating {token}")
        if self.mode == "bug":
            raise RuntimeError(f"unexpected answer for {token!r}")
        if token == SECRET_SERVICE:
            return full_identity(user_id="svc", roles=("service",))
        return full_identity()


TOKEN_VALUES = [
    SECRET,
    SECRET_BAD,
    f"{SECRET},{SECRET_BAD}",
    SECRET + "x" * 9000,
    SECRET + " tail",
    f" {SECRET_BAD} ",
]


@pytest.mark.parametrize("mode", ["ok", "invalid", "down", "bug"])
@pytest.mark.parametrize("delayed", [False, True])
def test_wsgi_logs_no_raw_token(caplog: pytest.LogCaptureFixture, mode: str, delayed: bool) -> None:
    caplog.set_level(logging.DEBUG)
    validator = Chatty()
    validator.mode = mode
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator, delay_auth_decision=delayed)
    for value in TOKEN_VALUES:
        for service in (None, SECRET_SERVICE, SECRET_BAD):
            headers = [("X-Auth-Token", value)]
            if service:
                headers.append(("X-Service-Token", service))
            call_wsgi(mw, environ(headers=headers))
    assert_no_secret(caplog)


@pytest.mark.parametrize("mode", ["ok", "invalid", "down", "bug"])
@pytest.mark.parametrize("delayed", [False, True])
async def test_asgi_logs_no_raw_token(
    caplog: pytest.LogCaptureFixture, mode: str, delayed: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    validator = Chatty()
    validator.mode = mode
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=validator, delay_auth_decision=delayed)
    for value in TOKEN_VALUES:
        for service in (None, SECRET_SERVICE, SECRET_BAD):
            headers = [(b"x-auth-token", value.encode())]
            if service:
                headers.append((b"x-service-token", service.encode()))
            await call_asgi(mw, http_scope(headers=headers))
    assert_no_secret(caplog)


def test_the_fingerprint_is_logged_instead(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="authmw")
    validator = Chatty()
    validator.mode = "invalid"
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator)
    call_wsgi(mw, environ(headers=[("X-Auth-Token", SECRET)]))
    assert any(fingerprint(SECRET) in r.getMessage() for r in caplog.records)
    assert_no_secret(caplog)


def authmw_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "authmw" or r.name.startswith("authmw.")]


def test_rejections_never_log_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    validator = Counting({SECRET: full_identity()})
    wsgi = WSGIAuthMiddleware(WSGIRecorder(), validator, negative_cache_time=0)
    asgi = ASGIAuthMiddleware(ASGIRecorder(), validator=validator)
    client = TestClient(asgi)
    for i in range(30):
        for value in (f"bad-{i}", SECRET_BAD, "", "a b", "x" * 9000, f"{SECRET},{SECRET_BAD}"):
            assert call_wsgi(wsgi, environ(headers=[("X-Auth-Token", value)])).code == 401
            assert client.get("/", headers={"X-Auth-Token": value}).status_code == 401
        assert call_wsgi(wsgi, environ()).code == 401
    records = authmw_records(caplog)
    assert records, "rejections should leave INFO/DEBUG records"
    assert max(r.levelno for r in records) <= logging.INFO
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_outage_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    validator = Counting()
    validator.error = IdentityServiceUnavailable("connection refused")
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator)
    assert call_wsgi(mw, environ(headers=[("X-Auth-Token", SECRET)])).code == 503
    warnings = [r for r in authmw_records(caplog) if r.levelno >= logging.WARNING]
    assert warnings
    assert "connection refused" in warnings[0].getMessage()
    assert_no_secret(caplog)


def test_validator_bug_logs_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    validator = Chatty()
    validator.mode = "bug"
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator)
    assert call_wsgi(mw, environ(headers=[("X-Auth-Token", SECRET)])).code == 503
    errors = [r for r in authmw_records(caplog) if r.levelno >= logging.ERROR]
    assert errors and "RuntimeError" in errors[0].getMessage()
    assert_no_secret(caplog)


# -- a validator that makes HTTP calls -------------------------------------------------------


class _IdentityService(BaseHTTPRequestHandler):
    """Answers like Keystone: echoes the token in X-Subject-Token, v3 and v2.0 style."""

    def do_GET(self) -> None:
        token = self.headers.get("X-Subject-Token")
        if self.path.startswith("/v2.0/tokens/"):
            token = self.path.rsplit("/", 1)[1]
        if token == SECRET_BAD:
            body = json.dumps(
                {"error": {"code": 404, "message": f"Could not find token: {token}."}}
            )
            self.send_response(404)
        elif token:
            body = json.dumps({"token": {"user": {"id": "u-http"}, "roles": [{"name": "reader"}]}})
            self.send_response(200)
        else:
            body = "{}"
            self.send_response(400)
        self.send_header("Content-Type", "application/json")
        if token:
            self.send_header("X-Subject-Token", token)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def identity_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IdentityService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def _answer(response: httpx.Response) -> Identity:
    if response.status_code == 404:
        raise InvalidToken(response.json()["error"]["message"])
    if response.status_code != 200:
        raise IdentityServiceUnavailable(f"status {response.status_code}")
    body = response.json()["token"]
    return Identity(body["user"]["id"], roles=tuple(r["name"] for r in body["roles"]))


class HTTPValidator:
    """A user's own validator built on httpx, with no redaction of its own."""

    def __init__(self, base_url: str, v2: bool = False) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.async_client: httpx.AsyncClient | None = None
        self.base_url = base_url
        self.v2 = v2

    def _request(self, token: str) -> tuple[str, dict[str, str]]:
        if self.v2:
            return f"/v2.0/tokens/{token}", {"X-Auth-Token": "admin-token"}
        return "/v3/auth/tokens", {"X-Auth-Token": "admin-token", "X-Subject-Token": token}

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        url, headers = self._request(token)
        return _answer(self.client.get(url, headers=headers))

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        if self.async_client is None:
            self.async_client = httpx.AsyncClient(base_url=self.base_url, timeout=10)
        url, headers = self._request(token)
        return _answer(await self.async_client.get(url, headers=headers))

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        if self.async_client is not None:
            await self.async_client.aclose()
        self.client.close()


@pytest.mark.parametrize("v2", [False, True])
def test_httpx_and_httpcore_debug_logs_carry_no_token_wsgi(
    caplog: pytest.LogCaptureFixture, identity_service: str, v2: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    validator = HTTPValidator(identity_service, v2=v2)
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator)
    try:
        assert call_wsgi(mw, environ(headers=[("X-Auth-Token", SECRET)])).code == 200
        assert call_wsgi(mw, environ(headers=[("X-Auth-Token", SECRET_BAD)])).code == 401
    finally:
        validator.close()
    names = {r.name for r in caplog.records}
    assert "httpx" in names and any(n.startswith("httpcore") for n in names)
    assert_no_secret(caplog)


@pytest.mark.parametrize("v2", [False, True])
async def test_httpx_and_httpcore_debug_logs_carry_no_token_asgi(
    caplog: pytest.LogCaptureFixture, identity_service: str, v2: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    validator = HTTPValidator(identity_service, v2=v2)
    mw = ASGIAuthMiddleware(ASGIRecorder(), validator=validator)
    try:
        ok = await call_asgi(mw, http_scope(headers=[(b"x-auth-token", SECRET.encode())]))
        assert ok.status == 200
        bad = await call_asgi(mw, http_scope(headers=[(b"x-auth-token", SECRET_BAD.encode())]))
        assert bad.status == 401
    finally:
        await validator.aclose()
    names = {r.name for r in caplog.records}
    assert "httpx" in names and any(n.startswith("httpcore") for n in names)
    assert_no_secret(caplog)


# -- the real thing: KeystoneValidator against the suite's Keystone ------------------------


def test_keystone_validation_at_debug_logs_no_token(
    caplog: pytest.LogCaptureFixture, keystone: Any
) -> None:
    from authmw.validators.keystone import KeystoneValidator

    user_token = keystone.issue_token("demo-user", project="demo-project", project_domain="demo")
    revoked = keystone.issue_token("demo-user", project="demo-project", project_domain="demo")
    keystone.revoke(revoked)
    service_token = keystone.service_token()
    caplog.set_level(logging.DEBUG)
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as validator:
        mw = WSGIAuthMiddleware(WSGIRecorder(), validator, cache_time=0)
        ok = environ(headers=[("X-Auth-Token", user_token)])
        assert call_wsgi(mw, ok).code == 200
        bad = environ(headers=[("X-Auth-Token", revoked)])
        assert call_wsgi(mw, bad).code == 401
        both = environ(headers=[("X-Auth-Token", user_token), ("X-Service-Token", service_token)])
        assert call_wsgi(mw, both).code == 200
    names = {r.name for r in caplog.records}
    assert any(n.startswith("httpcore") for n in names)
    texts = record_texts(caplog)
    # Keystone echoes each validated token in X-Subject-Token; the service
    # identity's own token travels in X-Auth-Token and comes back on login.
    assert any("x-subject-token" in t.lower() for t in texts)
    for secret in (user_token, revoked, service_token):
        for text in texts:
            assert secret not in text
            assert secret[len(secret) // 2 :] not in text
