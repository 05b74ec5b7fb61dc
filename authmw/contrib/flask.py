"""Flask integration: ``@require(...)``, ``current_identity`` and the ``AuthMW`` extension.

::

    auth = AuthMW(app, validator=InMemoryValidator(...), policy="policy.yaml",
                  public_routes=["GET /healthz"])

    @app.delete("/items/<item_id>")
    @require("items:delete", target=lambda item_id: {"project_id": ITEMS[item_id].project_id})
    def delete_item(item_id): ...

Requests without an identity get 401 (with ``WWW-Authenticate``), denied
ones 403, both with the middleware's JSON error body. ``require`` works on
blueprint views too, and :func:`protect` guards a whole blueprint.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, abort, current_app, request
from werkzeug.local import LocalProxy

from .. import _checks
from ..core import AuthCore
from ..errors import AuthError, Forbidden, IdentityServiceUnavailable, NotAuthenticated
from ..identity import Identity
from ..pipeline import Pipeline
from ..validators.base import Validator
from ..wsgi import WSGIAuthMiddleware
from . import (
    IDENTITY_KEY,
    PolicySpec,
    RequirementSpec,
    SpecResolver,
    as_policy,
    rejection_for,
    resolver_for,
)

__all__ = ["AuthMW", "authorize", "current_identity", "get_identity", "protect", "require"]

log = logging.getLogger("authmw.contrib.flask")

F = TypeVar("F", bound=Callable[..., Any])
TargetFactory = Callable[..., "Mapping[str, Any] | None"]

_EXTENSION = "authmw"
_warned_missing = False


def get_identity() -> Identity | None:
    """The current request's identity, or None."""
    environ = request.environ
    if IDENTITY_KEY not in environ:
        _warn_missing()
        return None
    identity: Identity | None = environ[IDENTITY_KEY]
    return identity


current_identity: Identity = LocalProxy(get_identity)  # type: ignore[assignment]
"""Proxy to the current identity. A proxy is never ``None``: test it with
``if current_identity:`` or use :func:`get_identity`."""


def _warn_missing() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        log.warning(
            "no %r in the WSGI environ: wrap the app with AuthMW or WSGIAuthMiddleware; "
            "every request counts as unauthenticated",
            IDENTITY_KEY,
        )


class AuthMW:
    """Flask extension: wraps ``app.wsgi_app`` with the middleware and holds the policy.

    With neither ``validator`` nor ``core`` the app is not wrapped (use this
    when :class:`~authmw.wsgi.WSGIAuthMiddleware` is installed elsewhere);
    the extension then only provides the policy and the error handlers.
    """

    @_checks.passing_keywords_to(AuthCore.__init__)
    def __init__(
        self,
        app: Flask | None = None,
        validator: Validator | None = None,
        *,
        policy: PolicySpec = None,
        core: AuthCore | None = None,
        **options: Any,
    ) -> None:
        pipeline = Pipeline.build_if_configured(validator, core, options)
        self.core = pipeline.core if pipeline is not None else None
        self.policy = as_policy(policy)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install on ``app`` (application-factory style)."""
        if self.core is not None:
            app.wsgi_app = WSGIAuthMiddleware(app.wsgi_app, core=self.core)  # type: ignore[method-assign]
        app.extensions[_EXTENSION] = self
        for exc in (NotAuthenticated, Forbidden, IdentityServiceUnavailable):
            app.register_error_handler(exc, _handle_error)


def _extension() -> AuthMW | None:
    ext: AuthMW | None = current_app.extensions.get(_EXTENSION)
    return ext


def _response(exc: AuthError) -> Response:
    rejection = rejection_for(exc, request.environ)
    return Response(rejection.body, status=rejection.status, headers=list(rejection.headers))


def _handle_error(exc: Exception) -> Response:
    return _response(cast(AuthError, exc))


def _check(resolver: SpecResolver, target: TargetFactory | None, kwargs: Mapping[str, Any]) -> None:
    identity = get_identity()
    ext = _extension()
    try:
        if identity is None:
            raise NotAuthenticated()
        resolver.authorize(
            ext.policy if ext is not None else None,
            identity,
            target(**kwargs) if target is not None else None,
        )
    except (NotAuthenticated, Forbidden) as exc:
        abort(_response(exc))


def require(spec: RequirementSpec, *, target: TargetFactory | None = None) -> Callable[[F], F]:
    """View decorator: 401 without an identity, 403 unless ``spec`` allows.

    ``spec`` is a rule name of the app's policy, a policy expression
    (``"role:admin or role:member"``) or a :class:`~authmw.policy.Requirement`.
    ``target`` is called with the view's URL arguments and returns the
    target the rule is checked against (``{"project_id": ...}``).
    """
    resolver = SpecResolver(spec)

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                _check(resolver, target, kwargs)
                return await view(*args, **kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                _check(resolver, target, kwargs)
                return view(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__authmw_requirement__ = resolver
        return cast(F, wrapper)

    return decorator


def authorize(spec: RequirementSpec, target: Mapping[str, Any] | None = None) -> Identity:
    """Check ``spec`` inside a view (once the target is known); returns the identity.

    Aborts the request with the 401/403 JSON response when not allowed.
    """
    identity = get_identity()
    ext = _extension()
    try:
        if identity is None:
            raise NotAuthenticated()
        return resolver_for(spec).authorize(
            ext.policy if ext is not None else None, identity, target
        )
    except (NotAuthenticated, Forbidden) as exc:
        abort(_response(exc))


def protect(
    scaffold: Blueprint | Flask, spec: RequirementSpec = "@", *, exempt: Iterable[str] = ()
) -> None:
    """Require ``spec`` (default: any identity) for every view of a blueprint or app.

    ``exempt`` lists endpoint names left open (``"health"``, ``"api.status"``).
    """
    resolver = SpecResolver(spec)
    skip = frozenset(exempt)

    def guard() -> None:
        if request.endpoint not in skip:
            _check(resolver, None, {})

    scaffold.before_request(guard)
