"""Real servers for the gateway tests: nginx, an echo upstream, ``authmw serve``.

- :class:`Nginx`: Debian's nginx on 127.0.0.1 with a config generated in a
  temp dir around examples/gateways/nginx/ (copied as they are), in front
  of an upstream, checking with an ``authmw`` server (or none: ``auth=False``).
- :class:`Echo`: the upstream, a threaded HTTP server answering every
  request with JSON: method, the request target as received, every header.
- :class:`Serve`: ``python -m authmw serve`` under uvicorn, from a settings file.

Envoy and Traefik are in :mod:`._proxies`.

Each runs in its own process (group) on a free loopback port; ``stop()``
signals only the pid it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _services import free_port

REPO = Path(__file__).resolve().parents[2]
SNIPPETS = REPO / "examples" / "gateways" / "nginx"


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen in 30 s:\n{tail(log)}")
        time.sleep(0.05)


def raw_http(port: int, data: bytes) -> tuple[int, bytes, bytes]:
    from loadtest.servers import raw_request

    try:
        return raw_request(port, data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    except OSError:
        return 0, b"", b""


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        raise RuntimeError(
            "nginx not found: run scripts/install-services.sh (Debian: apt-get install nginx-light)"
        )
    return found


class Nginx:
    """nginx in front of ``upstream_port``; ``auth_port``: the authmw server (None: no auth)."""

    def __init__(self, workdir: Path, upstream_port: int, auth_port: int | None) -> None:
        self.workdir = workdir / f"nginx-{free_port()}"
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "error.log"
        for snippet in SNIPPETS.glob("authmw-*.conf"):
            shutil.copy(snippet, self.workdir / snippet.name)
        protect = "include authmw-location.conf;" if auth_port is not None else ""
        server = "include authmw-server.conf;" if auth_port is not None else ""
        auth = f"upstream authmw {{ server 127.0.0.1:{auth_port}; keepalive 16; }}"
        temp = " ".join(
            f"{kind}_temp_path {self.workdir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.workdir / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
{"user root root;" if os.geteuid() == 0 else ""}
error_log {self.log} warn;
pid {self.workdir / "nginx.pid"};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    variables_hash_max_size 2048;
    {temp}
    {auth if auth_port is not None else ""}
    upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{self.port};
        {server}
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {protect}
        }}
    }}
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        conf = self.workdir / "nginx.conf"
        check = subprocess.run(
            [nginx_binary(), "-t", "-q", "-p", str(self.workdir), "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the config:\n{check.stderr}")
        with open(self.workdir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [nginx_binary(), "-p", str(self.workdir), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, "nginx", self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGQUIT)
        self.proc = None


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        server: Any = self.server
        with server.lock:
            server.count += 1
        body = json.dumps(
            {"method": self.command, "target": self.path, "headers": list(self.headers.items())}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Echo:
    """The upstream: reports what reached it; :attr:`count` requests so far."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.server.lock = threading.Lock()  # type: ignore[attr-defined]
        self.server.count = 0  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def count(self) -> int:
        return int(self.server.count)  # type: ignore[attr-defined]

    def start(self) -> Echo:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


class Serve:
    """``python -m authmw serve --config FILE`` on a free port; ``env``: extra variables."""

    def __init__(
        self,
        workdir: Path,
        sections: Mapping[str, Mapping[str, Any]],
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write_toml(workdir / f"authmw-{self.port}.toml", sections)
        self.log = workdir / f"authmw-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")},
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "authmw",
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self) -> Serve:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, "authmw serve", self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
