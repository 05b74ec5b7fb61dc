"""Step 5 of the pipeline: put a decision's identity and its headers into the request.

What a decision renders to is made once per decision (a confirmed identity's
decision is made once per identity, see :meth:`AuthCore.confirmed
<authmw.core.AuthCore.confirmed>`) and split in two: the part identities
share (status, scope, roles, domains), one object for every decision with
the same values, and the identity's own values (user id and name), read
from the identity on each request when they need no rewriting. A cached
identity so keeps no rendered copy of itself.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from . import headers as _headers
from ._types import Environ, Scope
from .core import AuthCore
from .headers import IDENTITY_KEY, SERVICE_IDENTITY_KEY

if TYPE_CHECKING:
    from .core import Decision
    from .identity import Identity

__all__ = ["inject_environ", "inject_scope", "scope_header_items"]

HeaderItems = tuple[tuple[bytes, bytes], ...]

_STATUS_KEY = _headers.environ_key(_headers.IDENTITY_STATUS)
_SERVICE_STATUS_KEY = _headers.environ_key(_headers.SERVICE_IDENTITY_STATUS)
_STATUS_NAME = _headers.IDENTITY_STATUS.lower().encode()
_SERVICE_STATUS_NAME = _headers.SERVICE_IDENTITY_STATUS.lower().encode()
# (environ key, header name, attribute) of the headers whose values are the identity's own.
_OWN = tuple(
    (_headers.environ_key(name), name.lower().encode(), attribute)
    for name, attribute in _headers.OWN_HEADERS
)
_OWN_KEYS = frozenset(key for key, _, _ in _OWN)
_OWN_NAMES = frozenset(name for _, name, _ in _OWN)
# The same, spelled out for the hot path: the user id's, then the user name's two.
(
    (_USER_ID_KEY, _USER_ID_HEADER, _),
    (_USER_NAME_KEY, _USER_NAME_HEADER, _),
    (_LEGACY_USER_KEY, _LEGACY_USER_HEADER, _),
) = _OWN

_SHARED_MAX = 4096
_shared_environ: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
_shared_headers: dict[HeaderItems, HeaderItems] = {}


def _one_environ(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """One dict for equal rendered parts (bounded: past the bound, each keeps its own).
    Never changed once made: requests get copies of its items."""
    found = _shared_environ.get(items)
    if found is None:
        found = dict(items)
        if len(_shared_environ) < _SHARED_MAX:
            found = _shared_environ.setdefault(items, found)
    return found


def _one_headers(items: HeaderItems) -> HeaderItems:
    found = _shared_headers.get(items)
    if found is None:
        found = items
        if len(_shared_headers) < _SHARED_MAX:
            found = _shared_headers.setdefault(items, found)
    return found


# An identity's headers as a service token's (X-Service-*): few identities are service
# users, so they are kept here (bounded), keyed by their confirmed decision.
_SERVICES_MAX = 1024
_services: dict[Decision, tuple[dict[str, str], HeaderItems]] = {}
_services_lock = threading.Lock()


def _as_service(identity: Identity) -> tuple[dict[str, str], HeaderItems]:
    key = AuthCore.confirmed(identity)
    found = _services.get(key)
    if found is None:
        found = (
            dict(_headers.wsgi_items(identity, service=True)),
            _headers.asgi_items(identity, service=True),
        )
        with _services_lock:
            if len(_services) >= _SERVICES_MAX:
                del _services[next(iter(_services))]
            _services[key] = found
    return found


# -- WSGI --------------------------------------------------------------------------------------
def _render_environ(decision: Decision) -> dict[str, Any]:
    items: list[tuple[str, Any]] = [] if decision.public else [(_STATUS_KEY, decision.status)]
    identity = decision.identity
    own: tuple[tuple[str, Any], ...] = ()
    if identity is not None:
        rendered = _headers.wsgi_items(identity)
        items.extend(item for item in rendered if item[0] not in _OWN_KEYS)
        own = tuple(item for item in rendered if item[0] in _OWN_KEYS)
        if not _same(identity, own, str):
            decision.environ_own = own
    shared = decision.environ_items = _one_environ(tuple(items))
    return shared


def inject_environ(environ: Environ, decision: Decision) -> None:
    """Put the identity and its headers into ``environ``."""
    if decision.service_status is not None:
        _inject_service_environ(environ, decision)
        return
    items = decision.environ_items
    if items is None:
        items = _render_environ(decision)
    environ.update(items)
    identity = decision.identity
    environ[IDENTITY_KEY] = identity
    if identity is not None:
        own = decision.environ_own
        if own is None:  # the identity's own values, as they are
            user_id = identity.user_id
            if user_id is not None:
                environ[_USER_ID_KEY] = user_id
            user_name = identity.user_name
            if user_name is not None:
                environ[_USER_NAME_KEY] = environ[_LEGACY_USER_KEY] = user_name
        else:
            environ.update(own)


def _inject_service_environ(environ: Environ, decision: Decision) -> None:
    identity = decision.identity
    if identity is not None:
        inject_environ(environ, AuthCore.confirmed(identity))
    else:
        environ[IDENTITY_KEY] = None
        environ[_STATUS_KEY] = decision.status
    environ[SERVICE_IDENTITY_KEY] = decision.service_identity
    environ[_SERVICE_STATUS_KEY] = decision.service_status
    service = decision.service_identity
    if service is not None and decision.service_status == "Confirmed":
        environ.update(_as_service(service)[0])


# -- ASGI --------------------------------------------------------------------------------------
def _render_headers(decision: Decision) -> HeaderItems:
    items: list[tuple[bytes, bytes]] = []
    identity = decision.identity
    if identity is not None:
        rendered = _headers.asgi_items(identity)
        items.extend(item for item in rendered if item[0] not in _OWN_NAMES)
        own = tuple(item for item in rendered if item[0] in _OWN_NAMES)
        if not _same(identity, own, bytes):
            decision.header_own = own
    if not decision.public:
        items.append((_STATUS_NAME, decision.status.encode()))
    shared = decision.header_items = _one_headers(tuple(items))
    return shared


def _same(identity: Identity, own: tuple[tuple[Any, Any], ...], kind: type) -> bool:
    """True if the own values rendered are the identity's attributes as they are
    (encoded, for ``bytes``), so each request can read them from the identity."""
    values = dict(own)
    for key, name, attribute in _OWN:
        text = getattr(identity, attribute)
        rendered = values.get(key if kind is str else name)
        if text is None or rendered is None:
            same = text is rendered
        elif kind is str:
            same = rendered is text
        else:
            same = text.isascii() and rendered == text.encode()
        if not same:
            return False
    return True


def scope_header_items(decision: Decision) -> list[tuple[bytes, bytes]]:
    """Every header item :func:`inject_scope` adds for ``decision`` (it adds them here
    to a scope of its own)."""
    scope: Scope = {"headers": []}
    inject_scope(scope, decision)
    items: list[tuple[bytes, bytes]] = scope["headers"]
    return items


def _service_header_items(decision: Decision) -> list[tuple[bytes, bytes]]:
    identity = decision.identity
    if identity is not None:
        out = scope_header_items(AuthCore.confirmed(identity))
    else:
        out = [(_STATUS_NAME, decision.status.encode())]
    out.append((_SERVICE_STATUS_NAME, str(decision.service_status).encode()))
    service = decision.service_identity
    if service is not None and decision.service_status == "Confirmed":
        out.extend(_as_service(service)[1])
    return out


def inject_scope(scope: Scope, decision: Decision) -> None:
    """Put the identity into ``scope`` and its headers into ``scope["headers"]`` (in place)."""
    headers = scope["headers"]
    identity = decision.identity
    if decision.service_status is not None:
        headers.extend(_service_header_items(decision))
        scope[SERVICE_IDENTITY_KEY] = decision.service_identity
    else:
        items = decision.header_items
        if items is None:
            items = _render_headers(decision)
        headers.extend(items)
        if identity is not None:
            own = decision.header_own
            if own is None:  # the identity's own values, encoded
                user_id = identity.user_id
                if user_id is not None:
                    headers.append((_USER_ID_HEADER, user_id.encode()))
                user_name = identity.user_name
                if user_name is not None:
                    encoded = user_name.encode()
                    headers += ((_USER_NAME_HEADER, encoded), (_LEGACY_USER_HEADER, encoded))
            else:
                headers.extend(own)
    scope[IDENTITY_KEY] = identity
