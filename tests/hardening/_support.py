"""Validators, identities, strategies and oracles shared by the hardening tests.

The oracles here are written independently of authmw's own code where it
matters: a request is "public" when the path an application would route
on, after every decoding and normalisation an application might apply,
is an allow-listed route; an identity is legitimate only when the request
carried exactly that identity's token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from authmw import Identity, IdentityServiceUnavailable, InvalidToken
from authmw import headers as h

LONG = os.environ.get("AUTHMW_LONG_TESTS") == "1"

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]
settings.register_profile(
    "authmw-hardening-ci", max_examples=200, deadline=None, suppress_health_check=_HEALTH
)
settings.register_profile(
    "authmw-hardening-long", max_examples=5000, deadline=None, suppress_health_check=_HEALTH
)
FUZZ = settings.get_profile("authmw-hardening-long" if LONG else "authmw-hardening-ci")
"""Settings for every property test here: 200 examples, 5000 with AUTHMW_LONG_TESTS=1."""

PUBLIC_ROUTES = ("GET /healthz", "/static/*", "OPTIONS *")

# Tokens: random per test session, long enough that finding one in a log
# line cannot be a coincidence.
GOOD = "gA" + secrets.token_urlsafe(30)
GOOD2 = "gB" + secrets.token_urlsafe(30)
ODD = "oD" + secrets.token_urlsafe(30)  # identity with awkward values
SERVICE = "sV" + secrets.token_urlsafe(30)  # holds the service role
OUTAGE = "oU" + secrets.token_urlsafe(30)  # validator cannot answer
BUGGY = "bG" + secrets.token_urlsafe(30)  # validator raises an unexpected error
SECRET_TOKENS = (GOOD, GOOD2, ODD, SERVICE, OUTAGE, BUGGY)

FORGED = "FORGED"  # in every forged header value; never in an identity

_FAR = datetime(2099, 1, 1, tzinfo=timezone.utc)

IDENTITIES: dict[str, Identity] = {
    GOOD: Identity(
        "u-good",
        user_name="alice",
        user_domain_id="default",
        project_id="p-1",
        project_name="proj",
        project_domain_id="default",
        roles=("member", "reader"),
        expires_at=_FAR,
        audit_ids=("a-good",),
        is_admin_project=False,
    ),
    GOOD2: Identity("u-good2", domain_id="d-2", domain_name="dom", roles=("reader",)),
    ODD: Identity(
        "u-odd\u00e9",
        user_name="na\u00efve, user\r\nX-Roles: admin",
        project_id="p-odd",
        project_name="\u30d7\u30ed\u30b8\u30a7\u30af\u30c8",
        roles=("r\u00f4le", "Project Admin"),  # Identity refuses "a,b" and ""
        system_scope="all",
        expires_at=_FAR,
    ),
    SERVICE: Identity("u-service", project_id="p-svc", roles=("service",), expires_at=_FAR),
}


class FuzzValidator:
    """Blocking validator over :data:`IDENTITIES`, with an outage and a buggy token."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        with self._lock:
            self.calls.append(token)
        if token == OUTAGE:
            raise IdentityServiceUnavailable("connection refused")
        if token == BUGGY:
            raise RuntimeError(f"validator bug while reading {token!r}")
        identity = IDENTITIES.get(token)
        if identity is None:
            raise InvalidToken(f"unknown token {token[:4]}...")
        return identity


class AsyncFuzzValidator(FuzzValidator):
    """Same answers, with a native awaitable form (no worker thread)."""

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        return self.validate(token, allow_expired=allow_expired)


# -- logs --------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage(), repr(record.args), str(record.msg)]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        self.texts.append(" ".join(parts))


@contextlib.contextmanager
def all_logs() -> Iterator[list[str]]:
    """Every log record of every logger at DEBUG, rendered, while the block runs."""
    root = logging.getLogger()
    handler = _Collect()
    saved = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler.texts
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def assert_no_token_in_logs(texts: list[str], tokens: tuple[str, ...]) -> None:
    for text in texts:
        for token in tokens:
            assert token not in text, f"token leaked into a log record: {text[:300]!r}"


# -- paths -------------------------------------------------------------------


def resolve(path: str) -> str:
    """The path an application might end up routing on: decoded, normalised, lenient."""
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
    """Independent reading of :data:`PUBLIC_ROUTES` for an already resolved path."""
    if method == "OPTIONS":
        return True
    if path.startswith("/static/"):
        return True
    return method == "GET" and path == "/healthz"


# -- strategies --------------------------------------------------------------


def _spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` with random case per letter and random ``-``/``_``."""

    def build(flags: list[tuple[bool, bool]]) -> str:
        out = []
        for ch, (upper, underscore) in zip(name, flags, strict=True):
            if ch == "-":
                out.append("_" if underscore else "-")
            else:
                out.append(ch.upper() if upper else ch.lower())
        return "".join(out)

    return st.lists(
        st.tuples(st.booleans(), st.booleans()), min_size=len(name), max_size=len(name)
    ).map(build)


HUGE = "A" * (1024 * 1024)

STRIPPED = sorted(h.STRIPPED_HEADERS)

identity_header_names = st.sampled_from(STRIPPED).flatmap(_spellings)
token_header_names = _spellings("X-Auth-Token")
service_token_header_names = _spellings("X-Service-Token")
other_header_names = st.one_of(
    st.sampled_from(
        [
            "Content-Type",
            "X-Request-Id",
            "X-Roles-Extra",
            "XRoles",
            "X--Roles",
            "X-Rolesx",
            "Fiware-Service",
            "Authorization",
            "Host",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
        min_size=1,
        max_size=30,
    ),
)

_latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=60)
_any_text = st.text(max_size=40)

forged_values = st.one_of(
    st.sampled_from(["admin", "all", "True", "Confirmed", "u-good", "p-1", "member,admin"]),
    _latin1,
).map(lambda v: f"{FORGED}{v}")

token_values = st.one_of(
    st.sampled_from(list(SECRET_TOKENS)),
    st.sampled_from([GOOD, GOOD2, ODD]).flatmap(
        lambda t: st.sampled_from(
            [
                f"  {t}\t",
                f"{t},{t}",
                f"{t}, {GOOD2}",
                f"{t},",
                f",{t}",
                t + "\x00",
                "\x00" + t,
                t[:10] + "\r\n" + t[10:],
                t[:10] + " " + t[10:],
                t + "\u00e9",
                t.upper(),
                t[:-1],
                t + t,
            ]
        )
    ),
    st.sampled_from(["", " ", ",", " , ", "\t", "\x00", "\r\n", HUGE, "t" * 8193, "t" * 8192]),
    _latin1,
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    _any_text,
)

other_values = st.one_of(_latin1, st.sampled_from(["", HUGE, "\x00", "a\r\nX-Roles: admin"]))

methods = st.one_of(
    st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "options", "Get"]
    ),
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), min_size=0, max_size=12),
)

_segments = st.sampled_from(
    [
        "healthz",
        "static",
        "admin",
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E%2e",
        "%2e",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "..\\",
        "%252e%252e",
        "%252f",
        "%00",
        "..;",
        "%c0%ae%c0%ae",
        "healthz%2f..%2fadmin",
        "healthz?x=1",
        "static%2f..",
        "HEALTHZ",
        "a",
    ]
)

raw_paths = st.one_of(
    st.lists(_segments, min_size=0, max_size=6).flatmap(
        lambda segs: st.sampled_from(["/", "//", "", "/./", "\\"]).map(
            lambda lead: lead + "/".join(segs)
        )
    ),
    st.sampled_from(
        [
            "/healthz",
            "/healthz/../admin",
            "/healthz%2f..%2fadmin",
            "//healthz",
            "/static/../admin",
            "/static/%2e%2e/admin",
            "/static/..%2fadmin",
            "/static/%2e%2e%2fadmin",
            "/static\\..\\admin",
            "/static/%252e%252e/admin",
            "/./healthz",
            "/healthz/.",
            "/healthz/",
            "/admin",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=30).map(
        lambda s: "/" + s
    ),
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A request's headers: tokens, forged identity headers, noise, in any order."""
    items: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 3))):
        items.append((draw(token_header_names), draw(token_values)))
    if draw(st.integers(0, 4)) == 0:
        items.append((draw(service_token_header_names), draw(token_values)))
    for _ in range(draw(st.integers(0, 12))):
        items.append((draw(identity_header_names), draw(forged_values)))
    for _ in range(draw(st.integers(0, 4))):
        items.append((draw(other_header_names), draw(other_values)))
    if draw(st.integers(0, 20)) == 0:
        # Thousands of headers, forged ones scattered among them.
        count = draw(st.integers(1000, 4000))
        name = draw(identity_header_names)
        items.extend(
            (f"X-Filler-{i}", "v") if i % 500 else (name, FORGED + str(i)) for i in range(count)
        )
    return draw(st.permutations(items))


def fold(name: str) -> str:
    return name.lower().replace("_", "-")


def token_parts(values: list[str]) -> set[str]:
    """The distinct non-blank comma-separated parts of every token header value."""
    parts: set[str] = set()
    for value in values:
        parts |= {p.strip() for p in value.split(",")}
    return parts - {""}


def check_identity(
    identity: Identity | None, token_values_sent: list[str], service: bool = False
) -> None:
    """An identity is legitimate only if the request carried exactly its token."""
    if identity is None:
        return
    parts = token_parts(token_values_sent)
    assert len(parts) == 1, f"identity {identity.user_id} accepted from tokens {parts!r}"
    token = parts.pop()
    assert IDENTITIES.get(token) is identity, "identity the validator did not return for the token"
    if service:
        assert identity.has_role("service")


def expected_identity_headers(
    environ_like: Mapping[str, Any], identity: Identity | None, public: bool
) -> dict[str, str]:
    """The identity headers (canonical name -> value) the app may see, and nothing else."""
    if public:
        return {}
    expected = dict(h.rendered(identity)) if identity is not None else {}
    expected[h.IDENTITY_STATUS] = "Confirmed" if identity is not None else "Invalid"
    service_status = environ_like.get("service_status")
    if service_status is not None:
        expected[h.SERVICE_IDENTITY_STATUS] = service_status
        service = environ_like.get("service_identity")
        if service is not None and service_status == "Confirmed":
            expected.update(h.rendered(service, service=True))
    return expected
