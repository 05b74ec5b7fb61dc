"""Throttling, audit records and tracing through nginx ``auth_request`` + ``authmw serve``
(uvicorn) + the real Keystone, with the shipped snippets.

Clients connect from distinct loopback addresses (127.0.0.2, 127.0.0.3: the
whole of 127/8 is the loopback on Linux), so nginx's ``$remote_addr`` tells
them apart; ``authmw serve`` believes nginx's ``X-Forwarded-For`` because
``trusted_proxies`` lists nginx's address (127.0.0.1).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._servers import REPO, Echo, Nginx
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


@pytest.mark.parametrize(
    ("audit_format", "to_stdout"), [("record", False), ("cadf", False), ("record", True)]
)
def test_one_audit_line_per_check_without_a_token(
    keystone: Any, gateway_stack: Stack, tmp_path: Path, audit_format: str, to_stdout: bool
) -> None:
    audit = tmp_path / "audit.jsonl"
    nginx, serve = gateway_stack(
        keystone_sections(
            keystone,
            trusted_proxies=[GATEWAY],
            audit_log="-" if to_stdout else str(audit),
            audit_format=audit_format,
        ),
        keystone_env(keystone),
    )
    member = keystone.issue_token("demo-user", project="demo-project")
    reader = keystone.issue_token("demo-reader", project="demo-project")
    bad = bad_token()
    checks = [
        ("/items", member, 200, "allowed"),
        ("/items?page=2", member, 200, "allowed"),  # from the cache
        ("/items", bad, 401, "rejected"),
        ("/items", None, 401, "rejected"),
        ("/healthz", None, 200, "public"),
        ("/admin/settings", reader, 403, "forbidden"),
    ]
    with client_from(nginx, ATTACKER) as client:
        for path, token, status, _ in checks:
            response = get(client, token, path, **{"X-OpenStack-Request-ID": f"req-{path}"})
            assert response.status_code == status, (path, response.text)
    text = serve.log.read_text() if to_stdout else audit.read_text()
    for token in (member, reader, bad):
        assert token not in text
    # On standard output (here the server's log), between uvicorn's and authmw's lines.
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not to_stdout:
        assert lines == text.splitlines()
    assert len(lines) == len(checks), lines
    records = [json.loads(line) for line in lines]
    member_id = keystone.user("demo-user")["id"]
    if audit_format == "record":
        assert [r["outcome"] for r in records] == [outcome for *_, outcome in checks]
        assert [r["status"] for r in records] == [None, None, 401, 401, None, 403]
        assert [r["cached"] for r in records[:2]] == [False, True]
        assert {r["client"] for r in records} == {ATTACKER}
        assert [r["path"] for r in records] == ["/items"] * 4 + ["/healthz", "/admin/settings"]
        assert records[0]["user_id"] == member_id and records[0]["user_name"] == "demo-user"
        assert records[0]["request_id"] == "req-/items"
        assert records[2]["token"] is not None and len(records[2]["token"]) == 8
        assert records[3]["token"] is None and records[4]["user_id"] is None
        assert records[5]["user_name"] == "demo-reader"  # who the route policy refused
    else:
        assert [r["reason"]["policyType"] for r in records] == [o for *_, o in checks]
        success = [status == 200 for _, _, status, _ in checks]
        assert [r["outcome"] == "success" for r in records] == success
        codes = [str(status) for _, _, status, _ in checks]
        assert [r["reason"]["reasonCode"] for r in records] == codes
        assert {r["initiator"]["host"]["address"] for r in records} == {ATTACKER}
        assert records[0]["initiator"]["id"] == member_id
        assert records[5]["initiator"]["name"] == "demo-reader"
        assert records[0]["requestId"] == "req-/items"


SITECUSTOMIZE = """
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

# What `opentelemetry-instrument` does, with the spans written to a file.
_out = open(os.environ["TEST_SPANS_FILE"], "a", buffering=1)
_provider = TracerProvider()
_provider.add_span_processor(
    SimpleSpanProcessor(
        ConsoleSpanExporter(out=_out, formatter=lambda span: span.to_json(indent=None) + "\\n")
    )
)
trace.set_tracer_provider(_provider)
"""


def test_a_check_continues_the_callers_trace_down_to_keystone(
    keystone: Any, gateway_stack: Stack, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    spans_file = tmp_path / "spans.jsonl"
    env = {
        **keystone_env(keystone),
        "PYTHONPATH": f"{site}:{REPO}",
        "TEST_SPANS_FILE": str(spans_file),
    }
    nginx, _ = gateway_stack(keystone_sections(keystone, tracing=True), env)
    token = keystone.issue_token("demo-user", project="demo-project")
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with client_from(nginx, ATTACKER) as client:
        traceparent = f"00-{trace_id}-{parent_id}-01"
        assert seen(get(client, token, traceparent=traceparent))
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    (check,) = [s for s in spans if s["name"] == "authmw.authenticate"]
    assert check["context"]["trace_id"] == "0x" + trace_id
    assert check["parent_id"] == "0x" + parent_id
    assert check["attributes"]["authmw.outcome"] == "allowed"
    assert check["attributes"]["authmw.cache"] == "miss"
    assert check["attributes"]["url.path"] == "/items"
    assert "enduser.id" not in check["attributes"]
    calls = [s for s in spans if s["parent_id"] == check["context"]["span_id"]]
    assert [s["name"] for s in calls] == ["GET identity service"]
    assert calls[0]["context"]["trace_id"] == "0x" + trace_id
    assert token not in spans_file.read_text()
