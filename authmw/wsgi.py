"""WSGI adapter: environ in, :class:`~authmw.core.AuthCore` decides, environ or response out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import headers as _headers
from .core import AuthCore, Decision

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .validators.base import Validator

__all__ = ["IDENTITY_KEY", "SERVICE_IDENTITY_KEY", "WSGIAuthMiddleware"]

IDENTITY_KEY = "authmw.identity"
SERVICE_IDENTITY_KEY = "authmw.service_identity"

_STATUS_KEY = _headers.environ_key(_headers.IDENTITY_STATUS)
_SERVICE_STATUS_KEY = _headers.environ_key(_headers.SERVICE_IDENTITY_STATUS)
_FIWARE_SERVICE_KEY = _headers.environ_key("Fiware-Service")
_FIWARE_PATH_KEY = _headers.environ_key("Fiware-ServicePath")


class WSGIAuthMiddleware:
    """Authenticates every request of a WSGI app by its ``X-Auth-Token``.

    On success the app sees ``environ["authmw.identity"]`` (an
    :class:`~authmw.Identity`) and Keystone-compatible ``HTTP_X_*`` keys;
    forged identity headers are removed from every request first. Options
    are those of :class:`~authmw.core.AuthCore`; pass ``core=`` to share one.
    """

    def __init__(
        self,
        app: WSGIApplication,
        validator: Validator | None = None,
        *,
        core: AuthCore | None = None,
        **options: Any,
    ) -> None:
        core = AuthCore.for_middleware(validator, core, options)
        self.app = app
        self.core = core
        self._token_key = _headers.environ_key(core.token_header)
        self._service_token_key = _headers.environ_key(core.service_token_header)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        _headers.strip_environ(environ)
        core = self.core
        if core.public_routes.enabled and core.public_routes.match(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("RAW_URI") or environ.get("REQUEST_URI"),
        ):
            environ[IDENTITY_KEY] = None
            return self.app(environ, start_response)

        if core.fiware_service_scope:
            decision = core.authenticate(
                environ.get(self._token_key),
                environ.get(self._service_token_key),
                environ.get(_FIWARE_SERVICE_KEY),
                environ.get(_FIWARE_PATH_KEY),
            )
        else:
            decision = core.authenticate(
                environ.get(self._token_key), environ.get(self._service_token_key)
            )

        rejection = decision.rejection
        if rejection is not None:
            start_response(rejection.status_line, list(rejection.headers))
            return [rejection.body]

        identity = decision.identity
        environ[IDENTITY_KEY] = identity
        if identity is not None:
            for key, value in _headers.wsgi_items(identity):
                environ[key] = value
            environ[_STATUS_KEY] = "Confirmed"
        else:
            environ[_STATUS_KEY] = "Invalid"
        if decision.service_status is not None:
            self._apply_service(environ, decision)
        if identity is None:
            return self.app(environ, self._challenging(start_response))
        return self.app(environ, start_response)

    @staticmethod
    def _apply_service(environ: WSGIEnvironment, decision: Decision) -> None:
        environ[_SERVICE_STATUS_KEY] = decision.service_status
        service = decision.service_identity
        environ[SERVICE_IDENTITY_KEY] = service
        if service is not None and decision.service_status == "Confirmed":
            for key, value in _headers.wsgi_items(service, service=True):
                environ[key] = value

    def _challenging(self, start_response: StartResponse) -> StartResponse:
        """start_response that adds WWW-Authenticate to the app's own 401 (delayed mode)."""
        challenge = ("WWW-Authenticate", self.core.www_authenticate)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[:3] == "401" and not any(
                name.lower() == "www-authenticate" for name, _ in headers
            ):
                headers = [*headers, challenge]
            return start_response(status, headers, exc_info)

        return start

    def stats(self) -> dict[str, Any]:
        """Cache and circuit counters (see :meth:`AuthCore.stats`)."""
        return self.core.stats()
