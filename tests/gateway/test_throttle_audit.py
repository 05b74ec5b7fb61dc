"""Throttling through nginx ``auth_request`` + ``authmw serve`` (uvicorn) + the real
Keystone, with the shipped snippets.

Clients connect from distinct loopback addresses (127.0.0.2, 127.0.0.3: the
whole of 127/8 is the loopback on Linux), so nginx's ``$remote_addr`` tells
them apart; ``authmw serve`` believes nginx's ``X-Forwarded-For`` because
``trusted_proxies`` lists nginx's address (127.0.0.1).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx

from ._servers import Echo, Nginx
from .conftest import Stack, keystone_env, keystone_sections
from .test_nginx import assert_error, seen

ATTACKER = "127.0.0.2"
OTHER = "127.0.0.3"
GATEWAY = "127.0.0.1"  # nginx's address as authmw serve sees it
BUDGET = 4
# A budget's window is fixed on the clock (time // window): a window of months
# keeps a flood from straddling two windows, which would give it a second budget.
WINDOW = 10_000_000


def throttled(keystone: Any, gateway: str = "nginx", **middleware: Any) -> dict[str, Any]:
    """Settings with a budget of BUDGET failures per client, nginx's address trusted."""
    throttle = {"failures": BUDGET, "window": WINDOW}
    return keystone_sections(
        keystone, gateway, trusted_proxies=[GATEWAY], throttle=throttle, **middleware
    )


def bad_token() -> str:
    """A token shaped like a Fernet token that Keystone has never issued (each one new)."""
    return "gAAAAAB" + secrets.token_urlsafe(138)


@contextmanager
def client_from(nginx: Nginx, address: str) -> Iterator[httpx.Client]:
    """A client connecting to nginx from ``address``."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=nginx.url, transport=transport, timeout=30) as client:
        yield client


def get(client: httpx.Client, token: str | None, path: str = "/items", **headers: str) -> Any:
    if token is not None:
        headers["X-Auth-Token"] = token
    return client.get(path, headers=headers)


def test_a_flood_of_bad_tokens_is_429_past_the_budget_and_costs_keystone_the_budget(
    keystone_disposable: Any, gateway_stack: Stack, echo: Echo
) -> None:
    keystone = keystone_disposable
    nginx, _ = gateway_stack(throttled(keystone), keystone_env(keystone))
    good = keystone.issue_token("demo-user", project="demo-project")
    other_good = keystone.issue_token("demo-reader", project="demo-project")
    with client_from(nginx, ATTACKER) as attacker, client_from(nginx, OTHER) as other:
        assert seen(get(attacker, good))  # validated once, cached from now on
        calls, passed = keystone.validation_count(), echo.count
        # Each with another X-Forwarded-For: nginx replaces it, authmw never believes it.
        flood = [
            get(attacker, bad_token(), **{"X-Forwarded-For": f"198.51.100.{n}"})
            for n in range(3 * BUDGET)
        ]
        assert [r.status_code for r in flood] == [401] * BUDGET + [429] * (2 * BUDGET)
        for response in flood[:BUDGET]:
            assert_error(response, 401)
            assert response.headers["www-authenticate"].startswith("Keystone ")
        for response in flood[BUDGET:]:
            error = assert_error(response, 429)
            assert "Too many" in error["message"]
            assert 1 <= int(response.headers["retry-after"]) <= WINDOW
            assert "www-authenticate" not in response.headers
        # Keystone was asked about the budget's tokens only: the 429s never reached it.
        assert keystone.validation_count() - calls == BUDGET
        assert echo.count == passed
        # The flooding client's cached token keeps working...
        assert seen(get(attacker, good))["x-user-name"] == ["demo-user"]
        # ...and claiming to be another client changes nothing.
        assert_error(get(attacker, bad_token(), **{"X-Forwarded-For": OTHER}), 429)
        # Another client has its own budget: a bad token is a plain 401, a good one passes.
        assert_error(get(other, bad_token()), 401)
        assert seen(get(other, other_good))["x-user-name"] == ["demo-reader"]
        assert keystone.validation_count() - calls == BUDGET + 2


def test_the_budget_is_shared_by_workers_through_redis(
    keystone_disposable: Any, gateway_stack: Stack, redis_url: str
) -> None:
    keystone = keystone_disposable
    sections = throttled(keystone)
    sections["serve"]["workers"] = 2
    sections["cache"] = {"redis_url": redis_url}
    env = {**keystone_env(keystone), "AUTHMW_REDIS_SECRET": secrets.token_hex(32)}
    nginx, _ = gateway_stack(sections, env)
    calls = keystone.validation_count()

    def flood(_: int) -> list[int]:  # concurrent: nginx opens connections to both workers
        with client_from(nginx, ATTACKER) as attacker:
            return [get(attacker, bad_token()).status_code for _ in range(BUDGET)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [status for batch in pool.map(flood, range(8)) for status in batch]
    assert sorted(statuses) == [401] * BUDGET + [429] * (7 * BUDGET)
    assert keystone.validation_count() - calls == BUDGET
