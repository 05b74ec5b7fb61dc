"""``authmw serve``: the forward-auth server on uvicorn.

Settings are checked (and the validator built, without network I/O)
before uvicorn starts; a mistake is one line on stderr and exit status 2.
Workers read the same settings: the file and the command-line values are
handed to them through ``AUTHMW_CONFIG`` and ``AUTHMW_*``.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

from ..errors import ConfigurationError
from . import CONFIG_ENV, ForwardAuth, RoutePolicy, Settings, from_settings, load_settings

__all__ = ["add_parser", "run"]

_CLI = ("gateway", "host", "port", "workers", "path_prefix", "log_level")


def add_parser(commands: Any) -> None:
    """Add ``serve`` to the ``authmw`` command's sub-commands."""
    serve = commands.add_parser(
        "serve",
        help="run the forward-auth server for nginx, Traefik or Envoy",
        description="Answer a gateway's auth checks (nginx auth_request, Traefik ForwardAuth, "
        "Envoy ext_authz over HTTP) with the middleware's pipeline: 200 and the identity "
        "headers, or 401, 403, 429, 503. Settings: --config FILE (TOML, YAML or JSON; or "
        f"{CONFIG_ENV}), AUTHMW_* variables, then these options. See docs/gateway.md.",
    )
    serve.add_argument("--config", metavar="FILE", help=f"settings file (default: ${CONFIG_ENV})")
    serve.add_argument("--gateway", choices=["nginx", "traefik", "envoy"], help="gateway mode")
    serve.add_argument("--host", metavar="ADDRESS", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="N", help="port (default 9180)")
    serve.add_argument("--workers", type=int, metavar="N", help="uvicorn worker processes")
    serve.add_argument("--path-prefix", metavar="PATH", help="envoy: http_service path_prefix")
    serve.add_argument(
        "--log-level", choices=["critical", "error", "warning", "info", "debug"], help="log level"
    )
    serve.add_argument(
        "--check", action="store_true", help="check the settings, print a summary, exit"
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the settings, then serve until interrupted."""
    overrides = {name: getattr(args, name) for name in _CLI if getattr(args, name) is not None}
    settings = load_settings(args.config, overrides=overrides)
    app = from_settings(ForwardAuth, settings)
    app.close()
    if args.check:
        access = app.pipeline.access
        routes = len(access) if isinstance(access, RoutePolicy) else 0
        print(
            f"settings ok: gateway {settings.gateway}, validator {settings.validator_kind}, "
            f"{routes} route rule{'s' if routes != 1 else ''}, "
            f"listening on {settings.host}:{settings.port} with {settings.workers} worker"
            f"{'s' if settings.workers != 1 else ''}{_extras(settings)}"
        )
        return 0
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError("serve", "needs uvicorn: pip install 'authmw[serve]'") from None
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    for name, value in overrides.items():
        os.environ[f"AUTHMW_{name.upper()}"] = str(value)
    uvicorn.run(
        "authmw.gateway:asgi_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=_log_config(settings.log_level),
        access_log=settings.access_log,
        proxy_headers=False,  # the client address is not for a forwarded header to say
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return 0


def _extras(settings: Settings) -> str:
    """What the ``--check`` summary adds for throttling, audit and tracing."""
    extras = []
    if settings.middleware.get("trusted_proxies"):
        extras.append(
            f"trusting X-Forwarded-For from {', '.join(settings.middleware['trusted_proxies'])}"
        )
    if settings.throttle is not None:
        failures, window = settings.throttle
        extras.append(f"throttling at {failures} failures per client per {window:g} s")
    if settings.audit_log is not None:
        where = "standard output" if settings.audit_log == "-" else settings.audit_log
        extras.append(f"audit ({settings.audit_format}) to {where}")
    if settings.tracing:
        extras.append("tracing" + (" with identities" if settings.tracing_identities else ""))
    return "".join(f"; {extra}" for extra in extras)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, plus authmw's loggers at ``level`` on stderr (in
    every worker: uvicorn applies it in each)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["authmw"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["authmw"] = {
        "formatter": "authmw",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["authmw"] = {
        "handlers": ["authmw"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
