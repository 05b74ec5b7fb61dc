"""The pipeline's decision when something watches it: audit, tracing, throttling.

Used only when an entry point has ``on_decision``, ``tracing`` or
``throttle``: without them the pipeline never enters this module, so they
cost nothing on the hot path. With them, every decision goes through
:meth:`Observer.decide` / :meth:`Observer.adecide`: the span opens, the
cache is asked, the client's failure budget is reserved before the
validator is (and given back unless the token failed), the token's
restrictions are checked, and exactly one :class:`~authmw.audit.AuditRecord`
goes to the hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import _telemetry
from ._hashing import fingerprint
from ._scan import Credentials
from .audit import AuditRecord
from .core import Decision
from .identity import Identity
from .restrictions import RequestFacts

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Observer", "outcome_of"]

log = logging.getLogger("authmw")

_hook_tasks: set[asyncio.Task[Any]] = set()  # async hooks in flight (kept from the GC)


def outcome_of(decision: Decision) -> str:
    """The audit outcome of ``decision``."""
    if decision.public:
        return "public"
    rejection = decision.rejection
    if rejection is None:
        return "allowed" if decision.identity is not None else "anonymous"
    return {401: "rejected", 403: "forbidden", 429: "throttled", 503: "unavailable"}.get(
        rejection.status, "rejected"
    )


class Observer:
    """Audit, tracing and throttling around one pipeline's decisions."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        core = pipeline.core
        self.hook = core.on_decision
        self.tracing = core.tracing
        self.throttle = core.throttle
        self._warned = False

    # -- deciding -------------------------------------------------------------------------------
    def decide(self, credentials: Credentials, request: RequestFacts) -> Decision:
        """The decision, blocking on the validator when needed."""
        started = time.perf_counter()
        with self._context(request) as span:
            decision = self.pipeline.cached_decision(credentials)
            cached = decision is not None
            if decision is None:
                throttle, client = self.throttle, self._client(credentials, request)
                if throttle is not None and client is not None:
                    decision = self._throttled(throttle.reserve(client))
                if decision is None:
                    decision = self.pipeline.validated(credentials)
                    if throttle is not None and client is not None and _not_failed(decision):
                        throttle.release(client)
            confirmed = decision.identity  # who a restriction refuses, for the record
            decision = self.pipeline.restricted(decision, request, credentials.source)
            self._trace(span, decision, cached)
        self.record(decision, credentials, request, started, cached, confirmed)
        return decision

    async def adecide(self, credentials: Credentials, request: RequestFacts) -> Decision:
        """The decision, awaiting the validator when needed."""
        started = time.perf_counter()
        with self._context(request) as span:
            decision = self.pipeline.cached_decision(credentials)
            cached = decision is not None
            if decision is None:
                throttle, client = self.throttle, self._client(credentials, request)
                if throttle is not None and client is not None:
                    decision = self._throttled(await throttle.areserve(client))
                if decision is None:
                    decision = await self.pipeline.avalidated(credentials)
                    if throttle is not None and client is not None and _not_failed(decision):
                        await throttle.arelease(client)
            confirmed = decision.identity  # who a restriction refuses, for the record
            decision = self.pipeline.restricted(decision, request, credentials.source)
            self._trace(span, decision, cached)
        self.record(decision, credentials, request, started, cached, confirmed)
        return decision

    def _throttled(self, wait: float | None) -> Decision | None:
        if wait is None:
            return None
        return Decision(None, self.pipeline.responses.too_many(wait))

    def _client(self, credentials: Credentials, request: RequestFacts) -> str | None:
        """The client whose failure budget deciding uses, or None: not throttling, or no
        well-formed token to validate (no token, or only malformed ones: answered 401
        without the validator, so not a failure the budget counts)."""
        if self.throttle is None:
            return None
        core = self.pipeline.core
        answers = core._answers[credentials.source]
        for value in (credentials.token, credentials.service_token):
            if value is not None and isinstance(core._extract(value, answers), str):
                return request.client
        return None

    # -- tracing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _context(self, request: RequestFacts) -> Any:
        token = _telemetry.request_id.set(request.request_id)
        try:
            if self.tracing is None:
                yield None
            else:
                with self.tracing.authentication(request.method, request.path) as span:
                    yield span
        finally:
            _telemetry.request_id.reset(token)

    def _trace(self, span: Any, decision: Decision, cached: bool) -> None:
        if span is not None and self.tracing is not None:
            self.tracing.decided(span, outcome_of(decision), cached, decision.identity)

    # -- audit ----------------------------------------------------------------------------------
    def record(
        self,
        decision: Decision,
        credentials: Credentials | None,
        request: RequestFacts,
        started: float | None,
        cached: bool,
        identity: Identity | None = None,
    ) -> None:
        """Hand one record of ``decision`` to the hook (if any); ``started``: when deciding
        began (:func:`time.perf_counter`), None when nothing was decided (a public route);
        ``identity``: the one confirmed before a restriction refused it, if so."""
        hook = self.hook
        if hook is None:
            return
        if identity is None:
            identity = decision.identity
        rejection = decision.rejection
        token = credentials.token.strip() if credentials and credentials.token else None
        service = decision.service_identity
        record = AuditRecord(
            time=time.time(),
            outcome=outcome_of(decision),
            status=rejection.status if rejection is not None else None,
            reason=rejection.reason if rejection is not None else "",
            method=request.method,
            path=request.path,
            client=request.client,
            request_id=request.request_id,
            token=fingerprint(token) if token else None,
            audit_id=identity.audit_ids[0] if identity is not None and identity.audit_ids else None,
            user_id=identity.user_id if identity is not None else None,
            user_name=identity.user_name if identity is not None else None,
            project_id=identity.project_id if identity is not None else None,
            domain_id=identity.domain_id if identity is not None else None,
            roles=identity.roles if identity is not None else (),
            service_user_id=service.user_id if service is not None else None,
            cached=cached,
            latency_ms=0.0 if started is None else round((time.perf_counter() - started) * 1e3, 3),
        )
        self._call(hook, record)

    def _call(self, hook: Callable[[AuditRecord], Any], record: AuditRecord) -> None:
        try:
            result = hook(record)
            if inspect.isawaitable(result):
                _schedule(result)
        except Exception:
            if not self._warned:
                self._warned = True
                log.exception("the on_decision hook failed (further failures at DEBUG)")
            else:
                log.debug("the on_decision hook failed", exc_info=True)


def _not_failed(decision: Decision) -> bool:
    """Whether a decision gives the client's reserved failure back (not a 401)."""
    rejection = decision.rejection
    return rejection is None or rejection.status != 401


def _schedule(awaitable: Awaitable[Any]) -> None:
    """Run an async hook's awaitable: on the running loop, or to completion without one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_wrap(awaitable))
        return
    task = loop.create_task(_wrap(awaitable))
    _hook_tasks.add(task)
    task.add_done_callback(_hook_tasks.discard)


async def _wrap(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("the async on_decision hook failed")
