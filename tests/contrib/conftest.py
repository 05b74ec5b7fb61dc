"""Tokens, identities and a policy shared by the framework-integration tests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authmw import Identity, IdentityServiceUnavailable, InMemoryValidator

MEMBER_TOKEN = "member-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
OTHER_ADMIN_TOKEN = "other-admin-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
BAD_TOKEN = "no-such-token-0123456789"

MEMBER = Identity(user_id="u-member", project_id="p1", roles=("Member", "reader"))
ADMIN = Identity(user_id="u-admin", project_id="p1", roles=("admin", "member"))
OTHER_ADMIN = Identity(user_id="u-other", project_id="p2", roles=("Admin",))
READER = Identity(user_id="u-reader", project_id="p1", roles=("reader",))

POLICY = {
    "admin_of_project": "role:admin and project_id:%(project_id)s",
    "items:list": "",
    "items:create": "role:member",
    "items:delete": "rule:admin_of_project",
}

ITEM_PROJECTS = {"i1": "p1", "i2": "p2"}


def make_validator() -> InMemoryValidator:
    return InMemoryValidator(
        {
            MEMBER_TOKEN: MEMBER,
            ADMIN_TOKEN: ADMIN,
            OTHER_ADMIN_TOKEN: OTHER_ADMIN,
            READER_TOKEN: READER,
        }
    )


class Unavailable:
    """A validator whose identity service is down."""

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise IdentityServiceUnavailable("down")


@pytest.fixture
def validator() -> InMemoryValidator:
    return make_validator()


def error_of(body: bytes | str, status: int) -> str:
    """Assert ``body`` is authmw's JSON error for ``status``; return its message."""
    data: Any = json.loads(body)
    title = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}[status]
    assert set(data) == {"error"}
    assert set(data["error"]) == {"code", "title", "message"}
    assert data["error"]["code"] == status
    assert data["error"]["title"] == title
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    return str(data["error"]["message"])


def configure_django() -> None:
    """Minimal process-wide Django settings; tests override what they need."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="authmw-tests-not-secret",
            ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"],
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
            MIDDLEWARE=[],
            DATABASES={},
            USE_TZ=True,
            ROOT_URLCONF=None,
            REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        )
        django.setup()
