"""KeystoneV2Auth against a Keystone v2.0 / Rackspace Cloud Identity served by MockTransport.

Bodies follow the documented v2.0 formats (OpenStack Identity API v2.0 and
the Rackspace Cloud Identity v2.0 developer guide).
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
from authmw.client.keystone_v2 import KeystoneV2Auth, MultiFactorRequired, keystone_v2_url
from authmw.errors import ConfigurationError, IdentityServiceUnavailable

AUTH_URL = "https://identity.example.com/v2.0"
API = "https://servers.example.com/v2/5830345/servers"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def iso(ts: float, *, millis: bool = True) -> str:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    if millis:  # Rackspace: 2015-06-28T01:34:29.300Z
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # Keystone: 2014-01-31T15:30:58Z


def rackspace_access(token: str, expires: float) -> dict[str, Any]:
    return {
        "access": {
            "token": {
                "id": token,
                "expires": iso(expires),
                "tenant": {"id": "5830345", "name": "5830345"},
                "RAX-AUTH:authenticatedBy": ["APIKEY"],
            },
            "serviceCatalog": [
                {
                    "name": "cloudServersOpenStack",
                    "type": "compute",
                    "endpoints": [
                        {
                            "publicURL": "https://syd.servers.api.rackspacecloud.com/v2/5830345",
                            "region": "SYD",
                            "tenantId": "5830345",
                            "versionId": "2",
                        }
                    ],
                }
            ],
            "user": {
                "id": "92bb036af5b0467198cded3455123456",
                "name": "accountUserName",
                "roles": [
                    {
                        "id": "684",
                        "name": "compute:default",
                        "tenantId": "5830345",
                        "description": "Allows a user access to keystone Service methods",
                    },
                    {"id": "2", "name": "identity:default", "description": "Default Role."},
                ],
                "RAX-AUTH:defaultRegion": "SYD",
            },
        }
    }


def keystone_access(token: str, expires: float, issued: float) -> dict[str, Any]:
    return {
        "access": {
            "token": {
                "issued_at": datetime.fromtimestamp(issued, timezone.utc)
                .replace(tzinfo=None)
                .isoformat(),
                "expires": iso(expires, millis=False),
                "id": token,
                "tenant": {
                    "description": None,
                    "enabled": True,
                    "id": "fc394f2ab2df4114bde39905f800dc57",
                    "name": "demo",
                },
                "audit_ids": ["ZzZwkUflQfygX7pdYDBCQQ"],
            },
            "serviceCatalog": [],
            "user": {
                "username": "demo",
                "roles_links": [],
                "id": "9a6590b2ab024747bc2167c4e064d00d",
                "roles": [{"name": "Member"}],
                "name": "demo",
            },
            "metadata": {"is_admin": 0, "roles": ["9fe2ff9ee4384b1894a90878d3e92bab"]},
        }
    }


def fault(status: int, name: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={name: {"code": status, "message": message}}, headers=headers
    )


class IdentityService:
    """POST /v2.0/tokens (v2.0/Rackspace) plus a downstream API that checks X-Auth-Token."""

    def __init__(
        self,
        clock: Clock,
        *,
        flavor: str = "rackspace",
        lifetime: float = 3600.0,
        delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.flavor = flavor
        self.lifetime = lifetime
        self.delay = delay
        self.passwords = {"svc": "s3cret pass"}
        self.api_keys = {"svc": "0123456789abcdef"}
        self.token_requests: list[dict[str, Any]] = []
        self.api_calls: list[str | None] = []
        self.valid: dict[str, float] = {}
        self.override: httpx.Response | None = None
        self._lock = threading.Lock()
        self._serial = 0

    def _issue(self) -> httpx.Response:
        with self._lock:
            self._serial += 1
            token = f"tok-{self._serial:04d}-{'x' * 24}"
            expires = self.clock() + self.lifetime
            self.valid[token] = expires
        if self.flavor == "rackspace":
            return httpx.Response(200, json=rackspace_access(token, expires))
        return httpx.Response(200, json=keystone_access(token, expires, self.clock()))

    def _authenticate(self, body: dict[str, Any]) -> httpx.Response:
        auth = body["auth"]
        if "passwordCredentials" in auth:
            creds = auth["passwordCredentials"]
            ok = self.passwords.get(creds["username"]) == creds["password"]
        else:
            creds = auth["RAX-KSKEY:apiKeyCredentials"]
            ok = self.api_keys.get(creds["username"]) == creds["apiKey"]
        if not ok:
            return fault(
                401, "unauthorized", "Unable to authenticate user with credentials provided."
            )
        return self._issue()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2.0/tokens" and request.method == "POST":
            body = json.loads(request.content)
            with self._lock:
                self.token_requests.append(body)
            if self.delay:
                time.sleep(self.delay)  # widens the window in which callers overlap
            if self.override is not None:
                return self.override
            return self._authenticate(body)
        return self._api(request)

    async def ahandler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2.0/tokens":
            body = json.loads(request.content)
            self.token_requests.append(body)
            await asyncio.sleep(self.delay)  # other tasks run meanwhile
            return self._authenticate(body)
        return self._api(request)

    def _api(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("X-Auth-Token")
        with self._lock:
            self.api_calls.append(token)
            expires = self.valid.get(token or "")
        if expires is None or expires <= self.clock():
            return fault(401, "unauthorized", "No valid token provided.")
        return httpx.Response(200, json={"servers": []})

    def revoke_all(self) -> None:
        with self._lock:
            self.valid.clear()


def client_for(service: IdentityService, auth: KeystoneV2Auth) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(service.handler), auth=auth)


# -- configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://identity.example.com", "https://identity.example.com/v2.0"),
        ("https://identity.example.com/v2.0/", "https://identity.example.com/v2.0"),
        ("http://127.0.0.1:5000/identity/v2.0", "http://127.0.0.1:5000/identity/v2.0"),
    ],
)
def test_auth_url_gets_v2_0_once(given: str, expected: str) -> None:
    assert keystone_v2_url(given) == expected


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"password": "p", "tenant_id": "1", "tenant_name": "one"}, "tenant_name"),
        ({"password": "p", "api_key": "k"}, "api_key"),
        ({}, "password"),
        ({"password": ""}, "password"),
        ({"password": "p", "tenant_id": "  "}, "tenant_id"),
    ],
)
def test_bad_credentials_fail_at_construction_naming_the_option(
    kwargs: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneV2Auth(AUTH_URL, username="svc", **kwargs)
    assert info.value.option == option


def test_both_tenant_id_and_name_is_refused_before_any_request() -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    with pytest.raises(ConfigurationError, match="tenant_id or tenant_name, not both"):
        auth = KeystoneV2Auth(
            AUTH_URL, username="svc", password="p", tenant_id="1", tenant_name="one"
        )
        httpx.Client(transport=httpx.MockTransport(record), auth=auth).get(API)
    assert calls == []


@pytest.mark.parametrize(
    "url", ["http://keystone:5000/v3", "ftp://x/v2.0", "", "https://x/v2.0?a=1"]
)
def test_bad_auth_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneV2Auth(url, username="svc", password="p")
    assert info.value.option == "auth_url"


def test_repr_has_no_secret() -> None:
    auth = KeystoneV2Auth(AUTH_URL, username="svc", api_key="0123456789abcdef", tenant_id="42")
    assert "0123456789abcdef" not in repr(auth)
    assert "api_key" in repr(auth) and "42" in repr(auth)


# -- credential kinds and tenant scoping ---------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected_auth"),
    [
        (
            {"password": "s3cret pass"},
            {"passwordCredentials": {"username": "svc", "password": "s3cret pass"}},
        ),
        (
            {"password": "s3cret pass", "tenant_name": "demo"},
            {
                "passwordCredentials": {"username": "svc", "password": "s3cret pass"},
                "tenantName": "demo",
            },
        ),
        (
            {"password": "s3cret pass", "tenant_id": "5830345"},
            {
                "passwordCredentials": {"username": "svc", "password": "s3cret pass"},
                "tenantId": "5830345",
            },
        ),
        (
            {"api_key": "0123456789abcdef"},
            {"RAX-KSKEY:apiKeyCredentials": {"username": "svc", "apiKey": "0123456789abcdef"}},
        ),
        (
            {"api_key": "0123456789abcdef", "tenant_id": "5830345"},
            {
                "RAX-KSKEY:apiKeyCredentials": {"username": "svc", "apiKey": "0123456789abcdef"},
                "tenantId": "5830345",
            },
        ),
        (
            {"api_key": "0123456789abcdef", "tenant_name": "5830345"},
            {
                "RAX-KSKEY:apiKeyCredentials": {"username": "svc", "apiKey": "0123456789abcdef"},
                "tenantName": "5830345",
            },
        ),
    ],
)
def test_each_credential_kind_is_sent_in_the_documented_shape(
    kwargs: dict[str, Any], expected_auth: dict[str, Any]
) -> None:
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", clock=clock, **kwargs)
    with client_for(service, auth) as client:
        response = client.get(API)
    assert response.status_code == 200
    assert service.token_requests == [{"auth": expected_auth}]
    assert service.api_calls == ["tok-0001-" + "x" * 24]


def test_token_and_expiry_come_from_access_token() -> None:
    clock = Clock()
    service = IdentityService(clock, flavor="keystone", lifetime=7200)
    auth = KeystoneV2Auth("https://identity.example.com", username="svc", password="s3cret pass")
    with client_for(service, auth) as client:
        token = auth.acquire(client)
    assert token.token == "tok-0001-" + "x" * 24
    assert token.expires_at == datetime.fromtimestamp(clock.now + 7200, timezone.utc)
    assert token.body is not None
    assert token.body["access"]["user"]["name"] == "demo"


def test_wrong_secret_is_authentication_failed_and_not_mfa() -> None:
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", api_key="wrong-key-000", clock=clock)
    with client_for(service, auth) as client, pytest.raises(AuthenticationFailed) as info:
        client.get(API)
    assert not isinstance(info.value, MultiFactorRequired)
    assert info.value.status_code == 401
    assert "Unable to authenticate user" in str(info.value)
    assert "wrong-key-000" not in str(info.value)
    assert service.api_calls == []


def test_user_disabled_403_is_authentication_failed() -> None:
    service = IdentityService(Clock())
    service.override = fault(403, "userDisabled", "User 'svc' is disabled.")
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with client_for(service, auth) as client, pytest.raises(AuthenticationFailed) as info:
        client.get(API)
    assert not isinstance(info.value, MultiFactorRequired)
    assert info.value.status_code == 403


# -- multi-factor authentication --------------------------------------------------------


def test_mfa_challenge_is_a_distinct_clearly_worded_error() -> None:
    session = "APU9ymNjSKJG21HVdiRdOg0rk2fqh7uQ1FafVDXo3SId6nMHjUkKSDacFwDLGCC9U"
    service = IdentityService(Clock())
    service.override = fault(
        401,
        "unauthorized",
        "Additional authentication credentials required",
        **{"WWW-Authenticate": f"OS-MF sessionId='{session}', factor='PASSCODE'"},
    )
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with client_for(service, auth) as client, pytest.raises(MultiFactorRequired) as info:
        client.get(API)
    error = info.value
    assert isinstance(error, AuthenticationFailed)
    assert error.status_code == 401
    assert error.factor == "PASSCODE"
    assert error.session_id == session
    assert "multi-factor authentication is required" in str(error)
    assert "API key" in str(error)  # says what to do about it
    assert session not in str(error)
    assert service.api_calls == []


def test_mfa_enforcement_403_without_challenge_header_is_recognised() -> None:
    service = IdentityService(Clock())
    service.override = fault(
        403, "forbidden", "User must enable multi-factor authentication to access this domain."
    )
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with client_for(service, auth) as client, pytest.raises(MultiFactorRequired) as info:
        client.get(API)
    assert info.value.status_code == 403
    assert info.value.factor is None and info.value.session_id is None


# -- failures that are not the credentials' fault ----------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_unavailable(status: int) -> None:
    service = IdentityService(Clock())
    service.override = fault(status, "identityFault", "boom")
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with client_for(service, auth) as client, pytest.raises(IdentityServiceUnavailable):
        auth.get_token(client)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy login</html>"),
        httpx.Response(200, json={"token": {"id": "v3-looking"}}),
        httpx.Response(200, json={"access": {"token": {"expires": "2099-01-01T00:00:00Z"}}}),
        httpx.Response(200, json={"access": {"token": {"id": 12345}}}),
        httpx.Response(200, json={"access": {"token": {"id": "t", "expires": "tomorrow"}}}),
        httpx.Response(200, json={"access": {"token": {"id": ""}}}),
        httpx.Response(200, json=["access"]),
    ],
)
def test_malformed_answers_are_unavailable(response: httpx.Response) -> None:
    service = IdentityService(Clock())
    service.override = response
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with client_for(service, auth) as client, pytest.raises(IdentityServiceUnavailable):
        client.get(API)
    assert service.api_calls == []


def test_unreachable_identity_service_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass")
    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(IdentityServiceUnavailable, match="unreachable"),
    ):
        auth.get_token(client)


# -- renewal --------------------------------------------------------------------------


def test_token_is_reused_then_renewed_shortly_before_expiry() -> None:
    clock = Clock()
    service = IdentityService(clock, lifetime=3600)
    auth = KeystoneV2Auth(
        AUTH_URL, username="svc", password="s3cret pass", renew_margin=120, clock=clock
    )
    with client_for(service, auth) as client:
        for _ in range(3):
            assert client.get(API).status_code == 200
        assert len(service.token_requests) == 1
        clock.now += 3600 - 121  # still outside the margin
        assert client.get(API).status_code == 200
        assert len(service.token_requests) == 1
        clock.now += 2  # inside the margin: renewed before the service would refuse it
        assert client.get(API).status_code == 200
    assert len(service.token_requests) == 2
    assert service.api_calls[-1] == "tok-0002-" + "x" * 24
    assert all(token != "tok-0002-" + "x" * 24 for token in service.api_calls[:-1])


def test_401_renews_once_and_retries_the_call() -> None:
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", api_key="0123456789abcdef", clock=clock)
    with client_for(service, auth) as client:
        assert client.get(API).status_code == 200
        service.revoke_all()  # e.g. the account's tokens were revoked
        response = client.post(API, json={"server": {"name": "web-1"}})
    assert response.status_code == 200
    assert len(service.token_requests) == 2
    first, second = "tok-0001-" + "x" * 24, "tok-0002-" + "x" * 24
    assert service.api_calls == [first, first, second]


def test_a_second_401_is_returned_not_looped_on() -> None:
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass", clock=clock)
    with client_for(service, auth) as client:
        client.get(API)
        service.lifetime = -1  # every new token is already expired downstream
        service.revoke_all()
        response = client.get(API)
    assert response.status_code == 401
    assert len(service.token_requests) == 2
    assert len(service.api_calls) == 3


# -- concurrency ------------------------------------------------------------------------


def test_many_threads_share_one_renewal() -> None:
    clock = Clock()
    service = IdentityService(clock, delay=0.05)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass", clock=clock)
    statuses: list[int] = []
    with client_for(service, auth) as client:
        client.get(API)
        clock.now += 3600  # the token has expired: every caller needs a new one
        barrier = threading.Barrier(16)

        def call() -> None:
            barrier.wait()
            statuses.append(client.get(API).status_code)

        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 16
    assert len(service.token_requests) == 2
    assert set(service.api_calls[1:]) == {"tok-0002-" + "x" * 24}


async def test_many_tasks_share_one_renewal() -> None:
    clock = Clock()
    service = IdentityService(clock, delay=0.05)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", api_key="0123456789abcdef", clock=clock)
    transport = httpx.MockTransport(service.ahandler)
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        responses = await asyncio.gather(*(client.get(API) for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        assert len(service.token_requests) == 1
        clock.now += 3600
        responses = await asyncio.gather(*(client.get(API) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len(service.token_requests) == 2
    assert set(service.api_calls[20:]) == {"tok-0002-" + "x" * 24}


async def test_async_401_renews_once() -> None:
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass", clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(service.ahandler), auth=auth
    ) as client:
        assert (await client.get(API)).status_code == 200
        service.revoke_all()
        assert (await client.get(API)).status_code == 200
    assert len(service.token_requests) == 2


# -- secrets ------------------------------------------------------------------------------


def test_no_secret_or_token_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    service = IdentityService(clock)
    auth = KeystoneV2Auth(AUTH_URL, username="svc", password="s3cret pass", clock=clock)
    with client_for(service, auth) as client:
        client.get(API)
        service.revoke_all()
        client.get(API)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records  # httpx and authmw did log
    for secret in ("s3cret pass", "tok-0001-", "tok-0002-"):
        assert secret not in text
