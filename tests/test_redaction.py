"""Log redaction: no token of any shape survives httpx's and httpcore's own log lines.

httpcore logs response header lists at DEBUG as the ``repr`` of a list of
bytes tuples. ``repr`` picks its quotes from the content: ``b'...'``
normally, ``b"..."`` when the bytes hold ``'`` but no ``"``, and ``b'...'``
with ``\\'`` escapes when they hold both; a backslash becomes ``\\\\`` and a
byte outside printable ASCII ``\\xNN`` (or ``\\t``). httpx logs each request
line at INFO, and a v2.0 validation puts the token in the path
(``/v2.0/tokens/{token}``, percent-encoded by authmw, not by a user's own
code).

The tests drive real httpx/httpcore logging at DEBUG against a real loopback
server that echoes the token in its answer's headers, as Keystone does, and
check each record with an oracle written independently of authmw's code.
"""

from __future__ import annotations

import ast
import logging
import re
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hardening._identity_server import Answer, IdentityServer
from hypothesis import given, settings
from hypothesis import strategies as st

from authmw import InvalidToken, KeystoneV2Validator, KeystoneValidator
from authmw._hashing import fingerprint
from authmw.client._base import install_log_redaction, redact

SECRET_HEADERS = ("X-Subject-Token", "X-Auth-Token", "Authorization")


def piece() -> str:
    return secrets.token_hex(6)  # 12 characters: finding one by chance is impossible


def hostile_tokens() -> list[str]:
    """Token shapes that trip quote-based redaction, and very short ones."""
    a, b, c, d = piece(), piece(), piece(), piece()
    return [
        f"{a}'{b}\"{c}\\{d}",  # both quotes: repr escapes the ' as \'
        f"{a}'{b}",  # only ': repr switches to double quotes
        f'{a}"{b}',
        f"{a}\\'{b}",  # a backslash before a quote
        f"{a}\\\\{b}\\",  # backslashes, one at the end
        f"{a}',b'{b}",  # looks like the next item of the tuple
        f"{a}'),(b'X-Other',b'{b}",
        f"{a}%27{b}%{c}%%",  # percent signs, an encoded quote
        f"{a}\\x41{b}",  # looks like an escape
        "'",
        '"',
        "\\",
        "%",
        "x",
        "'\"",
        "a'b\"c",
        "%41",
        "1234567",
    ]


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
    return texts


_PAIR = re.compile(r"\(b(['\"])(?P<name>[A-Za-z0-9-]+)\1, ", re.IGNORECASE)
_REDACTED_VALUE = re.compile(r"b(['\"])<redacted sha256:[0-9a-f]{8}>\1\)")


def assert_redacted(texts: list[str], tokens: list[str]) -> None:
    """Every secret header value and /tokens/ path segment is a digest; no piece of a token left."""
    assert any("x-subject-token" in t.lower() for t in texts), "no header line was logged"
    assert any("/tokens/" in t for t in texts), "no v2.0 request line was logged"
    for text in texts:
        for match in _PAIR.finditer(text):
            if match["name"].lower() in (h.lower() for h in SECRET_HEADERS):
                rest = text[match.end() :]
                assert _REDACTED_VALUE.match(rest), rest[:200]
        for at in (m.end() for m in re.finditer("/tokens/", text)):
            assert text[at:].startswith("<redacted sha256:"), text
        if "receive_response_headers.complete" in text:
            assert "(b'Connection', b'close')" in text  # the rest of the line is intact
        for token in tokens:
            for part in re.findall(r"[0-9a-f]{12}", token):
                assert part not in text, (token, text)


@pytest.fixture
def server() -> Iterator[IdentityServer]:
    with IdentityServer() as s:
        yield s


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of httpx and httpcore at DEBUG, as a handler on the root logger gets them."""
    install_log_redaction()
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield got
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def echo(token: str) -> tuple[tuple[str, str], ...]:
    """Answer headers that carry the token back, as Keystone's X-Subject-Token does."""
    return (
        ("Content-Type", "application/json"),
        ("X-Subject-Token", token),
        ("x-auth-token", token),
        ("Authorization", f"Bearer {token}"),
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_validators_debug_logs_hold_no_token_of_any_shape(
    server: IdentityServer, records: list[logging.LogRecord], mode: str
) -> None:
    tokens = hostile_tokens()
    service = f"{piece()}'svc\"{piece()}"
    v3 = KeystoneValidator(server.url + "/v3", static_token=service)
    v2 = KeystoneV2Validator(server.url + "/v2.0", static_token=service)
    try:
        for token in tokens:
            for validator in (v3, v2):
                server.answer = Answer(404, b'{"error": {"code": 404}}', echo(token))
                with pytest.raises(InvalidToken):
                    if mode == "sync":
                        validator.validate(token)
                    else:
                        await validator.avalidate(token)
    finally:
        await v3.aclose()
        await v2.aclose()
    assert_redacted(record_texts(records), [*tokens, service])


def test_a_users_own_httpx_calls_are_redacted_too(
    server: IdentityServer, records: list[logging.LogRecord]
) -> None:
    # A validator written by hand: the token is not percent-encoded in the path.
    tokens = hostile_tokens()
    with httpx.Client() as client:
        for token in tokens:
            server.answer = Answer(404, b"{}", echo(token))
            client.get(f"{server.url}/v2.0/tokens/{token}", headers={"X-Auth-Token": "admin"})
    assert_redacted(record_texts(records), tokens)


# -- redact() alone, over every token shape a header value can have --------------------------

# A header value: visible ASCII, space and tab inside, obs-text (0x80-0xFF).
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\x80\xff"),
    min_size=1,
    max_size=40,
).filter(lambda v: v.strip(" \t") == v)


def httpcore_line(headers: list[tuple[bytes, bytes]]) -> str:
    return "receive_response_headers.complete return_value=" + repr(
        (b"HTTP/1.1", 404, b"Not Found", headers)
    )


@settings(max_examples=500, deadline=None)
@given(
    token=header_values,
    name=st.sampled_from(["X-Subject-Token", "x-subject-token", "X-AUTH-TOKEN", "X-Service-Token"]),
    # A non-secret value holding "/tokens/" would be redacted from there on
    # (more than needed, never less); such values are not what this checks.
    other=header_values.filter(lambda v: "/tokens/" not in v.lower()),
)
def test_redact_replaces_exactly_the_secret_values_in_httpcore_lines(
    token: str, name: str, other: str
) -> None:
    headers = [
        (b"Content-Type", b"application/json"),
        (name.encode(), token.encode("latin-1")),
        (b"X-Other", other.encode("latin-1")),
        (b"Authorization", b"Bearer " + token.encode("latin-1")),
        (b"Content-Length", b"2"),
    ]
    redacted = redact(httpcore_line(headers))
    prefix = "receive_response_headers.complete return_value="
    assert redacted.startswith(prefix)
    _, _, _, seen = ast.literal_eval(redacted[len(prefix) :])
    digest = f"<redacted sha256:{fingerprint(token)}>".encode()
    assert seen == [
        (b"Content-Type", b"application/json"),
        (name.encode(), digest),
        (b"X-Other", other.encode("latin-1")),  # not a secret header: untouched
        (b"Authorization", digest),  # the credential's digest, as authmw logs it
        (b"Content-Length", b"2"),
    ]


BASE = "http://127.0.0.1:5000/v2.0/tokens/"


@settings(max_examples=500, deadline=None)
@given(token=header_values, query=st.sampled_from(["", "?belongsTo=5830345"]))
def test_redact_replaces_the_token_in_httpx_request_lines(token: str, query: str) -> None:
    # As authmw's v2.0 validator sends it: percent-encoded, one path segment.
    line = f'HTTP Request: GET {BASE}{quote(token, safe="")}{query} "HTTP/1.1 404 X"'
    digest = f"<redacted sha256:{fingerprint(token)}>"
    assert redact(line) == f'HTTP Request: GET {BASE}{digest}{query} "HTTP/1.1 404 X"'
    # As a hand-written validator sends it: httpx encodes only what it must.
    # httpx refuses a tab; "/?#" and dot segments ("." "..") change the URL itself.
    if not set("/?#\t") & set(token) and token.strip("."):
        url = str(httpx.URL(BASE + token))
        line = f'HTTP Request: GET {url}{query} "HTTP/1.1 404 X"'
        pattern = re.escape(BASE) + r"<redacted sha256:[0-9a-f]{8}>" + re.escape(query)
        assert re.fullmatch(f'HTTP Request: GET {pattern} "HTTP/1.1 404 X"', redact(line))


def test_redaction_is_importable_from_its_old_place_and_its_own_module() -> None:
    from authmw import _redaction
    from authmw.client import _base

    assert _base.redact is _redaction.redact
    assert _base.install_log_redaction is _redaction.install_log_redaction


def test_an_unrelated_line_is_left_alone() -> None:
    line = "receive_response_headers.complete return_value=(b'HTTP/1.1', 200, b'OK', [])"
    assert redact(line) == line
    assert redact("GET /v3/auth/tokens?nocatalog= 200") == "GET /v3/auth/tokens?nocatalog= 200"
