from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from examples_support import (
    DEMO_TOKENS,
    check_items_api,
    error_message,
    issue_store_tokens,
    keystone_env,
    keystone_tokens,
    load_example,
)
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

example = load_example("fastapi_app.py")


def test_demo_tokens() -> None:
    with TestClient(example.create_app()) as client:
        check_items_api(client, DEMO_TOKENS, "demo-project")


def test_openapi_has_the_token_scheme() -> None:
    with TestClient(example.app) as client:
        doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["X-Auth-Token"]["in"] == "header"
    assert doc["paths"]["/items"]["post"]["security"] == [{"X-Auth-Token": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_websocket_feed() -> None:
    with TestClient(example.create_app()) as client:
        member = {"X-Auth-Token": DEMO_TOKENS["member"]}
        item = client.post("/items", json={"name": "x"}, headers=member).json()
        with client.websocket_connect("/items/ws", headers=member) as ws:
            assert ws.receive_json() == {"user": "member", "items": [item]}
        with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/items/ws"):
            pass  # pragma: no cover
        error_message(info.value, 401)


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
