"""Answers about the user's token mean "invalid token", never "identity service down".

An anonymous client chooses only its token. Whatever the server in front of
the identity service answers because of that token (400, 404, 413, 414, 431,
an inactive introspection answer) must be :class:`InvalidToken`: counted as
an outage it would let anyone open the circuit breaker for everybody. Only
failures that do not depend on the token (network, timeouts, 5xx, 429, our
own credentials refused) are :class:`IdentityServiceUnavailable`.

Servers: the real Keystone the suite runs (under gunicorn, whose header
field limit is 8190 bytes), a small identity service under gunicorn
(:mod:`._served_identity`: v2.0, RFC 7662, "current user"; request line
limit 4094 bytes) and the loopback server of the hardening tests for
statuses no real server here produces (413).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import pytest
from hardening._identity_server import Answer, IdentityServer

from authmw import (
    GuardedValidator,
    HTTPIntrospectionValidator,
    IdentityServiceUnavailable,
    InvalidToken,
    KeystoneV2Validator,
    KeystoneValidator,
    WSGIAuthMiddleware,
)
from authmw.resilience import CircuitBreaker

from . import _served_identity as served

DEMO = {"user": "demo-user", "password": "demo-secret", "user_domain": "demo"}
DEMO_PROJECT = {"project": "demo-project", "project_domain": "demo"}
ATTEMPTS = 8  # more than the breaker's threshold of 5

modes = pytest.mark.parametrize("mode", ["sync", "async"])


def oversize(length: int = 8192) -> str:
    """A fresh token-shaped string of ``length`` characters (8192: the middleware's default cap)."""
    return ("gA" + secrets.token_urlsafe(length))[:length]


async def check(validator: Any, token: str, mode: str) -> Any:
    if mode == "sync":
        return validator.validate(token)
    return await validator.avalidate(token)


def warnings_from_authmw(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("authmw") and r.levelno >= logging.WARNING
    ]


def assert_breaker_stays_closed(validator: Any, tokens: list[str], good: str) -> None:
    """Each of ``tokens`` is invalid; the breaker stays closed; ``good`` still validates."""
    guarded = GuardedValidator(validator, breaker=CircuitBreaker(5, cooldown=60.0))
    for token in tokens:
        with pytest.raises(InvalidToken):
            guarded.validate(token)
    assert guarded.breaker.state == "closed"
    assert guarded.stats.unavailable == 0
    assert guarded.validate(good).user_id


# -- the real Keystone, under gunicorn ------------------------------------------------------


def test_keystone_answers_431_to_a_subject_token_of_the_default_maximum_size(
    keystone: Any,
) -> None:
    # The premise: gunicorn refuses the header itself; Keystone never sees it.
    response = httpx.get(
        keystone.url + "/auth/tokens",
        headers={"X-Auth-Token": keystone.service_token(), "X-Subject-Token": oversize()},
    )
    assert response.status_code == 431


@modes
async def test_token_too_large_for_keystones_server_is_invalid(
    keystone: Any, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as validator:
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await check(validator, oversize(), mode)
    assert warnings_from_authmw(caplog) == []


def test_oversize_tokens_leave_keystones_circuit_closed(keystone: Any) -> None:
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as validator:
        good = keystone.issue_token(**DEMO, **DEMO_PROJECT)
        assert_breaker_stays_closed(validator, [oversize() for _ in range(ATTEMPTS)], good)


def test_oversize_tokens_do_not_lock_everyone_out_of_the_middleware(
    keystone: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Default options: max_token_size=8192, failure_threshold=5.
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def status(token: str) -> str:
        statuses: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": token}
        b"".join(middleware(environ, lambda s, h, e=None: statuses.append(s)))
        return statuses[0]

    caplog.set_level(logging.INFO)
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as validator:
        middleware = WSGIAuthMiddleware(app, validator)
        for _ in range(ATTEMPTS):
            assert status(oversize()).startswith("401")
        assert middleware.stats()["circuit_state"] == "closed"
        assert status(keystone.issue_token(**DEMO, **DEMO_PROJECT)).startswith("200")
    assert warnings_from_authmw(caplog) == []


# -- an identity service under gunicorn: v2.0, RFC 7662, "current user" ------------------------


@pytest.fixture(scope="module")
def served_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("served") / "gunicorn.log"
    with served.served_identity(Path(log)) as url:
        yield url


def v2(url: str) -> KeystoneV2Validator:
    return KeystoneV2Validator(url + "/v2.0", username=served.ADMIN_USER, api_key=served.ADMIN_KEY)


def current_user(url: str, **kwargs: Any) -> HTTPIntrospectionValidator:
    return HTTPIntrospectionValidator(
        url + "/currentuser", style="header", token_scheme="vRealizeOpsToken", **kwargs
    )


def rfc7662(url: str) -> HTTPIntrospectionValidator:
    return HTTPIntrospectionValidator(
        url + "/introspect", client_id=served.CLIENT_ID, client_secret=served.CLIENT_SECRET
    )


def test_gunicorn_answers_414_to_a_v2_token_too_long_for_the_url(served_url: str) -> None:
    response = httpx.get(served_url + "/v2.0/tokens/" + oversize(5000))
    assert response.status_code == 414


@modes
async def test_v2_token_too_long_for_the_url_is_invalid(
    served_url: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with v2(served_url) as validator:
        assert (await check(validator, served.USER_TOKEN, mode)).user_name == "accountUserName"
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await check(validator, oversize(5000), mode)
    assert warnings_from_authmw(caplog) == []


def test_v2_oversize_tokens_leave_the_circuit_closed(served_url: str) -> None:
    with v2(served_url) as validator:
        tokens = [oversize(5000) for _ in range(ATTEMPTS)]
        assert_breaker_stays_closed(validator, tokens, served.USER_TOKEN)


@modes
async def test_current_user_token_too_large_for_the_header_is_invalid(
    served_url: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with current_user(served_url) as validator:
        assert (await check(validator, served.USER_TOKEN, mode)).user_name == "jdoe"
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await check(validator, oversize(), mode)
        assert_breaker_stays_closed(
            validator, [oversize() for _ in range(ATTEMPTS)], served.USER_TOKEN
        )
    assert warnings_from_authmw(caplog) == []


def test_current_user_401_is_invalid_without_service_credentials_whatever_invalid_statuses(
    served_url: str,
) -> None:
    # authmw sends no credentials of its own: a 401 can only be about the user's token.
    with current_user(served_url, invalid_statuses=(404,)) as validator:
        assert_breaker_stays_closed(
            validator, [oversize(40) for _ in range(ATTEMPTS)], served.USER_TOKEN
        )


def test_rfc7662_inactive_answer_is_invalid_and_quiet(
    served_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with rfc7662(served_url) as validator:
        assert validator.validate(served.USER_TOKEN).user_name == "jdoe"
        assert_breaker_stays_closed(
            validator, [oversize(40) for _ in range(ATTEMPTS)], served.USER_TOKEN
        )
    assert warnings_from_authmw(caplog) == []


# -- statuses no real server here produces, from the loopback server -------------------------

USER = "gAAAA-refusals-user-token-0123456789"
SERVICE = "gAAAA-refusals-service-token-0123456789"


@pytest.fixture
def loopback() -> Iterator[IdentityServer]:
    with IdentityServer() as server:
        yield server


def loopback_validator(flavour: str, url: str) -> Any:
    options: dict[str, Any] = {"http_request_max_retries": 0}
    if flavour == "v3":
        return KeystoneValidator(url + "/v3", static_token=SERVICE, **options)
    if flavour == "v2":
        return KeystoneV2Validator(url + "/v2.0", static_token=SERVICE, **options)
    if flavour == "rfc7662":
        return HTTPIntrospectionValidator(
            url + "/introspect", client_id="authmw", client_secret="s3cret", **options
        )
    return HTTPIntrospectionValidator(url + "/me", style="header", **options)


FLAVOURS = ["v3", "v2", "rfc7662", "header"]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("status", [400, 404, 413, 414, 431])
@modes
async def test_refusals_of_the_request_are_invalid_tokens(
    loopback: IdentityServer, flavour: str, status: int, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    loopback.answer = Answer(status, b"<html>refused</html>", (("Content-Type", "text/html"),))
    validator = loopback_validator(flavour, loopback.url)
    guarded = GuardedValidator(validator, breaker=CircuitBreaker(5, cooldown=60.0))
    try:
        for _ in range(ATTEMPTS):
            with pytest.raises(InvalidToken):
                await check(guarded, USER, mode)
    finally:
        await validator.aclose()
    assert guarded.breaker.state == "closed"
    assert warnings_from_authmw(caplog) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_token_independent_failures_stay_outages(
    loopback: IdentityServer, flavour: str, status: int
) -> None:
    loopback.answer = Answer(status, b"{}")
    with (
        loopback_validator(flavour, loopback.url) as validator,
        pytest.raises(IdentityServiceUnavailable),
    ):
        validator.validate(USER)


def test_rfc7662_400_invalid_client_is_our_credentials_not_the_token(
    loopback: IdentityServer,
) -> None:
    # RFC 6749 section 5.2 lets a server answer 400 invalid_client.
    loopback.answer = Answer(400, b'{"error": "invalid_client"}')
    with (
        loopback_validator("rfc7662", loopback.url) as validator,
        pytest.raises(IdentityServiceUnavailable, match="refused"),
    ):
        validator.validate(USER)


# -- the middleware's max_token_size is the only size limit --------------------------------

BIG = oversize(20_000)


def v3_answer() -> bytes:
    token = {
        "user": {"id": "u-big", "name": "big", "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "r1", "name": "reader"}],
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "methods": ["oauth1"],
        "audit_ids": ["a-1"],
    }
    return json.dumps({"token": token}).encode()


def sent_token(flavour: str, served_request: Any) -> str:
    """The user's token as the loopback server received it."""
    if flavour == "v3":
        return str(served_request.headers["x-subject-token"])
    if flavour == "v2":
        return unquote(served_request.request_line.split()[1].rsplit("/", 1)[1])
    if flavour == "rfc7662":
        return dict(parse_qsl(served_request.body.decode()))["token"]
    return str(served_request.headers["authorization"]).removeprefix("Bearer ")


ANSWERS = {
    "v3": v3_answer(),
    "v2": json.dumps(
        {
            "access": {
                "token": {"id": BIG, "expires": "2099-01-01T00:00:00.000Z"},
                "user": {"id": "u-big", "name": "big", "roles": [{"name": "reader"}]},
            }
        }
    ).encode(),
    "rfc7662": json.dumps({"active": True, "sub": "u-big", "username": "big"}).encode(),
    "header": json.dumps({"id": "u-big", "username": "big"}).encode(),
}


@pytest.mark.parametrize("flavour", FLAVOURS)
@modes
async def test_validators_send_tokens_of_any_size(
    loopback: IdentityServer, flavour: str, mode: str
) -> None:
    # A service with larger limits (JWT-style tokens) gets them: the
    # middleware's max_token_size, not the validator, decides what is too large.
    loopback.answer = Answer(200, ANSWERS[flavour])
    async with loopback_validator(flavour, loopback.url) as validator:
        assert (await check(validator, BIG, mode)).user_id == "u-big"
    (request,) = loopback.served
    assert sent_token(flavour, request) == BIG


def test_max_token_size_of_the_middleware_is_the_only_limit(loopback: IdentityServer) -> None:
    loopback.answer = Answer(200, ANSWERS["v3"])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["HTTP_X_USER_ID"].encode()]

    def call(middleware: WSGIAuthMiddleware) -> tuple[str, bytes]:
        statuses: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": BIG}
        body = b"".join(middleware(environ, lambda s, h, e=None: statuses.append(s)))
        return statuses[0], body

    with loopback_validator("v3", loopback.url) as validator:
        assert call(WSGIAuthMiddleware(app, validator, max_token_size=32_768)) == (
            "200 OK",
            b"u-big",
        )
        status, _ = call(WSGIAuthMiddleware(app, validator, max_token_size=16_384))
        assert status.startswith("401")
    assert len(loopback.served) == 1  # the second middleware refused it itself
