"""gunicorn (threads) and uvicorn running :mod:`loadtest.apps`, and /proc samples of them.

Each server runs in its own process group on a free loopback port; ``stop()``
signals only the pid it started. ``sample()`` reads the serving process's
RSS, threads, open file descriptors and established TCP connections (all of
them, and those to a given port) from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["REPO", "Sample", "Server", "free_port", "raw_request"]

REPO = Path(__file__).resolve().parent.parent


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, never handed out before here.

    Chosen below the kernel's ephemeral range, from which client sockets get
    their own ports: a client that keeps connecting to a server that is down
    (or never there) could otherwise connect to itself (TCP self-connect),
    talk to itself, and hold the port the server restarts on.
    """
    end = _ephemeral_ports_start()
    choices = random.Random()  # noqa: S311 (a port, not a secret)
    for _ in range(1000):
        port = choices.randrange(end // 2, end)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 between {end // 2} and {end}")


@dataclass(frozen=True)
class Sample:
    """Resources of one process at one moment."""

    rss_kb: int
    threads: int
    fds: int
    connections: int
    upstream_connections: int

    def as_dict(self) -> dict[str, int]:
        return {
            "rss_kb": self.rss_kb,
            "threads": self.threads,
            "fds": self.fds,
            "connections": self.connections,
            "upstream_connections": self.upstream_connections,
        }


def _established_remote_ports(pid: int) -> list[int]:
    """Remote ports of the ESTABLISHED TCP sockets ``pid`` holds."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                    ports.append(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def sample_process(pid: int, upstream_port: int | None = None) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    ports = _established_remote_ports(pid)
    return Sample(
        rss_kb=int(fields["VmRSS"].split()[0]),
        threads=int(fields["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        connections=len(ports),
        upstream_connections=sum(1 for p in ports if p == upstream_port),
    )


class Server:
    """``kind`` is ``gunicorn`` (``workers`` gthread workers of ``threads`` threads each,
    the app built in the master first with ``preload``) or ``uvicorn``.
    ``keep_alive``: seconds gunicorn keeps an idle connection (its default: 2)."""

    def __init__(
        self,
        kind: str,
        config: dict[str, Any],
        workdir: Path,
        threads: int = 8,
        access_log: bool = False,
        *,
        workers: int = 1,
        preload: bool = False,
        keep_alive: int | None = None,
    ) -> None:
        if kind not in ("gunicorn", "uvicorn"):
            raise ValueError(kind)
        if kind == "uvicorn" and preload:
            raise ValueError("preload is a gunicorn option")
        self.kind = kind
        self.access_log = access_log
        self.workdir = workdir
        self.threads = threads
        self.workers = workers
        self.preload = preload
        self.keep_alive = keep_alive
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"{kind}-{self.port}.json"
        self.config_path.write_text(json.dumps(config))
        self.config_path.chmod(0o600)
        self.log_path = workdir / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        host = ["127.0.0.1", str(self.port)]
        if self.kind == "gunicorn":
            return [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                *(["--preload"] if self.preload else []),
                *(["--keep-alive", str(self.keep_alive)] if self.keep_alive else []),
                "--bind",
                ":".join(host),
                "--graceful-timeout",
                "3",
                "--timeout",
                "60",
                "--log-level",
                "info" if self.access_log else "warning",
                *(["--access-logfile", "-"] if self.access_log else []),
                "--no-control-socket",
                "loadtest.apps:wsgi_app()",
            ]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "loadtest.apps:asgi_app",
            "--host",
            host[0],
            "--port",
            host[1],
            "--log-level",
            "info" if self.access_log else "warning",
            "--access-log" if self.access_log else "--no-access-log",
            "--lifespan",
            "on",
            "--timeout-graceful-shutdown",
            "3",
            *(["--workers", str(self.workers)] if self.workers > 1 else []),
        ]

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "AUTHMW_LT_CONFIG": str(self.config_path)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not answer in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def serving_pid(self) -> int:
        """The pid that serves requests: gunicorn's worker, uvicorn itself."""
        pids = self.worker_pids()
        if len(pids) != 1:
            raise RuntimeError(f"gunicorn has {len(pids)} workers, expected 1")
        return pids[0]

    def worker_pids(self) -> list[int]:
        """The pids that serve requests: gunicorn's workers, or uvicorn itself."""
        assert self.proc is not None
        if self.kind == "uvicorn":
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return sorted(int(p) for p in children.split())

    def wait_for_workers(self, timeout: float = 30.0) -> list[int]:
        """Wait until gunicorn runs all its workers; their pids."""
        deadline = time.monotonic() + timeout
        while len(pids := self.worker_pids()) != self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn runs {len(pids)} of {self.workers} workers")
            time.sleep(0.05)
        return pids

    def sample(self, upstream_port: int | None = None) -> Sample:
        return sample_process(self.serving_pid, upstream_port)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_lt/stats", timeout=10) as r:  # noqa: S310
            stats: dict[str, Any] = json.load(r)
            return stats

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """Send bytes as they are; (status, raw header block, body) of the answer (0: no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # The server may answer (431, 400) and close before reading everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, head, body
