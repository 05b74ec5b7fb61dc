"""A small identity service for gunicorn: its own limits answer oversize tokens.

Run by :func:`served_identity` (``gunicorn _served_identity:app``), it
speaks, with the documented bodies:

- Rackspace Cloud Identity v2.0: ``POST /v2.0/tokens`` (API key login of the
  admin) and ``GET /v2.0/tokens/{token}`` with the admin token in
  ``X-Auth-Token`` ("Validate token": 200 with ``access``, 404
  ``itemNotFound``, 401 ``unauthorized``);
- RFC 7662: ``POST /introspect`` with HTTP Basic client credentials (200 with
  section 2.2's example, ``{"active": false}`` for any other token, 401
  ``invalid_client``);
- a token-acquire API's "current user": ``GET /currentuser`` with
  ``Authorization: vRealizeOpsToken <token>`` (200 with the user, 401).

gunicorn answers 414 to a request line over 4094 bytes and 431 to a header
field over 8190 bytes before the app sees them: that is what the tests use.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

ADMIN_USER = "identity-admin"
ADMIN_KEY = "adminkey-0123"
ADMIN_TOKEN = "admin-token-5a1e6f0c2d3b4a59"
USER_TOKEN = "cd45ad90d8034a1b8d75aa0efa123456"
CLIENT_ID = "rs-api"
CLIENT_SECRET = "rs-secret"
FAR = "2099-01-01T00:00:00.000Z"


def rackspace_access(token: str) -> dict[str, Any]:
    """Rackspace's documented "Validate token" answer (ids and expiry adapted)."""
    return {
        "access": {
            "token": {
                "id": token,
                "expires": FAR,
                "tenant": {"id": "5830345", "name": "5830345"},
                "RAX-AUTH:authenticatedBy": ["APIKEY"],
            },
            "user": {
                "id": "92bb036af5b0467198cded3455123456",
                "roles": [
                    {"tenantId": "5830345", "id": "684", "name": "compute:default"},
                    {"id": "2", "description": "Default Role.", "name": "identity:default"},
                ],
                "name": "accountUserName",
                "RAX-AUTH:defaultRegion": "SYD",
                "RAX-AUTH:domainId": "5830345",
            },
        }
    }


RFC_ANSWER = {  # RFC 7662 section 2.2 (exp moved to the far future)
    "active": True,
    "client_id": "l238j323ds-23ij4",
    "username": "jdoe",
    "scope": "read write dolphin",
    "sub": "Z5O3upPC88QrAjx00dis",
    "aud": "https://protected.example.net/resource",
    "iss": "https://server.example.com/",
    "exp": 4070908800,
    "iat": 1419350238,
}

CURRENT_USER = {
    "id": "3bd6ec54-53a4-4fe5-8c4c-1e9e5e5a1c7d",
    "username": "jdoe",
    "emailAddress": "jdoe@example.com",
    "enabled": True,
    "roleNames": ["Administrator", "ReadOnly"],
}

StartResponse = Callable[..., Any]


def _json(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data: bytes = environ["wsgi.input"].read(length)
    return data


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    # RAW_URI keeps the percent-encoding of the token's path segment.
    path = str(environ.get("RAW_URI") or environ["PATH_INFO"]).split("?")[0]
    if path == "/healthz":
        return _json(start_response, "200 OK", {})
    if method == "POST" and path == "/v2.0/tokens":
        auth = json.loads(_body(environ))["auth"]["RAX-KSKEY:apiKeyCredentials"]
        if (auth["username"], auth["apiKey"]) != (ADMIN_USER, ADMIN_KEY):
            return _json(start_response, "401 Unauthorized", {"unauthorized": {"code": 401}})
        return _json(start_response, "200 OK", rackspace_access(ADMIN_TOKEN))
    if method == "GET" and path.startswith("/v2.0/tokens/"):
        if environ.get("HTTP_X_AUTH_TOKEN") != ADMIN_TOKEN:
            return _json(start_response, "401 Unauthorized", {"unauthorized": {"code": 401}})
        token = unquote(path.rsplit("/", 1)[1])
        if token != USER_TOKEN:
            fault = {"itemNotFound": {"code": 404, "message": "Token not found."}}
            return _json(start_response, "404 Not Found", fault)
        return _json(start_response, "200 OK", rackspace_access(token))
    if method == "POST" and path == "/introspect":
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if environ.get("HTTP_AUTHORIZATION") != f"Basic {basic}":
            return _json(start_response, "401 Unauthorized", {"error": "invalid_client"})
        form = dict(parse_qsl(_body(environ).decode()))
        if form.get("token") != USER_TOKEN:
            return _json(start_response, "200 OK", {"active": False})
        return _json(start_response, "200 OK", RFC_ANSWER)
    if method == "GET" and path == "/currentuser":
        if environ.get("HTTP_AUTHORIZATION") != f"vRealizeOpsToken {USER_TOKEN}":
            return _json(start_response, "401 Unauthorized", {"message": "Not authenticated"})
        return _json(start_response, "200 OK", CURRENT_USER)
    return _json(start_response, "404 Not Found", {})


@contextmanager
def served_identity(log: Path) -> Iterator[str]:
    """This module's app under gunicorn on 127.0.0.1; yields its base URL."""
    from _services import free_port  # here: gunicorn imports this module without tests/

    port = free_port()
    here = Path(__file__).resolve().parent
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--pythonpath",
                str(here),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--graceful-timeout",
                "1",
                "--log-level",
                "warning",
                "--no-control-socket",
                "_served_identity:app",
            ],
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
