"""The decision: credentials in, :class:`Decision` out.

:class:`AuthCore` holds a configuration (options, the validator with its
cache and circuit breaker, the answers it sends) and decides for one
request's credentials. It knows no framework and no protocol: applying a
decision to a request is the job of :mod:`authmw.pipeline`. One
generator-based flow holds the logic; :meth:`AuthCore.authenticate` and
:meth:`AuthCore.authenticate_async` only drive it, blocking or awaiting the
validator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _checks
from . import headers as _headers
from ._hashing import fingerprint
from ._stack import build_stack
from .cache import SharedCache

if TYPE_CHECKING:
    from .audit import AuditRecord
    from .tracing import Tracing
from ._clients import ClientAddresses
from .decision import Answers, Decision, check_fiware
from .errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken, ScopeMismatch
from .identity import Identity
from .responses import Rejection, Responses, error_body
from .routes import PublicRoutes
from .sources import Source, parse_sources
from .throttle import Throttle
from .validators.base import Validator, validate_async

__all__ = ["AuthCore", "Decision", "Rejection", "error_body"]

log = logging.getLogger("authmw")


class ValidationRequest(NamedTuple):
    """What the flow asks its driver to validate."""

    token: str
    allow_expired: bool


_Flow = Generator[ValidationRequest, Identity, Decision]
_Step = Generator[
    ValidationRequest, Identity, "tuple[Identity | None, str | None, Decision | None]"
]


def _scrubbed(exc: BaseException, token: str) -> str:
    """``str(exc)`` without the token: validators quote it (Keystone's 404 does)."""
    message = str(exc)
    if token and token in message:
        message = message.replace(token, f"<token {fingerprint(token)}>")
    return message


class AuthCore:
    """One configuration and every decision it makes.

    ``validator`` is wrapped in a :class:`~authmw.resilience.GuardedValidator`
    (circuit breaker, concurrency bound) and a :class:`~authmw.cache.CachedValidator`
    (LRU + negative cache + single-flight); a layer already built is used as
    it is, and options meant for it are refused. Options are described in
    ``docs/middleware.md``.
    """

    @_checks.checked_keywords
    def __init__(
        self,
        validator: Validator,
        *,
        token_header: str = _headers.AUTH_TOKEN,
        token_sources: Iterable[str] | None = None,
        hide_credentials: bool = False,
        service_token_header: str = _headers.SERVICE_TOKEN,
        delay_auth_decision: bool = False,
        www_authenticate_uri: str | None = None,
        realm: str = "authmw",
        public_routes: Iterable[str] = (),
        max_token_size: int = 4096,
        cache_time: float = 300.0,
        negative_cache_time: float = 10.0,
        cache_size: int = 10_000,
        shared_cache: SharedCache | None = None,
        refresh_after: float | None = None,
        stale_if_error: float = 0.0,
        trusted_proxies: Iterable[str] = (),
        on_decision: Callable[[AuditRecord], Any] | None = None,
        throttle: Throttle | None = None,
        tracing: Tracing | None = None,
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
        self._read_credentials(token_header, token_sources, hide_credentials, max_token_size)
        self.service_token_header = self._credential_header(
            "service_token_header", service_token_header
        )
        self.service_token_roles = _checks.names("service_token_roles", service_token_roles)
        self.service_token_roles_required = _checks.flag(
            "service_token_roles_required", service_token_roles_required
        )
        self.delay_auth_decision = _checks.flag("delay_auth_decision", delay_auth_decision)
        self.fiware_service_scope = _checks.flag("fiware_service_scope", fiware_service_scope)
        self._read_observers(trusted_proxies, on_decision, throttle, tracing)
        self.public_routes = PublicRoutes(public_routes)
        self.retry_after = _checks.number("retry_after", retry_after)
        self.timer = _checks.function("timer", timer)
        self._warned_service_roles = False
        # httpcore logs response headers at DEBUG and Keystone echoes the token
        # in X-Subject-Token: redact them whichever validator makes the calls.
        from .client._base import install_log_redaction

        install_log_redaction()

        self.validator = validator
        self.cache, self.guards = build_stack(
            validator,
            {
                "cache_time": _checks.number("cache_time", cache_time),
                "negative_cache_time": _checks.number("negative_cache_time", negative_cache_time),
                "cache_size": _checks.integer("cache_size", cache_size, 1),
                "shared_cache": shared_cache,
                "refresh_after": refresh_after,
                "stale_if_error": stale_if_error,
                "failure_threshold": _checks.integer("failure_threshold", failure_threshold, 1),
                "circuit_cooldown": _checks.number("circuit_cooldown", circuit_cooldown),
                "max_concurrency": _checks.integer("max_concurrency", max_concurrency, 1),
                "acquire_timeout": _checks.number("acquire_timeout", acquire_timeout),
            },
            timer,
        )
        #: The (first) guard and its breaker; a ChainValidator has one per member.
        self.guard = self.guards[0]
        self.breaker = self.guard.breaker
        if throttle is not None:
            throttle.share(shared_cache)
        self._build_answers(realm, www_authenticate_uri)

    def _read_credentials(
        self,
        token_header: str,
        token_sources: Iterable[str] | None,
        hide_credentials: bool,
        max_token_size: int,
    ) -> None:
        self.token_header = self._credential_header("token_header", token_header)
        if token_sources is None:
            self.sources: tuple[Source, ...] = (Source("header", self.token_header),)
        elif token_header != _headers.AUTH_TOKEN:
            raise ConfigurationError("token_header", "conflicts with token_sources: list it there")
        else:
            self.sources = parse_sources(token_sources)
        self.hide_credentials = _checks.flag("hide_credentials", hide_credentials)
        self.max_token_size = _checks.integer("max_token_size", max_token_size, 16)

    def _read_observers(
        self,
        trusted_proxies: Iterable[str],
        on_decision: Callable[[AuditRecord], Any] | None,
        throttle: Throttle | None,
        tracing: Tracing | None,
    ) -> None:
        self.clients = ClientAddresses(trusted_proxies)
        self.on_decision = (
            None if on_decision is None else _checks.function("on_decision", on_decision)
        )
        if throttle is not None and not isinstance(throttle, Throttle):
            raise ConfigurationError("throttle", f"must be an authmw.Throttle, got {throttle!r}")
        self.throttle = throttle
        if tracing is not None and not callable(getattr(tracing, "authentication", None)):
            raise ConfigurationError(
                "tracing", f"must be an authmw.tracing.Tracing, got {tracing!r}"
            )
        self.tracing = tracing

    def _build_answers(self, realm: str, www_authenticate_uri: str | None) -> None:
        """The prebuilt refusals, each with the challenge of the source it answers."""
        uri = None
        if www_authenticate_uri is not None:
            uri = _checks.header_text("www_authenticate_uri", www_authenticate_uri)
        realm = _checks.header_text("realm", realm)
        challenges = dict.fromkeys(
            source.challenge(realm, uri) for source in self.sources if not source.websocket_only
        )
        self.responses = Responses(", ".join(challenges), self._retry_seconds)
        self._missing = self.responses.unauthorized("Authentication required: no token in request.")
        self._decision_missing = Decision(None, self._missing)
        self._delayed_invalid = Decision(None, None, status="Invalid")
        self._answers = tuple(
            Answers(self.responses, source.challenge(realm, uri, "invalid_token"))
            for source in self.sources
        )
        keystone = Source("header", self.service_token_header).challenge(realm, uri)
        self._reject_service = self.responses.unauthorized(
            "Service token is invalid.", challenge=keystone
        )

    @staticmethod
    def _credential_header(option: str, name: Any) -> str:
        name = _checks.header_name(option, name)
        if _headers.is_stripped(name):
            raise ConfigurationError(option, f"{name} is an identity header authmw strips")
        return str(name)

    def _retry_seconds(self) -> float:
        return max(self.retry_after, *(guard.breaker.retry_after() for guard in self.guards))

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value of every 401."""
        return self.responses.challenge

    @classmethod
    def for_middleware(
        cls, validator: Validator | None, core: AuthCore | None, options: dict[str, Any]
    ) -> AuthCore:
        """The core an entry point uses: ``core`` as given, or one built from the options."""
        if core is None:
            if validator is None:
                raise ConfigurationError("validator", "a validator (or core=) is required")
            return cls(validator, **options)
        if validator is not None or options:
            raise ConfigurationError("core", "pass either core= or a validator and options")
        return core

    @classmethod
    def from_options(cls, validator: Validator, **options: Any) -> AuthCore:
        """Build a core from keyword options, refusing unknown names by name."""
        return cls(validator, **options)

    # -- entry points --------------------------------------------------------
    def is_public(
        self, method: str, path: str, raw_path: str | None = None, preflight: bool = False
    ) -> bool:
        """True if the allow-list lets this request skip authentication."""
        return self.public_routes.enabled and self.public_routes.match(
            method, path, raw_path, preflight
        )

    def authenticate(
        self,
        token_value: str | None,
        service_token_value: str | None = None,
        fiware_service: str | None = None,
        fiware_service_path: str | None = None,
        source: int = 0,
    ) -> Decision:
        """Decide for one request's raw header values, blocking on the validator when needed.

        ``source`` is the index in :attr:`sources` the token came from (its
        challenge goes with a 401).
        """
        if service_token_value is None and not self.fiware_service_scope:
            fast = self.cached(token_value, source)
            if fast is not None:
                return fast
        flow = self._flow(
            token_value, service_token_value, fiware_service, fiware_service_path, source
        )
        try:
            request = next(flow)
            while True:
                try:
                    identity = self.cache.validate(
                        request.token, allow_expired=request.allow_expired
                    )
                except Exception as exc:
                    request = flow.throw(self._known(exc, request.token))
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
        source: int = 0,
    ) -> Decision:
        """Decide for one request's raw header values, awaiting the validator when needed.

        ``source`` is the index in :attr:`sources` the token came from (its
        challenge goes with a 401).
        """
        if service_token_value is None and not self.fiware_service_scope:
            fast = self.cached(token_value, source)
            if fast is not None:
                return fast
        flow = self._flow(
            token_value, service_token_value, fiware_service, fiware_service_path, source
        )
        try:
            request = next(flow)
            while True:
                try:
                    identity = await validate_async(
                        self.cache, request.token, allow_expired=request.allow_expired
                    )
                except Exception as exc:
                    request = flow.throw(self._known(exc, request.token))
                else:
                    request = flow.send(identity)
        except StopIteration as stop:
            result: Decision = stop.value
            return result

    def cached(self, token_value: str | bytes | None, source: int = 0) -> Decision | None:
        """The decision for a token the in-process cache knows (accepted or rejected
        recently), without I/O; None otherwise (and for a missing or malformed token,
        which :meth:`authenticate` answers, also without I/O). ``token_value`` is the
        header value as sent: a str, or bytes (an ASGI header's, read as latin-1)."""
        if token_value is not None:
            if len(token_value) <= self.max_token_size:
                identity = self.cache.hit(token_value)  # the value as sent is a cached token
                if identity is not None:
                    decision: Decision | None = identity._decision
                    return decision if decision is not None else self.confirmed(identity)
            if not isinstance(token_value, str):
                token_value = token_value.decode("latin-1")
        answers = self._answers[source]
        token = self._extract(token_value, answers)
        if isinstance(token, Rejection):
            return None  # the flow logs and applies delayed mode
        try:
            identity = self.cache.lookup(token, count_miss=False)
        except InvalidToken:
            log.debug("rejected token %s (cached rejection)", fingerprint(token))
            return self._delayed_invalid if self.delay_auth_decision else answers.decision_invalid
        if identity is None:
            return None
        return self.confirmed(identity)

    @staticmethod
    def confirmed(identity: Identity) -> Decision:
        """The decision accepting ``identity`` alone (made once per identity)."""
        decision: Decision | None = identity._decision
        if decision is None:
            decision = Decision(identity)
            object.__setattr__(identity, "_decision", decision)
        return decision

    def _known(self, exc: Exception, token: str) -> Exception:
        if isinstance(exc, (InvalidToken, IdentityServiceUnavailable)):
            return exc
        # A validator bug must not become a 500 nor leak the token into the log.
        log.error(
            "validator %s failed unexpectedly: %s: %s",
            type(self.validator).__name__,
            type(exc).__name__,
            _scrubbed(exc, token),
        )
        return IdentityServiceUnavailable("validator error")

    def unauthorized(self, reason: str, source: int = 0) -> Rejection:
        """A 401 for a token from ``source``, with that source's challenge; ``reason``
        goes to the logs only."""
        return self.responses.unauthorized(reason, challenge=self._answers[source].challenge)

    # -- the decision --------------------------------------------------------
    def refuse(self, problem: str, source: int = 0) -> Decision:
        """The decision for a request whose credentials the pipeline found unusable:
        ``"multiple"`` (two different tokens) or ``"malformed"``."""
        answers = self._answers[source]
        rejection = answers.multiple if problem == "multiple" else answers.malformed
        log.debug("rejected request: %s", rejection.reason)
        return self._invalid(rejection, None, None)

    def _extract(self, value: str | None, answers: Answers) -> str | Rejection:
        """The token from a raw header value, or the reason there is none."""
        if value is None:
            return self._missing
        if len(value) > self.max_token_size + 64:
            return answers.too_large
        token = value.strip()
        if not token:
            return self._missing
        if "," in token:
            # Servers join repeated headers with commas; no real token has one.
            tokens = {part.strip() for part in token.split(",")} - {""}
            if len(tokens) != 1:
                return answers.multiple if tokens else self._missing
            token = tokens.pop()
        if len(token) > self.max_token_size:
            return answers.too_large
        if not (token.isascii() and token.isprintable()) or " " in token or "\t" in token:
            return answers.malformed
        return token

    def _flow(
        self,
        token_value: str | None,
        service_token_value: str | None,
        fiware_service: str | None,
        fiware_service_path: str | None,
        source: int,
    ) -> _Flow:
        service_identity: Identity | None = None
        service_status: str | None = None
        if service_token_value is not None:
            service_identity, service_status, refused = yield from self._service_step(
                service_token_value
            )
            if refused is not None:
                return refused
        return (
            yield from self._user_step(
                token_value,
                self._answers[source],
                service_identity,
                service_status,
                fiware_service,
                fiware_service_path,
            )
        )

    def _service_step(self, value: str) -> _Step:
        """Validate the service token: (identity, status, a refusal to answer or None)."""
        delayed = self.delay_auth_decision
        refusal = Decision(None, self._reject_service, service_status="Invalid")
        invalid = (None, "Invalid", None if delayed else refusal)
        token = self._extract(value, self._answers[0])
        if isinstance(token, Rejection):
            log.info("rejected request: bad service token header")
            return invalid
        try:
            candidate = yield ValidationRequest(token, False)
        except InvalidToken:
            log.info("rejected service token %s", fingerprint(token))
            return invalid
        except IdentityServiceUnavailable as exc:
            log.warning(
                "could not validate service token %s: %s",
                fingerprint(token),
                _scrubbed(exc, token),
            )
            unavailable = Decision(None, self.responses.unavailable(), service_status="Invalid")
            return None, "Invalid", None if delayed else unavailable
        if candidate.has_any_role(*self.service_token_roles):
            return candidate, "Confirmed", None
        roles = ",".join(self.service_token_roles)
        if self.service_token_roles_required:
            log.info("service token %s lacks the service roles %s", fingerprint(token), roles)
            return invalid
        # Once at WARNING, then DEBUG: a client sending its own token as
        # service token must not flood the log.
        log.log(
            logging.DEBUG if self._warned_service_roles else logging.WARNING,
            "service token %s lacks the service roles %s; accepted because "
            "service_token_roles_required is off (repeats are logged at DEBUG)",
            fingerprint(token),
            roles,
        )
        self._warned_service_roles = True
        return candidate, "Confirmed", None

    def _user_step(
        self,
        value: str | None,
        answers: Answers,
        service_identity: Identity | None,
        service_status: str | None,
        fiware_service: str | None,
        fiware_service_path: str | None,
    ) -> _Flow:
        delayed = self.delay_auth_decision
        token = self._extract(value, answers)
        if isinstance(token, Rejection):
            log.debug("rejected request: %s", token.reason)
            return self._invalid(token, service_identity, service_status, answers)
        try:
            # A confirmed service token lets an expired user token through,
            # as Keystone's composite authentication does (allow_expired).
            identity = yield ValidationRequest(token, service_identity is not None)
        except InvalidToken as exc:
            log.info("rejected token %s: %s", fingerprint(token), _scrubbed(exc, token))
            return self._invalid(answers.invalid, service_identity, service_status, answers)
        except IdentityServiceUnavailable as exc:
            log.warning(
                "could not validate token %s: %s", fingerprint(token), _scrubbed(exc, token)
            )
            if delayed:
                return Decision(
                    None,
                    status="Invalid",
                    service_identity=service_identity,
                    service_status=service_status,
                )
            return Decision(None, self.responses.unavailable())
        if self.fiware_service_scope:
            try:
                check_fiware(identity, fiware_service, fiware_service_path)
            except ScopeMismatch as exc:
                log.info("rejected token %s: %s", fingerprint(token), exc)
                return self._invalid(
                    self.responses.unauthorized(
                        str(exc), challenge=answers.invalid.header("WWW-Authenticate")
                    ),
                    service_identity,
                    service_status,
                )
        return Decision(identity, service_identity=service_identity, service_status=service_status)

    def _invalid(
        self,
        rejection: Rejection,
        service_identity: Identity | None,
        service_status: str | None,
        answers: Answers | None = None,
    ) -> Decision:
        if self.delay_auth_decision:
            if service_status is None:
                return self._delayed_invalid
            return Decision(
                None,
                status="Invalid",
                service_identity=service_identity,
                service_status=service_status,
            )
        if service_status is None:
            if rejection is self._missing:
                return self._decision_missing
            if answers is not None and rejection is answers.invalid:
                return answers.decision_invalid
        return Decision(None, rejection, service_status=service_status)

    # -- lifecycle and observability --------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: cache hits/misses/negative hits/coalesced waits, circuit state."""
        out: dict[str, Any] = dict(self.cache.stats.as_dict())
        out["cached_tokens"] = len(self.cache)
        for guard in self.guards:
            for name, value in guard.stats.as_dict().items():
                key = f"validations_{name}"
                out[key] = (
                    max(out.get(key, 0), value)
                    if name == "latency_max"
                    else out.get(key, 0) + value
                )
        out["validations_in_flight"] = sum(guard.in_flight for guard in self.guards)
        shared_stats = getattr(self.cache.shared, "stats", None)
        if shared_stats is not None and hasattr(shared_stats, "as_dict"):
            out.update({f"shared_{k}": v for k, v in shared_stats.as_dict().items()})
        states = [guard.breaker.state for guard in self.guards]
        out["circuit_state"] = next(
            (state for state in ("open", "half-open") if state in states), "closed"
        )
        return out

    def close(self) -> None:
        """Close the validator's blocking resources."""
        self.cache.close()

    async def aclose(self) -> None:
        """Close the validator's async resources (called on ASGI lifespan shutdown)."""
        await self.cache.aclose()
