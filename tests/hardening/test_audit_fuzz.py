"""Audit records over hostile requests: exactly one per request, none holding a token.

Random methods, paths (public and not) and header lists (every token in
every spelling, duplicates, forged identity headers) go through the WSGI and
the ASGI middleware with an ``on_decision`` hook, in normal and delayed
mode; every outcome occurs (allowed, public, rejected, unavailable). Each
request yields exactly one :class:`~authmw.audit.AuditRecord`, and no
record, rendered as JSON, holds any of the secret tokens.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.audit import AuditRecord

from ._support import (
    FUZZ,
    GOOD,
    OUTAGE,
    PUBLIC_ROUTES,
    SECRET_TOKENS,
    FuzzValidator,
    header_lists,
    methods,
    raw_paths,
)
from .test_fuzz_wsgi import build_environ, run

OUTCOMES: set[str] = set()


def records_json(records: list[AuditRecord]) -> str:
    return json.dumps([r.as_dict() for r in records])


def check(records: list[AuditRecord]) -> None:
    assert len(records) == 1, records
    text = records_json(records)
    for token in SECRET_TOKENS:
        assert token not in text, "a token reached an audit record"
    OUTCOMES.add(records[0].outcome)


@FUZZ
@given(
    method=methods,
    raw_path=raw_paths,
    headers=header_lists(),
    delayed=st.booleans(),
)
@example(method="GET", raw_path="/healthz", headers=[], delayed=False)
@example(method="GET", raw_path="/a", headers=[("X-Auth-Token", GOOD)], delayed=False)
@example(method="GET", raw_path="/a", headers=[("X-Auth-Token", "nope")], delayed=False)
@example(method="GET", raw_path="/a", headers=[("X-Auth-Token", OUTAGE)], delayed=False)
def test_one_record_per_wsgi_request(
    method: str, raw_path: str, headers: list[tuple[str, str]], delayed: bool
) -> None:
    records: list[AuditRecord] = []
    mw = WSGIAuthMiddleware(
        lambda env, start: (start("200 OK", []), [b"app"])[1],
        validator=FuzzValidator(),
        delay_auth_decision=delayed,
        public_routes=PUBLIC_ROUTES,
        on_decision=records.append,
        failure_threshold=1_000_000,
    )
    run(mw, build_environ(method, raw_path, headers, "", False))
    check(records)


@FUZZ
@given(method=methods, raw_path=raw_paths, headers=header_lists(), delayed=st.booleans())
@example(method="GET", raw_path="/static/app.js", headers=[], delayed=True)
def test_one_record_per_asgi_request(
    method: str, raw_path: str, headers: list[tuple[str, str]], delayed: bool
) -> None:
    records: list[AuditRecord] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    mw = ASGIAuthMiddleware(
        app,
        validator=FuzzValidator(),
        delay_auth_decision=delayed,
        public_routes=PUBLIC_ROUTES,
        on_decision=records.append,
        failure_threshold=1_000_000,
    )
    path, _, query = raw_path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": [
            (n.lower().encode("latin-1", "replace"), v.encode("utf-8", "replace"))
            for n, v in headers
        ],
        "client": ("127.0.0.1", 1234),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    asyncio.run(mw(scope, receive, send))
    check(records)


def test_every_outcome_occurred() -> None:
    # The properties above ran first (file order); their explicit examples
    # guarantee each outcome, random requests add more of each.
    assert {"allowed", "public", "rejected", "unavailable"} <= OUTCOMES, OUTCOMES
