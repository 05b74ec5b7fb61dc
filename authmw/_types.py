"""The shapes of a request the pipeline works on, named once: a WSGI environ, an ASGI
scope and its channels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Environ", "Message", "Receive", "Scope", "Send", "StartResponse"]

Environ = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StartResponse = Callable[..., Any]
