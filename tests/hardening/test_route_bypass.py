"""Public-route bypass attempts through real servers (gunicorn threads, uvicorn).

Requests are written byte for byte on a socket, so no client normalises the
path. The app behind the middleware echoes the path it routes on; every
answer that reached it without a token must be for a path that resolves (all
decoding and normalisation an app might apply) to a public route:
``GET /healthz``, ``/static/*`` or any ``OPTIONS`` request.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.servers import Server, raw_request

from ._support import FUZZ, publicly_routable, raw_paths, resolve

GOOD = "rb" + secrets.token_urlsafe(24)

ATTACKS = [
    "/healthz/../admin",
    "/healthz/%2e%2e/admin",
    "/healthz/%2E%2E/admin",
    "/healthz/.%2e/admin",
    "/healthz%2f..%2fadmin",
    "/healthz%2F..%2Fadmin",
    "/healthz/..%2fadmin",
    "/healthz%2f%2e%2e%2fadmin",
    "/healthz/..%5cadmin",
    "/healthz\\..\\admin",
    "/healthz%5c..%5cadmin",
    "/healthz/%252e%252e/admin",
    "/healthz%252f..%252fadmin",
    "/healthz/./../admin",
    "/healthz;/../admin",
    "/healthz%00/../admin",
    "/healthz%3f/../admin",
    "/healthz#/../admin",
    "//healthz",
    "//healthz/../admin",
    "///healthz/../../admin",
    "/./healthz",
    "/healthz/.",
    "/healthz/",
    "/HEALTHZ",
    "/%2e%2e/healthz/../admin",
    "/%68ealthz",
    "/static/../admin",
    "/static/%2e%2e/admin",
    "/static/%2e%2e%2fadmin",
    "/static/..%2fadmin",
    "/static%2f..%2fadmin",
    "/static/..\\admin",
    "/static\\..\\admin",
    "/static/%5c..%5cadmin",
    "/static/%252e%252e/admin",
    "/static/%252e%252e%252fadmin",
    "/static/%25252e%25252e/admin",
    "/static/.%2e/admin",
    "/static/%2e./admin",
    "/static/..;/admin",
    "/static/%c0%ae%c0%ae/admin",
    "/static/%u002e%u002e/admin",
    "/static//../admin",
    "/static/x/../../admin",
    "/./static/../admin",
    "http://127.0.0.1/healthz/../admin",
    "http://127.0.0.1/static/%2e%2e/admin",
    "http://127.0.0.1//healthz",
    "/admin",
    "/admin?/healthz",
    "/admin#/healthz",
]

METHODS = ["GET", "HEAD", "POST", "get", "OPTIONS"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    workdir: Path = tmp_path_factory.mktemp("bypass")
    config = {"validator": "memory", "tokens": {GOOD: {"user_id": "u-good"}}}
    started: dict[str, Server] = {}
    try:
        for kind in ("gunicorn", "uvicorn"):
            server = Server(kind, config, workdir, threads=4)
            server.start()
            started[kind] = server
        yield started
    finally:
        for server in started.values():
            server.stop()


def request(method: str, target: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def app_path(kind: str, seen: dict[str, Any]) -> list[str]:
    """The paths the app could route on."""
    if kind == "gunicorn":
        return [seen["path"]]
    root = seen["root_path"]
    return [seen["path"][len(root) :], seen["raw_path"][len(root) :]]


def check_unauthenticated(kind: str, method: str, status: int, head: bytes, body: bytes) -> None:
    """An answer to a request without a token: 401, a server-side 4xx, or a public route."""
    assert status != 0, "no answer"
    if status == 500:
        # gunicorn's own answer when a SCRIPT_NAME header does not prefix the
        # path; the request never reaches the middleware.
        assert kind == "gunicorn" and b"Configuration problem" in body, (head, body)
        return
    if status != 200:
        assert status in (400, 401, 404, 405, 414, 431), (status, head, body)
        return
    if method == "HEAD":
        return  # no body to look at; the GET twin of the request is checked
    seen = json.loads(body)
    assert seen["identity"] is None
    for path in app_path(kind, seen):
        assert publicly_routable(seen["method"], resolve(path)), (
            f"{kind}: {method} {seen} reached the app without a token"
        )


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_baseline_public_and_protected(servers: dict[str, Server], kind: str) -> None:
    port = servers[kind].port
    status, _, body = raw_request(port, request("GET", "/healthz"))
    assert status == 200 and json.loads(body)["identity"] is None
    status, head, _ = raw_request(port, request("GET", "/admin"))
    assert status == 401 and b"www-authenticate" in head.lower()
    status, _, body = raw_request(port, request("GET", "/admin", (("X-Auth-Token", GOOD),)))
    assert status == 200 and json.loads(body)["identity"]["user_id"] == "u-good"


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
@pytest.mark.parametrize("method", METHODS)
def test_bypass_attempts_never_reach_a_protected_route(
    servers: dict[str, Server], kind: str, method: str
) -> None:
    port = servers[kind].port
    outcomes: dict[int, int] = {}
    for target in ATTACKS:
        status, head, body = raw_request(port, request(method, target))
        outcomes[status] = outcomes.get(status, 0) + 1
        check_unauthenticated(kind, method, status, head, body)
    if method == "GET":
        assert outcomes.get(401, 0) >= 30, outcomes  # most attempts do reach the middleware


@pytest.mark.parametrize(
    ("target", "script_name"),
    [
        ("/admin/healthz", "/admin"),
        ("/healthz/healthz", "/healthz"),
        ("/healthz/../admin/healthz", "/healthz/../admin"),
        ("/static/x", "/static"),
        ("/admin", "/healthz"),
        ("/healthz", "/admin"),
    ],
)
def test_script_name_header_tricks_on_gunicorn(
    servers: dict[str, Server], target: str, script_name: str
) -> None:
    # gunicorn takes SCRIPT_NAME from a request header when the peer is in
    # forwarded_allow_ips (127.0.0.1 by default) and cuts it off PATH_INFO.
    port = servers["gunicorn"].port
    for header in ("SCRIPT_NAME", "Script_Name", "SCRIPT-NAME"):
        status, head, body = raw_request(port, request("GET", target, ((header, script_name),)))
        check_unauthenticated("gunicorn", "GET", status, head, body)


def test_websocket_upgrade_to_an_escaping_path_is_refused(servers: dict[str, Server]) -> None:
    port = servers["uvicorn"].port
    upgrade = (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    )

    def handshake(target: str, extra: tuple[tuple[str, str], ...] = ()) -> int:
        lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{n}: {v}" for n, v in upgrade + extra]
        status, _, _ = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), timeout=3)
        return status

    assert handshake("/healthz") == 101  # public: accepted without a token
    assert handshake("/admin", (("X-Auth-Token", GOOD),)) == 101
    refused = 0
    for target in ATTACKS:
        path = target.removeprefix("http://127.0.0.1")
        if not publicly_routable("GET", resolve(path)):
            assert handshake(target) != 101, target
            refused += 1
    assert refused >= 40


@FUZZ.__class__(FUZZ, max_examples=min(FUZZ.max_examples, 150))
@given(
    kind=st.sampled_from(["gunicorn", "uvicorn"]),
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    target=raw_paths,
)
def test_random_raw_paths_through_real_servers(
    servers: dict[str, Server], kind: str, method: str, target: str
) -> None:
    data = f"{method} ".encode() + target.encode("latin-1", "replace") + b" HTTP/1.1\r\n"
    data += b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, head, body = raw_request(servers[kind].port, data)
    check_unauthenticated(kind, method, status, head, body)
