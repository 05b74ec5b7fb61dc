"""``authmw login``: Keystone v3 (the real Keystone), v2.0/Rackspace and token-acquire APIs.

v2.0 and token-acquire services are served in their documented formats,
through ``httpx.MockTransport`` or a real Starlette server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authmw import _cli_login
from authmw.cli import main

EXPIRES = "2030-01-02T03:04:05.678Z"
V2_TOKEN = "cd45ad90d8034a1b8d75aa0efa123456"
OPS_TOKEN = "8f868cca-27cc-43d6-a838-c5467e73ec45::f6f4bb32-2d16-4e04-b6e3-f5a2d6b3f3e5"
VALIDITY = 1893553445000  # 2030-01-02T03:04:05Z in epoch ms


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("OS_", "AUTHMW_", "RAX_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt


def v2_access(token: str) -> dict[str, Any]:
    return {
        "access": {
            "token": {
                "id": token,
                "expires": EXPIRES,
                "tenant": {"id": "5830345", "name": "5830345"},
                "RAX-AUTH:authenticatedBy": ["PASSWORD"],
            },
            "serviceCatalog": [],
            "user": {
                "id": "789345",
                "name": "jqsmith",
                "roles": [{"id": "3", "name": "identity:user-admin"}],
                "RAX-AUTH:defaultRegion": "IAD",
            },
        }
    }


class Services:
    """v2.0 POST /v2.0/tokens and POST /suite-api/api/auth/token/acquire."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.mfa = False

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.requests.append((path, body))
        if path == "/v2.0/tokens":
            auth = body["auth"]
            creds = auth.get("passwordCredentials") or auth.get("RAX-KSKEY:apiKeyCredentials")
            secret = creds.get("password") or creds.get("apiKey")
            if secret not in ("pass word", "0123456789abcdef"):
                return 401, {"unauthorized": {"code": 401, "message": "Bad credentials"}}, {}
            if self.mfa:
                return (
                    401,
                    {
                        "unauthorized": {
                            "code": 401,
                            "message": "Additional authentication credentials required",
                        }
                    },
                    {"WWW-Authenticate": "OS-MF sessionId='s3ss10n', factor='PASSCODE'"},
                )
            return 200, v2_access(V2_TOKEN), {}
        if path == "/suite-api/api/auth/token/acquire":
            if body.get("password") != "pass word":
                return 401, {"message": "Invalid username or password"}, {}
            return (
                200,
                {
                    "token": OPS_TOKEN,
                    "validity": VALIDITY,
                    "expiresAt": "Wednesday, January 2, 2030 3:04:05 AM UTC",
                    "roles": ["Administrator"],
                },
                {},
            )
        return 404, {}, {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        status, body, headers = self.answer(request.url.path, json.loads(request.content))
        return httpx.Response(status, json=body, headers=headers)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="authmw")
    _cli_login.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["login", *argv])


def login(argv: list[str], services: Services) -> int:
    return _cli_login.run(parse(argv), transport=httpx.MockTransport(services.handler))


V2 = ["v2", "--auth-url", "https://identity.example.com/v2.0", "--username", "jqsmith"]
ACQUIRE = ["acquire", "--url", "https://ops.example.com/suite-api", "--username", "admin"]


# -- v2.0 / Rackspace -------------------------------------------------------------------


def test_v2_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    services = Services()
    assert login([*V2, "--tenant-name", "5830345"], services) == 0
    out = capsys.readouterr().out
    assert out == f"token: {V2_TOKEN}\nexpires: 2030-01-02T03:04:05Z\n"
    assert services.requests == [
        (
            "/v2.0/tokens",
            {
                "auth": {
                    "passwordCredentials": {"username": "jqsmith", "password": "pass word"},
                    "tenantName": "5830345",
                }
            },
        )
    ]


def test_v2_api_key_from_os_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OS_AUTH_URL", "https://identity.example.com/v2.0/")
    monkeypatch.setenv("OS_USERNAME", "jqsmith")
    monkeypatch.setenv("OS_TENANT_ID", "5830345")
    monkeypatch.setenv("RAX_API_KEY", "0123456789abcdef")
    services = Services()
    assert login(["v2", "--api-key", "--json"], services) == 0
    assert json.loads(capsys.readouterr().out) == {
        "token": V2_TOKEN,
        "expires_at": "2030-01-02T03:04:05Z",
    }
    assert services.requests[0][1] == {
        "auth": {
            "RAX-KSKEY:apiKeyCredentials": {"username": "jqsmith", "apiKey": "0123456789abcdef"},
            "tenantId": "5830345",
        }
    }


def test_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pass word\n"))
    monkeypatch.setenv("AUTHMW_PASSWORD", "the explicit option wins over this")
    assert login([*V2, "--password-stdin", "-q"], Services()) == 0
    assert capsys.readouterr().out == V2_TOKEN + "\n"


def test_password_from_a_named_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MY_SECRET", "pass word")
    monkeypatch.setenv("AUTHMW_PASSWORD", "not this one")
    assert login([*V2, "--password-env", "MY_SECRET", "-q"], Services()) == 0
    assert capsys.readouterr().out == V2_TOKEN + "\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_prompt_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return "pass word"

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert login([*V2, "-q"], Services()) == 0
    assert prompts == ["Password: "]
    assert capsys.readouterr().out == V2_TOKEN + "\n"


def test_no_password_anywhere_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    services = Services()
    assert login(V2, services) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "AUTHMW_PASSWORD" in err and "--password-stdin" in err
    assert services.requests == []


def test_password_on_the_command_line_is_refused_without_echo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    services = Services()
    assert login([*V2, "--password", "hunter2-secret"], services) == 2
    captured = capsys.readouterr()
    assert "hunter2-secret" not in captured.out + captured.err
    assert "not accepted on the command line" in captured.err
    assert captured.err.count("\n") == 1
    assert services.requests == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([*V2, "--tenant-id", "1", "--tenant-name", "one"], "tenant_name"),
        (["v2", "--username", "jqsmith"], "--auth-url"),
        (["v2", "--auth-url", "https://identity.example.com"], "--username"),
        (["v2", "--auth-url", "http://keystone:5000/v3", "--username", "u"], "v3"),
        ([*V2, "--insecure", "--cafile", "/etc/ssl/ca.pem"], "--insecure"),
        ([*V2, "--cafile", "/nonexistent/ca.pem"], "--cafile"),
        ([*V2, "--timeout", "0"], "--timeout"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    services = Services()
    assert login(argv, services) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and needle in captured.err
    assert services.requests == []


def test_refused_credentials_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "wrong")
    assert login(V2, Services()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Bad credentials" in err and "wrong" not in err


def test_mfa_is_reported_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    services = Services()
    services.mfa = True
    assert login(V2, services) == 1
    err = capsys.readouterr().err
    assert "multi-factor authentication is required" in err
    assert "s3ss10n" not in err


def test_unreachable_service_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    args = parse(V2)
    assert _cli_login.run(args, transport=httpx.MockTransport(refuse)) == 2
    assert "unreachable" in capsys.readouterr().err


# -- token-acquire APIs -----------------------------------------------------------------


def test_acquire_prints_token_and_expiry_and_does_not_release(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    services = Services()
    assert login([*ACQUIRE, "--auth-source", "Imported LDAP Server"], services) == 0
    assert capsys.readouterr().out == f"token: {OPS_TOKEN}\nexpires: 2030-01-02T03:04:05Z\n"
    assert services.requests == [
        (
            "/suite-api/api/auth/token/acquire",
            {"username": "admin", "password": "pass word", "authSource": "Imported LDAP Server"},
        )
    ]


def test_acquire_needs_a_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    assert login(["acquire", "--username", "admin"], Services()) == 2
    assert "--url" in capsys.readouterr().err


# -- through `authmw` itself, against real servers ----------------------------------------------


@pytest.fixture(scope="module")
def real_server() -> Iterator[tuple[str, Services]]:
    services = Services()

    async def endpoint(request: Request) -> Response:
        status, body, headers = services.answer(request.url.path, await request.json())
        return JSONResponse(body, status_code=status, headers=headers)

    app = Starlette(
        routes=[
            Route("/v2.0/tokens", endpoint, methods=["POST"]),
            Route("/suite-api/api/auth/token/acquire", endpoint, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", services
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_authmw_login_v2_and_acquire_over_http(
    real_server: tuple[str, Services],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = real_server
    monkeypatch.setenv("AUTHMW_PASSWORD", "pass word")
    assert main(["login", "v2", "--auth-url", url, "--username", "jqsmith", "-q"]) == 0
    assert capsys.readouterr().out == V2_TOKEN + "\n"
    assert main(["login", "acquire", "--url", url + "/suite-api", "--username", "a", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token"] == OPS_TOKEN


@pytest.mark.parametrize(
    "argv",
    [["login"], ["login", "v4"], ["login", "v2", "--bogus"], ["login", "v2", "--timeout", "x"]],
)
def test_authmw_login_usage_errors_are_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1


# -- Keystone v3 (the real Keystone) ------------------------------------------------------------


def _own_token_info(keystone: Any, token: str) -> dict[str, Any]:
    """A user may look at their own token: GET /v3/auth/tokens with it in both headers."""
    response = httpx.get(
        keystone.url + "/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
        params={"nocatalog": ""},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["token"]
    return body


def _printed(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_v3_password_project_scope_from_os_variables(
    keystone: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user = keystone.user("demo-user")
    monkeypatch.setenv("OS_AUTH_URL", keystone.url)
    monkeypatch.setenv("OS_USERNAME", "demo-user")
    monkeypatch.setenv("OS_USER_DOMAIN_NAME", "demo")
    monkeypatch.setenv("OS_PROJECT_NAME", "demo-project")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "demo")
    monkeypatch.setenv("OS_PASSWORD", user["password"])
    assert main(["login", "v3", "--json"]) == 0
    printed = _printed(capsys)
    info = _own_token_info(keystone, printed["token"])
    assert info["project"]["name"] == "demo-project"
    assert info["user"]["name"] == "demo-user"
    expires = datetime.fromisoformat(info["expires_at"].replace("Z", "+00:00"))
    assert printed["expires_at"] == expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("user", "options", "check"),
    [
        ("gardener", ["--domain-name", "smartcity"], ("domain", "name", "smartcity")),
        (
            "gardener",
            ["--project-name", "/gardens", "--project-domain-name", "smartcity"],
            ("project", "name", "/gardens"),
        ),
        ("system-reader", ["--system-scope", "all"], ("system", "all", True)),
        ("norole", ["--unscoped"], None),
    ],
)
def test_v3_scopes(
    keystone: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user: str,
    options: list[str],
    check: tuple[str, str, Any] | None,
) -> None:
    seeded = keystone.user(user)
    monkeypatch.setenv("AUTHMW_PASSWORD", seeded["password"])
    argv = ["login", "v3", "--auth-url", keystone.url, "--username", user]
    argv += ["--user-domain-name", seeded["domain"], *options, "--json"]
    assert main(argv) == 0
    info = _own_token_info(keystone, _printed(capsys)["token"])
    if check is None:
        assert not {"project", "domain", "system"} & info.keys()
    else:
        kind, key, value = check
        assert info[kind][key] == value


def test_v3_application_credential(
    keystone: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cred = keystone.application_credential
    monkeypatch.setenv("OS_APPLICATION_CREDENTIAL_SECRET", cred["secret"])
    argv = ["login", "v3", "--auth-url", keystone.url, "--application-credential-id", cred["id"]]
    assert main([*argv, "--json"]) == 0
    info = _own_token_info(keystone, _printed(capsys)["token"])
    assert info["methods"] == ["application_credential"]
    assert info["application_credential"]["id"] == cred["id"]


def test_v3_token_exchange_for_another_scope(
    keystone: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", keystone.user("alice")["password"])
    base = ["login", "v3", "--auth-url", keystone.url]
    assert main([*base, "--username", "alice", "--unscoped", "-q"]) == 0
    unscoped = capsys.readouterr().out.strip()
    assert "project" not in _own_token_info(keystone, unscoped)

    monkeypatch.delenv("AUTHMW_PASSWORD")
    monkeypatch.setenv("AUTHMW_TOKEN", unscoped)
    assert main([*base, "--token-exchange", "--project-name", "alpha", "-q"]) == 0
    scoped = capsys.readouterr().out.strip()
    info = _own_token_info(keystone, scoped)
    assert scoped != unscoped
    assert info["project"]["name"] == "alpha"
    assert "token" in info["methods"]


def test_v3_wrong_password_exits_1(
    keystone: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHMW_PASSWORD", "definitely-wrong")
    argv = ["login", "v3", "--auth-url", keystone.url, "--username", "alice", "--unscoped"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "definitely-wrong" not in captured.err
