"""Django integration: ``request.identity``, a view decorator and settings-only set-up.

Add the middleware::

    MIDDLEWARE = [..., "authmw.contrib.django.AuthMWMiddleware"]

If the WSGI/ASGI middleware already runs in front of Django, it only
exposes what that middleware found as ``request.identity``. Otherwise it
authenticates itself from the settings::

    AUTHMW = {
        "VALIDATOR": "authmw.validators.keystone.KeystoneValidator",  # or an instance
        "VALIDATOR_OPTIONS": {"auth_url": "https://keystone.example/v3", ...},
        "OPTIONS": {"public_routes": ["GET /healthz"], "delay_auth_decision": False},
        "POLICY": BASE_DIR / "policy.yaml",  # or a dict of rules, or a Policy
    }

Views use :func:`require` (401 without identity, 403 when denied) or raise
``authmw.Forbidden``/``NotAuthenticated``, which the middleware turns into
the same JSON error responses.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from ..core import AuthCore, Decision
from ..errors import (
    AuthError,
    ConfigurationError,
    Forbidden,
    IdentityServiceUnavailable,
    NotAuthenticated,
)
from ..identity import Identity
from ..pipeline import Pipeline
from ..policy import Policy
from ..responses import DEFAULT_RESPONSES, Rejection, Responses
from . import (
    IDENTITY_KEY,
    RESPONSES_KEY,
    RequirementSpec,
    SpecResolver,
    as_policy,
    resolver_for,
    responses_in,
)

__all__ = [
    "AuthMWMiddleware",
    "Config",
    "IdentityUser",
    "authorize",
    "get_config",
    "get_identity",
    "require",
]

log = logging.getLogger("authmw.contrib.django")

F = TypeVar("F", bound=Callable[..., Any])
TargetFactory = Callable[..., "Mapping[str, Any] | None"]

_ATTR = "_authmw_identity"
_UNSET = object()
_KNOWN_KEYS = frozenset({"VALIDATOR", "VALIDATOR_OPTIONS", "OPTIONS", "POLICY"})


class Config:
    """What ``settings.AUTHMW`` configures: an AuthCore (or None) and a policy (or None)."""

    def __init__(self, core: AuthCore | None, policy: Policy | None) -> None:
        self.core = core
        self.policy = policy
        #: The middleware's pipeline (a request without a token is refused) and
        #: DRF's (anonymous: permissions decide); None without a validator.
        self.pipeline = Pipeline(core) if core is not None else None
        self.anonymous_pipeline = Pipeline(core, anonymous=True) if core is not None else None

    @property
    def responses(self) -> Responses:
        """The answers of this configuration."""
        return self.core.responses if self.core is not None else DEFAULT_RESPONSES

    @classmethod
    def from_settings(cls, value: Any) -> Config:
        """Build from the ``AUTHMW`` setting; mistakes raise ConfigurationError naming the key."""
        if value is None:
            return cls(None, None)
        if not isinstance(value, Mapping):
            raise ConfigurationError("settings.AUTHMW", "must be a dict")
        unknown = set(value) - _KNOWN_KEYS
        if unknown:
            raise ConfigurationError(
                f"settings.AUTHMW[{sorted(unknown)[0]!r}]",
                f"unknown key; expected one of {', '.join(sorted(_KNOWN_KEYS))}",
            )
        options = value.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            raise ConfigurationError("settings.AUTHMW['OPTIONS']", "must be a dict")
        validator = _validator(value.get("VALIDATOR"), value.get("VALIDATOR_OPTIONS") or {})
        if validator is None and options:
            raise ConfigurationError(
                "settings.AUTHMW['OPTIONS']", "middleware options need a VALIDATOR"
            )
        core = AuthCore(validator, **options) if validator is not None else None
        try:
            policy = as_policy(value.get("POLICY"))
        except ConfigurationError as exc:
            message = str(exc).removeprefix(f"{exc.option}: ")
            raise ConfigurationError("settings.AUTHMW['POLICY']", message) from None
        return cls(core, policy)


def _validator(spec: Any, options: Any) -> Any:
    option = "settings.AUTHMW['VALIDATOR']"
    if spec is None:
        return None
    if not isinstance(options, Mapping):
        raise ConfigurationError("settings.AUTHMW['VALIDATOR_OPTIONS']", "must be a dict")
    if isinstance(spec, str):
        module_name, _, attr = spec.rpartition(".")
        try:
            spec = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(option, f"cannot import {spec!r}: {exc}") from None
    if callable(getattr(spec, "validate", None)) and not isinstance(spec, type):
        if options:
            raise ConfigurationError(
                "settings.AUTHMW['VALIDATOR_OPTIONS']", "given with a validator instance"
            )
        return spec
    if callable(spec):
        return spec(**options)
    raise ConfigurationError(option, f"must be a validator, a class or a dotted path, got {spec!r}")


_config: Config | None = None
_config_lock = threading.Lock()


def get_config() -> Config:
    """The configuration from ``settings.AUTHMW``, built once (and again if it changes)."""
    global _config
    config = _config
    if config is None:
        with _config_lock:
            if _config is None:
                _config = Config.from_settings(getattr(settings, "AUTHMW", None))
            config = _config
    return config


def _reset_config(*, setting: str, **kwargs: Any) -> None:
    global _config
    if setting == "AUTHMW":
        old, _config = _config, None
        if old is not None and old.core is not None:
            old.core.close()


setting_changed.connect(_reset_config)


class IdentityUser:
    """A ``request.user`` for an authenticated token (no database row behind it)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.pk = self.id = identity.user_id
        self.username = identity.user_name or identity.user_id

    def get_username(self) -> str:
        return self.username

    def has_role(self, role: str) -> bool:
        return self.identity.has_role(role)

    def __str__(self) -> str:
        return self.username

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityUser) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity.user_id)


_warned_missing = False


def _from_outer_middleware(request: HttpRequest) -> Any:
    """The identity the WSGI/ASGI middleware found, or _UNSET if it did not run."""
    if IDENTITY_KEY in request.META:
        return request.META[IDENTITY_KEY]
    scope = getattr(request, "scope", None)
    if scope is not None and IDENTITY_KEY in scope:
        return scope[IDENTITY_KEY]
    return _UNSET


def found_identity(request: HttpRequest) -> tuple[bool, Identity | None]:
    """(whether an authmw middleware handled this request, the identity it found)."""
    identity = getattr(request, _ATTR, _UNSET)
    if identity is _UNSET:
        identity = _from_outer_middleware(request)
    if identity is _UNSET:
        return False, None
    return True, cast("Identity | None", identity)


def get_identity(request: HttpRequest) -> Identity | None:
    """The request's identity (from this middleware or the WSGI/ASGI one), or None."""
    identity = getattr(request, _ATTR, _UNSET)
    if identity is _UNSET:
        identity = _from_outer_middleware(request)
        if identity is _UNSET:
            global _warned_missing
            if not _warned_missing:
                _warned_missing = True
                log.warning(
                    "no authmw identity on the request: add AuthMWMiddleware (with "
                    "settings.AUTHMW) or wrap the app with the WSGI/ASGI middleware"
                )
            identity = None
    return cast("Identity | None", identity)


def set_identity(request: HttpRequest, identity: Identity | None) -> None:
    setattr(request, _ATTR, identity)
    request.identity = identity


def rejection_response(rejection: Rejection) -> HttpResponse:
    """A Django response sending ``rejection`` as it is."""
    response = HttpResponse(rejection.body, status=rejection.status)
    for name, value in rejection.headers:
        response[name] = value
    return response


def denial_response(exc: AuthError, request: HttpRequest | None = None) -> HttpResponse:
    """The JSON 401/403/503 response for an access error, as the request's pipeline answers."""
    meta = request.META if request is not None else {}
    responses = responses_in(meta) if RESPONSES_KEY in meta else get_config().responses
    return rejection_response(responses.for_error(exc))


def refresh_headers(request: HttpRequest) -> None:
    # request.headers is a snapshot of META built on first access (by an
    # earlier middleware, perhaps): drop it so views see the cleaned META.
    request.__dict__.pop("headers", None)


def request_raw_path(request: HttpRequest) -> str | None:
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get("raw_path"):
        return str(scope["raw_path"].decode("latin-1"))
    return None


class AuthMWMiddleware:
    """Sets ``request.identity``; authenticates itself when ``settings.AUTHMW`` has a validator.

    Put it early in ``MIDDLEWARE``: it cleans ``request.META`` and
    ``request.headers`` whatever ran before it, but a middleware placed
    before it acts on the request as the client sent it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        get_config()  # configuration mistakes surface at start-up

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        pipeline = self._pipeline(request)
        if pipeline is None:
            return self.get_response(request)
        decision = pipeline.run_environ(request.META, request_raw_path(request))
        rejection = self._apply(request, decision)
        if rejection is not None:
            return rejection
        return self._challenged(pipeline, decision, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> Any:
        get_response = cast(Callable[[HttpRequest], Awaitable[Any]], self.get_response)
        pipeline = self._pipeline(request)
        if pipeline is None:
            return await get_response(request)
        decision = await pipeline.arun_environ(request.META, request_raw_path(request))
        rejection = self._apply(request, decision)
        if rejection is not None:
            return rejection
        return self._challenged(pipeline, decision, await get_response(request))

    @staticmethod
    def _pipeline(request: HttpRequest) -> Pipeline | None:
        """This middleware's pipeline, or None when another authmw middleware ran already."""
        outer = _from_outer_middleware(request)
        config = get_config()
        if outer is not _UNSET or config.pipeline is None:
            set_identity(request, None if outer is _UNSET else outer)
            return None
        return config.pipeline

    @staticmethod
    def _apply(request: HttpRequest, decision: Decision) -> HttpResponse | None:
        refresh_headers(request)
        if decision.rejection is not None:
            return rejection_response(decision.rejection)
        set_identity(request, decision.identity)
        return None

    @staticmethod
    def _challenged(pipeline: Pipeline, decision: Decision, response: Any) -> Any:
        responses = pipeline.responses
        if decision.challenged and responses.needs_challenge(
            response.status_code, response.headers.keys()
        ):
            name, value = responses.challenge_header
            response[name] = value
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (NotAuthenticated, Forbidden, IdentityServiceUnavailable)):
            return denial_response(exception, request)
        return None


def _check(
    resolver: SpecResolver,
    target: TargetFactory | None,
    request: HttpRequest,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> HttpResponse | None:
    config = get_config()
    identity = get_identity(request)
    try:
        if identity is None:
            raise NotAuthenticated()
        resolver.authorize(
            config.policy,
            identity,
            target(request, *args, **kwargs) if target is not None else None,
        )
    except (NotAuthenticated, Forbidden) as exc:
        return denial_response(exc, request)
    return None


def require(spec: RequirementSpec, *, target: TargetFactory | None = None) -> Callable[[F], F]:
    """View decorator: 401 without an identity, 403 unless ``spec`` allows.

    ``spec`` is a rule name of ``settings.AUTHMW["POLICY"]``, a policy
    expression or a :class:`~authmw.policy.Requirement`; ``target`` is
    called as ``target(request, *args, **kwargs)`` with the view's arguments.
    """
    resolver = SpecResolver(spec)

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                denied = _check(resolver, target, request, args, kwargs)
                if denied is not None:
                    return denied
                return await view(request, *args, **kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                denied = _check(resolver, target, request, args, kwargs)
                if denied is not None:
                    return denied
                return view(request, *args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__authmw_requirement__ = resolver
        return cast(F, wrapper)

    return decorator


def authorize(
    request: HttpRequest, spec: RequirementSpec, target: Mapping[str, Any] | None = None
) -> Identity:
    """Check ``spec`` inside a view; raises ``NotAuthenticated``/``Forbidden``.

    :class:`AuthMWMiddleware` turns those into the JSON 401/403 responses.
    """
    identity = get_identity(request)
    if identity is None:
        raise NotAuthenticated()
    return resolver_for(spec).authorize(get_config().policy, identity, target)
