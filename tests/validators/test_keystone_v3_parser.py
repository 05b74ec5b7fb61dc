"""The sans-I/O half of KeystoneValidator: request building and answer parsing.

The bodies are answers captured from the real Keystone 30.0.0 the suite runs
(GET /v3/auth/tokens), one per scope; the real-server tests are in
test_keystone_validator.py.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authmw._compact import thawed
from authmw.errors import IdentityServiceUnavailable, InvalidToken
from authmw.identity import Identity
from authmw.validators._keystone_v3 import (
    ServiceTokenRejected,
    build_validation_request,
    check_subject_token,
    identity_from_token,
    interpret_validation_response,
)

DEMO_DOMAIN = {"id": "d0a3d29fb654442f9ff0102739548008", "name": "demo"}
DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
DEMO_USER = {
    "domain": DEMO_DOMAIN,
    "id": "a6b05be4e4e54d55be0ad94c4453ec4d",
    "name": "demo-user",
    "password_expires_at": None,
}
ISSUED = "2026-11-23T12:27:43.000000Z"
EXPIRES = "2026-11-23T13:27:43.000000Z"
EXPIRES_TS = datetime(2026, 11, 23, 13, 27, 43, tzinfo=timezone.utc).timestamp()
NOW = EXPIRES_TS - 1800

PROJECT = {
    "methods": ["password"],
    "user": DEMO_USER,
    "audit_ids": ["SN6zsK-FRACe296XXUZKLw"],
    "expires_at": EXPIRES,
    "issued_at": ISSUED,
    "project": {
        "domain": DEMO_DOMAIN,
        "id": "15019379c35849969f88869cb10f7112",
        "name": "demo-project",
    },
    "is_domain": False,
    "roles": [
        {"id": "b7873bcbdc2f4180a83443ab318626ca", "name": "member"},
        {"id": "4ca98e9ddabe4a33bee3ef93409a918e", "name": "reader"},
    ],
    "is_admin_project": False,
}
DOMAIN = {
    "methods": ["password"],
    "user": DEMO_USER,
    "audit_ids": ["eOZWJV-vSWG4oE-lSNPH4w"],
    "expires_at": EXPIRES,
    "issued_at": ISSUED,
    "domain": DEMO_DOMAIN,
    "roles": [{"id": "4ca98e9ddabe4a33bee3ef93409a918e", "name": "reader"}],
}
SYSTEM = {
    "methods": ["password"],
    "user": {
        "domain": DEFAULT_DOMAIN,
        "id": "1cd3889a5408436c9a1627ac3e2d7a2e",
        "name": "system-reader",
        "password_expires_at": None,
    },
    "audit_ids": ["MhNH3iG4Q86K7Lge2KBa8g"],
    "expires_at": EXPIRES,
    "issued_at": ISSUED,
    "roles": [{"id": "4ca98e9ddabe4a33bee3ef93409a918e", "name": "reader"}],
    "system": {"all": True},
}
UNSCOPED = {
    "methods": ["password"],
    "user": DEMO_USER,
    "audit_ids": ["ooeTj1EwS8y5-LyXAMVk_g"],
    "expires_at": EXPIRES,
    "issued_at": ISSUED,
}
APP_CRED = {
    "methods": ["application_credential"],
    "user": {
        "domain": DEFAULT_DOMAIN,
        "id": "dc701553cb11415093e7da00be44aee1",
        "name": "service-user",
        "password_expires_at": None,
    },
    "audit_ids": ["A8DLCU45RP6cUo_zS7YQ6A"],
    "expires_at": EXPIRES,
    "issued_at": ISSUED,
    "project": {
        "domain": DEFAULT_DOMAIN,
        "id": "c97ac7b8a47e4015930bf0088eefe791",
        "name": "service",
    },
    "is_domain": False,
    "roles": [{"id": "d647dbe41adb471684075086ad21e531", "name": "service"}],
    "is_admin_project": False,
    "application_credential": {
        "id": "940e559469004187bab9cf93929c0a36",
        "name": "ac-5bd59b",
        "restricted": True,
    },
}
CATALOG = [
    {
        "endpoints": [
            {
                "id": "d7a072c13f14404faec8979703e6e715",
                "interface": "public",
                "region_id": "RegionOne",
                "url": "http://127.0.0.1:5101/v3",
                "region": "RegionOne",
            }
        ],
        "id": "5b5acd7efbd0414ca29dd2874b7d9bc6",
        "type": "identity",
        "name": "keystone",
    }
]


def answer(token: dict[str, Any], status: int = 200, **kwargs: Any) -> Identity:
    kwargs.setdefault("now", NOW)
    return interpret_validation_response(status, json.dumps({"token": token}).encode(), **kwargs)


def test_project_scoped_token() -> None:
    identity = answer(PROJECT)
    assert identity.scope == "project"
    assert identity.user_id == DEMO_USER["id"]
    assert identity.user_name == "demo-user"
    assert (identity.user_domain_id, identity.user_domain_name) == (DEMO_DOMAIN["id"], "demo")
    assert (identity.project_id, identity.project_name) == (
        "15019379c35849969f88869cb10f7112",
        "demo-project",
    )
    assert (identity.project_domain_id, identity.project_domain_name) == (DEMO_DOMAIN["id"], "demo")
    assert identity.domain_id is None and identity.domain_name is None
    assert identity.system_scope is None
    assert identity.roles == ("member", "reader")
    assert identity.is_admin_project is False
    assert identity.methods == ("password",)
    assert identity.audit_ids == ("SN6zsK-FRACe296XXUZKLw",)
    assert identity.expires_at == datetime(2026, 11, 23, 13, 27, 43, tzinfo=timezone.utc)
    assert identity.issued_at == datetime(2026, 11, 23, 12, 27, 43, tzinfo=timezone.utc)
    assert identity.service_catalog is None
    assert identity.application_credential is None
    assert (
        identity.token_body is not None and identity.token_body["project"]["name"] == "demo-project"
    )


def test_domain_scoped_token() -> None:
    identity = answer(DOMAIN)
    assert identity.scope == "domain"
    assert (identity.domain_id, identity.domain_name) == (DEMO_DOMAIN["id"], "demo")
    assert identity.project_id is None and identity.project_domain_name is None
    assert identity.roles == ("reader",)
    # Keystone sends is_admin_project only for project tokens; clients read True.
    assert identity.is_admin_project is True


def test_system_scoped_token() -> None:
    identity = answer(SYSTEM)
    assert identity.scope == "system"
    assert identity.system_scope == "all"
    assert identity.project_id is None and identity.domain_id is None
    assert identity.user_domain_name == "Default"


def test_system_without_all_is_not_system_scope() -> None:
    identity = answer({**SYSTEM, "system": {}})
    assert identity.system_scope is None
    assert identity.scope == "unscoped"


def test_unscoped_token() -> None:
    identity = answer(UNSCOPED)
    assert identity.scope == "unscoped"
    assert identity.roles == ()
    assert identity.is_admin_project is True


def test_application_credential_token() -> None:
    identity = answer(APP_CRED)
    assert identity.methods == ("application_credential",)
    assert identity.application_credential is not None
    assert identity.application_credential["id"] == "940e559469004187bab9cf93929c0a36"
    assert identity.application_credential["restricted"] is True
    assert identity.project_name == "service"


def test_roles_keep_keystone_order() -> None:
    token = {**PROJECT, "roles": [{"id": "1", "name": "reader"}, {"id": "2", "name": "Member"}]}
    identity = answer(token)
    assert identity.roles == ("reader", "Member")
    assert identity.has_role("member")


def test_catalog_only_when_asked() -> None:
    token = {**PROJECT, "catalog": CATALOG}
    assert answer(token).service_catalog is None
    catalog = answer(token, include_catalog=True).service_catalog
    assert catalog is not None
    assert catalog[0]["type"] == "identity"
    assert catalog[0]["endpoints"][0]["interface"] == "public"


def test_expired_token_rejected_even_if_keystone_returns_it() -> None:
    with pytest.raises(InvalidToken, match="expired"):
        answer(PROJECT, now=EXPIRES_TS + 1)
    with pytest.raises(InvalidToken):
        answer(PROJECT, now=EXPIRES_TS)


def test_leeway_accepts_small_clock_skew() -> None:
    assert answer(PROJECT, now=EXPIRES_TS + 5, leeway=10).user_name == "demo-user"
    with pytest.raises(InvalidToken):
        answer(PROJECT, now=EXPIRES_TS + 11, leeway=10)


def test_allow_expired_accepts_expired_token() -> None:
    identity = answer(PROJECT, now=EXPIRES_TS + 3600, allow_expired=True)
    assert identity.project_name == "demo-project"


def test_404_is_invalid_token() -> None:
    body = (
        b'{"error":{"code":404,"message":"Could not recognize Fernet token","title":"Not Found"}}'
    )
    with pytest.raises(InvalidToken):
        interpret_validation_response(404, body, now=NOW)


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_mean_our_service_token_was_refused(status: int) -> None:
    with pytest.raises(ServiceTokenRejected) as info:
        interpret_validation_response(status, b"{}", now=NOW)
    assert info.value.status_code == status


@pytest.mark.parametrize("status", [400, 413, 414, 431])
def test_refusals_of_the_request_are_invalid_tokens(status: int) -> None:
    # Only the subject token varies between validations: a request refused
    # for its form or size was refused for the token.
    with pytest.raises(InvalidToken):
        interpret_validation_response(status, b"<html>Bad Request</html>", now=NOW)


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504, 201, 204, 301])
def test_other_statuses_are_unavailable(status: int) -> None:
    with pytest.raises(IdentityServiceUnavailable):
        interpret_validation_response(status, json.dumps({"token": PROJECT}).encode(), now=NOW)


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    token = copy.deepcopy(PROJECT)
    node: Any = token
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return token


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"token": null}',
        b'{"token": []}',
        json.dumps({"token": _without(("user",))}).encode(),
        json.dumps({"token": _without(("user", "id"))}).encode(),
        json.dumps({"token": {**PROJECT, "user": {**DEMO_USER, "id": ""}}}).encode(),
        json.dumps({"token": {**PROJECT, "user": {**DEMO_USER, "id": 7}}}).encode(),
        json.dumps({"token": {**PROJECT, "roles": [{"id": "1"}]}}).encode(),
        json.dumps({"token": {**PROJECT, "roles": "admin"}}).encode(),
        json.dumps({"token": {**PROJECT, "roles": ["admin"]}}).encode(),
        json.dumps({"token": {**PROJECT, "expires_at": "tomorrow"}}).encode(),
        json.dumps({"token": {**PROJECT, "expires_at": 1700000000}}).encode(),
        json.dumps({"token": {**PROJECT, "is_admin_project": "false"}}).encode(),
        json.dumps({"token": {**PROJECT, "system": True}}).encode(),
        json.dumps({"token": {**PROJECT, "project": "demo"}}).encode(),
        json.dumps({"token": {**PROJECT, "audit_ids": "abc"}}).encode(),
        json.dumps({"token": {**PROJECT, "application_credential": "x"}}).encode(),
    ],
)
def test_malformed_bodies_are_unavailable_never_partial(body: bytes) -> None:
    with pytest.raises(IdentityServiceUnavailable, match="malformed"):
        interpret_validation_response(200, body, now=NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 401, 403, 404, 500]),
    mutation=st.dictionaries(
        st.sampled_from([*sorted(PROJECT), "system", "domain", "catalog"]), json_values, max_size=3
    ),
)
def test_any_answer_gives_identity_or_one_of_the_known_errors(
    status: int, mutation: dict[str, Any]
) -> None:
    body = json.dumps({"token": {**PROJECT, **mutation}}).encode()
    try:
        identity = interpret_validation_response(status, body, now=NOW, include_catalog=True)
    except (InvalidToken, IdentityServiceUnavailable, ServiceTokenRejected):
        return
    assert status == 200
    assert identity.user_id


def test_an_answer_keeps_its_own_token_object_as_the_body() -> None:
    body = json.dumps({"token": PROJECT}).encode()
    identity = interpret_validation_response(200, body, now=NOW)
    assert identity.token_body == identity_from_token(copy.deepcopy(PROJECT)).token_body
    assert thawed(identity.token_body) == PROJECT
    assert identity.token_body is not None
    assert "token" not in identity.token_body  # the member, not the whole answer


def test_identity_from_token_keeps_raw_body_read_only() -> None:
    identity = identity_from_token(PROJECT)
    assert identity.token_body == identity_from_token(copy.deepcopy(PROJECT)).token_body
    with pytest.raises(TypeError):
        identity.token_body["user"] = {}  # type: ignore[index]


def test_validation_request_without_catalog() -> None:
    request = build_validation_request("http://ks:5000/v3", "svc-token", "user-token")
    assert request.method == "GET"
    assert request.url.path == "/v3/auth/tokens"
    assert request.url.query == b"nocatalog="
    assert request.headers["X-Auth-Token"] == "svc-token"
    assert request.headers["X-Subject-Token"] == "user-token"


def test_validation_request_with_catalog_and_allow_expired() -> None:
    request = build_validation_request(
        "http://ks:5000/identity/v3", "s", "u", include_catalog=True, allow_expired=True
    )
    assert request.url.path == "/identity/v3/auth/tokens"
    assert request.url.params["allow_expired"] == "1"
    assert "nocatalog" not in request.url.params


@pytest.mark.parametrize(
    "token", ["", "a b", "tok\n", "tok\t", "tok\r\nX-Roles: admin", "tök", "\x00abc", "a\x7f"]
)
def test_tokens_that_cannot_be_tokens_are_rejected_locally(token: str) -> None:
    with pytest.raises(InvalidToken):
        check_subject_token(token)


def test_local_check_has_no_size_limit() -> None:
    # The middleware's max_token_size is the only size limit.
    check_subject_token("x" * 100_000)


def test_fernet_shaped_token_passes_local_check() -> None:
    check_subject_token("gAAAAABrBDE__nuKjQxwR_ZLnZkSyqG9-NYBqygnSsHS9kH-qwTbPjURrg4lUZ4H2XVwmjzX")
