from __future__ import annotations

from django.conf import settings
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import api, views

router = SimpleRouter(trailing_slash=False)
router.register("items", api.ItemViewSet, basename="item")

urlpatterns = [
    path("health", views.health),
    path("items", views.items),
    path("items/<str:item_id>", views.item),
    path("api/", include(router.urls)),
]

if settings.TOKEN_STORE:  # the local token store: its admin and the self-service API
    from django.contrib import admin

    from authmw.contrib.django_admin import get_store
    from authmw.contrib.django_tokens import urls as token_api_urls
    from authmw.store.selfservice import TokenService

    urlpatterns += [
        path("admin/", admin.site.urls),
        path("tokens/", include(token_api_urls(TokenService(get_store())))),
    ]
