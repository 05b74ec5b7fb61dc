"""KeystoneV2Validator against a v2.0 / Rackspace identity service served by MockTransport.

Token bodies are the documented ones (OpenStack Identity API v2.0 "Validate
token", Rackspace Cloud Identity v2.0 "Validate token"), adapted only in ids
and times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from authmw import IdentityServiceUnavailable, InvalidToken, WSGIAuthMiddleware
from authmw.client._base import StaticToken
from authmw.client.keystone_v2 import KeystoneV2Auth
from authmw.errors import ConfigurationError
from authmw.validators.keystone_v2 import (
    KeystoneV2Validator,
    identity_from_access,
    interpret_v2_validation_response,
)

AUTH_URL = "https://identity.example.com/v2.0/"
NOW = 1_700_000_000.0

RAX_TOKEN = "cd45ad90d8034a1b8d75aa0efa123456"
KS_TOKEN = "aaaaa-bbbbb-ccccc-dddd-0123456789"
RACKER_TOKEN = "racker0123456789abcdef0123456789"
UNSCOPED_TOKEN = "unscoped-0123456789abcdef01234567"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def rackspace_access(token: str, expires: float) -> dict[str, Any]:
    """Rackspace's documented validate-token answer, plus a role bound to another tenant."""
    return {
        "access": {
            "token": {
                "id": token,
                "expires": iso(expires),
                "tenant": {"id": "5830345", "name": "5830345"},
                "RAX-AUTH:authenticatedBy": ["APIKEY"],
            },
            "user": {
                "id": "92bb036af5b0467198cded3455123456",
                "roles": [
                    {
                        "id": "88",
                        "serviceId": "bde1268ebabeeabb70a0e702a4626977c331d5c4",
                        "description": "Cloud Networks",
                        "name": "CloudNetworks-Security-Groups",
                    },
                    {
                        "tenantId": "5830345",
                        "id": "684",
                        "serviceId": "a45b14e394a57e3fd4e45d59ff3693ead204998b",
                        "description": "Allows a user access to keystone Service methods",
                        "name": "compute:default",
                    },
                    {
                        "tenantId": "MossoCloudFS_0d6c2a3c",
                        "id": "5",
                        "serviceId": "5bd2b4a4b7594a1a80c6f3d2c5e4b2e4d4f4a4b4",
                        "description": "A Role that allows a user access to Cloud Files",
                        "name": "object-store:default",
                    },
                    {
                        "id": "2",
                        "serviceId": "bde1268ebabeeabb70a0e702a4626977c331d5c4",
                        "description": "Default Role.",
                        "name": "identity:default",
                    },
                    {
                        "id": "10015034",
                        "serviceId": "bde1268ebabeeabb70a0e702a4626977c331d5c4",
                        "description": "Admin role for access to all capabilities",
                        "name": "admin",
                    },
                ],
                "name": "accountUserName",
                "RAX-AUTH:defaultRegion": "SYD",
                "RAX-AUTH:domainId": "5830345",
            },
        }
    }


def keystone_access(token: str, expires: float, issued: float) -> dict[str, Any]:
    """OpenStack Keystone v2.0's documented token answer (with a catalog)."""
    return {
        "access": {
            "token": {
                "issued_at": datetime.fromtimestamp(issued, timezone.utc)
                .replace(tzinfo=None)
                .isoformat(),
                "expires": datetime.fromtimestamp(expires, timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "id": token,
                "tenant": {
                    "description": None,
                    "enabled": True,
                    "id": "fc394f2ab2df4114bde39905f800dc57",
                    "name": "demo",
                },
                "audit_ids": ["ZzZwkUflQfygX7pdYDBCQQ"],
            },
            "serviceCatalog": [
                {
                    "endpoints": [
                        {
                            "adminURL": "http://23.253.248.171:8774/v2/fc394f2ab2df4114bde3",
                            "region": "RegionOne",
                            "internalURL": "http://23.253.248.171:8774/v2/fc394f2ab2df4114bde3",
                            "id": "2dad48f09e2a447a9bf852bcd93548ef",
                            "publicURL": "http://23.253.248.171:8774/v2/fc394f2ab2df4114bde3",
                        }
                    ],
                    "endpoints_links": [],
                    "type": "compute",
                    "name": "nova",
                }
            ],
            "user": {
                "username": "demo",
                "roles_links": [],
                "id": "9a6590b2ab024747bc2167c4e064d00d",
                "roles": [
                    {"name": "Member"},
                    {"name": "anotherrole"},
                    {"name": "Member"},
                ],
                "name": "demo",
            },
            "metadata": {"is_admin": 0, "roles": ["9fe2ff9ee4384b1894a90878d3e92bab"]},
        }
    }


def racker_access(token: str, expires: float) -> dict[str, Any]:
    """Rackspace's documented Racker answer: no tenant, no user name."""
    return {
        "access": {
            "token": {"expires": iso(expires), "id": token},
            "user": {
                "RAX-AUTH:defaultRegion": "",
                "roles": [
                    {
                        "name": "Racker",
                        "id": "9",
                        "description": "Defines a user as being a Racker",
                    },
                    {"name": "object-store:admin", "tenantId": "1", "id": "234"},
                ],
                "id": "userID",
            },
        }
    }


def fault(status: int, name: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={name: {"code": status, "message": message}}, headers=headers
    )


class AdminIdentity:
    """POST /v2.0/tokens for the service user; GET /v2.0/tokens/{id} with an admin token."""

    def __init__(self, clock: Clock, *, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay
        self.user_tokens: dict[str, dict[str, Any]] = {
            RAX_TOKEN: rackspace_access(RAX_TOKEN, NOW + 86400),
            KS_TOKEN: keystone_access(KS_TOKEN, NOW + 3600, NOW - 60),
            RACKER_TOKEN: racker_access(RACKER_TOKEN, NOW + 3600),
        }
        self.admin_tokens: dict[str, float] = {}
        self.service_auths: list[dict[str, Any]] = []
        self.validations: list[tuple[str, str | None, str]] = []  # raw path, X-Auth-Token, query
        self.validate_override: httpx.Response | None = None
        self.auth_override: httpx.Response | None = None
        self._lock = threading.Lock()
        self._serial = 0

    def add(self, token: str, access: dict[str, Any]) -> None:
        self.user_tokens[token] = access

    def revoke_admin_tokens(self) -> None:
        with self._lock:
            self.admin_tokens.clear()

    def _service_auth(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with self._lock:
            self.service_auths.append(body)
        if self.auth_override is not None:
            return self.auth_override
        auth = body["auth"]
        creds = auth.get("RAX-KSKEY:apiKeyCredentials") or auth.get("passwordCredentials")
        if creds.get("apiKey", creds.get("password")) not in ("adminkey-0123", "adminpass"):
            return fault(401, "unauthorized", "Unable to authenticate user.")
        with self._lock:
            self._serial += 1
            admin = f"admin-{self._serial:03d}-{'a' * 24}"
            self.admin_tokens[admin] = self.clock() + 3600
        return httpx.Response(200, json=rackspace_access(admin, self.clock() + 3600))

    def _validate(self, request: httpx.Request) -> httpx.Response:
        raw_path = request.url.raw_path.decode("ascii").split("?")[0]
        admin = request.headers.get("X-Auth-Token")
        with self._lock:
            self.validations.append((raw_path, admin, request.url.query.decode()))
            expires = self.admin_tokens.get(admin or "")
        if expires is None or expires <= self.clock():
            return fault(
                401,
                "unauthorized",
                "No valid token provided. Please use the 'X-Auth-Token' header with a valid token.",
            )
        if self.validate_override is not None:
            return self.validate_override
        token = unquote(raw_path.rsplit("/", 1)[1])
        access = self.user_tokens.get(token)
        if access is None:
            return fault(404, "itemNotFound", "Token not found.")
        belongs_to = request.url.params.get("belongsTo")
        if belongs_to and access["access"]["token"].get("tenant", {}).get("id") != belongs_to:
            return fault(404, "itemNotFound", "Token doesn't belong to Tenant with Id/Name")
        return httpx.Response(200, json=access)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v2.0/tokens":
            if self.delay:
                time.sleep(self.delay)
            return self._service_auth(request)
        if request.method == "GET" and request.url.path.startswith("/v2.0/tokens/"):
            return self._validate(request)
        return httpx.Response(404)

    async def ahandler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and self.delay:
            await asyncio.sleep(self.delay)
            return self._service_auth(request)
        return self.handler(request)


def make(service: AdminIdentity, **kwargs: Any) -> KeystoneV2Validator:
    if not {"auth", "static_token", "username"} & kwargs.keys():
        kwargs.update(username="identity-admin", api_key="adminkey-0123")
    return KeystoneV2Validator(
        AUTH_URL,
        clock=service.clock,
        transport=httpx.MockTransport(service.handler),
        async_transport=httpx.MockTransport(service.ahandler),
        **kwargs,
    )


# -- parsing -------------------------------------------------------------------------------


def test_rackspace_token_becomes_an_identity() -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator:
        identity = validator.validate(RAX_TOKEN)
    assert identity.user_id == "92bb036af5b0467198cded3455123456"
    assert identity.user_name == "accountUserName"
    assert identity.user_domain_id == "5830345"
    assert (identity.project_id, identity.project_name) == ("5830345", "5830345")
    assert identity.scope == "project"
    # the Cloud Files role is bound to another tenant: not a role in this project
    assert identity.roles == (
        "CloudNetworks-Security-Groups",
        "compute:default",
        "identity:default",
        "admin",
    )
    assert not identity.has_role("object-store:default")
    assert identity.expires_at == datetime.fromtimestamp(NOW + 86400, timezone.utc)
    assert identity.methods == ("apikey",)
    assert identity.extra["default_region"] == "SYD"
    assert identity.extra["authenticated_by"] == ("APIKEY",)
    assert identity.service_catalog is None  # Rackspace's validate answer has none


def test_keystone_v2_token_becomes_an_identity_with_its_catalog() -> None:
    service = AdminIdentity(Clock())
    with make(service, username="admin", password="adminpass", tenant_name="admin") as validator:
        identity = validator.validate(KS_TOKEN)
    assert service.service_auths == [
        {
            "auth": {
                "passwordCredentials": {"username": "admin", "password": "adminpass"},
                "tenantName": "admin",
            }
        }
    ]
    assert identity.user_id == "9a6590b2ab024747bc2167c4e064d00d"
    assert identity.user_name == "demo"
    assert identity.project_id == "fc394f2ab2df4114bde39905f800dc57"
    assert identity.project_name == "demo"
    assert identity.roles == ("Member", "anotherrole")
    assert identity.issued_at == datetime.fromtimestamp(NOW - 60, timezone.utc)
    assert identity.audit_ids == ("ZzZwkUflQfygX7pdYDBCQQ",)
    assert identity.service_catalog is not None
    assert identity.service_catalog[0]["type"] == "compute"
    assert identity.service_catalog[0]["endpoints"][0]["region"] == "RegionOne"


def test_unscoped_token_keeps_only_global_roles() -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator:
        identity = validator.validate(RACKER_TOKEN)
    assert identity.user_id == "userID"
    assert identity.user_name is None
    assert identity.project_id is None and identity.scope == "unscoped"
    assert identity.roles == ("Racker",)  # object-store:admin is bound to tenant "1"
    assert "default_region" not in identity.extra  # empty string is no region


def test_role_bound_to_the_tokens_own_tenant_by_numeric_id_is_kept() -> None:
    access = racker_access("x" * 32, NOW + 60)["access"]
    access["token"]["tenant"] = {"id": "1", "name": "one"}
    access["user"]["roles"][1]["tenantId"] = 1
    identity = identity_from_access(access)
    assert identity.roles == ("Racker", "object-store:admin")


def test_token_body_never_holds_the_token_itself() -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator:
        identity = validator.validate(KS_TOKEN)
    assert identity.token_body is not None
    assert "id" not in identity.token_body["access"]["token"]
    assert KS_TOKEN not in json.dumps(identity.to_dict(include_token_body=True))


def test_catalog_can_be_left_out() -> None:
    service = AdminIdentity(Clock())
    with make(service, include_service_catalog=False) as validator:
        identity = validator.validate(KS_TOKEN)
    assert identity.service_catalog is None
    assert identity.token_body is not None
    assert "serviceCatalog" not in identity.token_body["access"]


def test_impersonation_is_reported_in_extra() -> None:
    service = AdminIdentity(Clock())
    access = rackspace_access("imp-0123456789abcdef", NOW + 60)
    access["access"]["RAX-AUTH:impersonator"] = {
        "id": "567",
        "name": "impersonator.username",
        "roles": [{"id": "123", "name": "Racker"}],
    }
    service.add("imp-0123456789abcdef", access)
    with make(service) as validator:
        identity = validator.validate("imp-0123456789abcdef")
    assert identity.extra["impersonator"] == {"id": "567", "name": "impersonator.username"}
    assert not identity.has_role("Racker")  # the impersonator's roles are not the user's


@pytest.mark.parametrize(
    "body",
    [
        b"<html>maintenance</html>",
        b"[]",
        json.dumps({"token": {}}).encode(),
        json.dumps({"access": {"token": {"expires": "2099-01-01T00:00:00Z"}}}).encode(),
        json.dumps(
            {"access": {"token": {"expires": "2099-01-01T00:00:00Z"}, "user": {"id": ""}}}
        ).encode(),
        json.dumps({"access": {"token": {}, "user": {"id": "u"}}}).encode(),
        json.dumps({"access": {"token": {"expires": "someday"}, "user": {"id": "u"}}}).encode(),
        json.dumps(
            {
                "access": {
                    "token": {"expires": "2099-01-01T00:00:00Z"},
                    "user": {"id": "u", "roles": [{"id": "1"}]},
                }
            }
        ).encode(),
        json.dumps(
            {
                "access": {
                    "token": {"expires": "2099-01-01T00:00:00Z", "tenant": "demo"},
                    "user": {"id": "u"},
                }
            }
        ).encode(),
        json.dumps(
            {
                "access": {
                    "token": {"expires": "2099-01-01T00:00:00Z"},
                    "user": {"id": "u", "roles": {"name": "admin"}},
                }
            }
        ).encode(),
    ],
)
def test_malformed_answers_are_unavailable(body: bytes) -> None:
    service = AdminIdentity(Clock())
    service.validate_override = httpx.Response(200, content=body)
    with make(service) as validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(RAX_TOKEN)


# -- answers ----------------------------------------------------------------------------


def test_unknown_token_is_invalid() -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator, pytest.raises(InvalidToken):
        validator.validate("unknown-0123456789abcdef")


def test_400_is_invalid_not_an_outage() -> None:
    service = AdminIdentity(Clock())
    service.validate_override = fault(400, "badRequest", "Invalid token format")
    with make(service) as validator, pytest.raises(InvalidToken):
        validator.validate(RAX_TOKEN)


def test_expired_token_is_invalid_even_if_the_service_returns_it() -> None:
    clock = Clock()
    service = AdminIdentity(clock)
    with make(service, expiry_leeway=30) as validator:
        clock.now = NOW + 3600 + 29  # KS_TOKEN expired 29 s ago: within the leeway
        assert validator.validate(KS_TOKEN).user_name == "demo"
        clock.now = NOW + 3600 + 31
        with pytest.raises(InvalidToken, match="expired"):
            validator.validate(KS_TOKEN)
        assert validator.validate(KS_TOKEN, allow_expired=True).user_name == "demo"


@pytest.mark.parametrize("status", [500, 502, 503, 405])
def test_server_errors_are_unavailable(status: int) -> None:
    service = AdminIdentity(Clock())
    service.validate_override = fault(status, "identityFault", "boom")
    with make(service) as validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(RAX_TOKEN)


@pytest.mark.parametrize(
    "answer",
    [
        # Rackspace's documented rate-limit fault: a 413 that is not about size.
        fault(413, "overLimit", "OverLimit Retry...", **{"Retry-After": "30"}),
        fault(429, "overLimit", "Too many requests"),
    ],
)
def test_rate_limits_are_unavailable(answer: httpx.Response) -> None:
    service = AdminIdentity(Clock())
    service.validate_override = answer
    with make(service) as validator, pytest.raises(IdentityServiceUnavailable):
        validator.validate(RAX_TOKEN)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError],
)
def test_network_failures_are_unavailable_and_do_not_carry_the_token(
    error: type[httpx.TransportError],
) -> None:
    service = AdminIdentity(Clock())
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            calls.append(request.url.path)
            raise error(f"failed at {request.url}", request=request)
        return service.handler(request)

    validator = KeystoneV2Validator(
        AUTH_URL,
        username="identity-admin",
        api_key="adminkey-0123",
        transport=httpx.MockTransport(handler),
        http_request_max_retries=1,
    )
    with pytest.raises(IdentityServiceUnavailable) as info:
        validator.validate(RAX_TOKEN)
    assert RAX_TOKEN not in str(info.value)
    # dropped connections on a GET are retried (bounded); others are not
    assert len(calls) == (2 if error is httpx.RemoteProtocolError else 1)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("cause", "tries"),
    [
        (ConnectionRefusedError(111, "Connection refused"), 3),  # nothing listening yet
        (socket.gaierror(-2, "Name or service not known"), 1),  # would fail the same way
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), 1),
    ],
)
def test_only_refused_connections_are_retried_among_connect_failures(
    cause: OSError, tries: int, mode: str
) -> None:
    service = AdminIdentity(Clock())
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            calls.append(request.url.path)
            # as httpx raises it: the socket error is in the cause chain
            raise httpx.ConnectError("connect failed", request=request) from cause
        return service.handler(request)

    validator = KeystoneV2Validator(
        AUTH_URL,
        username="identity-admin",
        api_key="adminkey-0123",
        transport=httpx.MockTransport(handler),
        http_request_max_retries=2,
    )
    with pytest.raises(IdentityServiceUnavailable, match="unreachable"):
        if mode == "sync":
            validator.validate(RAX_TOKEN)
        else:
            asyncio.run(validator.avalidate(RAX_TOKEN))
    assert len(calls) == tries
    assert len(service.service_auths) == 1


def test_belongs_to_is_sent_and_enforced_by_the_service() -> None:
    service = AdminIdentity(Clock())
    with make(service, belongs_to="5830345") as validator:
        assert validator.validate(RAX_TOKEN).project_id == "5830345"
        with pytest.raises(InvalidToken):
            validator.validate(KS_TOKEN)
    assert service.validations[0][2] == "belongsTo=5830345"


# -- the token in the URL path -----------------------------------------------------------------


def test_token_is_percent_encoded_into_one_path_segment() -> None:
    service = AdminIdentity(Clock())
    odd = "a/b?c#d%e&f=g;h+i:j@k"
    service.add(odd, rackspace_access(odd, NOW + 60))
    with make(service) as validator:
        assert validator.validate(odd).user_name == "accountUserName"
    raw_path = service.validations[-1][0]
    assert raw_path == "/v2.0/tokens/a%2Fb%3Fc%23d%25e%26f%3Dg%3Bh%2Bi%3Aj%40k"


@pytest.mark.parametrize("token", ["", ".", "..", "a b", "tok\nen", "é" * 10, "tok\x7f"])
def test_tokens_that_cannot_be_tokens_are_invalid_without_a_request(token: str) -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator, pytest.raises(InvalidToken):
        validator.validate(token)
    assert service.validations == [] and service.service_auths == []


def test_user_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service = AdminIdentity(Clock())
    with make(service) as validator:
        validator.validate(RAX_TOKEN)
        with pytest.raises(InvalidToken):
            validator.validate("unknown-0123456789abcdef")
        service.revoke_admin_tokens()
        validator.validate(KS_TOKEN)
    assert any("/v2.0/tokens/" in r.getMessage() for r in caplog.records)  # httpx logged the URL
    for secret in (RAX_TOKEN, "unknown-0123456789abcdef", KS_TOKEN, "adminkey-0123", "admin-00"):
        assert secret not in caplog.text


# -- the service identity -----------------------------------------------------------------------


def test_admin_token_is_reused_and_renewed_before_expiry() -> None:
    clock = Clock()
    service = AdminIdentity(clock)
    with make(service, renew_margin=60) as validator:
        for _ in range(3):
            validator.validate(RAX_TOKEN)
        assert len(service.service_auths) == 1
        clock.now += 3600 - 59  # the admin token is about to expire
        validator.validate(RAX_TOKEN)
    assert len(service.service_auths) == 2
    assert service.validations[-1][1] == "admin-002-" + "a" * 24


def test_revoked_admin_token_means_one_reauthentication() -> None:
    service = AdminIdentity(Clock())
    with make(service) as validator:
        validator.validate(RAX_TOKEN)
        service.revoke_admin_tokens()
        assert validator.validate(RAX_TOKEN).project_id == "5830345"
    assert len(service.service_auths) == 2
    assert [v[1] for v in service.validations] == [
        "admin-001-" + "a" * 24,
        "admin-001-" + "a" * 24,
        "admin-002-" + "a" * 24,
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_admin_token_refused_twice_is_unavailable(status: int) -> None:
    service = AdminIdentity(Clock())
    service.validate_override = fault(status, "forbidden", "Not Authorized")
    with make(service) as validator, pytest.raises(IdentityServiceUnavailable, match="refused"):
        validator.validate(RAX_TOKEN)
    assert len(service.service_auths) == 2
    assert len(service.validations) == 2


def test_wrong_service_credentials_are_unavailable_not_invalid() -> None:
    service = AdminIdentity(Clock())
    with (
        make(service, username="identity-admin", password="wrong") as validator,
        pytest.raises(IdentityServiceUnavailable, match="service identity refused"),
    ):
        validator.validate(RAX_TOKEN)
    assert service.validations == []


def test_service_user_needing_mfa_is_unavailable_with_a_clear_message() -> None:
    service = AdminIdentity(Clock())
    service.auth_override = fault(
        401,
        "unauthorized",
        "Additional authentication credentials required",
        **{"WWW-Authenticate": "OS-MF sessionId='abc123', factor='PASSCODE'"},
    )
    with (
        make(service, username="identity-admin", password="adminpass") as validator,
        pytest.raises(IdentityServiceUnavailable, match="multi-factor"),
    ):
        validator.validate(RAX_TOKEN)


def test_static_admin_token() -> None:
    service = AdminIdentity(Clock())
    service.admin_tokens["preissued-admin-token-0123456789"] = NOW + 3600
    with make(service, static_token="preissued-admin-token-0123456789") as validator:
        assert validator.validate(RAX_TOKEN).user_name == "accountUserName"
    assert service.service_auths == []


def test_any_token_auth_can_be_the_service_identity() -> None:
    service = AdminIdentity(Clock())
    auth = KeystoneV2Auth(AUTH_URL, username="identity-admin", api_key="adminkey-0123")
    with make(service, auth=auth) as validator:
        validator.validate(RAX_TOKEN)
    assert validator.auth is auth
    assert service.service_auths == [
        {
            "auth": {
                "RAX-KSKEY:apiKeyCredentials": {
                    "username": "identity-admin",
                    "apiKey": "adminkey-0123",
                }
            }
        }
    ]


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        (
            {"username": "a", "password": "p", "tenant_id": "1", "tenant_name": "one"},
            "tenant_name",
        ),
        ({"username": "a", "password": "p", "api_key": "k"}, "api_key"),
        ({"username": "a"}, "password"),
        ({}, "username"),
        ({"auth": StaticToken("t" * 10), "username": "a"}, "auth"),
        ({"auth": "not-an-auth"}, "auth"),
        ({"static_token": "t" * 10, "password": "p"}, "static_token"),
        ({"username": "a", "password": "p", "expiry_leeway": -1}, "expiry_leeway"),
        ({"username": "a", "password": "p", "timeout": 0}, "timeout"),
        (
            {"username": "a", "password": "p", "http_request_max_retries": 99},
            "http_request_max_retries",
        ),
        ({"username": "a", "password": "p", "belongs_to": ""}, "belongs_to"),
        ({"username": "a", "password": "p", "insecure": True, "cafile": "/x"}, "insecure"),
    ],
)
def test_configuration_mistakes_fail_at_construction(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeystoneV2Validator(AUTH_URL, **kwargs)
    assert info.value.option == option


def test_v3_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="v3"):
        KeystoneV2Validator("http://keystone:5000/v3", username="a", password="p")


def test_default_timeouts_are_explicit_and_finite() -> None:
    validator = KeystoneV2Validator(AUTH_URL, username="a", password="p")
    timeout = validator.timeout
    assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)


# -- async and concurrency ------------------------------------------------------------------


async def test_avalidate_gives_the_same_answers() -> None:
    service = AdminIdentity(Clock())
    validator = make(service)
    try:
        identity = await validator.avalidate(RAX_TOKEN)
        assert identity == validator.validate(RAX_TOKEN)
        with pytest.raises(InvalidToken):
            await validator.avalidate("unknown-0123456789abcdef")
        service.revoke_admin_tokens()
        assert (await validator.avalidate(KS_TOKEN)).user_name == "demo"
    finally:
        await validator.aclose()
    assert len(service.service_auths) == 2


async def test_many_tasks_share_one_service_authentication() -> None:
    service = AdminIdentity(Clock(), delay=0.05)
    validator = make(service)
    try:
        identities = await asyncio.gather(*(validator.avalidate(RAX_TOKEN) for _ in range(20)))
    finally:
        await validator.aclose()
    assert {i.user_id for i in identities} == {"92bb036af5b0467198cded3455123456"}
    assert len(service.service_auths) == 1
    assert len(service.validations) == 20


def test_many_threads_share_one_service_authentication() -> None:
    service = AdminIdentity(Clock(), delay=0.05)
    barrier = threading.Barrier(12)
    results: list[str] = []
    with make(service) as validator:

        def call() -> None:
            barrier.wait()
            results.append(validator.validate(KS_TOKEN).user_id)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == ["9a6590b2ab024747bc2167c4e064d00d"] * 12
    assert len(service.service_auths) == 1


async def test_async_client_is_per_event_loop_and_closed_by_aclose() -> None:
    service = AdminIdentity(Clock())
    validator = make(service)
    await validator.avalidate(RAX_TOKEN)
    client = validator._async_client()
    await validator.aclose()
    assert client.is_closed
    await validator.avalidate(RAX_TOKEN)  # a new client after aclose
    assert validator._async_client() is not client
    await validator.aclose()


# -- behind the middleware ------------------------------------------------------------------------


def test_behind_the_wsgi_middleware() -> None:
    service = AdminIdentity(Clock())
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    validator = make(service)
    middleware = WSGIAuthMiddleware(app, validator=validator, cache_time=0)
    with httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://app") as c:
        ok = c.get("/servers", headers={"X-Auth-Token": RAX_TOKEN, "X-Roles": "forged"})
        bad = c.get("/servers", headers={"X-Auth-Token": "unknown-0123456789abcdef"})
        service.validate_override = fault(503, "serviceUnavailable", "down")
        down = c.get("/servers", headers={"X-Auth-Token": KS_TOKEN})
    validator.close()
    assert ok.status_code == 200
    assert seen["HTTP_X_PROJECT_ID"] == "5830345"
    assert (
        seen["HTTP_X_ROLES"]
        == "CloudNetworks-Security-Groups,compute:default,identity:default,admin"
    )
    assert bad.status_code == 401
    assert down.status_code == 503


def test_interpret_is_usable_without_io() -> None:
    body = json.dumps(rackspace_access(RAX_TOKEN, NOW + 10)).encode()
    identity = interpret_v2_validation_response(203, body, now=NOW)
    assert identity.project_id == "5830345"
    with pytest.raises(InvalidToken):
        interpret_v2_validation_response(200, body, now=NOW + 11)
