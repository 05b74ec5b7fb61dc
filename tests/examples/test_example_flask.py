from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from examples_support import (
    DEMO_TOKENS,
    check_items_api,
    issue_store_tokens,
    keystone_env,
    keystone_tokens,
    load_example,
)

example = load_example("flask_app.py")


def client_for(app: Any) -> httpx.Client:
    # The real WSGI call path, as a WSGI server would drive it.
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")


def test_demo_tokens() -> None:
    with client_for(example.create_app()) as client:
        check_items_api(client, DEMO_TOKENS, "demo-project")


def test_module_level_app_for_flask_run() -> None:
    with client_for(example.app) as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_local_token_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    tokens = issue_store_tokens(db_url)
    monkeypatch.setenv("AUTHMW_DB", db_url)
    with client_for(example.create_app()) as client:
        check_items_api(client, tokens, "proj-a")


def test_keystone(keystone: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in keystone_env(keystone).items():
        monkeypatch.setenv(key, value)
    tokens, project_id = keystone_tokens(keystone)
    with client_for(example.create_app()) as client:
        check_items_api(client, tokens, project_id)


def test_policy_file_overrides_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"items:create": "role:reader"\n')
    monkeypatch.setenv("AUTHMW_POLICY_FILE", str(policy))
    with client_for(example.create_app()) as client:
        headers = {"X-Auth-Token": DEMO_TOKENS["reader"]}
        assert client.post("/items", json={"name": "x"}, headers=headers).status_code == 201


def test_unscoped_member_cannot_create() -> None:
    from authmw import Identity, InMemoryValidator

    validator = InMemoryValidator({"unscoped-token-1234": Identity(user_id="u", roles=("member",))})
    with client_for(example.create_app(validator)) as client:
        response = client.post("/items", json={}, headers={"X-Auth-Token": "unscoped-token-1234"})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "a project-scoped token is needed"
