"""The self-service token API (:mod:`authmw.store.selfservice`) as Django views::

    from authmw.contrib.django_tokens import urls
    urlpatterns += [path("tokens/", include(urls(TokenService(store))))]

The caller is the identity :class:`authmw.contrib.django.AuthMWMiddleware`
(or the WSGI/ASGI middleware in front of Django) found; the views are
exempt from CSRF checks, as the token comes in a header, never in a cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ..store.selfservice import TokenService
from .django import get_config, get_identity

__all__ = ["token_api_view", "urls"]


def token_api_view(service: TokenService) -> Callable[..., HttpResponse]:
    """A Django view answering every route of ``service`` below where it is mounted."""

    def view(request: HttpRequest, rest: str = "") -> HttpResponse:
        status, headers, body = service.handle(
            request.method or "GET",
            rest,
            request.META.get("QUERY_STRING", ""),
            request.body,
            get_identity(request),
            get_config().responses,
        )
        response = HttpResponse(body, status=status)
        for name, value in headers:
            response[name] = value
        return response

    exempt: Callable[..., HttpResponse] = csrf_exempt(view)
    return exempt


def urls(service: TokenService) -> list[Any]:
    """URL patterns for ``include()``: the API at the prefix and every path below it."""
    view = token_api_view(service)
    return [path("", view), path("<path:rest>", view)]
