"""A real Flask app and a real Django app, wrapped the way their users wrap them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test.utils import override_settings
from django.urls import path
from flask import Flask, jsonify, request
from helpers import BAD, GOOD, OTHER, Counting, counting, full_identity, outage
from webob import Request

from authmw import Identity, WSGIAuthMiddleware

# -- Flask ------------------------------------------------------------------------------


def flask_app(validator: Any = None, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/whoami")
    def whoami() -> Any:
        identity: Identity | None = request.environ["authmw.identity"]
        return jsonify(
            user=identity.user_id if identity else None,
            roles=request.headers.get("X-Roles"),
            status=request.headers.get("X-Identity-Status"),
            admin=request.headers.get("X-Is-Admin-Project"),
            tenant=request.headers.get("X-Tenant"),
            scope=request.headers.get("OpenStack-System-Scope"),
        )

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(ok=True, roles=request.headers.get("X-Roles"))

    @app.get("/private")
    def private() -> Any:
        if request.environ["authmw.identity"] is None:
            return jsonify(error="login first"), 401
        return jsonify(ok=True)

    app.wsgi_app = WSGIAuthMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, validator or counting(), **options
    )
    return app


def test_flask_good_token() -> None:
    client = flask_app(counting(full_identity())).test_client()
    response = client.get("/whoami", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 200
    assert response.json == {
        "user": "u-123",
        "roles": "Member,reader,Admin",
        "status": "Confirmed",
        "admin": "False",
        "tenant": "Project X",
        "scope": None,
    }


def test_flask_rejections() -> None:
    client = flask_app(counting()).test_client()
    missing = client.get("/whoami")
    assert missing.status_code == 401
    assert missing.json is not None and missing.json["error"]["code"] == 401
    assert missing.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    assert client.get("/whoami", headers={"X-Auth-Token": BAD}).status_code == 401
    assert client.get("/whoami", headers={"X-Auth-Token": "t" * 9000}).status_code == 401
    # werkzeug folds repeated headers with "," like a real server
    repeated = client.get("/whoami", headers=[("X-Auth-Token", GOOD), ("X-Auth-Token", OTHER)])
    assert repeated.status_code == 401
    same = client.get("/whoami", headers=[("X-Auth-Token", GOOD), ("X-Auth-Token", GOOD)])
    assert same.status_code == 200


def test_flask_outage() -> None:
    client = flask_app(outage()).test_client()
    response = client.get("/whoami", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json is not None and response.json["error"]["code"] == 503


def test_flask_forged_headers() -> None:
    client = flask_app(counting(Identity("u1", roles=("reader",)))).test_client()
    forged = {"X_Roles": "admin", "x-is-admin-project": "True", "OpenStack-System-Scope": "all"}
    response = client.get("/whoami", headers={**forged, "X-Auth-Token": GOOD})
    assert response.json is not None
    assert response.json["roles"] == "reader"
    assert response.json["admin"] == "True"  # the real value of Identity("u1")
    assert response.json["scope"] is None
    forged["X-Is-Admin-Project"] = "True"
    delayed = flask_app(counting(), delay_auth_decision=True).test_client()
    response = delayed.get("/whoami", headers=forged)
    assert response.json is not None
    assert response.json == {
        "user": None,
        "roles": None,
        "status": "Invalid",
        "admin": None,
        "tenant": None,
        "scope": None,
    }


def test_flask_delayed_mode_and_own_401() -> None:
    client = flask_app(counting(), delay_auth_decision=True).test_client()
    response = client.get("/private")
    assert response.status_code == 401
    assert response.json == {"error": "login first"}
    assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
    assert client.get("/private", headers={"X-Auth-Token": GOOD}).status_code == 200


def test_flask_public_route() -> None:
    client = flask_app(counting(), public_routes=["GET /healthz"]).test_client()
    response = client.get("/healthz", headers={"X-Roles": "admin"})
    assert response.status_code == 200
    assert response.json == {"ok": True, "roles": None}
    assert client.get("/whoami").status_code == 401


def test_flask_through_httpx() -> None:
    app = flask_app(counting())
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://flask") as client:
        assert client.get("/whoami", headers={"X-Auth-Token": GOOD}).json()["user"] == "u-123"
        assert client.get("/whoami").status_code == 401


# -- Django -----------------------------------------------------------------------------

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="authmw-tests-not-secret",
        ALLOWED_HOSTS=["testserver", "localhost", "django"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def whoami(request: HttpRequest) -> HttpResponse:
    identity: Identity | None = request.META["authmw.identity"]
    return JsonResponse(
        {
            "user": identity.user_id if identity else None,
            "roles": request.headers.get("X-Roles"),
            "status": request.headers.get("X-Identity-Status"),
            "project": request.META.get("HTTP_X_PROJECT_ID"),
            "domain": request.META.get("HTTP_X_USER_DOMAIN_NAME"),
        }
    )


def private(request: HttpRequest) -> HttpResponse:
    if request.META["authmw.identity"] is None:
        return JsonResponse({"error": "login first"}, status=401)
    return JsonResponse({"ok": True})


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True, "roles": request.headers.get("X-Roles")})


urlpatterns = [path("whoami", whoami), path("private", private), path("healthz", healthz)]


@pytest.fixture
def django_wsgi() -> Iterator[type[WSGIHandler]]:
    # Another test module may have configured Django first: point it at our URLs.
    with override_settings(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver", "localhost", "django"],
        MIDDLEWARE=[],
        DEBUG=False,
    ):
        yield WSGIHandler


def django_client(handler: type[WSGIHandler], validator: Any, **options: Any) -> httpx.Client:
    application = WSGIAuthMiddleware(handler(), validator, **options)
    return httpx.Client(transport=httpx.WSGITransport(app=application), base_url="http://django")


def test_django_good_token(django_wsgi: type[WSGIHandler]) -> None:
    with django_client(django_wsgi, counting(full_identity())) as client:
        response = client.get("/whoami", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 200
    assert response.json() == {
        "user": "u-123",
        "roles": "Member,reader,Admin",
        "status": "Confirmed",
        "project": "p-456",
        "domain": "UserDomain",
    }


def test_django_rejections_and_outage(django_wsgi: type[WSGIHandler]) -> None:
    validator = Counting({GOOD: full_identity()})
    with django_client(django_wsgi, validator, www_authenticate_uri="https://ks/v3") as client:
        missing = client.get("/whoami")
        assert missing.status_code == 401
        assert missing.json()["error"]["title"] == "Unauthorized"
        assert missing.headers["www-authenticate"] == 'Keystone uri="https://ks/v3"'
        assert client.get("/whoami", headers={"X-Auth-Token": BAD}).status_code == 401
        big = client.get("/whoami", headers={"X-Auth-Token": "t" * 9000})
        assert big.status_code == 401
    assert validator.calls == [BAD]
    with django_client(django_wsgi, outage()) as client:
        response = client.get("/whoami", headers={"X-Auth-Token": GOOD})
    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_django_through_webob_with_folded_tokens(django_wsgi: type[WSGIHandler]) -> None:
    application = WSGIAuthMiddleware(django_wsgi(), counting())
    req = Request.blank("/whoami", environ={"HTTP_X_AUTH_TOKEN": f"{GOOD},{OTHER}"})
    assert req.get_response(application).status_int == 401
    req = Request.blank("/whoami", environ={"HTTP_X_AUTH_TOKEN": f"{GOOD}, {GOOD}"})
    ok = req.get_response(application)
    assert ok.status_int == 200
    assert ok.json["user"] == "u-123"


def test_django_forged_headers_and_delayed_mode(django_wsgi: type[WSGIHandler]) -> None:
    forged = {"X-Roles": "admin", "X_Project_Id": "victim", "X-Identity-Status": "Confirmed"}
    with django_client(django_wsgi, counting(), delay_auth_decision=True) as client:
        anonymous = client.get("/whoami", headers=forged)
        assert anonymous.json() == {
            "user": None,
            "roles": None,
            "status": "Invalid",
            "project": None,
            "domain": None,
        }
        own_401 = client.get("/private", headers=forged)
        assert own_401.status_code == 401
        assert own_401.json() == {"error": "login first"}
        assert own_401.headers["www-authenticate"] == 'Keystone realm="authmw"'
        authed = client.get("/whoami", headers={**forged, "X-Auth-Token": GOOD})
        assert authed.json()["roles"] == "Member,reader,Admin"
        assert authed.json()["project"] == "p-456"


def test_django_public_route(django_wsgi: type[WSGIHandler]) -> None:
    with django_client(django_wsgi, counting(), public_routes=["GET /healthz"]) as client:
        response = client.get("/healthz", headers={"X-Roles": "admin"})
        assert response.status_code == 200
        assert response.json() == {"ok": True, "roles": None}
        assert client.get("/whoami").status_code == 401
        assert client.post("/healthz").status_code == 401
