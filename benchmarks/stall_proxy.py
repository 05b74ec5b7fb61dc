"""A TCP proxy on 127.0.0.1 that can stall: ``python stall_proxy.py TARGET_PORT DELAY``.

Prints its port on the first line. SIGUSR1: from now on hold every chunk
going to the target for DELAY seconds (an identity service that stalls);
SIGUSR2: forward at once again. Prints one line after each change.
"""

from __future__ import annotations

import asyncio
import signal
import sys


class Proxy:
    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.stalled = False

    async def pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if upstream and self.stalled:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self.pipe(reader, target_writer, True), self.pipe(target_reader, writer, False)
        )

    def set(self, stalled: bool) -> None:
        self.stalled = stalled
        print("stalled" if stalled else "resumed", flush=True)


async def main() -> None:
    proxy = Proxy(int(sys.argv[1]), float(sys.argv[2]))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.set, True)
    loop.add_signal_handler(signal.SIGUSR2, proxy.set, False)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
