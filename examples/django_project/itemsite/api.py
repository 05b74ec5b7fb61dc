"""The items API on Django REST framework: one rule per action, from the policy."""

from __future__ import annotations

from typing import Any

from rest_framework import viewsets
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.request import Request
from rest_framework.response import Response

from .store import ITEMS, add_item, remove_item


class ItemViewSet(viewsets.ViewSet):  # type: ignore[misc]
    # PolicyPermission (the default in settings) reads these.
    policy_rules = {"list": "items:list", "create": "items:create", "destroy": "items:delete"}

    def get_policy_target(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"project_id": item["project_id"]}

    def list(self, request: Request) -> Response:
        return Response({"items": list(ITEMS.values())})

    def create(self, request: Request) -> Response:
        identity = request.auth
        if not identity.project_id:
            raise ParseError("a project-scoped token is needed")
        name = request.data.get("name", "") if isinstance(request.data, dict) else ""
        return Response(add_item(str(name), identity), status=201)

    def destroy(self, request: Request, pk: str) -> Response:
        item = ITEMS.get(pk)
        if item is None:
            raise NotFound("no such item")
        self.check_object_permissions(request, item)
        remove_item(pk)
        return Response(status=204)
