"""API keys through the middleware: real WSGI and ASGI apps, real requests, cache hits included.

Every restriction must hold on the request that validates the token and on
the next ones, which the in-process cache answers without the store. A
refused token gets the same generic 401 body whatever the reason; the
reason is in the logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.policy import Policy
from authmw.store import LocalTokenStore

from .conftest import Clock

MakeStore = Callable[..., LocalTokenStore]
DAY = 86400.0
NOT_AUTHENTICATED = "The request you have made requires authentication."
POLICY = Policy({"items:write": "token_scope:items:write"})


def _answer(identity: Any, method: str) -> tuple[str, bytes]:
    if method == "POST" and not POLICY.enforce("items:write", identity):
        return "403 Forbidden", b'{"app": "no items:write scope"}'
    return "200 OK", json.dumps({"user": identity.user_id}).encode()


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    status, body = _answer(environ["authmw.identity"], environ["REQUEST_METHOD"])
    start_response(status, [("Content-Type", "application/json")])
    return [body]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    status, body = _answer(scope["authmw.identity"], scope["method"])
    await send(
        {
            "type": "http.response.start",
            "status": int(status[:3]),
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Client:
    """Requests to the app behind the WSGI or the ASGI middleware, from a given address."""

    def __init__(self, kind: str, store: LocalTokenStore, clock: Clock) -> None:
        options: dict[str, Any] = {"cache_time": 300, "timer": clock}
        if kind == "wsgi":
            self.middleware: Any = WSGIAuthMiddleware(wsgi_app, store, **options)
        else:
            self.middleware = ASGIAuthMiddleware(asgi_app, validator=store, **options)
        self.kind = kind

    def request(
        self, method: str, token: str, client: str = "10.1.2.3"
    ) -> tuple[int, dict[str, Any]]:
        headers = {"X-Auth-Token": token}
        if self.kind == "wsgi":
            transport: Any = httpx.WSGITransport(app=self.middleware, remote_addr=client)
            with httpx.Client(transport=transport, base_url="http://app") as http:
                response = http.request(method, "/items", headers=headers)
        else:
            import asyncio

            async def go() -> httpx.Response:
                transport = httpx.ASGITransport(app=self.middleware, client=(client, 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                    return await http.request(method, "/items", headers=headers)

            response = asyncio.run(go())
        return response.status_code, response.json()

    def hits(self) -> int:
        hits: int = self.middleware.stats()["hits"]
        return hits


@pytest.fixture(params=["wsgi", "asgi"])
def client_for(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Callable[..., Client]]:
    yield lambda store: Client(request.param, store, clock)


def refused_401(answer: tuple[int, dict[str, Any]]) -> bool:
    status, body = answer
    return status == 401 and body["error"]["message"] == NOT_AUTHENTICATED


def test_read_only_is_refused_a_post_on_the_first_and_the_cached_request(
    store: LocalTokenStore, client_for: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = client_for(store)
    issued = store.issue(user_name="ci", ttl=DAY, read_only=True, scopes=["items:write"])
    for _ in range(2):  # a cache miss, then a hit
        status, body = client.request("POST", issued.token)
        assert status == 403
        assert body["error"]["message"] == "this token allows only GET, HEAD, OPTIONS requests"
        assert client.request("GET", issued.token) == (200, {"user": "ci"})
    assert client.hits() >= 3
    assert "reason: read-only" in caplog.text
    assert issued.token not in caplog.text


def test_allowed_networks_hold_on_cache_hits_and_ipv4_mapped_clients(
    store: LocalTokenStore, client_for: Callable[..., Client]
) -> None:
    client = client_for(store)
    issued = store.issue(user_name="ci", ttl=DAY, allowed_ips=["10.0.0.0/8", "2001:db8::/32"])
    for _ in range(2):
        assert client.request("GET", issued.token, "10.1.2.3")[0] == 200
        status, body = client.request("GET", issued.token, "192.0.2.1")
        assert status == 403
        assert body["error"]["message"] == "this token may not be used from this address"
        assert client.request("GET", issued.token, "::ffff:10.9.9.9")[0] == 200
        assert client.request("GET", issued.token, "::ffff:192.0.2.1")[0] == 403
        assert client.request("GET", issued.token, "2001:db8::1")[0] == 200
    assert client.hits() >= 5


def test_scopes_reach_the_apps_policy_rules(
    store: LocalTokenStore, client_for: Callable[..., Client]
) -> None:
    client = client_for(store)
    writer = store.issue(user_name="w", ttl=DAY, scopes=["items:read", "items:write"])
    reader = store.issue(user_name="r", ttl=DAY, scopes=["items:read"])
    unscoped = store.issue(user_name="u", ttl=DAY, roles=["admin"])
    for _ in range(2):
        assert client.request("POST", writer.token)[0] == 200
        assert client.request("POST", reader.token) == (403, {"app": "no items:write scope"})
        assert client.request("POST", unscoped.token)[0] == 403  # no scopes: passes no check


def test_the_idle_deadline_holds_on_cache_hits_and_uses_move_it(
    store: LocalTokenStore,
    client_for: Callable[..., Client],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client = client_for(store)
    issued = store.issue(user_name="ci", ttl=30 * DAY, idle_ttl=600)
    assert client.request("GET", issued.token)[0] == 200  # validated: the deadline is +600
    for _ in range(4):  # cache hits, each a use
        clock.advance(290)
        assert client.request("GET", issued.token)[0] == 200
    clock.advance(599)
    assert client.request("GET", issued.token)[0] == 200  # 599 s after the last use
    clock.advance(600)
    answer = client.request("GET", issued.token)
    assert refused_401(answer), answer
    assert "reason: idle" in caplog.text


def test_every_reason_gets_the_same_generic_401_and_its_name_in_the_logs(
    make_store: MakeStore,
    client_for: Callable[..., Client],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    store = make_store()
    client = client_for(store)
    expired = store.issue(user_name="e", ttl=60)
    revoked = store.issue(user_name="v", ttl=DAY)
    rotated = store.issue(user_name="r", ttl=DAY)
    idle = store.issue(user_name="i", ttl=30 * DAY, idle_ttl=600)
    old = store.issue(user_name="o", ttl=30 * DAY)
    for issued in (expired, revoked, rotated, idle, old):
        assert client.request("GET", issued.token)[0] == 200
    new = store.rotate(rotated.id, grace=120)
    store.revoke(revoked.id)
    clock.advance(601)
    from authmw.store._tokens import new_token

    unknown = client.request("GET", new_token())
    assert refused_401(unknown)
    for issued, reason in (
        (expired, "expired"),
        (revoked, "revoked"),
        (rotated, "rotated"),
        (idle, "idle"),
    ):
        assert client.request("GET", issued.token) == unknown, reason
        assert f"(reason: {reason})" in caplog.text, reason
    assert client.request("GET", old.token)[0] == 200
    store.set_policy(max_lifetime=60)
    assert client.request("GET", old.token) == unknown
    assert "(reason: policy)" in caplog.text
    assert client.request("GET", new.token) == unknown  # its record is older than 60 s too
    for issued in (expired, revoked, rotated, idle, old, new):
        assert issued.token not in caplog.text
