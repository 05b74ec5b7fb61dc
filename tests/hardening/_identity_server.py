"""A tiny HTTP server on loopback that answers identity-service calls the way a test says.

It speaks just enough HTTP/1.1 for the validators: it reads one request
(headers and a ``Content-Length`` body), then plays the current
:class:`Answer` and closes the connection. An answer can be sent whole,
trickled byte by byte, streamed without end, cut short, or never sent; the
server records whether the client gave up before the answer was complete.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Answer", "IdentityServer"]


@dataclass
class Answer:
    """What the server does with the next requests.

    ``mode``: ``"whole"``; ``"trickle"`` (the body ``chunk`` bytes every
    ``interval`` seconds); ``"endless"`` (a chunked body that never ends,
    stopped by the server after ``cap`` bytes); ``"cut"`` (half the body,
    then close); ``"hang"`` (read the request, answer nothing for ``cap``
    seconds).
    """

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    mode: str = "whole"
    interval: float = 0.2
    chunk: int = 1
    cap: float = 64 * 1024 * 1024


@dataclass
class Served:
    """What happened to one request."""

    request_line: str
    headers: dict[str, str]
    body: bytes
    bytes_sent: int = 0
    client_gave_up: bool = False
    finished: threading.Event = field(default_factory=threading.Event)


class IdentityServer:
    """Threaded loopback server; ``answer`` may be changed between requests."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.served: list[Served] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> IdentityServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            served = self._read_request(conn)
            if served is None:
                return
            self.served.append(served)
            try:
                self._play(conn, served, self.answer)
            except OSError:
                served.client_gave_up = True
            finally:
                served.finished.set()

    @staticmethod
    def _read_request(conn: socket.socket) -> Served | None:
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return Served(lines[0], headers, body)

    @staticmethod
    def _play(conn: socket.socket, served: Served, answer: Answer) -> None:
        head = f"HTTP/1.1 {answer.status} X\r\n"
        head += "".join(f"{n}: {v}\r\n" for n, v in answer.headers)
        head += "Connection: close\r\n"
        if answer.mode == "hang":
            deadline = time.monotonic() + answer.cap
            conn.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    if conn.recv(1) == b"":
                        served.client_gave_up = True
                        return
                except TimeoutError:
                    continue
            return
        if answer.mode == "endless":
            conn.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1"))
            piece = b" " * 65536
            frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
            conn.sendall(b"10\r\n" + b'{"token": "xxxx"' + b"\r\n")
            while served.bytes_sent < answer.cap:
                conn.sendall(frame)
                served.bytes_sent += len(piece)
            return  # cap reached: the client never gave up
        conn.sendall((head + f"Content-Length: {len(answer.body)}\r\n\r\n").encode("latin-1"))
        if answer.mode == "cut":
            conn.sendall(answer.body[: len(answer.body) // 2])
            served.bytes_sent = len(answer.body) // 2
            return
        if answer.mode == "trickle":
            for i in range(0, len(answer.body), answer.chunk):
                conn.sendall(answer.body[i : i + answer.chunk])
                served.bytes_sent += answer.chunk
                time.sleep(answer.interval)
            return
        conn.sendall(answer.body)
        served.bytes_sent = len(answer.body)
