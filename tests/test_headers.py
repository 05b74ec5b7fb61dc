from __future__ import annotations

import json

import pytest
from helpers import full_identity

from authmw import Identity
from authmw import headers as h

# The list of issue 2, verbatim: every one of these must be stripped.
ISSUE_LIST = [
    "X-Identity-Status",
    "X-Service-Identity-Status",
    "X-Domain-Id",
    "X-Domain-Name",
    "X-Project-Id",
    "X-Project-Name",
    "X-Project-Domain-Id",
    "X-Project-Domain-Name",
    "X-User-Id",
    "X-User-Name",
    "X-User-Domain-Id",
    "X-User-Domain-Name",
    "X-Roles",
    "X-Service-Catalog",
    "X-Is-Admin-Project",
    "OpenStack-System-Scope",
    "X-Role",
    "X-User",
    "X-Tenant-Id",
    "X-Tenant-Name",
    "X-Tenant",
]
SERVICE_TWINS = [
    "X-Service-Domain-Id",
    "X-Service-Domain-Name",
    "X-Service-Project-Id",
    "X-Service-Project-Name",
    "X-Service-Project-Domain-Id",
    "X-Service-Project-Domain-Name",
    "X-Service-User-Id",
    "X-Service-User-Name",
    "X-Service-User-Domain-Id",
    "X-Service-User-Domain-Name",
    "X-Service-Roles",
    "X-Service-Is-Admin-Project",
    "X-Service-System-Scope",
]


@pytest.mark.parametrize("name", ISSUE_LIST + SERVICE_TWINS)
def test_every_identity_header_of_the_issue_is_stripped(name: str) -> None:
    assert name in h.STRIPPED_HEADERS
    for spelling in (name, name.lower(), name.upper(), name.replace("-", "_")):
        assert h.is_stripped(spelling), spelling


def test_everything_injected_is_also_stripped() -> None:
    assert set(h.INJECTED_HEADERS) <= h.STRIPPED_HEADERS


@pytest.mark.parametrize(
    "name",
    [
        "X-Auth-Token",
        "X-Service-Token",
        "Content-Type",
        "X-Request-Id",
        "Authorization",
        "X-Rolesx",
    ],
)
def test_other_headers_are_not_stripped(name: str) -> None:
    assert not h.is_stripped(name)


def test_environ_key() -> None:
    assert h.environ_key("X-Roles") == "HTTP_X_ROLES"
    assert h.environ_key("OpenStack-System-Scope") == "HTTP_OPENSTACK_SYSTEM_SCOPE"


def test_strip_environ_removes_only_identity_headers() -> None:
    env = {h.environ_key(name): "forged" for name in h.STRIPPED_HEADERS}
    env.update({"HTTP_X_AUTH_TOKEN": "t", "HTTP_X_OTHER": "o", "PATH_INFO": "/"})
    h.strip_environ(env)
    assert env == {"HTTP_X_AUTH_TOKEN": "t", "HTTP_X_OTHER": "o", "PATH_INFO": "/"}


def test_pipeline_strips_asgi_headers_any_case_any_separator_and_duplicates() -> None:
    from helpers import counting

    from authmw import AuthCore
    from authmw.pipeline import Pipeline

    headers = [
        (b"x-roles", b"admin"),
        (b"X-Roles", b"admin"),
        (b"X_ROLES", b"admin"),
        (b"x_roles", b"admin"),
        (b"openstack-system-scope", b"all"),
        (b"x-auth-token", b"t"),
        (b"X-Other", b"o"),
        (b"x-roles", b"admin"),
    ]
    scope = {"type": "http", "method": "GET", "headers": headers}
    kept, credentials, _ = Pipeline(AuthCore(counting())).scanner.scope(scope)
    assert kept == [(b"x-auth-token", b"t"), (b"X-Other", b"o")]
    assert credentials.token == "t"


def test_rendered_headers_of_a_project_token() -> None:
    identity = full_identity()
    assert dict(h.rendered(identity)) == {
        "X-User-Id": "u-123",
        "X-User-Name": "alice",
        "X-User-Domain-Id": "ud-1",
        "X-User-Domain-Name": "UserDomain",
        "X-Project-Id": "p-456",
        "X-Project-Name": "Project X",
        "X-Project-Domain-Id": "pd-1",
        "X-Project-Domain-Name": "ProjectDomain",
        "X-Roles": "Member,reader,Admin",
        "X-Is-Admin-Project": "False",
        "X-Role": "Member,reader,Admin",
        "X-User": "alice",
        "X-Tenant-Id": "p-456",
        "X-Tenant-Name": "Project X",
        "X-Tenant": "Project X",
    }


def test_rendered_omits_absent_values() -> None:
    rendered = dict(h.rendered(Identity("u1", system_scope="all")))
    assert rendered == {
        "X-User-Id": "u1",
        "X-Roles": "",
        "X-Role": "",
        "X-Is-Admin-Project": "True",
        "OpenStack-System-Scope": "all",
    }
    assert "None" not in rendered.values()


def test_service_headers_use_the_service_twins() -> None:
    rendered = dict(h.rendered(full_identity(roles=("service",)), service=True))
    assert rendered["X-Service-User-Id"] == "u-123"
    assert rendered["X-Service-Roles"] == "service"
    assert rendered["X-Service-Is-Admin-Project"] == "False"
    assert not any(name.startswith("X-User") or name == "X-Roles" for name in rendered)
    assert set(rendered) <= h.STRIPPED_HEADERS


def test_header_values_cannot_carry_line_breaks() -> None:
    identity = Identity("u1", user_name="eve\r\nX-Roles: admin\x00")
    assert dict(h.rendered(identity))["X-User-Name"] == "eve  X-Roles: admin\ufffd"


def test_wsgi_items_are_latin1_strings() -> None:
    identity = Identity("u1", user_name="Jürgen")
    items = dict(h.wsgi_items(identity))
    assert items["HTTP_X_USER_NAME"] == "Jürgen".encode().decode("latin-1")
    assert items["HTTP_X_USER_NAME"].encode("latin-1").decode() == "Jürgen"


def test_asgi_items_are_lower_case_bytes() -> None:
    identity = Identity("u1", user_name="Jürgen", roles=("A", "b"))
    items = h.asgi_items(identity)
    assert all(isinstance(n, bytes) and n == n.lower() for n, _ in items)
    assert dict(items)[b"x-user-name"] == "Jürgen".encode()
    assert dict(items)[b"x-roles"] == b"A,b"


def test_service_catalog_header_is_v2_json() -> None:
    catalog = (
        {
            "type": "compute",
            "name": "nova",
            "endpoints": (
                {"region": "r1", "interface": "public", "url": "http://pub"},
                {"region": "r1", "interface": "internal", "url": "http://int"},
            ),
        },
    )
    identity = Identity("u1", service_catalog=catalog)
    value = dict(h.rendered(identity))["X-Service-Catalog"]
    assert json.loads(value) == [
        {
            "type": "compute",
            "name": "nova",
            "endpoints": [{"region": "r1", "publicURL": "http://pub", "internalURL": "http://int"}],
        }
    ]
