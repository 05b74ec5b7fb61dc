"""The forward-auth entry points: an ASGI app and a WSGI app on the one pipeline.

A gateway asks "may this request pass?" with a check request of its own.
The app translates the check request into the request it is about (the
gateway mode reads the original method and target from the gateway's
headers; every other header is the client's, as the gateway passed it on),
runs the pipeline on that, and translates the decision back:

- allowed: ``200`` with the identity headers the pipeline injected (none on
  a public route), for the gateway to copy upstream; in Envoy mode also
  ``X-Envoy-Auth-Headers-To-Remove`` naming every other identity header,
  so a client-sent copy never reaches the upstream;
- refused: the pipeline's answer as it is (401 with ``WWW-Authenticate``,
  403, 429, 503 with ``Retry-After``), which the gateway passes on;
- a check request that does not say which request it is about: 400.

With tracing on, the check's span continues the gateway's trace (the
``traceparent`` the gateway, or its client, sent with the check).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import headers as _headers
from .._clients import parse_address
from .._types import Message, Receive, Scope, Send
from ..pipeline import Access, Pipeline
from ._modes import GatewayMode, Original

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ..core import AuthCore

__all__ = ["ForwardAuth", "ForwardAuthWSGI"]

_ALLOWED = 200  # the gateway's "pass": every refusal comes from the pipeline
_ALLOWED_LINE = "200 OK"
_EMPTY = (b"content-length", b"0")
_TO_REMOVE = _headers.ENVOY_HEADERS_TO_REMOVE.lower().encode()
_ALL_IDENTITY_NAMES = tuple(sorted(name.lower() for name in _headers.STRIPPED_HEADERS))
_TARGET_KEYS = frozenset({"PATH_INFO", "QUERY_STRING", "RAW_URI", "REQUEST_URI"})
_ORIGINAL_KEYS = ("type", "asgi", "http_version", "scheme", "server", "client", "extensions")
_FORWARDED = _headers.X_FORWARDED_FOR.lower().encode()
_FORWARDED_KEY = _headers.environ_key(_headers.X_FORWARDED_FOR)
_FORWARDED_CHECKS = 64  # checks looked at for a missing X-Forwarded-For when throttling

log = logging.getLogger("authmw.gateway")


class _Base:
    """What both forms share: the pipeline and the gateway mode."""

    def __init__(self, core: AuthCore, mode: GatewayMode, access: Access | None = None) -> None:
        self.pipeline = Pipeline(core, access=access)
        self.core = core
        self.mode = mode
        self._read = mode.read_names
        self._read_keys = frozenset(_headers.environ_key(n.decode()) for n in self._read)
        self._envoy = mode.uri_header is None
        self._removals: dict[frozenset[str], str] = {}
        self.closers: list[Callable[[], None]] = []
        """Called by :meth:`close` (and at lifespan shutdown): what the settings opened."""
        self._traced = _trace_parent() if core.tracing is not None else None
        self._forwarded_checks = _FORWARDED_CHECKS if core.throttle is not None else 0

    def _forwarded(self, peer: str | None, forwarded: bool) -> None:
        """Throttling: warn once if a trusted gateway sends no X-Forwarded-For (every
        client would share the gateway's budget)."""
        self._forwarded_checks -= 1
        address = parse_address(peer) if peer else None
        if forwarded or address is None:
            return
        if any(address in network for network in self.core.clients.networks):
            self._forwarded_checks = 0
            log.warning(
                "a check from the gateway (%s) carries no X-Forwarded-For: throttling counts "
                "it against the gateway's address, which every client shares; make the "
                "gateway send the client's address (docs/gateway.md)",
                address,
            )

    def close(self) -> None:
        """Close the validator's blocking resources and what the settings opened."""
        self.core.close()
        for close in self.closers:
            close()

    def _to_remove(self, names: Iterable[str]) -> str:
        """Envoy: every identity header name the answer does not set, comma-separated."""
        present = frozenset(names)
        value = self._removals.get(present)
        if value is None:
            value = ",".join(n for n in _ALL_IDENTITY_NAMES if n not in present)
            if len(self._removals) < 256:  # few distinct sets: one per kind of identity
                self._removals[present] = value
        return value

    def stats(self) -> dict[str, Any]:
        """Cache and circuit counters (see :meth:`AuthCore.stats`)."""
        return self.core.stats()


class ForwardAuth(_Base):
    """The ASGI forward-auth app (``authmw serve`` runs it on uvicorn)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return  # no gateway checks over websockets: the connection is refused
        if self._traced is None:
            await self._check(scope, receive, send)
            return
        with self._traced(_pairs(scope.get("headers") or ())):
            await self._check(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        original, headers = self._original(scope)
        if self._forwarded_checks > 0:
            client = scope.get("client")
            forwarded = any(name.lower() == _FORWARDED for name, _ in headers)
            self._forwarded(client[0] if client else None, forwarded)
        pipeline = self.pipeline
        if isinstance(original, str):
            await pipeline.send_rejection(
                scope, receive, send, pipeline.responses.bad_request(original)
            )
            return
        request: Scope = {key: scope[key] for key in _ORIGINAL_KEYS if key in scope}
        request.update(
            method=original.method,
            path=original.path,
            raw_path=original.raw_path,
            query_string=original.query,
            root_path="",
            headers=headers,
        )
        request, decision = pipeline.begin_scope(request, copy=False)
        if decision is None:  # not in the cache: ask the validator
            decision = await pipeline.resolve_scope(request)
        if decision.rejection is not None:
            await pipeline.send_rejection(scope, receive, send, decision.rejection)
            return
        identity: Sequence[tuple[bytes, bytes]] = pipeline.header_items(decision)
        answer = [_EMPTY, *identity]
        if self._envoy:
            names = (name.decode("latin-1") for name, _ in identity)
            answer.append((_TO_REMOVE, self._to_remove(names).encode()))
        await send({"type": "http.response.start", "status": _ALLOWED, "headers": answer})
        await send({"type": "http.response.body", "body": b""})

    def _original(self, scope: Scope) -> tuple[Original | str, list[tuple[bytes, bytes]]]:
        """The original request and its headers (without the gateway's own)."""
        read = self._read
        found: dict[bytes, bytes | None] = {}
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        for item in scope.get("headers") or ():
            name = item[0]
            if name in read or (not name.islower() and name.lower() in read):
                folded = name.lower()
                found[folded] = item[1] if found.get(folded, item[1]) == item[1] else None
            else:
                append(item)

        def header(wanted: str) -> str | None:
            value = found.get(wanted.lower().encode())
            return value.decode("latin-1") if value is not None else None

        target = scope.get("raw_path") or scope.get("path", "/").encode("latin-1")
        query = scope.get("query_string") or b""
        if query:
            target = target + b"?" + query
        return self.mode.original(str(scope.get("method", "GET")), target, header), headers

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.core.aclose()
                for close in self.closers:
                    close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class ForwardAuthWSGI(_Base):
    """The WSGI forward-auth app (e.g. under gunicorn: ``authmw.gateway:wsgi_app()``)."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        if self._traced is None:
            return self._check(environ, start_response)
        carrier = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        with self._traced(carrier):
            return self._check(environ, start_response)

    def _check(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        original, request = self._original(environ)
        if self._forwarded_checks > 0:
            self._forwarded(environ.get("REMOTE_ADDR"), _FORWARDED_KEY in environ)
        pipeline = self.pipeline
        if isinstance(original, str):
            rejection = pipeline.responses.bad_request(original)
            return pipeline.answer_environ(environ, start_response, rejection)
        raw = original.raw_path.decode("latin-1")
        decision = pipeline.run_environ(request, raw)
        if decision.rejection is not None:
            return pipeline.answer_environ(environ, start_response, decision.rejection)
        identity = _headers.injected_environ_items(request)
        answer = [("Content-Length", "0"), *identity]
        if self._envoy:
            names = (name.lower() for name, _ in identity)
            answer.append((_headers.ENVOY_HEADERS_TO_REMOVE, self._to_remove(names)))
        start_response(_ALLOWED_LINE, answer)
        return []

    def _original(self, environ: WSGIEnvironment) -> tuple[Original | str, dict[str, Any]]:
        """The original request and an environ for it (without the gateway's own headers)."""
        read = self._read_keys
        request: dict[str, Any] = {
            key: value
            for key, value in environ.items()
            if key not in read and key not in _TARGET_KEYS and not key.startswith("wsgi.")
        }

        def header(wanted: str) -> str | None:
            value = environ.get(_headers.environ_key(wanted))
            return value if isinstance(value, str) else None

        target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not target:
            target = quote(environ.get("PATH_INFO", "/"), safe="/;=,:@!$&'()*+~")
            if environ.get("QUERY_STRING"):
                target += "?" + environ["QUERY_STRING"]
        method = str(environ.get("REQUEST_METHOD", "GET"))
        original = self.mode.original(method, target.encode("latin-1"), header)
        if not isinstance(original, str):
            request.update(
                REQUEST_METHOD=original.method,
                SCRIPT_NAME="",
                PATH_INFO=original.path_info,
                QUERY_STRING=original.query.decode("latin-1"),
                RAW_URI=original.raw_path.decode("latin-1"),
            )
        return original, request


def _pairs(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """An ASGI header list as a carrier for OpenTelemetry's propagators."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}


def _trace_parent() -> Callable[[Mapping[str, str]], contextlib.AbstractContextManager[None]]:
    """A context manager making the trace context in a check's headers the current one."""
    from opentelemetry import context, propagate

    @contextlib.contextmanager
    def parent(carrier: Mapping[str, str]) -> Iterator[None]:
        token = context.attach(propagate.extract(carrier))
        try:
            yield
        finally:
            context.detach(token)

    return parent
