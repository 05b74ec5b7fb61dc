"""Settings of the items example: settings-only authmw set-up.

With ``AUTHMW_DB`` (a local token store) the site also has Django's admin
at ``/admin/`` with the token store's admin (``authmw.contrib.django_admin``),
and the self-service token API at ``/tokens/``. The admin's own users and
sessions live in ``DJANGO_DB`` (default: ``admin.db`` here); create one
with ``python manage.py migrate && python manage.py createsuperuser``.
"""

from __future__ import annotations

import os
from pathlib import Path

from itemsite.auth import load_policy

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-example-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["rest_framework"]

# No session or CSRF middleware: callers authenticate with a token header, not cookies.
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "authmw.contrib.django.AuthMWMiddleware",
]

ROOT_URLCONF = "itemsite.urls"
WSGI_APPLICATION = "itemsite.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

AUTHMW = {
    "VALIDATOR": "itemsite.auth.make_validator",
    "POLICY": load_policy(),
    "OPTIONS": {"public_routes": ["GET /health"]},
}

TOKEN_STORE = os.environ.get("AUTHMW_DB") if not os.environ.get("AUTHMW_AUTH_URL") else None
if TOKEN_STORE:
    from authmw.contrib.django_admin import store_database

    INSTALLED_APPS += [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "authmw.contrib.django_admin",
    ]
    # The admin signs in with Django's sessions; authmw lets /admin/ through without a
    # token (a token sent there is still checked) and guards everything else.
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        *MIDDLEWARE,
    ]
    AUTHMW["OPTIONS"]["public_routes"] += ["/admin/*"]
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_DB") or str(Path(__file__).parent.parent / "admin.db"),
        },
        "authmw_tokens": store_database(TOKEN_STORE),
    }
    DATABASE_ROUTERS = ["authmw.contrib.django_admin.TokenStoreRouter"]
    AUTHMW_TOKEN_ADMIN = {"URL": TOKEN_STORE}
    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ]
    STATIC_URL = "static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["authmw.contrib.drf.IdentityAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["authmw.contrib.drf.PolicyPermission"],
    "EXCEPTION_HANDLER": "authmw.contrib.drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
