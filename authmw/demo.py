"""``authmw demo``: a protected example API on 127.0.0.1, ready for curl.

It needs nothing beyond authmw itself: the server is the standard
library's :mod:`wsgiref` (threaded), the app a plain WSGI function behind
:class:`~authmw.WSGIAuthMiddleware`, the tokens live in a SQLite store in
a temporary (or given) folder.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socketserver
import sys
import tempfile
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .core import error_body
from .identity import Identity
from .store import LocalTokenStore
from .wsgi import WSGIAuthMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["make_app", "run"]

HOST = "127.0.0.1"
CACHE_TIME = 300.0
"""The demo caches validations as long as the middleware does by default: the store tells
the cache of a revocation from another process within a second."""

_JSON = [("Content-Type", "application/json")]


def _json(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body, indent=2).encode() + b"\n"
    start_response(status, [*_JSON, ("Content-Length", str(len(data)))])
    return [data]


def _api(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The example app: it trusts the identity the middleware put in the environ."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    identity: Identity | None = environ.get("authmw.identity")
    if method == "POST" and path == "/notes" and identity is not None:
        # Reached only by tokens that may write: the middleware answers a
        # read-only token's POST with 403 before the app sees it.
        who = identity.user_name or identity.user_id
        return _json(start_response, "201 Created", {"saved": True, "by": who})
    if method != "GET":
        return _json(start_response, "405 Method Not Allowed", {"error": "use GET"})
    if path == "/healthz":
        return _json(start_response, "200 OK", {"status": "ok"})
    if identity is None:  # only public routes get here without one
        return _json(start_response, "401 Unauthorized", error_body(401, "authentication required"))
    if path == "/whoami":
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in sorted(environ.items())
            if key.startswith("HTTP_X_") and key != "HTTP_X_AUTH_TOKEN"
        }
        return _json(start_response, "200 OK", {"identity": identity.to_dict(), "headers": headers})
    if path == "/admin":
        if not identity.has_role("admin"):
            message = f"user {identity.user_name or identity.user_id} lacks the admin role"
            return _json(start_response, "403 Forbidden", error_body(403, message))
        return _json(
            start_response,
            "200 OK",
            {"message": f"welcome, {identity.user_name or identity.user_id}: you are an admin"},
        )
    return _json(start_response, "404 Not Found", {"error": f"no route {path}"})


def make_app(store: LocalTokenStore) -> WSGIAuthMiddleware:
    """The demo API behind the middleware, validating tokens with ``store``."""
    return WSGIAuthMiddleware(
        _api, validator=store, public_routes=["GET /healthz"], cache_time=CACHE_TIME
    )


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"demo: {self.address_string()} {format % args}\n")


def _interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt


def run(*, directory: str | None = None, port: int = 8000) -> int:
    """Start the demo, print tokens and curl commands, serve until Ctrl-C; exit status."""
    own_dir = directory is None
    folder = tempfile.mkdtemp(prefix="authmw-demo-") if directory is None else directory
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not own_dir:
            os.makedirs(folder, exist_ok=True)
        db_url = "sqlite:///" + os.path.abspath(os.path.join(folder, "demo-tokens.db"))
        with LocalTokenStore(db_url) as store:
            admin = store.issue(
                user_name="admin",
                project_name="demo",
                roles=["admin", "member", "reader"],
                ttl=86400,
                description="authmw demo: admin",
            )
            reader = store.issue(
                user_name="alice",
                project_name="demo",
                roles=["reader"],
                ttl=86400,
                description="authmw demo: reader",
            )
            read_only = store.issue(
                user_name="ci-bot",
                project_name="demo",
                roles=["admin"],
                ttl=86400,
                read_only=True,
                description="authmw demo: a read-only API key",
            )
            try:
                server = make_server(
                    HOST, port, make_app(store), server_class=_Server, handler_class=_Handler
                )
            except OSError as exc:
                print(
                    f"authmw: error: cannot listen on {HOST}:{port}: "
                    f"{exc.strerror or exc} (try --port 0 for any free port)",
                    file=sys.stderr,
                )
                return 2
            with server:
                base = f"http://{HOST}:{server.server_address[1]}"
                _print_intro(base, db_url, admin.token, reader.token, reader.id, read_only.token)
                server.serve_forever(poll_interval=0.2)
        return 0
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM) at any moment, even before serving, is a clean stop.
        print("\nauthmw demo: stopped", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


def _print_intro(
    base: str, db_url: str, admin: str, reader: str, reader_id: str, read_only: str
) -> None:
    def curl(path: str, token: str | None = None, method: str = "GET") -> str:
        header = f"-H {shlex.quote('X-Auth-Token: ' + token)} " if token else ""
        verb = "" if method == "GET" else f"-X {method} "
        return f"  curl -i {verb}{header}{base}{path}"

    lines = [
        f"authmw demo: a protected API is listening on {base}",
        f"token store: {db_url}",
        "",
        "Three tokens were issued (valid 24 hours):",
        f"  admin (roles admin, member, reader): {admin}",
        f"  alice (role reader):                 {reader}",
        f"  ci-bot (role admin, read-only key):  {read_only}",
        "",
        "Try it:",
        "  # 200: a public route, no token needed",
        curl("/healthz"),
        "  # 401: no token",
        curl("/whoami"),
        "  # 200: the identity behind alice's token, echoed back",
        curl("/whoami", reader),
        "  # 403: alice is only a reader; /admin needs the admin role",
        curl("/admin", reader),
        "  # 200: the admin token may",
        curl("/admin", admin),
        "  # 201: a token may POST",
        curl("/notes", admin, "POST"),
        "  # 403: a read-only token is refused a POST (its restriction, whatever its roles)",
        curl("/notes", read_only, "POST"),
        "",
        "Revoke alice's token from another shell; within a second her requests get 401:",
        f"  authmw token revoke {reader_id} --db {shlex.quote(db_url)}",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
