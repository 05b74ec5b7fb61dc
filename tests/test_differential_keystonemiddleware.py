"""Differential check: the same WSGI app behind keystonemiddleware and behind authmw.

Both validate the same real tokens against the same real Keystone; the app
must see the same identity. Intended differences, asserted explicitly:

- authmw omits absent values; keystonemiddleware writes ``None`` into the environ;
- authmw strips a client-sent ``OpenStack-System-Scope``; keystonemiddleware
  lets it through when it does not set it itself;
- authmw also tells whether the *service* token's project is the admin
  project (``X-Service-Is-Admin-Project``); keystonemiddleware has no such header.

Roles are compared as sets: Keystone does not keep their order from one
validation to the next, and each middleware validates on its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from keystonemiddleware import auth_token
from webob import Request

from authmw.paste import AuthProtocol

DEMO = {"user": "demo-user", "password": "demo-secret", "user_domain": "demo"}
DEMO_PROJECT = {"project": "demo-project", "project_domain": "demo"}
SYSTEM_READER = {
    "user": "system-reader",
    "password": "system-reader-secret",
    "user_domain": "Default",
}

ROLE_KEYS = {"HTTP_X_ROLES", "HTTP_X_ROLE", "HTTP_X_SERVICE_ROLES"}
PASSED_THROUGH = {"HTTP_HOST", "HTTP_X_AUTH_TOKEN", "HTTP_X_SERVICE_TOKEN"}


class Recorder:
    """The app: remembers the HTTP_* keys of the last request it saw."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def identity_view(seen: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for key, value in seen.items():
        if key in PASSED_THROUGH or value is None:
            continue
        if key in ROLE_KEYS:
            value = frozenset(value.split(","))
        elif key == "HTTP_X_SERVICE_CATALOG":
            value = json.loads(value)
        view[key] = value
    return view


class Pair:
    def __init__(self, keystone: Any, **extra: str) -> None:
        conf = {
            "auth_type": "password",
            "auth_url": keystone.url,
            "www_authenticate_uri": keystone.url,
            **keystone.service_credentials,
            "service_token_roles_required": "true",
            **extra,
        }
        self.ksm_app, self.amw_app = Recorder(), Recorder()
        self.ksm = auth_token.AuthProtocol(self.ksm_app, dict(conf))
        # keystonemiddleware waits without limit; give authmw room on a loaded machine
        self.amw = AuthProtocol(self.amw_app, {**conf, "timeout": "20"})

    def send(self, headers: dict[str, str]) -> tuple[Any, Any]:
        results = []
        for mw, app in ((self.ksm, self.ksm_app), (self.amw, self.amw_app)):
            app.seen = None
            response = Request.blank("/v2/servers", headers=headers).get_response(mw)
            results.append((response, app.seen))
        return results[0], results[1]


@pytest.fixture(scope="module")
def pair(keystone: Any) -> Pair:
    return Pair(keystone)


@pytest.fixture(scope="module")
def delayed(keystone: Any) -> Pair:
    return Pair(keystone, delay_auth_decision="true")


FORGED = {
    "X-Roles": "admin",
    "X-User-Id": "forged-user",
    "X-Project-Id": "forged-project",
    "X-Is-Admin-Project": "True",
    "X-Service-Roles": "service",
    "X-Identity-Status": "Confirmed",
}


def same_identity(pair: Pair, headers: dict[str, str]) -> dict[str, Any]:
    (ksm_response, ksm_seen), (amw_response, amw_seen) = pair.send(headers)
    assert ksm_response.status_int == amw_response.status_int == 200
    assert ksm_seen is not None and amw_seen is not None
    ksm_view, amw_view = identity_view(ksm_seen), identity_view(amw_seen)
    service_admin = amw_view.pop("HTTP_X_SERVICE_IS_ADMIN_PROJECT", None)
    if "HTTP_X_SERVICE_USER_ID" in amw_view:
        assert service_admin in ("True", "False")
    else:
        assert service_admin is None
    assert amw_view == ksm_view
    # authmw writes strings only; keystonemiddleware's None values are the ones it omits
    assert all(isinstance(v, str) for v in amw_seen.values())
    assert {k for k, v in ksm_seen.items() if v is None}.isdisjoint(amw_seen)
    return amw_view


@pytest.mark.parametrize(
    ("kind", "scope"),
    [
        ("project", DEMO_PROJECT),
        ("domain", {"domain": "demo"}),
        ("unscoped", {"unscoped": True}),
    ],
)
def test_user_tokens(keystone: Any, pair: Pair, kind: str, scope: dict[str, Any]) -> None:
    token = keystone.issue_token(**DEMO, **scope)
    view = same_identity(pair, {"X-Auth-Token": token, **FORGED})
    assert view["HTTP_X_USER_NAME"] == "demo-user"
    assert view["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
    assert "admin" not in view.get("HTTP_X_ROLES", ())
    assert view.get("HTTP_X_PROJECT_ID") != "forged-project"


def test_system_token(keystone: Any, pair: Pair) -> None:
    token = keystone.issue_token(**SYSTEM_READER, system=True)
    view = same_identity(pair, {"X-Auth-Token": token})
    assert view["HTTP_OPENSTACK_SYSTEM_SCOPE"] == "all"


def test_admin_project_token(keystone: Any, pair: Pair) -> None:
    view = same_identity(pair, {"X-Auth-Token": keystone.admin_token()})
    assert view["HTTP_X_IS_ADMIN_PROJECT"] == "True"
    assert "admin" in view["HTTP_X_ROLES"]


def test_service_token_pair(keystone: Any, pair: Pair) -> None:
    user = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    service = keystone.issue_token(
        user=keystone.service_credentials["username"],
        password=keystone.service_credentials["password"],
        user_domain="Default",
        project="service",
        project_domain="Default",
    )
    view = same_identity(pair, {"X-Auth-Token": user, "X-Service-Token": service, **FORGED})
    assert view["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
    assert view["HTTP_X_USER_NAME"] == "demo-user"
    assert view["HTTP_X_SERVICE_USER_NAME"] == keystone.service_credentials["username"]
    assert "service" in view["HTTP_X_SERVICE_ROLES"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Auth-Token": "gAAAAABnot-a-real-token"},
        {"X-Roles": "admin", "X-Identity-Status": "Confirmed"},
    ],
)
def test_rejections(pair: Pair, headers: dict[str, str]) -> None:
    (ksm_response, ksm_seen), (amw_response, amw_seen) = pair.send(headers)
    assert ksm_response.status_int == amw_response.status_int == 401
    assert ksm_response.headers["WWW-Authenticate"] == amw_response.headers["WWW-Authenticate"]
    assert ksm_seen is None and amw_seen is None


def test_revoked_token(keystone: Any, pair: Pair) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    keystone.revoke(token)
    (ksm_response, _), (amw_response, _) = pair.send({"X-Auth-Token": token})
    assert ksm_response.status_int == amw_response.status_int == 401


def test_invalid_service_token(keystone: Any, pair: Pair) -> None:
    user = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    (ksm_response, _), (amw_response, _) = pair.send(
        {"X-Auth-Token": user, "X-Service-Token": "gAAAAABnot-a-service-token"}
    )
    assert ksm_response.status_int == amw_response.status_int == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Auth-Token": "gAAAAABnot-a-real-token", **FORGED},
        FORGED,
    ],
)
def test_delayed_decision_invalid(delayed: Pair, headers: dict[str, str]) -> None:
    (ksm_response, ksm_seen), (amw_response, amw_seen) = delayed.send(headers)
    assert ksm_response.status_int == amw_response.status_int == 200
    assert identity_view(amw_seen) == identity_view(ksm_seen)
    assert identity_view(amw_seen)["HTTP_X_IDENTITY_STATUS"] == "Invalid"


def test_forged_system_scope_is_the_intended_difference(delayed: Pair) -> None:
    (_, ksm_seen), (_, amw_seen) = delayed.send({"OpenStack-System-Scope": "all"})
    assert ksm_seen["HTTP_OPENSTACK_SYSTEM_SCOPE"] == "all"  # keystonemiddleware lets it in
    assert "HTTP_OPENSTACK_SYSTEM_SCOPE" not in amw_seen  # authmw strips it
    ksm_view = identity_view(ksm_seen)
    del ksm_view["HTTP_OPENSTACK_SYSTEM_SCOPE"]
    assert identity_view(amw_seen) == ksm_view


def test_delayed_decision_valid_token(keystone: Any, delayed: Pair) -> None:
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    view = same_identity(delayed, {"X-Auth-Token": token, **FORGED})
    assert view["HTTP_X_PROJECT_NAME"] == "demo-project"
