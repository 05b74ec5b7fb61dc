"""The forward-auth apps in process (ASGI and WSGI alike): gateway modes, answers, route policy.

What each gateway sends is written out as that gateway's documentation
describes it; the real gateways are in test_nginx.py and test_envoy_traefik.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authmw import Identity, IdentityServiceUnavailable, InvalidToken, Throttle
from authmw.audit import AuditRecord
from authmw.errors import ConfigurationError
from authmw.gateway import ForwardAuth, ForwardAuthWSGI, RoutePolicy, build
from authmw.headers import STRIPPED_HEADERS
from authmw.restrictions import RequestFacts
from authmw.tracing import Tracing

GOOD = "good-token-0123456789"
ADMIN = "admin-token-0123456789"
OUTAGE = "outage-token-0123456789"
IDENTITIES = {
    GOOD: Identity("u-1", user_name="alice", project_id="p-1", roles=("reader",)),
    ADMIN: Identity("u-2", user_name="root", project_id="p-1", roles=("admin",)),
}
PUBLIC = ["GET /healthz", "/static/*"]
ROUTES = [("/admin/*", "role:admin"), ("DELETE /items/{project_id}/*", "project_id:%(project_id)s")]


class Scripted:
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        if token == OUTAGE:
            raise IdentityServiceUnavailable("down")
        try:
            return IDENTITIES[token]
        except KeyError:
            raise InvalidToken("unknown") from None


def client(form: str, gateway: str, **options: Any) -> httpx.Client:
    options.setdefault("public_routes", PUBLIC)
    options.setdefault("routes", ROUTES)
    if form == "asgi":
        app = build(ForwardAuth, Scripted(), gateway=gateway, **options)
        return _SyncASGI(app)
    wsgi = build(ForwardAuthWSGI, Scripted(), gateway=gateway, **options)
    return httpx.Client(transport=httpx.WSGITransport(app=wsgi), base_url="http://authmw")


class _SyncASGI(httpx.Client):
    """An httpx.Client over an ASGI app (one event loop per request)."""

    def __init__(self, app: Any) -> None:
        super().__init__(base_url="http://authmw")
        self.app = app

    def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://authmw") as c:
                response = await c.request(method, url, **kwargs)
                await response.aread()
                return response

        return asyncio.run(go())


@pytest.fixture(params=["asgi", "wsgi"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def nginx(method: str, uri: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("X-Original-Method", method), ("X-Original-URI", uri), *extra]


def traefik(method: str, uri: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    # Traefik ForwardAuth: X-Forwarded-Method/-Proto/-Host/-Uri/-For.
    return [
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example"),
        ("X-Forwarded-Uri", uri),
        ("X-Forwarded-For", "203.0.113.9"),
        *extra,
    ]


def identity_headers(response: httpx.Response) -> dict[str, str]:
    names = {n.lower() for n in STRIPPED_HEADERS}
    return {k: v for k, v in response.headers.items() if k in names}


def test_nginx_mode(form: str) -> None:
    with client(form, "nginx") as c:
        r = c.get("/_authmw", headers=nginx("GET", "/items?x=1", ("X-Auth-Token", GOOD)))
        assert r.status_code == 200 and r.content == b""
        assert identity_headers(r)["x-user-id"] == "u-1"
        assert identity_headers(r)["x-identity-status"] == "Confirmed"
        # The check request's own method and path, and Traefik's headers, mean nothing.
        r = c.post("/healthz", headers=nginx("GET", "/admin/x", *traefik("GET", "/healthz")))
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Keystone realm="authmw"'
        assert c.get("/x", headers=nginx("GET", "/healthz")).status_code == 200
        assert c.get("/x", headers=nginx("POST", "/healthz")).status_code == 401


def test_traefik_mode(form: str) -> None:
    with client(form, "traefik") as c:
        r = c.get("/", headers=traefik("GET", "/items", ("X-Auth-Token", GOOD)))
        assert r.status_code == 200 and identity_headers(r)["x-user-name"] == "alice"
        lies = traefik("GET", "/admin/x", *nginx("GET", "/healthz"))
        assert c.get("/healthz", headers=lies).status_code == 401
        assert c.get("/", headers=traefik("GET", "/static/app.js")).status_code == 200


def test_envoy_mode(form: str) -> None:
    with client(form, "envoy", path_prefix="/authz") as c:
        r = c.get("/authz/items?x=1", headers={"X-Auth-Token": GOOD})
        assert r.status_code == 200 and identity_headers(r)["x-project-id"] == "p-1"
        removed = set(r.headers["x-envoy-auth-headers-to-remove"].split(","))
        assert removed == {n.lower() for n in STRIPPED_HEADERS} - set(identity_headers(r))
        lies = [*nginx("GET", "/healthz"), *traefik("GET", "/healthz")]
        assert c.get("/authz/admin/x", headers=lies).status_code == 401
        assert c.get("/authz/healthz", headers=lies).status_code == 200
        public = c.get("/authz/healthz")
        assert not identity_headers(public)
        assert len(public.headers["x-envoy-auth-headers-to-remove"].split(",")) == len(
            STRIPPED_HEADERS
        )
        assert c.get("/authzhealthz").status_code == 400
        assert c.get("/other/healthz").status_code == 400
        assert c.head("/authz/healthz").status_code == 401  # the original method is HEAD


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("X-Original-Method", "GET")],
        [("X-Original-URI", "/healthz")],
        [("X-Original-Method", "G ET"), ("X-Original-URI", "/healthz")],
        [("X-Original-Method", "GET"), ("X-Original-URI", "  ")],
    ],
)
def test_a_check_that_does_not_say_what_it_is_about_is_400(
    form: str, headers: list[tuple[str, str]]
) -> None:
    with client(form, "nginx") as c:
        r = c.get("/healthz", headers=[*headers, ("X-Auth-Token", GOOD)])
        assert r.status_code == 400
        assert r.json()["error"]["title"] == "Bad Request"
        assert not identity_headers(r)


def test_two_different_original_uris_are_400() -> None:
    with client("asgi", "nginx") as c:
        headers = [*nginx("GET", "/healthz"), ("X-Original-URI", "/admin")]
        assert c.get("/", headers=headers).status_code == 400


def test_forged_identity_headers_are_never_answered(form: str) -> None:
    forged = [(name, "forged") for name in sorted(STRIPPED_HEADERS)]
    forged += [(name.replace("-", "_").lower(), "forged") for name in sorted(STRIPPED_HEADERS)]
    with client(form, "nginx") as c:
        for token in (GOOD, None):
            extra = [("X-Auth-Token", token)] if token else []
            for uri in ("/items", "/healthz"):
                r = c.get("/", headers=nginx("GET", uri, *forged, *extra))
                assert "forged" not in str(r.headers), (uri, token, r.headers)


def test_outage_and_delayed_decisions(form: str) -> None:
    with client(form, "nginx", retry_after=9) as c:
        r = c.get("/", headers=nginx("GET", "/items", ("X-Auth-Token", OUTAGE)))
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 9
        assert not identity_headers(r)
    with client(form, "nginx", delay_auth_decision=True) as c:
        r = c.get("/", headers=nginx("GET", "/items", ("X-Auth-Token", "bad-token-xyz")))
        assert r.status_code == 200 and identity_headers(r) == {"x-identity-status": "Invalid"}


def test_route_policy(form: str) -> None:
    with client(form, "nginx") as c:

        def status(token: str, method: str, uri: str) -> int:
            return c.get("/", headers=nginx(method, uri, ("X-Auth-Token", token))).status_code

        assert status(GOOD, "GET", "/admin/x") == 403
        assert status(ADMIN, "GET", "/admin/x") == 200
        assert status(GOOD, "DELETE", "/items/p-1/x") == 200
        assert status(GOOD, "DELETE", "/items/p-2/x") == 403
        assert status(GOOD, "GET", "/items/p-2/x") == 200
        # Every form an upstream could route on must be allowed.
        for uri in (
            "/static/../admin/x",
            "/items/..%2fadmin/x",
            "//admin/x",
            "/x/./../admin/x",
            "/items/%252e%252e/admin/x",
            "/x\\..\\admin\\x",
        ):
            assert status(GOOD, "GET", uri) == 403, uri
            assert status(ADMIN, "GET", uri) == 200, uri


def test_route_policy_default_and_mistakes() -> None:
    policy = RoutePolicy([("GET,HEAD /items/*", "@")], default="role:admin")
    reader, admin = IDENTITIES[GOOD], IDENTITIES[ADMIN]

    def facts(method: str, path: str) -> RequestFacts:
        return RequestFacts(method, path, None, False)

    assert policy(reader, facts("GET", "/items/1")) is None
    refused = policy(reader, facts("POST", "/items/1"))
    assert refused is not None and refused.status == 403
    assert policy(admin, facts("POST", "/other")) is None
    for rules, setting in [
        ([("GET /items/*", "role:")], "routes[0].rule"),
        ([("/items/../x", "@")], "routes[0]"),
        ([("GET POST /x", "@")], "routes[0]"),
        ([("G3T /x", "@")], "routes[0]"),
        ([("/x", "@"), ("/a/{id}/{id}", "@")], "routes[1]"),
        ([("/x", "rule:missing")], "routes[0].rule"),
    ]:
        with pytest.raises(ConfigurationError) as error:
            RoutePolicy(rules)
        assert error.value.option == setting, (rules, error.value)


@pytest.fixture
def lifespan_app() -> Iterator[ForwardAuth]:
    yield build(ForwardAuth, Scripted(), gateway="nginx")


def test_lifespan_is_answered(lifespan_app: ForwardAuth) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    asyncio.run(lifespan_app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_unknown_gateway_and_misplaced_prefix() -> None:
    with pytest.raises(ConfigurationError, match="gateway"):
        build(ForwardAuth, Scripted(), gateway="haproxy")
    with pytest.raises(ConfigurationError, match="path_prefix"):
        build(ForwardAuth, Scripted(), gateway="nginx", path_prefix="/authz")
    with pytest.raises(ConfigurationError, match="path_prefix"):
        build(ForwardAuth, Scripted(), gateway="envoy", path_prefix="authz/")


def test_throttling_warns_once_when_the_gateway_sends_no_client_address(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = Throttle(failures=2, clock=lambda: 1_000_030.0)  # mid-window: one budget
    with client(form, "nginx", throttle=throttle, trusted_proxies=["127.0.0.1"]) as c:
        forwarded = ("X-Forwarded-For", "198.51.100.7")
        for _ in range(3):
            c.get("/", headers=nginx("GET", "/items", forwarded, ("X-Auth-Token", GOOD)))
        assert not [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
        statuses = [
            c.get("/", headers=nginx("GET", "/items", ("X-Auth-Token", f"bad-{n}-xxxxxxxx")))
            for n in range(3)
        ]
        assert [r.status_code for r in statuses] == [401, 401, 429]  # all on the gateway's budget
    warnings = [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert "every client shares" in warnings[0].getMessage()


def test_the_check_continues_the_gateways_trace(form: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = ("traceparent", f"00-{trace_id}-{parent_id}-01")
    with client(form, "nginx", tracing=Tracing(provider)) as c:
        r = c.get("/", headers=nginx("GET", "/items", traceparent, ("X-Auth-Token", GOOD)))
        assert r.status_code == 200
        assert c.get("/", headers=nginx("GET", "/items", ("X-Auth-Token", GOOD))).status_code == 200
    first, second = exporter.get_finished_spans()
    assert format(first.context.trace_id, "032x") == trace_id
    assert first.parent is not None and format(first.parent.span_id, "016x") == parent_id
    assert first.attributes is not None and first.attributes["authmw.cache"] == "miss"
    assert second.parent is None and format(second.context.trace_id, "032x") != trace_id
    provider.shutdown()


def test_a_refusal_by_the_route_policy_is_recorded_with_who_was_refused(form: str) -> None:
    records: list[AuditRecord] = []
    with client(form, "nginx", on_decision=records.append) as c:
        for uri, status in (("/admin/x", 403), ("/admin/x", 403), ("/items", 200)):
            response = c.get("/", headers=nginx("GET", uri, ("X-Auth-Token", GOOD)))
            assert response.status_code == status
    assert [(r.outcome, r.status, r.user_name, r.cached) for r in records] == [
        ("forbidden", 403, "alice", False),
        ("forbidden", 403, "alice", True),
        ("allowed", None, "alice", True),
    ]
