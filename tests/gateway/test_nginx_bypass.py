"""The public-route bypass cases of tests/hardening/test_route_bypass.py, through nginx +
``authmw serve``: requests written byte for byte, the upstream reporting the target it got.

Every answer that reached the upstream without a token must be for a target
that resolves (every decoding and normalisation an upstream might apply) to
a public route: ``GET /healthz``, ``/static/*``, any ``OPTIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening._support import FUZZ, publicly_routable, raw_paths, resolve
from hardening.test_route_bypass import ATTACKS, METHODS, request
from hypothesis import given
from hypothesis import strategies as st

from authmw.store import LocalTokenStore
from loadtest.servers import raw_request

from ._servers import Echo, Nginx, Serve
from .conftest import PUBLIC_ROUTES


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, echo: Echo) -> Iterator[tuple[int, str]]:
    """(nginx port, a valid token) with the local store as validator."""
    workdir: Path = tmp_path_factory.mktemp("bypass-gateway")
    url = f"sqlite:///{workdir / 'tokens.db'}"
    with LocalTokenStore(url) as store:
        token = store.issue(user_name="alice", roles=["member"], ttl=3600).token
    serve = Serve(
        workdir,
        {
            "serve": {"gateway": "nginx"},
            "validator": {"type": "store", "url": url},
            "middleware": {"public_routes": PUBLIC_ROUTES},
        },
    ).start()
    nginx = Nginx(workdir, echo.port, serve.port)
    try:
        nginx.start()
        yield nginx.port, token
    finally:
        nginx.stop()
        serve.stop()


def check(method: str, status: int, head: bytes, body: bytes) -> None:
    """An answer to a request without a token: 401, nginx's own 4xx, or a public route."""
    if status == 0:
        # A target holding a line break ends the request line: nginx reads an
        # HTTP/0.9 request and answers without a status line (nor headers).
        assert head, "no answer"
        if not head.startswith(b'{"method"'):
            return  # authmw's 401 or nginx's own answer
        body = head  # the upstream's echo: checked below
    elif status != 200:
        assert status in (400, 401, 404, 405, 414, 431), (status, head, body)
        return
    elif method == "HEAD":
        return  # no body to look at; the GET twin of the request is checked
    seen = json.loads(body)
    target = seen["target"].removeprefix("http://127.0.0.1")
    assert publicly_routable(seen["method"], resolve(target)), (
        f"{method} {seen['target']} reached the upstream without a token"
    )
    names = {name.lower().replace("_", "-") for name, _ in seen["headers"]}  # none forged
    assert "x-identity-status" not in names and "x-user-id" not in names


def test_baseline(gateway: tuple[int, str]) -> None:
    port, token = gateway
    status, _, body = raw_request(port, request("GET", "/healthz"))
    assert status == 200 and json.loads(body)["target"] == "/healthz"
    status, head, _ = raw_request(port, request("GET", "/admin"))
    assert status == 401 and b"www-authenticate" in head.lower()
    status, _, body = raw_request(port, request("GET", "/admin", (("X-Auth-Token", token),)))
    headers = dict(json.loads(body)["headers"])
    assert status == 200 and headers["X-User-Name"] == "alice"


@pytest.mark.parametrize("method", METHODS)
def test_bypass_attempts_never_reach_a_protected_route(
    gateway: tuple[int, str], method: str
) -> None:
    port, _ = gateway
    outcomes: dict[int, int] = {}
    for target in ATTACKS:
        status, head, body = raw_request(port, request(method, target))
        outcomes[status] = outcomes.get(status, 0) + 1
        check(method, status, head, body)
    if method == "GET":
        assert outcomes.get(401, 0) >= 25, outcomes  # most attempts do reach authmw


@FUZZ.__class__(FUZZ, max_examples=min(FUZZ.max_examples, 150))
@given(method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]), target=raw_paths)
def test_random_raw_paths_through_nginx(gateway: tuple[int, str], method: str, target: str) -> None:
    data = f"{method} ".encode() + target.encode("latin-1", "replace") + b" HTTP/1.1\r\n"
    data += b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, head, body = raw_request(gateway[0], data)
    check(method, status, head, body)
