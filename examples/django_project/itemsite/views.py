"""The items API as plain Django views, guarded by ``authmw.contrib.django.require``."""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from authmw.contrib.django import require

from .store import ITEMS, add_item, remove_item


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def items(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return list_items(request)
    if request.method == "POST":
        return create_item(request)
    return HttpResponseNotAllowed(["GET", "POST"])


@require("items:list")
def list_items(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"items": list(ITEMS.values())})


@require("items:create")
def create_item(request: HttpRequest) -> HttpResponse:
    identity = request.identity  # type: ignore[attr-defined]
    if not identity.project_id:
        return JsonResponse(
            {
                "error": {
                    "code": 400,
                    "title": "Bad Request",
                    "message": "a project-scoped token is needed",
                }
            },
            status=400,
        )
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    name = str(body.get("name", "")) if isinstance(body, dict) else ""
    return JsonResponse(add_item(name, identity), status=201)


def item_target(request: HttpRequest, item_id: str) -> dict[str, Any]:
    item = ITEMS.get(item_id)
    if item is None:
        raise Http404("no such item")
    return {"project_id": item["project_id"]}


@require("items:delete", target=item_target)
def delete_item(request: HttpRequest, item_id: str) -> HttpResponse:
    remove_item(item_id)
    return HttpResponse(status=204)


def item(request: HttpRequest, item_id: str) -> HttpResponse:
    if request.method == "DELETE":
        return delete_item(request, item_id)
    return HttpResponseNotAllowed(["DELETE"])
