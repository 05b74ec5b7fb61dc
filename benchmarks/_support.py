"""What the benchmarks share: a real Keystone, the apps, keystonemiddleware, servers, load.

Nothing is mocked: tokens come from the Keystone that scripts/keystone/start.sh
runs, keystonemiddleware 13.0.1 validates against it, servers are gunicorn
and uvicorn in their own processes, and load comes from wrk (or, without it,
benchmarks/loadgen.py) in another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
KEYSTONE_SCRIPTS = REPO / "scripts" / "keystone"

SERVICE: dict[str, Any] = {
    "username": "service-user",
    "password": "service-secret",
    "user_domain_id": "default",
    "project_name": "service",
    "project_domain_id": "default",
}
DEMO_USER = ("demo-user", "demo", "demo-secret", "demo-project")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def child_figure(script: str, tree: Path, *args: str) -> float:
    """The number ``script --child ARGS`` prints, run in a fresh process that imports
    the authmw of ``tree`` (a checkout: this one or a :func:`revision_tree`)."""
    out = subprocess.run(
        [sys.executable, script, "--child", *args],
        env={**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(script).parent}"},
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def checkouts(base: str | None) -> dict[str, Path]:
    """The trees a ``--base`` comparison runs, by label: ``at BASE`` (if given), then
    ``this checkout``."""
    trees = {"this checkout": REPO}
    return trees if base is None else {f"at {base}": revision_tree(base), **trees}


def revision_tree(rev: str) -> Path:
    """A checkout of git revision ``rev`` in ``.cache/bench-base/<commit>`` (made once)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = REPO / ".cache" / "bench-base" / commit[:12]
    if not (tree / "authmw").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(tree), commit],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    return tree


# -- Keystone --------------------------------------------------------------------


class BenchKeystone:
    """A Keystone of the benchmarks' own (own state dir and port), seeded.

    ``AUTHMW_BENCH_KEYSTONE_HOME`` picks the state (default
    ``.cache/bench-keystone``); the virtualenv of the test suite's Keystone
    (``.cache/keystone/venv``) is reused. It is stopped at the end only if
    this run started it.
    """

    def __init__(self) -> None:
        home = Path(
            os.environ.get("AUTHMW_BENCH_KEYSTONE_HOME") or REPO / ".cache" / "bench-keystone"
        )
        self.home = home.absolute()
        self.state = self.home / "state"
        venv = os.environ.get("AUTHMW_KEYSTONE_VENV") or str(REPO / ".cache" / "keystone" / "venv")
        self.env = {
            **os.environ,
            "AUTHMW_KEYSTONE_HOME": str(self.home),
            "AUTHMW_KEYSTONE_STATE_DIR": str(self.state),
            "AUTHMW_KEYSTONE_VENV": venv,
            "AUTHMW_KEYSTONE_OWNER": "benchmarks",
        }
        if os.environ.get("AUTHMW_BENCH_KEYSTONE_PORT"):
            self.env["AUTHMW_KEYSTONE_PORT"] = os.environ["AUTHMW_BENCH_KEYSTONE_PORT"]
        self.url = ""
        self.started_here = False
        self.client = httpx.Client(timeout=30)

    def _running(self) -> bool:
        try:
            pid = int((self.state / "keystone.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def start(self) -> None:
        was_running = self._running()
        out = subprocess.run(
            ["bash", str(KEYSTONE_SCRIPTS / "start.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"Keystone did not start:\n{out.stderr[-2000:]}")
        self.url = out.stdout.strip().splitlines()[-1]
        self.started_here = not was_running
        seed = subprocess.run(
            [sys.executable, str(KEYSTONE_SCRIPTS / "seed.py"), "--if-needed", "--quiet"],
            env={**self.env, "AUTHMW_KEYSTONE_AUTH_URL": self.url},
            capture_output=True,
            text=True,
            check=False,
        )
        if seed.returncode != 0:
            raise RuntimeError(f"Keystone seed failed:\n{seed.stderr[-2000:]}")

    def stop(self) -> None:
        self.client.close()
        if self.started_here:
            subprocess.run(
                ["bash", str(KEYSTONE_SCRIPTS / "stop.sh")],
                env=self.env,
                capture_output=True,
                check=False,
            )

    @property
    def access_log(self) -> Path:
        return self.state / "log" / "access.log"

    def validation_calls(self) -> int:
        """``GET /v3/auth/tokens`` lines in Keystone's access log so far."""
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count('"GET /v3/auth/tokens')

    def count_calls(self, action: Callable[[], Any], settle: float = 1.0) -> int:
        """How many validation calls ``action`` made (read from the access log)."""
        time.sleep(settle)  # earlier requests' lines too: a worker writes its line after answering
        before = self.validation_calls()
        action()
        time.sleep(settle)  # let both workers write their access-log lines
        return self.validation_calls() - before

    def issue_token(self, user: tuple[str, str, str, str] = DEMO_USER) -> str:
        name, domain, password, project = user
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": name, "domain": {"name": domain}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"name": domain}}},
            }
        }
        response = self.client.post(f"{self.url}/auth/tokens", json=body)
        response.raise_for_status()
        return response.headers["x-subject-token"]

    def issue_tokens(self, count: int) -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: self.issue_token(), range(count)))

    def admin_token(self) -> str:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"id": "default"},
                            "password": os.environ.get(
                                "AUTHMW_KEYSTONE_ADMIN_PASSWORD", "admin-secret"
                            ),
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        response = self.client.post(f"{self.url}/auth/tokens", json=body)
        response.raise_for_status()
        return response.headers["x-subject-token"]

    @contextlib.contextmanager
    def identity_region(self, region: str, url: str) -> Iterator[None]:
        """A catalog region whose identity endpoints point at ``url`` (removed afterwards).

        keystonemiddleware validates at the identity endpoint of the service
        catalog, not at ``auth_url``; a region is how its users point it elsewhere.
        """
        headers = {"X-Auth-Token": self.admin_token()}
        api = self.url
        created = self.client.post(
            f"{api}/regions", json={"region": {"id": region}}, headers=headers
        )
        if created.status_code not in (201, 409):
            created.raise_for_status()
        services = self.client.get(f"{api}/services?type=identity", headers=headers).json()
        service_id = services["services"][0]["id"]
        endpoints: list[str] = []
        try:
            for interface in ("public", "internal", "admin"):
                response = self.client.post(
                    f"{api}/endpoints",
                    json={
                        "endpoint": {
                            "service_id": service_id,
                            "interface": interface,
                            "region_id": region,
                            "url": url,
                        }
                    },
                    headers=headers,
                )
                response.raise_for_status()
                endpoints.append(response.json()["endpoint"]["id"])
            yield
        finally:
            for endpoint in endpoints:
                self.client.delete(f"{api}/endpoints/{endpoint}", headers=headers)

    def invalid_token(self) -> str:
        """A token-shaped string Keystone answers 404 for."""
        token = self.issue_token()
        return token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)


# -- apps and middlewares --------------------------------------------------------------


def hello_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]


async def hello_asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello world\n"})


def authmw_validator(auth_url: str, **options: Any) -> Any:
    from authmw.validators.keystone import KeystoneValidator

    return KeystoneValidator(auth_url, **SERVICE, **options)


def authmw_wsgi(
    auth_url: str,
    app: Any = hello_wsgi,
    validator_options: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    from authmw.wsgi import WSGIAuthMiddleware

    return WSGIAuthMiddleware(
        app, validator=authmw_validator(auth_url, **(validator_options or {})), **options
    )


def authmw_asgi(auth_url: str, app: Any = hello_asgi, **options: Any) -> Any:
    from authmw.asgi import ASGIAuthMiddleware

    return ASGIAuthMiddleware(app, validator=authmw_validator(auth_url), **options)


def ksm_wsgi(auth_url: str, app: Any = hello_wsgi, **conf: Any) -> Any:
    """keystonemiddleware 13.0.1's AuthProtocol, configured as its docs show."""
    import logging

    try:
        from keystonemiddleware import auth_token  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(
            "the comparison needs keystonemiddleware 13.0.1: pip install "
            "keystonemiddleware==13.0.1 -c scripts/keystone/constraints.txt"
        ) from exc

    logging.getLogger("keystonemiddleware").setLevel(logging.ERROR)
    options = {
        "auth_type": "password",
        "auth_url": auth_url,
        "www_authenticate_uri": auth_url,
        "username": SERVICE["username"],
        "password": SERVICE["password"],
        "project_name": SERVICE["project_name"],
        "user_domain_id": SERVICE["user_domain_id"],
        "project_domain_id": SERVICE["project_domain_id"],
        "service_token_roles_required": "true",
        "include_service_catalog": "false",
    }
    options.update({k: str(v) for k, v in conf.items()})
    return auth_token.AuthProtocol(app, options)


def ksm_fill_cache(app: Any, count: int) -> None:
    """Put ``count`` synthetic tokens in keystonemiddleware's in-process cache.

    Its memory cache is a dict of ``tokens/<hash>`` -> (expiry, data) per
    pooled client; copies of a real entry are added to every client.
    """
    pool = app._token_cache._cache_pool
    clients = list(pool) if pool else []
    if not clients:
        with pool.reserve() as client:
            clients = [client]
    for client in clients:
        sample = next(iter(client.cache.values()))
        for n in range(count):
            client.cache[f"tokens/synthetic-{n:08d}"] = sample


def environ_for(token: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": __import__("io").BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if token is not None:
        env["HTTP_X_AUTH_TOKEN"] = token
    return env


def wsgi_caller(app: Any, token: str | None) -> Callable[[], str]:
    """One request per call: a fresh environ copy, start_response, the body consumed."""
    base = environ_for(token)
    status: list[str] = [""]

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = s
        return None

    def call() -> str:
        result = app(dict(base), start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return status[0]

    return call


def asgi_batch(app: Any, token: str | None, batch: int) -> Callable[[], Any]:
    """A coroutine function making ``batch`` requests to ``app`` one after another."""
    headers = [(b"host", b"127.0.0.1")]
    if token is not None:
        headers.append((b"x-auth-token", token.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> list[int]:
        statuses.clear()
        for _ in range(batch):
            await app(dict(scope), receive, send)
        return statuses

    return run


# -- servers and load -----------------------------------------------------------------


@contextlib.contextmanager
def server(
    kind: str, app_name: str, env: dict[str, str], threads: int = 8, cpu: int | None = None
) -> Iterator[int]:
    """gunicorn (gthread, 1 worker) or uvicorn (1 worker) serving benchmarks/apps.py:app_name.

    ``cpu`` pins the server (master and worker) to that CPU with ``taskset``.
    """
    with served(kind, app_name, env, threads, cpu) as (port, _):
        yield port


@contextlib.contextmanager
def served(
    kind: str,
    app_name: str,
    env: dict[str, str],
    threads: int = 8,
    cpu: int | None = None,
    prefix: tuple[str, ...] = (),
) -> Iterator[tuple[int, int]]:
    """:func:`server`, yielding the port and the server's session id (its processes');
    ``prefix`` runs the server under another command (valgrind)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        command = [
            str(bin_dir / "gunicorn"), "--chdir", str(BENCH_DIR), "-b", f"127.0.0.1:{port}",
            "-w", "1", "-k", "gthread", "--threads", str(threads), "--log-level", "warning",
            "--backlog", "2048", f"apps:{app_name}",
        ]  # fmt: skip
    else:
        command = [
            str(bin_dir / "uvicorn"), "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning",
            f"apps:{app_name}",
        ]  # fmt: skip
    command = [*prefix, *command]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with tempfile.TemporaryFile() as log:  # the server's stderr, shown if it fails
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=BENCH_DIR,  # not the repository: gunicorn puts its working directory on sys.path
            start_new_session=True,
        )
        try:
            wait_port(port, timeout=120 if prefix else 30, process=process)
            yield port, process.pid
        except Exception as exc:
            log.seek(0)
            tail = log.read()[-3000:].decode(errors="replace")
            raise RuntimeError(f"{kind} serving {app_name}: {exc!r}\n{tail}") from exc
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def load(
    port: int,
    token: str | None,
    seconds: float,
    connections: int = 16,
    cpu: int | None = None,
) -> dict[str, float]:
    """Requests per second against 127.0.0.1:port from another process (wrk, else loadgen.py).

    ``cpu`` pins wrk to that CPU with ``taskset``.
    """
    url = f"http://127.0.0.1:{port}/"
    wrk = shutil.which("wrk")
    if wrk is not None:
        command = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        if token is not None:
            command += ["-H", f"X-Auth-Token: {token}"]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errors = re.search(r"Socket errors:.*", out)
        return {
            "rps": rps,
            "requests": requests,
            "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 1.0 if errors else 0.0,
            "tool": 0.0,
        }
    command = [sys.executable, str(BENCH_DIR / "loadgen.py"), url, str(seconds), str(connections)]
    if token is not None:
        command.append(token)
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return {"rps": result["rps"], "non_2xx": result["non_2xx"], "socket_errors": 0.0, "tool": 1.0}


def load_tool() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "benchmarks/loadgen.py (wrk not installed)"
    version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (version.stdout or version.stderr).splitlines()[0].split(" [")[0]


def session_cpu_seconds(session: int) -> float:
    """CPU time (user + system) used so far by the live processes of a session."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# -- a stalling proxy ------------------------------------------------------------------


class StallProxy:
    """benchmarks/stall_proxy.py in its own process, in front of Keystone.

    ``stall()`` makes it hold every client->Keystone chunk for ``delay``
    seconds; ``resume()`` stops that.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "stall_proxy.py"), str(target_port), str(delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def _signal(self, signum: int) -> None:
        self.process.send_signal(signum)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # the proxy acknowledges every change

    def stall(self) -> None:
        self._signal(signal.SIGUSR1)

    def resume(self) -> None:
        self._signal(signal.SIGUSR2)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# -- numbers ---------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class PeakSampler:
    """Samples a number (e.g. threads or validations in flight) in a thread; keeps the peak."""

    def __init__(self, read: Callable[[], int], interval: float = 0.002) -> None:
        self.read = read
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())
