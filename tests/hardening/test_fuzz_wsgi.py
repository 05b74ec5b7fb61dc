"""Property-based fuzzing of the WSGI middleware with hostile environs.

Each example builds the environ a WSGI server would build from random
headers (forged identity headers in every spelling, duplicates, NUL,
control characters, 1 MB values, thousands of headers), a random method
and a random path, and checks: no exception and no 500, the app sees no
identity the validator did not return for the token the request carried,
no forged identity header reaches the app, public routes are taken only for
paths that resolve to a public route, and no token reaches a log record.
"""

from __future__ import annotations

import io
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from authmw import WSGIAuthMiddleware
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
    FuzzValidator,
    all_logs,
    assert_no_token_in_logs,
    check_identity,
    expected_identity_headers,
    header_lists,
    methods,
    publicly_routable,
    raw_paths,
    resolve,
)

_STRIPPED_KEYS = frozenset(h.STRIPPED_ENVIRON_KEYS)


def _wsgi_str(value: str) -> str:
    """A header value as a WSGI server hands it over: bytes decoded as latin-1."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value


def build_environ(
    method: str, raw_path: str, headers: list[tuple[str, str]], script_name: str, raw_uri: bool
) -> dict[str, Any]:
    from urllib.parse import unquote

    path, _, query = raw_path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if raw_uri:
        environ["RAW_URI"] = script_name + raw_path
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        value = _wsgi_str(value)
        # Servers fold repeated headers into one comma-separated value.
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


class Recorder:
    """A WSGI app that remembers the environ it was called with."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.seen = dict(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]


_SHARED: dict[tuple[bool, int], tuple[WSGIAuthMiddleware, Recorder]] = {}


def middleware(delayed: bool, fresh: bool) -> tuple[WSGIAuthMiddleware, Recorder]:
    """A new middleware, or one kept across examples (its caches fill up)."""
    key = (delayed, 0)
    if fresh or key not in _SHARED:
        app = Recorder()
        mw = WSGIAuthMiddleware(
            app,
            validator=FuzzValidator(),
            delay_auth_decision=delayed,
            public_routes=PUBLIC_ROUTES,
            failure_threshold=1_000_000,  # keep the breaker out of the oracle
        )
        if fresh:
            return mw, app
        _SHARED[key] = (mw, app)
    return _SHARED[key]


def run(mw: WSGIAuthMiddleware, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        assert not started, "start_response called twice"
        started.append((status, headers))
        return lambda data: None

    body = b"".join(mw(environ, start_response))
    assert len(started) == 1
    status, headers = started[0]
    for name, value in headers:
        assert name.isascii() and "\n" not in name + value and "\r" not in name + value
    return status, dict(headers), body


@FUZZ
@given(
    method=methods,
    raw_path=raw_paths,
    headers=header_lists(),
    script_name=st.sampled_from(["", "", "/mnt", "/healthz", "/static/.."]),
    raw_uri=st.booleans(),
    delayed=st.booleans(),
    fresh=st.booleans(),
)
def test_wsgi_middleware_survives_hostile_requests(
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    script_name: str,
    raw_uri: bool,
    delayed: bool,
    fresh: bool,
) -> None:
    mw, app = middleware(delayed, fresh)
    app.seen = None
    environ = build_environ(method, raw_path, headers, script_name, raw_uri)
    token_raw = environ.get("HTTP_X_AUTH_TOKEN")
    service_raw = environ.get("HTTP_X_SERVICE_TOKEN")
    path_info = environ["PATH_INFO"]

    with all_logs() as logs:
        status, response_headers, body = run(mw, environ)
    assert_no_token_in_logs(logs, SECRET_TOKENS)

    code = int(status[:3])
    assert code in (200, 400, 401, 503), status
    seen = app.seen
    if seen is None:
        assert not delayed, "delayed mode must never reject"
        assert code in (400, 401, 503)
        if code == 401:
            assert response_headers["WWW-Authenticate"].startswith("Keystone ")
        if code == 503:
            assert int(response_headers["Retry-After"]) >= 1
        return

    assert code == 200 and body == b"app"
    public = h.environ_key(h.IDENTITY_STATUS) not in seen
    identity = seen["authmw.identity"]
    if public:
        assert identity is None
        assert publicly_routable(method, resolve(path_info)), (
            f"{method} {path_info!r} treated as public"
        )
    elif not delayed:
        assert identity is not None, "normal mode called the app without an identity"

    check_identity(identity, [token_raw] if token_raw is not None else [])
    service = seen.get("authmw.service_identity")
    check_identity(service, [service_raw] if service_raw is not None else [])

    got = {key: value for key, value in seen.items() if key in _STRIPPED_KEYS}
    for value in got.values():
        assert FORGED not in value, f"forged identity header reached the app: {got}"
    facts = {
        "service_status": seen.get(h.environ_key(h.SERVICE_IDENTITY_STATUS)),
        "service_identity": service,
    }
    expected = {
        h.environ_key(name): value.encode("utf-8").decode("latin-1")
        for name, value in expected_identity_headers(facts, identity, public).items()
    }
    assert got == expected

    # Liveness: a request with exactly one good token and nothing odd is accepted.
    if (
        not public
        and service_raw is None
        and token_raw is not None
        and token_raw.strip() in (GOOD, GOOD2, ODD)
    ):
        assert identity is IDENTITIES[token_raw.strip()]


@FUZZ
@given(
    token=st.sampled_from([OUTAGE, BUGGY]),
    padding=st.sampled_from(["", " ", "\t"]),
    delayed=st.booleans(),
)
def test_wsgi_outage_and_validator_bugs_are_503_never_500(
    token: str, padding: str, delayed: bool
) -> None:
    mw, app = middleware(delayed, fresh=True)
    environ = build_environ("GET", "/admin", [("X-Auth-Token", padding + token)], "", True)
    with all_logs() as logs:
        status, headers, _ = run(mw, environ)
    assert_no_token_in_logs(logs, SECRET_TOKENS)
    if delayed:
        assert status.startswith("200") and app.seen is not None
        assert app.seen["HTTP_X_IDENTITY_STATUS"] == "Invalid"
        assert app.seen["authmw.identity"] is None
    else:
        assert status.startswith("503") and app.seen is None
        assert "Retry-After" in headers
