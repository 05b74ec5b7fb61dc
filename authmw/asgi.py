"""ASGI adapter: ``http`` and ``websocket`` scopes are authenticated, others pass through.

The app is called with a shallow copy of the scope, never the server's own
dict: the copy carries a new ``headers`` list (forged identity headers
removed, Keystone-compatible ones added) and ``scope["authmw.identity"]``.
Middleware outside authmw keeps seeing the request as the client sent it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import headers as _headers
from .core import AuthCore, Decision, Rejection
from .validators.base import Validator

__all__ = ["IDENTITY_KEY", "SERVICE_IDENTITY_KEY", "ASGIAuthMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_KEY = "authmw.identity"
SERVICE_IDENTITY_KEY = "authmw.service_identity"

_STATUS_NAME = _headers.IDENTITY_STATUS.lower().encode()
_SERVICE_STATUS_NAME = _headers.SERVICE_IDENTITY_STATUS.lower().encode()
_CONFIRMED = (_STATUS_NAME, b"Confirmed")
_INVALID = (_STATUS_NAME, b"Invalid")

# Header categories, decided once per distinct raw header name.
_KEEP, _STRIP, _TOKEN, _SERVICE_TOKEN, _FIWARE_SERVICE, _FIWARE_PATH = range(6)
_NAME_MEMO_MAX = 4096

# Websocket close codes when the denial-response extension is not offered.
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013


class ASGIAuthMiddleware:
    """Authenticates every ``http`` and ``websocket`` request of an ASGI app.

    Usable as ``app.add_middleware(ASGIAuthMiddleware, validator=...)`` in
    Starlette/FastAPI or wrapped around any ASGI app. Blocking validators run
    in worker threads; cached tokens are decided without leaving the loop.
    The validator's async resources are closed on lifespan shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        validator: Validator | None = None,
        *,
        core: AuthCore | None = None,
        **options: Any,
    ) -> None:
        core = AuthCore.for_middleware(validator, core, options)
        self.app = app
        self.core = core
        self._token_name = core.token_header.lower().encode()
        self._service_token_name = core.service_token_header.lower().encode()
        self._name_memo: dict[bytes, int] = {}

    def _category(self, name: bytes) -> int:
        folded = name.lower().replace(b"_", b"-")
        if folded == self._token_name:
            category = _TOKEN
        elif folded == self._service_token_name:
            category = _SERVICE_TOKEN
        elif _headers.is_stripped(folded.decode("latin-1")):
            category = _STRIP
        elif folded == b"fiware-service":
            category = _FIWARE_SERVICE
        elif folded == b"fiware-servicepath":
            category = _FIWARE_PATH
        else:
            category = _KEEP
        if len(self._name_memo) < _NAME_MEMO_MAX:
            self._name_memo[name] = category
        return category

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return

        # One pass over the headers: drop forged ones, collect the token.
        memo_get = self._name_memo.get
        kept: list[tuple[bytes, bytes]] = []
        token: list[bytes] = []
        service_token: list[bytes] = []
        fiware_service: list[bytes] = []
        fiware_path: list[bytes] = []
        for item in scope.get("headers") or ():
            category = memo_get(item[0])
            if category is None:
                category = self._category(item[0])
            if category == _KEEP:
                kept.append(item)
            elif category == _STRIP:
                continue
            else:
                kept.append(item)
                if category == _TOKEN:
                    token.append(item[1])
                elif category == _SERVICE_TOKEN:
                    service_token.append(item[1])
                elif category == _FIWARE_SERVICE:
                    fiware_service.append(item[1])
                else:
                    fiware_path.append(item[1])

        core = self.core
        scope = dict(scope)
        scope["headers"] = kept
        if core.public_routes.enabled:
            path = scope.get("path", "")
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :] or "/"
            raw_path = scope.get("raw_path")
            if core.public_routes.match(
                scope.get("method", "GET") if scope_type == "http" else "GET",
                path,
                raw_path.decode("latin-1") if raw_path else None,
            ):
                scope[IDENTITY_KEY] = None
                await self.app(scope, receive, send)
                return

        decision = await core.authenticate_async(
            _joined(token),
            _joined(service_token),
            _joined(fiware_service),
            _joined(fiware_path),
        )
        rejection = decision.rejection
        if rejection is not None:
            if scope_type == "http":
                await _send_http_rejection(send, rejection)
            else:
                await _deny_websocket(scope, receive, send, rejection)
            return

        identity = decision.identity
        scope[IDENTITY_KEY] = identity
        if identity is not None:
            kept.extend(_headers.asgi_items(identity))
            kept.append(_CONFIRMED)
        else:
            kept.append(_INVALID)
        if decision.service_status is not None:
            _apply_service(scope, kept, decision)
        if identity is None:
            send = self._challenging(send)
        await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await self.core.aclose()
            await send(message)

        return lifespan_send

    def _challenging(self, send: Send) -> Send:
        """send that adds WWW-Authenticate to the app's own 401 (delayed mode)."""
        challenge = (b"www-authenticate", self.core.www_authenticate.encode("latin-1"))

        async def challenging_send(message: Message) -> None:
            if (
                message.get("type") in ("http.response.start", "websocket.http.response.start")
                and message.get("status") == 401
            ):
                response_headers = list(message.get("headers") or ())
                if not any(name.lower() == b"www-authenticate" for name, _ in response_headers):
                    message = dict(message)
                    message["headers"] = [*response_headers, challenge]
            await send(message)

        return challenging_send

    def stats(self) -> dict[str, Any]:
        """Cache and circuit counters (see :meth:`AuthCore.stats`)."""
        return self.core.stats()


def _joined(values: list[bytes]) -> str | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0].decode("latin-1")
    # Same form as a WSGI server's folded header: the core rejects disagreement.
    return ",".join(v.decode("latin-1") for v in values)


def _apply_service(scope: Scope, headers: list[tuple[bytes, bytes]], decision: Decision) -> None:
    status = decision.service_status or "Invalid"
    headers.append((_SERVICE_STATUS_NAME, status.encode()))
    service = decision.service_identity
    scope[SERVICE_IDENTITY_KEY] = service
    if service is not None and status == "Confirmed":
        headers.extend(_headers.asgi_items(service, service=True))


def _encoded_headers(rejection: Rejection) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in rejection.headers]


async def _send_http_rejection(send: Send, rejection: Rejection) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": rejection.status,
            "headers": _encoded_headers(rejection),
        }
    )
    await send({"type": "http.response.body", "body": rejection.body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, rejection: Rejection) -> None:
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # client already gone
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": rejection.status,
                "headers": _encoded_headers(rejection),
            }
        )
        await send({"type": "websocket.http.response.body", "body": rejection.body})
        return
    code = _WS_TRY_AGAIN_LATER if rejection.status == 503 else _WS_POLICY_VIOLATION
    await send({"type": "websocket.close", "code": code, "reason": ""})
