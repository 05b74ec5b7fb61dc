"""Revocations published through Redis, so every process drops a revoked token at once.

:meth:`RedisCache.revoke` publishes each revocation on the namespace's
channel, signed with the cache's secret; every process subscribed applies
the ones it can verify to its in-process cache. One daemon thread per
process listens (restarted in a forked child, as gunicorn forks workers).
A lost subscription counts as the shared cache being down (one WARNING per
outage, which says so), falls back to the ``cache_time`` bound (in-process
entries age out), and is re-established by itself.

A Redis writer without the secret cannot forge a revocation (it would only
make processes drop entries and validate again anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

from . import _fork

__all__ = ["RevocationChannel", "sign", "verify"]

log = logging.getLogger("authmw.redis")

_EVERYTHING = b"*"
_MAC_HEX = 32  # characters of the message MAC (128 bits)


def sign(mac_key: bytes, namespace: bytes, audit_id: str | None) -> bytes:
    """The message announcing a revocation (None: every token)."""
    payload = _EVERYTHING if audit_id is None else audit_id.encode("utf-8")
    return _mac(mac_key, namespace, payload) + b":" + payload


def verify(mac_keys: list[bytes], namespace: bytes, message: bytes) -> tuple[bool, str | None]:
    """(authentic, audit id or None for every token)."""
    mac, sep, payload = message.partition(b":")
    if not sep or len(mac) != _MAC_HEX:
        return False, None
    if not any(hmac.compare_digest(mac, _mac(key, namespace, payload)) for key in mac_keys):
        return False, None
    if payload == _EVERYTHING:
        return True, None
    try:
        return True, payload.decode("utf-8")
    except UnicodeDecodeError:
        return False, None


def _mac(key: bytes, namespace: bytes, payload: bytes) -> bytes:
    digest = hmac.new(key, namespace + b"\0revoked\0" + payload, hashlib.sha256).hexdigest()
    return digest[:_MAC_HEX].encode()


class RevocationChannel:
    """A subscription to the revocations of one namespace; calls ``callback`` per message."""

    subscribed: threading.Event
    _stop: threading.Event

    def __init__(
        self,
        connect: Callable[[], Any],
        channel: bytes,
        accept: Callable[[bytes], tuple[bool, str | None]],
        callback: Callable[[str | None], None],
        retry_interval: float,
        max_retry_interval: float,
        on_failure: Callable[[BaseException], None],
        on_success: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._on_failure = on_failure
        self._on_success = on_success
        self._channel = channel
        self._accept = accept
        self._callback = callback
        self._retry_interval = max(retry_interval, 0.05)
        self._max_retry_interval = max(max_retry_interval, self._retry_interval)
        self.received = 0
        self._thread: threading.Thread | None = None
        _fork.restart_after_fork(self)  # a forked child subscribes too
        self._restart()  # also makes the events below

    def _restart(self) -> None:
        """Start listening (when made, and in a forked child unless it was closed)."""
        # Set while the subscription is up (tests, stats). New at each start: in a forked
        # child, the parent's may have had its own lock held at the fork.
        self.subscribed = threading.Event()
        if self._thread is not None and self._stop.is_set():
            return  # closed: a child of the process that closed it stays closed
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="authmw-redis-revocations", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening (returns at once; the thread ends within a second)."""
        self._stop.set()

    def _run(self) -> None:
        stop = self._stop
        delay = self._retry_interval
        while not stop.is_set():
            pubsub = None
            try:
                pubsub = self._connect().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                self.subscribed.set()
                self._on_success()
                delay = self._retry_interval
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._handle(message.get("data"))
            except Exception as exc:
                self.subscribed.clear()
                log.debug("revocation subscription lost: %s", type(exc).__name__)
                if stop.is_set():
                    break  # closed: an outage now is no one's concern
                # One WARNING per outage, through the cache's own health report.
                self._on_failure(exc)
                stop.wait(delay)
                delay = min(delay * 2, self._max_retry_interval)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # a broken one cannot be closed
                        pubsub.close()
        self.subscribed.clear()

    def _handle(self, data: Any) -> None:
        if not isinstance(data, bytes):
            return
        authentic, audit_id = self._accept(data)
        if not authentic:
            log.debug("ignored a revocation message that is not signed with our secret")
            return
        self.received += 1
        try:
            self._callback(audit_id)
        except Exception:
            log.exception("applying a published revocation failed")
