"""Role names that X-Roles cannot carry never reach an identity.

X-Roles is comma-separated, and oslo.context reads it by splitting on commas
and stripping each part: a role named ``"member,admin"`` or ``" admin"``
would read as ``admin`` there. Keystone stores such names (checked below), as
may any introspection endpoint. Every validator drops them, keeps the
token's other roles, and warns once per distinct name, not per request.

Servers: a private copy of the real Keystone (the role is created and
granted through its API), and the loopback server of the hardening tests for
v2.0 and introspection answers in their documented formats.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hardening._identity_server import Answer, IdentityServer
from oslo_context.context import RequestContext

from authmw import (
    HTTPIntrospectionValidator,
    IntrospectionMapping,
    KeystoneV2Validator,
    KeystoneValidator,
    WSGIAuthMiddleware,
)

DEMO = {"user": "demo-user", "password": "demo-secret", "user_domain": "demo"}
DEMO_PROJECT = {"project": "demo-project", "project_domain": "demo"}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own first warnings (the set of warned names is per process)."""
    module = sys.modules.get("authmw.validators._roles")
    if module is not None:
        monkeypatch.setattr(module, "_warned", set())


def role_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("authmw") and r.levelno >= logging.WARNING
    ]


def oslo_roles(validator: Any, token: str) -> list[str]:
    """The roles an OpenStack app behind the WSGI middleware reads (oslo.context)."""
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    middleware = WSGIAuthMiddleware(app, validator, cache_time=0)
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_AUTH_TOKEN": token}
    b"".join(middleware(environ, lambda s, h, e=None: statuses.append(s)))
    assert statuses == ["200 OK"]
    roles: list[str] = RequestContext.from_environ(seen).roles
    return roles


# -- the real Keystone ---------------------------------------------------------------------


def grant(ks: Any, role_name: str) -> None:
    """Create ``role_name`` in Keystone and give it to demo-user on demo-project."""
    created = ks._as_admin("POST", "/roles", json={"role": {"name": role_name}})
    assert created.status_code == 201, created.text  # Keystone accepts the name
    role_id = created.json()["role"]["id"]
    user_id = ks.user("demo-user")["id"]
    project_id = ks.project_id("demo-project")
    granted = ks._as_admin("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
    assert granted.status_code == 204, granted.text


def test_keystone_role_names_with_a_comma_or_white_space_are_dropped(
    keystone_disposable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ks = keystone_disposable
    bad = {"member,admin", " admin"}
    for name in bad:
        grant(ks, name)
    caplog.set_level(logging.DEBUG)
    with KeystoneValidator(ks.url, **ks.service_credentials) as validator:
        for _ in range(3):
            token = ks.issue_token(**DEMO, **DEMO_PROJECT)
            listed = {role["name"] for role in ks.token_body(token)["token"]["roles"]}
            assert bad <= listed  # Keystone puts them in the token
            assert set(validator.validate(token).roles) == {"member", "reader"}
        assert sorted(oslo_roles(validator, token)) == ["member", "reader"]
    warnings = role_warnings(caplog)
    assert len(warnings) == 2, warnings  # once per distinct name, not per request
    assert any("'member,admin'" in w for w in warnings)
    assert any("' admin'" in w for w in warnings)


# -- v2.0 and introspection, from the loopback server ------------------------------------------

TOKEN = "gAAAA-role-names-user-token-0123456789"
FAR = "2099-01-01T00:00:00.000Z"


@pytest.fixture
def loopback() -> Iterator[IdentityServer]:
    with IdentityServer() as server:
        yield server


def v2_body(role_names: list[str]) -> bytes:
    """Rackspace's documented "Validate token" answer with these role names."""
    return json.dumps(
        {
            "access": {
                "token": {
                    "id": TOKEN,
                    "expires": FAR,
                    "tenant": {"id": "5830345", "name": "5830345"},
                },
                "user": {
                    "id": "92bb036af5b0467198cded3455123456",
                    "name": "accountUserName",
                    "roles": [
                        {"id": str(i), "name": name, "description": "a role"}
                        for i, name in enumerate(role_names)
                    ],
                },
            }
        }
    ).encode()


CASES: dict[str, tuple[Any, bytes, set[str], set[str]]] = {
    # flavour: (validator factory, answer, good roles, bad roles)
    "v2": (
        lambda url: KeystoneV2Validator(url + "/v2.0", static_token="admin-token-0123456789"),
        v2_body(["identity:default", "identity:default,admin", " admin", "admin "]),
        {"identity:default"},
        {"identity:default,admin", " admin", "admin "},
    ),
    "rfc7662 scope": (  # RFC 7662's scope is space-separated; a comma stays inside a name
        lambda url: HTTPIntrospectionValidator(
            url + "/introspect", client_id="rs", client_secret="s3cret"
        ),
        json.dumps(
            {"active": True, "sub": "u-1", "username": "jdoe", "scope": "read write,admin"}
        ).encode(),
        {"read"},
        {"write,admin"},
    ),
    "rfc7662 Keycloak roles": (
        lambda url: HTTPIntrospectionValidator(
            url + "/introspect",
            client_id="rs",
            client_secret="s3cret",
            mapping=IntrospectionMapping.rfc7662(roles="realm_access.roles"),
        ),
        json.dumps(
            {
                "active": True,
                "sub": "u-1",
                "username": "jdoe",
                "realm_access": {"roles": ["member", " admin", "member,admin", "\tadmin"]},
            }
        ).encode(),
        {"member"},
        {" admin", "member,admin", "\tadmin"},
    ),
    "current user": (
        lambda url: HTTPIntrospectionValidator(
            url + "/suite-api/api/auth/currentuser",
            style="header",
            token_scheme="vRealizeOpsToken",
        ),
        json.dumps(
            {
                "id": "3bd6ec54-53a4-4fe5-8c4c-1e9e5e5a1c7d",
                "username": "jdoe",
                "roleNames": ["ReadOnly", "ReadOnly,Administrator", " Administrator"],
            }
        ).encode(),
        {"ReadOnly"},
        {"ReadOnly,Administrator", " Administrator"},
    ),
}


@pytest.mark.parametrize("flavour", list(CASES))
def test_remote_role_names_with_a_comma_or_white_space_are_dropped(
    loopback: IdentityServer, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    factory, body, good, bad = CASES[flavour]
    loopback.answer = Answer(200, body)
    caplog.set_level(logging.DEBUG)
    with factory(loopback.url) as validator:
        for _ in range(3):
            assert set(validator.validate(TOKEN).roles) == good
        assert set(oslo_roles(validator, TOKEN)) == good
    warnings = role_warnings(caplog)
    assert len(warnings) == len(bad), warnings
    for name in bad:
        assert any(repr(name) in w for w in warnings), (name, warnings)


async def test_async_validation_drops_them_too(
    loopback: IdentityServer, caplog: pytest.LogCaptureFixture
) -> None:
    factory, body, good, bad = CASES["current user"]
    loopback.answer = Answer(200, body)
    caplog.set_level(logging.DEBUG)
    async with factory(loopback.url) as validator:
        for _ in range(3):
            assert set((await validator.avalidate(TOKEN)).roles) == good
    assert len(role_warnings(caplog)) == len(bad)


def test_a_comma_separated_roles_claim_is_still_split(loopback: IdentityServer) -> None:
    # roles_separator="," makes the comma a separator: "a, b" are two roles.
    loopback.answer = Answer(200, json.dumps({"sub": "u-1", "groups": "read, write"}).encode())
    mapping = IntrospectionMapping(active=None, user_id="sub", roles="groups", roles_separator=",")
    with HTTPIntrospectionValidator(
        loopback.url + "/me", style="header", mapping=mapping
    ) as validator:
        assert validator.validate(TOKEN).roles == ("read", "write")
