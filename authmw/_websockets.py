"""Open websockets end with their token: closed at its expiry or when it is revoked here.

A websocket is authenticated once, at the handshake; without this it would
outlive its token. :class:`SocketWatch` keeps the open sockets of one
pipeline. Each event loop has one scheduler task for all of them (a heap
of expiry times, no task per socket). A revocation this process sees (the
local store's ``revoke``, a cache invalidation, a shared-cache message)
closes the sockets of that token at once; a revocation of everything closes
every socket (fail closed: the tokens are not kept, so they cannot be asked
about again). A closed socket gets close code 1008 and the app's
``receive()`` answers ``websocket.disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable

from . import _fork
from ._types import Message, Receive, Scope, Send
from .headers import IDENTITY_KEY
from .identity import Identity
from .validators.base import Revocation, revokes

__all__ = ["CLOSE_CODE", "SocketWatch"]

log = logging.getLogger("authmw")


CLOSE_CODE = 1008
"""Close code of a websocket whose token expired or was revoked (policy violation)."""


class _Socket:
    """One open websocket: its token's facts, its channels to the app, how to end it.

    It is watched from the moment the app accepts it, with the identity the
    scope holds then (so an identity found late, by a FastAPI dependency,
    counts too).
    """

    __slots__ = (
        "closed",
        "deadline",
        "ended",
        "identity",
        "loop",
        "pending",
        "scope",
        "server_receive",
        "server_send",
        "watch",
    )

    def __init__(self, watch: SocketWatch, scope: Scope, receive: Receive, send: Send) -> None:
        self.watch = watch
        self.scope = scope
        self.server_receive = receive
        self.server_send = send
        self.loop = asyncio.get_running_loop()
        self.identity: Identity | None = None
        self.deadline = math.inf
        self.closed = False
        self.ended: asyncio.Future[None] = self.loop.create_future()  # set once authmw closes it
        self.pending: asyncio.Future[Message] | None = None

    async def send(self, message: Message) -> None:
        """The app's ``send``: starts the watch at accept; after authmw closed it, nothing."""
        if self.closed:
            return
        if message.get("type") == "websocket.accept":
            identity = self.scope.get(IDENTITY_KEY)
            if isinstance(identity, Identity):
                self.identity = identity
                self.deadline = identity.expires_timestamp
                self.watch._add(self)
        await self.server_send(message)

    async def receive(self) -> Message:
        """The app's ``receive``: a disconnect once authmw closed the socket."""
        if not self.closed:
            if self.pending is None:
                self.pending = asyncio.ensure_future(self.server_receive())
            await asyncio.wait((self.pending, self.ended), return_when=asyncio.FIRST_COMPLETED)
            if self.pending.done():
                message, self.pending = self.pending.result(), None
                return message
        return {"type": "websocket.disconnect", "code": CLOSE_CODE}

    def done(self) -> None:
        """The app returned: stop watching."""
        self.closed = True
        if self.pending is not None:
            self.pending.cancel()
        self.watch._discard(self)

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.ended.done():
            self.ended.set_result(None)
        try:
            await self.server_send(
                {"type": "websocket.close", "code": CLOSE_CODE, "reason": reason}
            )
        except Exception:  # already gone: nothing left to close
            log.debug("websocket already closed", exc_info=True)


class _Scheduler:
    """The one task of an event loop that closes its sockets at their deadlines."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        self.loop = loop
        self.clock = clock
        self.heap: list[tuple[float, int, _Socket]] = []
        self.counter = itertools.count()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, socket: _Socket) -> None:
        if math.isinf(socket.deadline):
            return
        earliest = self.heap[0][0] if self.heap else math.inf
        heapq.heappush(self.heap, (socket.deadline, next(self.counter), socket))
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self.run())
        elif socket.deadline < earliest:
            self.wake.set()

    async def run(self) -> None:
        while self.heap:
            deadline, _, socket = self.heap[0]
            if socket.closed:
                heapq.heappop(self.heap)
                continue
            delay = deadline - self.clock()
            if delay <= 0:
                heapq.heappop(self.heap)
                log.info("closing a websocket: its token expired")
                await socket.close("token expired")
                continue
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)


class SocketWatch:
    """The open websockets of one pipeline, each ended with its token."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # sockets are added in loops, revocations come from anywhere
        self._sockets: set[_Socket] = set()
        self._schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Scheduler] = (
            weakref.WeakKeyDictionary()
        )
        _fork.reset_after_fork(self)

    def _after_fork(self) -> None:
        # A forked child (see authmw._fork) has none of the parent's sockets nor loops.
        self._lock = threading.Lock()
        self._sockets = set()
        self._schedulers = weakref.WeakKeyDictionary()

    def channels(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Receive, Send, Callable[[], None]]:
        """``receive`` and ``send`` for the app of a websocket, and the function to
        call when the app returns."""
        socket = _Socket(self, scope, receive, send)
        return socket.receive, socket.send, socket.done

    def _add(self, socket: _Socket) -> None:
        with self._lock:
            self._sockets.add(socket)
            scheduler = self._schedulers.get(socket.loop)
            if scheduler is None:
                scheduler = self._schedulers[socket.loop] = _Scheduler(socket.loop, self._clock)
        scheduler.add(socket)

    def _discard(self, socket: _Socket) -> None:
        with self._lock:
            self._sockets.discard(socket)

    def revoked(self, revocation: Revocation) -> None:
        """Close the sockets of the tokens ``revocation`` names (every socket for None).

        Safe to call from any thread: the closing runs in each socket's loop.
        """
        with self._lock:
            doomed = [
                s
                for s in self._sockets
                if s.identity is not None and revokes(revocation, s.identity)
            ]
        for socket in doomed:
            log.info("closing a websocket: its token was revoked")
            try:
                socket.loop.call_soon_threadsafe(_close_soon, socket)
            except RuntimeError:  # the loop is gone, and the socket with it
                continue

    def __len__(self) -> int:
        with self._lock:
            return len(self._sockets)


def _close_soon(socket: _Socket) -> None:
    socket.loop.create_task(socket.close("token revoked"))
