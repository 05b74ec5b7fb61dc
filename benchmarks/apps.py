"""Hello-world apps for the real-server benchmarks, served by gunicorn / uvicorn.

``wsgi_bare``/``asgi_bare`` answer "Hello world"; ``wsgi_authmw``/``asgi_authmw``
are the same behind authmw validating against the Keystone at
``AUTHMW_BENCH_AUTH_URL`` (its service user, see benchmarks/_support.py).
The references: ``wsgi_keystonemiddleware`` (keystonemiddleware's AuthProtocol
against the same Keystone) and ``asgi_starlette`` (Starlette's
``AuthenticationMiddleware`` with a backend looking the token up in a dict:
no stripping, no identity headers, no expiry).

Apps are built on first use, so a server imports only what it serves.
"""

from __future__ import annotations

import os
from typing import Any

from _support import authmw_asgi, authmw_wsgi, hello_asgi, hello_wsgi, ksm_wsgi

_AUTH_URL = os.environ.get("AUTHMW_BENCH_AUTH_URL", "http://127.0.0.1:5000/v3")
_TOKEN = os.environ.get("AUTHMW_BENCH_TOKEN", "")
_TREE = os.environ.get("AUTHMW_BENCH_TREE")  # where authmw must be imported from


def _checked(app: Any) -> Any:
    import authmw

    if _TREE and not authmw.__file__.startswith(_TREE):
        raise RuntimeError(f"authmw imported from {authmw.__file__}, not from {_TREE}")
    return app


wsgi_bare = hello_wsgi
asgi_bare = hello_asgi


def _starlette() -> Any:
    from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
    from starlette.middleware.authentication import AuthenticationMiddleware

    users = {_TOKEN: "demo-user"}

    class DictBackend(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> Any:
            user = users.get(conn.headers.get("x-auth-token", ""))
            if user is None:
                return None
            return AuthCredentials(["authenticated"]), SimpleUser(user)

    return AuthenticationMiddleware(hello_asgi, backend=DictBackend())


_BUILDERS = {
    "wsgi_authmw": lambda: _checked(authmw_wsgi(_AUTH_URL)),
    "asgi_authmw": lambda: _checked(authmw_asgi(_AUTH_URL)),
    "wsgi_keystonemiddleware": lambda: ksm_wsgi(_AUTH_URL),
    "asgi_starlette": _starlette,
}


def __getattr__(name: str) -> Any:
    if name not in _BUILDERS:
        raise AttributeError(name)
    app = _BUILDERS[name]()
    globals()[name] = app
    return app
