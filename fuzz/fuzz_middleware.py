"""Coverage-guided fuzz target: bytes -> one request through the WSGI and the ASGI middleware.

Run it with atheris (libFuzzer), bounded in time::

    pip install atheris
    mkdir -p .cache/fuzz-corpus
    python fuzz/fuzz_middleware.py -max_total_time=60 .cache/fuzz-corpus fuzz/corpus/middleware

(libFuzzer adds what it finds to the first directory; the committed seeds
stay as they are. A failing input is written to ``crash-<sha1>``; add it to
``fuzz/corpus/middleware`` once the bug is fixed, so the tests replay it.)

Without atheris, ``python fuzz/fuzz_middleware.py --replay DIR_OR_FILE...`` runs
inputs once (the tests replay the corpus and hypothesis-made bytes the same way).

The bytes are decoded into a request (flags, method, path, headers drawn from
a dictionary of identity-header spellings and tokens, or raw bytes); the
request goes through both middlewares, in normal or delayed mode, over http
or websocket. A property violation raises ``AssertionError``, which libFuzzer
reports as a crash with the input that caused it:

- nothing escapes the middleware, and no 500;
- the app sees no identity but the one of the single token the request carried;
- no forged identity header reaches the app (forged values carry ``FORGED``);
- a request skips authentication only if its path resolves to a public route;
- no token appears in any log record (DEBUG, every logger).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import posixpath
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_NO_ATHERIS = {"--replay", "--write-seeds"}
if __name__ == "__main__" and not _NO_ATHERIS & set(sys.argv):
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["authmw"]):
        import authmw
        from authmw import headers as h
else:
    import authmw
    from authmw import headers as h

__all__ = ["Case", "TestOneInput", "decode", "encode"]

PUBLIC_ROUTES = ("GET /healthz", "/static/*", "OPTIONS *")

GOOD = "gAAAAAfuzz-good-token-0123456789abcdefXYZ"
GOOD2 = "gAAAAAfuzz-second-token-9876543210fedcbaQRS"
SERVICE = "gAAAAAfuzz-service-token-13579bdfhjlnprtvx"
OUTAGE = "gAAAAAfuzz-outage-token-02468acegikmoqsuwy"
BUGGY = "gAAAAAfuzz-buggy-token-abcdefghijklmnopqrs"
TOKENS = (GOOD, GOOD2, SERVICE, OUTAGE, BUGGY)
FORGED = "FORGED"

IDENTITIES = {
    GOOD: authmw.Identity(
        "u-good", user_name="alice", project_id="p-1", project_name="proj", roles=("member",)
    ),
    GOOD2: authmw.Identity("u-good2", domain_id="d-2", domain_name="dom", roles=("reader",)),
    SERVICE: authmw.Identity("u-service", project_id="p-svc", roles=("service",)),
}

STRIPPED = sorted(h.STRIPPED_HEADERS)
TOKEN_NAMES = ("X-Auth-Token", "x-auth-token", "X_AUTH_TOKEN", "x_Auth-tOKEN")
SERVICE_NAMES = ("X-Service-Token", "x_service_token")
METHODS = ("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "get", "options", "")
SEGMENTS = (
    "healthz",
    "static",
    "admin",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2e",
    "%2f",
    "%5c",
    "\\",
    "%252e",
    "%00",
    "..;",
    "%68ealthz",
    "HEALTHZ",
    "healthz%2f..%2fadmin",
)
MANGLES = ("{}", " {} ", "{},{}", "{},other", "{}\x00", "\r\n{}", "{}\u00e9", ",{},", "{} x")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def raw(self, limit: int) -> bytes:
        n = self.byte() % (limit + 1)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


@dataclass
class Case:
    """One decoded request."""

    delayed: bool = False
    websocket: bool = False
    denial: bool = False
    native_async: bool = False
    raw_uri: bool = True
    method: str = "GET"
    path: str = "/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def _spelled(name: str, flags: int) -> str:
    if flags & 1:
        name = name.lower()
    elif flags & 2:
        name = name.upper()
    if flags & 4:
        name = name.replace("-", "_")
    return name


def decode(data: bytes) -> Case:
    """The request a byte string stands for (any bytes decode to some request)."""
    r = _Reader(data)
    flags = r.byte()
    case = Case(
        delayed=bool(flags & 1),
        websocket=bool(flags & 2),
        denial=bool(flags & 4),
        native_async=bool(flags & 8),
        raw_uri=not flags & 16,
    )
    selector = r.byte()
    if selector < 200:
        case.method = METHODS[selector % len(METHODS)]
    else:
        case.method = r.raw(12).decode("latin-1")
    selector = r.byte()
    if selector < 160:
        segments = [SEGMENTS[r.byte() % len(SEGMENTS)] for _ in range(selector % 6)]
        case.path = ("//" if selector & 64 else "/") + "/".join(segments)
    else:
        case.path = "/" + r.raw(64).decode("latin-1")
    for _ in range(r.byte() % 16):
        selector = r.byte()
        if selector < 100:
            name = _spelled(STRIPPED[r.byte() % len(STRIPPED)], r.byte())
        elif selector < 150:
            name = TOKEN_NAMES[selector % len(TOKEN_NAMES)]
        elif selector < 165:
            name = SERVICE_NAMES[selector % len(SERVICE_NAMES)]
        else:
            name = r.raw(24).decode("latin-1")
        selector = r.byte()
        if selector < 80:
            token = TOKENS[r.byte() % len(TOKENS)]
            value = MANGLES[selector % len(MANGLES)].format(token, token)
        elif selector < 160:
            value = FORGED + r.raw(32).decode("latin-1")
        elif selector == 160:
            value = "A" * (1024 * 1024)
        else:
            value = r.raw(48).decode("latin-1")
        case.headers.append((name.encode("latin-1"), value.encode("utf-8")))
    return case


def encode(
    flags: int = 0,
    method: int = 0,
    path: Iterable[int] = (0,),
    headers: Iterable[tuple[int, ...]] = (),
) -> bytes:
    """Bytes that :func:`decode` turns into the request described (for seed inputs)."""
    items = list(headers)
    return bytes([flags, method, *path, len(items)] + [b for item in items for b in item])


# -- oracles -----------------------------------------------------------------------


def resolve(path: str) -> str:
    for _ in range(5):
        decoded = unquote(path, encoding="latin-1")
        if decoded == path:
            break
        path = decoded
    path = path.split("?", 1)[0].replace("\\", "/").replace("\x00", "")
    while "//" in path:
        path = path.replace("//", "/")
    normal = posixpath.normpath("/" + path.lstrip("/"))
    # normpath drops a trailing slash: "/static/" routes like "/static/" + "".
    return normal + "/" if path.endswith("/") and normal != "/" else normal


def publicly_routable(method: str, path: str) -> bool:
    if method == "OPTIONS" or path.startswith("/static/"):
        return True
    return method == "GET" and path == "/healthz"


def _fold(name: bytes) -> str:
    return name.decode("latin-1").lower().replace("_", "-")


_STRIPPED_FOLDED = frozenset(n.lower() for n in h.STRIPPED_HEADERS)


def _token_parts(values: list[str]) -> set[str]:
    parts: set[str] = set()
    for value in values:
        parts |= {p.strip() for p in value.split(",")}
    return parts - {""}


def _check_identity(identity: authmw.Identity | None, values: list[str]) -> None:
    if identity is None:
        return
    parts = _token_parts(values)
    assert len(parts) == 1, f"identity accepted from tokens {parts!r}"
    assert IDENTITIES.get(parts.pop()) is identity, "identity the validator did not return"


def _expected(
    identity: authmw.Identity | None, public: bool, service: Any, status: Any
) -> dict[str, str]:
    if public:
        return {}
    expected = {n.lower(): v for n, v in h.rendered(identity)} if identity else {}
    expected[h.IDENTITY_STATUS.lower()] = "Confirmed" if identity else "Invalid"
    if status is not None:
        expected[h.SERVICE_IDENTITY_STATUS.lower()] = status
        if service is not None and status == "Confirmed":
            expected.update({n.lower(): v for n, v in h.rendered(service, service=True)})
    return expected


# -- the middlewares -------------------------------------------------------------------


class _Validator:
    def validate(self, token: str, *, allow_expired: bool = False) -> authmw.Identity:
        if token == OUTAGE:
            raise authmw.IdentityServiceUnavailable("connection refused")
        if token == BUGGY:
            raise RuntimeError(f"validator bug on {token}")
        identity = IDENTITIES.get(token)
        if identity is None:
            raise authmw.InvalidToken("unknown token")
        return identity


class _AsyncValidator(_Validator):
    async def avalidate(self, token: str, *, allow_expired: bool = False) -> authmw.Identity:
        return self.validate(token, allow_expired=allow_expired)


class _Seen:
    value: Any = None


def _wsgi_app(seen: _Seen) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.value = dict(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    return app


def _asgi_app(seen: _Seen) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.value = dict(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
        else:
            await receive()
            await send({"type": "websocket.accept"})

    return app


_MIDDLEWARES: dict[tuple[str, bool, bool], tuple[Any, _Seen]] = {}


def _middleware(kind: str, delayed: bool, native_async: bool) -> tuple[Any, _Seen]:
    key = (kind, delayed, native_async)
    if key not in _MIDDLEWARES:
        seen = _Seen()
        options: dict[str, Any] = {
            "validator": _AsyncValidator() if native_async else _Validator(),
            "delay_auth_decision": delayed,
            "public_routes": PUBLIC_ROUTES,
            "failure_threshold": 1_000_000_000,
        }
        if kind == "wsgi":
            mw: Any = authmw.WSGIAuthMiddleware(_wsgi_app(seen), **options)
        else:
            mw = authmw.ASGIAuthMiddleware(_asgi_app(seen), **options)
        _MIDDLEWARES[key] = (mw, seen)
    return _MIDDLEWARES[key]


def _run_wsgi(case: Case) -> None:
    mw, seen = _middleware("wsgi", case.delayed, case.native_async)
    seen.value = None
    path, _, query = case.path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": case.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "fuzz",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    if case.raw_uri:
        environ["RAW_URI"] = case.path
    for name, value in case.headers:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = environ[key] + "," + text if key in environ else text
    token_raw = environ.get("HTTP_X_AUTH_TOKEN")
    service_raw = environ.get("HTTP_X_SERVICE_TOKEN")
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    b"".join(mw(environ, start_response))
    assert len(statuses) == 1, statuses
    code = int(statuses[0][:3])
    app_environ = seen.value
    if app_environ is None:
        assert not case.delayed and code in (400, 401, 503), statuses
        return
    assert code == 200
    identity = app_environ["authmw.identity"]
    public = "HTTP_X_IDENTITY_STATUS" not in app_environ
    if public:
        assert identity is None
        assert publicly_routable(case.method, resolve(app_environ["PATH_INFO"])), case
    elif not case.delayed:
        assert identity is not None
    _check_identity(identity, [token_raw] if token_raw is not None else [])
    service = app_environ.get("authmw.service_identity")
    _check_identity(service, [service_raw] if service_raw is not None else [])
    got = {
        k[5:].lower().replace("_", "-"): v.encode("latin-1").decode("utf-8")
        for k, v in app_environ.items()
        if k in h.STRIPPED_ENVIRON_KEYS
    }
    assert FORGED not in "".join(got.values()), got
    status = app_environ.get("HTTP_X_SERVICE_IDENTITY_STATUS")
    assert got == _expected(identity, public, service, status), (got, case)


def _run_asgi(case: Case) -> None:
    mw, seen = _middleware("asgi", case.delayed, case.native_async)
    seen.value = None
    kind = "websocket" if case.websocket else "http"
    path, _, query = case.path.partition("?")
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "path": unquote(path, encoding="latin-1"),
        "raw_path": path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": query.encode("latin-1", "replace"),
        "headers": list(case.headers),
        "extensions": {"websocket.http.response": {}} if case.denial else {},
    }
    if kind == "http":
        scope["method"] = case.method
    sent: list[Any] = []
    incoming = [
        {"type": "http.request", "body": b""} if kind == "http" else {"type": "websocket.connect"}
    ]

    async def receive() -> Any:
        return incoming.pop(0) if incoming else {"type": f"{kind}.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    token_values = [v.decode("latin-1") for n, v in case.headers if _fold(n) == "x-auth-token"]
    service_values = [v.decode("latin-1") for n, v in case.headers if _fold(n) == "x-service-token"]
    app_scope = seen.value
    if app_scope is None:
        assert not case.delayed
        if kind == "http" or case.denial:
            assert sent[0]["status"] in (400, 401, 503), sent
        else:
            assert [m["type"] for m in sent] == ["websocket.close"], sent
        return
    identity = app_scope["authmw.identity"]
    got: dict[str, str] = {}
    for name, value in app_scope["headers"]:
        folded = _fold(name)
        if folded in _STRIPPED_FOLDED:
            assert folded not in got, f"duplicate {folded}"
            got[folded] = value.decode("utf-8")
    assert FORGED not in "".join(got.values()), got
    public = h.IDENTITY_STATUS.lower() not in got
    if public:
        assert identity is None
        method = case.method if kind == "http" else "GET"
        for candidate in (app_scope["path"], app_scope["raw_path"].decode("latin-1")):
            assert publicly_routable(method, resolve(candidate)), case
    elif not case.delayed:
        assert identity is not None
    _check_identity(identity, token_values)
    service = app_scope.get("authmw.service_identity")
    _check_identity(service, service_values)
    status = got.get(h.SERVICE_IDENTITY_STATUS.lower())
    assert got == _expected(identity, public, service, status), (got, case)


def seeds() -> list[bytes]:
    """Hand-made starting inputs: the attacks the fuzzer should mutate from."""
    roles = STRIPPED.index("X-Roles")
    scope = STRIPPED.index("OpenStack-System-Scope")
    good = (100, 0, 0)  # X-Auth-Token: GOOD
    forged_roles = (0, roles, 0, 80, 5, *b"admin")
    forged_scope = (0, scope, 5, 80, 3, *b"all")  # lower case, "_" for "-"
    dotdot = (3, 0, 3, 2)  # /healthz/../admin
    encoded = (1, SEGMENTS.index("healthz%2f..%2fadmin"))
    out = [
        encode(0, 0, dotdot, [forged_roles]),
        encode(1, 0, dotdot, [forged_scope]),
        encode(0, 0, encoded, []),
        encode(2, 0, (2, 1, 3), [forged_roles]),  # websocket /static/..
        encode(6, 0, (1, 2), [good, forged_roles, forged_scope]),
        encode(0, 0, (1, 2), [good, (101, 0, 1)]),  # two different tokens
        encode(1, 0, (1, 2), [(100, 2, 0)]),  # "{},{}" of GOOD
        encode(0, 0, (1, 2), [(100, 0, 3)]),  # the outage token
        encode(8, 0, (1, 2), [(100, 0, 4)]),  # the buggy validator token
        encode(0, 0, (1, 2), [(150, 0, 2), good]),  # a service token and a user token
        encode(0, 3, (1, 2), [forged_roles]),  # OPTIONS
        encode(0, 0, (1, 2), [(100, 160)]),  # 1 MB token
    ]
    return out


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.getMessage()} {record.args!r} {record.exc_info!r}")


def TestOneInput(data: bytes) -> None:  # libFuzzer's name
    """Decode ``data`` into a request and check every property on both middlewares."""
    case = decode(data)
    logs = _Logs()
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(logs)
    try:
        _run_wsgi(case)
        _run_asgi(case)
    finally:
        root.removeHandler(logs)
        root.setLevel(saved)
    for text in logs.texts:
        for token in TOKENS:
            assert token not in text, f"token in a log record: {text[:200]!r}"


def _replay(paths: list[str]) -> int:
    count = 0
    for path in paths:
        files = (
            [os.path.join(path, f) for f in sorted(os.listdir(path))]
            if os.path.isdir(path)
            else [path]
        )
        for file in files:
            with open(file, "rb") as f:
                TestOneInput(f.read())
            count += 1
    print(f"replayed {count} inputs: all properties held")
    return 0


def main(argv: list[str]) -> int:
    if "--write-seeds" in argv:
        directory = argv[argv.index("--write-seeds") + 1]
        os.makedirs(directory, exist_ok=True)
        for i, seed in enumerate(seeds()):
            with open(os.path.join(directory, f"seed-{i:02d}"), "wb") as f:
                f.write(seed)
        return 0
    if "--replay" in argv:
        return _replay([a for a in argv[1:] if a != "--replay"])
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
