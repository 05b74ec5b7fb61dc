"""The app behind ``authmw.contrib.django_admin`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class TokenAdminConfig(AppConfig):  # type: ignore[misc]
    name = "authmw.contrib.django_admin"
    label = "authmw_admin"
    verbose_name = "authmw token store"
    default_auto_field = "django.db.models.AutoField"
