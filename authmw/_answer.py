"""Step 6 of the pipeline: answering, and the channels the app gets.

A mixin of :class:`~authmw.pipeline.Pipeline`: refusals sent as WSGI or ASGI
answers (HTTP, or a websocket refused before it is accepted), and the
``start_response``/``send`` given to the app when it is called without an
identity (its own 401 gets the challenge) or over a websocket (closed at
expiry or revocation, accepting the subprotocol the token came in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._scan import ACCEPT_SUBPROTOCOL_KEY
from ._types import Environ, Message, Receive, Scope, Send, StartResponse
from .responses import Rejection, Responses, websocket_close_code

if TYPE_CHECKING:
    from ._websockets import SocketWatch
    from .decision import Decision

__all__ = ["Answering"]


class Answering:
    """What the pipeline answers and the channels it gives the app."""

    __slots__ = ()
    responses: Responses
    sockets: SocketWatch

    @staticmethod
    def answer_environ(
        environ: Environ, start_response: StartResponse, rejection: Rejection
    ) -> list[bytes]:
        """Answer a WSGI request with ``rejection`` (no body for HEAD)."""
        start_response(rejection.status_line, list(rejection.headers))
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [rejection.body]

    def challenging_start_response(self, start_response: StartResponse) -> StartResponse:
        """``start_response`` adding the challenge to the app's own 401 (no identity)."""
        challenge = self.responses.challenge_header
        needs = self.responses.needs_challenge

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[:3] == "401" and needs(401, (n for n, _ in headers)):
                headers = [*headers, challenge]
            return start_response(status, headers, exc_info)

        return start

    def app_channels(
        self, scope: Scope, decision: Decision, receive: Receive, send: Send
    ) -> tuple[Receive, Send, Callable[[], None] | None]:
        """``receive`` and ``send`` for the app, and what to call when it returns (None
        for HTTP). A websocket is closed when its token expires or is revoked here."""
        if scope["type"] == "http":
            return receive, self.challenging_send(send) if decision.challenged else send, None
        return self.sockets.channels(scope, receive, self.app_send(scope, decision, send))

    def deferred_channels(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[Receive, Send, Callable[[], None]]:
        """:meth:`app_channels` for a websocket whose identity is decided later, in the app."""
        subprotocol = scope.get(ACCEPT_SUBPROTOCOL_KEY)
        if subprotocol is not None:
            send = _accepting(send, subprotocol)
        return self.sockets.channels(scope, receive, send)

    def app_send(self, scope: Scope, decision: Decision, send: Send) -> Send:
        """The ``send`` to give the app: adds the challenge to its own 401 when
        there is no identity, selects the subprotocol the token came in."""
        if decision.challenged:
            send = self.challenging_send(send)
        subprotocol = scope.get(ACCEPT_SUBPROTOCOL_KEY)
        if subprotocol is not None:
            send = _accepting(send, subprotocol)
        return send

    def challenging_send(self, send: Send) -> Send:
        """ASGI ``send`` adding the challenge to the app's own 401 (no identity)."""
        name, value = self.responses.challenge_header
        challenge = (name.lower().encode("latin-1"), value.encode("latin-1"))
        needs = self.responses.needs_challenge
        starts = ("http.response.start", "websocket.http.response.start")

        async def challenging_send(message: Message) -> None:
            if message.get("type") in starts and message.get("status") == 401:
                response_headers = list(message.get("headers") or ())
                if needs(401, (n for n, _ in response_headers)):
                    message = dict(message)
                    message["headers"] = [*response_headers, challenge]
            await send(message)

        return challenging_send

    @staticmethod
    async def send_rejection(
        scope: Scope, receive: Receive, send: Send, rejection: Rejection
    ) -> None:
        """Answer an ASGI request with ``rejection`` (HTTP, or a websocket before accept)."""
        headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in rejection.headers]
        if scope["type"] == "http":
            await send(
                {"type": "http.response.start", "status": rejection.status, "headers": headers}
            )
            body = b"" if scope.get("method") == "HEAD" else rejection.body
            await send({"type": "http.response.body", "body": body})
            return
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # client already gone
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": rejection.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": rejection.body})
            return
        await send(
            {
                "type": "websocket.close",
                "code": websocket_close_code(rejection.status),
                "reason": "",
            }
        )


def _accepting(send: Send, subprotocol: str) -> Send:
    """``send`` whose websocket accept selects ``subprotocol`` unless the app chose one:
    a browser drops a socket whose accept selects none of the offered subprotocols."""

    async def accepting_send(message: Message) -> None:
        if message.get("type") == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return accepting_send
