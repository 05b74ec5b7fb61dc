"""Fixtures of the gateway tests: the echo upstream, and helpers for nginx + ``authmw serve``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._servers import Echo, Nginx, Serve

PUBLIC_ROUTES = ["GET /healthz", "/static/*", "OPTIONS *"]
ADMIN_ROUTES = [
    {"match": "/admin", "rule": "role:admin"},
    {"match": "/admin/*", "rule": "role:admin"},
]


def keystone_sections(keystone: Any, gateway: str = "nginx", **middleware: Any) -> dict[str, Any]:
    """Settings of ``authmw serve`` against ``keystone``; the password goes in the environment."""
    credentials = dict(keystone.service_credentials)
    credentials.pop("password")
    return {
        "serve": {"gateway": gateway, "log_level": "info"},
        "validator": {"type": "keystone", "auth_url": keystone.url, **credentials},
        "middleware": {"public_routes": PUBLIC_ROUTES, **middleware},
        "routes": {"rules": ADMIN_ROUTES},
    }


def keystone_env(keystone: Any) -> dict[str, str]:
    return {"AUTHMW_PASSWORD": keystone.service_credentials["password"]}


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    server = Echo().start()
    try:
        yield server
    finally:
        server.stop()


Stack = Callable[..., tuple[Nginx, Serve]]


@pytest.fixture(scope="module")
def gateway_stack(
    tmp_path_factory: pytest.TempPathFactory, echo: Echo
) -> Iterator[Callable[..., tuple[Nginx, Serve]]]:
    """``make(sections, env)``: ``authmw serve`` with these settings, nginx in front of the
    echo upstream checking with it; all stopped at the end of the module."""
    workdir: Path = tmp_path_factory.mktemp("gateway")
    started: list[Any] = []

    def make(sections: dict[str, Any], env: dict[str, str] | None = None) -> tuple[Nginx, Serve]:
        serve = Serve(workdir, sections, env)
        started.append(serve)
        serve.start()
        nginx = Nginx(workdir, echo.port, serve.port)
        started.append(nginx)
        nginx.start()
        return nginx, serve

    try:
        yield make
    finally:
        for server in reversed(started):
            server.stop()
