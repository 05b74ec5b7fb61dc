"""Identities, validators and tiny apps shared by the middleware tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any
from wsgiref.util import setup_testing_defaults

from authmw import Identity, IdentityServiceUnavailable, InvalidToken
from authmw.validators.base import Validator, ValidatorWrapper

GOOD = "good-token-0123456789"
OTHER = "other-token-9876543210"
BAD = "bad-token-abcdef"

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=timezone.utc)


def until(condition: Callable[[], bool], seconds: float, step: float = 0.01) -> bool:
    """Whether ``condition()`` came true within ``seconds``, asked every ``step``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def full_identity(**overrides: Any) -> Identity:
    """A project-scoped identity with every header-relevant field set."""
    fields: dict[str, Any] = {
        "user_id": "u-123",
        "user_name": "alice",
        "user_domain_id": "ud-1",
        "user_domain_name": "UserDomain",
        "project_id": "p-456",
        "project_name": "Project X",
        "project_domain_id": "pd-1",
        "project_domain_name": "ProjectDomain",
        "roles": ("Member", "reader", "Admin"),
        "is_admin_project": False,
        "expires_at": FAR_FUTURE,
        "issued_at": datetime(2024, 1, 1, tzinfo=timezone.utc),
        "audit_ids": ("audit-1",),
        "methods": ("password",),
    }
    fields.update(overrides)
    return Identity(**fields)


class Counting:
    """Blocking validator: counts calls, answers from a dict, or raises ``error``."""

    def __init__(self, answers: dict[str, Identity] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[str] = []
        self.error: BaseException | None = None
        self.closed = False
        self.aclosed = False
        self._lock = threading.Lock()

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        with self._lock:
            self.calls.append(token)
        if self.error is not None:
            raise self.error
        try:
            return self.answers[token]
        except KeyError:
            raise InvalidToken("unknown token") from None

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.aclosed = True


def counting(identity: Identity | None = None) -> Counting:
    """A validator that knows :data:`GOOD` (as ``identity``) and nothing else."""
    return Counting({GOOD: identity or full_identity()})


def outage() -> Counting:
    validator = Counting()
    validator.error = IdentityServiceUnavailable("connection refused")
    return validator


# -- WSGI ---------------------------------------------------------------------

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGIRecorder:
    """A WSGI app that keeps a copy of every environ it is called with."""

    def __init__(self, status: str = "200 OK", body: bytes = b"ok") -> None:
        self.environs: list[dict[str, Any]] = []
        self.status = status
        self.body = body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.environs.append(dict(environ))
        start_response(self.status, [("Content-Type", "text/plain")])
        return [self.body]

    @property
    def last(self) -> dict[str, Any]:
        return self.environs[-1]


def environ(
    path: str = "/",
    headers: Iterable[tuple[str, str]] = (),
    method: str = "GET",
    **extra: Any,
) -> dict[str, Any]:
    """A PEP 3333 environ as a server builds it (repeated headers joined with ',')."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        env[key] = env[key] + "," + value if key in env else value
    env.update(extra)
    setup_testing_defaults(env)
    return env


class WSGIResult:
    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.calls = 0
        self.body = b""

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    @property
    def code(self) -> int:
        return int(self.status.split()[0])


def call_wsgi(app: Any, env: dict[str, Any]) -> WSGIResult:
    """Call a WSGI app by hand, recording every start_response call."""
    result = WSGIResult()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        result.calls += 1
        result.status = status
        result.headers = list(headers)
        return lambda data: None

    iterable = app(env, start_response)
    try:
        result.body = b"".join(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return result


# -- ASGI ---------------------------------------------------------------------


class ASGIRecorder:
    """An ASGI app that keeps every scope it is called with and answers 200."""

    def __init__(self, status: int = 200) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    @property
    def last(self) -> dict[str, Any]:
        return self.scopes[-1]


def http_scope(
    path: str = "/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    method: str = "GET",
    **extra: Any,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    scope.update(extra)
    return scope


class ASGIResult:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    @property
    def status(self) -> int:
        starts = [m for m in self.messages if m["type"].endswith("response.start")]
        assert len(starts) == 1, self.messages
        status: int = starts[0]["status"]
        return status

    def header(self, name: bytes) -> bytes | None:
        start = next(m for m in self.messages if m["type"].endswith("response.start"))
        values = [v for n, v in start.get("headers", []) if n.lower() == name]
        assert len(values) <= 1
        return values[0] if values else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"].endswith(".body"))


async def call_asgi(
    app: Any, scope: dict[str, Any], incoming: Iterable[dict[str, Any]] = ()
) -> ASGIResult:
    """Call an ASGI app directly with hand-made receive/send."""
    queue = list(incoming) or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return ASGIResult(sent)


def asgi_header(scope: dict[str, Any], name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower-case) in an ASGI scope."""
    return [v for n, v in scope["headers"] if n.lower().replace(b"_", b"-") == name]


class PausedAfterRead(ValidatorWrapper):
    """Validates with the wrapped validator, then (first call only) waits until released.

    The answer is read before the pause: a revocation made during the pause
    happens after the validator looked the token up.
    """

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self.read = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        identity = self.validator.validate(token, allow_expired=allow_expired)
        if first:
            self.read.set()
            assert self.release.wait(10)
        return identity
