"""Audit records, failed-attempt throttling, trusted proxies and tracing."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from typing import Any

import pytest
from helpers import (
    BAD,
    GOOD,
    ASGIRecorder,
    Counting,
    WSGIRecorder,
    call_asgi,
    call_wsgi,
    environ,
    full_identity,
    http_scope,
)

from authmw import ASGIAuthMiddleware, AuthCore, ConfigurationError, Throttle, WSGIAuthMiddleware
from authmw._clients import ClientAddresses
from authmw.audit import AuditRecord, JSONLinesAudit, cadf


def wsgi(**options: Any) -> tuple[WSGIAuthMiddleware, Counting]:
    validator = Counting({GOOD: full_identity()})
    return WSGIAuthMiddleware(WSGIRecorder(), validator, **options), validator


def get(middleware: Any, token: str | None, client: str = "192.0.2.10", **extra: Any) -> int:
    headers = [("X-Auth-Token", token)] if token else []
    headers += list(extra.pop("headers", []))
    return call_wsgi(middleware, environ(headers=headers, REMOTE_ADDR=client, **extra)).code


# -- audit ----------------------------------------------------------------------------------------


def test_one_record_per_decision_without_the_token() -> None:
    records: list[AuditRecord] = []
    middleware, _ = wsgi(on_decision=records.append, public_routes=["GET /healthz"])
    request_id = [("X-OpenStack-Request-ID", "req-42")]
    assert get(middleware, GOOD, headers=request_id) == 200
    assert get(middleware, GOOD) == 200
    assert get(middleware, BAD) == 401
    assert get(middleware, None) == 401
    assert get(middleware, None, PATH_INFO="/healthz") == 200
    assert [r.outcome for r in records] == ["allowed", "allowed", "rejected", "rejected", "public"]
    first, second, bad = records[0], records[1], records[2]
    assert (first.cached, second.cached) == (False, True)
    assert first.user_id == "u-123" and first.project_id == "p-456"
    assert first.audit_id == "audit-1" and first.request_id == "req-42"
    assert first.client == "192.0.2.10" and first.method == "GET" and first.path == "/"
    assert first.roles == ("Member", "reader", "Admin")
    assert bad.status == 401 and bad.user_id is None and bad.token is not None
    assert records[4].latency_ms == 0.0  # nothing to decide on a public route
    assert len(bad.token) == 8
    for record in records:
        text = json.dumps(record.as_dict())
        assert GOOD not in text and BAD not in text


async def test_async_hooks_and_the_asgi_middleware() -> None:
    records: list[AuditRecord] = []

    async def hook(record: AuditRecord) -> None:
        records.append(record)

    middleware = ASGIAuthMiddleware(
        ASGIRecorder(), validator=Counting({GOOD: full_identity()}), on_decision=hook
    )
    for token in (GOOD, GOOD, BAD):
        await call_asgi(middleware, http_scope(headers=[(b"x-auth-token", token.encode())]))
    await asyncio.sleep(0.01)  # the hook's tasks run
    assert [(r.outcome, r.cached) for r in records] == [
        ("allowed", False),
        ("allowed", True),
        ("rejected", False),
    ]


def test_a_failing_hook_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def broken(record: AuditRecord) -> None:
        raise RuntimeError("audit store down")

    middleware, _ = wsgi(on_decision=broken)
    assert get(middleware, GOOD) == 200
    assert get(middleware, GOOD) == 200
    assert len([r for r in caplog.records if "on_decision" in r.getMessage()]) == 1


def test_json_lines_and_cadf() -> None:
    stream = io.StringIO()
    middleware, _ = wsgi(on_decision=JSONLinesAudit(stream=stream, format=cadf))
    get(middleware, GOOD)
    get(middleware, BAD)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["outcome"] for e in events] == ["success", "failure"]
    assert events[0]["initiator"]["id"] == "u-123"
    assert events[1]["reason"]["reasonCode"] == "401"
    assert events[0]["typeURI"] == "http://schemas.dmtf.org/cloud/audit/1.0/event"
    assert GOOD not in stream.getvalue() and BAD not in stream.getvalue()


def test_close_closes_only_a_file_it_opened(tmp_path: Any) -> None:
    stream = io.StringIO()
    JSONLinesAudit(stream=stream).close()
    assert not stream.closed  # e.g. sys.stdout, which the caller still writes to
    path = tmp_path / "audit.jsonl"
    audit = JSONLinesAudit(str(path))
    nothing = dict.fromkeys(("status", "client", "request_id", "token", "audit_id", "user_id"))
    nothing |= dict.fromkeys(("user_name", "project_id", "domain_id", "service_user_id"))
    record = AuditRecord(
        time=0.0,
        outcome="public",
        reason="",
        method="GET",
        path="/",
        roles=(),
        cached=False,
        latency_ms=0.0,
        **nothing,
    )
    audit(record)
    audit.close()
    assert json.loads(path.read_text())["outcome"] == "public"
    with pytest.raises(ValueError, match="closed file"):
        audit(record)


# -- throttling -----------------------------------------------------------------------------------


def in_one_window() -> float:
    """A clock 30 s into a 60 s window: a flood never straddles two budgets."""
    return 1_000_030.0


def test_a_flood_of_bad_tokens_costs_at_most_the_budget() -> None:
    middleware, validator = wsgi(throttle=Throttle(failures=5, clock=in_one_window))
    assert get(middleware, GOOD) == 200  # cached from now on
    statuses = [get(middleware, f"bad-token-{n:04d}-xxxxxxxx") for n in range(50)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert len(validator.calls) == 1 + 5  # the good token, then the budget
    headers = [("X-Auth-Token", "another-bad-token-000")]
    response = call_wsgi(middleware, environ(REMOTE_ADDR="192.0.2.10", headers=headers))
    assert response.code == 429 and int(response.header("Retry-After") or 0) >= 1
    assert get(middleware, GOOD) == 200  # its cached token keeps working
    assert get(middleware, "bad-token-from-elsewhere-0", client="198.51.100.7") == 401
    assert get(middleware, GOOD, client="198.51.100.7") == 200


def test_successes_and_outages_do_not_use_the_budget() -> None:
    validator = Counting({f"good-token-{n:04d}-xxxxxx": full_identity() for n in range(20)})
    middleware = WSGIAuthMiddleware(WSGIRecorder(), validator, throttle=Throttle(failures=2))
    for n in range(20):
        assert get(middleware, f"good-token-{n:04d}-xxxxxx") == 200


def test_requests_the_validator_never_sees_do_not_use_the_budget() -> None:
    # No token, or only a malformed one: 401 without asking the validator. A browser
    # polling before its user logs in must not be locked out of logging in.
    middleware, validator = wsgi(throttle=Throttle(failures=2, clock=in_one_window))
    assert [get(middleware, None) for _ in range(5)] == [401] * 5
    assert [get(middleware, "x" * 5000) for _ in range(5)] == [401] * 5
    assert [get(middleware, "two words") for _ in range(5)] == [401] * 5
    assert validator.calls == []
    assert get(middleware, GOOD) == 200  # validated: the budget is untouched
    assert [get(middleware, f"bad-{n}-xxxxxxxxxxxx") for n in range(3)] == [401, 401, 429]


def test_concurrent_floods_stay_within_the_budget() -> None:
    middleware, validator = wsgi(throttle=Throttle(failures=10, clock=in_one_window))
    barrier = threading.Barrier(8)

    def flood(worker: int) -> None:
        barrier.wait()
        for n in range(20):
            get(middleware, f"bad-{worker}-{n:03d}-xxxxxxxxxxxx")

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(validator.calls) <= 10


def test_throttle_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"^failures: "):
        Throttle(failures=0)
    with pytest.raises(ConfigurationError, match=r"^throttle: "):
        AuthCore(Counting(), throttle={"failures": 3})  # type: ignore[arg-type]


# -- trusted proxies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.0.0.9", "198.51.100.1"),  # trusted hops skipped
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),  # spoofed left part
        ("10.0.0.2", "10.0.0.7, 10.0.0.9", "10.0.0.7"),  # all trusted: the leftmost
        ("10.0.0.2", "not-an-address, 10.0.0.9", "10.0.0.9"),
        ("::ffff:10.0.0.2", "::ffff:198.51.100.1", "198.51.100.1"),  # IPv4-mapped
        ("10.0.0.2", None, "10.0.0.2"),
    ],
)
def test_client_addresses(peer: str, forwarded: str | None, client: str) -> None:
    assert ClientAddresses(["10.0.0.0/8"]).client(peer, forwarded) == client


def test_without_trusted_proxies_the_forwarded_header_is_never_believed() -> None:
    assert ClientAddresses([]).client("10.0.0.2", "198.51.100.1") == "10.0.0.2"
    with pytest.raises(ConfigurationError, match=r"^trusted_proxies: "):
        AuthCore(Counting(), trusted_proxies=["10.0.0.0/33"])


def test_throttling_counts_the_client_behind_a_trusted_proxy() -> None:
    middleware, _ = wsgi(
        throttle=Throttle(failures=2, clock=in_one_window), trusted_proxies=["10.0.0.0/8"]
    )

    def via_proxy(token: str, client: str) -> int:
        return get(middleware, token, client="10.0.0.2", headers=[("X-Forwarded-For", client)])

    assert [via_proxy(f"bad-a-{n}-xxxxxxxxxxxxx", "198.51.100.1") for n in range(3)] == [
        401,
        401,
        429,
    ]
    assert via_proxy("bad-b-0-xxxxxxxxxxxxx", "198.51.100.2") == 401  # another client
