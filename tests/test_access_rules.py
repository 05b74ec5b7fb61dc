"""Application-credential access rules: authmw against keystonemiddleware 13.0.1.

Both middlewares validate the same real tokens against the same real
Keystone (a private copy whose catalog lists ``placement`` and ``compute``)
and must give the same outcome: the same status, the same identity for the
app, the same 401 body and challenge. Tokens come from application
credentials created with access rules through Keystone's API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keystonemiddleware import auth_token
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from test_differential_keystonemiddleware import Recorder, identity_view
from webob import Request

from authmw import ASGIAuthMiddleware, KeystoneValidator, WSGIAuthMiddleware
from authmw.paste import AuthProtocol
from authmw.restrictions import RequestFacts, refusal
from authmw.validators._keystone_v3 import ACCESS_RULES_HEADER, build_validation_request

RULES = [
    {"service": "placement", "method": "GET", "path": "/resource_providers"},
    {"service": "placement", "method": "GET", "path": "/resource_providers/*"},
    {"service": "placement", "method": "PUT", "path": "/resource_providers/{uuid}/inventories"},
    {"service": "placement", "method": "GET", "path": "/traits/**"},
    {"service": "compute", "method": "GET", "path": "/servers"},
]
SERVICE_USER = {"user": "service-user", "project": "service"}


class Pair:
    """keystonemiddleware and authmw's AuthProtocol with the same options."""

    def __init__(self, keystone: Any, **extra: str) -> None:
        conf = {
            "auth_type": "password",
            "auth_url": keystone.url,
            "www_authenticate_uri": keystone.url,
            **keystone.service_credentials,
            **extra,
        }
        self.ksm_app, self.amw_app = Recorder(), Recorder()
        self.ksm = auth_token.AuthProtocol(self.ksm_app, dict(conf))
        self.amw = AuthProtocol(self.amw_app, {**conf, "timeout": "20"})

    def send(self, method: str, path: str, headers: dict[str, str]) -> tuple[Any, Any]:
        """(keystonemiddleware's, authmw's) outcome: (status, body, challenge, identity)."""
        results = []
        for mw, app in ((self.ksm, self.ksm_app), (self.amw, self.amw_app)):
            app.seen = None
            request = Request.blank(path, method=method, headers=headers)
            response = request.get_response(mw)
            refused = response.status_int == 401 and response.body
            body = json.loads(response.body) if refused else None
            seen = identity_view(app.seen) if app.seen is not None else None
            if seen is not None:
                seen.pop("HTTP_X_SERVICE_IS_ADMIN_PROJECT", None)  # documented: authmw only
            challenge = response.headers.get("WWW-Authenticate")
            results.append((response.status_int, body, challenge, seen))
        return results[0], results[1]


@pytest.fixture(scope="module")
def restricted(catalog_keystone: Any) -> Iterator[str]:
    """A token of demo-user's application credential limited by RULES."""
    cred = catalog_keystone.create_application_credential(
        user="demo-user", project="demo-project", access_rules=RULES
    )
    yield catalog_keystone.issue_application_credential_token(cred["id"], cred["secret"])
    catalog_keystone.delete_application_credential(cred["id"], user="demo-user")


@pytest.fixture(scope="module")
def unrestricted(catalog_keystone: Any) -> Iterator[str]:
    """A token of an application credential without access rules."""
    cred = catalog_keystone.create_application_credential(user="demo-user", project="demo-project")
    yield catalog_keystone.issue_application_credential_token(cred["id"], cred["secret"])
    catalog_keystone.delete_application_credential(cred["id"], user="demo-user")


@pytest.fixture(scope="module")
def placement(catalog_keystone: Any) -> Pair:
    return Pair(catalog_keystone, service_type="placement")


def same(pair: Pair, method: str, path: str, headers: dict[str, str]) -> int:
    ksm, amw = pair.send(method, path, headers)
    assert amw == ksm, f"{method} {path}"
    return int(ksm[0])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/resource_providers", 200),  # rule match
        ("POST", "/resource_providers", 401),  # method mismatch
        ("GET", "/allocations", 401),  # path mismatch
        ("GET", "/resource_providers/abc", 200),  # * = one segment
        ("GET", "/resource_providers/", 401),  # ... not an empty one
        ("GET", "/resource_providers/abc/aggregates", 401),  # ... nor two
        ("PUT", "/resource_providers/abc/inventories", 200),  # {uuid} = one segment
        ("PUT", "/resource_providers/a/b/inventories", 401),
        ("GET", "/traits/a/b/c", 200),  # ** = anything
        ("GET", "/traits", 401),
        ("GET", "/resource_providers/a%20b", 200),  # quoted like webob
        ("GET", "/servers", 401),  # a rule of another service
    ],
)
def test_rules_decide_like_keystonemiddleware(
    placement: Pair, restricted: str, method: str, path: str, status: int
) -> None:
    assert same(placement, method, path, {"X-Auth-Token": restricted}) == status


def test_a_cached_token_is_checked_on_every_request(placement: Pair, restricted: str) -> None:
    headers = {"X-Auth-Token": restricted}
    assert same(placement, "GET", "/resource_providers", headers) == 200
    assert same(placement, "DELETE", "/resource_providers", headers) == 401
    assert same(placement, "GET", "/resource_providers", headers) == 200


def test_wrong_service_type(catalog_keystone: Any, restricted: str) -> None:
    compute = Pair(catalog_keystone, service_type="compute")  # in the catalog, other rules
    assert same(compute, "GET", "/resource_providers", {"X-Auth-Token": restricted}) == 401
    assert same(compute, "GET", "/servers", {"X-Auth-Token": restricted}) == 200


def test_service_type_not_in_the_catalog(
    catalog_keystone: Any, restricted: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(catalog_keystone, service_type="object-store")
    caplog.set_level(logging.WARNING, "authmw")
    for path in ("/resource_providers", "/servers", "/v1/AUTH_x"):
        assert same(pair, "GET", path, {"X-Auth-Token": restricted}) == 401
    warnings = [r for r in caplog.records if r.name.startswith("authmw")]
    assert len(warnings) == 1 and "not a service type in their catalog" in warnings[0].message


def test_service_type_unset(
    catalog_keystone: Any, restricted: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(catalog_keystone)
    caplog.set_level(logging.WARNING, "authmw")
    assert same(pair, "GET", "/resource_providers", {"X-Auth-Token": restricted}) == 401
    assert same(pair, "GET", "/allocations", {"X-Auth-Token": restricted}) == 401
    warnings = [r for r in caplog.records if r.name.startswith("authmw")]
    assert len(warnings) == 1 and "set service_type" in warnings[0].message


def test_service_token_present(placement: Pair, catalog_keystone: Any, restricted: str) -> None:
    service = catalog_keystone.issue_token(**SERVICE_USER)
    headers = {"X-Auth-Token": restricted, "X-Service-Token": service}
    assert same(placement, "DELETE", "/allocations/x", headers) == 200  # no rule needed
    ksm, amw = placement.send("GET", "/resource_providers", headers)
    assert amw == ksm and amw[3]["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"


def test_service_token_does_not_skip_the_catalog_check(
    catalog_keystone: Any, restricted: str
) -> None:
    pair = Pair(catalog_keystone, service_type="object-store")
    service = catalog_keystone.issue_token(**SERVICE_USER)
    headers = {"X-Auth-Token": restricted, "X-Service-Token": service}
    assert same(pair, "GET", "/resource_providers", headers) == 401


def test_identity_may_always_validate_tokens(catalog_keystone: Any, restricted: str) -> None:
    pair = Pair(catalog_keystone, service_type="identity")
    assert same(pair, "GET", "/v3/auth/tokens", {"X-Auth-Token": restricted}) == 200
    ksm, amw = pair.send("HEAD", "/v3/auth/tokens", {"X-Auth-Token": restricted})
    assert ksm[0] == amw[0] == 401 and ksm[2] == amw[2]  # (authmw's wsgi.py sends a body)
    assert same(pair, "GET", "/v3/users", {"X-Auth-Token": restricted}) == 401


@pytest.mark.parametrize("service_type", [None, "placement"])
def test_credentials_without_rules_are_not_limited(
    catalog_keystone: Any, unrestricted: str, service_type: str | None
) -> None:
    extra = {"service_type": service_type} if service_type else {}
    pair = Pair(catalog_keystone, **extra)
    assert same(pair, "DELETE", "/anything/at/all", {"X-Auth-Token": unrestricted}) == 200


def test_delayed_decision_passes_a_refused_token_on_as_invalid(
    catalog_keystone: Any, restricted: str
) -> None:
    pair = Pair(catalog_keystone, service_type="placement", delay_auth_decision="true")
    ksm, amw = pair.send("POST", "/resource_providers", {"X-Auth-Token": restricted})
    assert amw == ksm
    assert amw[0] == 200 and amw[3]["HTTP_X_IDENTITY_STATUS"] == "Invalid"


def test_invalid_service_token_with_delayed_decision_is_an_intended_difference(
    catalog_keystone: Any, restricted: str
) -> None:
    """keystonemiddleware skips the rules for any X-Service-Token, even an invalid one."""
    pair = Pair(catalog_keystone, service_type="placement", delay_auth_decision="true")
    headers = {"X-Auth-Token": restricted, "X-Service-Token": "gAAAAABnot-a-service-token"}
    (_, _, _, ksm_seen), (_, _, _, amw_seen) = pair.send("DELETE", "/allocations/x", headers)
    assert ksm_seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Invalid"
    assert ksm_seen["HTTP_X_IDENTITY_STATUS"] == "Confirmed"  # the rules were skipped
    assert amw_seen["HTTP_X_IDENTITY_STATUS"] == "Invalid"  # authmw checked them
    assert "HTTP_X_USER_ID" not in amw_seen
    assert amw_seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Invalid"  # as keystonemiddleware


def test_delayed_refusal_with_a_valid_service_token(catalog_keystone: Any, restricted: str) -> None:
    """service_type unset: both refuse the user token and pass the confirmed service
    token's headers on."""
    pair = Pair(catalog_keystone, delay_auth_decision="true")
    service = catalog_keystone.issue_token(**SERVICE_USER)
    headers = {"X-Auth-Token": restricted, "X-Service-Token": service}
    (ksm_status, _, _, ksm_seen), (amw_status, _, _, amw_seen) = pair.send(
        "GET", "/resource_providers", headers
    )
    assert ksm_status == amw_status == 200
    assert ksm_seen["HTTP_X_IDENTITY_STATUS"] == amw_seen["HTTP_X_IDENTITY_STATUS"] == "Invalid"
    assert "HTTP_X_USER_ID" not in ksm_seen and "HTTP_X_USER_ID" not in amw_seen
    assert ksm_seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
    assert amw_seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
    assert amw_seen["HTTP_X_SERVICE_USER_ID"] == ksm_seen["HTTP_X_SERVICE_USER_ID"]


def test_without_the_catalog_authmw_asks_again_with_it(
    catalog_keystone: Any, restricted: str
) -> None:
    """include_service_catalog = false: keystonemiddleware fails (its check reads the
    catalog it did not fetch); authmw fetches it for such tokens and checks."""
    pair = Pair(catalog_keystone, service_type="placement", include_service_catalog="false")
    with pytest.raises(KeyError, match="catalog"):
        Request.blank("/resource_providers", headers={"X-Auth-Token": restricted}).get_response(
            pair.ksm
        )
    for method, status in (("GET", 200), ("POST", 401)):
        request = Request.blank("/resource_providers", method=method)
        request.headers["X-Auth-Token"] = restricted
        assert request.get_response(pair.amw).status_int == status
    assert "HTTP_X_SERVICE_CATALOG" not in pair.amw_app.seen


def test_wsgi_middleware_with_a_validator(catalog_keystone: Any, restricted: str) -> None:
    validator = KeystoneValidator(
        catalog_keystone.url, service_type="placement", **catalog_keystone.service_credentials
    )
    app = WSGIAuthMiddleware(Recorder(), validator)
    for method, status in (("GET", 200), ("PATCH", 401)):
        request = Request.blank("/resource_providers/x", method=method)
        request.headers["X-Auth-Token"] = restricted
        response = request.get_response(app)
        assert response.status_int == status
    body = json.loads(response.body)
    assert body["error"]["message"] == "The request you have made requires authentication."
    validator.close()


def test_asgi_middleware_checks_the_mount_point_and_the_path(
    catalog_keystone: Any, restricted: str
) -> None:
    async def ok(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"user": request.scope["authmw.identity"].user_id})

    validator = KeystoneValidator(
        catalog_keystone.url, service_type="placement", **catalog_keystone.service_credentials
    )
    app = Starlette(routes=[Route("/{path:path}", ok, methods=["GET", "POST"])])
    app.add_middleware(ASGIAuthMiddleware, validator=validator)
    headers = {"X-Auth-Token": restricted}
    with TestClient(app) as client:
        assert client.get("/resource_providers/x", headers=headers).status_code == 200
        assert client.post("/resource_providers/x", headers=headers).status_code == 401
        assert client.get("/allocations", headers=headers).status_code == 401
    # Like keystonemiddleware (SCRIPT_NAME + PATH_INFO), the rules see the mount point.
    with TestClient(app, root_path="/placement") as client:
        assert client.get("/placement/resource_providers/x", headers=headers).status_code == 401


def test_every_validation_declares_access_rule_support() -> None:
    request = build_validation_request("http://ks/v3", "svc", "user")
    assert request.headers[ACCESS_RULES_HEADER] == "1"


SEGMENTS = st.sampled_from(["a", "b", "x.y", "*", "**", "{id}", "{", "}", "", "ab*", "%20"])


@given(
    pattern=st.lists(SEGMENTS, max_size=5).map("/".join),
    path=st.lists(st.sampled_from(["a", "b", "x.y", "xzy", "", "ab", "%20"]), max_size=5).map(
        "/".join
    ),
)
@settings(deadline=None)  # a loaded machine must not fail a property on time
def test_globs_match_as_keystonemiddleware_matches_them(pattern: str, path: str) -> None:
    facts = RequestFacts("GET", "/" + path, None, False)
    data = {
        "service_type": "placement",
        "in_catalog": True,
        "rules": [{"service": "placement", "method": "GET", "path": "/" + pattern}],
    }
    webob_path = Request({"PATH_INFO": "/" + path, "SCRIPT_NAME": ""}).path
    expected = bool(auth_token._path_matches(webob_path, "/" + pattern))
    assert (refusal({"access_rules": data}, facts) is None) == expected
