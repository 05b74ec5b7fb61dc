"""Token sources through real servers (gunicorn, uvicorn) in front of the real Keystone.

Every source, ambiguity, hide_credentials, a browser-style websocket
handshake that carries only the subprotocol, a websocket token in the query
string kept out of the servers' access logs and authmw's DEBUG logs, a
websocket closed at its token's expiry, and a Keystone OAuth2
client-credentials token sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from authmw.store import LocalTokenStore
from loadtest.servers import Server

SOURCES = [
    "X-Auth-Token",
    "Authorization: Bearer",
    "Sec-WebSocket-Protocol: bearer",
    "query: access_token",
]
DEMO = {
    "user": "demo-user",
    "password": "demo-secret",
    "user_domain": "demo",
    "project": "demo-project",
    "project_domain": "demo",
}
ALICE = {"user": "alice", "password": "alice-secret", "user_domain": "Default", "project": "alpha"}


def start(kind: str, workdir: Path, config: dict[str, Any]) -> Server:
    server = Server(kind, config, workdir, threads=4, access_log=True)
    server.start()
    return server


@pytest.fixture(scope="module")
def servers(keystone: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    workdir = tmp_path_factory.mktemp("credentials")
    keystone_config = {
        "validator": "keystone",
        "keystone_url": keystone.url,
        "service": keystone.service_credentials,
        "debug_logs": True,
    }
    configs = {
        "gunicorn": {**keystone_config, "options": {"token_sources": SOURCES}},
        "uvicorn": {**keystone_config, "options": {"token_sources": SOURCES}},
        "gunicorn-hidden": {
            **keystone_config,
            "options": {"token_sources": SOURCES, "hide_credentials": True},
        },
        "uvicorn-hidden": {
            **keystone_config,
            "options": {"token_sources": SOURCES, "hide_credentials": True},
        },
    }
    started: dict[str, Server] = {}
    try:
        for name, config in configs.items():
            started[name] = start(name.split("-")[0], workdir, config)
        yield started
    finally:
        for server in started.values():
            server.stop()


def get(server: Server, headers: dict[str, str], path: str = "/x") -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=10)


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_every_http_source(keystone: Any, servers: dict[str, Server], kind: str) -> None:
    server = servers[kind]
    demo, alice = keystone.issue_token(**DEMO), keystone.issue_token(**ALICE)
    for headers in (
        {"X-Auth-Token": demo},
        {"Authorization": f"Bearer {demo}"},
        {"Authorization": f"bearer {demo}", "X-Auth-Token": demo},
    ):
        response = get(server, headers)
        assert response.status_code == 200, headers
        assert response.json()["identity"]["user_id"] == keystone.user("demo-user")["id"]
    response = get(server, {"Authorization": f"Bearer {demo}", "X-Auth-Token": alice})
    assert response.status_code == 401
    response = get(server, {"Authorization": "Bearer " + "x" * 30})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="authmw", error="invalid_token"'
    response = get(server, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Keystone realm="authmw", Bearer realm="authmw"'
    # The app sees its credentials (hide_credentials is off by default).
    seen = get(server, {"Authorization": f"Bearer {demo}"}).json()["headers"]
    assert seen["authorization"] == f"Bearer {demo}"


@pytest.mark.parametrize("kind", ["gunicorn-hidden", "uvicorn-hidden"])
def test_hidden_credentials(keystone: Any, servers: dict[str, Server], kind: str) -> None:
    demo = keystone.issue_token(**DEMO)
    for headers in ({"X-Auth-Token": demo}, {"Authorization": f"Bearer {demo}"}):
        response = get(servers[kind], headers)
        assert response.status_code == 200
        seen = response.json()["headers"]
        assert "x-auth-token" not in seen and "authorization" not in seen
        assert demo not in json.dumps(response.json())


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_a_keystone_oauth2_client_credentials_token(
    keystone: Any, servers: dict[str, Server], kind: str
) -> None:
    credential = keystone.application_credential
    answer = httpx.post(
        keystone.url + "/OS-OAUTH2/token",
        data={"grant_type": "client_credentials"},
        auth=(credential["id"], credential["secret"]),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    access_token = answer.json()["access_token"]
    assert answer.json()["token_type"] == "Bearer"
    response = get(servers[kind], {"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200
    assert response.json()["identity"]["user_id"] == keystone.user("service-user")["id"]


async def _open(url: str, **kwargs: Any) -> tuple[str | None, dict[str, Any]]:
    async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
        return ws.subprotocol, json.loads(await ws.recv())


def test_a_browser_websocket_handshake_carrying_only_the_subprotocol(
    keystone: Any, servers: dict[str, Server]
) -> None:
    demo = keystone.issue_token(**DEMO)
    url = servers["uvicorn"].url.replace("http", "ws") + "/socket"
    subprotocol, seen = asyncio.run(_open(url, subprotocols=["bearer", demo]))
    assert subprotocol == "bearer"  # echoed, or a browser drops the socket
    assert seen["identity"]["user_id"] == keystone.user("demo-user")["id"]
    assert seen["subprotocols"] == [] and "sec-websocket-protocol" not in seen["headers"]
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(_open(url, subprotocols=["bearer", "x" * 30]))
    assert refused.value.response.status_code in (401, 403)


def test_query_tokens_stay_out_of_every_log(keystone: Any, servers: dict[str, Server]) -> None:
    demo = keystone.issue_token(**DEMO)
    uvicorn, gunicorn = servers["uvicorn"], servers["gunicorn"]
    url = uvicorn.url.replace("http", "ws") + f"/socket?room=1&access_token={demo}"
    _, seen = asyncio.run(_open(url))
    assert seen["identity"]["user_id"] == keystone.user("demo-user")["id"]
    assert seen["query_string"] == "room=1"
    # Over HTTP the query is no source at all, but the request line is logged all the same.
    assert get(gunicorn, {}, f"/x?access_token={demo}").status_code == 401
    assert get(uvicorn, {}, f"/x?access_token={demo}").status_code == 401
    for server in (uvicorn, gunicorn):
        log = server.log_path.read_text()
        assert "access_token=<redacted>" in log, server.kind  # the line is there, redacted
        assert "authmw DEBUG" in log  # authmw's own DEBUG records are on
        assert demo not in log


def test_a_websocket_is_closed_when_its_token_expires(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tokens.db"
    store = LocalTokenStore(url)
    store.open()  # the schema exists before the server opens the store
    with Server("uvicorn", {"validator": "store", "store_url": url}, tmp_path) as server:
        # Issued once the server is up: its start-up cannot use up the 3 s.
        brief = store.issue(user_id="u-brief", ttl=3)
        assert asyncio.run(_wait_for_close(server, brief.token)) == 1008
    store.close()


async def _wait_for_close(server: Server, token: str) -> int | None:
    url = server.url.replace("http", "ws") + "/socket"
    async with websockets.connect(url, additional_headers={"X-Auth-Token": token}) as ws:
        assert json.loads(await ws.recv())["identity"]["user_id"] == "u-brief"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)  # authmw closes it at the token's expiry
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code
