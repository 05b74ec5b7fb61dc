"""KeystoneValidator against the real Keystone the suite starts."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from authmw.client import KeystoneV3Password
from authmw.errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from authmw.identity import Identity
from authmw.validators.base import AsyncValidator, Validator
from authmw.validators.keystone import KeystoneValidator

DEMO = {"user": "demo-user", "password": "demo-secret", "user_domain": "demo"}
DEMO_PROJECT = {"project": "demo-project", "project_domain": "demo"}
READER = {"user": "demo-reader", "password": "demo-reader-secret", "user_domain": "demo"}
SYSTEM_READER = {
    "user": "system-reader",
    "password": "system-reader-secret",
    "user_domain": "Default",
}


@pytest.fixture
def validator(keystone: Any) -> Iterator[KeystoneValidator]:
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as v:
        yield v


async def check(v: KeystoneValidator, token: str, mode: str, **kwargs: Any) -> Identity:
    if mode == "sync":
        return v.validate(token, **kwargs)
    return await v.avalidate(token, **kwargs)


modes = pytest.mark.parametrize("mode", ["sync", "async"])


def test_implements_the_validator_protocols(validator: KeystoneValidator) -> None:
    assert isinstance(validator, Validator)
    assert isinstance(validator, AsyncValidator)


@modes
async def test_project_scoped_token(keystone: Any, validator: KeystoneValidator, mode: str) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    identity = await check(validator, token, mode)
    assert identity.scope == "project"
    assert identity.user_name == "demo-user"
    assert identity.user_domain_name == "demo"
    assert identity.project_name == "demo-project"
    assert identity.project_domain_name == "demo"
    assert identity.project_id and identity.project_domain_id and identity.user_id
    assert set(identity.roles) == {"member", "reader"}  # reader is implied by member
    assert identity.is_admin_project is False
    assert identity.methods == ("password",)
    assert len(identity.audit_ids) == 1
    assert identity.service_catalog is None
    assert identity.expires_at is not None and identity.issued_at is not None
    assert identity.expires_at > identity.issued_at
    assert identity.token_body is not None
    assert identity.token_body["project"]["name"] == "demo-project"


@modes
async def test_domain_scoped_token(keystone: Any, validator: KeystoneValidator, mode: str) -> None:
    identity = await check(validator, keystone.issue_token(**DEMO, domain="demo"), mode)
    assert identity.scope == "domain"
    assert identity.domain_name == "demo"
    assert identity.domain_id
    assert identity.project_id is None
    assert identity.roles == ("reader",)
    assert identity.is_admin_project is True  # absent from domain tokens


@modes
async def test_system_scoped_token(keystone: Any, validator: KeystoneValidator, mode: str) -> None:
    identity = await check(validator, keystone.issue_token(**SYSTEM_READER, system=True), mode)
    assert identity.scope == "system"
    assert identity.system_scope == "all"
    assert identity.has_role("reader")
    assert identity.project_id is None and identity.domain_id is None


@modes
async def test_unscoped_token(keystone: Any, validator: KeystoneValidator, mode: str) -> None:
    identity = await check(validator, keystone.issue_token(**DEMO, unscoped=True), mode)
    assert identity.scope == "unscoped"
    assert identity.roles == ()
    assert identity.user_name == "demo-user"


def test_admin_project_token_is_admin_project(keystone: Any, validator: KeystoneValidator) -> None:
    identity = validator.validate(keystone.admin_token())
    assert identity.project_name == "admin"
    assert identity.is_admin_project is True
    assert identity.has_role("admin")


@modes
async def test_catalog_only_when_asked(keystone: Any, mode: str) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    async with KeystoneValidator(
        keystone.url, include_service_catalog=True, **keystone.service_credentials
    ) as v:
        catalog = (await check(v, token, mode)).service_catalog
    assert catalog is not None
    assert any(service["type"] == "identity" for service in catalog)


@modes
async def test_unknown_token_is_invalid(validator: KeystoneValidator, mode: str) -> None:
    with pytest.raises(InvalidToken):
        await check(validator, "gAAAAABnot-a-real-token-at-all", mode)


@modes
async def test_revoked_token_is_invalid_at_once(
    keystone: Any, validator: KeystoneValidator, mode: str
) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    assert (await check(validator, token, mode)).user_name == "demo-user"
    keystone.revoke(token)
    with pytest.raises(InvalidToken):
        await check(validator, token, mode)
    with pytest.raises(InvalidToken):
        await check(validator, token, mode, allow_expired=True)


@modes
async def test_expired_by_our_clock_is_invalid_unless_allow_expired(
    keystone: Any, mode: str
) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    later = time.time() + 2 * 86400  # Keystone still answers: only our clock moved
    async with KeystoneValidator(
        keystone.url, clock=lambda: later, **keystone.service_credentials
    ) as v:
        with pytest.raises(InvalidToken, match="expired"):
            await check(v, token, mode)
        identity = await check(v, token, mode, allow_expired=True)
    assert identity.project_name == "demo-project"
    assert identity.is_expired(later)


@modes
async def test_malformed_user_tokens_never_reach_keystone(
    keystone: Any, validator: KeystoneValidator, mode: str
) -> None:
    before = keystone.validation_count()
    for token in ["", "two words", "new\nline", "ünïcode", "x" * 10_000]:
        with pytest.raises(InvalidToken):
            await check(validator, token, mode)
    assert keystone.validation_count() == before


@modes
async def test_service_token_revoked_mid_run_reauthenticates(
    keystone: Any, validator: KeystoneValidator, mode: str
) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    await check(validator, token, mode)
    held = validator.auth.token
    assert held is not None
    keystone.revoke(held.token)
    assert (await check(validator, token, mode)).user_name == "demo-user"
    renewed = validator.auth.token
    assert renewed is not None and renewed.token != held.token


@modes
async def test_service_user_without_validate_permission_is_unavailable(
    keystone: Any, mode: str
) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    async with KeystoneValidator(
        keystone.url,
        username="demo-reader",
        password="demo-reader-secret",
        user_domain_name="demo",
        project_name="demo-project",
        project_domain_name="demo",
    ) as v:
        # Keystone answers 403 twice (two different service tokens), then we give up.
        with pytest.raises(IdentityServiceUnavailable, match="refused the service identity"):
            await check(v, token, mode)


@modes
async def test_wrong_service_password_is_unavailable_not_invalid(keystone: Any, mode: str) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    credentials = {**keystone.service_credentials, "password": "wrong-password"}
    async with KeystoneValidator(keystone.url, **credentials) as v:
        with pytest.raises(IdentityServiceUnavailable, match="service identity refused"):
            await check(v, token, mode)


@modes
async def test_application_credential_as_service_identity(keystone: Any, mode: str) -> None:
    credential = keystone.application_credential  # the seeded one, of service-user
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    async with KeystoneValidator(
        keystone.url,
        application_credential_id=credential["id"],
        application_credential_secret=credential["secret"],
    ) as v:
        assert (await check(v, token, mode)).project_name == "demo-project"
        assert v.auth.token is not None and v.auth.token.body is not None
        assert v.auth.token.body["token"]["methods"] == ["application_credential"]
    async with KeystoneValidator(
        keystone.url,
        application_credential_name=credential["name"],
        application_credential_secret=credential["secret"],
        username="service-user",
        user_domain_name="Default",
    ) as v:
        assert (await check(v, token, mode)).user_name == "demo-user"


@modes
async def test_static_service_token(keystone: Any, mode: str) -> None:
    auth = KeystoneV3Password(keystone.url, **keystone.service_credentials)
    with httpx.Client() as client:
        static = auth.get_token(client)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    async with KeystoneValidator(keystone.url, static_token=static) as v:
        assert (await check(v, token, mode)).user_name == "demo-user"
        keystone.revoke(static)
        # Our own token is dead and cannot be renewed: 503, never 401 for the user.
        with pytest.raises(IdentityServiceUnavailable):
            await check(v, token, mode)


def test_one_service_login_for_many_threads(keystone: Any) -> None:
    logins = []

    class CountingPassword(KeystoneV3Password):
        def build_token_request(self) -> httpx.Request:
            logins.append(1)
            return super().build_token_request()

    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    auth = CountingPassword(keystone.url, **keystone.service_credentials)
    results: list[Any] = []
    with KeystoneValidator(keystone.url, auth=auth) as v:
        barrier = threading.Barrier(6)

        def work() -> None:
            barrier.wait()
            try:
                results.append(v.validate(token).user_name)
            except Exception as exc:  # collected and asserted below
                results.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["demo-user"] * 6
    assert len(logins) == 1


async def test_one_service_login_for_many_tasks(keystone: Any) -> None:
    logins = []

    class CountingPassword(KeystoneV3Password):
        def build_token_request(self) -> httpx.Request:
            logins.append(1)
            return super().build_token_request()

    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    auth = CountingPassword(keystone.url, **keystone.service_credentials)
    async with KeystoneValidator(keystone.url, auth=auth) as v:
        identities = await asyncio.gather(*(v.avalidate(token) for _ in range(6)))
    assert {i.user_name for i in identities} == {"demo-user"}
    assert len(logins) == 1


def test_clients_are_pooled_and_survive_close(keystone: Any, validator: KeystoneValidator) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    validator.validate(token)
    client = validator._client
    validator.validate(token)
    assert validator._client is client
    validator.close()
    assert validator.validate(token).user_name == "demo-user"


def test_async_client_follows_the_running_loop(keystone: Any, validator: KeystoneValidator) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)

    async def twice() -> httpx.AsyncClient:
        await validator.avalidate(token)
        client = validator._async_client()
        await validator.avalidate(token)
        assert validator._async_client() is client
        return client

    first = asyncio.run(twice())
    second = asyncio.run(twice())  # a new loop gets a new client, the validator stays
    assert first is not second


def test_keystone_stopped_then_restarted(keystone_disposable: Any) -> None:
    ks = keystone_disposable
    token = ks.issue_token(**DEMO, **DEMO_PROJECT)
    v = KeystoneValidator(ks.url, **ks.service_credentials)
    assert v.validate(token).user_name == "demo-user"
    ks.stop()
    with pytest.raises(IdentityServiceUnavailable):
        v.validate(token)
    with pytest.raises(IdentityServiceUnavailable):
        asyncio.run(v.avalidate(token))
    ks.start()
    assert v.validate(token).user_name == "demo-user"
    assert asyncio.run(v.avalidate(token)).user_name == "demo-user"
    v.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for c in conns:
        c.close()
    server.close()


@modes
async def test_hung_identity_service_times_out(silent_server: int, mode: str) -> None:
    url = f"http://127.0.0.1:{silent_server}/v3"
    async with KeystoneValidator(url, static_token="svc", timeout=0.3) as v:
        with pytest.raises(IdentityServiceUnavailable):
            await check(v, "some-token", mode)


@pytest.fixture
def hanging_up_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP server that closes every connection at once; counts the connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@modes
async def test_dropped_connections_are_retried_a_bounded_number_of_times(
    hanging_up_server: tuple[int, list[int]], mode: str
) -> None:
    port, accepted = hanging_up_server
    url = f"http://127.0.0.1:{port}/v3"
    async with KeystoneValidator(url, static_token="svc", http_request_max_retries=2) as v:
        with pytest.raises(IdentityServiceUnavailable):
            await check(v, "some-token", mode)
    assert len(accepted) == 3


@modes
async def test_nothing_listening_is_unavailable(mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with KeystoneValidator(
        f"http://127.0.0.1:{port}/v3", username="u", password="p", user_domain_id="default"
    ) as v:
        with pytest.raises(IdentityServiceUnavailable):
            await check(v, "some-token", mode)


@modes
async def test_tls_failure_is_unavailable(keystone: Any, mode: str) -> None:
    https_url = str(httpx.URL(keystone.url).copy_with(scheme="https"))
    async with KeystoneValidator(https_url, static_token="svc") as v:
        with pytest.raises(IdentityServiceUnavailable):
            await check(v, "some-token", mode)


def test_no_token_in_any_log_record(
    keystone: Any, validator: KeystoneValidator, caplog: pytest.LogCaptureFixture
) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    caplog.set_level(logging.DEBUG)
    validator.validate(token)
    asyncio.run(validator.avalidate(token))
    keystone.revoke(token)
    with pytest.raises(InvalidToken):
        validator.validate(token)
    service = validator.auth.token
    assert service is not None
    messages = [r.getMessage() for r in caplog.records]
    assert any("x-subject-token" in m.lower() for m in messages)  # httpcore did log headers
    for message in messages:
        assert token not in message
        assert service.token not in message
        assert keystone.service_credentials["password"] not in message


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({}, "password"),
        ({"username": "u"}, "password"),
        ({"username": "u", "password": "p"}, "user_domain_name"),
        (
            {"username": "u", "password": "p", "user_domain_id": "d", "project_name": "x"},
            "project_domain_name",
        ),
        ({"static_token": "t", "username": "u"}, "static_token"),
        ({"application_credential_id": "i"}, "application_credential_secret"),
        (
            {
                "application_credential_id": "i",
                "application_credential_secret": "s",
                "project_id": "p",
            },
            "project_id",
        ),
        ({"static_token": "t", "timeout": 0}, "timeout"),
        ({"static_token": "t", "http_request_max_retries": -1}, "http_request_max_retries"),
        ({"static_token": "t", "cafile": "/nonexistent/ca.pem"}, "cafile"),
        (
            {"static_token": "t", "insecure": True, "cafile": "/etc/ssl/certs/ca-certificates.crt"},
            "insecure",
        ),
        ({"static_token": "t", "expiry_leeway": -1}, "expiry_leeway"),
    ],
)
def test_configuration_errors_name_the_option(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneValidator("http://127.0.0.1:5000/v3", **kwargs)
    assert info.value.option == option


def test_auth_url_forms() -> None:
    for url in ["http://ks:5000", "http://ks:5000/", "http://ks:5000/v3", "http://ks:5000/v3/"]:
        assert KeystoneValidator(url, static_token="t").base_url == "http://ks:5000/v3"
    with pytest.raises(ConfigurationError, match=r"v2\.0"):
        KeystoneValidator("http://ks:5000/v2.0", static_token="t")
    with pytest.raises(ConfigurationError) as info:
        KeystoneValidator("ks:5000", static_token="t")
    assert info.value.option == "auth_url"
