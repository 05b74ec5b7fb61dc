"""Real servers for the test suite: Keystone, redis-server, memcached, PostgreSQL, OpenID.

The fixtures in conftest.py start these on 127.0.0.1 and stop them at the end.
Nothing here is mocked: Keystone is the pinned release run by
scripts/keystone/start.sh, Redis and PostgreSQL are the Debian servers that
scripts/install-services.sh installs, and the OpenID Connect provider is
panva's oidc-provider (pinned by scripts/oidc/package-lock.json) run by
scripts/oidc/server.mjs.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from loadtest.servers import free_port  # one implementation, below the ephemeral ports

REPO = Path(__file__).resolve().parent.parent
KEYSTONE_SCRIPTS = REPO / "scripts" / "keystone"
OIDC_SCRIPTS = REPO / "scripts" / "oidc"
INSTALL_HINT = "install it with `bash scripts/install-services.sh` (Debian: apt-get install {pkg})"


def _end(proc: subprocess.Popen[Any], wait: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``proc``, and SIGKILL if it has not ended ``wait`` seconds later."""
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ServiceError(RuntimeError):
    """A test server could not be started; the message says why and what to do."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- Keystone -------------------------------------------------------------------


class KeystoneError(AssertionError):
    """Keystone answered a helper call with an unexpected status."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code} {response.text[:300]}")
        self.status_code = response.status_code
        self.response = response


class Keystone:
    """A running Keystone started by scripts/keystone/start.sh, plus test helpers.

    ``url`` is the v3 auth URL (``http://127.0.0.1:PORT/v3``); ``seed`` is the
    content of seed.json (ids and passwords of everything seed.py created).
    """

    def __init__(self, state_dir: Path, venv: Path, admin_password: str = "admin-secret") -> None:
        self.state_dir = state_dir
        self.venv = venv
        self.venv_python = venv / "bin" / "python"  # has keystonemiddleware 13.0.1 too
        self.admin_password = admin_password
        self.url = ""
        self.seed: dict[str, Any] = {}
        self._client = httpx.Client(timeout=30.0)
        self._admin_tokens: dict[str, str] = {}

    # -- process control -----------------------------------------------------

    def _env(self, extra: Mapping[str, str] = {}) -> dict[str, str]:
        env = dict(os.environ)
        env["AUTHMW_KEYSTONE_STATE_DIR"] = str(self.state_dir)
        env["AUTHMW_KEYSTONE_VENV"] = str(self.venv)
        env["AUTHMW_KEYSTONE_ADMIN_PASSWORD"] = self.admin_password
        env.update(extra)
        return env

    def _script(self, name: str, *args: str, env: Mapping[str, str] = {}) -> str:
        """Run one of scripts/keystone/ for this state dir; its stdout."""
        path = str(KEYSTONE_SCRIPTS / name)
        cmd = ["bash", path] if name.endswith(".sh") else [sys.executable, path]
        proc = subprocess.run(
            [*cmd, *args],
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(
                f"scripts/keystone/{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc.stdout.strip()

    def _start(self, env: Mapping[str, str] = {}) -> None:
        self.url = self._script("start.sh", env=env).splitlines()[-1]
        self._admin_tokens.clear()

    def _load_seed(self) -> None:
        self.seed = json.loads((self.state_dir / "seed.json").read_text())

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the URL without ``/v3``)."""
        return self.url.rsplit("/v3", 1)[0]

    @property
    def port(self) -> int:
        return httpx.URL(self.url).port or 80

    def close(self) -> None:
        self._client.close()

    # -- credentials -----------------------------------------------------------

    @property
    def service_credentials(self) -> dict[str, str]:
        """The middleware's service account, as keystonemiddleware option names.

        ``KeystoneValidator(keystone.url, **keystone.service_credentials)``.
        """
        user = self.seed["users"]["service-user"]
        return {
            "username": user["name"],
            "password": user["password"],
            "user_domain_name": user["domain"],
            "project_name": "service",
            "project_domain_name": "Default",
        }

    @property
    def application_credential(self) -> dict[str, str]:
        """The service user's seeded application credential: id, secret, name."""
        cred = self.seed["application_credential"]
        return {"id": cred["id"], "secret": cred["secret"], "name": cred["name"]}

    def user(self, name: str) -> dict[str, Any]:
        """seed.json's entry of a seeded user (id, domain, password, grants...)."""
        user: dict[str, Any] = self.seed["users"][name]
        return user

    def project_id(self, name: str) -> str:
        pid: str = self.seed["projects"][name]["id"]
        return pid

    def domain_id(self, name: str) -> str:
        did: str = self.seed["domains"][name]
        return did

    # -- tokens ------------------------------------------------------------------

    def _domain_ref(self, domain: str) -> dict[str, str]:
        domains: dict[str, str] = self.seed.get("domains", {})
        if domain in domains:
            return {"id": domains[domain]}
        if domain in domains.values():
            return {"id": domain}
        return {"name": domain}

    def _project_ref(
        self, project: str, project_domain: str | None, user_domain: str
    ) -> dict[str, Any]:
        projects: dict[str, dict[str, str]] = self.seed.get("projects", {})
        if project_domain is None and project in projects:
            return {"id": projects[project]["id"]}
        if any(p["id"] == project for p in projects.values()):
            return {"id": project}
        return {"name": project, "domain": self._domain_ref(project_domain or user_domain)}

    def issue(
        self,
        user: str,
        password: str | None = None,
        user_domain: str | None = None,
        project: str | None = None,
        project_domain: str | None = None,
        domain: str | None = None,
        system: bool = False,
        unscoped: bool = False,
        catalog: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        """Password-authenticate; return (token, response body).

        ``password`` and ``user_domain`` default to the seeded user's. Scope:
        ``project`` (name or id; name looked up in the seed, else in
        ``project_domain`` or the user's domain), ``domain`` (name or id),
        ``system=True`` (system all), ``unscoped=True``; with none of them
        Keystone picks the user's default project, if any, else unscoped.
        """
        if sum(map(bool, (project, domain, system, unscoped))) > 1:
            raise ValueError("give at most one of project, domain, system, unscoped")
        seeded = self.seed.get("users", {}).get(user)
        if password is None:
            if seeded is None:
                raise ValueError(f"no password given and {user!r} is not a seeded user")
            password = str(seeded["password"])
        if user_domain is None:
            user_domain = str(seeded["domain"]) if seeded else "Default"
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": user,
                        "domain": self._domain_ref(user_domain),
                        "password": password,
                    }
                },
            }
        }
        if unscoped:
            auth["scope"] = "unscoped"
        elif system:
            auth["scope"] = {"system": {"all": True}}
        elif domain:
            auth["scope"] = {"domain": self._domain_ref(domain)}
        elif project:
            auth["scope"] = {"project": self._project_ref(project, project_domain, user_domain)}
        return self._post_auth({"auth": auth}, f"token for {user}", catalog)

    def _post_auth(
        self, body: dict[str, Any], what: str, catalog: bool = True
    ) -> tuple[str, dict[str, Any]]:
        params = {} if catalog else {"nocatalog": "1"}
        r = self._client.post(f"{self.url}/auth/tokens", json=body, params=params)
        if r.status_code != 201:
            raise KeystoneError(what, r)
        data: dict[str, Any] = r.json()
        return r.headers["X-Subject-Token"], data

    def issue_token(
        self,
        user: str,
        password: str | None = None,
        user_domain: str | None = None,
        project: str | None = None,
        project_domain: str | None = None,
        domain: str | None = None,
        system: bool = False,
        unscoped: bool = False,
    ) -> str:
        """Like :meth:`issue`, returning only the token (X-Subject-Token)."""
        return self.issue(
            user, password, user_domain, project, project_domain, domain, system, unscoped
        )[0]

    def issue_application_credential_token(
        self, credential_id: str | None = None, secret: str | None = None
    ) -> str:
        """A token for an application credential (default: the seeded one)."""
        cred = self.application_credential
        body = {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "id": credential_id or cred["id"],
                        "secret": secret or cred["secret"],
                    },
                }
            }
        }
        return self._post_auth(body, "application credential token")[0]

    def _system_admin(self) -> str:
        return self._admin("system")

    def _admin(self, kind: str) -> str:
        if kind not in self._admin_tokens:
            scope = (
                {"system": {"all": True}}
                if kind == "system"
                else {"project": {"name": "admin", "domain": {"id": "default"}}}
            )
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"id": "default"},
                                "password": self.admin_password,
                            }
                        },
                    },
                    "scope": scope,
                }
            }
            self._admin_tokens[kind] = self._post_auth(body, f"{kind} admin token", False)[0]
        return self._admin_tokens[kind]

    def _as_admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the system admin's token, re-issued once if refused."""
        for attempt in (1, 2):
            headers = {"X-Auth-Token": self._system_admin(), **kwargs.pop("headers", {})}
            r = self._client.request(method, self.url + path, headers=headers, **kwargs)
            if r.status_code != 401 or attempt == 2:
                return r
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "X-Auth-Token"}
            self._admin_tokens.pop("system", None)
        raise AssertionError("unreachable")

    def admin_token(self) -> str:
        """A token of ``admin`` scoped to project ``admin`` (the admin project); cached."""
        return self._admin("project")

    def service_token(self) -> str:
        """A fresh token of the service user, scoped to project ``service``."""
        return self.issue_token("service-user", project="service")

    def check(self, token: str, allow_expired: bool = False) -> httpx.Response:
        """``GET /v3/auth/tokens`` for ``token`` as the system admin; the raw response.

        Not counted by :meth:`validation_count`.
        """
        params = {"nocatalog": "1", "authmw_helper": "1"}
        if allow_expired:
            params["allow_expired"] = "1"
        return self._as_admin(
            "GET", "/auth/tokens", headers={"X-Subject-Token": token}, params=params
        )

    def token_body(self, token: str, allow_expired: bool = False) -> dict[str, Any]:
        """Keystone's validation body (``{"token": {...}}``) of a valid token."""
        r = self.check(token, allow_expired)
        if r.status_code != 200:
            raise KeystoneError("token validation", r)
        body: dict[str, Any] = r.json()
        return body

    def revoke(self, token: str) -> None:
        """``DELETE /v3/auth/tokens`` as the system admin (204 expected)."""
        r = self._as_admin("DELETE", "/auth/tokens", headers={"X-Subject-Token": token})
        if r.status_code != 204:
            raise KeystoneError("token revocation", r)

    def create_application_credential(
        self,
        user: str = "service-user",
        password: str | None = None,
        project: str | None = None,
        name: str | None = None,
        roles: list[str] | None = None,
        access_rules: list[dict[str, str]] | None = None,
    ) -> dict[str, str]:
        """Create an application credential of a seeded user; returns id, secret, name.

        ``project`` defaults to the user's first project grant, ``roles`` to all
        the user's roles there, ``name`` to a unique one; ``access_rules``
        (``[{"service": "placement", "method": "GET", "path": "/x/*"}]``) limit it.
        """
        seeded = self.user(user)
        if project is None:
            project = next(t for k, t, _ in seeded["grants"] if k == "project")
        token = self.issue_token(user, password, project=project)
        body: dict[str, Any] = {"name": name or f"authmw-{uuid.uuid4().hex[:12]}"}
        if roles is not None:
            body["roles"] = [{"name": r} for r in roles]
        if access_rules is not None:
            body["access_rules"] = access_rules
        r = self._client.post(
            f"{self.url}/users/{seeded['id']}/application_credentials",
            json={"application_credential": body},
            headers={"X-Auth-Token": token},
        )
        if r.status_code != 201:
            raise KeystoneError("application credential creation", r)
        cred = r.json()["application_credential"]
        return {"id": cred["id"], "secret": cred["secret"], "name": cred["name"]}

    def delete_application_credential(self, credential_id: str, user: str = "service-user") -> None:
        seeded = self.user(user)
        project = next(t for k, t, _ in seeded["grants"] if k == "project")
        r = self._client.delete(
            f"{self.url}/users/{seeded['id']}/application_credentials/{credential_id}",
            headers={"X-Auth-Token": self.issue_token(user, project=project)},
        )
        if r.status_code != 204:
            raise KeystoneError("application credential deletion", r)

    def add_service(self, service_type: str, url: str) -> str:
        """Put a service of ``service_type`` with ``url`` (every interface) in the catalog.

        Returns its id. Changes this Keystone's catalog for every token: use a
        private Keystone (``make_keystone``), not the shared one.
        """
        r = self._as_admin(
            "POST", "/services", json={"service": {"type": service_type, "name": service_type}}
        )
        if r.status_code != 201:
            raise KeystoneError("service creation", r)
        service_id: str = r.json()["service"]["id"]
        for interface in ("public", "internal", "admin"):
            endpoint = {
                "service_id": service_id,
                "interface": interface,
                "url": url,
                "region_id": "RegionOne",
            }
            r = self._as_admin("POST", "/endpoints", json={"endpoint": endpoint})
            if r.status_code != 201:
                raise KeystoneError("endpoint creation", r)
        return service_id

    def own_identity_endpoints(self) -> None:
        """Point the catalog's identity endpoints at this Keystone.

        A private copy keeps its source's catalog; clients that find Keystone
        through the catalog (keystonemiddleware does) would ask the source.
        """
        r = self._as_admin("GET", "/services", params={"type": "identity"})
        if r.status_code != 200:
            raise KeystoneError("service list", r)
        for service in r.json()["services"]:
            r = self._as_admin("GET", "/endpoints", params={"service_id": service["id"]})
            if r.status_code != 200:
                raise KeystoneError("endpoint list", r)
            for endpoint in r.json()["endpoints"]:
                r = self._as_admin(
                    "PATCH", f"/endpoints/{endpoint['id']}", json={"endpoint": {"url": self.url}}
                )
                if r.status_code != 200:
                    raise KeystoneError("endpoint update", r)

    # -- observation ---------------------------------------------------------------

    @property
    def access_log(self) -> Path:
        return self.state_dir / "log" / "access.log"

    def validation_count(self) -> int:
        """Token validations (GET/HEAD /v3/auth/tokens) this Keystone has served.

        Compare two readings. Calls of the helpers above are not counted. The
        shared ``keystone`` may also serve parallel test sessions: use
        ``keystone_disposable`` where an exact count matters.
        """
        # gunicorn logs a request just after sending its response: a marker
        # request, waited for in the log, puts the earlier lines there first.
        marker = f"authmw_sync={uuid.uuid4().hex}"
        self._client.get(f"{self.url}?{marker}")
        deadline = time.monotonic() + 5
        while True:
            text = self.access_log.read_text(errors="replace")
            if marker in text or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        count = 0
        for line in text.splitlines():
            if ('"GET /v3/auth/tokens' in line or '"HEAD /v3/auth/tokens' in line) and (
                "authmw_helper" not in line
            ):
                count += 1
        return count


class SharedKeystone(Keystone):
    """The Keystone of this checkout (``.cache/keystone``), shared by parallel sessions.

    Every session holds a shared lock on ``<state>/.users.lock``; the last one
    to leave stops the server, and only if a test session started it.
    """

    def __init__(self) -> None:
        home = Path(os.environ.get("AUTHMW_KEYSTONE_HOME") or REPO / ".cache" / "keystone")
        state = Path(os.environ.get("AUTHMW_KEYSTONE_STATE_DIR") or home / "state")
        venv = Path(os.environ.get("AUTHMW_KEYSTONE_VENV") or home / "venv")
        super().__init__(
            state.absolute(),
            venv.absolute(),
            os.environ.get("AUTHMW_KEYSTONE_ADMIN_PASSWORD", "admin-secret"),
        )
        self._users_lock: IO[str] | None = None

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._users_lock = open(self.state_dir / ".users.lock", "w")  # noqa: SIM115 (held for the session)
        fcntl.flock(self._users_lock, fcntl.LOCK_SH)
        self._start({"AUTHMW_KEYSTONE_OWNER": "pytest"})
        self._script(
            "seed.py", "--if-needed", "--quiet", env={"AUTHMW_KEYSTONE_AUTH_URL": self.url}
        )
        self._load_seed()

    def release(self) -> None:
        """Leave; the last session out stops the server if a test session started it.

        ``AUTHMW_KEYSTONE_KEEP=1`` leaves it running (faster re-runs while developing).
        """
        self.close()
        lock, self._users_lock = self._users_lock, None
        if lock is None:
            return
        try:
            if os.environ.get("AUTHMW_KEYSTONE_KEEP") == "1":
                return
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses it
            try:
                owner = (self.state_dir / "keystone.owner").read_text().strip()
            except OSError:
                return
            if owner == "pytest":
                # Nobody else uses it: no request in flight, and SQLite survives
                # a kill, so skip gunicorn's graceful stop (about 3 s).
                self._script("stop.sh", env={"AUTHMW_KEYSTONE_FAST_STOP": "1"})
        finally:
            lock.close()


class DisposableKeystone(Keystone):
    """A private Keystone: a copy of another one's database and keys on its own port.

    The same users exist and the same tokens are valid (until revoked in one
    of them: revocations are not shared). ``stop()`` and ``start()`` it freely;
    it keeps its port, so clients configured with ``url`` reconnect.
    """

    def __init__(
        self,
        source: Keystone,
        workers: int = 2,
        token_expiration: int | None = None,
        cache: bool = False,
    ) -> None:
        """``token_expiration``: token lifetime in seconds (Keystone's default 3600);
        ``cache``: Keystone's own in-memory cache (1 worker)."""
        super().__init__(
            Path(tempfile.mkdtemp(prefix="authmw-keystone-")), source.venv, source.admin_password
        )
        self._source = source
        self._port = free_port()
        self._settings = {
            "AUTHMW_KEYSTONE_CLONE_FROM": str(source.state_dir),
            "AUTHMW_KEYSTONE_PORT": str(self._port),
            "AUTHMW_KEYSTONE_WORKERS": str(workers),
            "AUTHMW_KEYSTONE_CACHE": "1" if cache else "0",
            "AUTHMW_KEYSTONE_TOKEN_EXPIRATION": str(token_expiration or 3600),
            "AUTHMW_KEYSTONE_OWNER": "pytest",
        }
        self.url = f"http://127.0.0.1:{self._port}/v3"
        self.running = False

    def start(self) -> None:
        """Start (again) on the same port."""
        self._start(self._settings)
        self.running = True
        if not self.seed:
            self._load_seed()

    def stop(self) -> None:
        """Kill the server at once (like a crash); returns once its port is closed."""
        self._script("stop.sh", env={"AUTHMW_KEYSTONE_FAST_STOP": "1"})
        self.running = False

    def destroy(self) -> None:
        with contextlib.suppress(ServiceError):
            self.stop()
        self.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------


def redis_binary() -> str:
    """Path of redis-server: $AUTHMW_REDIS_SERVER, else from PATH or /usr/bin."""
    configured = os.environ.get("AUTHMW_REDIS_SERVER")
    if configured:
        if not os.access(configured, os.X_OK):
            raise ServiceError(
                f"AUTHMW_REDIS_SERVER={configured} is not an executable: "
                + INSTALL_HINT.format(pkg="redis-server")
            )
        return configured
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if path is None:
        raise ServiceError("redis-server not found: " + INSTALL_HINT.format(pkg="redis-server"))
    return path


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 (no persistence), in its own temp dir."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="authmw-redis-"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = self.workdir / "redis.log"
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._proc.poll() is not None:
                raise ServiceError(f"redis-server exited at start:\n{_tail(log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"redis-server did not answer in {timeout}s:\n{_tail(log)}")
            time.sleep(0.02)

    def command(self, *args: str) -> bytes:
        """Send one command (RESP), return the raw first reply line."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            s.sendall(payload)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        if self.command("FLUSHALL") != b"+OK":
            raise ServiceError("redis FLUSHALL failed")

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s); its port closes."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _end(proc, 5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- memcached ----------------------------------------------------------------------


class MemcachedServer:
    """A private ``memcached`` on 127.0.0.1 (64 MB), with ``stop()``/``start()`` on one port."""

    def __init__(self, port: int | None = None) -> None:
        binary = os.environ.get("AUTHMW_MEMCACHED") or shutil.which(
            "memcached", path=os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin"
        )
        if binary is None or not os.access(binary, os.X_OK):
            raise ServiceError("memcached not found: " + INSTALL_HINT.format(pkg="memcached"))
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.address = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root without -u
        self._proc = subprocess.Popen(
            [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", *user],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ServiceError(f"memcached exited at start: {err[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"memcached did not answer in {timeout}s")
            time.sleep(0.02)

    def command(self, line: str) -> bytes:
        """Send one one-line-answer text-protocol command (version, flush_all); its reply."""
        with socket.create_connection((self.host, self.port), timeout=2) as s:
            s.sendall(line.encode() + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply

    def ping(self) -> bool:
        try:
            return self.command("version").startswith(b"VERSION")
        except OSError:
            return False

    def flush(self) -> None:
        if not self.command("flush_all").startswith(b"OK"):
            raise ServiceError("memcached flush_all failed")

    def stop(self) -> None:
        """Kill the server (SIGKILL, like a crash); returns once it is gone."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def destroy(self) -> None:
        self.stop()


# --- PostgreSQL ---------------------------------------------------------------------


def postgres_bindir() -> Path:
    """Directory of initdb/postgres: $AUTHMW_PG_BINDIR, Debian's newest, or PATH."""
    if os.environ.get("AUTHMW_PG_BINDIR"):
        return Path(os.environ["AUTHMW_PG_BINDIR"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found: "
        + INSTALL_HINT.format(pkg="postgresql")
    )


def _postgres_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as (it refuses to run as root); None: as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "authmw-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "authmw-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("authmw-pg")


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only.

    Trust authentication for the superuser ``postgres``; fsync off (tests only).
    """

    def __init__(self, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        for tool in ("initdb", "postgres"):
            if not (self.bindir / tool).exists():
                raise ServiceError(
                    f"{self.bindir / tool} missing: " + INSTALL_HINT.format(pkg="postgresql")
                )
        self.account = _postgres_account()
        # Under /tmp, not pytest's 0700 tmp dirs: the postgres account must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="authmw-pg-"))
        self.datadir = self.workdir / "data"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        if self.account is not None:
            os.chown(self.workdir, self.account.pw_uid, self.account.pw_gid)

    def _as_account(self) -> dict[str, Any]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _initdb(self) -> None:
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if self.account is not None:
            env["HOME"] = str(self.workdir)
        proc = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            **self._as_account(),
        )
        if proc.returncode != 0:
            raise ServiceError(f"initdb failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        log_path = self.workdir / "postgres.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
            **self._as_account(),
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise ServiceError(f"postgres exited at start:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"postgres did not accept connections in {timeout}s:\n{_tail(log_path)}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; return its URL."""
        import psycopg

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, stop)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _end(proc, 15, signal.SIGINT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- OpenStack Placement ------------------------------------------------------------


PLACEMENT_SCRIPTS = REPO / "scripts" / "placement"


def placement_venv() -> Path:
    """Placement's venv (scripts/placement/install.sh builds it once, under .cache/)."""
    proc = subprocess.run(
        ["bash", str(PLACEMENT_SCRIPTS / "install.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"scripts/placement/install.sh failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class PlacementServer:
    """OpenStack Placement under gunicorn on 127.0.0.1, SQLite, its own placement.conf.

    ``middleware``: ``keystonemiddleware`` (as shipped) or ``authmw`` (the
    deployer's swap in scripts/placement/authmw_wsgi.py). ``authtoken``: the
    ``[keystone_authtoken]`` options. ``records()``: what Placement's policy
    checks saw for each request (tests/placement_wsgi.py).
    """

    def __init__(self, venv: Path, middleware: str, authtoken: Mapping[str, str]) -> None:
        self.venv = venv
        self.middleware = middleware
        self.workdir = Path(tempfile.mkdtemp(prefix=f"authmw-placement-{middleware}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = self.workdir / "policy.jsonl"
        section = "\n".join(f"{k} = {v}" for k, v in authtoken.items())
        (self.workdir / "placement.conf").write_text(
            f"[DEFAULT]\nlog_file = {self.workdir / 'placement.log'}\n"
            "[api]\nauth_strategy = keystone\n"
            f"[placement_database]\nconnection = sqlite:///{self.workdir / 'placement.db'}\n"
            "sync_on_startup = true\n"
            f"[keystone_authtoken]\n{section}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "PYTHONPATH": f"{REPO}:{REPO / 'tests'}:{PLACEMENT_SCRIPTS}",
            "OS_PLACEMENT_CONFIG_DIR": str(self.workdir),
            "AUTHMW_PLACEMENT_MIDDLEWARE": self.middleware,
            "AUTHMW_PLACEMENT_RECORD": str(self.record),
            "PYTHONWARNINGS": "ignore",
        }
        log = open(self.workdir / "gunicorn.log", "ab")  # noqa: SIM115 (the child keeps it)
        self._proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "--no-control-socket",
                "placement_wsgi:application",
            ],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"Placement ({self.middleware}) exited at start:\n"
                    f"{_tail(self.workdir / 'gunicorn.log', 40)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"Placement ({self.middleware}) did not answer in {timeout}s")
            time.sleep(0.1)

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in (self.workdir / "gunicorn.log", self.workdir / "placement.log")
            if p.exists()
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _end(proc, 10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- OpenID Connect provider ------------------------------------------------------------


def oidc_modules() -> Path:
    """node_modules holding oidc-provider, installed by scripts/oidc/install.sh if needed."""
    home = Path(os.environ.get("AUTHMW_OIDC_HOME") or REPO / ".cache" / "oidc")
    if shutil.which("node") is None:
        raise ServiceError(
            "node not found: install Node.js >= 20.19 (Debian: apt-get install nodejs npm)"
        )
    proc = subprocess.run(
        ["bash", str(OIDC_SCRIPTS / "install.sh")],
        env={**os.environ, "AUTHMW_OIDC_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(
            f"scripts/oidc/install.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return home / "node_modules"


class OIDCProvider:
    """A private oidc-provider (scripts/oidc/server.mjs) on its own port, with its own keys.

    ``url`` is the issuer. Clients of the client-credentials grant:
    :attr:`CLIENTS`; audiences (resource indicators) and how their tokens are
    signed: :attr:`RESOURCES`. ``stop()`` kills it (connections refused until
    ``start()``, which keeps port and keys). The admin hook rotates keys for
    real (:meth:`publish_key`, :meth:`sign_with`, :meth:`retire_key`) and counts
    the requests the provider served (:meth:`stats`).
    """

    CLIENTS = {
        "reader": "reader-secret-0123456789",
        "admin": "admin-secret-0123456789",
        "weird": "weird-secret-0123456789",
    }
    RESOURCES = {
        "RS256": "https://api.example/rs",
        "ES256": "https://api.example/es",
        "EdDSA": "https://api.example/ed",
        "PS256": "https://api.example/ps",
    }
    OTHER_AUDIENCE = "https://other.example/"

    def __init__(self, modules: Path) -> None:
        self.modules = modules
        self.workdir = Path(tempfile.mkdtemp(prefix="authmw-oidc-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._admin_secret = secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._client = httpx.Client(timeout=30.0)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start (again) on the same port with the same keys; returns once it answers.

        It waits for the provider's "listening" line before its first request, so
        no request goes to a port nobody listens on yet (where a client socket can
        connect to itself, TCP self-connect, and take the port).
        """
        if self.running:
            return
        log_path = self.workdir / "oidc.log"
        start_offset = log_path.stat().st_size if log_path.exists() else 0
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = {
            **os.environ,
            "AUTHMW_OIDC_PORT": str(self.port),
            "AUTHMW_OIDC_STATE": str(self.workdir),
            "AUTHMW_OIDC_ADMIN_SECRET": self._admin_secret,
            "AUTHMW_OIDC_MODULES": str(self.modules),
        }
        self._proc = subprocess.Popen(
            ["node", str(OIDC_SCRIPTS / "server.mjs")],
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._answers(log_path, start_offset):
            if self._proc.poll() is not None:
                raise ServiceError(f"oidc-provider exited at start:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"oidc-provider did not answer in {timeout}s:\n{_tail(log_path)}"
                )
            time.sleep(0.05)
        self.reset_stats()

    def _answers(self, log_path: Path, start_offset: int) -> bool:
        with open(log_path, "rb") as log:
            log.seek(start_offset)
            if b"oidc-provider listening on" not in log.read():
                return False
        try:
            url = f"{self.url}/.well-known/openid-configuration"
            return self._client.get(url, timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Kill it at once (like a crash); returns once its port is closed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def destroy(self) -> None:
        self.stop()
        self._client.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- tokens ----------------------------------------------------------------------------

    def token(
        self, client: str = "reader", resource: str | None = None, scope: str | None = None
    ) -> str:
        """A JWT access token for ``client`` (client-credentials grant) for ``resource``."""
        form = {"grant_type": "client_credentials", "resource": resource or self.RESOURCES["RS256"]}
        if scope is not None:
            form["scope"] = scope
        r = self._client.post(f"{self.url}/token", data=form, auth=(client, self.CLIENTS[client]))
        if r.status_code != 200:
            raise AssertionError(f"token for {client}: HTTP {r.status_code} {r.text[:300]}")
        token: str = r.json()["access_token"]
        return token

    # -- admin hook ----------------------------------------------------------------------------

    def _admin(self, method: str, path: str, **params: str) -> Any:
        r = self._client.request(
            method,
            f"{self.url}/__admin/{path}",
            params=params,
            headers={"X-Admin-Secret": self._admin_secret},
        )
        if r.status_code != 200:
            raise AssertionError(f"admin {method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()

    def stats(self) -> dict[str, int]:
        """Requests served since the start or the last reset: ``jwks``, ``discovery``, ``token``."""
        stats: dict[str, int] = self._admin("GET", "stats")
        return stats

    def reset_stats(self) -> None:
        self._admin("POST", "stats/reset")

    def keys(self) -> list[dict[str, Any]]:
        """``[{"kid", "alg", "signing"}]``: the keys in the JWKS."""
        keys: list[dict[str, Any]] = self._admin("GET", "keys")
        return keys

    def signing_kid(self, alg: str = "RS256") -> str:
        return next(str(k["kid"]) for k in self.keys() if k["alg"] == alg and k["signing"])

    def publish_key(self, alg: str = "RS256") -> str:
        """Add a new key to the JWKS (tokens are still signed with the old one); its kid."""
        return str(self._admin("POST", "keys", alg=alg)["kid"])

    def sign_with(self, kid: str) -> None:
        """Sign the tokens of the key's algorithm with it from now on."""
        self._admin("POST", f"keys/{kid}/sign")

    def retire_key(self, kid: str) -> None:
        """Remove a (non-signing) key from the JWKS."""
        self._admin("DELETE", f"keys/{kid}")

    def jwks_fault(self, mode: str) -> None:
        """Make the JWKS endpoint answer ``500``, ``redirect``, ``huge``, ``garbage`` or ``ok``."""
        self._admin("POST", "jwks-fault", mode=mode)
