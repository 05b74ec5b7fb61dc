"""TokenAcquireAuth against a token-acquire API served by MockTransport.

The API follows the documented ``POST /suite-api/api/auth/token/acquire``
contract (request ``{"username", "password", "authSource"?}``, answer
``auth-token`` = ``{"token", "validity" (epoch ms), "expiresAt", "roles"}``),
``POST .../token/release``, and calls authorised with
``Authorization: vRealizeOpsToken <token>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from authmw.client._base import AuthenticationFailed
from authmw.client.acquire import TokenAcquireAuth, parse_epoch
from authmw.errors import ConfigurationError, IdentityServiceUnavailable

BASE = "https://ops.example.com/suite-api"
API = BASE + "/api/resources"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class OpsAPI:
    """token/acquire + token/release + one resource, checking the Authorization header."""

    def __init__(
        self,
        clock: Clock,
        *,
        lifetime: float = 6 * 3600,
        scheme: str | None = "vRealizeOpsToken",
        header: str = "Authorization",
        answer: str = "validity",
        delay: float = 0.0,
        has_release: bool = True,
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.scheme = scheme
        self.header = header
        self.answer = answer
        self.delay = delay
        self.has_release = has_release
        self.acquires: list[dict[str, Any]] = []
        self.releases: list[str | None] = []
        self.calls: list[str | None] = []
        self.valid: dict[str, float] = {}
        self.override: httpx.Response | None = None
        self._lock = threading.Lock()
        self._serial = 0

    def _token_of(self, request: httpx.Request) -> str | None:
        value = request.headers.get(self.header)
        if value is None:
            return None
        if self.scheme is None:
            return value
        scheme, _, token = value.partition(" ")
        return token if scheme == self.scheme else None

    def _acquire(self, body: dict[str, Any]) -> httpx.Response:
        if body.get("username") != "admin" or body.get("password") != "VMware1!":
            return httpx.Response(
                401,
                json={
                    "message": "Invalid username or password",
                    "httpStatusCode": 401,
                    "apiErrorCode": 1512,
                },
            )
        with self._lock:
            self._serial += 1
            token = f"8f868cca-27cc-43d6-a838-c5467e73ec45::{self._serial:04d}"
            expires = self.clock() + self.lifetime
            self.valid[token] = expires
        moment = datetime.fromtimestamp(expires, timezone.utc)
        body_out: dict[str, Any] = {"token": token, "roles": ["Administrator", "ReadOnly"]}
        if self.answer == "validity":
            body_out["validity"] = int(expires * 1000)
            body_out["expiresAt"] = moment.strftime("%A, %B %d, %Y %I:%M:%S %p UTC")
        elif self.answer == "iso":
            body_out["expiresAt"] = moment.isoformat()
        return httpx.Response(200, json=body_out)

    def _route(self, request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        if path == "/suite-api/api/auth/token/release" and request.method == "POST":
            if not self.has_release:
                return httpx.Response(404)
            token = self._token_of(request)
            with self._lock:
                self.releases.append(token)
                known = self.valid.pop(token or "", None)
            return httpx.Response(200 if known else 401)
        if path == "/suite-api/api/resources":
            token = self._token_of(request)
            with self._lock:
                self.calls.append(token)
                expires = self.valid.get(token or "")
            if expires is None or expires <= self.clock():
                return httpx.Response(401, json={"message": "Invalid token"})
            # vRealize Operations extends the token on each call
            self.valid[token or ""] = self.clock() + self.lifetime
            return httpx.Response(200, json={"resourceList": []})
        return None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/suite-api/api/auth/token/acquire":
            body = json.loads(request.content)
            with self._lock:
                self.acquires.append(body)
            if self.delay:
                time.sleep(self.delay)  # widens the window in which callers overlap
            return self.override or self._acquire(body)
        return self._route(request) or httpx.Response(404)

    async def ahandler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/suite-api/api/auth/token/acquire":
            body = json.loads(request.content)
            self.acquires.append(body)
            await asyncio.sleep(self.delay)  # other tasks run meanwhile
            return self._acquire(body)
        return self._route(request) or httpx.Response(404)

    def expire_all(self) -> None:
        with self._lock:
            self.valid.clear()


def auth_for(clock: Clock, **kwargs: Any) -> TokenAcquireAuth:
    kwargs.setdefault("username", "admin")
    kwargs.setdefault("password", "VMware1!")
    return TokenAcquireAuth(BASE, clock=clock, **kwargs)


def client_for(api: OpsAPI, auth: TokenAcquireAuth) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(api.handler), auth=auth)


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"password": ""}, "password"),
        ({"username": " "}, "username"),
        ({"auth_source": ""}, "auth_source"),
        ({"validity_unit": "minutes"}, "validity_unit"),
        ({"acquire_path": ""}, "acquire_path"),
        ({"header_scheme": "two words"}, "header_scheme"),
        ({"renew_margin": -1}, "renew_margin"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        auth_for(Clock(), **kwargs)
    assert info.value.option == option


@pytest.mark.parametrize("url", ["", "ops.example.com", "https://ops.example.com/?x=1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenAcquireAuth(url, username="admin", password="VMware1!")
    assert info.value.option == "base_url"


def test_paths_join_the_base_url() -> None:
    auth = TokenAcquireAuth(
        "https://ops.example.com/suite-api/",
        username="admin",
        password="VMware1!",
        acquire_path="api/auth/token/acquire",
    )
    assert auth.acquire_url == "https://ops.example.com/suite-api/api/auth/token/acquire"
    assert auth.release_url == "https://ops.example.com/suite-api/api/auth/token/release"
    assert "VMware1!" not in repr(auth)


# -- the acquire call --------------------------------------------------------------------


def test_acquire_sends_the_documented_body_and_reads_validity_in_ms() -> None:
    clock = Clock()
    api = OpsAPI(clock, lifetime=6 * 3600)
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        assert client.get(API).status_code == 200
        held = auth.token
    assert api.acquires == [{"username": "admin", "password": "VMware1!"}]
    assert held is not None
    assert held.token == "8f868cca-27cc-43d6-a838-c5467e73ec45::0001"
    assert held.expires_at == datetime.fromtimestamp(clock.now + 6 * 3600, timezone.utc)
    assert held.body is not None and held.body["roles"] == ["Administrator", "ReadOnly"]
    assert api.calls == [held.token]


def test_auth_source_is_sent_when_given() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock, auth_source="Imported LDAP Server")
    with client_for(api, auth) as client:
        client.get(API)
    assert api.acquires == [
        {"username": "admin", "password": "VMware1!", "authSource": "Imported LDAP Server"}
    ]


@pytest.mark.parametrize(
    ("header", "scheme"),
    [("Authorization", "vRealizeOpsToken"), ("Authorization", "OpsToken"), ("X-Auth-Token", None)],
)
def test_header_scheme_is_configurable(header: str, scheme: str | None) -> None:
    clock = Clock()
    api = OpsAPI(clock, header=header, scheme=scheme)
    auth = auth_for(clock, header_name=header, header_scheme=scheme)
    with client_for(api, auth) as client:
        response = client.get(API)
    assert response.status_code == 200
    assert api.calls == ["8f868cca-27cc-43d6-a838-c5467e73ec45::0001"]


def test_expires_at_iso_is_used_when_there_is_no_validity() -> None:
    clock = Clock()
    api = OpsAPI(clock, answer="iso", lifetime=1800)
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        token = auth.acquire(client)
    assert token.expires_at == datetime.fromtimestamp(clock.now + 1800, timezone.utc)


def test_no_expiry_keeps_the_token_until_a_call_is_refused() -> None:
    clock = Clock()
    api = OpsAPI(clock, answer="bare")
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        client.get(API)
        assert auth.token is not None and auth.token.expires_at is None
        clock.now += 10 * 3600  # server-side the token has lapsed
        assert client.get(API).status_code == 200  # refused once, renewed, retried
    assert len(api.acquires) == 2


def test_wrong_password_is_authentication_failed() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock, password="not-it")
    with client_for(api, auth) as client, pytest.raises(AuthenticationFailed) as info:
        client.get(API)
    assert info.value.status_code == 401
    assert "not-it" not in str(info.value)
    assert api.calls == []


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html/>"),
        httpx.Response(200, json={"validity": 1}),
        httpx.Response(200, json={"token": 42, "validity": 1}),
        httpx.Response(200, json={"token": "t", "validity": "soon"}),
        httpx.Response(200, json={"token": "t", "validity": True}),
        httpx.Response(200, json={"token": "", "validity": 1}),
        httpx.Response(503, json={"message": "maintenance"}),
    ],
)
def test_malformed_or_failed_answers_are_unavailable(response: httpx.Response) -> None:
    clock = Clock()
    api = OpsAPI(clock)
    api.override = response
    auth = auth_for(clock)
    with client_for(api, auth) as client, pytest.raises(IdentityServiceUnavailable):
        client.get(API)
    assert api.calls == []


# -- renewal --------------------------------------------------------------------------------


def test_renews_before_validity_runs_out() -> None:
    clock = Clock()
    api = OpsAPI(clock, lifetime=600)
    auth = auth_for(clock, renew_margin=30)
    with client_for(api, auth) as client:
        client.get(API)
        clock.now += 600 - 31
        client.get(API)
        assert len(api.acquires) == 1
        clock.now += 2
        assert client.get(API).status_code == 200
    assert len(api.acquires) == 2
    assert api.calls[-1] == "8f868cca-27cc-43d6-a838-c5467e73ec45::0002"


def test_401_renews_once_and_retries_with_the_body() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        client.get(API)
        api.expire_all()  # e.g. the server restarted
        response = client.post(API, json={"name": "vm-1"})
    assert response.status_code == 200
    assert len(api.acquires) == 2
    assert api.calls == [
        "8f868cca-27cc-43d6-a838-c5467e73ec45::0001",
        "8f868cca-27cc-43d6-a838-c5467e73ec45::0001",
        "8f868cca-27cc-43d6-a838-c5467e73ec45::0002",
    ]


# -- release --------------------------------------------------------------------------------


def test_release_gives_the_token_back_and_forgets_it() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        client.get(API)
        auth.release(client)
        assert api.releases == ["8f868cca-27cc-43d6-a838-c5467e73ec45::0001"]
        assert auth.token is None
        assert api.valid == {}
        auth.release(client)  # nothing held: nothing sent
        assert len(api.releases) == 1
        assert client.get(API).status_code == 200  # a new token
    assert len(api.acquires) == 2


def test_release_path_none_sends_nothing() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock, release_path=None)
    with client_for(api, auth) as client:
        client.get(API)
        auth.release(client)
    assert api.releases == []
    assert auth.token is None


def test_release_failure_is_swallowed_and_logged_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/release"):
            raise httpx.ConnectError("gone", request=request)
        return api.handler(request)

    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        client.get(API)
        auth.release(client)
    assert auth.token is None
    assert "could not release" in caplog.text
    assert "8f868cca" not in caplog.text


async def test_async_release() -> None:
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(api.ahandler), auth=auth) as client:
        assert (await client.get(API)).status_code == 200
        await auth.arelease(client)
    assert api.releases == ["8f868cca-27cc-43d6-a838-c5467e73ec45::0001"]


# -- concurrency -----------------------------------------------------------------------------


def test_many_threads_share_one_acquire() -> None:
    clock = Clock()
    api = OpsAPI(clock, delay=0.05)
    auth = auth_for(clock)
    statuses: list[int] = []
    barrier = threading.Barrier(12)
    with client_for(api, auth) as client:

        def call() -> None:
            barrier.wait()
            statuses.append(client.get(API).status_code)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 12
    assert len(api.acquires) == 1


async def test_many_tasks_share_one_acquire_and_one_renewal() -> None:
    clock = Clock()
    api = OpsAPI(clock, delay=0.05, lifetime=600)
    auth = auth_for(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(api.ahandler), auth=auth) as client:
        first = await asyncio.gather(*(client.get(API) for _ in range(15)))
        clock.now += 600
        second = await asyncio.gather(*(client.get(API) for _ in range(15)))
    assert [r.status_code for r in first + second] == [200] * 30
    assert len(api.acquires) == 2


# -- parse_epoch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1_700_000_000, "auto", 1_700_000_000.0),
        (1_700_000_000_123, "auto", 1_700_000_000.123),
        ("1700000000", "auto", 1_700_000_000.0),
        (1_700_000_000_000, "ms", 1_700_000_000.0),
        (1_700_000_000, "ms", 1_700_000.0),
        (99_999_999_999, "s", 99_999_999_999.0),
    ],
)
def test_parse_epoch(value: Any, unit: Any, expected: float) -> None:
    assert parse_epoch(value, unit).timestamp() == pytest.approx(expected)


@pytest.mark.parametrize("value", [True, None, "soon", float("nan"), float("inf"), [1]])
def test_parse_epoch_rejects(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_epoch(value)


def test_password_and_token_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    api = OpsAPI(clock)
    auth = auth_for(clock)
    with client_for(api, auth) as client:
        client.get(API)
        api.expire_all()
        client.get(API)
        auth.release(client)
    assert caplog.records
    assert "VMware1!" not in caplog.text
    assert "8f868cca" not in caplog.text
