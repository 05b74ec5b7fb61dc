"""What every example app must do: the same items API, whatever the framework.

``check_items_api`` drives an example through an httpx-style client with
tokens for four callers: a reader, a member and an admin of one project,
and an admin of another project.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from authmw.store import LocalTokenStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

DEMO_TOKENS = {
    "reader": "demo-reader-token",
    "member": "demo-member-token",
    "admin": "demo-admin-token",
    "other_admin": "other-admin-token",
}


def load_example(filename: str) -> ModuleType:
    """Import ``examples/<filename>`` afresh (it is not a package)."""
    name = f"authmw_example_{Path(filename).stem}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def error_message(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    data = json.loads(response.content)
    title = {401: "Unauthorized", 403: "Forbidden"}[status]
    assert data == {"error": {"code": status, "title": title, "message": data["error"]["message"]}}
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Keystone ")
    else:
        assert "WWW-Authenticate" not in response.headers
    return str(data["error"]["message"])


def check_items_api(
    client: Any, tokens: dict[str, str], project_id: str, *, prefix: str = ""
) -> None:
    """The contract: public health, 401/403 with the JSON body, per-role access.

    ``prefix`` is where the items API is mounted (``/api`` for the REST framework one).
    """

    def h(who: str) -> dict[str, str]:
        return {"X-Auth-Token": tokens[who]}

    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}

    items = f"{prefix}/items"
    error_message(client.get(items), 401)
    error_message(client.get(items, headers={"X-Auth-Token": "not-a-token-0123456789"}), 401)

    response = client.get(items, headers=h("reader"))
    assert response.status_code == 200
    assert response.json() == {"items": []}

    error_message(client.post(items, json={"name": "x"}, headers=h("reader")), 403)
    error_message(client.post(items, json={"name": "x"}), 401)

    response = client.post(items, json={"name": "hammer"}, headers=h("member"))
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["name"] == "hammer"
    assert item["project_id"] == project_id
    assert client.get(items, headers=h("reader")).json() == {"items": [item]}

    path = f"{items}/{item['id']}"
    error_message(client.delete(path), 401)
    error_message(client.delete(path, headers=h("member")), 403)
    error_message(client.delete(path, headers=h("other_admin")), 403)
    response = client.delete(path, headers=h("admin"))
    assert response.status_code == 204
    assert client.delete(path, headers=h("admin")).status_code == 404
    assert client.get(items, headers=h("member")).json() == {"items": []}


def issue_store_tokens(db_url: str) -> dict[str, str]:
    """Tokens in a local token store for the four callers (projects proj-a, proj-b)."""
    grants = {
        "reader": ("proj-a", ("reader",)),
        "member": ("proj-a", ("member", "reader")),
        "admin": ("proj-a", ("admin", "member", "reader")),
        "other_admin": ("proj-b", ("admin",)),
    }
    with LocalTokenStore(db_url) as store:
        return {
            who: store.issue(user_name=who, project_id=project, roles=roles, ttl=3600).token
            for who, (project, roles) in grants.items()
        }


def keystone_env(keystone: Any) -> dict[str, str]:
    """AUTHMW_* variables pointing the examples at the test suite's Keystone."""
    env = {"AUTHMW_AUTH_URL": keystone.url}
    for key, value in keystone.service_credentials.items():
        env[f"AUTHMW_{key.upper()}"] = value
    return env


def keystone_tokens(keystone: Any) -> tuple[dict[str, str], str]:
    """Seeded users: demo-reader, demo-user (member), demo-admin on demo-project;
    the bootstrap admin (admin of another project)."""
    project = {"project": "demo-project", "project_domain": "demo"}
    tokens = {
        "reader": keystone.issue_token("demo-reader", **project),
        "member": keystone.issue_token("demo-user", **project),
        "admin": keystone.issue_token("demo-admin", **project),
        "other_admin": keystone.admin_token(),
    }
    return tokens, keystone.project_id("demo-project")
