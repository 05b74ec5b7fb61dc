"""A second cache level on Redis, shared by every worker process and host.

:class:`RedisCache` implements :class:`authmw.cache.SharedCache`::

    from authmw.redis import RedisCache

    secret = os.environ["AUTHMW_REDIS_SECRET"]  # >= 32 bytes, the same in every process
    shared = RedisCache.from_url("redis://127.0.0.1:6379/0", secret=secret)
    app = WSGIAuthMiddleware(app, validator=..., shared_cache=shared)

Keys are the SHA-256 digest of the token under a namespace, never the
token. Each value carries an HMAC-SHA-256 (keyed by ``secret``) over the key
name and the whole value, so whoever can write to Redis cannot forge an
identity nor move one entry under another token's key; the identity itself
can also be encrypted (AES-256-GCM, ``encrypt=True``, needs the
``cryptography`` package). A tampered, foreign (other secret) or
undecodable entry is a miss.

Revocation: ``revoke(audit_id)`` writes a marker that every process checks
on each Redis hit, inside the same round trip (a small Lua script reads the
entry, the generation counter and the entry's revocation markers at once);
``revoke(None)`` moves the namespace's generation on, which retires every
entry written before. A token already held in another process's
*in-process* cache stays usable there until that entry expires
(``cache_time``).

Markers and the generation carry no MAC, so a process never goes back on a
revocation it has seen, whatever Redis says later: it remembers the markers
it wrote or found on an authentic entry for ``max_ttl`` (at most 65,536;
past that it takes no identity from Redis until the forgotten ones would
have expired), and the highest generation it read or made (an entry of any
other generation is stale; a lower counter in Redis is put back up on the
next read; ``revoke(None)`` moves past both). A revocation Redis could not
record still holds in the process that made it.

What someone who can write to Redis but lacks ``secret`` can still do:

- make a process that never saw a revocation (did not make it, read no
  entry of the token while the marker was there, read no newer generation
  before the counter was set back) accept a revoked token's entry again,
  until the entry's own valid-until (at most ``max_ttl`` after it was
  written): by deleting the marker, setting the counter back, or writing
  back an entry value copied earlier;
- delete, expire or flood entries, markers and the counter: more misses,
  so more load on the validator, never a forged identity or rejection;
  markers they add for a copied marker id, or a counter set very high,
  only cause misses too (a counter at the 64-bit limit makes every
  ``revoke(None)`` fail to reach Redis: logged, and still local);
- deny service: fill or slow Redis (each call is bounded by the socket
  timeouts; requests then go to the validator);
- read what is stored: token digests, and identities unless ``encrypt=True``.

Redis down or slow never fails a request: the socket timeouts are short,
any error is a miss or a dropped write, one WARNING is logged per outage,
and Redis is left alone for a back-off before the next attempt.

``redis`` is imported only when a :class:`RedisCache` is built, never by
``import authmw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from . import _fork
from ._redis_listen import RevocationChannel, sign, verify
from .errors import ConfigurationError, InvalidToken
from .identity import Identity

__all__ = ["RedisCache", "RedisCacheStats"]

log = logging.getLogger("authmw.redis")

_VERSION = 1
_POSITIVE = ord("P")
_NEGATIVE = ord("N")
_ENCRYPTED = 0x01
_MARKER_LEN = 32  # hex characters of one revocation marker id
_MAC_LEN = 32
_NONCE_LEN = 12
_TAIL = struct.Struct(">Qd")  # generation, valid-until (timer seconds)
_MIN_SECRET = 32
_MAX_MARKERS = 255
_MAX_GENERATION = 2**63 - 1  # Redis integers are signed 64-bit
# Revocation markers remembered per process (~150 bytes each).
_REMEMBERED_REVOCATIONS = 65_536
# Generations read before a validation, kept for the write that follows it.
_REMEMBERED_GENERATIONS = 4096

# Reads the entry, the generation and the entry's revocation markers in one
# round trip; answers {entry, generation, 1 + index of a marker found or 0}.
# The marker ids sit in clear at the start of the value (they are HMACs of
# audit ids, covered by the entry's MAC); a tampered list only makes the
# client-side MAC check fail. A generation below ARGV[2] (the highest this
# client has seen) was set back or lost: it is put back up.
_GET_SCRIPT = """
local v = redis.call('GET', KEYS[1])
local g = redis.call('GET', KEYS[2])
local seen = tonumber(ARGV[2])
if seen > 0 and (tonumber(g) or -1) < seen then
  redis.call('SET', KEYS[2], ARGV[2])
  g = ARGV[2]
end
if not v then return {false, g, 0} end
local n = string.byte(v, 4)
if n == nil then return {v, g, 0} end
for i = 0, n - 1 do
  local id = string.sub(v, 5 + i * 32, 4 + (i + 1) * 32)
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then return {v, g, i + 1} end
end
return {v, g, 0}
"""

# Revoke everything: the generation becomes max(current + 1, ARGV[1]), ARGV[1]
# being one past the highest this client has seen (an unreadable one is replaced).
_BUMP_SCRIPT = """
local g = tonumber(redis.call('GET', KEYS[1]))
if g and g >= tonumber(ARGV[1]) then return redis.call('INCR', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class _Revocation(NamedTuple):
    """What one revocation writes to Redis (it already holds in this process)."""

    generation: int | None  # revoke everything: the lowest generation Redis must reach
    markers: tuple[bytes, ...]  # revoke one token: its marker keys


_NO_MARKER = -1  # _Found.marker: none of the entry's revocation markers is set
_UNAUTHENTIC = -2  # _Found.marker: the entry failed its MAC check (nothing was looked up)


class _Found(NamedTuple):
    """What one lookup read from the store."""

    value: bytes | None  # the entry (None: there is none)
    generation: int  # the generation entries must carry (see _SignedCache._generation_of)
    marker: int  # index of the entry's first revocation marker set, or one of the above


class RedisCacheStats:
    """Counters of one :class:`RedisCache`; read them with :meth:`as_dict`."""

    __slots__ = (
        "dropped_writes",
        "errors",
        "hits",
        "listen_errors",
        "misses",
        "negative_hits",
        "rejected",
        "revoked",
        "skipped",
        "stale",
        "writes",
    )

    def __init__(self) -> None:
        self.hits = 0  # usable identity found
        self.negative_hits = 0  # remembered rejection found
        self.misses = 0  # no entry
        self.revoked = 0  # entry of a revoked token
        self.stale = 0  # older generation or past its valid-until time
        self.rejected = 0  # bad MAC, other secret, undecodable
        self.errors = 0  # Redis errors and timeouts of lookups, writes and revocations
        self.listen_errors = 0  # failures of the revocation subscription (its own thread)
        self.skipped = 0  # operations not attempted while Redis is marked down
        self.writes = 0
        self.dropped_writes = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _secret_bytes(option: str, value: Any) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise ConfigurationError(option, "must be a string or bytes")
    if len(value) < _MIN_SECRET:
        raise ConfigurationError(
            option, f"must be at least {_MIN_SECRET} bytes long, got {len(value)}"
        )
    return bytes(value)


def _positive_number(option: str, value: Any, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ConfigurationError(option, f"must be a positive number, got {value!r}")
    return float(value)


class _Keys:
    """Key material derived from one secret."""

    __slots__ = ("aead", "mac")

    def __init__(self, secret: bytes, encrypt: bool, store: str = "redis") -> None:
        self.mac = hmac.new(secret, f"authmw {store} mac v1".encode(), hashlib.sha256).digest()
        self.aead: Any = None
        if encrypt:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self.aead = AESGCM(
                hmac.new(secret, f"authmw {store} aes-256-gcm v1".encode(), hashlib.sha256).digest()
            )

    def marker(self, audit_id: str) -> bytes:
        return (
            hmac.new(self.mac, b"audit\x00" + audit_id.encode("utf-8"), hashlib.sha256)
            .hexdigest()[:_MARKER_LEN]
            .encode("ascii")
        )


class _SignedCache:
    """What a shared cache does the same on any store: entry format (HMAC,
    encryption), revocation memory, health and back-off, and the flow of each
    operation (``get``, ``put``, ``revoke`` and their async forms). Subclasses
    supply only the client calls: ``_fetch``, ``_read_generation``, ``_store``,
    ``_record`` and, for a store with an asyncio client, their ``_a`` forms (a
    store whose client blocks may run the blocking operations in a thread instead)."""

    _log = log

    def __init__(
        self,
        *,
        secret: str | bytes,
        previous_secrets: Iterable[str | bytes],
        namespace: str,
        encrypt: bool,
        max_ttl: float,
        retry_interval: float,
        max_retry_interval: float,
        timer: Callable[[], float],
        clock: Callable[[], float],
        extra: str,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or any(c.isspace() for c in namespace):
            raise ConfigurationError("namespace", f"must be a non-empty word, got {namespace!r}")
        secrets = [_secret_bytes("secret", secret)]
        if isinstance(previous_secrets, (str, bytes)):
            raise ConfigurationError("previous_secrets", "must be a list of secrets")
        secrets += [_secret_bytes("previous_secrets", s) for s in previous_secrets]
        self.encrypt = bool(encrypt)
        if self.encrypt:
            try:
                import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
            except ImportError:
                raise ConfigurationError(
                    "encrypt", f"needs the 'cryptography' package: pip install 'authmw[{extra}]'"
                ) from None
        self.namespace = namespace
        self.max_ttl = _positive_number("max_ttl", max_ttl)
        self.retry_interval = _positive_number("retry_interval", retry_interval, allow_zero=True)
        self.max_retry_interval = max(
            self.retry_interval,
            _positive_number("max_retry_interval", max_retry_interval, allow_zero=True),
        )
        self.stats = RedisCacheStats()
        self._keys = [_Keys(s, self.encrypt, extra) for s in secrets]
        self._prefix = f"{namespace}:".encode()
        self._gen_key = self._prefix + b"gen"
        self._marker_prefix = self._prefix + b"rev:"
        self._timer = timer
        self._clock = clock
        self._lock = threading.Lock()  # new in a forked child: subclasses register, once built
        # Health: 0.0 = usable; otherwise the clock time before which the store is left alone.
        self._retry_at = 0.0
        self._backoff = self.retry_interval
        self._down = False
        self._failures = 0
        self._last_reject_log = -math.inf
        # token digest -> generation read just before its validation (see _write)
        self._generations: OrderedDict[bytes, int] = OrderedDict()
        # What this process will not go back on (see the module docstring): the
        # highest generation seen, markers -> until when (timer) they hold, and
        # until when no identity is taken from the store (memory of markers full).
        self._generation = 0
        self._revoked: OrderedDict[bytes, float] = OrderedDict()
        self._distrust_until = -math.inf

    # -- what a store supplies: its client calls (each raises when the store fails) ----------
    def _fetch(self, rkey: bytes) -> _Found:
        """The entry ``rkey``, the generation and the entry's revocation markers."""
        raise NotImplementedError

    def _read_generation(self) -> Any:
        """The generation counter as the store holds it (None when absent)."""
        raise NotImplementedError

    def _store(self, rkey: bytes, value: bytes, ttl_ms: int) -> None:
        """Write ``value`` under ``rkey`` for ``ttl_ms`` milliseconds."""
        raise NotImplementedError

    def _record(self, plan: _Revocation, audit_id: str | None) -> None:
        """Tell the store about a revocation already applied in this process."""
        raise NotImplementedError

    async def _afetch(self, rkey: bytes) -> _Found:
        raise NotImplementedError

    async def _aread_generation(self) -> Any:
        raise NotImplementedError

    async def _astore(self, rkey: bytes, value: bytes, ttl_ms: int) -> None:
        raise NotImplementedError

    async def _arecord(self, plan: _Revocation, audit_id: str | None) -> None:
        raise NotImplementedError

    def _after_fork(self) -> None:
        """In a forked child: a new lock (see :mod:`authmw._fork`)."""
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while Redis is considered down (between a failure and the next retry)."""
        return not self._down

    def _may_try(self) -> bool:
        if self._retry_at == 0.0:
            return True
        now = self._clock()
        with self._lock:
            if now < self._retry_at:
                self.stats.skipped += 1
                return False
            # This caller probes; the others keep skipping until it answers.
            self._retry_at = now + self._backoff
            return True

    def _mark(self) -> int:
        """Failures so far: an operation started now proves recovery only if none follows."""
        return self._failures

    def _failed(self, operation: str, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if operation == "subscribe":
                self.stats.listen_errors += 1
            else:
                self.stats.errors += 1
            first = not self._down
            if first:
                self._down = True
                self._backoff = self.retry_interval
            else:
                self._backoff = min(self._backoff * 2, self.max_retry_interval)
            self._retry_at = self._clock() + self._backoff
        if first:
            self._log.warning(
                "shared cache %r unavailable (%s failed: %s: %s); using the in-process cache "
                "and the validator, retrying in %.1fs%s",
                self,
                operation,
                type(exc).__name__,
                exc,
                self._backoff,
                "; until it is back, tokens revoked in other processes stay accepted here "
                "until their entries expire (cache_time)"
                if getattr(self, "_subscriptions", None)
                else "",
            )

    def _succeeded(self, mark: int | None = None) -> None:
        if not self._down and self._retry_at == 0.0:
            return
        with self._lock:
            if mark is not None and mark != self._failures:
                return  # began before a failure another thread saw: proves nothing
            was_down = self._down
            self._down = False
            self._retry_at = 0.0
            self._backoff = self.retry_interval
        if was_down:
            self._log.info("shared cache %r reachable again", self)

    def _entry_key(self, key: bytes) -> bytes:
        return self._prefix + b"t:" + key.hex().encode("ascii")

    def _seal(self, rkey: bytes, generation: int, until: float, identity: Identity | None) -> bytes:
        """The value stored under ``rkey``: header, markers, tail, payload, MAC."""
        keys = self._keys[0]
        if identity is None:
            body = bytes((_VERSION, _NEGATIVE, 0, 0)) + _TAIL.pack(generation, until)
        else:
            audit_ids = identity.audit_ids[:_MAX_MARKERS]
            head = (
                bytes((_VERSION, _POSITIVE, _ENCRYPTED if self.encrypt else 0, len(audit_ids)))
                + b"".join(keys.marker(a) for a in audit_ids)
                + _TAIL.pack(generation, until)
            )
            payload = json.dumps(
                identity.to_dict(include_token_body=False), separators=(",", ":")
            ).encode("utf-8")
            if self.encrypt:
                nonce = os.urandom(_NONCE_LEN)
                payload = nonce + keys.aead.encrypt(nonce, payload, rkey + head)
            body = head + payload
        return body + _mac(keys, rkey, body)

    def _verify(self, rkey: bytes, value: bytes) -> tuple[bytes, _Keys] | None:
        """(body, keys that signed it) of an authentic ``value``; None otherwise."""
        if len(value) < 4 + _TAIL.size + _MAC_LEN or value[0] != _VERSION:
            self._reject("malformed")
            return None
        body, tag = value[:-_MAC_LEN], value[-_MAC_LEN:]
        for keys in self._keys:
            if hmac.compare_digest(_mac(keys, rkey, body), tag):
                return body, keys
        self._reject("bad MAC or written with another secret")
        return None

    def _open(self, rkey: bytes, value: bytes, generation: int) -> Identity | None:
        """The identity in ``value``; None when unusable. Raises InvalidToken for a rejection."""
        verified = self._verify(rkey, value)
        if verified is None:
            return None
        body, keys = verified
        kind, flags, count = body[1], body[2], body[3]
        payload_at = 4 + count * _MARKER_LEN + _TAIL.size
        if len(body) < payload_at:
            return self._reject("malformed")
        entry_generation, until = _TAIL.unpack_from(body, payload_at - _TAIL.size)
        now = self._timer()
        if entry_generation != generation or not now < until:
            self.stats.stale += 1
            return None
        if kind == _NEGATIVE:
            self.stats.negative_hits += 1
            raise InvalidToken("token rejected recently (shared cache)")
        if kind != _POSITIVE or bool(flags & _ENCRYPTED) != self.encrypt:
            return self._reject("unexpected kind or encryption mode")
        if self._revoked_here(body[4 : 4 + count * _MARKER_LEN], now):
            self.stats.revoked += 1
            return None
        payload = body[payload_at:]
        try:
            if self.encrypt:
                payload = keys.aead.decrypt(
                    payload[:_NONCE_LEN], payload[_NONCE_LEN:], rkey + body[:payload_at]
                )
            identity = Identity.from_dict(json.loads(payload))
        except Exception as exc:  # whatever broke, an undecodable entry is a miss
            return self._reject(f"undecodable: {type(exc).__name__}")
        self.stats.hits += 1
        return identity

    def _reject(self, why: str) -> Identity | None:
        self.stats.rejected += 1
        now = self._clock()
        if now - self._last_reject_log >= 60.0:  # an attacker must not flood the log
            self._last_reject_log = now
            self._log.warning("ignored an unusable shared cache entry (%s)", why)
        return None

    def _generation_of(self, raw: Any) -> int:
        """The generation entries must carry: Redis's, or a higher one seen before."""
        try:
            read = int(raw or 0)
        except (TypeError, ValueError):
            read = 0  # unreadable: as good as set back
        with self._lock:
            if self._generation < read <= _MAX_GENERATION:
                self._generation = read
            return self._generation

    def _revoked_here(self, markers: bytes, now: float) -> bool:
        """Whether an entry with these markers was revoked as far as this process knows."""
        with self._lock:
            if now < self._distrust_until:
                return True
            if not self._revoked:
                return False
            for at in range(0, len(markers), _MARKER_LEN):
                until = self._revoked.get(markers[at : at + _MARKER_LEN])
                if until is not None and now < until:
                    return True
        return False

    def _remember_revoked(self, markers: Iterable[bytes]) -> None:
        """Hold entries with these markers revoked here for ``max_ttl``, in bounded memory."""
        now = self._timer()
        until = now + self.max_ttl
        with self._lock:
            revoked = self._revoked
            for marker in markers:
                revoked[marker] = until
                revoked.move_to_end(marker)
            while revoked:
                marker, held_until = next(iter(revoked.items()))
                if held_until > now and len(revoked) <= _REMEMBERED_REVOCATIONS:
                    break
                del revoked[marker]
                if held_until > now:
                    # Forgotten early: take no identity from Redis while it would hold.
                    self._distrust_until = max(self._distrust_until, held_until)

    def _learn_marker(self, rkey: bytes, value: bytes, index: int) -> None:
        """Remember the marker Redis found set on an authentic entry."""
        verified = self._verify(rkey, value)
        if verified is not None and 0 <= index < verified[0][3]:
            at = 4 + index * _MARKER_LEN
            self._remember_revoked([verified[0][at : at + _MARKER_LEN]])

    def _remember_generation(self, key: bytes, generation: int) -> None:
        # A miss is followed by a validation and a put: the entry must carry the
        # generation read *before* the validation, or a revoke(None) racing with
        # it would be lost.
        with self._lock:
            self._generations[key] = generation
            self._generations.move_to_end(key)
            if len(self._generations) > _REMEMBERED_GENERATIONS:
                self._generations.popitem(last=False)

    def _remembered_generation(self, key: bytes) -> int | None:
        with self._lock:
            return self._generations.pop(key, None)

    def _plan_revocation(self, audit_id: str | None) -> _Revocation:
        """Apply a revocation in this process at once; what to write to Redis (no I/O)."""
        if audit_id is None:
            with self._lock:
                self._generation += 1
                return _Revocation(self._generation, ())
        markers = [keys.marker(audit_id) for keys in self._keys]
        self._remember_revoked(markers)
        return _Revocation(None, tuple(self._marker_prefix + m for m in markers))

    def _revoke_failed(self, exc: BaseException) -> None:
        # Rare and important: say so every time, not once per outage.
        self._log.warning(
            "could not record a revocation in the shared cache %r (%s: %s); it holds in this "
            "process, but other processes may accept the token until their entries expire "
            "(max %.0fs)",
            self,
            type(exc).__name__,
            exc,
            self.max_ttl,
        )
        self._failed("revoke", exc)

    def _prepare(
        self, key: bytes, identity: Identity | None, ttl: float, generation: int
    ) -> tuple[bytes, bytes, int] | None:
        """(redis key, value, ttl in ms) to write, or None when nothing should be written."""
        ttl = min(ttl, self.max_ttl)
        if not ttl > 0:
            return None
        rkey = self._entry_key(key)
        try:
            value = self._seal(rkey, generation, self._timer() + ttl, identity)
        except (TypeError, ValueError, struct.error) as exc:  # e.g. JSON cannot hold ``extra``
            self._log.debug("identity not written to the shared cache: %s", exc)
            self.stats.dropped_writes += 1
            return None
        return rkey, value, max(1, math.ceil(ttl * 1000))

    def _read(self, key: bytes, rkey: bytes, found: _Found) -> Identity | None:
        """The identity in what a lookup found; None (counted) when there is none to use."""
        value, generation, marker = found
        if marker == _UNAUTHENTIC:  # tampered, foreign or malformed: counted as rejected
            self._remember_generation(key, generation)
            return None
        if value is None or marker != _NO_MARKER:
            if marker != _NO_MARKER:
                self.stats.revoked += 1
                if value is not None:
                    self._learn_marker(rkey, value, marker)
            else:
                self.stats.misses += 1
            self._remember_generation(key, generation)
            return None
        identity = self._open(rkey, value, generation)
        if identity is None:
            self._remember_generation(key, generation)
        return identity

    # -- the operations, the same on every store (the sync and async forms are twins) ------------
    def get(self, key: bytes) -> Identity | None:
        """The identity cached for the token digest ``key``, or None.

        Raises :class:`~authmw.InvalidToken` when another process recently saw
        the token rejected. Never raises for a failure of the store.
        """
        if not self._may_try():
            return None
        rkey = self._entry_key(key)
        mark = self._mark()
        try:
            found = self._fetch(rkey)
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._succeeded(mark)
        return self._read(key, rkey, found)

    async def aget(self, key: bytes) -> Identity | None:
        """Awaitable :meth:`get`."""
        if not self._may_try():
            return None
        rkey = self._entry_key(key)
        mark = self._mark()
        try:
            found = await self._afetch(rkey)
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._succeeded(mark)
        return self._read(key, rkey, found)

    def _write(self, key: bytes, identity: Identity | None, ttl: float) -> None:
        if not self._may_try():
            self.stats.dropped_writes += 1
            return
        mark = self._mark()
        try:
            generation = self._remembered_generation(key)
            if generation is None:
                generation = self._generation_of(self._read_generation())
            entry = self._prepare(key, identity, ttl, generation)
            if entry is None:
                return
            self._store(*entry)
        except Exception as exc:
            self.stats.dropped_writes += 1
            self._failed("put", exc)
            return
        self._succeeded(mark)
        self.stats.writes += 1

    async def _awrite(self, key: bytes, identity: Identity | None, ttl: float) -> None:
        if not self._may_try():
            self.stats.dropped_writes += 1
            return
        mark = self._mark()
        try:
            generation = self._remembered_generation(key)
            if generation is None:
                generation = self._generation_of(await self._aread_generation())
            entry = self._prepare(key, identity, ttl, generation)
            if entry is None:
                return
            await self._astore(*entry)
        except Exception as exc:
            self.stats.dropped_writes += 1
            self._failed("put", exc)
            return
        self._succeeded(mark)
        self.stats.writes += 1

    def revoke(self, audit_id: str | None) -> None:
        """Make cached entries of the token with ``audit_id`` unusable in every process.

        ``None`` retires every entry of the namespace (the generation moves on).
        Holds in this process even when the store cannot be told (logged).
        """
        plan = self._plan_revocation(audit_id)
        mark = self._mark()
        try:
            self._record(plan, audit_id)
        except Exception as exc:
            self._revoke_failed(exc)
            return
        self._succeeded(mark)

    async def arevoke(self, audit_id: str | None) -> None:
        """Awaitable :meth:`revoke`."""
        plan = self._plan_revocation(audit_id)
        mark = self._mark()
        try:
            await self._arecord(plan, audit_id)
        except Exception as exc:
            self._revoke_failed(exc)
            return
        self._succeeded(mark)

    def put(self, key: bytes, identity: Identity, ttl: float) -> None:
        """Share ``identity`` for ``ttl`` seconds (capped by ``max_ttl``); best effort."""
        self._write(key, identity, ttl)

    def put_invalid(self, key: bytes, ttl: float) -> None:
        """Share a rejection of the token digest ``key`` for ``ttl`` seconds; best effort."""
        self._write(key, None, ttl)

    def clear(self) -> None:
        """Retire every entry of the namespace (same as ``revoke(None)``)."""
        self.revoke(None)

    async def aput(self, key: bytes, identity: Identity, ttl: float) -> None:
        """Awaitable :meth:`put`."""
        await self._awrite(key, identity, ttl)

    async def aput_invalid(self, key: bytes, ttl: float) -> None:
        """Awaitable :meth:`put_invalid`."""
        await self._awrite(key, None, ttl)


class RedisCache(_SignedCache):
    """Identities and rejections shared through Redis, MAC-protected, optionally encrypted.

    ``secret`` (>= 32 bytes, the same in every process) keys the MAC and
    the encryption; ``previous_secrets`` are still accepted for reading
    during a rotation. ``max_ttl`` caps every entry's lifetime and is how
    long a revocation marker lives, so keep it >= the middleware's
    ``cache_time``. ``socket_timeout``/``connect_timeout`` bound each Redis
    call; after a failure Redis is not tried again for ``retry_interval``
    seconds, doubling up to ``max_retry_interval`` while it stays down.
    ``client`` / ``async_client_factory`` let you bring configured redis-py
    clients (Sentinel, TLS, ...) instead of a URL; they should not retry.
    ``timer`` (POSIX seconds) and ``clock`` (monotonic) are injectable for tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | bytes,
        previous_secrets: Iterable[str | bytes] = (),
        namespace: str = "authmw",
        encrypt: bool = False,
        max_ttl: float = 3600.0,
        socket_timeout: float = 0.1,
        connect_timeout: float = 0.1,
        retry_interval: float = 1.0,
        max_retry_interval: float = 30.0,
        client: Any = None,
        async_client_factory: Callable[[], Any] | None = None,
        timer: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import redis
            import redis.backoff
            import redis.retry
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "authmw.redis.RedisCache needs redis-py: pip install 'authmw[redis]'"
            ) from exc
        if url is None and client is None:
            raise ConfigurationError("url", "a Redis URL (or client=) is required")
        if url is not None:
            if not isinstance(url, str):
                raise ConfigurationError("url", f"must be a string, got {url!r}")
            try:
                parse_url: Any = redis.connection.parse_url
                parse_url(url)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError("url", str(exc)) from None
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
            extra="redis",
        )
        self.url = url
        self.socket_timeout = _positive_number("socket_timeout", socket_timeout)
        self.connect_timeout = _positive_number("connect_timeout", connect_timeout)
        self._redis: Any = redis
        self._client: Any = client
        self._async_factory = async_client_factory
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._scripts: tuple[Any, Any] | None = None  # (get, bump) of the blocking client
        self._async_scripts: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, Any]
        ] = weakref.WeakKeyDictionary()
        self._marker_ttl_ms = math.ceil(self.max_ttl * 1000)
        self._channel = self._prefix + b"revocations"
        self._subscriptions: list[RevocationChannel] = []
        _fork.reset_after_fork(self)

    @classmethod
    def from_url(cls, url: str, *, secret: str | bytes, **options: Any) -> RedisCache:
        """A cache on the Redis server at ``url`` (``redis://``, ``rediss://``, ``unix://``)."""
        return cls(url, secret=secret, **options)

    def __repr__(self) -> str:
        where = self.url if self.url is not None else "client"
        if self.url is not None and "@" in self.url:
            scheme, _, rest = self.url.partition("://")
            where = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return f"RedisCache({where!r}, namespace={self.namespace!r}, encrypt={self.encrypt})"

    # -- clients -------------------------------------------------------------
    def _no_retry(self, module: Any) -> Any:
        # One immediate retry on a broken connection only (a pooled socket that
        # went stale while Redis restarted); never on a timeout, which would
        # double the time a slow Redis costs a request.
        return module.Retry(
            self._redis.backoff.NoBackoff(), 1, supported_errors=(self._redis.ConnectionError,)
        )

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.socket_timeout,
                        socket_connect_timeout=self.connect_timeout,
                        retry=self._no_retry(self._redis.retry),
                    )
                client = self._client
        return client

    def _sync_scripts(self) -> tuple[Any, Any]:
        """The (get, bump) scripts of the blocking client."""
        scripts = self._scripts
        if scripts is None:
            client = self._sync_client()
            scripts = self._scripts = (
                client.register_script(_GET_SCRIPT),
                client.register_script(_BUMP_SCRIPT),
            )
        return scripts

    def _async_client(self) -> tuple[Any, tuple[Any, Any]]:
        """The asyncio client and (get, bump) scripts of the running loop (one per loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self._async_factory is not None:
                client = self._async_factory()
            elif self.url is None:
                raise ConfigurationError(
                    "async_client_factory", "needed for asyncio use when built from client="
                )
            else:
                import redis.asyncio.retry

                aioredis: Any = redis.asyncio
                client = aioredis.Redis.from_url(
                    self.url,
                    socket_timeout=self.socket_timeout,
                    socket_connect_timeout=self.connect_timeout,
                    retry=self._no_retry(aioredis.retry),
                )
            with self._lock:
                self._async_clients[loop] = client
                self._async_scripts[loop] = (
                    client.register_script(_GET_SCRIPT),
                    client.register_script(_BUMP_SCRIPT),
                )
        return client, self._async_scripts[loop]

    # -- the store's calls (see _SignedCache) ------------------------------------------------
    def _fetch(self, rkey: bytes) -> _Found:
        reply = self._sync_scripts()[0](
            keys=[rkey, self._gen_key],
            args=[self._marker_prefix, self._generation],
            client=self._sync_client(),
        )
        return self._found(reply)

    def _read_generation(self) -> Any:
        return self._sync_client().get(self._gen_key)

    def _store(self, rkey: bytes, value: bytes, ttl_ms: int) -> None:
        self._sync_client().set(rkey, value, px=ttl_ms)

    def _record(self, plan: _Revocation, audit_id: str | None) -> None:
        client = self._sync_client()
        if plan.generation is not None:
            bump = self._sync_scripts()[1]
            self._generation_of(bump(keys=[self._gen_key], args=[plan.generation], client=client))
        self._revocation_pipeline(client, plan, audit_id).execute()

    async def _afetch(self, rkey: bytes) -> _Found:
        client, (script, _) = self._async_client()
        reply = await script(
            keys=[rkey, self._gen_key],
            args=[self._marker_prefix, self._generation],
            client=client,
        )
        return self._found(reply)

    async def _aread_generation(self) -> Any:
        client, _ = self._async_client()
        return await client.get(self._gen_key)

    async def _astore(self, rkey: bytes, value: bytes, ttl_ms: int) -> None:
        client, _ = self._async_client()
        await client.set(rkey, value, px=ttl_ms)

    async def _arecord(self, plan: _Revocation, audit_id: str | None) -> None:
        client, (_, bump) = self._async_client()
        if plan.generation is not None:
            self._generation_of(
                await bump(keys=[self._gen_key], args=[plan.generation], client=client)
            )
        await self._revocation_pipeline(client, plan, audit_id).execute()

    def _revocation_pipeline(self, client: Any, plan: _Revocation, audit_id: str | None) -> Any:
        """A pipeline (not sent yet) that sets the plan's markers and announces the revocation."""
        pipe = client.pipeline(transaction=False)
        for marker in plan.markers:
            pipe.set(marker, b"1", px=self._marker_ttl_ms)
        pipe.publish(self._channel, self._announcement(audit_id))
        return pipe

    def _found(self, reply: Any) -> _Found:
        """The get script's answer ``{entry, generation, 1 + index of a marker set or 0}``."""
        value, raw_generation, revoked = reply
        return _Found(value, self._generation_of(raw_generation), int(revoked) - 1)

    # -- counters (failed-attempt throttling) -----------------------------------------------------
    def count(self, key: bytes, delta: int, window: float) -> int | None:
        """Add ``delta`` to the counter ``key`` (created for ``window`` seconds); the new value,
        or None when Redis cannot answer."""
        if not self._may_try():
            return None
        mark = self._mark()
        try:
            value = self._count_pipeline(self._sync_client(), key, delta, window).execute()[1]
        except Exception as exc:
            self._failed("count", exc)
            return None
        self._succeeded(mark)
        return int(value)

    async def acount(self, key: bytes, delta: int, window: float) -> int | None:
        """Awaitable :meth:`count`."""
        if not self._may_try():
            return None
        mark = self._mark()
        try:
            client, _ = self._async_client()
            value = (await self._count_pipeline(client, key, delta, window).execute())[1]
        except Exception as exc:
            self._failed("count", exc)
            return None
        self._succeeded(mark)
        return int(value)

    def _count_pipeline(self, client: Any, key: bytes, delta: int, window: float) -> Any:
        """A transaction (not sent yet) that creates the counter ``key`` for ``window``
        seconds if absent, then adds ``delta``: its second answer is the new value."""
        pipe = client.pipeline(transaction=True)
        pipe.set(self._prefix + key, 0, px=max(1, math.ceil(window * 1000)), nx=True)
        pipe.incrby(self._prefix + key, delta)
        return pipe

    # -- revocations from other processes -------------------------------------------------------
    def subscribe(self, callback: Callable[[str | None], None]) -> RevocationChannel:
        """Call ``callback(audit_id)`` for each revocation another process publishes
        (None: every token), from a listening thread; see :mod:`authmw._redis_listen`."""
        channel = RevocationChannel(
            self._listening_client,
            self._channel,
            self._accept_announcement,
            callback,
            self.retry_interval,
            self.max_retry_interval,
            lambda exc: self._failed("subscribe", exc),
            self._succeeded,
        )
        self._subscriptions.append(channel)
        return channel

    def _announcement(self, audit_id: str | None) -> bytes:
        return sign(self._keys[0].mac, self._prefix, audit_id)

    def _accept_announcement(self, message: bytes) -> tuple[bool, str | None]:
        return verify([keys.mac for keys in self._keys], self._prefix, message)

    def _listening_client(self) -> Any:
        """A client for the subscription: the given one, or one without a read timeout."""
        if self._client is not None and self.url is None:
            return self._client
        return self._redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=5.0,
            health_check_interval=15,
        )

    # -- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Close the blocking client's connections and stop listening for revocations."""
        with self._lock:
            client, self._client = self._client, None
            self._scripts = None
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.close()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
            self._async_scripts.pop(loop, None)
        if client is not None:
            await client.aclose()


def _mac(keys: _Keys, rkey: bytes, body: bytes) -> bytes:
    return hmac.new(keys.mac, len(rkey).to_bytes(2, "big") + rkey + body, hashlib.sha256).digest()
