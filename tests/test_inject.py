"""Step 5, injection: what a decision puts into a request, and what it keeps to do so."""

from __future__ import annotations

from typing import Any

from authmw import Identity
from authmw._inject import inject_environ, inject_scope, scope_header_items
from authmw.core import AuthCore, Decision
from authmw.headers import IDENTITY_KEY, SERVICE_IDENTITY_KEY, wsgi_items


def member(user_id: str, user_name: str | None = None, **fields: Any) -> Identity:
    return Identity(
        user_id,
        user_name=user_name if user_name is not None else f"name-{user_id}",
        user_domain_id="default",
        project_id="p1",
        project_name="demo",
        project_domain_id="default",
        roles=("member", "reader"),
        **fields,
    )


def injected(decision: Decision) -> dict[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": "/"}
    inject_environ(environ, decision)
    return environ


def test_environ_gets_every_rendered_header_and_the_identity() -> None:
    identity = member("u1")
    environ = injected(AuthCore.confirmed(identity))
    assert environ[IDENTITY_KEY] is identity
    assert environ["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
    for key, value in wsgi_items(identity):
        assert environ[key] == value
    assert environ["HTTP_X_USER_ID"] == "u1"
    assert environ["HTTP_X_USER"] == environ["HTTP_X_USER_NAME"] == "name-u1"


def test_identities_of_one_scope_share_one_rendered_part() -> None:
    first, second = AuthCore.confirmed(member("u1")), AuthCore.confirmed(member("u2"))
    injected(first), injected(second)
    assert first.environ_items is second.environ_items
    assert "HTTP_X_USER_ID" not in (first.environ_items or {})
    assert injected(second)["HTTP_X_USER_ID"] == "u2"  # own values never shared
    assert first.environ_own is None  # plain values: read from the identity, no copy


def test_own_values_that_need_rewriting_are_kept_rewritten() -> None:
    identity = member("u1", user_name="J\u00fcrgen\r\nX-Roles: admin")
    decision = AuthCore.confirmed(identity)
    environ = injected(decision)
    name = environ["HTTP_X_USER_NAME"]
    assert "\r" not in name and "\n" not in name
    assert name.encode("latin-1").decode() == "J\u00fcrgen  X-Roles: admin"  # PEP 3333 form
    assert environ["HTTP_X_ROLES"] == "member,reader"
    headers = dict(scope_header_items(decision))
    assert headers[b"x-user-name"] == "J\u00fcrgen  X-Roles: admin".encode()
    assert headers[b"x-user"] == headers[b"x-user-name"]


def test_scope_gets_the_same_headers_as_bytes() -> None:
    identity = member("u1")
    decision = AuthCore.confirmed(identity)
    scope: dict[str, Any] = {"type": "http", "headers": [(b"host", b"x")]}
    inject_scope(scope, decision)
    headers = dict(scope["headers"])
    assert scope[IDENTITY_KEY] is identity
    assert headers[b"x-user-id"] == b"u1"
    assert headers[b"x-identity-status"] == b"Confirmed"
    assert headers[b"x-project-id"] == b"p1"
    for key, value in wsgi_items(identity):
        name = key[5:].lower().replace("_", "-").encode()
        assert headers[name] == value.encode("latin-1")


def test_service_token_decision_injects_both_identities() -> None:
    user, service = member("u1"), member("svc")
    decision = Decision(user, service_identity=service, service_status="Confirmed")
    environ = injected(decision)
    assert environ[IDENTITY_KEY] is user and environ[SERVICE_IDENTITY_KEY] is service
    assert environ["HTTP_X_USER_ID"] == "u1"
    assert environ["HTTP_X_SERVICE_USER_ID"] == "svc"
    assert environ["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
    headers = dict(scope_header_items(decision))
    assert headers[b"x-service-user-id"] == b"svc" and headers[b"x-user-id"] == b"u1"


def test_public_decision_injects_no_identity_and_no_status() -> None:
    environ = injected(Decision(None, status="Invalid", public=True))
    assert environ[IDENTITY_KEY] is None
    assert "HTTP_X_IDENTITY_STATUS" not in environ
