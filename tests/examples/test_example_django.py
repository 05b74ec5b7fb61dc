"""The Django example project, run as it would be deployed: gunicorn (WSGI) or uvicorn (ASGI).

A server process of its own gives the project its own settings module, so
its REST framework settings are the ones DRF reads at import, as in production.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _services import free_port
from examples_support import (
    DEMO_TOKENS,
    EXAMPLES,
    check_items_api,
    issue_store_tokens,
    keystone_env,
    keystone_tokens,
)

PROJECT = EXAMPLES / "django_project"


@contextlib.contextmanager
def serve(kind: str, env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    port = free_port()
    if kind == "wsgi":
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(PROJECT),
            "-w",
            "1",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "itemsite.wsgi:application",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(PROJECT),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "itemsite.asgi:application",
        ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHMW_", "DJANGO_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**clean, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{kind} server exited:\n{log.read_text()}")
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{kind} server did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_demo_tokens(kind: str, tmp_path: Path) -> None:
    with serve(kind, {}, tmp_path / "server.log") as client:
        check_items_api(client, DEMO_TOKENS, "demo-project")
        check_items_api(client, DEMO_TOKENS, "demo-project", prefix="/api")


def test_drf_unauthenticated_is_401_not_403(tmp_path: Path) -> None:
    with serve("wsgi", {}, tmp_path / "server.log") as client:
        response = client.get("/api/items")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Keystone realm="authmw"'


def test_local_token_store(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'tokens.db'}"
    tokens = issue_store_tokens(db_url)
    with serve("wsgi", {"AUTHMW_DB": db_url}, tmp_path / "server.log") as client:
        check_items_api(client, tokens, "proj-a")
        check_items_api(client, tokens, "proj-a", prefix="/api")


def test_keystone(keystone: Any, tmp_path: Path) -> None:
    tokens, project_id = keystone_tokens(keystone)
    with serve("asgi", keystone_env(keystone), tmp_path / "server.log") as client:
        check_items_api(client, tokens, project_id)
        check_items_api(client, tokens, project_id, prefix="/api")


def test_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"items:create": "role:admin"\n')
    with serve("wsgi", {"AUTHMW_POLICY_FILE": str(policy)}, tmp_path / "server.log") as client:
        member = {"X-Auth-Token": DEMO_TOKENS["member"]}
        assert client.post("/items", json={"name": "x"}, headers=member).status_code == 403
        assert client.post("/api/items", json={"name": "x"}, headers=member).status_code == 403
