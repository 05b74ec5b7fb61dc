from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from examples_support import (
    DEMO_TOKENS,
    check_items_api,
    issue_store_tokens,
    keystone_env,
    keystone_tokens,
    load_example,
)
from starlette.testclient import TestClient

example = load_example("starlette_app.py")


def test_demo_tokens() -> None:
    with TestClient(example.create_app()) as client:
        check_items_api(client, DEMO_TOKENS, "demo-project")


def test_bad_token_is_401_even_on_the_public_route() -> None:
    with TestClient(example.app) as client:
        response = client.get("/health", headers={"X-Auth-Token": "not-a-token-0123456789"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == 401


def test_local_token_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    tokens = issue_store_tokens(db_url)
    monkeypatch.setenv("AUTHMW_DB", db_url)
    with TestClient(example.create_app()) as client:
        check_items_api(client, tokens, "proj-a")


def test_keystone(keystone: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in keystone_env(keystone).items():
        monkeypatch.setenv(key, value)
    tokens, project_id = keystone_tokens(keystone)
    with TestClient(example.create_app()) as client:
        check_items_api(client, tokens, project_id)


def test_policy_file_overrides_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"items:delete": "role:member and project_id:%(project_id)s"}')
    monkeypatch.setenv("AUTHMW_POLICY_FILE", str(policy))
    with TestClient(example.create_app()) as client:
        member = {"X-Auth-Token": DEMO_TOKENS["member"]}
        item = client.post("/items", json={"name": "x"}, headers=member).json()
        assert client.delete(f"/items/{item['id']}", headers=member).status_code == 204
