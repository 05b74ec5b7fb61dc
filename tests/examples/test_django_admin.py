"""The token store's Django admin and the token API in the Django example, through Django's test
client: issue, rotate, revoke, and a scrape of every page for secret material.

Each secret the admin or the API makes appears in exactly one response, the
one that made it; no page or API response holds any other token, or any
digest of one. The client runs in a process of its own with the example's
settings (tests/examples/django_admin_client.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from examples_support import EXAMPLES

from authmw.store import LocalTokenStore

PROJECT = EXAMPLES / "django_project"
CLIENT = Path(__file__).with_name("django_admin_client.py")
REPO = EXAMPLES.parent


def _material(token: str) -> list[str]:
    """Every form a secret could leak in: itself, its random part, its digests."""
    digest = hashlib.sha256(token.encode()).digest()
    return [
        token,
        token[4:47],
        digest.hex(),
        base64.b64encode(digest).decode(),
        base64.urlsafe_b64encode(digest).decode().rstrip("="),
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], str]:
    if request.param == "sqlite":
        db = f"sqlite:///{tmp_path}/tokens.db"
    else:
        db = request.getfixturevalue("postgres_url")
    LocalTokenStore(db).close()  # the store's tables exist before Django reads them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="itemsite.settings",
        AUTHMW_DB=db,
        DJANGO_DB=str(tmp_path / "admin.db"),
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(REPO), env.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, str(CLIENT)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout), db


def test_each_secret_is_in_exactly_one_response(run: tuple[dict[str, Any], str]) -> None:
    data, _ = run
    responses = data["responses"]
    for name, secret in data["shown"].items():
        holders = [r for r in responses if any(m in r["body"] for m in _material(secret))]
        assert len(holders) == 1, (name, [(r["method"], r["url"]) for r in holders])
        (holder,) = holders
        assert holder["method"] == "POST"
        assert "no-store" in holder["headers"].get("Cache-Control", "")
        assert secret in holder["body"]
        digest = hashlib.sha256(secret.encode()).digest()
        assert digest.hex() not in holder["body"]
    for name, secret in data["hidden"].items():
        for response in responses:
            for material in _material(secret):
                assert material not in response["body"], (name, response["url"])
                assert material not in json.dumps(response["headers"]), (name, response["url"])


def test_the_scrape_reached_every_kind_of_page(run: tuple[dict[str, Any], str]) -> None:
    data, _ = run
    crawled = data["crawled"]
    admin = "/admin/authmw_admin/storetoken/"
    assert len(crawled) >= 15, crawled
    for page in (
        "/admin/",
        admin,
        f"{admin}{data['ids']['issued']}/change/",
        f"{admin}{data['ids']['issued']}/history/",
        f"{admin}{data['ids']['issued']}/rotate/",
        f"{admin}add/",
    ):
        assert page in crawled
    assert any("status=" in url for url in crawled) and any("user=" in url for url in crawled)
    for response in data["responses"]:
        assert response["status"] < 500, (response["url"], response["body"][:2000])
        if response.get("crawled"):
            assert response["status"] == 200, response["url"]


def test_what_the_admin_did_happened_in_the_store(run: tuple[dict[str, Any], str]) -> None:
    data, db = run
    ids = data["ids"]
    with LocalTokenStore(db) as store:
        issued = store.get(ids["issued"])
        assert issued is not None
        assert issued.scopes == ("items:read", "items:write")
        assert issued.idle_ttl == 6 * 3600
        assert issued.rotated_at is not None
        assert store.validate(data["shown"]["rotated"]).user_id == "dave"
        assert store.validate(data["shown"]["issued"]).user_id == "dave"  # within its 1h grace
        for name in ("bob", "carol"):
            record = store.get(ids[name])
            assert record is not None and record.revoked_at is not None, name
        alice = store.get(ids["alice"])
        assert alice is not None and alice.revoked_at is None
        assert store.validate(data["shown"]["api"]).user_id == "alice"
    statuses = {(r["method"], r["url"].split("?")[0]): r["status"] for r in data["responses"]}
    assert statuses[("GET", "/tokens/")] == 200
    assert statuses[("POST", "/tokens/")] == 201
    assert statuses[("GET", "/items")] == 200
    first = data["responses"][0]
    assert (first["url"], first["status"]) == ("/admin/", 302)  # not signed in
    errors = [r for r in data["responses"] if r["method"] == "POST" and "3x" in r["body"]]
    assert errors and errors[0]["status"] == 200  # the form again, with its error


@pytest.mark.parametrize(
    ("settings", "option"),
    [
        ({}, "AUTHMW_TOKEN_ADMIN"),
        ({"AUTHMW_TOKEN_ADMIN": {"URL": "sqlite:///t.db"}}, "DATABASES"),
        (
            {
                "AUTHMW_TOKEN_ADMIN": {"URL": "sqlite:///t.db"},
                "DATABASES": {
                    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
                    "authmw_tokens": {"ENGINE": "django.db.backends.sqlite3"},
                },
            },
            "DATABASE_ROUTERS",
        ),
    ],
)
def test_admin_settings_mistakes_fail_at_start_naming_the_setting(
    settings: dict[str, Any], option: str
) -> None:
    code = (
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', "
        "'django.contrib.auth', 'authmw.contrib.django_admin'], "
        f"**{settings!r})\n"
        "django.setup()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"ConfigurationError: {option}:" in result.stderr.splitlines()[-1]
