"""Django REST framework: an authentication class, permission classes, an exception handler.

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["authmw.contrib.drf.IdentityAuthentication"],
        "EXCEPTION_HANDLER": "authmw.contrib.drf.exception_handler",
    }

    class ItemViewSet(viewsets.ViewSet):
        permission_classes = [PolicyPermission]
        policy_rules = {"list": "items:list", "create": "items:create",
                        "destroy": "items:delete"}

        def get_policy_target(self, obj):
            return {"project_id": obj.project_id}

DRF turns "not authenticated" into 403 unless the first authentication
class names a ``WWW-Authenticate`` challenge; :class:`IdentityAuthentication`
does, so a request without a valid token gets 401 and a denied one 403.
The exception handler gives both the middleware's JSON error body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from ..errors import Forbidden, IdentityServiceUnavailable, NotAuthenticated
from ..identity import Identity
from . import (
    NOT_AUTHENTICATED_MESSAGE,
    Denial,
    RequirementSpec,
    SpecResolver,
    denial_for,
    resolver_for,
)
from .django import IdentityUser, get_config, get_identity

__all__ = [
    "IdentityAuthentication",
    "IdentityServiceUnavailableError",
    "PolicyPermission",
    "exception_handler",
    "require",
]

ObjectTarget = Callable[[Any], "Mapping[str, Any] | None"]


class IdentityServiceUnavailableError(exceptions.APIException):  # type: ignore[misc]
    """503: the token could not be checked."""

    status_code = 503
    default_detail = "The identity service is unavailable; try again later."
    default_code = "identity_service_unavailable"


class IdentityAuthentication(BaseAuthentication):  # type: ignore[misc]
    """``request.user`` = :class:`IdentityUser`, ``request.auth`` = :class:`~authmw.Identity`.

    Uses the identity found by the WSGI/ASGI middleware or
    :class:`~authmw.contrib.django.AuthMWMiddleware`; failing those, checks
    the token itself with the validator of ``settings.AUTHMW`` (a bad token
    is a 401, an identity service that cannot answer a 503).
    """

    def authenticate(self, request: Request) -> tuple[IdentityUser, Identity] | None:
        django_request = request._request
        identity = get_identity(django_request) or self._validate(django_request)
        if identity is None:
            return None
        return IdentityUser(identity), identity

    @staticmethod
    def _validate(django_request: Any) -> Identity | None:
        config = get_config()
        core = config.core
        if core is None:
            return None
        meta = django_request.META
        token = meta.get(config.token_key)
        if token is None:
            return None
        decision = core.authenticate(token, meta.get(config.service_token_key))
        rejection = decision.rejection
        if rejection is not None and rejection.status == 503:
            raise IdentityServiceUnavailableError()
        if decision.identity is None:
            reason = rejection.reason if rejection is not None else ""
            raise exceptions.AuthenticationFailed(reason or NOT_AUTHENTICATED_MESSAGE)
        return decision.identity

    def authenticate_header(self, request: Request) -> str:
        return get_config().challenge


def _check(
    resolver: SpecResolver | None,
    permission: BasePermission,
    request: Request,
    target: Mapping[str, Any] | None,
    *,
    defer: bool,
) -> bool:
    """Allow, or deny with the reason in ``permission.message``.

    ``defer``: a rule that cannot decide without the target is left to the
    object-level check instead of denied.
    """
    identity = request.auth if isinstance(request.auth, Identity) else None
    if identity is None:
        return False  # nobody authenticated: DRF answers 401
    if resolver is None:
        return False
    policy = get_config().policy
    requirement = resolver.resolve(policy)
    if requirement is not None:
        verdict = requirement.decide(identity, target)
        if verdict is True or (verdict is None and defer):
            return True
    try:
        resolver.authorize(policy, identity, target)
    except Forbidden as exc:
        permission.message = str(exc)
    return False


class _RequirementPermission(BasePermission):  # type: ignore[misc]
    resolver: SpecResolver
    object_target: ObjectTarget | None = None
    message = "Forbidden."

    def has_permission(self, request: Request, view: Any) -> bool:
        return _check(self.resolver, self, request, None, defer=self.object_target is not None)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if self.object_target is None:
            return True
        return _check(self.resolver, self, request, self.object_target(obj), defer=False)


def require(
    spec: RequirementSpec, *, object_target: ObjectTarget | None = None
) -> type[BasePermission]:
    """A permission class for ``spec`` (rule name, expression or Requirement).

    With ``object_target(obj) -> target`` a rule that needs the target
    (``project_id:%(project_id)s``) is decided per object, in
    ``has_object_permission``; DRF calls that only from ``get_object()``, so
    list views are checked without a target. A rule that denies whatever
    the target (a missing role) denies at once.
    """
    attrs: dict[str, Any] = {"resolver": SpecResolver(spec)}
    if object_target is not None:
        attrs["object_target"] = staticmethod(object_target)
    return type(f"require({spec!r})", (_RequirementPermission,), attrs)


class PolicyPermission(BasePermission):  # type: ignore[misc]
    """Rule per action or method, from the view's ``policy_rules`` mapping.

    Keys are ViewSet actions (``"list"``, ``"destroy"``) or HTTP methods
    (``"GET"``); a request with no matching entry is denied. If the view
    has ``get_policy_target(obj)``, rules that need a target are decided
    per object with its result.
    """

    message = "Forbidden."

    def _resolver(self, request: Request, view: Any) -> SpecResolver | None:
        rules: Mapping[str, RequirementSpec] = getattr(view, "policy_rules", None) or {}
        action = getattr(view, "action", None)
        spec = rules.get(action) if action else None
        if spec is None:
            spec = rules.get(request.method or "")
        if spec is None:
            self.message = f"no policy rule for {action or request.method}"
            return None
        return resolver_for(spec)

    def has_permission(self, request: Request, view: Any) -> bool:
        defer = hasattr(view, "get_policy_target")
        return _check(self._resolver(request, view), self, request, None, defer=defer)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        get_target = getattr(view, "get_policy_target", None)
        if get_target is None:
            return True
        return _check(self._resolver(request, view), self, request, get_target(obj), defer=False)


def _render(denial: Denial, response: Response) -> Response:
    response.data = denial.payload
    return response


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """DRF's handler, with authmw's JSON error body for 401, 403 and 503.

    Also turns ``authmw.NotAuthenticated``/``Forbidden``/``IdentityServiceUnavailable``
    raised in a view into those responses.
    """
    # Imported here: DRF imports this module (named in REST_FRAMEWORK) while
    # rest_framework.views itself is loading.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, NotAuthenticated):
        exc = exceptions.NotAuthenticated(str(exc) or None)
    elif isinstance(exc, Forbidden):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, IdentityServiceUnavailable):
        exc = IdentityServiceUnavailableError()
    response = drf_exception_handler(exc, dict(context))
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    message = str(exc.detail)
    if response.status_code == 401:
        denial = denial_for(NotAuthenticated(message), get_config().challenge)
        response["WWW-Authenticate"] = response.get("WWW-Authenticate") or get_config().challenge
        return _render(denial, response)
    if response.status_code == 403 and isinstance(exc, exceptions.PermissionDenied):
        return _render(denial_for(Forbidden(message)), response)
    if response.status_code == 503 and isinstance(exc, IdentityServiceUnavailableError):
        response["Retry-After"] = "5"
        return _render(denial_for(IdentityServiceUnavailable(message)), response)
    return response
