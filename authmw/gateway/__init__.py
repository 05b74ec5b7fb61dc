"""Forward authentication for gateways: nginx ``auth_request``, Traefik ForwardAuth,
Envoy ``ext_authz`` (HTTP), on the same pipeline as the middleware.

``authmw serve`` runs :func:`asgi_app` on uvicorn; any ASGI server can
(``uvicorn --factory authmw.gateway:asgi_app``), and :func:`wsgi_app` is the
WSGI form (``gunicorn 'authmw.gateway:wsgi_app()'``). Both read their
settings from ``$AUTHMW_CONFIG`` and the environment (:mod:`._config`).
In code::

    app = ForwardAuth.build(validator, gateway="nginx", public_routes=["GET /healthz"])

See docs/gateway.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..core import AuthCore
from ..validators.base import Validator
from ._app import ForwardAuth, ForwardAuthWSGI
from ._config import CONFIG_ENV, Settings, build_parts, load_settings
from ._modes import MODES, GatewayMode, Original, gateway_mode
from ._routes import RoutePolicy

__all__ = [
    "CONFIG_ENV",
    "MODES",
    "ForwardAuth",
    "ForwardAuthWSGI",
    "GatewayMode",
    "Original",
    "RoutePolicy",
    "Settings",
    "asgi_app",
    "build",
    "from_settings",
    "gateway_mode",
    "load_settings",
    "wsgi_app",
]

App = TypeVar("App", ForwardAuth, ForwardAuthWSGI)


def build(
    kind: type[App],
    validator: Validator,
    *,
    gateway: str,
    path_prefix: str = "",
    routes: Iterable[tuple[str, str]] = (),
    default_rule: str | None = None,
    **options: Any,
) -> App:
    """A forward-auth app of ``kind`` for ``validator``; ``options`` are the middleware's."""
    mode = gateway_mode(gateway, path_prefix)
    rules = list(routes)
    policy = RoutePolicy(rules, default_rule) if rules or default_rule is not None else None
    return kind(AuthCore(validator, **options), mode, policy)


def from_settings(kind: type[App], settings: Settings) -> App:
    """A forward-auth app of ``kind`` as ``settings`` say."""
    validator, options, routes = build_parts(settings)
    audit = options.get("on_decision")  # the audit file the settings opened
    try:
        core = AuthCore(validator, **options)
        app = kind(core, gateway_mode(settings.gateway, settings.path_prefix), routes)
    except BaseException:
        if audit is not None:
            audit.close()
        raise
    if audit is not None:
        app.closers.append(audit.close)
    return app


def asgi_app(environ: Mapping[str, str] | None = None) -> ForwardAuth:
    """The ASGI forward-auth app as ``$AUTHMW_CONFIG`` and the environment say."""
    return from_settings(ForwardAuth, load_settings(environ=environ))


def wsgi_app(environ: Mapping[str, str] | None = None) -> ForwardAuthWSGI:
    """The WSGI forward-auth app as ``$AUTHMW_CONFIG`` and the environment say."""
    return from_settings(ForwardAuthWSGI, load_settings(environ=environ))
