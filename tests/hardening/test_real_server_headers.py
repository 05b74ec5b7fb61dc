"""Forged identity headers and hostile token headers through real gunicorn and uvicorn.

Random header lists (every identity header in random spellings, duplicates,
raw bytes, huge values, token headers repeated or mangled) are written on a
socket. The server parses what it accepts and refuses the rest; whatever
reaches the echo app must hold no forged identity header and no identity
but the one of the single token the request carried.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from authmw import Identity
from authmw import headers as h
from loadtest.servers import Server, raw_request

from ._support import FORGED, FUZZ, fold, header_lists, token_parts

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\x20-\x7e\x80-\xff]{0,8000}")

GOOD = "rh" + secrets.token_urlsafe(24)
FIELDS = {"user_id": "u-good", "project_id": "p-1", "project_name": "proj", "roles": ["member"]}
RENDERED = dict(h.rendered(Identity(**FIELDS)))  # type: ignore[arg-type]
KINDS = ("gunicorn", "uvicorn", "gunicorn-delayed", "uvicorn-delayed")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    workdir = tmp_path_factory.mktemp("headers")
    started: dict[str, Server] = {}
    try:
        for name in KINDS:
            config = {
                "validator": "memory",
                "tokens": {GOOD: FIELDS},
                "options": {"delay_auth_decision": name.endswith("-delayed")},
            }
            server = Server(name.split("-")[0], config, workdir, threads=4)
            server.start()
            started[name] = server
        yield started
    finally:
        for server in started.values():
            server.stop()


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def identity_headers_seen(kind: str, seen: dict[str, Any]) -> dict[str, str]:
    """Canonical (folded) identity header name -> value, as the app saw them."""
    out: dict[str, str] = {}
    if kind.startswith("gunicorn"):
        for key, value in seen["identity_headers"].items():
            out[key[5:].lower().replace("_", "-")] = value.encode("latin-1").decode("utf-8")
    else:
        for key, values in seen["identity_headers"].items():
            assert len(values) == 1, f"duplicate identity header {key}: {values}"
            out[key] = values[0].encode("latin-1").decode("utf-8")
    return out


def headers_read(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (name, value) pairs a server reads when they are written one per line:
    a value that ends in CR LF, or holds CR LF CR LF, ends the header block there
    (what follows is the body of a GET without length, never read)."""
    read: list[tuple[str, str]] = []
    for name, value in headers:
        end = (value + "\r\n").find("\r\n\r\n")
        read.append((name, value if end == -1 else value[:end]))
        if end != -1:
            break
    return read


def test_a_blank_line_in_a_value_ends_the_headers_read() -> None:
    sent = [("X-Auth-Token", "\r\n"), ("X-Auth-Token", GOOD)]
    assert headers_read(sent) == [("X-Auth-Token", "")]
    assert headers_read([("A", "x\r\n\r\ny"), ("B", "z")]) == [("A", "x")]
    assert headers_read([("A", "x\r\ny"), ("B", "z")]) == [("A", "x\r\ny"), ("B", "z")]


@FUZZ.__class__(FUZZ, max_examples=min(FUZZ.max_examples, 150))
@given(
    kind=st.sampled_from(KINDS),
    headers=header_lists(),
    with_good=st.booleans(),
    clean=st.booleans(),
)
def test_no_forged_header_or_foreign_identity_through_real_servers(
    servers: dict[str, Server],
    kind: str,
    headers: list[tuple[str, str]],
    with_good: bool,
    clean: bool,
) -> None:
    if clean:
        # Only what both servers accept, so that more requests reach the middleware.
        headers = [(n, v) for n, v in headers if _TOKEN.fullmatch(n) and _VALUE.fullmatch(v)]
    if with_good:
        headers = [*headers, ("X-Auth-Token", GOOD)]
    data = b"GET /items HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for name, value in headers:
        data += _encode(name) + b": " + _encode(value) + b"\r\n"
    status, head, body = raw_request(servers[kind].port, data + b"\r\n")
    event(f"{kind} answered {status}")
    headers = headers_read(headers)

    assert status not in (0, 500), (status, head, body[:300])
    delayed = kind.endswith("-delayed")
    if status != 200:
        allowed = {400, 413, 414, 431} | (set() if delayed else {401})
        assert status in allowed, (status, head)
        return
    seen = json.loads(body)
    got = identity_headers_seen(kind, seen)
    for value in got.values():
        assert FORGED not in value, f"forged identity header reached the app: {got}"

    # The tokens the middleware got (gunicorn drops header names holding "_",
    # its header_map=drop).
    def received(header: str) -> list[str]:
        return [
            v
            for n, v in headers
            if fold(n) == header and not (kind.startswith("gunicorn") and "_" in n)
        ]

    token_values = received("x-auth-token")
    service_status = got.pop(fold(h.SERVICE_IDENTITY_STATUS), None)
    if received("x-service-token"):
        assert service_status in ("Confirmed", "Invalid")
        if service_status == "Confirmed":
            for name, value in h.rendered(Identity(**FIELDS), service=True):  # type: ignore[arg-type]
                assert got.pop(fold(name)) == value
    else:
        assert service_status is None
    if seen["identity"] is not None:
        assert seen["identity"] == {"user_id": "u-good", "project_id": "p-1"}
        assert token_parts(token_values) == {GOOD}  # exactly one distinct token, GOOD
        expected = {fold(n): v for n, v in RENDERED.items()}
        expected[fold(h.IDENTITY_STATUS)] = "Confirmed"
    else:
        assert delayed, "normal mode let a request through without an identity"
        assert token_parts(token_values) != {GOOD}, "a good token was not accepted"
        expected = {fold(h.IDENTITY_STATUS): "Invalid"}
    assert got == expected


@pytest.mark.parametrize("token", [GOOD, None, "bad-token-0123456789"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_forged_header_in_three_spellings(
    servers: dict[str, Server], kind: str, token: str | None
) -> None:
    data = b"GET /items HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token is not None:
        data += b"X-Auth-Token: " + token.encode() + b"\r\n"
    for name in sorted(h.STRIPPED_HEADERS):
        for spelling in (name, name.lower(), name.upper().replace("-", "_")):
            data += f"{spelling}: {FORGED}-{spelling}\r\n".encode()
    status, head, body = raw_request(servers[kind].port, data + b"\r\n")
    if token != GOOD and not kind.endswith("-delayed"):
        assert status == 401, (status, head)
        return
    assert status == 200, (status, head)
    got = identity_headers_seen(kind, json.loads(body))
    assert FORGED not in json.dumps(got)
    assert got[fold(h.IDENTITY_STATUS)] == ("Confirmed" if token == GOOD else "Invalid")
