from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import (
    ADMIN_TOKEN,
    BAD_TOKEN,
    ITEM_PROJECTS,
    MEMBER_TOKEN,
    OTHER_ADMIN_TOKEN,
    POLICY,
    READER_TOKEN,
    Unavailable,
    configure_django,
    error_of,
    make_validator,
)

configure_django()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

from authmw import ASGIAuthMiddleware, ConfigurationError, Forbidden, WSGIAuthMiddleware  # noqa: E402
from authmw.contrib.django import authorize, get_config, get_identity, require  # noqa: E402
from authmw.policy import require_roles  # noqa: E402
from authmw.validators.memory import InMemoryValidator  # noqa: E402

MIDDLEWARE = ["authmw.contrib.django.AuthMWMiddleware"]


def item_target(request: HttpRequest, item_id: str) -> dict[str, Any]:
    return {"project_id": ITEM_PROJECTS[item_id]}


def health(request: HttpRequest) -> HttpResponse:
    identity = getattr(request, "identity", "unset")
    return JsonResponse({"status": "ok", "identity": None if identity is None else "set"})


@require("items:list")
def items(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return create_item(request)
    identity = request.identity  # type: ignore[attr-defined]
    return JsonResponse(
        {"user": identity.user_id, "roles_header": request.META.get("HTTP_X_ROLES")}
    )


@require("items:create")
def create_item(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"created_by": get_identity(request).user_id}, status=201)  # type: ignore[union-attr]


@require("items:delete", target=item_target)
def item(request: HttpRequest, item_id: str) -> HttpResponse:
    if request.method == "PUT":
        identity = authorize(request, "role:member", {"project_id": ITEM_PROJECTS[item_id]})
        return JsonResponse({"updated_by": identity.user_id})
    return HttpResponse(status=204)


def update(request: HttpRequest, item_id: str) -> HttpResponse:
    identity = authorize(request, "rule:admin_of_project", {"project_id": ITEM_PROJECTS[item_id]})
    return JsonResponse({"updated_by": identity.user_id})


def raises(request: HttpRequest) -> HttpResponse:
    raise Forbidden("not today")


@require(require_roles("reader"))
async def async_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"async": True, "user": get_identity(request).user_id})  # type: ignore[union-attr]


urlpatterns = [
    path("health", health),
    path("items", items),
    path("items/<str:item_id>", item),
    path("update/<str:item_id>", update),
    path("raises", raises),
    path("async", async_view),
]


def settings_for(validator: Any = None, **options: Any) -> Any:
    options.setdefault("public_routes", ["GET /health"])
    return override_settings(
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        AUTHMW={"VALIDATOR": validator or make_validator(), "POLICY": POLICY, "OPTIONS": options},
    )


@pytest.fixture
def client() -> Iterator[Client]:
    with settings_for():
        yield Client()


def token(value: str) -> dict[str, str]:
    return {"HTTP_X_AUTH_TOKEN": value}


# -- settings-only set-up: the Django middleware authenticates -------------------------


def test_public_route(client: Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "identity": None}


def test_no_token_and_bad_token_are_401(client: Client) -> None:
    for extra in ({}, token(BAD_TOKEN)):
        response = client.get("/items", **extra)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Keystone realm="authmw"'
        error_of(response.content, 401)


def test_allowed_and_denied(client: Client) -> None:
    response = client.get("/items", **token(READER_TOKEN))
    assert response.status_code == 200
    assert response.json()["user"] == "u-reader"
    assert client.post("/items", **token(MEMBER_TOKEN)).status_code == 201
    response = client.post("/items", **token(READER_TOKEN))
    assert response.status_code == 403
    assert not response.has_header("WWW-Authenticate")
    assert error_of(response.content, 403) == "policy does not allow items:create"
    assert client.delete("/items/i1", **token(ADMIN_TOKEN)).status_code == 204
    response = client.delete("/items/i1", **token(OTHER_ADMIN_TOKEN))
    assert response.status_code == 403
    error_of(response.content, 403)


def test_forged_identity_headers_are_replaced(client: Client) -> None:
    response = client.get("/items", HTTP_X_ROLES="admin", **token(READER_TOKEN))
    assert response.json()["roles_header"] == "reader"


def test_authorize_and_raised_errors_become_json(client: Client) -> None:
    assert client.get("/update/i2", **token(OTHER_ADMIN_TOKEN)).json() == {"updated_by": "u-other"}
    response = client.get("/update/i2", **token(ADMIN_TOKEN))
    assert response.status_code == 403
    error_of(response.content, 403)
    response = client.get("/raises", **token(MEMBER_TOKEN))
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not today"


def test_identity_service_down_is_503() -> None:
    with settings_for(Unavailable()):
        response = Client().get("/items", **token(MEMBER_TOKEN))
    assert response.status_code == 503
    error_of(response.content, 503)


def test_delayed_decision_lets_the_decorator_answer() -> None:
    with settings_for(delay_auth_decision=True):
        client = Client()
        for extra in ({}, token(BAD_TOKEN)):
            response = client.get("/items", **extra)
            assert response.status_code == 401
            assert response["WWW-Authenticate"] == 'Keystone realm="authmw"'
            error_of(response.content, 401)
        assert client.get("/health", **token(BAD_TOKEN)).status_code == 200


async def test_async_middleware_and_async_view() -> None:
    with settings_for():
        client = AsyncClient()
        response = await client.get("/async", headers={"X-Auth-Token": READER_TOKEN})
        assert response.status_code == 200
        assert json.loads(response.content) == {"async": True, "user": "u-reader"}
        response = await client.get("/async", headers={"X-Auth-Token": OTHER_ADMIN_TOKEN})
        assert response.status_code == 403
        error_of(response.content, 403)
        response = await client.get("/async")
        assert response.status_code == 401
        error_of(response.content, 401)
        response = await client.post("/items", headers={"X-Auth-Token": MEMBER_TOKEN})
        assert response.status_code == 201


# -- the WSGI/ASGI middleware in front of Django ---------------------------------------


def test_behind_the_wsgi_middleware() -> None:
    # No validator in settings: the Django middleware only reads environ.
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, AUTHMW={"POLICY": POLICY}):
        app = WSGIAuthMiddleware(
            get_wsgi_application(), make_validator(), public_routes=["GET /health"]
        )
        with httpx.Client(
            transport=httpx.WSGITransport(app=app), base_url="http://testserver"
        ) as c:
            assert c.get("/health").json() == {"status": "ok", "identity": None}
            assert c.get("/items").status_code == 401
            assert c.get("/items", headers={"X-Auth-Token": READER_TOKEN}).status_code == 200
            response = c.post("/items", headers={"X-Auth-Token": READER_TOKEN})
            assert response.status_code == 403
            error_of(response.content, 403)
            response = c.delete("/items/i1", headers={"X-Auth-Token": ADMIN_TOKEN})
            assert response.status_code == 204


async def test_behind_the_asgi_middleware() -> None:
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, AUTHMW={"POLICY": POLICY}):
        app = ASGIAuthMiddleware(get_asgi_application(), make_validator(), delay_auth_decision=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            response = await c.get("/items", headers={"X-Auth-Token": READER_TOKEN})
            assert response.status_code == 200
            assert response.json()["user"] == "u-reader"
            response = await c.get("/items", headers={"X-Auth-Token": BAD_TOKEN})
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
            error_of(response.content, 401)
            response = await c.post("/items", headers={"X-Auth-Token": READER_TOKEN})
            assert response.status_code == 403
            response = await c.get("/async", headers={"X-Auth-Token": MEMBER_TOKEN})
            assert response.json() == {"async": True, "user": "u-member"}


def test_decorator_without_any_authmw_middleware_is_401() -> None:
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[], AUTHMW=None):
        response = Client().get("/items", **token(ADMIN_TOKEN))
    assert response.status_code == 401
    error_of(response.content, 401)


# -- configuration ---------------------------------------------------------------------


def test_validator_from_dotted_path() -> None:
    with override_settings(
        AUTHMW={
            "VALIDATOR": "authmw.validators.memory.InMemoryValidator",
            "VALIDATOR_OPTIONS": {"leeway": 5.0},
        }
    ):
        config = get_config()
        assert config.core is not None
        assert isinstance(config.core.validator, InMemoryValidator)
        assert config.policy is None


@pytest.mark.parametrize(
    ("value", "option"),
    [
        ("nope", "settings.AUTHMW"),
        ({"VALIDATORS": None}, "settings.AUTHMW['VALIDATORS']"),
        ({"VALIDATOR": "no.such.Validator"}, "settings.AUTHMW['VALIDATOR']"),
        ({"VALIDATOR": 42}, "settings.AUTHMW['VALIDATOR']"),
        ({"OPTIONS": {"delay_auth_decision": True}}, "settings.AUTHMW['OPTIONS']"),
        (
            {"VALIDATOR": InMemoryValidator(), "VALIDATOR_OPTIONS": {"x": 1}},
            "settings.AUTHMW['VALIDATOR_OPTIONS']",
        ),
        ({"POLICY": 42}, "settings.AUTHMW['POLICY']"),
        ({"VALIDATOR": InMemoryValidator(), "OPTIONS": {"cache_time": -1}}, "cache_time"),
    ],
)
def test_configuration_mistakes_name_the_option(value: Any, option: str) -> None:
    with override_settings(AUTHMW=value), pytest.raises(ConfigurationError) as info:
        get_config()
    assert info.value.option == option


def test_configuration_errors_surface_when_the_middleware_loads() -> None:
    with (
        override_settings(
            ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, AUTHMW={"VALIDATOR": "no.such.Thing"}
        ),
        pytest.raises(ConfigurationError),
    ):
        get_wsgi_application()
