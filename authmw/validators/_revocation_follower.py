"""Following Keystone's revocation events, so a revoked token leaves every cache in seconds.

One daemon thread per process, started when the first listener registers
(the middleware's cache does with its first miss, so a gunicorn master that
builds the app and serves nothing runs none; a forked child whose parent
polled starts its own), asks
``GET /v3/OS-REVOKE/events?since=...`` every ``interval`` seconds with the
validator's service token and hands each new event to the revocation
listeners (the middleware's cache, which drops every identity the event
names and closes their websockets). A poll that fails is logged (one
WARNING until the feed answers again) and never rejects anything or
touches a request.

Keystone stamps ``revoked_at`` to the second, so each poll asks from one
second before the newest event seen and drops the events it already
handed on.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import _fork
from ..errors import IdentityServiceUnavailable
from ._keystone_revoke import RevocationEvent, build_events_request, parse_events
from .base import RevocationListener

if TYPE_CHECKING:
    from .keystone import KeystoneValidator

__all__ = ["RevocationFollower"]

log = logging.getLogger("authmw.validators")

_SEEN = 4096  # events remembered to drop repeats


class RevocationFollower:
    """Polls a Keystone's revocation events for one validator."""

    def __init__(self, validator: KeystoneValidator, interval: float) -> None:
        self._validator = weakref.ref(validator)
        self.interval = interval
        self.listeners: list[RevocationListener] = []
        self.polls = 0  # requests made (for the load figures in the docs)
        self.events = 0
        self._since: datetime | None = None
        self._seen: deque[RevocationEvent] = deque(maxlen=_SEEN)
        self._seen_set: set[RevocationEvent] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        _fork.reset_after_fork(self)
        _fork.restart_after_fork(self)

    def add_listener(self, listener: RevocationListener) -> None:
        """Hand events to ``listener`` too; polling starts with the first listener."""
        with self._lock:
            self.listeners.append(listener)
        self._restart()

    def _restart(self) -> None:
        """Poll in this process unless it does, has no listener, or was closed (also in
        a forked child whose parent polled: see authmw._fork)."""
        with self._lock:
            if self._thread is not None or not self.listeners or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name="authmw-keystone-revocations",
                daemon=True,
            )
            self._thread.start()

    def _after_fork(self) -> None:
        # See authmw._fork: the parent's thread is not in the child, and its Event's own
        # lock may have been held at the fork.
        self._lock = threading.Lock()
        self._thread = None
        stopped, self._stop = self._stop.is_set(), threading.Event()
        if stopped:
            self._stop.set()

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            validator = self._validator()
            if validator is None:
                return
            self.poll(validator)
            del validator
            stop.wait(self.interval)

    def poll(self, validator: KeystoneValidator) -> list[RevocationEvent]:
        """One request; the new events, already handed to the listeners."""
        try:
            self.polls += 1
            events = validator.run(self._flow(validator))
        except Exception as exc:  # never let the feed touch requests
            if not self._failing:
                log.warning(
                    "cannot read Keystone's revocation events (%s); revoked tokens stay "
                    "accepted until their cache entries expire, until it answers again",
                    exc,
                )
                self._failing = True
            return []
        if self._failing:
            log.warning("Keystone's revocation events can be read again")
            self._failing = False
        fresh = self._new(events)
        for event in fresh:
            self._tell(event)
        return fresh

    def _flow(self, validator: KeystoneValidator) -> Generator[Any, Any, list[RevocationEvent]]:
        since = self._since - timedelta(seconds=1) if self._since is not None else None
        for attempt in (1, 2):
            credential = yield validator.auth
            status, body = yield build_events_request(validator.base_url, credential, since)
            if status in (401, 403):
                validator.auth.invalidate(credential)  # our token: log in again, once
                if attempt == 1:
                    continue
            return parse_events(status, body)
        raise IdentityServiceUnavailable("Keystone refused the service identity")

    def _new(self, events: list[RevocationEvent]) -> list[RevocationEvent]:
        fresh = []
        for event in events:
            if event in self._seen_set:
                continue
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(event)
            self._seen_set.add(event)
            fresh.append(event)
            if event.revoked_at is not None and (
                self._since is None or event.revoked_at > self._since
            ):
                self._since = event.revoked_at
        self.events += len(fresh)
        return fresh

    def _tell(self, event: RevocationEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("revocation listener %r failed", listener)
