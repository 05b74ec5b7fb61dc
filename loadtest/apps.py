"""The apps gunicorn and uvicorn serve in the hardening and load tests.

``wsgi_app()`` and ``asgi_app()`` are factories (``gunicorn 'loadtest.apps:wsgi_app()'``,
``uvicorn --factory loadtest.apps:asgi_app``) reading the JSON file named by
``AUTHMW_LT_CONFIG``::

    {"validator": "memory", "tokens": {"<token>": {"user_id": "u1", ...}},   # or
     "validator": "keystone", "keystone_url": "http://127.0.0.1:PORT/v3",
     "service": {"username": ..., "password": ..., ...}, "timeout": 5.0,  # or
     "validator": "store", "store_url": "sqlite:///...", "store_options": {...},
     "redis_url": "redis://...", "redis_secret": "...",               # optional
     "pid_header": true,                      # X-Worker-Pid on every answer, 401s too
     "options": {...}}                                               # middleware options

Behind the middleware sits an echo app: it answers 200 with a JSON object
telling what it saw (raw path, script name, identity, every identity
header), so a test can check from outside that nothing forged or
unauthenticated got through. ``GET /_lt/stats`` is public and returns the
middleware's counters and the process's thread count.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from authmw import ASGIAuthMiddleware, Identity, InMemoryValidator, WSGIAuthMiddleware
from authmw import headers as h
from authmw.validators.base import Validator

__all__ = ["PUBLIC_ROUTES", "asgi_app", "load_config", "wsgi_app"]

PUBLIC_ROUTES = ("GET /healthz", "/static/*", "OPTIONS *", "GET /_lt/stats")
_STRIPPED_KEYS = frozenset(h.STRIPPED_ENVIRON_KEYS)
_STRIPPED_NAMES = frozenset(n.lower() for n in h.STRIPPED_HEADERS)


def load_config() -> dict[str, Any]:
    with open(os.environ["AUTHMW_LT_CONFIG"], encoding="utf-8") as f:
        config: dict[str, Any] = json.load(f)
    return config


def _identity(fields: dict[str, Any]) -> Identity:
    """An Identity from JSON fields; ``expires_in`` (seconds from now) sets its expiry."""
    fields = dict(fields)
    expires_in = fields.pop("expires_in", None)
    if expires_in is not None:
        fields["expires_at"] = datetime.now(timezone.utc) + timedelta(seconds=expires_in)
    return Identity(**fields)


def _validator(config: dict[str, Any]) -> Validator:
    kind = config.get("validator", "memory")
    if kind == "memory":
        return InMemoryValidator(
            {token: _identity(fields) for token, fields in config.get("tokens", {}).items()}
        )
    if kind == "keystone":
        from authmw.validators.keystone import KeystoneValidator

        return KeystoneValidator(
            config["keystone_url"],
            timeout=config.get("timeout", 5.0),
            **config["service"],
            **config.get("validator_options", {}),
        )
    if kind == "store":
        from authmw.store import LocalTokenStore

        return LocalTokenStore(config["store_url"], **config.get("store_options", {}))
    raise ValueError(f"unknown validator {kind!r}")


def _logging(config: dict[str, Any]) -> None:
    """``"debug_logs": true``: authmw's loggers at DEBUG on stderr, query tokens redacted
    from the server's own logs (authmw.log_filters)."""
    if not config.get("debug_logs"):
        return
    import logging
    import sys

    from authmw.log_filters import install_query_redaction

    install_query_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    for name in ("authmw", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


def _options(config: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"public_routes": PUBLIC_ROUTES, **config.get("options", {})}
    if config.get("redis_url"):
        from authmw.redis import RedisCache

        options["shared_cache"] = RedisCache.from_url(
            config["redis_url"], secret=config["redis_secret"]
        )
    return options


def _identity_json(identity: Identity | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {"user_id": identity.user_id, "project_id": identity.project_id}


def _stats(middleware: WSGIAuthMiddleware | ASGIAuthMiddleware) -> bytes:
    stats = middleware.stats()
    stats["threads"] = threading.active_count()
    stats["pid"] = os.getpid()
    return json.dumps(stats).encode()


def _pid_wsgi(app: Any) -> Any:
    """``app`` adding ``X-Worker-Pid`` to every answer (authmw's own 401/403 too). The pid
    is read per request: under gunicorn's --preload the app is built in the master."""

    def with_pid(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], exc_info)

        return app(environ, start)

    return with_pid


def _pid_asgi(app: Any) -> Any:
    """``app`` adding ``x-worker-pid`` to every HTTP answer."""

    async def with_pid(scope: Any, receive: Any, send: Any) -> None:
        async def send_with_pid(message: Any) -> None:
            if message.get("type") == "http.response.start":
                pid = (b"x-worker-pid", str(os.getpid()).encode())
                message = {**message, "headers": [*message.get("headers", ()), pid]}
            await send(message)

        await app(scope, receive, send_with_pid if scope["type"] == "http" else send)

    return with_pid


def wsgi_app() -> Any:
    """The echo app behind :class:`WSGIAuthMiddleware`, as configured."""
    config = load_config()
    holder: list[WSGIAuthMiddleware] = []

    def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_lt/stats":
            body = _stats(holder[0])
        else:
            seen = {
                "path": path,
                "script_name": environ.get("SCRIPT_NAME", ""),
                "raw_uri": environ.get("RAW_URI"),
                "method": environ.get("REQUEST_METHOD"),
                "pid": os.getpid(),
                "identity": _identity_json(environ.get("authmw.identity")),
                "identity_headers": {
                    k: v for k, v in sorted(environ.items()) if k in _STRIPPED_KEYS
                },
                "headers": {
                    k[5:].lower().replace("_", "-"): v
                    for k, v in environ.items()
                    if k.startswith("HTTP_") and isinstance(v, str)
                },
            }
            body = json.dumps(seen).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    _logging(config)
    middleware = WSGIAuthMiddleware(echo, validator=_validator(config), **_options(config))
    holder.append(middleware)
    return _pid_wsgi(middleware) if config.get("pid_header") else middleware


def asgi_app() -> Any:
    """The echo app behind :class:`ASGIAuthMiddleware`, as configured (http and websocket)."""
    config = load_config()
    holder: list[ASGIAuthMiddleware] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/_lt/stats":
            body = _stats(holder[0])
        else:
            identity_headers: dict[str, list[str]] = {}
            for name, value in scope["headers"]:
                key = name.decode("latin-1").lower().replace("_", "-")
                if key in _STRIPPED_NAMES:
                    identity_headers.setdefault(key, []).append(value.decode("latin-1"))
            seen = {
                "path": scope["path"],
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "root_path": scope.get("root_path", ""),
                "method": scope.get("method"),
                "pid": os.getpid(),
                "identity": _identity_json(scope.get("authmw.identity")),
                "identity_headers": identity_headers,
                "headers": {
                    n.decode("latin-1").lower(): v.decode("latin-1") for n, v in scope["headers"]
                },
                "query_string": scope.get("query_string", b"").decode("latin-1"),
                "subprotocols": list(scope.get("subprotocols") or ()),
            }
            body = json.dumps(seen).encode()
        if scope["type"] == "websocket":
            if (await receive())["type"] != "websocket.connect":
                return
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": body.decode()})
            while (await receive())["type"] != "websocket.disconnect":
                pass  # open until the client (or authmw, at the token's end) closes it
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    _logging(config)
    middleware = ASGIAuthMiddleware(echo, validator=_validator(config), **_options(config))
    holder.append(middleware)
    return _pid_asgi(middleware) if config.get("pid_header") else middleware
