"""One contract, through every entry point (see entry_points.py for how each is installed).

Forged identity headers never reach any view of the request; the credential
headers are the configured ones; service tokens, FIWARE scope and public
routes behave alike; 401, 403 and 503 carry the same body and headers;
websockets are refused before ``accept``. Entry points marked anonymous let
a request without any credential reach the app (its routes decide); the
others answer it 401 unless decisions are delayed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from authmw import Identity, IdentityServiceUnavailable, InvalidToken
from authmw.headers import STRIPPED_HEADERS

from .entry_points import ANONYMOUS, ENTRY_POINTS, Client, Response

GOOD = "good-token-0123456789"
ADMIN = "admin-token-0123456789"
BAD = "bad-token-0123456789"
OUTAGE = "outage-token-0123456789"
SERVICE = "service-token-0123456789"
GARDENER = "gardener-token-0123456789"
FORGED = "forged-by-client"
CHALLENGE = 'Keystone realm="authmw"'
EXPIRING = "expiring-token-0123456789"  # valid for one second from its validation

IDENTITIES = {
    GOOD: Identity("u-member", project_id="p1", roles=("member", "reader"), is_admin_project=False),
    ADMIN: Identity("u-admin", project_id="p1", roles=("admin", "member")),
    SERVICE: Identity("u-svc", project_id="svc", roles=("service",)),
    GARDENER: Identity(
        "u-gardener",
        project_id="p-gardens",
        project_name="/gardens",
        project_domain_name="smartcity",
        roles=("member",),
    ),
}


class Scripted:
    """A validator answering from a dict; :data:`OUTAGE` finds the service down."""

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        if token == OUTAGE:
            raise IdentityServiceUnavailable("identity service down")
        if token == EXPIRING:
            soon = datetime.now(timezone.utc) + timedelta(seconds=1)
            return Identity("u-brief", expires_at=soon, audit_ids=("a-brief",))
        try:
            return IDENTITIES[token]
        except KeyError:
            raise InvalidToken("unknown token") from None


SPELLINGS = [str, str.lower, lambda name: name.replace("-", "_")]
NAMES = sorted(STRIPPED_HEADERS)
WEBSOCKETS = ["asgi", "starlette", "fastapi"]


@pytest.fixture(params=list(ENTRY_POINTS))
def entry(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def connect(entry: str, **options: Any) -> Any:
    return ENTRY_POINTS[entry](Scripted(), options)


@pytest.fixture
def client(entry: str) -> Iterator[Client]:
    with connect(entry) as client:
        yield client


def token(value: str | None, header: str = "X-Auth-Token") -> list[tuple[str, str]]:
    return [(header, value)] if value is not None else []


def assert_error(response: Response, status: int) -> str:
    """authmw's JSON error for ``status``, with its headers; returns the message."""
    assert response.status == status, response.body
    assert response.header("content-type") == "application/json"
    data = json.loads(response.body)
    assert set(data) == {"error"} and data["error"]["code"] == status
    assert (
        data["error"]["title"]
        == {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}[status]
    )
    if status == 401:
        assert response.header("www-authenticate") == CHALLENGE
    else:
        assert response.header("www-authenticate") is None
    if status == 503:
        assert int(response.header("retry-after") or 0) >= 1
    return str(data["error"]["message"])


def assert_clean_views(report: dict[str, Any], status: str) -> None:
    """No forged value in any view; exactly one X-Identity-Status, as decided."""
    for view, items in report["views"].items():
        forged = [(n, v) for n, v in items if FORGED in v]
        assert not forged, (view, forged)
        seen = [v for n, v in items if n.replace("_", "-") == "x-identity-status"]
        assert seen == [status], (view, seen)


def expected_open_status(entry: str, value: str | None, delayed: bool) -> int:
    if value == GOOD or delayed:
        return 200
    if value is None and entry in ANONYMOUS:
        return 200
    return 401


# -- forged identity headers ---------------------------------------------------------------


@pytest.mark.parametrize("delayed", [False, True], ids=["normal", "delayed"])
def test_forged_identity_headers_never_reach_any_view(entry: str, delayed: bool) -> None:
    with connect(entry, delay_auth_decision=delayed) as client:
        for spelling in SPELLINGS:
            forged = [(spelling(name), FORGED) for name in NAMES]
            for value in (None, BAD, GOOD):
                response = client.request("GET", "/open", forged + token(value))
                assert response.status == expected_open_status(entry, value, delayed), (
                    spelling("X-Roles"),
                    value,
                )
                if response.status == 401:
                    assert_error(response, 401)
                    continue
                report = response.report
                assert report["identity"] == ("u-member" if value == GOOD else None)
                assert_clean_views(report, "Confirmed" if value == GOOD else "Invalid")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Roles", "admin"),
        ("X_Roles", "admin"),
        ("x-role", "admin"),
        ("X-Identity-Status", "Confirmed"),
        ("X-Is-Admin-Project", "True"),
        ("OpenStack-System-Scope", "all"),
        ("X_User_Id", "root"),
        ("X-Service-Roles", "service"),
    ],
)
def test_a_forged_privilege_is_replaced_by_the_real_one(
    client: Client, name: str, value: str
) -> None:
    response = client.request("GET", "/open", [(name, value), *token(GOOD)])
    assert response.status == 200
    for view, items in response.report["views"].items():
        roles = [v for n, v in items if n.replace("_", "-") in ("x-roles", "x-role")]
        assert roles == ["member,reader", "member,reader"], (view, roles)
        assert all(v != value or n == "x-identity-status" for n, v in items), view
        assert not [n for n, _ in items if n.replace("_", "-") == "openstack-system-scope"]


# -- answers ---------------------------------------------------------------------------------


def test_a_protected_route_answers_401_403_503_alike(client: Client) -> None:
    assert_error(client.request("GET", "/protected", []), 401)
    assert_error(client.request("GET", "/protected", token(BAD)), 401)
    assert_error(client.request("GET", "/protected", token(OUTAGE)), 503)
    assert_error(client.request("GET", "/admin", token(GOOD)), 403)
    response = client.request("GET", "/protected", token(GOOD))
    assert response.status == 200 and response.report["identity"] == "u-member"
    response = client.request("GET", "/admin", token(ADMIN))
    assert response.status == 200 and response.report["identity"] == "u-admin"


def test_delayed_decisions_still_challenge_on_a_protected_route(entry: str) -> None:
    with connect(entry, delay_auth_decision=True) as client:
        for value in (None, BAD, OUTAGE):
            assert_error(client.request("GET", "/protected", token(value)), 401)
        assert client.request("GET", "/protected", token(GOOD)).status == 200


def test_renamed_token_header_is_the_only_one_read(entry: str) -> None:
    with connect(entry, token_header="X-Api-Token") as client:
        response = client.request("GET", "/protected", token(GOOD, "X-Api-Token"))
        assert response.status == 200 and response.report["identity"] == "u-member"
        assert_error(client.request("GET", "/protected", token(GOOD)), 401)
        assert_error(client.request("GET", "/protected", token(BAD, "X-Api-Token")), 401)


@pytest.mark.parametrize("header", ["X-Service-Token", "X-Svc-Token"])
def test_service_tokens(entry: str, header: str) -> None:
    options = {} if header == "X-Service-Token" else {"service_token_header": header}
    with connect(entry, **options) as client:
        response = client.request("GET", "/open", [*token(GOOD), (header, SERVICE)])
        assert response.status == 200
        report = response.report
        assert (report["identity"], report["service"]) == ("u-member", "u-svc")
        for view, items in report["views"].items():
            status = [v for n, v in items if n.replace("_", "-") == "x-service-identity-status"]
            assert status == ["Confirmed"], view
            assert ["x-service-roles", "service"] in [[n.replace("_", "-"), v] for n, v in items]
        assert_error(client.request("GET", "/open", [*token(GOOD), (header, BAD)]), 401)
        # A user's own token is not a service token.
        assert_error(client.request("GET", "/open", [*token(GOOD), (header, GOOD)]), 401)
        if header != "X-Service-Token":
            response = client.request("GET", "/open", [*token(GOOD), ("X-Service-Token", BAD)])
            assert response.status == 200 and response.report["service"] is None


def test_fiware_service_scope(entry: str) -> None:
    with connect(entry, fiware_service_scope=True) as client:
        scope = [("Fiware-Service", "SmartCity"), ("Fiware-ServicePath", "/gardens")]
        response = client.request("GET", "/protected", [*token(GARDENER), *scope])
        assert response.status == 200 and response.report["identity"] == "u-gardener"
        wrong_path = [("Fiware-Service", "smartcity"), ("Fiware-ServicePath", "/parks")]
        assert_error(client.request("GET", "/protected", [*token(GARDENER), *wrong_path]), 401)
        wrong_service = [("Fiware-Service", "other"), ("Fiware-ServicePath", "/gardens")]
        assert_error(client.request("GET", "/protected", [*token(GARDENER), *wrong_service]), 401)
        assert_error(client.request("GET", "/protected", token(GARDENER)), 401)


PREFLIGHT = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")]


def test_public_routes(entry: str) -> None:
    with connect(entry, public_routes=["GET /healthz", "OPTIONS *"]) as client:
        response = client.request("GET", "/healthz", [("X-Roles", FORGED)])
        assert response.status == 200
        report = response.report
        assert report["identity"] is None
        for view, items in report["views"].items():
            assert not [v for _, v in items if FORGED in v], view
        # Not public: a POST, another path, an OPTIONS request that is no preflight.
        if entry not in ANONYMOUS:
            assert_error(client.request("POST", "/healthz", []), 401)
            assert_error(client.request("GET", "/open", []), 401)
            assert_error(client.request("OPTIONS", "/open", []), 401)
            assert client.request("OPTIONS", "/open", PREFLIGHT).status != 401
        assert_error(client.request("OPTIONS", "/protected", token(BAD)), 401)


# -- websockets ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry_name", WEBSOCKETS)
def test_websockets_are_refused_before_accept(entry_name: str) -> None:
    with connect(entry_name) as client:
        assert client.websockets
        for value, status in ((None, 401), (BAD, 401), (OUTAGE, 503)):
            outcome, response = client.websocket("/ws", token(value))
            assert outcome == "denied", (value, outcome, response)
            assert_error(response, status)
        outcome, report = client.websocket("/ws", [("X-Roles", FORGED), *token(GOOD)])
        assert outcome == "accepted"
        assert report["identity"] == "u-member"
        assert not [v for _, v in report["headers"] if FORGED in v]


# -- token sources ---------------------------------------------------------------------------

SOURCES = ["X-Auth-Token", "Authorization: Bearer"]
BOTH_CHALLENGES = 'Keystone realm="authmw", Bearer realm="authmw"'
BAD_BEARER = 'Bearer realm="authmw", error="invalid_token"'


def bearer(value: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {value}")]


def test_bearer_and_header_sources(entry: str) -> None:
    with connect(entry, token_sources=SOURCES) as client:
        for headers in (bearer(GOOD), token(GOOD), [*bearer(GOOD), *token(GOOD)]):
            response = client.request("GET", "/protected", headers)
            assert response.status == 200, headers
            assert response.report["identity"] == "u-member"
        response = client.request("GET", "/protected", [("Authorization", f"bEaReR   {GOOD}")])
        assert response.status == 200  # scheme case-insensitive, any run of spaces
        # No credential: every configured challenge.
        response = client.request("GET", "/protected", [])
        assert response.status == 401
        assert response.header("www-authenticate") == BOTH_CHALLENGES
        # A bad credential: the challenge of the source it came in.
        response = client.request("GET", "/protected", bearer(BAD))
        assert response.status == 401
        assert response.header("www-authenticate") == BAD_BEARER
        response = client.request("GET", "/protected", token(BAD))
        assert response.status == 401
        assert response.header("www-authenticate") == CHALLENGE


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {GOOD}"), ("X-Auth-Token", ADMIN)],  # two sources disagree
        [("Authorization", f"Bearer {GOOD}, Bearer {ADMIN}")],  # two in one header
        [("Authorization", "Bearer"), ("X-Auth-Token", GOOD)],  # empty bearer next to a token
        [("Authorization", f"Bearer {GOOD} extra")],  # not token68
        [("Authorization", 'Bearer "quoted"')],
        [("Authorization", "Bearer ")],
    ],
    ids=["two-sources", "two-bearers", "empty-bearer", "junk", "quoted", "blank"],
)
def test_ambiguous_or_malformed_credentials_are_refused(
    entry: str, headers: list[tuple[str, str]]
) -> None:
    with connect(entry, token_sources=SOURCES) as client:
        for path in ("/open", "/protected"):
            assert_error_401(client.request("GET", path, headers))


def assert_error_401(response: Response) -> None:
    assert response.status == 401, response.body
    assert json.loads(response.body)["error"]["code"] == 401
    assert response.header("www-authenticate") is not None


def test_other_authorization_schemes_are_left_to_the_app(entry: str) -> None:
    basic = [("Authorization", "Basic dXNlcjpwYXNz")]
    with connect(entry, token_sources=SOURCES, delay_auth_decision=True) as client:
        response = client.request("GET", "/open", basic)
        assert response.status == 200
        for view, items in response.report["views"].items():
            assert ["authorization", "Basic dXNlcjpwYXNz"] in items, view
        response = client.request("GET", "/open", [*basic, *token(GOOD)])
        assert response.status == 200 and response.report["identity"] == "u-member"


def test_hidden_credentials_never_reach_the_app(entry: str) -> None:
    with connect(entry, token_sources=SOURCES, hide_credentials=True) as client:
        for headers in (bearer(GOOD), token(GOOD), [*bearer(GOOD), *token(GOOD)]):
            response = client.request("GET", "/open", headers)
            assert response.status == 200
            report = response.report
            assert report["identity"] == "u-member"
            for view, items in report["views"].items():
                assert not [(n, v) for n, v in items if GOOD in v], view
    with connect(entry) as client:  # by default the app sees its token (to pass it on)
        items = client.request("GET", "/open", token(GOOD)).report["views"]
        assert all(
            ["x-auth-token", GOOD] in [[n.replace("_", "-"), v] for n, v in view]
            for view in items.values()
        )


# -- websockets: browser credentials and token lifetime -------------------------------------

BROWSER_SOURCES = ["X-Auth-Token", "Sec-WebSocket-Protocol: bearer", "query: access_token"]


@pytest.mark.parametrize("entry_name", WEBSOCKETS)
def test_a_browser_websocket_with_the_token_in_its_subprotocols(entry_name: str) -> None:
    with connect(entry_name, token_sources=BROWSER_SOURCES) as client:
        outcome, report = client.websocket("/ws", [], subprotocols=["chat", "bearer", GOOD])
        assert outcome == "accepted"
        assert report["identity"] == "u-member"
        assert report["accepted_subprotocol"] == "bearer"  # else a browser drops the socket
        assert report["subprotocols"] == ["chat"]  # the app never sees the token
        assert not [v for _, v in report["headers"] if GOOD in v]
        outcome, response = client.websocket("/ws", [], subprotocols=["bearer", BAD])
        assert outcome == "denied"
        assert_error_401(response)
        outcome, response = client.websocket("/ws", [], subprotocols=["bearer"])
        assert outcome == "denied"  # the marker without a token is malformed
        assert_error_401(response)


@pytest.mark.parametrize("entry_name", WEBSOCKETS)
def test_a_websocket_with_the_token_in_its_query(entry_name: str) -> None:
    with connect(entry_name, token_sources=BROWSER_SOURCES) as client:
        outcome, report = client.websocket(f"/ws?room=1&access_token={GOOD}&x=2", [])
        assert outcome == "accepted"
        assert report["identity"] == "u-member"
        assert report["query_string"] == "room=1&x=2"
        outcome, response = client.websocket(f"/ws?access_token={GOOD}&access_token={ADMIN}", [])
        assert outcome == "denied"
        assert_error_401(response)
        # Query tokens are for websockets only: an HTTP request with one has no token.
        assert_error(client.request("GET", f"/protected?access_token={GOOD}", []), 401)


def test_query_and_subprotocol_sources_need_an_http_source() -> None:
    from authmw import AuthCore, ConfigurationError

    with pytest.raises(ConfigurationError, match="token_sources"):
        AuthCore(Scripted(), token_sources=["query: access_token"])


@pytest.mark.parametrize("entry_name", WEBSOCKETS)
def test_a_websocket_is_closed_when_its_token_expires(entry_name: str) -> None:
    from starlette.websockets import WebSocketDisconnect

    with connect(entry_name) as client:
        connect_ws = client.client.websocket_connect  # type: ignore[attr-defined]
        with connect_ws("/ws", headers=dict(token(EXPIRING))) as ws:
            assert ws.receive_json()["identity"] == "u-brief"
            ws.send_text("still here")
            assert ws.receive_text() == "still here"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()  # waits for authmw to close it at expiry
            assert closed.value.code == 1008


@pytest.mark.parametrize("entry_name", WEBSOCKETS)
def test_a_websocket_is_closed_when_its_token_is_revoked(entry_name: str, tmp_path: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    from authmw import LocalTokenStore

    store = LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db")
    kept = store.issue(user_name="kept", ttl=3600)
    doomed = store.issue(user_name="doomed", ttl=3600)
    with ENTRY_POINTS[entry_name](store, {}) as client:
        connect_ws = client.client.websocket_connect  # type: ignore[attr-defined]
        with (
            connect_ws("/ws", headers=dict(token(kept.token))) as other,
            connect_ws("/ws", headers=dict(token(doomed.token))) as ws,
        ):
            assert ws.receive_json()["identity"] == "doomed"
            assert other.receive_json()["identity"] == "kept"
            store.revoke(doomed.record.id)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 1008
            other.send_text("still open")
            assert other.receive_text() == "still open"


def test_no_token_from_any_source_reaches_a_log_record(entry: str) -> None:
    from hardening._support import all_logs, assert_no_token_in_logs

    secret_bad = "never-logged-" + "b" * 24
    tokens = (GOOD, ADMIN, secret_bad)
    with all_logs() as texts, connect(entry, token_sources=BROWSER_SOURCES + SOURCES[1:]) as client:
        for headers in (
            token(GOOD),
            bearer(GOOD),
            bearer(secret_bad),
            token(secret_bad),
            [*bearer(GOOD), *token(ADMIN)],
            [("Authorization", f"Bearer {secret_bad} junk")],
            [("X-Service-Token", secret_bad), *token(GOOD)],
        ):
            client.request("GET", "/protected", headers)
        if client.websockets:
            client.websocket("/ws", [], subprotocols=["bearer", GOOD])
            client.websocket("/ws", [], subprotocols=["bearer", secret_bad])
            client.websocket(f"/ws?access_token={secret_bad}", [])
    assert texts  # authmw logged the rejections
    assert_no_token_in_logs(texts, tokens)
