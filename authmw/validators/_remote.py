"""What every validator that talks to a remote service does the same way.

:class:`RemoteService` owns the HTTP clients (one pooled blocking client,
one async client per event loop), their options (timeouts, TLS, limits,
retries) and the limits on answers, and drives sans-I/O flows with them
(:meth:`~RemoteService._drive`, :meth:`~RemoteService._adrive`); validators
that only fetch keys (:class:`~authmw.JWTValidator`) use it as it is. :class:`RemoteValidator`
adds the service identity's token, error mapping and logging (token
fingerprints only). It runs one sans-I/O validation flow, :meth:`~RemoteValidator._flow`,
from the thin :meth:`~RemoteValidator.validate` and :meth:`~RemoteValidator.avalidate`
drivers. A concrete validator supplies only its own sans-I/O parts: the token
check, the request and the meaning of the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Collection, Generator, Mapping
from typing import Any, ClassVar, TypeVar

import httpx

from .. import _checks, _fork, _telemetry
from .._hashing import fingerprint
from ..client._base import MALFORMED_ANSWER, AuthenticationFailed, StaticToken, TokenAuth
from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import Identity

__all__ = [
    "DEFAULT_TIMEOUT",
    "HTTP_OPTIONS",
    "REQUEST_REFUSED_STATUSES",
    "RemoteValidator",
    "ServiceTokenRejected",
    "answer_error",
    "check_subject_token",
    "given_service_auth",
    "http_options",
    "token_answer",
]

DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
"""3 s to connect, 5 s for each read, write and pool wait."""

# Connections dropped after the request may have left: only an idempotent
# request may be sent again.
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_IDEMPOTENT = frozenset({"GET", "HEAD"})

_V = TypeVar("_V", bound="RemoteService")
_R = TypeVar("_R")

# A step of the validation flow: the service identity whose token is needed,
# or a request to send.
_Step = TokenAuth | httpx.Request


# -- the subject token and the service's credentials ------------------------------------


class ServiceTokenRejected(Exception):
    """The service refused *our* credentials (401/403): re-authenticate, then give up."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"the service refused our credentials ({status_code})")
        self.status_code = status_code


REQUEST_REFUSED_STATUSES = frozenset({400, 413, 414, 431})
"""The request refused for its form: malformed (400), too large (413, 414, 431).

Between two validation requests only the user's token differs, so these
answers are about the token, whoever gave them (often the HTTP server in
front of the service: gunicorn answers 431 to a header over 8190 bytes, 414
to a request line over 4094). Counted as outages they would let anyone open
the circuit breaker with oversize tokens.
"""


def answer_error(
    status_code: int, body: bytes, service: str, *, invalid: Collection[int] = (404,)
) -> Exception:
    """The error a non-2xx validation answer means (for the caller to raise).

    :data:`REQUEST_REFUSED_STATUSES` and ``invalid`` (the service's "no such
    token") -> :class:`InvalidToken`, except a 413 ``overLimit`` fault (the
    OpenStack/Rackspace rate limit); 401/403 -> :class:`ServiceTokenRejected`;
    anything else (5xx, 429, redirects...) -> :class:`IdentityServiceUnavailable`.
    """
    if status_code == 413 and _over_limit(body):
        return IdentityServiceUnavailable(f"{service} is rate limiting us (413 overLimit)")
    if status_code in invalid or status_code in REQUEST_REFUSED_STATUSES:
        return InvalidToken(f"{service} refused the token ({status_code})")
    if status_code in (401, 403):
        return ServiceTokenRejected(status_code)
    return IdentityServiceUnavailable(f"{service} answered {status_code} to a token validation")


def token_answer(
    status_code: int,
    body: bytes,
    service: str,
    *,
    valid: Collection[int],
    identity_of: Callable[[Any], Identity],
    now: float,
    leeway: float,
    allow_expired: bool,
) -> Identity:
    """The identity in a Keystone-style validation answer (v3, v2.0).

    A ``valid`` status -> ``identity_of(<the decoded JSON body>)``, unless the
    token expired more than ``leeway`` seconds before ``now`` (:class:`InvalidToken`,
    unless ``allow_expired``); a body it cannot map -> :class:`IdentityServiceUnavailable`.
    Any other status raises the error :func:`answer_error` gives.
    """
    if status_code not in valid:
        raise answer_error(status_code, body, service)
    try:
        identity = identity_of(json.loads(body))
    except MALFORMED_ANSWER as exc:
        raise IdentityServiceUnavailable(
            f"malformed token body from {service} ({type(exc).__name__})"
        ) from None
    if not allow_expired and identity.is_expired(now, leeway):
        raise InvalidToken("token expired")
    return identity


def _over_limit(body: bytes) -> bool:
    """Whether ``body`` is an ``{"overLimit": ...}`` fault (rate limit, not size)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, Mapping) and "overLimit" in data


def check_subject_token(token: str) -> None:
    """Reject, without asking the service, what cannot go in a header as a token.

    Non-empty printable ASCII without spaces. No size limit: the middleware's
    ``max_token_size`` is the one limit, and a service refusing a token for its
    size is an :class:`InvalidToken` (see :data:`REQUEST_REFUSED_STATUSES`).
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("empty token")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise InvalidToken("token has characters no token has")


# -- option checks ------------------------------------------------------------------------


def _number(option: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ConfigurationError(option, f"must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _timeout(timeout: float | httpx.Timeout | None, connect_timeout: float | None) -> httpx.Timeout:
    if timeout is None:
        result = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        if None in (timeout.connect, timeout.read, timeout.write, timeout.pool):
            raise ConfigurationError("timeout", "every part of the timeout must be finite")
        result = timeout
    else:
        seconds = _number("timeout", timeout)
        if seconds <= 0:
            raise ConfigurationError("timeout", f"must be > 0, got {timeout!r}")
        result = httpx.Timeout(seconds, connect=min(seconds, DEFAULT_TIMEOUT.connect or seconds))
    if connect_timeout is not None:
        seconds = _number("http_connect_timeout", connect_timeout)
        if seconds <= 0:
            raise ConfigurationError(
                "http_connect_timeout", f"must be > 0, got {connect_timeout!r}"
            )
        result = httpx.Timeout(
            connect=seconds, read=result.read, write=result.write, pool=result.pool
        )
    return result


def _ssl_context(
    cafile: str | None, certfile: str | None, keyfile: str | None, insecure: bool
) -> ssl.SSLContext | bool:
    if insecure:
        if cafile:
            raise ConfigurationError("insecure", "conflicts with cafile")
        return False
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError("cafile", f"cannot load {cafile!r}: {exc}") from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError("certfile", f"cannot load {certfile!r}: {exc}") from None
    elif keyfile:
        raise ConfigurationError("keyfile", "needs certfile")
    return context


def given_service_auth(auth: TokenAuth | None, credentials: Mapping[str, Any]) -> TokenAuth | None:
    """The service identity given whole, as ``auth`` or ``static_token``, else ``None``.

    ``credentials`` are the validator's other identity options (``None`` when
    not given); ``auth`` conflicts with any of them, ``static_token`` with the rest.
    """
    given = sorted(name for name, value in credentials.items() if value is not None)
    if auth is not None:
        if not isinstance(auth, TokenAuth):
            raise ConfigurationError("auth", f"must be an authmw.client.TokenAuth, got {auth!r}")
        if given:
            raise ConfigurationError("auth", f"conflicts with {given[0]}")
        return auth
    static = credentials.get("static_token")
    if static is None:
        return None
    others = [name for name in given if name != "static_token"]
    if others:
        raise ConfigurationError("static_token", f"conflicts with {others[0]}")
    return StaticToken(static)


HTTP_OPTIONS = (
    "timeout",
    "http_connect_timeout",
    "http_request_max_retries",
    "cafile",
    "certfile",
    "keyfile",
    "insecure",
    "max_connections",
    "transport",
    "async_transport",
)
"""The keyword arguments of :class:`RemoteService` (HTTP, TLS, limits, retries)."""


def http_options(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`HTTP_OPTIONS` among a constructor's ``arguments``, to pass on.

    Each validator lists these options in its own signature (with its own
    defaults) and hands them to :class:`RemoteService` as
    ``**http_options(locals())``.
    """
    return {name: arguments[name] for name in HTTP_OPTIONS}


# -- retries --------------------------------------------------------------------------------


def _refused(exc: BaseException | None) -> bool:
    """Whether a failed connect was refused by the server (not DNS, TLS, unreachable...)."""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError):
            return True
        group = getattr(exc, "exceptions", None)  # anyio: one error per address tried
        if isinstance(group, tuple) and any(_refused(e) for e in group):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retryable(request: httpx.Request, exc: BaseException) -> bool:
    """Whether another try may help: a refused connection, or a dropped idempotent request.

    Never a timeout (another try would multiply the wait), nor a connect
    failure that would fail the same way again (DNS, TLS).
    """
    if isinstance(exc, httpx.ConnectError):
        return _refused(exc)
    return isinstance(exc, _DROPPED) and request.method in _IDEMPOTENT


def _backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based): 0, 0.05, 0.1, 0.2..."""
    return 0.0 if attempt <= 1 else 0.05 * 2 ** (attempt - 2)


class _AnswerBudget:
    """Limits on one answer: its size (decoded) and the time to receive it.

    httpx's read timeout bounds each read, not the whole body: a server that
    trickles a byte at a time, or never stops sending, would hold a worker
    for ever. Either limit exceeded -> :class:`IdentityServiceUnavailable`.
    """

    __slots__ = ("chunks", "deadline", "limit", "size")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.size = 0
        self.chunks: list[bytes] = []

    def check_length(self, response: httpx.Response) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise IdentityServiceUnavailable(f"answer of {declared} bytes is too large")

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise IdentityServiceUnavailable(f"answer larger than {self.limit} bytes")
        if time.monotonic() > self.deadline:
            raise IdentityServiceUnavailable("answer took too long to arrive")
        self.chunks.append(chunk)

    def body(self) -> bytes:
        return b"".join(self.chunks)


# -- HTTP to a remote service ----------------------------------------------------------------


class RemoteService:
    """HTTP to one remote service, with the limits every request of authmw's gets.

    One pooled :class:`httpx.Client`, and one :class:`httpx.AsyncClient` made
    in each running event loop (a client cannot be used from another loop);
    no redirects; timeouts that must be finite; answers limited in size
    (:attr:`max_answer_bytes`) and in the time to receive them; and
    ``http_request_max_retries`` extra tries of a request whose connection was
    refused, or dropped if the request is a GET/HEAD (timeouts are not
    retried). A failure to get an answer is :class:`IdentityServiceUnavailable`.
    Used by the validators that ask a service about each token
    (:class:`RemoteValidator`) and by those that only fetch keys.
    """

    #: How messages name the remote side ("Keystone", "the identity service").
    service: ClassVar[str] = "the identity service"
    _log: ClassVar[logging.Logger] = logging.getLogger("authmw.validators")
    #: Largest answer read (decoded bytes); Keystone's biggest, with a catalog, are far smaller.
    max_answer_bytes: ClassVar[int] = 4 * 1024 * 1024

    def __init__(
        self,
        *,
        timeout: float | httpx.Timeout | None,
        http_connect_timeout: float | None,
        http_request_max_retries: int,
        cafile: str | None,
        certfile: str | None,
        keyfile: str | None,
        insecure: bool,
        max_connections: int,
        transport: httpx.BaseTransport | None,
        async_transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.timeout = _timeout(timeout, http_connect_timeout)
        # The whole answer must arrive within connect + read timeout.
        self._answer_seconds = (self.timeout.connect or 0.0) + (self.timeout.read or 0.0) or 30.0
        self.max_retries = _checks.integer(
            "http_request_max_retries", http_request_max_retries, 0, 10
        )
        connections = _checks.integer("max_connections", max_connections, 1)
        self._limits = httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections
        )
        self._verify = _ssl_context(cafile, certfile, keyfile, bool(insecure))
        self._transport = transport
        if async_transport is None and isinstance(transport, httpx.AsyncBaseTransport):
            async_transport = transport  # e.g. one httpx.MockTransport for both
        self._async_transport = async_transport
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()
        _fork.reset_after_fork(self)

    # -- clients ------------------------------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child: a new lock, and new clients on first use. The parent's are
        forgotten, not closed (closing could end the connections the parent still
        uses). A transport passed in is kept: its connections are the caller's to manage."""
        self._lock = threading.Lock()
        self._client = None
        self._async_clients = weakref.WeakKeyDictionary()

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                transport = self._transport or httpx.HTTPTransport(
                    verify=self._verify, limits=self._limits
                )
                self._client = httpx.Client(
                    transport=transport, timeout=self.timeout, follow_redirects=False
                )
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                # Entries go away with their loop.
                transport = self._async_transport or httpx.AsyncHTTPTransport(
                    verify=self._verify, limits=self._limits
                )
                client = httpx.AsyncClient(
                    transport=transport, timeout=self.timeout, follow_redirects=False
                )
                self._async_clients[loop] = client
            return client

    def close(self) -> None:
        """Close the blocking client (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's async client, and the blocking one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self: _V) -> _V:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _V) -> _V:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- driving sans-I/O flows -----------------------------------------------------------------
    def _drive(self, flow: Generator[object, Any, _R]) -> _R:
        """Run a sans-I/O flow with the blocking client: each step it yields is done by
        :meth:`_perform` and the result sent back; a step that fails with
        :class:`IdentityServiceUnavailable` is thrown back into the flow instead."""
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.send(reply) if error is None else flow.throw(error)
                except StopIteration as done:
                    result: _R = done.value
                    return result
                reply = error = None
                try:
                    reply = self._perform(step)
                except IdentityServiceUnavailable as exc:
                    error = exc
        finally:
            flow.close()

    async def _adrive(self, flow: Generator[object, Any, _R]) -> _R:
        """Async form of :meth:`_drive`, with :meth:`_aperform`."""
        reply: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.send(reply) if error is None else flow.throw(error)
                except StopIteration as done:
                    result: _R = done.value
                    return result
                reply = error = None
                try:
                    reply = await self._aperform(step)
                except IdentityServiceUnavailable as exc:
                    error = exc
        finally:
            flow.close()

    def _perform(self, step: object) -> Any:
        """One step of a flow with the blocking client: a request -> ``(status, body)``."""
        if not isinstance(step, httpx.Request):
            raise TypeError(f"not a step of a flow: {step!r}")
        return self._send(self._sync_client(), step)

    async def _aperform(self, step: object) -> Any:
        """Async form of :meth:`_perform`."""
        if not isinstance(step, httpx.Request):
            raise TypeError(f"not a step of a flow: {step!r}")
        return await self._asend(self._async_client(), step)

    # -- sending --------------------------------------------------------------------------------
    def _send(self, client: httpx.Client, request: httpx.Request) -> tuple[int, bytes]:
        attempt = 0
        while True:
            budget = _AnswerBudget(self.max_answer_bytes, self._answer_seconds)
            try:
                with _telemetry.outgoing(request.method, str(request.url), request.headers):
                    response = client.send(request, auth=None, stream=True)
                    try:
                        budget.check_length(response)
                        for chunk in response.iter_bytes():
                            budget.add(chunk)
                    finally:
                        response.close()
            except (httpx.HTTPError, OSError) as exc:
                attempt += 1
                time.sleep(self._retry_delay(request, exc, attempt))
                continue
            return response.status_code, budget.body()

    async def _asend(self, client: httpx.AsyncClient, request: httpx.Request) -> tuple[int, bytes]:
        attempt = 0
        while True:
            budget = _AnswerBudget(self.max_answer_bytes, self._answer_seconds)
            try:
                with _telemetry.outgoing(request.method, str(request.url), request.headers):
                    response = await client.send(request, auth=None, stream=True)
                    try:
                        budget.check_length(response)
                        async for chunk in response.aiter_bytes():
                            budget.add(chunk)
                    finally:
                        await response.aclose()
            except (httpx.HTTPError, OSError) as exc:
                attempt += 1
                await asyncio.sleep(self._retry_delay(request, exc, attempt))
                continue
            return response.status_code, budget.body()

    def _retry_delay(self, request: httpx.Request, exc: BaseException, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt``, or the error to give up with."""
        # Only the exception type is reported: its text may hold the URL, and a
        # v2.0 URL holds the user's token.
        name = type(exc).__name__
        if attempt <= self.max_retries and _retryable(request, exc):
            self._log.info("connection to %s failed (%s); retrying", self.service, name)
            return _backoff(attempt)
        self._log.warning("%s unreachable: %s", self.service, name)
        raise IdentityServiceUnavailable(f"{self.service} unreachable ({name})") from None


# -- the validator --------------------------------------------------------------------------


class RemoteValidator(RemoteService):
    """Base of the validators that ask a remote service about each token.

    Subclasses set :attr:`auth` (the service identity, or ``None``) and the
    wording class attributes, and implement :meth:`_build_request` and
    :meth:`_parse_answer` (and :meth:`_check_token` if their tokens have more
    rules), all without I/O.

    HTTP as :class:`RemoteService`; the service login is tried once per call.
    """

    #: The service identity whose token goes with each request (``None``: none).
    auth: TokenAuth | None
    #: What the remote side refuses when it refuses our service token.
    credentials_name: ClassVar[str] = "the service identity"
    #: Appended to the error logged when a fresh service token is refused.
    refusal_hint: ClassVar[str] = ""

    def __init__(self, *, expiry_leeway: float, clock: Callable[[], float], **http: Any) -> None:
        """``http``: the :data:`HTTP_OPTIONS` of :class:`RemoteService`."""
        self.expiry_leeway = _number("expiry_leeway", expiry_leeway)
        super().__init__(**http)
        self._clock = clock

    # -- what a subclass supplies (no I/O) -------------------------------------------------
    def _check_token(self, token: str) -> None:
        """Reject, before any I/O, what cannot be a token."""
        check_subject_token(token)

    def _build_request(
        self, token: str, credential: str | None, allow_expired: bool
    ) -> httpx.Request:
        """The request asking about ``token``; ``credential`` is the service token, if any."""
        raise NotImplementedError

    def _parse_answer(self, status: int, body: bytes, token: str, allow_expired: bool) -> Identity:
        """The identity for an answer.

        Raises :class:`InvalidToken`, :class:`ServiceTokenRejected` or
        :class:`IdentityServiceUnavailable`.
        """
        raise NotImplementedError

    # -- validation ---------------------------------------------------------------------------
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """The identity behind ``token``; see the class docstring for errors."""
        return self.run(self._flow(token, allow_expired))

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Async form of :meth:`validate`."""
        return await self.arun(self._flow(token, allow_expired))

    def run(self, flow: Generator[_Step, Any, _R]) -> _R:
        """Drive a sans-I/O flow with the blocking client: its steps are the service
        identity (send back its token) and requests (send back ``(status, body)``)."""
        try:
            return self._drive(flow)
        except AuthenticationFailed as exc:
            raise self._login_refused(exc) from None

    async def arun(self, flow: Generator[_Step, Any, _R]) -> _R:
        """Async form of :meth:`run`."""
        try:
            return await self._adrive(flow)
        except AuthenticationFailed as exc:
            raise self._login_refused(exc) from None

    def _perform(self, step: object) -> Any:
        if isinstance(step, TokenAuth):
            return step.get_token(self._sync_client())
        return super()._perform(step)

    async def _aperform(self, step: object) -> Any:
        if isinstance(step, TokenAuth):
            return await step.aget_token(self._async_client())
        return await super()._aperform(step)

    def _flow(self, token: str, allow_expired: bool) -> Generator[_Step, Any, Identity]:
        """One validation without I/O.

        Yields :attr:`auth` when its token is needed (send back the token) and
        requests to send (send back ``(status, body)``). A refused service
        token is dropped and a fresh one tried once.
        """
        self._check_token(token)
        return (yield from self._ask(token, allow_expired, self._build_request, self._parse_answer))

    def _ask(
        self,
        token: str,
        allow_expired: bool,
        build: Callable[[str, str | None, bool], httpx.Request],
        parse: Callable[[int, bytes, str, bool], Identity],
    ) -> Generator[_Step, Any, Identity]:
        """One question about ``token`` (``build`` the request, ``parse`` the answer),
        with a fresh service token once if the first one is refused."""
        for attempt in (1, 2):
            credential: str | None = None
            if self.auth is not None:
                credential = yield self.auth
            status, body = yield build(token, credential, allow_expired)
            try:
                return self._interpret(parse, status, body, token, allow_expired)
            except ServiceTokenRejected as exc:
                self._on_rejected(credential, exc, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _interpret(
        self,
        parse: Callable[[int, bytes, str, bool], Identity],
        status: int,
        body: bytes,
        token: str,
        allow_expired: bool,
    ) -> Identity:
        try:
            return parse(status, body, token, allow_expired)
        except InvalidToken as exc:
            self._log.debug("token %s rejected: %s", fingerprint(token), exc)
            raise
        except IdentityServiceUnavailable as exc:
            self._log.warning("cannot validate token %s: %s", fingerprint(token), exc)
            raise

    def _on_rejected(self, credential: str | None, exc: ServiceTokenRejected, attempt: int) -> None:
        if self.auth is not None and credential is not None:
            self.auth.invalidate(credential)
            if attempt == 1:
                self._log.warning(
                    "%s refused the service token %s (%d); authenticating again",
                    self.service,
                    fingerprint(credential),
                    exc.status_code,
                )
                return
        self._log.error(
            "%s refused %s (%d)%s",
            self.service,
            self.credentials_name,
            exc.status_code,
            self.refusal_hint,
        )
        raise IdentityServiceUnavailable(
            f"{self.service} refused {self.credentials_name} ({exc.status_code})"
        ) from None

    def _login_refused(self, exc: AuthenticationFailed) -> IdentityServiceUnavailable:
        self._log.error("could not obtain a service token for %s: %s", self.service, exc)
        return IdentityServiceUnavailable(f"service identity refused: {exc}")
