"""paste.deploy entry point and a keystonemiddleware-compatible ``AuthProtocol``.

In an existing pipeline, replace keystonemiddleware's filter with::

    [filter:authtoken]
    paste.filter_factory = authmw:filter_factory
    auth_url = http://keystone:5000/v3
    username = service-user
    ...

or, in code, ``from authmw.paste import AuthProtocol`` instead of
``from keystonemiddleware.auth_token import AuthProtocol``. An OpenStack
service that passes its configuration (``filter_factory({},
oslo_config_config=conf)``) gets its ``[keystone_authtoken]`` section read
as keystonemiddleware reads it (``pip install 'authmw[openstack]'``). Options are
keystonemiddleware's names (see :mod:`authmw.options`); every value is checked
when the filter is built, before the first request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._oslo import SOURCE_KEYS
from .options import _IGNORED, _MEMCACHE_OPTIONS, _MIDDLEWARE, _VALIDATOR, keystone_options
from .wsgi import WSGIAuthMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["AuthProtocol", "filter_factory"]

# Names keystone_options() reads besides the tables: the auth type and the
# service-identity shortcuts keystonemiddleware also takes from [DEFAULT].
_SPECIAL = frozenset(
    (
        "auth_type",
        "auth_plugin",
        "token",
        "admin_token",
        "default_domain_id",
        "default_domain_name",
    )
)
_KNOWN = (
    frozenset(_VALIDATOR)
    | frozenset(_MIDDLEWARE)
    | frozenset(_IGNORED)
    | _SPECIAL
    | frozenset(SOURCE_KEYS)
    | frozenset(_MEMCACHE_OPTIONS)
)


class AuthProtocol(WSGIAuthMiddleware):
    """Drop-in for keystonemiddleware's ``AuthProtocol(app, conf)``."""

    def __init__(self, app: WSGIApplication, conf: Mapping[str, Any]) -> None:
        options = keystone_options(conf)
        middleware = dict(options.middleware)
        shared = options.build_shared_cache()
        if shared is not None:
            middleware["shared_cache"] = shared
        super().__init__(app, options.build_validator(), **middleware)


def filter_factory(
    global_conf: Mapping[str, Any], **local_conf: Any
) -> Callable[[WSGIApplication], WSGIAuthMiddleware]:
    """paste.deploy filter factory: ``paste.filter_factory = authmw:filter_factory``.

    Options come from the filter's own section; from ``[DEFAULT]`` (global_conf)
    only names authmw knows are taken, as keystonemiddleware merges both.
    """
    conf = {k: v for k, v in global_conf.items() if k in _KNOWN}
    conf.update(local_conf)
    options = keystone_options(conf)
    validator = options.build_validator()  # wrong values fail now, not at the first request
    middleware = dict(options.middleware)
    shared = options.build_shared_cache()
    if shared is not None:
        middleware["shared_cache"] = shared

    def auth_filter(app: WSGIApplication) -> WSGIAuthMiddleware:
        return WSGIAuthMiddleware(app, validator, **middleware)

    return auth_filter
