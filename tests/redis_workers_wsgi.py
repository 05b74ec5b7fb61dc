"""The app gunicorn serves in tests/test_redis_revocations_gunicorn.py.

``gunicorn --pythonpath tests 'redis_workers_wsgi:application()'`` with
``AUTHMW_LT_CONFIG`` naming a JSON file (loadtest.servers.Server writes it)::

    {"store_url": "sqlite:///...", "cache_time": 300,
     "redis_url": "redis://...", "redis_secret": "...", "namespace": "..."}  # optional

The validator is a local token store that does not watch its events log
(``watch_interval=None``): a worker learns of a revocation made in another
worker only through the shared cache's Redis pub/sub channel, when there is
one. Behind the middleware (``X-Worker-Pid`` on every answer, 401s too):

- ``POST /_lt/revoke/<token id>`` revokes that token in this worker's store
  (the store tells this worker's cache, which publishes the revocation);
- anything else answers who the worker is, and whether its Redis
  subscription is up (``subscribed``: null without a shared cache).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from authmw import WSGIAuthMiddleware
from authmw.redis import RedisCache
from authmw.store import LocalTokenStore
from loadtest.apps import PUBLIC_ROUTES, _pid_wsgi, load_config

REVOKE = "/_lt/revoke/"


def application() -> Any:
    config = load_config()
    store = LocalTokenStore(config["store_url"], watch_interval=None)
    shared = None
    if config.get("redis_url"):
        shared = RedisCache.from_url(
            config["redis_url"], secret=config["redis_secret"], namespace=config["namespace"]
        )

    def subscribed() -> bool | None:
        if shared is None:
            return None
        channels = shared._subscriptions
        return bool(channels) and all(channel.subscribed.is_set() for channel in channels)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        identity = environ.get("authmw.identity")
        seen: dict[str, Any] = {
            "pid": os.getpid(),
            "user": identity.user_name if identity is not None else None,
            "subscribed": subscribed(),
        }
        if environ.get("REQUEST_METHOD") == "POST" and path.startswith(REVOKE):
            seen["revoked"] = store.revoke(path[len(REVOKE) :])
        body = json.dumps(seen).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    middleware = WSGIAuthMiddleware(
        app,
        validator=store,
        public_routes=PUBLIC_ROUTES,
        cache_time=config["cache_time"],
        shared_cache=shared,
    )
    return _pid_wsgi(middleware)
