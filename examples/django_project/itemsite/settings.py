"""Settings of the items example: settings-only authmw set-up."""

from __future__ import annotations

import os

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

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["authmw.contrib.drf.IdentityAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["authmw.contrib.drf.PolicyPermission"],
    "EXCEPTION_HANDLER": "authmw.contrib.drf.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
