"""Pooled HTTP clients for remote validators: one blocking client, one async client per loop.

Shared by :class:`~authmw.KeystoneV2Validator` and
:class:`~authmw.HTTPIntrospectionValidator`; option checks are those of
:class:`~authmw.KeystoneValidator`, so the same option names mean the same.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import weakref

import httpx

from ..errors import ConfigurationError, IdentityServiceUnavailable
from .keystone import _ssl_context, _timeout

__all__ = ["HTTPClients"]

log = logging.getLogger("authmw.http")

# Errors after the connection was made: a GET may be sent again. (Failures to
# connect are retried by the transport itself, for any method.)
_RETRYABLE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class HTTPClients:
    """An :class:`httpx.Client` and per-event-loop :class:`httpx.AsyncClient`, made on first use.

    ``service`` names the remote side in messages ("Rackspace Identity").
    """

    def __init__(
        self,
        *,
        service: str,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 2,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
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
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ConfigurationError(
                "max_connections", f"must be an integer >= 1, got {max_connections!r}"
            )
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
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

    def sync(self) -> httpx.Client:
        """The blocking client."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                transport = self._transport or httpx.HTTPTransport(
                    verify=self._verify, retries=self.max_retries, limits=self._limits
                )
                self._client = httpx.Client(
                    transport=transport, timeout=self.timeout, follow_redirects=False
                )
            return self._client

    def for_running_loop(self) -> httpx.AsyncClient:
        """The async client of the running event loop (an async client is bound to its loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                transport = self._async_transport or httpx.AsyncHTTPTransport(
                    verify=self._verify, retries=self.max_retries, limits=self._limits
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

    def send(self, client: httpx.Client, request: httpx.Request) -> httpx.Response:
        """Send without auth; the answer is read and closed. Network trouble -> unavailable."""
        idempotent = request.method in ("GET", "HEAD")
        for attempt in range(self.max_retries + 1):
            try:
                response = client.send(request, auth=None)
                try:
                    response.read()
                finally:
                    response.close()
                return response
            except _RETRYABLE as exc:
                if idempotent and attempt < self.max_retries:
                    log.info("%s dropped the connection (%s); retrying", self.service, _name(exc))
                    continue
                raise self._unavailable(exc) from None
            except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def asend(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Async form of :meth:`send`."""
        idempotent = request.method in ("GET", "HEAD")
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.send(request, auth=None)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                return response
            except _RETRYABLE as exc:
                if idempotent and attempt < self.max_retries:
                    log.info("%s dropped the connection (%s); retrying", self.service, _name(exc))
                    continue
                raise self._unavailable(exc) from None
            except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: BaseException) -> IdentityServiceUnavailable:
        # The exception text may hold the URL, and a v2.0 URL holds the user's
        # token: only the exception type is reported.
        log.warning("%s unreachable: %s", self.service, _name(exc))
        return IdentityServiceUnavailable(f"{self.service} unreachable ({_name(exc)})")


def _name(exc: BaseException) -> str:
    return type(exc).__name__
