from __future__ import annotations

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
