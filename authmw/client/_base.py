"""Token acquisition shared by every identity service: one flow, driven by sync and async callers.

:class:`TokenAuth` is an :class:`httpx.Auth` that obtains a token, caches it,
puts it on every outgoing request, renews it shortly before it expires and
once more when a call comes back 401. Subclasses only say how to ask for a
token and how to read the answer.

Extension points (for subclasses):

``build_token_request() -> httpx.Request``
    The request that obtains a new token (absolute URL). Required unless
    :meth:`TokenAuth.token_flow` is overridden.
``parse_token_response(response) -> AcquiredToken``
    Read the token from a 2xx answer (body already read). Raise
    :class:`AuthenticationFailed` or :class:`IdentityServiceUnavailable`;
    ``KeyError``/``TypeError``/``ValueError`` become "malformed answer".
``raise_for_token_status(response)``
    Map a non-2xx answer to an exception (default: 401/403/other 4xx ->
    :class:`AuthenticationFailed`, 408/429/5xx -> :class:`IdentityServiceUnavailable`).
    Override to recognise service-specific errors (e.g. MFA required); call
    ``super()`` for the rest.
``token_flow()``
    Generator that yields requests and returns an :class:`AcquiredToken`:
    override for multi-step acquisitions, or for tokens that need no request
    (see :class:`StaticToken`).
``build_release_request(token) -> httpx.Request | None``
    Request that gives a token back (sent by :meth:`TokenAuth.release`).

Network errors while obtaining a token propagate as :mod:`httpx` exceptions
from ``client.send()`` (the auth flow cannot see them); :meth:`TokenAuth.get_token`
and :meth:`TokenAuth.aget_token` turn them into :class:`IdentityServiceUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from .. import _fork
from .._hashing import fingerprint
from .._redaction import install_log_redaction, redact
from ..errors import AuthError, ConfigurationError, IdentityServiceUnavailable

__all__ = [
    "MALFORMED_ANSWER",
    "AcquiredToken",
    "AuthenticationFailed",
    "StaticToken",
    "TokenAuth",
    "TokenFlow",
    "install_log_redaction",
    "parse_timestamp",
    "redact",
]

log = logging.getLogger("authmw.client")

TokenFlow = Generator[httpx.Request, httpx.Response, "AcquiredToken"]

MALFORMED_ANSWER: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,  # json.loads of deeply nested data
    OverflowError,  # dates and epochs out of range
    OSError,  # datetime.fromtimestamp of a huge epoch
)
"""What reading a hostile or broken answer can raise: each means "malformed", never a 500."""
"""A sans-I/O token acquisition: yields requests, receives responses, returns the token."""


class AuthenticationFailed(AuthError):
    """The identity service refused our credentials (wrong password, disabled user, bad scope).

    ``status_code`` is the HTTP status of the refusal (None if not from a response).
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class AcquiredToken:
    """A token obtained from an identity service.

    ``expires_at`` is aware UTC (None: unknown, kept until a call is refused).
    ``body`` is the decoded answer, for callers that want more than the token.
    """

    token: str = field(repr=False)
    expires_at: datetime | None = None
    body: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("AcquiredToken.token must be a non-empty string")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("AcquiredToken.expires_at must be timezone-aware")

    @property
    def fingerprint(self) -> str:
        """Short digest of the token, safe for logs."""
        return fingerprint(self.token)

    @property
    def expires_timestamp(self) -> float | None:
        """``expires_at`` as POSIX seconds."""
        return None if self.expires_at is None else self.expires_at.timestamp()

    def __repr__(self) -> str:
        return f"AcquiredToken(fingerprint={self.fingerprint!r}, expires_at={self.expires_at!r})"


_TS = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?\s*(Z|[+-]\d\d:?\d\d)?$",
    re.IGNORECASE,
)


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 timestamp as identity services write it, into aware UTC.

    Accepts ``Z`` or ``+hh:mm`` offsets and any number of fraction digits; no
    offset means UTC (Keystone and Rackspace always mean UTC). Raises ``ValueError``.
    """
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string, got {type(value).__name__}")
    m = _TS.match(value.strip())
    if m is None:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if offset and offset.upper() != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    result = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tz
    )
    return result.astimezone(timezone.utc)


# -- option checks shared by the auth classes and validators ------------------------------


def text_option(option: str, value: Any) -> str | None:
    """``value`` stripped (``None`` if not given); anything but a non-empty string is an error."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(option, f"must be a non-empty string, got {value!r}")
    return value.strip()


def http_url(value: Any, option: str, missing: str, *, query: bool = False) -> httpx.URL:
    """``value`` as an absolute http(s) URL without a fragment (nor a query, unless ``query``).

    ``missing`` is the message when ``value`` is not a non-empty string.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(option, missing)
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL as exc:
        raise ConfigurationError(option, f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(option, f"must be an http(s) URL, got {value!r}")
    if query and url.fragment:
        raise ConfigurationError(option, "must not have a fragment")
    if not query and (url.query or url.fragment):
        raise ConfigurationError(option, "must not have a query string or fragment")
    return url


def versioned_url(
    value: Any, option: str, missing: str, version: str, *, other: str, other_hint: str
) -> str:
    """An identity API base URL ending in ``version`` (added if absent, no trailing slash).

    A URL ending in the ``other`` version is an error saying ``other_hint``.
    """
    url = http_url(value, option, missing)
    path = url.path.rstrip("/")
    if path.endswith(other):
        raise ConfigurationError(option, other_hint)
    if not path.endswith(version):
        path += version
    return str(url.copy_with(path=path))


@dataclass(frozen=True)
class _Held:
    token: AcquiredToken
    header_value: str
    renew_at: float  # POSIX seconds; inf when the token has no known expiry


class TokenAuth(httpx.Auth):
    """Base :class:`httpx.Auth` that acquires, caches and renews a token.

    ``header_name``/``header_scheme``: the token goes out as
    ``<header_name>: [<scheme> ]<token>`` (default ``X-Auth-Token: <token>``).
    ``renew_margin``: seconds before ``expires_at`` at which a new token is
    fetched (capped at half the token's lifetime). ``retry_on_401``: on a 401,
    renew once and resend. ``clock`` returns POSIX seconds (inject for tests).

    Thread- and task-safe: one renewal at a time (a :class:`threading.Lock`
    for blocking clients, an :class:`asyncio.Lock` per event loop for async
    ones); callers that need a token wait for the renewal in progress.
    """

    def __init__(
        self,
        *,
        header_name: str = "X-Auth-Token",
        header_scheme: str | None = None,
        renew_margin: float = 60.0,
        retry_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(header_name, str) or not header_name.strip():
            raise ConfigurationError("header_name", "must be a non-empty header name")
        if header_scheme is not None and (
            not isinstance(header_scheme, str) or " " in header_scheme
        ):
            raise ConfigurationError("header_scheme", f"must be one word, got {header_scheme!r}")
        if isinstance(renew_margin, bool) or not isinstance(renew_margin, (int, float)):
            raise ConfigurationError("renew_margin", f"must be a number, got {renew_margin!r}")
        if renew_margin < 0:
            raise ConfigurationError("renew_margin", f"must be >= 0, got {renew_margin!r}")
        self.header_name = header_name.strip()
        self.header_scheme = header_scheme or None
        self.renew_margin = float(renew_margin)
        self.retry_on_401 = bool(retry_on_401)
        self._clock = clock
        self._held: _Held | None = None
        self._sync_lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._async_locks_guard = threading.Lock()
        _fork.reset_after_fork(self)
        install_log_redaction()

    def _after_fork(self) -> None:
        # In a forked child (see authmw._fork): a parent thread may have been getting a
        # token, holding the lock; the token already held stays good.
        self._sync_lock = threading.Lock()
        self._async_locks = weakref.WeakKeyDictionary()
        self._async_locks_guard = threading.Lock()

    # -- extension points --------------------------------------------------
    def build_token_request(self) -> httpx.Request:
        """The request that obtains a new token. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_token_request()")

    def parse_token_response(self, response: httpx.Response) -> AcquiredToken:
        """Read the token from a successful answer. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_token_response()")

    def raise_for_token_status(self, response: httpx.Response) -> None:
        """Raise for a token answer that is not 2xx."""
        status = response.status_code
        if 200 <= status < 300:
            return
        what = f"{response.request.method} {response.request.url.copy_with(query=None)}"
        if status in (408, 429) or status >= 500:
            raise IdentityServiceUnavailable(f"identity service answered {status} to {what}")
        raise AuthenticationFailed(
            f"identity service refused the credentials: {status} from {what}",
            status_code=status,
        )

    def token_flow(self) -> TokenFlow:
        """Obtain a new token: yields requests, returns the :class:`AcquiredToken`."""
        response = yield self.build_token_request()
        self.raise_for_token_status(response)
        return self.parse_token_response(response)

    def build_release_request(self, token: AcquiredToken) -> httpx.Request | None:
        """Request that gives ``token`` back to the service; None if it has no such call."""
        return None

    # -- state -------------------------------------------------------------
    @property
    def token(self) -> AcquiredToken | None:
        """The token held now (no I/O; may be stale)."""
        held = self._held
        return None if held is None else held.token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the held token, so the next call fetches a new one.

        With ``token``, forget it only if it is still the one held (another
        caller may already have replaced it).
        """
        held = self._held
        if held is None:
            return
        if token is None or held.token.token == token:
            self._held = None
            log.debug("token %s dropped", held.token.fingerprint)

    def _fresh(self, failed: str | None) -> _Held | None:
        held = self._held
        if held is None or held.token.token == failed:
            return None
        if self._clock() >= held.renew_at:
            return None
        return held

    def _store(self, token: AcquiredToken) -> _Held:
        if not isinstance(token, AcquiredToken):
            raise TypeError(f"token flow must return an AcquiredToken, got {type(token).__name__}")
        now = self._clock()
        expires = token.expires_timestamp
        if expires is None:
            renew_at = float("inf")
        else:
            margin = min(self.renew_margin, max(0.0, (expires - now) / 2))
            renew_at = expires - margin
        held = _Held(token, self._header_value(token), renew_at)
        self._held = held
        log.debug("token %s acquired, expires %s", token.fingerprint, token.expires_at)
        return held

    def _header_value(self, token: AcquiredToken) -> str:
        return f"{self.header_scheme} {token.token}" if self.header_scheme else token.token

    def _finish(self, flow: TokenFlow, response: httpx.Response) -> httpx.Request | _Held:
        """Feed ``response`` to ``flow``: the next request, or the stored token."""
        try:
            return flow.send(response)
        except StopIteration as stop:
            return self._store(stop.value)
        except AuthError:
            raise
        except MALFORMED_ANSWER as exc:
            raise IdentityServiceUnavailable(
                f"malformed answer from the identity service ({type(exc).__name__})"
            ) from None

    def _start(self, flow: TokenFlow) -> httpx.Request | _Held:
        try:
            return next(flow)
        except StopIteration as stop:
            return self._store(stop.value)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._async_locks_guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    # -- httpx.Auth ----------------------------------------------------------
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if self.retry_on_401:
            request.read()  # so the request can be sent twice
        failed: str | None = None
        for attempt in (0, 1):
            held = self._fresh(failed)
            if held is None:
                with self._sync_lock:
                    held = self._fresh(failed)
                    if held is None:
                        flow = self.token_flow()
                        step = self._start(flow)
                        while not isinstance(step, _Held):
                            response = yield step
                            response.read()
                            step = self._finish(flow, response)
                        held = step
            request.headers[self.header_name] = held.header_value
            response = yield request
            if response.status_code != 401 or not self.retry_on_401 or attempt:
                return
            failed = held.token.token
            self.invalidate(failed)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.retry_on_401:
            await request.aread()
        failed: str | None = None
        for attempt in (0, 1):
            held = self._fresh(failed)
            if held is None:
                async with self._async_lock():
                    held = self._fresh(failed)
                    if held is None:
                        flow = self.token_flow()
                        step = self._start(flow)
                        while not isinstance(step, _Held):
                            response = yield step
                            await response.aread()
                            step = self._finish(flow, response)
                        held = step
            request.headers[self.header_name] = held.header_value
            response = yield request
            if response.status_code != 401 or not self.retry_on_401 or attempt:
                return
            failed = held.token.token
            self.invalidate(failed)

    # -- for callers that want the token itself ----------------------------
    def acquire(self, client: httpx.Client, *, force: bool = False) -> AcquiredToken:
        """The held token, or a new one fetched through ``client`` (blocking).

        ``force`` fetches a new one even if the held one looks fresh. Raises
        :class:`AuthenticationFailed` or :class:`IdentityServiceUnavailable`
        (network errors included), nothing else.
        """
        failed = self._held.token.token if force and self._held else None
        held = self._fresh(failed)
        if held is not None:
            return held.token
        with self._sync_lock:
            held = self._fresh(failed)
            if held is not None:
                return held.token
            flow = self.token_flow()
            step = self._start(flow)
            while not isinstance(step, _Held):
                try:
                    response = client.send(step, auth=None)
                    response.read()
                except httpx.TransportError as exc:
                    raise _unreachable(step, exc) from None
                step = self._finish(flow, response)
            return step.token

    async def aacquire(self, client: httpx.AsyncClient, *, force: bool = False) -> AcquiredToken:
        """Async form of :meth:`acquire`."""
        failed = self._held.token.token if force and self._held else None
        held = self._fresh(failed)
        if held is not None:
            return held.token
        async with self._async_lock():
            held = self._fresh(failed)
            if held is not None:
                return held.token
            flow = self.token_flow()
            step = self._start(flow)
            while not isinstance(step, _Held):
                try:
                    response = await client.send(step, auth=None)
                    await response.aread()
                except httpx.TransportError as exc:
                    raise _unreachable(step, exc) from None
                step = self._finish(flow, response)
            return step.token

    def get_token(self, client: httpx.Client) -> str:
        """The token string to use now, fetching one through ``client`` if needed."""
        return self.acquire(client).token

    async def aget_token(self, client: httpx.AsyncClient) -> str:
        """Async form of :meth:`get_token`."""
        return (await self.aacquire(client)).token

    def release(self, client: httpx.Client) -> None:
        """Give the held token back (if the service has such a call) and forget it.

        Best effort: failures are logged (without the token) and swallowed.
        """
        held, self._held = self._held, None
        request = None if held is None else self.build_release_request(held.token)
        if held is None or request is None:
            return
        try:
            client.send(request, auth=None).close()
        except httpx.HTTPError as exc:
            log.warning(
                "could not release token %s: %s", held.token.fingerprint, type(exc).__name__
            )

    async def arelease(self, client: httpx.AsyncClient) -> None:
        """Async form of :meth:`release`."""
        held, self._held = self._held, None
        request = None if held is None else self.build_release_request(held.token)
        if held is None or request is None:
            return
        try:
            await (await client.send(request, auth=None)).aclose()
        except httpx.HTTPError as exc:
            log.warning(
                "could not release token %s: %s", held.token.fingerprint, type(exc).__name__
            )


def _unreachable(request: httpx.Request, exc: httpx.TransportError) -> IdentityServiceUnavailable:
    where = request.url.copy_with(query=None)
    return IdentityServiceUnavailable(
        f"identity service unreachable ({type(exc).__name__}) at {where}"
    )


class StaticToken(TokenAuth):
    """A pre-issued token, used as is (no renewal: a refused token stays refused).

    ``expires_at`` is informative: it is what ``auth.token.expires_at`` reports.
    """

    def __init__(
        self,
        token: str,
        *,
        expires_at: datetime | None = None,
        header_name: str = "X-Auth-Token",
        header_scheme: str | None = None,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigurationError("token", "must be a non-empty string")
        if expires_at is not None and (
            not isinstance(expires_at, datetime) or expires_at.tzinfo is None
        ):
            raise ConfigurationError("expires_at", "must be a timezone-aware datetime")
        super().__init__(header_name=header_name, header_scheme=header_scheme, retry_on_401=False)
        self._static = AcquiredToken(token.strip(), expires_at)

    def _store(self, token: AcquiredToken) -> _Held:
        # Never "renew" a static token: keep it for good whatever its expiry says.
        held = _Held(token, self._header_value(token), float("inf"))
        self._held = held
        return held

    def token_flow(self) -> TokenFlow:
        return self._static
        yield  # pragma: no cover  (makes this a generator that sends nothing)
