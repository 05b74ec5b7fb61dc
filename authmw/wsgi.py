"""WSGI adapter: the environ goes through the :class:`~authmw.pipeline.Pipeline`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _checks
from .core import AuthCore
from .headers import IDENTITY_KEY, SERVICE_IDENTITY_KEY
from .pipeline import Pipeline

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .validators.base import Validator

__all__ = ["IDENTITY_KEY", "SERVICE_IDENTITY_KEY", "WSGIAuthMiddleware"]


class WSGIAuthMiddleware:
    """Authenticates every request of a WSGI app by its ``X-Auth-Token``.

    On success the app sees ``environ["authmw.identity"]`` (an
    :class:`~authmw.Identity`) and Keystone-compatible ``HTTP_X_*`` keys;
    forged identity headers are removed from every request first. Options
    are those of :class:`~authmw.core.AuthCore`; pass ``core=`` to share one.
    """

    @_checks.passing_keywords_to(AuthCore.__init__)
    def __init__(
        self,
        app: WSGIApplication,
        validator: Validator | None = None,
        *,
        core: AuthCore | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.pipeline = Pipeline.build(validator, core, options)
        self.core = self.pipeline.core

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        decision = self.pipeline.run_environ(environ)
        if decision.rejection is not None:
            return self.pipeline.answer_environ(environ, start_response, decision.rejection)
        if decision.identity is None and decision.challenged:  # no property call on a hit
            start_response = self.pipeline.challenging_start_response(start_response)
        return self.app(environ, start_response)

    def stats(self) -> dict[str, Any]:
        """Cache and circuit counters (see :meth:`AuthCore.stats`)."""
        return self.core.stats()
