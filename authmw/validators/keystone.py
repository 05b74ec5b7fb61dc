"""Validate tokens against OpenStack Keystone's v3 API (also OTC IAM and FIWARE Keystone).

The validator authenticates itself as a service user (password, application
credential or a pre-issued token) and asks ``GET /v3/auth/tokens`` about each
user token. It does not cache: :class:`~authmw.cache.CachedValidator` (set up
by the middleware) does.

Logging: records carry token fingerprints only. httpcore logs response
headers at DEBUG and Keystone echoes the user's token in ``X-Subject-Token``;
authmw installs a filter on the ``httpx``/``httpcore.*`` loggers that replaces
token header values with digests. To silence them instead:
``logging.getLogger("httpcore").setLevel(logging.INFO)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import httpx

from .._hashing import fingerprint
from ..client._base import AuthenticationFailed, StaticToken, TokenAuth
from ..client.keystone_v3 import (
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    keystone_v3_url,
)
from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken
from ..identity import Identity
from ._keystone_v3 import (
    ServiceTokenRejected,
    build_validation_request,
    check_subject_token,
    interpret_validation_response,
)

__all__ = ["DEFAULT_TIMEOUT", "KeystoneValidator"]

log = logging.getLogger("authmw.keystone")

DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
"""3 s to connect, 5 s for each read, write and pool wait."""

# Worth another try of the (idempotent) validation GET: refused or dropped
# connections. Not timeouts: retrying them would multiply the wait.
_RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based): 0, 0.05, 0.1, 0.2..."""
    return 0.0 if attempt <= 1 else 0.05 * 2 ** (attempt - 2)


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


class KeystoneValidator:
    """Validates tokens with Keystone v3 (``GET /v3/auth/tokens``).

    Service identity, one of:

    - ``auth``: any :class:`~authmw.client.TokenAuth` (e.g. a
      :class:`~authmw.client.KeystoneV3Password` with a special scope);
    - ``username`` (+ ``user_domain_name``/``user_domain_id``) or ``user_id``,
      with ``password`` and a scope (``project_id``, or ``project_name`` +
      ``project_domain_name``/``project_domain_id``, ``domain_id``/``domain_name``,
      ``system_scope="all"``);
    - ``application_credential_id`` (or ``_name`` + user) and
      ``application_credential_secret``;
    - ``static_token``: a pre-issued token, used as is.

    The user needs a role that may validate others' tokens (``service`` in
    Keystone's default policy, or admin / system reader).

    Answers: an :class:`Identity`; :class:`InvalidToken` (404, expired beyond
    ``expiry_leeway`` seconds, not token-shaped); :class:`IdentityServiceUnavailable`
    (5xx, network, TLS, timeout, malformed answer, service identity refused
    twice). Nothing else escapes. ``include_service_catalog`` asks Keystone for
    the catalog and puts it in ``Identity.service_catalog``.

    HTTP: one pooled :class:`httpx.Client`, and one :class:`httpx.AsyncClient`
    created in the running event loop (a new one if the loop changes).
    ``timeout`` (default :data:`DEFAULT_TIMEOUT`), ``http_connect_timeout``,
    ``http_request_max_retries`` (extra tries of a validation whose connection
    was refused or dropped; timeouts are not retried, and the service login is
    tried once per call), ``cafile``/``certfile``/``keyfile``/``insecure``.
    Call :meth:`close` / :meth:`aclose` at shutdown.
    """

    def __init__(
        self,
        auth_url: str,
        *,
        auth: TokenAuth | None = None,
        username: str | None = None,
        user_id: str | None = None,
        password: str | None = None,
        user_domain_name: str | None = None,
        user_domain_id: str | None = None,
        project_id: str | None = None,
        project_name: str | None = None,
        project_domain_name: str | None = None,
        project_domain_id: str | None = None,
        domain_id: str | None = None,
        domain_name: str | None = None,
        system_scope: str | None = None,
        application_credential_id: str | None = None,
        application_credential_name: str | None = None,
        application_credential_secret: str | None = None,
        static_token: str | None = None,
        include_service_catalog: bool = False,
        expiry_leeway: float = 0.0,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 2,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        renew_margin: float = 60.0,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = keystone_v3_url(auth_url)
        self.include_service_catalog = bool(include_service_catalog)
        self.expiry_leeway = _number("expiry_leeway", expiry_leeway)
        self.timeout = _timeout(timeout, http_connect_timeout)
        if (
            isinstance(http_request_max_retries, bool)
            or not isinstance(http_request_max_retries, int)
            or not 0 <= http_request_max_retries <= 10
        ):
            raise ConfigurationError(
                "http_request_max_retries",
                f"must be an integer from 0 to 10, got {http_request_max_retries!r}",
            )
        self.max_retries = http_request_max_retries
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise ConfigurationError("max_connections", "must be an integer")
        if max_connections < 1:
            raise ConfigurationError("max_connections", f"must be >= 1, got {max_connections}")
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._verify = _ssl_context(cafile, certfile, keyfile, bool(insecure))
        self._clock = clock
        self._transport = transport
        self._async_transport = async_transport

        credentials = {
            "username": username,
            "user_id": user_id,
            "password": password,
            "user_domain_name": user_domain_name,
            "user_domain_id": user_domain_id,
            "project_id": project_id,
            "project_name": project_name,
            "project_domain_name": project_domain_name,
            "project_domain_id": project_domain_id,
            "domain_id": domain_id,
            "domain_name": domain_name,
            "system_scope": system_scope,
            "application_credential_id": application_credential_id,
            "application_credential_name": application_credential_name,
            "application_credential_secret": application_credential_secret,
            "static_token": static_token,
        }
        self.auth = _service_auth(self.base_url, auth, credentials, renew_margin, clock)

        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx.AsyncClient
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"KeystoneValidator({self.base_url!r}, auth={self.auth!r})"

    # -- clients -------------------------------------------------------------
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
                # One client per event loop: a client cannot be used from another
                # loop. Entries go away with their loop.
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

    def __enter__(self) -> KeystoneValidator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> KeystoneValidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- validation ----------------------------------------------------------
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """The identity behind ``token``; see the class docstring for errors."""
        check_subject_token(token)
        client = self._sync_client()
        for attempt in (1, 2):
            try:
                service_token = self.auth.get_token(client)
            except AuthenticationFailed as exc:
                raise self._service_refused(exc) from None
            request = self._request(service_token, token, allow_expired)
            status, body = self._send(client, request)
            try:
                return self._interpret(status, body, token, allow_expired)
            except ServiceTokenRejected as exc:
                self._on_rejected(service_token, exc, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Async form of :meth:`validate`."""
        check_subject_token(token)
        client = self._async_client()
        for attempt in (1, 2):
            try:
                service_token = await self.auth.aget_token(client)
            except AuthenticationFailed as exc:
                raise self._service_refused(exc) from None
            request = self._request(service_token, token, allow_expired)
            status, body = await self._asend(client, request)
            try:
                return self._interpret(status, body, token, allow_expired)
            except ServiceTokenRejected as exc:
                self._on_rejected(service_token, exc, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, service_token: str, token: str, allow_expired: bool) -> httpx.Request:
        return build_validation_request(
            self.base_url,
            service_token,
            token,
            include_catalog=self.include_service_catalog,
            allow_expired=allow_expired,
        )

    def _interpret(self, status: int, body: bytes, token: str, allow_expired: bool) -> Identity:
        try:
            return interpret_validation_response(
                status,
                body,
                now=self._clock(),
                leeway=self.expiry_leeway,
                allow_expired=allow_expired,
                include_catalog=self.include_service_catalog,
            )
        except InvalidToken as exc:
            log.debug("token %s rejected: %s", fingerprint(token), exc)
            raise
        except IdentityServiceUnavailable as exc:
            log.warning("cannot validate token %s: %s", fingerprint(token), exc)
            raise

    def _on_rejected(self, service_token: str, exc: ServiceTokenRejected, attempt: int) -> None:
        self.auth.invalidate(service_token)
        if attempt == 1:
            log.warning(
                "Keystone refused the service token %s (%d); authenticating again",
                fingerprint(service_token),
                exc.status_code,
            )
            return
        log.error(
            "Keystone refused a fresh service token (%d): check that the service user "
            "may validate tokens (the 'service' role)",
            exc.status_code,
        )
        raise IdentityServiceUnavailable(
            f"Keystone refused the service identity ({exc.status_code})"
        ) from None

    @staticmethod
    def _service_refused(exc: AuthenticationFailed) -> IdentityServiceUnavailable:
        log.error("service identity refused by Keystone: %s", exc)
        return IdentityServiceUnavailable(f"service identity refused: {exc}")

    def _send(self, client: httpx.Client, request: httpx.Request) -> tuple[int, bytes]:
        for attempt in range(self.max_retries + 1):
            try:
                response = client.send(request, auth=None)
                try:
                    return response.status_code, response.read()
                finally:
                    response.close()
            except _RETRYABLE as exc:
                if attempt < self.max_retries:
                    log.info("Keystone connection failed (%s); retrying", type(exc).__name__)
                    time.sleep(_backoff(attempt + 1))
                    continue
                raise _unavailable(exc) from None
            except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend(self, client: httpx.AsyncClient, request: httpx.Request) -> tuple[int, bytes]:
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.send(request, auth=None)
                try:
                    return response.status_code, await response.aread()
                finally:
                    await response.aclose()
            except _RETRYABLE as exc:
                if attempt < self.max_retries:
                    log.info("Keystone connection failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(_backoff(attempt + 1))
                    continue
                raise _unavailable(exc) from None
            except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _unavailable(exc: BaseException) -> IdentityServiceUnavailable:
    log.warning("Keystone unreachable: %s", type(exc).__name__)
    return IdentityServiceUnavailable(f"Keystone unreachable ({type(exc).__name__})")


def _service_auth(
    base_url: str,
    auth: TokenAuth | None,
    credentials: dict[str, Any],
    renew_margin: float,
    clock: Callable[[], float],
) -> TokenAuth:
    given = {name for name, value in credentials.items() if value is not None}
    if auth is not None:
        if not isinstance(auth, TokenAuth):
            raise ConfigurationError("auth", f"must be an authmw.client.TokenAuth, got {auth!r}")
        if given:
            raise ConfigurationError("auth", f"conflicts with {sorted(given)[0]}")
        return auth
    static = credentials.pop("static_token")
    if static is not None:
        if given - {"static_token"}:
            other = sorted(given - {"static_token"})[0]
            raise ConfigurationError("static_token", f"conflicts with {other}")
        return StaticToken(static)
    secret = credentials.pop("application_credential_secret")
    cred_id = credentials.pop("application_credential_id")
    cred_name = credentials.pop("application_credential_name")
    if secret is not None or cred_id is not None or cred_name is not None:
        if secret is None:
            raise ConfigurationError(
                "application_credential_secret", "is needed with an application credential"
            )
        for name in (
            "password",
            "project_id",
            "project_name",
            "project_domain_id",
            "project_domain_name",
            "domain_id",
            "domain_name",
            "system_scope",
        ):
            if credentials[name] is not None:
                raise ConfigurationError(
                    name, "does not go with an application credential (it has its own scope)"
                )
        return KeystoneV3ApplicationCredential(
            base_url,
            application_credential_secret=secret,
            application_credential_id=cred_id,
            application_credential_name=cred_name,
            username=credentials["username"],
            user_id=credentials["user_id"],
            user_domain_id=credentials["user_domain_id"],
            user_domain_name=credentials["user_domain_name"],
            renew_margin=renew_margin,
            clock=clock,
        )
    if credentials["password"] is None:
        raise ConfigurationError(
            "password",
            "no service identity: give username/user_id + password, "
            "application_credential_id + application_credential_secret, static_token or auth",
        )
    return KeystoneV3Password(base_url, renew_margin=renew_margin, clock=clock, **credentials)
