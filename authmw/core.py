"""The framework-agnostic decision: token in, decision out.

:class:`AuthCore` knows nothing of WSGI or ASGI. The adapters hand it raw
header values and a path; it answers with a :class:`Decision`: an identity
to inject, or a :class:`Rejection` (status, JSON body, headers) to send.
One generator-based flow holds the logic; :meth:`AuthCore.authenticate`
and :meth:`AuthCore.authenticate_async` only drive it, blocking or awaiting
the validator.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

from . import headers as _headers
from ._hashing import fingerprint
from .cache import CachedValidator, SharedCache
from .errors import (
    ConfigurationError,
    IdentityServiceUnavailable,
    InvalidToken,
    ScopeMismatch,
)
from .identity import Identity
from .resilience import CircuitBreaker, GuardedValidator
from .validators.base import Validator, validate_async

__all__ = ["AuthCore", "Decision", "Rejection", "error_body"]

log = logging.getLogger("authmw")

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    503: "Service Unavailable",
}


def error_body(status: int, message: str) -> bytes:
    """The JSON error body every authmw response and integration uses."""
    title = _TITLES.get(status, "Error")
    return json.dumps(
        {"error": {"code": status, "title": title, "message": message}}, separators=(",", ":")
    ).encode()


@dataclass(frozen=True)
class Rejection:
    """A response to send instead of calling the app."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    reason: str = ""

    @property
    def status_line(self) -> str:
        return f"{self.status} {_TITLES.get(self.status, 'Error')}"


class Decision:
    """The outcome for one request.

    ``identity`` is set when the token is confirmed. ``rejection`` is set
    when the request must be answered without calling the app. In delayed
    mode neither is set for a bad token: the app is called with
    ``X-Identity-Status: Invalid`` and ``identity`` None.
    """

    __slots__ = ("identity", "rejection", "service_identity", "service_status", "status")

    def __init__(
        self,
        identity: Identity | None,
        rejection: Rejection | None = None,
        *,
        status: str | None = None,
        service_identity: Identity | None = None,
        service_status: str | None = None,
    ) -> None:
        self.identity = identity
        self.rejection = rejection
        self.status = status if status is not None else ("Confirmed" if identity else "Invalid")
        self.service_identity = service_identity
        self.service_status = service_status

    def __repr__(self) -> str:
        return (
            f"Decision(status={self.status!r}, identity={self.identity!r}, "
            f"rejection={self.rejection!r}, service_status={self.service_status!r})"
        )


class _PublicRoutes:
    """Allow-list of routes that skip authentication.

    Rules: ``/exact``, ``/prefix/*``, ``*`` (any path), each optionally
    preceded by methods: ``GET /healthz``, ``GET,HEAD /status``,
    ``OPTIONS *``. Only paths in normal form can match: a path holding
    ``//``, ``.``/``..`` segments, backslashes or percent-encoded
    separators (raw or decoded) is never public, so ``/healthz/../admin``
    and ``/healthz%2f..%2fadmin`` are authenticated like any other path.
    """

    def __init__(self, rules: Iterable[str]) -> None:
        self.exact: dict[str, frozenset[str] | None] = {}
        self.prefixes: list[tuple[str, frozenset[str] | None]] = []
        self.any_path_methods: set[str] = set()
        self.any_path_any_method = False
        if isinstance(rules, str) or not isinstance(rules, Iterable):
            raise ConfigurationError(
                "public_routes", f"must be a list of rules like 'GET /healthz', got {rules!r}"
            )
        for rule in rules:
            self._add(rule)
        self.enabled = bool(
            self.exact or self.prefixes or self.any_path_methods or self.any_path_any_method
        )

    def _add(self, rule: str) -> None:
        if not isinstance(rule, str) or not rule.strip():
            raise ConfigurationError("public_routes", f"empty or non-string rule {rule!r}")
        parts = rule.split()
        if len(parts) == 1:
            methods: frozenset[str] | None = None
            path = parts[0]
        elif len(parts) == 2:
            methods = frozenset(m.strip().upper() for m in parts[0].split(",") if m.strip())
            if not methods or not all(m.isalpha() for m in methods):
                raise ConfigurationError("public_routes", f"bad method list in {rule!r}")
            path = parts[1]
        else:
            raise ConfigurationError("public_routes", f"expected '[METHODS] PATH', got {rule!r}")
        if path == "*":
            if methods is None:
                self.any_path_any_method = True
            else:
                self.any_path_methods |= methods
            return
        if not path.startswith("/") or not _is_normal_path(path.removesuffix("*")):
            raise ConfigurationError(
                "public_routes", f"path must be absolute and in normal form: {rule!r}"
            )
        if path.endswith("*"):
            self.prefixes.append((path[:-1], methods))
        else:
            if path in self.exact and self.exact[path] is not None and methods is not None:
                methods = methods | self.exact[path]  # type: ignore[operator]
            elif path in self.exact:
                methods = None
            self.exact[path] = methods

    def match(self, method: str, path: str, raw_path: str | None) -> bool:
        if self.any_path_any_method or method in self.any_path_methods:
            return True
        if not _is_normal_path(path) or (raw_path is not None and not _is_clean_raw(raw_path)):
            return False
        if path in self.exact:
            methods = self.exact[path]
            if methods is None or method in methods:
                return True
        for prefix, methods in self.prefixes:
            if path.startswith(prefix) and (methods is None or method in methods):
                return True
        return False


def _is_normal_path(path: str) -> bool:
    return "%" not in path and _has_normal_segments(path)


def _has_normal_segments(path: str) -> bool:
    if not path.startswith("/") or "//" in path or "\\" in path or "\x00" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _is_clean_raw(raw: str) -> bool:
    # The request target as sent: percent-escapes are fine (``%20``), except
    # those that decode to a separator, a dot, NUL or another escape.
    raw = raw.split("?", 1)[0].lower()
    return not any(
        bad in raw for bad in ("%2f", "%5c", "%2e", "%00", "%25")
    ) and _has_normal_segments(raw if raw.startswith("/") else "/" + raw.split("/", 3)[-1])


def _number(option: str, value: Any, minimum: float = 0.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value >= minimum
    ):
        raise ConfigurationError(option, f"must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(option, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _flag(option: str, value: Any) -> bool:
    # bool("false") is True: a string from a config file must be converted by the caller.
    if not isinstance(value, bool):
        raise ConfigurationError(option, f"must be True or False, got {value!r}")
    return value


def _header_text(option: str, value: Any) -> str:
    if not isinstance(value, str) or '"' in value or not value.isprintable():
        raise ConfigurationError(
            option, f"must be a string without quotes or control characters, got {value!r}"
        )
    return value


_SHARED_CACHE_METHODS = ("get", "put", "put_invalid", "revoke", "aget", "aput", "aput_invalid")


def _roles_option(option: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) and v for v in value
    ):
        raise ConfigurationError(option, f"must be a list of role names, got {value!r}")
    return tuple(value)


def _scrubbed(exc: BaseException, token: str) -> str:
    """``str(exc)`` without the token: validators quote it (Keystone's 404 does)."""
    message = str(exc)
    if token and token in message:
        message = message.replace(token, f"<token {fingerprint(token)}>")
    return message


def _option_names() -> list[str]:
    params = inspect.signature(AuthCore.__init__).parameters
    return [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]


_ValidationRequest = tuple[str, bool]
_Flow = Generator[_ValidationRequest, Identity, Decision]


class AuthCore:
    """Everything the WSGI and ASGI adapters decide, in one place.

    ``validator`` is wrapped in a :class:`~authmw.resilience.GuardedValidator`
    (circuit breaker, concurrency bound) and a :class:`~authmw.cache.CachedValidator`
    (LRU + negative cache + single-flight) unless it already is one.
    """

    def __init__(
        self,
        validator: Validator,
        *,
        token_header: str = "X-Auth-Token",  # noqa: S107
        service_token_header: str = "X-Service-Token",  # noqa: S107
        delay_auth_decision: bool = False,
        www_authenticate_uri: str | None = None,
        realm: str = "authmw",
        public_routes: Iterable[str] = (),
        max_token_size: int = 8192,
        cache_time: float = 300.0,
        negative_cache_time: float = 10.0,
        cache_size: int = 10_000,
        shared_cache: SharedCache | None = None,
        service_token_roles: Iterable[str] = ("service",),
        service_token_roles_required: bool = True,
        fiware_service_scope: bool = False,
        retry_after: float = 5.0,
        failure_threshold: int = 5,
        circuit_cooldown: float = 10.0,
        max_concurrency: int = 32,
        acquire_timeout: float = 5.0,
        timer: Callable[[], float] = time.time,
    ) -> None:
        if validator is None or not callable(getattr(validator, "validate", None)):
            raise ConfigurationError(
                "validator", f"must have a validate(token) method, got {validator!r}"
            )
        for option, header in (
            ("token_header", token_header),
            ("service_token_header", service_token_header),
        ):
            if not isinstance(header, str) or not header or not header.replace("-", "").isalnum():
                raise ConfigurationError(option, f"must be a header name, got {header!r}")
            if _headers.is_stripped(header):
                raise ConfigurationError(option, f"{header} is an identity header authmw strips")
        max_token_size = _integer("max_token_size", max_token_size, 16)
        if www_authenticate_uri is not None:
            _header_text("www_authenticate_uri", www_authenticate_uri)
        _header_text("realm", realm)
        if not callable(timer):
            raise ConfigurationError(
                "timer", f"must be a callable returning seconds, got {timer!r}"
            )
        if shared_cache is not None and not all(
            callable(getattr(shared_cache, name, None)) for name in _SHARED_CACHE_METHODS
        ):
            raise ConfigurationError(
                "shared_cache",
                f"must implement {', '.join(_SHARED_CACHE_METHODS)}, got {shared_cache!r}",
            )
        failure_threshold = _integer("failure_threshold", failure_threshold, 1)
        max_concurrency = _integer("max_concurrency", max_concurrency, 1)

        self.token_header = token_header
        self.service_token_header = service_token_header
        self.delay_auth_decision = _flag("delay_auth_decision", delay_auth_decision)
        self.max_token_size = max_token_size
        self.service_token_roles = _roles_option("service_token_roles", service_token_roles)
        self.service_token_roles_required = _flag(
            "service_token_roles_required", service_token_roles_required
        )
        self.fiware_service_scope = _flag("fiware_service_scope", fiware_service_scope)
        self.public_routes = _PublicRoutes(public_routes)
        self.retry_after = _number("retry_after", retry_after)
        self._timer = timer
        self._warned_service_roles = False
        # httpcore logs response headers at DEBUG and Keystone echoes the token
        # in X-Subject-Token: redact them whichever validator makes the calls.
        from .client._base import install_log_redaction

        install_log_redaction()

        self.inner_validator = validator
        breaker = CircuitBreaker(failure_threshold, _number("circuit_cooldown", circuit_cooldown))
        if isinstance(validator, (CachedValidator, GuardedValidator)):
            guarded: Any = validator
        else:
            guarded = GuardedValidator(
                validator,
                breaker=breaker,
                max_concurrency=max_concurrency,
                acquire_timeout=_number("acquire_timeout", acquire_timeout),
            )
        self.breaker: CircuitBreaker | None = getattr(guarded, "breaker", None)
        if isinstance(validator, CachedValidator):
            self.cache: CachedValidator = validator
        else:
            self.cache = CachedValidator(
                guarded,
                cache_time=_number("cache_time", cache_time),
                negative_cache_time=_number("negative_cache_time", negative_cache_time),
                maxsize=cache_size,
                shared=shared_cache,
                timer=timer,
            )
        self.validator: Validator = self.cache

        if www_authenticate_uri:
            challenge = f'Keystone uri="{www_authenticate_uri}"'
        else:
            challenge = f'Keystone realm="{realm}"'
        self.www_authenticate = challenge
        self._reject_missing = self._unauthorized("Authentication required: no token in request.")
        self._reject_invalid = self._unauthorized(
            "The request you have made requires authentication."
        )
        self._reject_too_large = self._unauthorized("Token is too large.")
        self._reject_multiple = self._unauthorized("More than one token in the request.")
        self._reject_malformed = self._unauthorized("Token is malformed.")
        self._reject_service = self._unauthorized("Service token is invalid.")
        self._decision_missing = Decision(None, self._reject_missing)
        self._decision_invalid = Decision(None, self._reject_invalid)
        self._delayed_invalid = Decision(None, None, status="Invalid")

    @classmethod
    def for_middleware(
        cls, validator: Validator | None, core: AuthCore | None, options: dict[str, Any]
    ) -> AuthCore:
        """The core a middleware uses: ``core`` as given, or one built from the options."""
        if core is None:
            if validator is None:
                raise ConfigurationError("validator", "a validator (or core=) is required")
            return cls.from_options(validator, **options)
        if validator is not None or options:
            raise ConfigurationError("core", "pass either core= or a validator and options")
        return core

    @classmethod
    def from_options(cls, validator: Validator, **options: Any) -> AuthCore:
        """Build a core from keyword options, refusing unknown names by name."""
        known = _option_names()
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(name, f"unknown option{hint}")
        return cls(validator, **options)

    # -- responses ---------------------------------------------------------
    def _unauthorized(self, message: str) -> Rejection:
        body = error_body(401, message)
        return Rejection(
            401,
            body,
            (
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", self.www_authenticate),
            ),
            message,
        )

    def _unavailable(self) -> Rejection:
        body = error_body(503, "The identity service is unavailable; try again later.")
        retry = self.retry_after
        if self.breaker is not None:
            retry = max(retry, self.breaker.retry_after())
        return Rejection(
            503,
            body,
            (
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(max(1, math.ceil(retry)))),
            ),
        )

    def _scope_mismatch(self, message: str) -> Rejection:
        return self._unauthorized(message)

    # -- entry points --------------------------------------------------------
    def is_public(self, method: str, path: str, raw_path: str | None = None) -> bool:
        """True if the allow-list lets this request skip authentication."""
        return self.public_routes.enabled and self.public_routes.match(method, path, raw_path)

    def authenticate(
        self,
        token_value: str | None,
        service_token_value: str | None = None,
        fiware_service: str | None = None,
        fiware_service_path: str | None = None,
    ) -> Decision:
        """Decide for one request, blocking on the validator when needed."""
        if service_token_value is None and not self.fiware_service_scope:
            fast = self._fast_path(token_value)
            if fast is not None:
                return fast
        flow = self._flow(token_value, service_token_value, fiware_service, fiware_service_path)
        try:
            request = next(flow)
            while True:
                try:
                    identity = self.validator.validate(request[0], allow_expired=request[1])
                except Exception as exc:
                    request = flow.throw(self._known(exc, request[0]))
                else:
                    request = flow.send(identity)
        except StopIteration as stop:
            result: Decision = stop.value
            return result

    async def authenticate_async(
        self,
        token_value: str | None,
        service_token_value: str | None = None,
        fiware_service: str | None = None,
        fiware_service_path: str | None = None,
    ) -> Decision:
        """Decide for one request, awaiting the validator when needed."""
        if service_token_value is None and not self.fiware_service_scope:
            fast = self._fast_path(token_value)
            if fast is not None:
                return fast
        flow = self._flow(token_value, service_token_value, fiware_service, fiware_service_path)
        try:
            request = next(flow)
            while True:
                try:
                    identity = await validate_async(
                        self.validator, request[0], allow_expired=request[1]
                    )
                except Exception as exc:
                    request = flow.throw(self._known(exc, request[0]))
                else:
                    request = flow.send(identity)
        except StopIteration as stop:
            result: Decision = stop.value
            return result

    def _fast_path(self, token_value: str | None) -> Decision | None:
        """A decision without leaving the thread: cache hits and local rejections."""
        token = self._extract(token_value)
        if isinstance(token, Rejection):
            return None  # the flow logs and applies delayed mode
        try:
            identity = self.cache.lookup(token, count_miss=False)
        except InvalidToken:
            log.debug("rejected token %s (cached rejection)", fingerprint(token))
            return self._delayed_invalid if self.delay_auth_decision else self._decision_invalid
        if identity is None:
            return None
        decision: Decision | None = identity._memo.get("decision")
        if decision is None:
            decision = identity._memo["decision"] = Decision(identity)
        return decision

    def _known(self, exc: Exception, token: str) -> Exception:
        if isinstance(exc, (InvalidToken, IdentityServiceUnavailable)):
            return exc
        # A validator bug must not become a 500 nor leak the token into the log.
        log.error(
            "validator %s failed unexpectedly: %s: %s",
            type(self.inner_validator).__name__,
            type(exc).__name__,
            _scrubbed(exc, token),
        )
        return IdentityServiceUnavailable("validator error")

    # -- the decision --------------------------------------------------------
    def _extract(self, value: str | None) -> str | Rejection:
        """The token from a raw header value, or the reason there is none."""
        if value is None:
            return self._reject_missing
        if len(value) > self.max_token_size + 64:
            return self._reject_too_large
        token = value.strip()
        if not token:
            return self._reject_missing
        if "," in token:
            # Servers join repeated headers with commas; no real token has one.
            tokens = {part.strip() for part in token.split(",")} - {""}
            if len(tokens) != 1:
                return self._reject_multiple if tokens else self._reject_missing
            token = tokens.pop()
        if len(token) > self.max_token_size:
            return self._reject_too_large
        if not (token.isascii() and token.isprintable()) or " " in token or "\t" in token:
            return self._reject_malformed
        return token

    def _flow(
        self,
        token_value: str | None,
        service_token_value: str | None,
        fiware_service: str | None,
        fiware_service_path: str | None,
    ) -> _Flow:
        delayed = self.delay_auth_decision
        service_identity: Identity | None = None
        service_status: str | None = None

        if service_token_value is not None:
            service_token = self._extract(service_token_value)
            if isinstance(service_token, Rejection):
                log.info("rejected request: bad service token header")
                if not delayed:
                    return Decision(None, self._reject_service, service_status="Invalid")
                service_status = "Invalid"
            else:
                try:
                    candidate = yield (service_token, False)
                except InvalidToken:
                    log.info("rejected service token %s", fingerprint(service_token))
                    if not delayed:
                        return Decision(None, self._reject_service, service_status="Invalid")
                    service_status = "Invalid"
                except IdentityServiceUnavailable as exc:
                    log.warning(
                        "could not validate service token %s: %s",
                        fingerprint(service_token),
                        _scrubbed(exc, service_token),
                    )
                    if not delayed:
                        return Decision(None, self._unavailable(), service_status="Invalid")
                    service_status = "Invalid"
                else:
                    if candidate.has_any_role(*self.service_token_roles):
                        service_identity, service_status = candidate, "Confirmed"
                    elif self.service_token_roles_required:
                        log.info(
                            "service token %s lacks the service roles %s",
                            fingerprint(service_token),
                            ",".join(self.service_token_roles),
                        )
                        if not delayed:
                            return Decision(None, self._reject_service, service_status="Invalid")
                        service_status = "Invalid"
                    else:
                        # Once at WARNING, then DEBUG: a client sending its own
                        # token as service token must not flood the log.
                        log.log(
                            logging.DEBUG if self._warned_service_roles else logging.WARNING,
                            "service token %s lacks the service roles %s; accepted because "
                            "service_token_roles_required is off (repeats are logged at DEBUG)",
                            fingerprint(service_token),
                            ",".join(self.service_token_roles),
                        )
                        self._warned_service_roles = True
                        service_identity, service_status = candidate, "Confirmed"

        token = self._extract(token_value)
        if isinstance(token, Rejection):
            rejection = token
            log.debug("rejected request: %s", rejection.reason)
            return self._invalid(rejection, delayed, service_identity, service_status)
        try:
            # A confirmed service token lets an expired user token through,
            # as Keystone's composite authentication does (allow_expired).
            identity = yield (token, service_identity is not None)
        except InvalidToken as exc:
            log.info("rejected token %s: %s", fingerprint(token), _scrubbed(exc, token))
            return self._invalid(self._reject_invalid, delayed, service_identity, service_status)
        except IdentityServiceUnavailable as exc:
            log.warning(
                "could not validate token %s: %s", fingerprint(token), _scrubbed(exc, token)
            )
            if delayed:
                return Decision(
                    None,
                    None,
                    status="Invalid",
                    service_identity=service_identity,
                    service_status=service_status,
                )
            return Decision(None, self._unavailable())

        if self.fiware_service_scope:
            try:
                self._check_fiware(identity, fiware_service, fiware_service_path)
            except ScopeMismatch as exc:
                log.info("rejected token %s: %s", fingerprint(token), _scrubbed(exc, token))
                return self._invalid(
                    self._scope_mismatch(str(exc)), delayed, service_identity, service_status
                )
        return Decision(identity, service_identity=service_identity, service_status=service_status)

    def _invalid(
        self,
        rejection: Rejection,
        delayed: bool,
        service_identity: Identity | None,
        service_status: str | None,
    ) -> Decision:
        if delayed:
            if service_status is None:
                return self._delayed_invalid
            return Decision(
                None,
                None,
                status="Invalid",
                service_identity=service_identity,
                service_status=service_status,
            )
        if rejection is self._reject_missing and service_status is None:
            return self._decision_missing
        if rejection is self._reject_invalid and service_status is None:
            return self._decision_invalid
        return Decision(None, rejection, service_status=service_status)

    @staticmethod
    def _check_fiware(identity: Identity, service: str | None, service_path: str | None) -> None:
        """FIWARE multi-tenancy: Fiware-Service = domain, Fiware-ServicePath = project."""
        if service is None or not service.strip():
            raise ScopeMismatch("Fiware-Service header is required")
        service = service.strip()
        path = (service_path or "/").strip() or "/"
        domain = (
            identity.domain_name if identity.scope == "domain" else identity.project_domain_name
        )
        if domain is None or service.lower() != domain.lower():
            raise ScopeMismatch("Fiware-Service does not match the token's domain")
        if path == "/":
            if identity.scope != "domain":
                raise ScopeMismatch("Fiware-ServicePath '/' needs a domain-scoped token")
        elif identity.scope != "project" or path != identity.project_name:
            raise ScopeMismatch("Fiware-ServicePath does not match the token's project")

    # -- lifecycle and observability --------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: cache hits/misses/negative hits/coalesced waits, circuit state."""
        out: dict[str, Any] = dict(self.cache.stats.as_dict())
        out["cached_tokens"] = len(self.cache)
        guarded = self.cache.validator
        if isinstance(guarded, GuardedValidator):
            out.update({f"validations_{k}": v for k, v in guarded.stats.as_dict().items()})
            out["validations_in_flight"] = guarded.in_flight
        shared_stats = getattr(self.cache.shared, "stats", None)
        if shared_stats is not None and hasattr(shared_stats, "as_dict"):
            out.update({f"shared_{k}": v for k, v in shared_stats.as_dict().items()})
        if self.breaker is not None:
            out["circuit_state"] = self.breaker.state
        return out

    def close(self) -> None:
        """Close the validator's blocking resources."""
        self.cache.close()

    async def aclose(self) -> None:
        """Close the validator's async resources (called on ASGI lifespan shutdown)."""
        await self.cache.aclose()
