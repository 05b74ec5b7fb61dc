"""Property-based fuzzing of the ASGI middleware: ``http`` and ``websocket`` scopes.

Scopes are built by hand, not by a test client, so header lists can hold
what a lenient server might pass on: any case, ``_`` for ``-``, duplicates,
raw bytes, NUL, 1 MB values, thousands of entries. Same properties as the
WSGI fuzzing: nothing escapes, no 500, no identity the validator did not
return, no forged header, public routes only for paths that resolve to one,
no token in any log record. Websocket rejections are a 401/503 through the
denial-response extension when offered, a close before accept otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import given
from hypothesis import strategies as st

from authmw import ASGIAuthMiddleware
from authmw import headers as h

from ._support import (
    BUGGY,
    FORGED,
    FUZZ,
    GOOD,
    GOOD2,
    IDENTITIES,
    ODD,
    OUTAGE,
    PUBLIC_ROUTES,
    SECRET_TOKENS,
    AsyncFuzzValidator,
    FuzzValidator,
    all_logs,
    assert_no_token_in_logs,
    check_identity,
    expected_identity_headers,
    fold,
    header_lists,
    methods,
    publicly_routable,
    raw_paths,
    resolve,
)

_STRIPPED_FOLDED = frozenset(fold(n) for n in h.STRIPPED_HEADERS)


def _bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class Recorder:
    """An ASGI app that remembers its scope and answers 200 / accepts the websocket."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = dict(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
        else:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})


def build_scope(
    kind: str,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    root_path: str,
    denial_extension: bool,
) -> dict[str, Any]:
    path, _, query = raw_path.partition("?")
    raw = (root_path + path).encode("latin-1", "replace")
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": root_path + unquote(path, encoding="latin-1"),
        "raw_path": raw,
        "root_path": root_path,
        "query_string": query.encode("latin-1", "replace"),
        "headers": [(_bytes(name), _bytes(value)) for name, value in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
    }
    if kind == "http":
        scope["method"] = method
    else:
        scope["subprotocols"] = []
    return scope


async def drive(mw: ASGIAuthMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    if scope["type"] == "http":
        incoming = [{"type": "http.request", "body": b"", "more_body": False}]
    else:
        incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        return {"type": "http.disconnect" if scope["type"] == "http" else "websocket.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await mw(scope, receive, send)
    return sent


def middleware(delayed: bool, native_async: bool) -> tuple[ASGIAuthMiddleware, Recorder]:
    app = Recorder()
    validator = AsyncFuzzValidator() if native_async else FuzzValidator()
    mw = ASGIAuthMiddleware(
        app,
        validator=validator,
        delay_auth_decision=delayed,
        public_routes=PUBLIC_ROUTES,
        failure_threshold=1_000_000,
    )
    return mw, app


def _values(headers: list[tuple[bytes, bytes]], folded_name: str) -> list[str]:
    return [v.decode("latin-1") for n, v in headers if fold(n.decode("latin-1")) == folded_name]


def check_rejection(kind: str, denial: bool, sent: list[dict[str, Any]]) -> int:
    """Status of a rejection; checks its shape for http and both websocket paths."""
    if kind == "http" or denial:
        prefix = "http.response" if kind == "http" else "websocket.http.response"
        assert [m["type"] for m in sent] == [f"{prefix}.start", f"{prefix}.body"], sent
        status: int = sent[0]["status"]
        headers = dict(sent[0]["headers"])
        if status == 401:
            assert headers[b"www-authenticate"].startswith(b"Keystone ")
        elif status == 503:
            assert int(headers[b"retry-after"]) >= 1
        assert all(n == n.lower() and b"\n" not in v for n, v in sent[0]["headers"])
        return status
    assert [m["type"] for m in sent] == ["websocket.close"], sent
    assert sent[0]["code"] in (1008, 1013)
    return 401 if sent[0]["code"] == 1008 else 503


@FUZZ
@given(
    kind=st.sampled_from(["http", "websocket"]),
    method=methods,
    raw_path=raw_paths,
    headers=header_lists(),
    root_path=st.sampled_from(["", "", "/mnt", "/static"]),
    denial=st.booleans(),
    delayed=st.booleans(),
    native_async=st.booleans(),
)
def test_asgi_middleware_survives_hostile_requests(
    kind: str,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    root_path: str,
    denial: bool,
    delayed: bool,
    native_async: bool,
) -> None:
    mw, app = middleware(delayed, native_async)
    scope = build_scope(kind, method, raw_path, headers, root_path, denial)
    original_headers = list(scope["headers"])
    token_values = _values(scope["headers"], "x-auth-token")
    service_values = _values(scope["headers"], "x-service-token")

    with all_logs() as logs:
        sent = asyncio.run(drive(mw, scope))
    assert_no_token_in_logs(logs, SECRET_TOKENS)
    assert scope["headers"] == original_headers, "the server's scope was modified"

    seen = app.scope
    if seen is None:
        assert not delayed, "delayed mode must never reject"
        assert check_rejection(kind, denial, sent) in (400, 401, 503)
        return

    if kind == "http":
        assert sent[0]["status"] == 200
    else:
        assert sent[0]["type"] == "websocket.accept"

    seen_headers: list[tuple[bytes, bytes]] = seen["headers"]
    for name, value in seen_headers:
        assert isinstance(name, bytes) and isinstance(value, bytes)
    identity_headers: dict[str, list[str]] = {}
    for name, value in seen_headers:
        folded = fold(name.decode("latin-1"))
        if folded in _STRIPPED_FOLDED:
            assert name == name.lower(), "injected header names are lower-case"
            identity_headers.setdefault(folded, []).append(value.decode("utf-8"))
    for values in identity_headers.values():
        assert len(values) == 1, f"duplicate identity header reached the app: {identity_headers}"
        assert FORGED not in values[0], f"forged identity header reached the app: {values}"

    public = fold(h.IDENTITY_STATUS) not in identity_headers
    identity = seen["authmw.identity"]
    if public:
        assert identity is None
        effective_method = method if kind == "http" else "GET"
        app_path = seen["path"][len(root_path) :] if root_path else seen["path"]
        raw_app_path = seen["raw_path"].decode("latin-1")[len(root_path) :]
        for candidate in (app_path, raw_app_path):
            assert publicly_routable(effective_method, resolve(candidate)), (
                f"{effective_method} {candidate!r} treated as public"
            )
    elif not delayed:
        assert identity is not None, "normal mode called the app without an identity"

    check_identity(identity, token_values)
    service = seen.get("authmw.service_identity")
    check_identity(service, service_values)

    status_values = identity_headers.get(fold(h.SERVICE_IDENTITY_STATUS))
    facts = {
        "service_status": status_values[0] if status_values else None,
        "service_identity": service,
    }
    expected = {
        fold(name): value
        for name, value in expected_identity_headers(facts, identity, public).items()
    }
    assert {name: values[0] for name, values in identity_headers.items()} == expected

    joined = ",".join(token_values)
    if not public and not service_values and joined.strip() in (GOOD, GOOD2, ODD):
        assert identity is IDENTITIES[joined.strip()]


@FUZZ
@given(
    kind=st.sampled_from(["http", "websocket"]),
    token=st.sampled_from([OUTAGE, BUGGY]),
    denial=st.booleans(),
    delayed=st.booleans(),
    native_async=st.booleans(),
)
def test_asgi_outage_and_validator_bugs_are_503_never_500(
    kind: str, token: str, denial: bool, delayed: bool, native_async: bool
) -> None:
    mw, app = middleware(delayed, native_async)
    scope = build_scope(kind, "GET", "/admin", [("x-auth-token", token)], "", denial)
    with all_logs() as logs:
        sent = asyncio.run(drive(mw, scope))
    assert_no_token_in_logs(logs, SECRET_TOKENS)
    if delayed:
        assert app.scope is not None and app.scope["authmw.identity"] is None
        assert (b"x-identity-status", b"Invalid") in app.scope["headers"]
    else:
        assert app.scope is None
        assert check_rejection(kind, denial, sent) == 503


def test_lifespan_and_unknown_scopes_pass_through_untouched() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    mw = ASGIAuthMiddleware(app, validator=FuzzValidator())
    forged = [(b"x-roles", b"FORGED-admin")]
    for kind in ("lifespan", "custom"):
        scope = {"type": kind, "headers": list(forged)}
        asyncio.run(mw(scope, _never_receive, _never_send))
        assert seen[-1] is scope


async def _never_receive() -> dict[str, Any]:
    raise AssertionError("receive must not be called")


async def _never_send(message: MutableMapping[str, Any]) -> None:
    raise AssertionError("send must not be called")


def test_percent_encoded_raw_path_is_consistent_with_quote() -> None:
    # Sanity check of the scope builder the fuzzing relies on.
    scope = build_scope("http", "GET", quote("/a b"), [], "", False)
    assert scope["path"] == "/a b" and scope["raw_path"] == b"/a%20b"
