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

from ..errors import Forbidden, IdentityServiceUnavailable, NotAuthenticated
from ..identity import Identity
from ..responses import Rejection, Responses
from . import (
    RESPONSES_KEY,
    RequirementSpec,
    SpecResolver,
    resolver_for,
    responses_in,
)
from .django import (
    IdentityUser,
    found_identity,
    get_config,
    refresh_headers,
    rejection_response,
    request_raw_path,
    set_identity,
)

__all__ = [
    "IdentityAuthentication",
    "IdentityServiceUnavailableError",
    "PolicyPermission",
    "RejectedCredentials",
    "exception_handler",
    "require",
]

ObjectTarget = Callable[[Any], "Mapping[str, Any] | None"]


class IdentityServiceUnavailableError(exceptions.APIException):  # type: ignore[misc]
    """503: the token could not be checked."""

    status_code = 503
    default_detail = "The identity service is unavailable; try again later."
    default_code = "identity_service_unavailable"


class RejectedCredentials(exceptions.APIException):  # type: ignore[misc]
    """The pipeline refused the request's credentials (401, or 503); carries its answer."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason or None)
        self.status_code = rejection.status
        self.rejection = rejection
        # For DRF's own exception handler, if ours is not configured.
        self.auth_header = rejection.header("WWW-Authenticate")
        retry = rejection.header("Retry-After")
        self.wait = float(retry) if retry else None


class IdentityAuthentication(BaseAuthentication):  # type: ignore[misc]
    """``request.user`` = :class:`IdentityUser`, ``request.auth`` = :class:`~authmw.Identity`.

    Uses the identity found by the WSGI/ASGI middleware or
    :class:`~authmw.contrib.django.AuthMWMiddleware`; failing those, runs
    authmw's pipeline itself with the validator of ``settings.AUTHMW``
    (forged identity headers stripped from ``request.META`` and
    ``request.headers``; no token: anonymous; a bad token: 401; an
    identity service that cannot answer: 503).
    """

    def authenticate(self, request: Request) -> tuple[IdentityUser, Identity] | None:
        django_request = request._request
        handled, identity = found_identity(django_request)
        if not handled:
            identity = self._run_pipeline(django_request)
        if identity is None:
            return None
        return IdentityUser(identity), identity

    @staticmethod
    def _run_pipeline(django_request: Any) -> Identity | None:
        pipeline = get_config().anonymous_pipeline
        if pipeline is None:
            return None
        decision = pipeline.run_environ(django_request.META, request_raw_path(django_request))
        refresh_headers(django_request)
        if decision.rejection is not None:
            raise RejectedCredentials(decision.rejection)
        set_identity(django_request, decision.identity)
        return decision.identity

    def authenticate_header(self, request: Request) -> str:
        return _responses(request).challenge


def _responses(request: Request) -> Responses:
    meta = request._request.META
    return responses_in(meta) if RESPONSES_KEY in meta else get_config().responses


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


def _names_an_object(view: Any) -> bool:
    """True where an object-level check will follow: a ViewSet's detail action,
    a generic view whose URL names its object (DRF's ``get_object()`` runs
    the check), or a view that says so with ``policy_checks_objects = True``
    (it calls ``check_object_permissions`` itself). Never on list or create."""
    if getattr(view, "policy_checks_objects", False) is True:
        return True
    if getattr(view, "detail", None) is not None:
        return view.detail is True
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
    return bool(lookup) and lookup in (getattr(view, "kwargs", None) or {})


def _request_target(view: Any, request: Request) -> Mapping[str, Any] | None:
    get_target = getattr(view, "get_request_policy_target", None)
    return get_target(request) if get_target is not None else None


class _RequirementPermission(BasePermission):  # type: ignore[misc]
    resolver: SpecResolver
    object_target: ObjectTarget | None = None
    message = "Forbidden."

    def has_permission(self, request: Request, view: Any) -> bool:
        defer = self.object_target is not None and _names_an_object(view)
        target = _request_target(view, request)
        return _check(self.resolver, self, request, target, defer=defer)

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
    ``has_object_permission``, on detail routes (DRF runs that check from
    ``get_object()``). Where no object will be checked (list, create) a
    rule that cannot be decided without a target denies, unless the view
    gives one with ``get_request_policy_target(request)``. A rule that
    denies whatever the target (a missing role) denies at once.
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
    per object with its result on detail routes. On list and create, a rule
    that needs a target is decided with ``get_request_policy_target(request)``
    if the view has it, and denied if not: a rule that cannot be decided
    never allows.
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
        defer = hasattr(view, "get_policy_target") and _names_an_object(view)
        target = _request_target(view, request)
        return _check(self._resolver(request, view), self, request, target, defer=defer)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        get_target = getattr(view, "get_policy_target", None)
        if get_target is None:
            return True
        return _check(self._resolver(request, view), self, request, get_target(obj), defer=False)


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Any:
    """DRF's handler, answering 401, 403 and 503 as the pipeline does.

    Also turns ``authmw.NotAuthenticated``/``Forbidden``/``IdentityServiceUnavailable``
    raised in a view into those responses.
    """
    # Imported here: DRF imports this module (named in REST_FRAMEWORK) while
    # rest_framework.views itself is loading.
    from rest_framework.views import exception_handler as drf_exception_handler

    request = context.get("request")
    responses = _responses(request) if request is not None else get_config().responses
    if isinstance(exc, RejectedCredentials):
        return rejection_response(exc.rejection)
    if isinstance(exc, (NotAuthenticated, Forbidden, IdentityServiceUnavailable)):
        return rejection_response(responses.for_error(exc))
    response = drf_exception_handler(exc, dict(context))
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    message = str(exc.detail)
    if response.status_code == 401:
        return rejection_response(responses.unauthorized(message))
    if response.status_code == 403 and isinstance(exc, exceptions.PermissionDenied):
        return rejection_response(responses.forbidden(message))
    if response.status_code == 503 and isinstance(exc, IdentityServiceUnavailableError):
        return rejection_response(responses.unavailable(message))
    return response
