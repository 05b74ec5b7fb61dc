"""nginx ``auth_request`` + ``authmw serve`` (uvicorn) + the real Keystone, in front of a real
upstream that reports what reached it.

The snippets under test are examples/gateways/nginx/ as shipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authmw._hashing import fingerprint
from authmw.headers import STRIPPED_HEADERS

from ._servers import Echo, Nginx, Serve
from .conftest import Stack, keystone_env, keystone_sections

FORGED = "forged-by-client"
FORGERIES = [
    ("X-Roles", "admin"),
    ("x-user-id", FORGED),
    ("X-Project-Id", FORGED),
    ("OpenStack-System-Scope", "all"),
    ("X-Service-Roles", "service"),
    ("X-Identity-Status", "Confirmed"),
    ("X-Service-Identity-Status", "Confirmed"),
    ("X_Roles", "admin"),
    ("X-Tenant-Id", FORGED),
]
IDENTITY_NAMES = {name.lower() for name in STRIPPED_HEADERS}


@pytest.fixture(scope="module")
def stack(keystone: Any, gateway_stack: Stack) -> tuple[Nginx, Serve]:
    return gateway_stack(keystone_sections(keystone), keystone_env(keystone))


@pytest.fixture(scope="module")
def client(stack: tuple[Nginx, Serve]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[0].url, timeout=30) as client:
        yield client


def seen(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the upstream received, lower-case name -> values."""
    assert response.status_code == 200, response.text
    out: dict[str, list[str]] = {}
    for name, value in json.loads(response.content)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    return error


def test_a_valid_token_reaches_the_upstream_with_its_identity_and_nothing_forged(
    keystone: Any, client: httpx.Client, echo: Echo
) -> None:
    token = keystone.issue_token("demo-user", project="demo-project")
    before = echo.count
    response = client.get("/items?limit=5", headers=[("X-Auth-Token", token), *FORGERIES])
    headers = seen(response)
    assert echo.count == before + 1
    user = keystone.user("demo-user")
    assert headers["x-identity-status"] == ["Confirmed"]
    assert headers["x-user-id"] == [user["id"]]
    assert headers["x-user-name"] == ["demo-user"]
    assert headers["x-project-id"] == [keystone.project_id("demo-project")]
    assert sorted(headers["x-roles"][0].split(",")) == ["member", "reader"]
    assert headers["x-auth-token"] == [token]  # the credential goes on, as with the middleware
    for name, values in headers.items():
        assert FORGED not in "".join(values), name
        if name.replace("_", "-") in IDENTITY_NAMES:
            assert len(values) == 1, (name, values)
    for absent in ("openstack-system-scope", "x-service-roles", "x-service-identity-status"):
        assert absent not in headers
    assert "x_roles" not in headers
    assert json.loads(response.content)["target"] == "/items?limit=5"


def test_no_token_or_a_bad_one_is_401_with_the_challenge(client: httpx.Client, echo: Echo) -> None:
    before = echo.count
    for headers in ([], [("X-Auth-Token", "not-a-real-token")], FORGERIES):
        response = client.get("/items", headers=headers)
        error = assert_error(response, 401)
        assert error["message"] == "The request you have made requires authentication."
        assert response.headers["www-authenticate"].startswith("Keystone ")
    assert echo.count == before


def test_authmw_logs_at_the_serve_log_level_without_tokens(
    stack: tuple[Nginx, Serve], client: httpx.Client
) -> None:
    bad = f"not-a-real-token-{uuid.uuid4().hex}"
    assert_error(client.get("/items", headers={"X-Auth-Token": bad}), 401)
    log = stack[1].log.read_text()
    assert f"authmw: rejected token {fingerprint(bad)}" in log  # serve.log_level = "info"
    assert bad not in log


def test_a_reader_on_an_admin_path_is_403(keystone: Any, client: httpx.Client) -> None:
    reader = keystone.issue_token("demo-reader", project="demo-project")
    admin = keystone.issue_token("demo-admin", project="demo-project")
    for path in ("/admin", "/admin/settings", "/items/../admin/settings"):
        assert_error(client.get(path, headers={"X-Auth-Token": reader}), 403)
        assert seen(client.get(path, headers={"X-Auth-Token": admin}))["x-user-name"] == [
            "demo-admin"
        ]
    assert seen(client.get("/items", headers={"X-Auth-Token": reader}))["x-roles"] == ["reader"]


def test_public_routes_pass_without_identity(client: httpx.Client) -> None:
    for path in ("/healthz", "/static/app.js"):
        headers = seen(client.get(path, headers=FORGERIES))
        assert not IDENTITY_NAMES & {name.replace("_", "-") for name in headers}, headers
    assert_error(client.post("/healthz"), 401)


def test_client_sent_gateway_headers_never_decide_the_route(client: httpx.Client) -> None:
    lies = [
        ("X-Original-URI", "/healthz"),
        ("X-Original-Method", "GET"),
        ("X-Forwarded-Uri", "/healthz"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Prefix", "/healthz"),
    ]
    assert_error(client.get("/admin", headers=lies), 401)
    assert_error(client.delete("/items/1", headers=lies), 401)
    # And the other way round: a public route stays public whatever the client says.
    liar = [("X-Original-URI", "/admin"), ("X-Original-Method", "DELETE")]
    assert seen(client.get("/healthz", headers=liar))


def test_keystone_stopped_is_503_with_retry_after_at_the_client(
    keystone_disposable: Any, gateway_stack: Stack, echo: Echo
) -> None:
    nginx, _ = gateway_stack(
        keystone_sections(keystone_disposable, retry_after=7), keystone_env(keystone_disposable)
    )
    cached = keystone_disposable.issue_token("demo-user", project="demo-project")
    fresh = keystone_disposable.issue_token("demo-reader", project="demo-project")
    with httpx.Client(base_url=nginx.url, timeout=60) as client:
        assert seen(client.get("/items", headers={"X-Auth-Token": cached}))
        keystone_disposable.stop()
        before = echo.count
        response = client.get("/items", headers={"X-Auth-Token": fresh})
        error = assert_error(response, 503)
        assert "unavailable" in error["message"]
        assert int(response.headers["retry-after"]) >= 7
        assert "www-authenticate" not in response.headers
        assert echo.count == before
        # A token validated before the outage is still in the cache.
        assert seen(client.get("/items", headers={"X-Auth-Token": cached}))


def test_fiware_service_and_service_path_are_enforced(keystone: Any, gateway_stack: Stack) -> None:
    nginx, _ = gateway_stack(
        keystone_sections(keystone, fiware_service_scope=True), keystone_env(keystone)
    )
    gardens = keystone.issue_token("gardener", project="/gardens", project_domain="smartcity")
    domain = keystone.issue_token("gardener", domain="smartcity")
    with httpx.Client(base_url=nginx.url, timeout=30) as client:

        def get(token: str, service: str, path: str | None) -> httpx.Response:
            headers = {"X-Auth-Token": token, "Fiware-Service": service}
            if path is not None:
                headers["Fiware-ServicePath"] = path
            return client.get("/v2/entities", headers=headers)

        headers = seen(get(gardens, "smartcity", "/gardens"))
        assert headers["x-project-name"] == ["/gardens"]
        assert headers["fiware-servicepath"] == ["/gardens"]
        assert_error(get(gardens, "smartcity", "/parks"), 401)
        assert_error(get(gardens, "othercity", "/gardens"), 401)
        assert_error(get(gardens, "smartcity", None), 401)  # "/" needs a domain token
        assert seen(get(domain, "smartcity", "/"))["x-domain-name"] == ["smartcity"]


def test_authmw_unreachable_is_503_not_500(tmp_path: Path, echo: Echo) -> None:
    from ._servers import free_port

    nginx = Nginx(tmp_path, echo.port, free_port()).start()
    try:
        response = httpx.get(nginx.url + "/items", headers={"X-Auth-Token": "t"}, timeout=30)
        assert_error(response, 503)
        assert response.headers["retry-after"] == "5"
    finally:
        nginx.stop()
