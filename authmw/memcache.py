"""A second cache level on memcached, shared by every worker process and host.

:class:`MemcacheCache` implements :class:`authmw.cache.SharedCache` with
the guarantees of :class:`authmw.redis.RedisCache`::

    from authmw.memcache import MemcacheCache   # pip install 'authmw[memcache]'

    shared = MemcacheCache(["10.0.0.5:11211"], secret=os.environ["AUTHMW_CACHE_SECRET"])
    app = WSGIAuthMiddleware(app, validator=..., shared_cache=shared)

or, from keystonemiddleware's options (``memcached_servers``,
``memcache_security_strategy = MAC`` or ``ENCRYPT``, ``memcache_secret_key``),
by :func:`authmw.options.keystone_options`.

The entries are RedisCache's: keyed by the SHA-256 digest of the token
under a namespace (never the token), signed with HMAC-SHA-256 over key name
and value, optionally encrypted (AES-256-GCM); a tampered, foreign or
undecodable entry is a miss. memcached down or slow never fails a request:
short socket timeouts, any error is a miss or a dropped write, one WARNING
per outage, a back-off before the next try, and reconnection by itself.

Revocation as in RedisCache (markers checked on every hit, a generation
counter for ``revoke(None)``, a process never goes back on what it has
seen), with what memcached cannot do:

- no server-side script: a hit costs two round trips (the entry and the
  generation, then the entry's markers), and a generation found set back is
  put back up by a separate ``set``;
- memcached evicts least-recently-used keys when its memory is full
  (Redis with ``noeviction`` does not): an evicted marker or generation
  counter lets a process that never saw the revocation accept the token's
  entry again until the entry expires (at most ``max_ttl``); evicted
  entries are only misses;
- expiry is in whole seconds (an entry's own valid-until, inside its
  signed value, is still checked to the fraction);
- with several servers, keys are spread by rendezvous hashing, and one
  failing server makes the cache skip all of them for the back-off.

pymemcache (pinned in the ``memcache`` extra) is the client: pure Python,
maintained, thread-safe pooled clients, timeouts on connect and on every
call, TLS; python-memcached (keystonemiddleware's) has no per-call timeout
and hides errors. It is imported only when a MemcacheCache is built.
Async callers run each call in a worker thread (pymemcache blocks).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import _fork
from .errors import ConfigurationError
from .identity import Identity
from .redis import (
    _MARKER_LEN,
    _NO_MARKER,
    _UNAUTHENTIC,
    _Found,
    _positive_number,
    _Revocation,
    _SignedCache,
)

__all__ = ["MemcacheCache", "parse_servers"]

log = logging.getLogger("authmw.memcache")

_DEFAULT_PORT = 11211
_MAX_EXPIRY = 30 * 24 * 3600  # memcached reads larger expiry times as a date


def parse_servers(option: str, servers: Any) -> list[tuple[str, int] | str]:
    """``host:port`` strings (or one comma-separated string) as pymemcache servers.

    Accepts keystonemiddleware's forms: ``host``, ``host:port``, ``[v6]:port``,
    ``inet:host:port``, ``inet6:[v6]:port`` and ``unix:/path``.
    """
    if isinstance(servers, str):
        servers = [s for s in (p.strip() for p in servers.split(",")) if s]
    if not isinstance(servers, (list, tuple)) or not servers:
        raise ConfigurationError(option, f"must list at least one server, got {servers!r}")
    parsed: list[tuple[str, int] | str] = []
    for server in servers:
        if not isinstance(server, str) or not server.strip():
            raise ConfigurationError(option, f"not a server: {server!r}")
        text = server.strip()
        if text.startswith("unix:"):
            parsed.append(text[len("unix:") :])
            continue
        for prefix in ("inet6:", "inet:"):
            text = text.removeprefix(prefix)
        host, port = text, _DEFAULT_PORT
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                port = _port(option, server, rest.removeprefix(":"))
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = _port(option, server, port_text)
        if not host or any(c.isspace() for c in host):
            raise ConfigurationError(option, f"not a server: {server!r}")
        parsed.append((host, port))
    return parsed


def _port(option: str, server: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigurationError(option, f"bad port in {server!r}")
    return int(text)


class MemcacheCache(_SignedCache):
    """Identities and rejections shared through memcached, MAC-protected, optionally encrypted.

    ``servers``: ``["host:port", ...]`` (or a comma-separated string).
    ``secret`` (>= 32 bytes, the same in every process), ``previous_secrets``,
    ``namespace``, ``encrypt``, ``max_ttl`` (at most 30 days), ``retry_interval``
    and ``max_retry_interval`` as for :class:`~authmw.redis.RedisCache`.
    ``socket_timeout``/``connect_timeout`` bound each call (seconds);
    ``tls_context`` turns TLS on; ``max_pool_size`` connections per server.
    """

    _log = log

    def __init__(
        self,
        servers: str | Iterable[str],
        *,
        secret: str | bytes,
        previous_secrets: Iterable[str | bytes] = (),
        namespace: str = "authmw",
        encrypt: bool = False,
        max_ttl: float = 3600.0,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        retry_interval: float = 1.0,
        max_retry_interval: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        max_pool_size: int = 32,
        timer: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            from pymemcache.client.base import PooledClient
            from pymemcache.client.rendezvous import RendezvousHash
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "authmw.memcache.MemcacheCache needs pymemcache: pip install 'authmw[memcache]'"
            ) from exc
        self.servers = parse_servers(
            "servers", list(servers) if not isinstance(servers, str) else servers
        )
        super().__init__(
            secret=secret,
            previous_secrets=previous_secrets,
            namespace=namespace,
            encrypt=encrypt,
            max_ttl=max_ttl,
            retry_interval=retry_interval,
            max_retry_interval=max_retry_interval,
            timer=timer,
            clock=clock,
            extra="memcache",
        )
        if self.max_ttl > _MAX_EXPIRY:
            raise ConfigurationError("max_ttl", f"must be at most {_MAX_EXPIRY} s for memcached")
        self.socket_timeout = _positive_number("socket_timeout", socket_timeout)
        self.connect_timeout = _positive_number("connect_timeout", connect_timeout)
        if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
            raise ConfigurationError(
                "tls_context", f"must be an ssl.SSLContext, got {tls_context!r}"
            )
        if (
            isinstance(max_pool_size, bool)
            or not isinstance(max_pool_size, int)
            or max_pool_size < 1
        ):
            raise ConfigurationError(
                "max_pool_size", f"must be an integer >= 1, got {max_pool_size!r}"
            )
        self._new_client = functools.partial(
            PooledClient,
            connect_timeout=self.connect_timeout,
            timeout=self.socket_timeout,
            no_delay=True,
            max_pool_size=max_pool_size,
            default_noreply=False,
            tls_context=tls_context,
        )
        self._clients = self._connected()
        self._ring: Any = RendezvousHash(list(self._clients)) if len(self._clients) > 1 else None
        self._marker_expiry = math.ceil(self.max_ttl)
        _fork.reset_after_fork(self)  # once built: a refused cache is never reset

    def _after_fork(self) -> None:
        # In a forked child (see authmw._fork): new clients. The parent's pooled
        # connections are forgotten, not closed: the parent still uses them.
        super()._after_fork()
        self._clients = self._connected()

    def _connected(self) -> dict[str, Any]:
        """A client per server, by name (connecting on first use)."""
        return {_name(server): self._new_client(server) for server in self.servers}

    def __repr__(self) -> str:
        names = ",".join(self._clients)
        return f"MemcacheCache({names!r}, namespace={self.namespace!r}, encrypt={self.encrypt})"

    def _client(self, key: bytes) -> Any:
        if self._ring is None:
            return next(iter(self._clients.values()))
        return self._clients[self._ring.get_node(key.decode("ascii"))]

    def _get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """Values of ``keys`` (absent ones left out), one round trip per server."""
        by_client: dict[int, tuple[Any, list[bytes]]] = {}
        for key in keys:
            client = self._client(key)
            by_client.setdefault(id(client), (client, []))[1].append(key)
        found: dict[bytes, bytes] = {}
        for client, some in by_client.values():
            found.update(client.get_many(some))
        return found

    # -- the store's calls (see authmw.redis._SignedCache) -----------------------------------
    def _fetch(self, rkey: bytes) -> _Found:
        found = self._get_many([rkey, self._gen_key])
        raw_generation = found.get(self._gen_key)
        generation = self._generation_of(raw_generation)
        if generation > 0 and _number(raw_generation) < generation:
            # set back or evicted: put it back up (Redis does this in its script)
            self._client(self._gen_key).set(self._gen_key, str(generation).encode())
        value = found.get(rkey)
        marker = self._marker_found(rkey, value) if value is not None else _NO_MARKER
        return _Found(value, generation, marker)

    def _marker_found(self, rkey: bytes, value: bytes) -> int:
        """Index of the first of the entry's revocation markers set in memcached,
        ``_NO_MARKER`` if none is, ``_UNAUTHENTIC`` if the entry is not authentic
        (then nothing is looked up)."""
        verified = self._verify(rkey, value)
        if verified is None:
            return _UNAUTHENTIC
        body = verified[0]
        markers = [
            self._marker_prefix + body[4 + i * _MARKER_LEN : 4 + (i + 1) * _MARKER_LEN]
            for i in range(body[3])
        ]
        if not markers:
            return _NO_MARKER
        found = self._get_many(markers)
        for index, marker in enumerate(markers):
            if marker in found:
                return index
        return _NO_MARKER

    def _read_generation(self) -> Any:
        return self._client(self._gen_key).get(self._gen_key)

    def _store(self, rkey: bytes, value: bytes, ttl_ms: int) -> None:
        self._client(rkey).set(rkey, value, expire=math.ceil(ttl_ms / 1000))

    def _record(self, plan: _Revocation, audit_id: str | None) -> None:
        if plan.generation is not None:
            client = self._client(self._gen_key)
            new = client.incr(self._gen_key, 1)
            if new is None or int(new) < plan.generation:
                client.set(self._gen_key, str(plan.generation).encode())
                new = plan.generation
            self._generation_of(new)
        else:
            for marker in plan.markers:
                self._client(marker).set(marker, b"1", expire=self._marker_expiry)

    # -- asyncio API: each blocking operation in a worker thread (pymemcache blocks) --------
    async def aget(self, key: bytes) -> Identity | None:
        """Awaitable :meth:`get`."""
        return await asyncio.to_thread(self.get, key)

    async def _awrite(self, key: bytes, identity: Identity | None, ttl: float) -> None:
        await asyncio.to_thread(self._write, key, identity, ttl)

    async def arevoke(self, audit_id: str | None) -> None:
        """Awaitable :meth:`revoke`."""
        await asyncio.to_thread(self.revoke, audit_id)

    # -- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Close the pooled connections (later calls open new ones)."""
        for client in self._clients.values():
            client.close()

    async def aclose(self) -> None:
        """Awaitable :meth:`close`."""
        await asyncio.to_thread(self.close)


def _name(server: tuple[str, int] | str) -> str:
    if isinstance(server, str):
        return f"unix:{server}"
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _number(raw: Any) -> int:
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0
