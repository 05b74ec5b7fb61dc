from __future__ import annotations

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

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402
from rest_framework import viewsets  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.routers import SimpleRouter  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from authmw import Forbidden, WSGIAuthMiddleware  # noqa: E402
from authmw.contrib.django import IdentityUser  # noqa: E402
from authmw.contrib.drf import IdentityAuthentication, PolicyPermission, require  # noqa: E402

ITEMS = {key: {"id": key, "project_id": project} for key, project in ITEM_PROJECTS.items()}


# APIView binds DEFAULT_AUTHENTICATION_CLASSES when DRF is first imported,
# before these tests can override settings: the views name the class.
AUTH = [IdentityAuthentication]


class ItemViewSet(viewsets.GenericViewSet):  # type: ignore[misc]
    authentication_classes = AUTH
    permission_classes = [PolicyPermission]
    policy_rules = {"list": "items:list", "create": "items:create", "destroy": "items:delete"}

    def get_object(self) -> dict[str, Any]:
        obj = ITEMS[self.kwargs["pk"]]
        self.check_object_permissions(self.request, obj)
        return obj

    def get_policy_target(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"project_id": obj["project_id"]}

    def list(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, IdentityUser) and user.is_authenticated
        return Response({"user": user.username, "items": sorted(ITEMS)})

    def create(self, request: Request) -> Response:
        return Response({"created_by": request.auth.user_id}, status=201)

    def destroy(self, request: Request, pk: str) -> Response:
        self.get_object()
        return Response(status=204)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self.get_object())  # no rule for "retrieve": denied


OWN_PROJECT = "role:admin or project_id:%(project_id)s"


class ProjectItemViewSet(ItemViewSet):
    """Rules that need a target on list and create, where no object is checked."""

    policy_rules = {"list": OWN_PROJECT, "create": OWN_PROJECT, "destroy": OWN_PROJECT}


class TargetedProjectItemViewSet(ProjectItemViewSet):
    """The same rules, with the target of list and create named by the request."""

    def get_request_policy_target(self, request: Request) -> dict[str, Any]:
        return {"project_id": request.query_params.get("project")}


class AdminView(APIView):  # type: ignore[misc]
    authentication_classes = AUTH
    permission_classes = [IsAuthenticated, require("role:admin")]

    def get(self, request: Request) -> Response:
        return Response({"admin": request.user.username})


class ItemAdminView(APIView):  # type: ignore[misc]
    authentication_classes = AUTH
    policy_checks_objects = True  # delete() calls check_object_permissions itself
    permission_classes = [
        require("items:delete", object_target=lambda obj: {"project_id": obj["project_id"]})
    ]

    def delete(self, request: Request, pk: str) -> Response:
        self.check_object_permissions(request, ITEMS[pk])
        return Response(status=204)


class RaisingView(APIView):  # type: ignore[misc]
    authentication_classes = AUTH
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        raise Forbidden("not today")


router = SimpleRouter(trailing_slash=False)
router.register("items", ItemViewSet, basename="item")
router.register("project-items", ProjectItemViewSet, basename="project-item")
router.register("targeted-items", TargetedProjectItemViewSet, basename="targeted-item")
urlpatterns = [
    path("", include(router.urls)),
    path("admin-only", AdminView.as_view()),
    path("item-admin/<str:pk>", ItemAdminView.as_view()),
    path("raises", RaisingView.as_view()),
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["authmw.contrib.drf.IdentityAuthentication"],
    "EXCEPTION_HANDLER": "authmw.contrib.drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
}


def drf_settings(validator: Any = None, rest: dict[str, Any] | None = None, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "ROOT_URLCONF": __name__,
        "MIDDLEWARE": [],
        "REST_FRAMEWORK": rest or REST_FRAMEWORK,
        "AUTHMW": {"VALIDATOR": validator or make_validator(), "POLICY": POLICY},
    }
    values.update(extra)
    return override_settings(**values)


@pytest.fixture
def client() -> Iterator[APIClient]:
    with drf_settings():
        yield APIClient()


def as_user(client: APIClient, token: str | None) -> APIClient:
    client.credentials(**({"HTTP_X_AUTH_TOKEN": token} if token else {}))
    return client


def test_unauthenticated_is_401_with_challenge_never_403(client: APIClient) -> None:
    for token in (None, BAD_TOKEN):
        for url in ("/items", "/admin-only", "/raises"):
            response = as_user(client, token).get(url)
            assert response.status_code == 401, (token, url)
            assert response["WWW-Authenticate"] == 'Keystone realm="authmw"'
            error_of(response.content, 401)


def test_viewset_rules_per_action(client: APIClient) -> None:
    response = as_user(client, READER_TOKEN).get("/items")
    assert response.status_code == 200
    assert response.json() == {"user": "u-reader", "items": ["i1", "i2"]}
    assert as_user(client, MEMBER_TOKEN).post("/items").status_code == 201
    response = as_user(client, READER_TOKEN).post("/items")
    assert response.status_code == 403
    assert not response.has_header("WWW-Authenticate")
    assert error_of(response.content, 403) == "policy does not allow items:create"


def test_object_level_rule(client: APIClient) -> None:
    assert as_user(client, ADMIN_TOKEN).delete("/items/i1").status_code == 204
    response = as_user(client, OTHER_ADMIN_TOKEN).delete("/items/i1")
    assert response.status_code == 403
    error_of(response.content, 403)
    assert as_user(client, OTHER_ADMIN_TOKEN).delete("/items/i2").status_code == 204
    # not an admin at all: denied before any object is looked at
    assert as_user(client, MEMBER_TOKEN).delete("/items/i1").status_code == 403


def test_a_rule_that_needs_a_target_denies_list_and_create_without_one(
    client: APIClient,
) -> None:
    # READER is in p1 and no admin: "role:admin or project_id:%(project_id)s"
    # cannot be decided without a target, and list/create never check an object.
    for method in ("get", "post"):
        response = getattr(as_user(client, READER_TOKEN), method)("/project-items")
        assert response.status_code == 403, method
        error_of(response.content, 403)
    # an admin passes whatever the target
    assert as_user(client, ADMIN_TOKEN).get("/project-items").status_code == 200
    # detail routes still decide per object
    assert as_user(client, READER_TOKEN).delete("/project-items/i1").status_code == 204
    assert as_user(client, READER_TOKEN).delete("/project-items/i2").status_code == 403


def test_a_view_can_name_the_target_of_list_and_create(client: APIClient) -> None:
    reader = as_user(client, READER_TOKEN)
    assert reader.get("/targeted-items?project=p1").status_code == 200
    assert reader.post("/targeted-items?project=p1").status_code == 201
    assert reader.get("/targeted-items?project=p2").status_code == 403
    assert reader.post("/targeted-items?project=p2").status_code == 403
    assert reader.get("/targeted-items").status_code == 403


def test_action_without_a_rule_is_denied(client: APIClient) -> None:
    response = as_user(client, ADMIN_TOKEN).get("/items/i1")
    assert response.status_code == 403
    assert error_of(response.content, 403) == "no policy rule for retrieve"


def test_require_permission_classes(client: APIClient) -> None:
    assert as_user(client, ADMIN_TOKEN).get("/admin-only").json() == {"admin": "u-admin"}
    response = as_user(client, MEMBER_TOKEN).get("/admin-only")
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not allowed: requires role:admin"
    assert as_user(client, ADMIN_TOKEN).delete("/item-admin/i1").status_code == 204
    assert as_user(client, OTHER_ADMIN_TOKEN).delete("/item-admin/i1").status_code == 403
    assert as_user(client, MEMBER_TOKEN).delete("/item-admin/i2").status_code == 403


def test_authmw_errors_raised_in_views(client: APIClient) -> None:
    response = as_user(client, MEMBER_TOKEN).get("/raises")
    assert response.status_code == 403
    assert error_of(response.content, 403) == "not today"


def test_identity_service_down_is_503() -> None:
    with drf_settings(Unavailable()):
        response = as_user(APIClient(), MEMBER_TOKEN).get("/items")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    error_of(response.content, 503)


def test_default_drf_exception_handler_still_gets_401_not_403() -> None:
    rest = {k: v for k, v in REST_FRAMEWORK.items() if k != "EXCEPTION_HANDLER"}
    with drf_settings(rest=rest):
        response = APIClient().get("/items")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Keystone realm="authmw"'
        assert "detail" in response.json()
        response = as_user(APIClient(), READER_TOKEN).post("/items")
        assert response.status_code == 403


def test_identity_from_the_django_middleware() -> None:
    with drf_settings(MIDDLEWARE=["authmw.contrib.django.AuthMWMiddleware"]):
        client = APIClient()
        assert as_user(client, READER_TOKEN).get("/items").status_code == 200
        response = as_user(client, BAD_TOKEN).get("/items")  # rejected by the middleware
        assert response.status_code == 401
        error_of(response.content, 401)


def test_identity_from_the_wsgi_middleware_in_delayed_mode() -> None:
    with drf_settings(AUTHMW={"POLICY": POLICY}):
        app = WSGIAuthMiddleware(get_wsgi_application(), make_validator(), delay_auth_decision=True)
        with httpx.Client(
            transport=httpx.WSGITransport(app=app), base_url="http://testserver"
        ) as c:
            response = c.get("/items", headers={"X-Auth-Token": READER_TOKEN})
            assert response.json()["user"] == "u-reader"
            for headers in ({}, {"X-Auth-Token": BAD_TOKEN}):
                response = c.get("/items", headers=headers)
                assert response.status_code == 401
                assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'
                error_of(response.content, 401)
            response = c.delete("/items/i1", headers={"X-Auth-Token": OTHER_ADMIN_TOKEN})
            assert response.status_code == 403
