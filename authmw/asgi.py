"""ASGI adapter: ``http`` and ``websocket`` scopes go through the pipeline, others pass.

The app is called with a shallow copy of the scope, never the server's own
dict: the copy carries a new ``headers`` list (forged identity headers
removed, Keystone-compatible ones added) and ``scope["authmw.identity"]``.
Middleware outside authmw keeps seeing the request as the client sent it.
"""

from __future__ import annotations

from typing import Any

from . import _checks
from ._types import Receive, Scope, Send
from .core import AuthCore
from .headers import IDENTITY_KEY, SERVICE_IDENTITY_KEY
from .pipeline import Pipeline
from .validators.base import Validator

__all__ = ["IDENTITY_KEY", "SERVICE_IDENTITY_KEY", "ASGIAuthMiddleware"]


class ASGIAuthMiddleware:
    """Authenticates every ``http`` and ``websocket`` request of an ASGI app.

    Usable as ``app.add_middleware(ASGIAuthMiddleware, validator=...)`` in
    Starlette/FastAPI or wrapped around any ASGI app. Blocking validators run
    in worker threads; cached tokens are decided without leaving the loop.
    The validator's async resources are closed on lifespan shutdown.
    """

    @_checks.passing_keywords_to(AuthCore.__init__)
    def __init__(
        self,
        app: Any,
        /,
        validator: Validator | None = None,
        *,
        core: AuthCore | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.pipeline = Pipeline.build(validator, core, options)
        self.core = self.pipeline.core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                send = self._lifespan_send(send)
            await self.app(scope, receive, send)
            return
        pipeline = self.pipeline
        scope, decision = pipeline.begin_scope(scope)
        if decision is None:  # not in the cache: ask the validator
            decision = await pipeline.resolve_scope(scope)
        if decision.rejection is not None:
            await pipeline.send_rejection(scope, receive, send, decision.rejection)
            return
        if scope_type == "http" and decision.identity is not None:
            await self.app(scope, receive, send)  # the common case: nothing to watch
            return
        receive, send, done = pipeline.app_channels(scope, decision, receive, send)
        if done is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            done()

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Any) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await self.core.aclose()
            await send(message)

        return lifespan_send

    def stats(self) -> dict[str, Any]:
        """Cache and circuit counters (see :meth:`AuthCore.stats`)."""
        return self.core.stats()
