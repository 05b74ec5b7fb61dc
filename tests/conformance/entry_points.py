"""Every entry point, as a user would install it, in front of the same small app.

Each app has the same routes:

- ``/open``: no check of its own; reports what the app sees.
- ``/protected``: needs an identity, in the framework's own idiom.
- ``/admin``: needs the ``admin`` role (403 for others).
- ``/healthz``: reports too; made public by the tests that need it.
- ``/ws`` (where the framework has websockets): needs an identity.

A report is JSON: the identity's user id (or None), the service identity's,
and every view of the request headers the framework offers (WSGI environ or
Django ``META``, ``request.headers``, the ASGI scope's list), each as
``[name, value]`` pairs with lower-case names. Adding an entry point means
adding one factory to :data:`ENTRY_POINTS`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
from contrib.conftest import configure_django
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.responses import Response as FastAPIResponse
from starlette.testclient import TestClient

from authmw import AuthError, Identity, NotAuthenticated
from authmw.contrib import rejection_for
from authmw.contrib.fastapi import current_identity, get_identity, setup
from authmw.contrib.fastapi import require_roles as fastapi_require_roles
from authmw.headers import IDENTITY_KEY, SERVICE_IDENTITY_KEY
from authmw.policy import require_roles

configure_django()

Views = dict[str, list[list[str]]]
Factory = Callable[[Any, dict[str, Any]], "contextlib.AbstractContextManager[Client]"]


class Response:
    """What the client got: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = [(n.lower(), v) for n, v in headers]
        self.body = body

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        assert "views" in data, data
        return data


class Client:
    """Sends requests to one entry point's app."""

    websockets = False

    def request(self, method: str, path: str, headers: list[tuple[str, str]]) -> Response:
        raise NotImplementedError

    def websocket(
        self, path: str, headers: list[tuple[str, str]], subprotocols: list[str] | None = None
    ) -> tuple[str, Any]:
        """("accepted", first message), ("denied", Response) or ("closed", close code)."""
        raise NotImplementedError


class HTTPXClient(Client):
    def __init__(self, app: Any) -> None:
        self.client = httpx.Client(
            transport=httpx.WSGITransport(app=app), base_url="http://testserver"
        )

    def request(self, method: str, path: str, headers: list[tuple[str, str]]) -> Response:
        response = self.client.request(method, path, headers=headers)
        return Response(
            response.status_code, list(response.headers.multi_items()), response.content
        )


class ASGIClient(Client):
    websockets = True

    def __init__(self, app: Any) -> None:
        self.client = TestClient(app)

    def request(self, method: str, path: str, headers: list[tuple[str, str]]) -> Response:
        response = self.client.request(method, path, headers=headers)
        return Response(
            response.status_code, list(response.headers.multi_items()), response.content
        )

    def websocket(
        self, path: str, headers: list[tuple[str, str]], subprotocols: list[str] | None = None
    ) -> tuple[str, Any]:
        from starlette.testclient import WebSocketDenialResponse
        from starlette.websockets import WebSocketDisconnect

        try:
            with self.client.websocket_connect(
                path, headers=dict(headers), subprotocols=subprotocols
            ) as ws:
                report = ws.receive_json()
                report["accepted_subprotocol"] = ws.accepted_subprotocol
                return "accepted", report
        except WebSocketDenialResponse as denial:
            return "denied", Response(
                denial.status_code, list(denial.headers.multi_items()), denial.content
            )
        except WebSocketDisconnect as closed:
            return "closed", closed.code


def socket_report(websocket: WebSocket, identity: Identity | None) -> dict[str, Any]:
    """What a websocket endpoint sees; then it echoes until the socket closes."""
    scope = websocket.scope
    return {
        "identity": identity.user_id if identity is not None else None,
        "subprotocols": list(scope.get("subprotocols") or ()),
        "query_string": (scope.get("query_string") or b"").decode("latin-1"),
        "headers": pairs(scope["headers"]),
    }


async def echo_until_closed(websocket: WebSocket) -> None:
    from starlette.websockets import WebSocketDisconnect

    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


def report(identity: Identity | None, service: Identity | None, views: Views) -> bytes:
    return json.dumps(
        {
            "identity": identity.user_id if identity is not None else None,
            "service": service.user_id if service is not None else None,
            "views": views,
        }
    ).encode()


def pairs(items: Any) -> list[list[str]]:
    out = []
    for name, value in items:
        if isinstance(name, bytes):
            name, value = name.decode("latin-1"), value.decode("latin-1")
        out.append([name.lower(), value])
    return out


def environ_view(environ: Any) -> list[list[str]]:
    return [
        [key[5:].lower().replace("_", "-"), value]
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    ]


# -- WSGI ---------------------------------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    from werkzeug.wrappers import Request

    path = environ["PATH_INFO"]
    identity = environ.get(IDENTITY_KEY)
    try:
        if path in ("/protected", "/admin"):
            if identity is None:
                raise NotAuthenticated()
            if path == "/admin":
                require_roles("admin").authorize(identity)
    except AuthError as exc:
        rejection = rejection_for(exc, environ)
        start_response(rejection.status_line, list(rejection.headers))
        return [rejection.body]
    views = {"environ": environ_view(environ), "werkzeug": pairs(Request(environ).headers.items())}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [report(identity, environ.get(SERVICE_IDENTITY_KEY), views)]


@contextlib.contextmanager
def wsgi(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    from authmw import WSGIAuthMiddleware

    yield HTTPXClient(WSGIAuthMiddleware(_wsgi_app, validator, **options))


# -- Starlette app, used by the ASGI middleware and the Starlette integration ----------


def _starlette_routes() -> list[Any]:
    from starlette.responses import Response as StarletteResponse
    from starlette.routing import Route, WebSocketRoute

    from authmw.contrib.starlette import get_identity, require

    async def probe(request: Request) -> StarletteResponse:
        views = {
            "scope": pairs(request.scope["headers"]),
            "request": pairs(request.headers.items()),
        }
        body = report(get_identity(request), request.scope.get(SERVICE_IDENTITY_KEY), views)
        return StarletteResponse(body, media_type="application/json")

    @require("@")
    async def protected(request: Request) -> StarletteResponse:
        return await probe(request)

    @require("role:admin")
    async def admin(request: Request) -> StarletteResponse:
        return await probe(request)

    @require("@")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(socket_report(websocket, get_identity(websocket)))
        await echo_until_closed(websocket)

    return [
        Route("/open", probe, methods=["GET", "POST", "OPTIONS"]),
        Route("/healthz", probe),
        Route("/protected", protected, methods=["GET", "POST", "OPTIONS"]),
        Route("/admin", admin),
        WebSocketRoute("/ws", ws),
    ]


@contextlib.contextmanager
def asgi(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    from starlette.applications import Starlette

    from authmw import ASGIAuthMiddleware
    from authmw.contrib.starlette import exception_handlers

    app = Starlette(routes=_starlette_routes(), exception_handlers=exception_handlers)
    app.add_middleware(ASGIAuthMiddleware, validator=validator, **options)
    yield ASGIClient(app)


@contextlib.contextmanager
def starlette(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    from starlette.applications import Starlette

    from authmw.contrib.starlette import authentication_middleware, exception_handlers

    app = Starlette(
        routes=_starlette_routes(),
        middleware=[authentication_middleware(validator, **options)],
        exception_handlers=exception_handlers,
    )
    yield ASGIClient(app)


# -- FastAPI --------------------------------------------------------------------------------


ADMIN_ONLY = fastapi_require_roles("admin")


@contextlib.contextmanager
def fastapi(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    app = FastAPI()
    setup(app, validator, **options)

    def probe(request: Request, identity: Identity | None) -> FastAPIResponse:
        views = {
            "scope": pairs(request.scope["headers"]),
            "request": pairs(request.headers.items()),
        }
        body = report(identity, request.scope.get(SERVICE_IDENTITY_KEY), views)
        return FastAPIResponse(body, media_type="application/json")

    @app.api_route("/open", methods=["GET", "POST", "OPTIONS"])
    async def open_(
        request: Request, identity: Annotated[Identity | None, Depends(get_identity)]
    ) -> FastAPIResponse:
        return probe(request, identity)

    @app.get("/healthz")
    async def healthz(
        request: Request, identity: Annotated[Identity | None, Depends(get_identity)]
    ) -> FastAPIResponse:
        return probe(request, identity)

    @app.api_route("/protected", methods=["GET", "POST", "OPTIONS"])
    async def protected(
        request: Request, identity: Annotated[Identity, Depends(current_identity)]
    ) -> FastAPIResponse:
        return probe(request, identity)

    @app.get("/admin")
    async def admin(
        request: Request, identity: Annotated[Identity, Depends(ADMIN_ONLY)]
    ) -> FastAPIResponse:
        return probe(request, identity)

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, identity: Annotated[Identity, Depends(current_identity)]
    ) -> None:
        await websocket.accept()
        await websocket.send_json(socket_report(websocket, identity))
        await echo_until_closed(websocket)

    yield ASGIClient(app)


# -- Django and DRF ------------------------------------------------------------------------


class ReadHeadersEarly:
    """A middleware that reads ``request.headers`` before authmw runs (as request-id,
    CORS and logging middleware do), so Django builds its snapshot from the raw META."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        request.headers.get("x-roles")
        return self.get_response(request)


def _django_views() -> Any:
    from django.http import HttpResponse
    from django.urls import path

    from authmw.contrib.django import get_identity, require

    def probe(request: Any) -> HttpResponse:
        views = {"META": environ_view(request.META), "headers": pairs(request.headers.items())}
        body = report(get_identity(request), request.META.get(SERVICE_IDENTITY_KEY), views)
        return HttpResponse(body, content_type="application/json")

    class URLs:
        urlpatterns = [
            path("open", probe),
            path("healthz", probe),
            path("protected", require("@")(probe)),
            path("admin", require("role:admin")(probe)),
        ]

    return URLs


def _drf_views() -> Any:
    from django.urls import path
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.views import APIView

    from authmw.contrib.drf import IdentityAuthentication, require

    class Probe(APIView):  # type: ignore[misc]
        authentication_classes = [IdentityAuthentication]
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Any:
            from django.http import HttpResponse

            meta = request._request.META
            views = {"META": environ_view(meta), "headers": pairs(request.headers.items())}
            identity = request.auth if isinstance(request.auth, Identity) else None
            body = report(identity, meta.get(SERVICE_IDENTITY_KEY), views)
            return HttpResponse(body, content_type="application/json")

        post = options = get

    class Protected(Probe):
        permission_classes = [IsAuthenticated]

    class Admin(Probe):
        permission_classes = [require("role:admin")]

    class URLs:
        urlpatterns = [
            path("open", Probe.as_view()),
            path("healthz", Probe.as_view()),
            path("protected", Protected.as_view()),
            path("admin", Admin.as_view()),
        ]

    return URLs


_DJANGO_URLS = None
_DRF_URLS = None


def _django_client(urls: Any, middleware: list[str], authmw: dict[str, Any]) -> Any:
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    settings = override_settings(
        ROOT_URLCONF=urls,
        MIDDLEWARE=[f"{__name__}.ReadHeadersEarly", *middleware],
        AUTHMW=authmw,
        REST_FRAMEWORK={
            "UNAUTHENTICATED_USER": None,
            "EXCEPTION_HANDLER": "authmw.contrib.drf.exception_handler",
        },
    )
    return settings, get_wsgi_application


@contextlib.contextmanager
def django(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    global _DJANGO_URLS
    _DJANGO_URLS = _DJANGO_URLS or _django_views()
    settings, application = _django_client(
        _DJANGO_URLS,
        ["authmw.contrib.django.AuthMWMiddleware"],
        {"VALIDATOR": validator, "OPTIONS": options},
    )
    with settings:
        yield HTTPXClient(application())


@contextlib.contextmanager
def drf(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    global _DRF_URLS
    _DRF_URLS = _DRF_URLS or _drf_views()
    settings, application = _django_client(
        _DRF_URLS, [], {"VALIDATOR": validator, "OPTIONS": options}
    )
    with settings:
        yield HTTPXClient(application())


# -- Flask ----------------------------------------------------------------------------------


@contextlib.contextmanager
def flask(validator: Any, options: dict[str, Any]) -> Iterator[Client]:
    from flask import Flask, request

    from authmw.contrib.flask import AuthMW, get_identity, require

    app = Flask(__name__)
    AuthMW(app, validator, **options)

    def probe() -> Any:
        views = {
            "environ": environ_view(request.environ),
            "headers": pairs(request.headers.items()),
        }
        identity = get_identity()
        body = report(identity, request.environ.get(SERVICE_IDENTITY_KEY), views)
        return app.response_class(body, mimetype="application/json")

    app.add_url_rule("/open", "open", probe, methods=["GET", "POST"])
    app.add_url_rule("/healthz", "healthz", probe)
    app.add_url_rule("/protected", "protected", require("@")(probe), methods=["GET", "POST"])
    app.add_url_rule("/admin", "admin", require("role:admin")(probe))
    yield HTTPXClient(app)


ENTRY_POINTS: dict[str, Factory] = {
    "wsgi": wsgi,
    "asgi": asgi,
    "django": django,
    "drf": drf,
    "starlette": starlette,
    "fastapi": fastapi,
    "flask": flask,
}
"""Every entry point; a new one is one more line here."""

ANONYMOUS = frozenset({"drf", "starlette", "fastapi"})
"""Entry points where a request without any credential reaches the app (routes decide)."""
