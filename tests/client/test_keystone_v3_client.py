"""Keystone v3 token acquisition (authmw.client) against the real Keystone."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from authmw.client import (
    AcquiredToken,
    AuthenticationFailed,
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    KeystoneV3Token,
    StaticToken,
    TokenAuth,
    keystone_v3_url,
)
from authmw.errors import ConfigurationError, IdentityServiceUnavailable

DEMO = {"username": "demo-user", "password": "demo-secret", "user_domain_name": "demo"}


def scope_of(token: AcquiredToken) -> str:
    assert token.body is not None
    body = token.body["token"]
    for kind in ("project", "domain", "system"):
        if kind in body:
            return kind
    return "unscoped"


def acquire(
    auth: KeystoneV3Password | KeystoneV3Token | KeystoneV3ApplicationCredential,
) -> AcquiredToken:
    with httpx.Client() as client:
        return auth.acquire(client)


@pytest.mark.keystone
def test_password_project_by_name_and_domain_name(keystone: Any) -> None:
    token = acquire(
        KeystoneV3Password(
            keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO
        )
    )
    assert scope_of(token) == "project"
    assert token.body is not None
    assert token.body["token"]["project"]["name"] == "demo-project"
    assert "catalog" not in token.body["token"]
    assert token.expires_at is not None
    assert token.expires_at.timestamp() > time.time()


@pytest.mark.keystone
def test_password_project_by_id_and_user_by_id(keystone: Any) -> None:
    first = acquire(
        KeystoneV3Password(
            keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO
        )
    )
    assert first.body is not None
    user_id = first.body["token"]["user"]["id"]
    project_id = first.body["token"]["project"]["id"]
    domain_id = first.body["token"]["project"]["domain"]["id"]
    by_id = acquire(
        KeystoneV3Password(
            keystone.url, user_id=user_id, password="demo-secret", project_id=project_id
        )
    )
    assert by_id.body is not None
    assert by_id.body["token"]["project"]["id"] == project_id
    by_domain_id = acquire(
        KeystoneV3Password(
            keystone.url,
            username="demo-user",
            user_domain_id=domain_id,
            password="demo-secret",
            project_name="demo-project",
            project_domain_id=domain_id,
        )
    )
    assert by_domain_id.body is not None
    assert by_domain_id.body["token"]["user"]["id"] == user_id


@pytest.mark.keystone
def test_password_domain_scope_by_name_and_id(keystone: Any) -> None:
    by_name = acquire(KeystoneV3Password(keystone.url, domain_name="demo", **DEMO))
    assert scope_of(by_name) == "domain"
    assert by_name.body is not None
    domain_id = by_name.body["token"]["domain"]["id"]
    by_id = acquire(KeystoneV3Password(keystone.url, domain_id=domain_id, **DEMO))
    assert by_id.body is not None
    assert by_id.body["token"]["domain"]["name"] == "demo"


@pytest.mark.keystone
def test_password_system_scope(keystone: Any) -> None:
    token = acquire(
        KeystoneV3Password(
            keystone.url,
            username="system-reader",
            password="system-reader-secret",
            user_domain_name="Default",
            system_scope="all",
        )
    )
    assert token.body is not None
    assert token.body["token"]["system"] == {"all": True}


@pytest.mark.keystone
def test_password_unscoped(keystone: Any) -> None:
    assert scope_of(acquire(KeystoneV3Password(keystone.url, unscoped=True, **DEMO))) == "unscoped"


@pytest.mark.keystone
def test_catalog_on_request(keystone: Any) -> None:
    token = acquire(
        KeystoneV3Password(
            keystone.url,
            project_name="demo-project",
            project_domain_name="demo",
            include_catalog=True,
            **DEMO,
        )
    )
    assert token.body is not None
    assert any(s["type"] == "identity" for s in token.body["token"]["catalog"])


@pytest.mark.keystone
def test_token_method_exchanges_unscoped_for_project(keystone: Any) -> None:
    unscoped = acquire(KeystoneV3Password(keystone.url, unscoped=True, **DEMO))
    exchanged = acquire(
        KeystoneV3Token(
            keystone.url,
            token=unscoped.token,
            project_name="demo-project",
            project_domain_name="demo",
        )
    )
    assert exchanged.token != unscoped.token
    assert exchanged.body is not None
    assert set(exchanged.body["token"]["methods"]) == {"password", "token"}
    assert exchanged.body["token"]["project"]["name"] == "demo-project"


@pytest.mark.keystone
def test_application_credential_by_id_and_by_name(keystone: Any) -> None:
    credential = keystone.application_credential  # the seeded one, of service-user
    by_id = acquire(
        KeystoneV3ApplicationCredential(
            keystone.url,
            application_credential_id=credential["id"],
            application_credential_secret=credential["secret"],
        )
    )
    by_name = acquire(
        KeystoneV3ApplicationCredential(
            keystone.url,
            application_credential_name=credential["name"],
            application_credential_secret=credential["secret"],
            username="service-user",
            user_domain_name="Default",
        )
    )
    for token in (by_id, by_name):
        assert token.body is not None
        assert token.body["token"]["methods"] == ["application_credential"]
        assert token.body["token"]["application_credential"]["id"] == credential["id"]
        assert token.body["token"]["project"]["name"] == "service"
    with pytest.raises(AuthenticationFailed):
        acquire(
            KeystoneV3ApplicationCredential(
                keystone.url,
                application_credential_id=credential["id"],
                application_credential_secret="not-the-secret",
            )
        )


@pytest.mark.keystone
def test_auth_sets_header_on_outgoing_requests(keystone: Any) -> None:
    auth = KeystoneV3Password(
        keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO
    )
    with httpx.Client(auth=auth) as client:
        response = client.get(f"{auth.auth_url}/auth/projects")
    assert response.status_code == 200
    assert [p["name"] for p in response.json()["projects"]] == ["demo-project"]
    held = auth.token
    assert held is not None
    assert response.request.headers["X-Auth-Token"] == held.token


@pytest.mark.keystone
def test_renews_before_expiry_with_injected_clock(keystone: Any) -> None:
    now = [time.time()]
    auth = KeystoneV3Password(
        keystone.url,
        project_name="demo-project",
        project_domain_name="demo",
        renew_margin=60,
        clock=lambda: now[0],
        **DEMO,
    )
    with httpx.Client(auth=auth) as client:
        assert client.get(f"{auth.auth_url}/auth/projects").status_code == 200
        first = auth.token
        assert first is not None and first.expires_at is not None
        now[0] = first.expires_at.timestamp() - 120  # well before the margin
        assert client.get(f"{auth.auth_url}/auth/projects").status_code == 200
        assert auth.token == first
        now[0] = first.expires_at.timestamp() - 30  # inside the margin
        assert client.get(f"{auth.auth_url}/auth/projects").status_code == 200
        second = auth.token
    assert second is not None and second.token != first.token


@pytest.mark.keystone
def test_renews_once_on_401_after_revocation(keystone: Any) -> None:
    auth = KeystoneV3Password(
        keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO
    )
    with httpx.Client(auth=auth) as client:
        assert client.get(f"{auth.auth_url}/auth/projects").status_code == 200
        first = auth.token
        assert first is not None
        assert first.body is not None
        user_id = first.body["token"]["user"]["id"]
        keystone.revoke(first.token)
        # A POST with a body: after the 401 it is sent again, body and all.
        response = client.post(
            f"{auth.auth_url}/users/{user_id}/application_credentials",
            json={"application_credential": {"name": f"retry-{time.time_ns()}"}},
        )
        assert response.status_code == 201, response.text
        # history: the refused call, then the renewal
        assert [r.status_code for r in response.history] == [401, 201]
        assert response.history[1].request.url.path == "/v3/auth/tokens"
        created = response.json()["application_credential"]["id"]
        client.delete(f"{auth.auth_url}/users/{user_id}/application_credentials/{created}")
        response = client.get(f"{auth.auth_url}/auth/projects")
    assert response.status_code == 200
    second = auth.token
    assert second is not None and second.token != first.token
    assert response.request.headers["X-Auth-Token"] == second.token


@pytest.mark.keystone
async def test_async_auth_renews_on_401(keystone: Any) -> None:
    auth = KeystoneV3Password(
        keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO
    )
    async with httpx.AsyncClient(auth=auth) as client:
        assert (await client.get(f"{auth.auth_url}/auth/projects")).status_code == 200
        first = auth.token
        assert first is not None
        keystone.revoke(first.token)
        response = await client.get(f"{auth.auth_url}/auth/projects")
        assert response.status_code == 200
        assert await auth.aget_token(client) != first.token


def test_gives_up_after_one_renewal() -> None:
    """A service that refuses every token: one renewal, then its 401 is returned."""
    issued: list[str] = []

    def refusing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/token":
            issued.append(f"t{len(issued)}")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [issued[-1].encode()]
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"no"]

    class Plain(TokenAuth):
        def build_token_request(self) -> httpx.Request:
            return httpx.Request("POST", "http://svc/token")

        def parse_token_response(self, response: httpx.Response) -> AcquiredToken:
            return AcquiredToken(response.text)

    auth = Plain()
    with httpx.Client(auth=auth, transport=httpx.WSGITransport(app=refusing_app)) as client:
        response = client.get("http://svc/data")
    assert response.status_code == 401
    assert issued == ["t0", "t1"]
    assert response.request.headers["X-Auth-Token"] == "t1"


@pytest.mark.keystone
def test_one_renewal_for_many_threads(keystone: Any) -> None:
    logins: list[int] = []

    class Counting(KeystoneV3Password):
        def build_token_request(self) -> httpx.Request:
            logins.append(1)
            return super().build_token_request()

    auth = Counting(keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO)
    statuses: list[int] = []
    with httpx.Client(auth=auth) as client:
        barrier = threading.Barrier(6)

        def call() -> None:
            barrier.wait()
            statuses.append(client.get(f"{auth.auth_url}/auth/projects").status_code)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 6
    assert len(logins) == 1


@pytest.mark.keystone
async def test_one_renewal_for_many_tasks(keystone: Any) -> None:
    logins: list[int] = []

    class Counting(KeystoneV3Password):
        def build_token_request(self) -> httpx.Request:
            logins.append(1)
            return super().build_token_request()

    auth = Counting(keystone.url, project_name="demo-project", project_domain_name="demo", **DEMO)
    async with httpx.AsyncClient(auth=auth) as client:
        responses = await asyncio.gather(
            *(client.get(f"{auth.auth_url}/auth/projects") for _ in range(6))
        )
        tokens = await asyncio.gather(*(auth.aget_token(client) for _ in range(3)))
    assert [r.status_code for r in responses] == [200] * 6
    assert len(set(tokens)) == 1
    assert len(logins) == 1


@pytest.mark.keystone
async def test_wrong_password_is_authentication_failed(keystone: Any) -> None:
    auth = KeystoneV3Password(
        keystone.url, username="demo-user", password="nope", user_domain_name="demo"
    )
    with httpx.Client() as client, pytest.raises(AuthenticationFailed) as info:
        auth.acquire(client)
    assert info.value.status_code == 401
    with httpx.Client(auth=auth) as client, pytest.raises(AuthenticationFailed):
        client.get(f"{auth.auth_url}/auth/projects")
    async with httpx.AsyncClient() as aclient:
        with pytest.raises(AuthenticationFailed):
            await auth.aacquire(aclient)


@pytest.mark.keystone
def test_unknown_project_is_authentication_failed(keystone: Any) -> None:
    auth = KeystoneV3Password(
        keystone.url, project_name="no-such-project", project_domain_name="demo", **DEMO
    )
    with httpx.Client() as client, pytest.raises(AuthenticationFailed):
        auth.acquire(client)


async def test_unreachable_identity_service() -> None:
    auth = KeystoneV3Password("http://127.0.0.1:9/v3", unscoped=True, **DEMO)
    with httpx.Client(timeout=2) as client, pytest.raises(IdentityServiceUnavailable):
        auth.get_token(client)
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(IdentityServiceUnavailable):
            await auth.aget_token(client)
    # inside an auth flow the network error is httpx's own
    with httpx.Client(auth=auth, timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.get("http://127.0.0.1:9/v3/auth/projects")


@pytest.mark.keystone
def test_invalidate_only_drops_the_named_token(keystone: Any) -> None:
    auth = KeystoneV3Password(keystone.url, unscoped=True, **DEMO)
    with httpx.Client() as client:
        token = auth.get_token(client)
        auth.invalidate("some-other-token")
        assert auth.get_token(client) == token
        auth.invalidate(token)
        assert auth.token is None
        assert auth.get_token(client) != token
        forced = auth.acquire(client, force=True)
    assert forced.token != token


@pytest.mark.keystone
def test_nothing_secret_in_logs_or_repr(keystone: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = KeystoneV3Password(keystone.url, unscoped=True, **DEMO)
    with httpx.Client(auth=auth) as client:
        client.get(f"{auth.auth_url}/auth/projects")
    held = auth.token
    assert held is not None
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(auth) + repr(held)
    assert "x-subject-token" in text.lower()
    assert held.token not in text
    assert "demo-secret" not in text
    assert held.fingerprint in text


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = environ.get("HTTP_AUTHORIZATION") or environ.get("HTTP_X_AUTH_TOKEN") or ""
    status = "401 Unauthorized" if seen.endswith("revoked") else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [seen.encode()]


def test_static_token_and_header_scheme() -> None:
    auth = StaticToken("abc123", header_name="Authorization", header_scheme="Bearer")
    transport = httpx.WSGITransport(app=echo_app)
    with httpx.Client(auth=auth, transport=transport) as client:
        assert client.get("http://svc/").text == "Bearer abc123"
        assert auth.get_token(client) == "abc123"
    plain = StaticToken("xyz-revoked")
    with httpx.Client(auth=plain, transport=transport) as client:
        response = client.get("http://svc/")
    assert response.status_code == 401  # no renewal for a static token
    assert response.history == []


def test_static_token_reports_its_expiry_and_is_kept_past_it() -> None:
    from datetime import datetime, timezone

    expires = datetime(2020, 1, 1, tzinfo=timezone.utc)
    auth = StaticToken("abc123", expires_at=expires)
    with httpx.Client(auth=auth, transport=httpx.WSGITransport(app=echo_app)) as client:
        assert client.get("http://svc/").text == "abc123"
        assert client.get("http://svc/").text == "abc123"
    assert auth.token is not None and auth.token.expires_at == expires
    with pytest.raises(ConfigurationError, match="expires_at"):
        StaticToken("abc123", expires_at=datetime(2020, 1, 1))  # naive


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"password": "p", "username": "u"}, "user_domain_name"),
        ({"password": "p"}, "username"),
        ({"password": "p", "username": "u", "user_id": "i"}, "user_id"),
        ({"password": "", "user_id": "i"}, "password"),
        ({"password": "p", "user_id": "i", "project_name": "x"}, "project_domain_name"),
        ({"password": "p", "user_id": "i", "project_id": "x", "domain_id": "d"}, "domain"),
        (
            {"password": "p", "user_id": "i", "domain_id": "d", "system_scope": "all"},
            "system_scope",
        ),
        ({"password": "p", "user_id": "i", "system_scope": "project"}, "system_scope"),
        ({"password": "p", "user_id": "i", "unscoped": True, "project_id": "x"}, "unscoped"),
        ({"password": "p", "user_id": "i", "renew_margin": -1}, "renew_margin"),
    ],
)
def test_password_configuration_errors(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneV3Password("http://ks:5000/v3", **kwargs)
    assert info.value.option == option


def test_application_credential_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneV3ApplicationCredential("http://ks/v3", application_credential_secret="s")
    assert info.value.option == "application_credential_id"
    with pytest.raises(ConfigurationError) as info:
        KeystoneV3ApplicationCredential(
            "http://ks/v3", application_credential_secret="s", application_credential_name="n"
        )
    assert info.value.option == "username"


def test_keystone_v3_url() -> None:
    assert keystone_v3_url("https://iam.example.com/v3") == "https://iam.example.com/v3"
    assert keystone_v3_url("http://h/identity/") == "http://h/identity/v3"
    for bad in ["", "ftp://h/v3", "http://h/v2.0", "http://h/v3?x=1"]:
        with pytest.raises(ConfigurationError):
            keystone_v3_url(bad)


def test_password_request_body() -> None:
    auth = KeystoneV3Password(
        "http://ks:5000",
        username="alice",
        password="pw",
        user_domain_name="smartcity",
        project_name="/gardens",
        project_domain_name="smartcity",
    )
    request = auth.build_token_request()
    assert request.method == "POST"
    assert str(request.url) == "http://ks:5000/v3/auth/tokens?nocatalog="
    import json

    assert json.loads(request.content) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "alice", "domain": {"name": "smartcity"}, "password": "pw"}
                },
            },
            "scope": {"project": {"name": "/gardens", "domain": {"name": "smartcity"}}},
        }
    }
    assert "pw" not in repr(auth)
