"""A Django admin for the local token store: list, search, filter, issue, rotate, revoke.

The tokens stay in the store's own database; Django reads their records
through an unmanaged model (never the hash column) on a database alias of
its own, and every change goes through :class:`~authmw.store.LocalTokenStore`
(so revocations reach every process, and secrets are shown exactly once)::

    from authmw.contrib.django_admin import store_database

    TOKEN_STORE = "sqlite:////var/lib/app/tokens.db"      # or postgresql://...
    INSTALLED_APPS += ["django.contrib.admin", ..., "authmw.contrib.django_admin"]
    DATABASES["authmw_tokens"] = store_database(TOKEN_STORE)
    DATABASE_ROUTERS = ["authmw.contrib.django_admin.TokenStoreRouter"]
    AUTHMW_TOKEN_ADMIN = {"URL": TOKEN_STORE}   # peppers: AUTHMW_PEPPER(S), or "PEPPER"

Nothing in the admin changes a token's record: a token can be issued,
rotated (a new secret, same record) and revoked, never widened. Issuing,
rotating and revoking need the ``add``, ``rotate`` and ``revoke``
permissions of "API token" (a superuser has them).
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["ALIAS", "TokenStoreRouter", "get_store", "store_database"]

ALIAS = "authmw_tokens"
"""The database alias the admin reads the store's records from."""
APP_LABEL = "authmw_admin"

_store: Any = None
_lock = threading.Lock()


def store_database(url: str) -> dict[str, Any]:
    """A ``DATABASES`` entry for the token store at ``url`` (SQLite file or PostgreSQL)."""
    from ...store._backend import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.abspath(path)}
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }


class TokenStoreRouter:
    """Sends the admin's token model to :data:`ALIAS`; nothing of it is ever migrated."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return ALIAS if model._meta.app_label == APP_LABEL else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return ALIAS if model._meta.app_label == APP_LABEL else None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if db == ALIAS:
            return False  # the store migrates its own tables
        return None


def get_store() -> Any:
    """The :class:`~authmw.store.LocalTokenStore` of ``settings.AUTHMW_TOKEN_ADMIN["URL"]``
    (one per process); peppers from ``"PEPPER"``, else ``AUTHMW_PEPPERS``/``AUTHMW_PEPPER``."""
    global _store
    if _store is not None:
        return _store
    from django.conf import settings

    from ...errors import ConfigurationError
    from ...store import LocalTokenStore

    with _lock:
        if _store is None:
            config = getattr(settings, "AUTHMW_TOKEN_ADMIN", None) or {}
            url = config.get("URL") if isinstance(config, dict) else None
            if not url:
                raise ConfigurationError(
                    "AUTHMW_TOKEN_ADMIN", 'set {"URL": "<the token store URL>"}'
                )
            pepper = config.get("PEPPER")
            if pepper is None:
                from ...store._tokens import pepper_from_environment

                pepper = pepper_from_environment(os.environ)
            _store = LocalTokenStore(url, pepper=pepper)
    return _store
