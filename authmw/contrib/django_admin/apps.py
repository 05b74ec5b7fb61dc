"""The app behind ``authmw.contrib.django_admin`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class TokenAdminConfig(AppConfig):  # type: ignore[misc]
    name = "authmw.contrib.django_admin"
    label = "authmw_admin"
    verbose_name = "authmw token store"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        """Refuse to start with settings the admin cannot work with, naming the setting."""
        from django.conf import settings

        from ...errors import ConfigurationError
        from . import ALIAS

        config = getattr(settings, "AUTHMW_TOKEN_ADMIN", None)
        if not isinstance(config, dict) or not config.get("URL"):
            raise ConfigurationError(
                "AUTHMW_TOKEN_ADMIN", 'set {"URL": "<the token store URL>"} for the token admin'
            )
        if ALIAS not in settings.DATABASES:
            raise ConfigurationError(
                "DATABASES", f'add DATABASES["{ALIAS}"] = store_database(<the token store URL>)'
            )
        router = "authmw.contrib.django_admin.TokenStoreRouter"
        if router not in [r if isinstance(r, str) else "" for r in settings.DATABASE_ROUTERS]:
            raise ConfigurationError("DATABASE_ROUTERS", f"add {router!r}")
