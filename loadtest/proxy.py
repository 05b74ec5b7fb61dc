"""A TCP proxy on 127.0.0.1 that can delay, refuse or swallow traffic, run in a background thread.

Put it between a server and the identity service to make the identity
service slow (``delay``: every chunk coming back waits that long), refuse
(``mode="refuse"``: new connections are closed at once), or hang
(``mode="blackhole"``: connections are accepted and nothing is answered).
It counts connections and the token validations passing through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Proxy"]

_VALIDATION = b"GET /v3/auth/tokens"


class Proxy:
    """``Proxy(target_port)``; ``.port`` is where to connect; ``close()`` when done."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = 0.0
        self.mode = "pass"  # pass | refuse | blackhole
        self.connections = 0
        self.validations = 0
        self.open_connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="loadtest-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def set(self, *, mode: str | None = None, delay: float | None = None) -> None:
        """Change behaviour for the traffic from now on (``drop_open`` cuts current connections)."""
        if mode is not None:
            if mode not in ("pass", "refuse", "blackhole"):
                raise ValueError(mode)
            self.mode = mode
        if delay is not None:
            self.delay = float(delay)

    def drop_open(self) -> None:
        """Close every connection in flight (as a crashing server would)."""

        def close_all() -> None:
            for writer in list(self._writers):
                writer.close()

        self._loop.call_soon_threadsafe(close_all)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if upstream:
                    self.validations += data.count(_VALIDATION)
                elif self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self.open_connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                with contextlib.suppress(ConnectionError, OSError):
                    while await reader.read(65536):
                        pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
                )
            finally:
                self._writers.discard(up_writer)
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
