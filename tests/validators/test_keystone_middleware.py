"""WSGI and ASGI apps behind authmw with KeystoneValidator and the real Keystone.

Revocation with and without the cache, outages and recovery, service token
pairs (including an expired user token let through by a service token), and
FIWARE service scopes with the seeded "smartcity" domain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from webob import Request

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.client import KeystoneV3Password
from authmw.errors import InvalidToken
from authmw.validators.keystone import KeystoneValidator

DEMO = {"user": "demo-user", "project": "demo-project", "project_domain": "demo"}


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_X_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def get(app: Any, **headers: str) -> Any:
    return Request.blank("/things", headers=headers).get_response(app)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def validator(keystone: Any) -> Iterator[KeystoneValidator]:
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as v:
        yield v


# -- revocation ---------------------------------------------------------------------


def test_revoked_token_rejected_once_the_cache_entry_expires(
    keystone: Any, validator: KeystoneValidator
) -> None:
    clock = Clock()
    app = WSGIAuthMiddleware(echo, validator, cache_time=60, timer=clock)
    token = keystone.issue_token(**DEMO)
    assert get(app, **{"X-Auth-Token": token}).status_int == 200
    keystone.revoke(token)
    assert get(app, **{"X-Auth-Token": token}).status_int == 200  # still cached: the bound
    clock.now += 61
    assert get(app, **{"X-Auth-Token": token}).status_int == 401


def test_revoked_token_rejected_at_once_without_cache(
    keystone: Any, validator: KeystoneValidator
) -> None:
    app = WSGIAuthMiddleware(echo, validator, cache_time=0)
    token = keystone.issue_token(**DEMO)
    assert get(app, **{"X-Auth-Token": token}).status_int == 200
    keystone.revoke(token)
    response = get(app, **{"X-Auth-Token": token})
    assert response.status_int == 401
    assert response.headers["WWW-Authenticate"].startswith("Keystone")


# -- outages --------------------------------------------------------------------------


def test_outage_gives_503_for_uncached_tokens_and_recovers(keystone_disposable: Any) -> None:
    ks = keystone_disposable
    cached = ks.issue_token(**DEMO)
    uncached = ks.issue_token("demo-user", domain="demo")
    validator = KeystoneValidator(ks.url, **ks.service_credentials)
    wsgi = WSGIAuthMiddleware(echo, validator, failure_threshold=100)
    asgi = ASGIAuthMiddleware(user_app(), validator, failure_threshold=100)
    with TestClient(asgi) as client:
        assert get(wsgi, **{"X-Auth-Token": cached}).status_int == 200
        ks.stop()
        response = get(wsgi, **{"X-Auth-Token": uncached})
        assert response.status_int == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert get(wsgi, **{"X-Auth-Token": cached}).status_int == 200  # from the cache
        assert client.get("/me", headers={"X-Auth-Token": uncached}).status_code == 503
        ks.start()  # same port; neither app nor validator is rebuilt
        response = get(wsgi, **{"X-Auth-Token": uncached})
        assert response.status_int == 200
        assert response.json["HTTP_X_DOMAIN_NAME"] == "demo"
        asgi_response = client.get("/me", headers={"X-Auth-Token": uncached})
        assert asgi_response.status_code == 200
        assert asgi_response.json()["user"] == "demo-user"
    validator.close()


# -- ASGI ---------------------------------------------------------------------------


def user_app() -> Starlette:
    async def me(request: StarletteRequest) -> JSONResponse:
        identity = request.scope["authmw.identity"]
        service = request.scope.get("authmw.service_identity")
        return JSONResponse(
            {
                "user": identity.user_name,
                "project": identity.project_name,
                "roles": sorted(identity.roles),
                "x_user_name": request.headers.get("x-user-name"),
                "service": service.user_name if service else None,
                "service_status": request.headers.get("x-service-identity-status"),
            }
        )

    return Starlette(routes=[Route("/me", me)])


def test_asgi_app_validates_natively_and_closes_its_client(keystone: Any) -> None:
    validator = KeystoneValidator(keystone.url, **keystone.service_credentials)
    app = ASGIAuthMiddleware(user_app(), validator)
    token = keystone.issue_token(**DEMO)
    with TestClient(app) as client:
        response = client.get("/me", headers={"X-Auth-Token": token, "X-Roles": "admin"})
        assert response.status_code == 200
        assert response.json()["user"] == "demo-user"
        assert response.json()["x_user_name"] == "demo-user"
        assert "admin" not in response.json()["roles"]
        clients = list(validator._async_clients.values())
        assert len(clients) == 1  # the async path ran in the app's loop
        assert client.get("/me").status_code == 401
        assert client.get("/me", headers={"X-Auth-Token": "gAAAAAB-bad"}).status_code == 401
    assert clients[0].is_closed  # lifespan shutdown closed it
    validator.close()


# -- service tokens ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_service_token_pair(keystone: Any, validator: KeystoneValidator, kind: str) -> None:
    user = keystone.issue_token(**DEMO)
    service = keystone.service_token()
    headers = {"X-Auth-Token": user, "X-Service-Token": service}
    if kind == "wsgi":
        app = WSGIAuthMiddleware(echo, validator, service_token_roles_required=True)
        seen = get(app, **headers).json
        assert seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
        assert seen["HTTP_X_SERVICE_USER_NAME"] == "service-user"
        assert seen["HTTP_X_USER_NAME"] == "demo-user"  # not overwritten by the service
        assert seen["HTTP_X_PROJECT_NAME"] == "demo-project"
        return
    with TestClient(ASGIAuthMiddleware(user_app(), validator)) as client:
        body = client.get("/me", headers=headers).json()
    assert body["user"] == "demo-user"
    assert body["service"] == "service-user"
    assert body["service_status"] == "Confirmed"


def test_service_token_without_service_role(keystone: Any, validator: KeystoneValidator) -> None:
    user = keystone.issue_token(**DEMO)
    not_a_service = keystone.issue_token("demo-reader", project="demo-project")
    headers = {"X-Auth-Token": user, "X-Service-Token": not_a_service}
    strict = WSGIAuthMiddleware(echo, validator, service_token_roles_required=True)
    assert get(strict, **headers).status_int == 401
    delayed = WSGIAuthMiddleware(
        echo, validator, service_token_roles_required=True, delay_auth_decision=True
    )
    seen = get(delayed, **headers).json
    assert seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Invalid"


def test_invalid_service_token(keystone: Any, validator: KeystoneValidator) -> None:
    user = keystone.issue_token(**DEMO)
    app = WSGIAuthMiddleware(echo, validator)
    assert get(app, **{"X-Auth-Token": user, "X-Service-Token": "gAAAAAB-nope"}).status_int == 401


@pytest.fixture
def short_lived_keystone(make_keystone: Callable[..., Any]) -> Any:
    """A private Keystone whose tokens live 6 seconds."""
    return make_keystone(token_expiration=6)


def test_expired_user_token_with_service_token(short_lived_keystone: Any) -> None:
    ks = short_lived_keystone
    user = ks.issue_token(**DEMO)
    body = ks.token_body(user)["token"]
    validator = KeystoneValidator(ks.url, **ks.service_credentials)
    expires = validator.validate(user).expires_timestamp
    assert expires - time.time() <= 7
    time.sleep(max(0.0, expires - time.time()) + 1.5)

    with pytest.raises(InvalidToken):
        validator.validate(user)
    assert validator.validate(user, allow_expired=True).user_name == "demo-user"

    app = WSGIAuthMiddleware(echo, validator, service_token_roles_required=True)
    assert get(app, **{"X-Auth-Token": user}).status_int == 401
    service = ks.service_token()  # fresh, so valid
    seen = get(app, **{"X-Auth-Token": user, "X-Service-Token": service}).json
    assert seen["HTTP_X_SERVICE_IDENTITY_STATUS"] == "Confirmed"
    assert seen["HTTP_X_USER_ID"] == body["user"]["id"]
    # The validator's own 6-second token is renewed on its own as time passes.
    assert validator.auth.token is not None
    validator.close()


# -- FIWARE ---------------------------------------------------------------------------


def fiware_app(validator: KeystoneValidator) -> WSGIAuthMiddleware:
    return WSGIAuthMiddleware(echo, validator, fiware_service_scope=True)


def test_fiware_subservice(keystone: Any, validator: KeystoneValidator) -> None:
    token = keystone.issue_token("gardener", project="/gardens", project_domain="smartcity")
    identity = validator.validate(token)
    assert (identity.project_name, identity.project_domain_name) == ("/gardens", "smartcity")
    app = fiware_app(validator)
    ok = get(
        app,
        **{"X-Auth-Token": token, "Fiware-Service": "smartcity", "Fiware-ServicePath": "/gardens"},
    )
    assert ok.status_int == 200
    assert ok.json["HTTP_X_PROJECT_NAME"] == "/gardens"
    for service, path in [("smartcity", "/parks"), ("demo", "/gardens"), ("smartcity", "/")]:
        response = get(
            app, **{"X-Auth-Token": token, "Fiware-Service": service, "Fiware-ServicePath": path}
        )
        assert response.status_int == 401, (service, path)
    assert get(app, **{"X-Auth-Token": token}).status_int == 401  # Fiware-Service required


def test_fiware_service(keystone: Any, validator: KeystoneValidator) -> None:
    token = keystone.issue_token("gardener", domain="smartcity")
    identity = validator.validate(token)
    assert (identity.scope, identity.domain_name) == ("domain", "smartcity")
    app = fiware_app(validator)
    ok = get(
        app, **{"X-Auth-Token": token, "Fiware-Service": "smartcity", "Fiware-ServicePath": "/"}
    )
    assert ok.status_int == 200
    assert ok.json["HTTP_X_DOMAIN_NAME"] == "smartcity"
    wrong = get(
        app,
        **{"X-Auth-Token": token, "Fiware-Service": "smartcity", "Fiware-ServicePath": "/gardens"},
    )
    assert wrong.status_int == 401


def test_fiware_tokens_acquired_with_the_client(
    keystone: Any, validator: KeystoneValidator
) -> None:
    gardener = keystone.user("gardener")
    common = {
        "username": "gardener",
        "password": gardener["password"],
        "user_domain_name": "smartcity",
    }
    with httpx.Client() as client:
        service_token = KeystoneV3Password(
            keystone.url, domain_name="smartcity", **common
        ).get_token(client)
        subservice_token = KeystoneV3Password(
            keystone.url, project_name="/gardens", project_domain_name="smartcity", **common
        ).get_token(client)
    assert validator.validate(service_token).domain_name == "smartcity"
    assert validator.validate(subservice_token).project_name == "/gardens"
