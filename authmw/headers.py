"""Every identity header name authmw injects or strips, in one place.

The set that is stripped from incoming requests is built from the same
tables the injected headers are rendered from, so the two cannot drift
apart. Names compare case-insensitively with ``_`` and ``-`` folded
together, as WSGI servers fold them (``X_Roles`` -> ``HTTP_X_ROLES``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from .identity import Identity

__all__ = [
    "ACCESS_CONTROL_REQUEST_METHOD",
    "AUTH_TOKEN",
    "ENVOY_HEADERS_TO_REMOVE",
    "FIWARE_SERVICE",
    "FIWARE_SERVICE_PATH",
    "FORWARDED_METHOD",
    "FORWARDED_URI",
    "IDENTITY_KEY",
    "IDENTITY_STATUS",
    "INJECTED_HEADERS",
    "ORIGIN",
    "ORIGINAL_METHOD",
    "ORIGINAL_URI",
    "RESPONSES_KEY",
    "SERVICE_IDENTITY_KEY",
    "SERVICE_IDENTITY_STATUS",
    "SERVICE_TOKEN",
    "STRIPPED_HEADERS",
    "asgi_items",
    "environ_key",
    "injected_asgi_items",
    "injected_environ_items",
    "is_stripped",
    "strip_environ",
    "wsgi_items",
]

IDENTITY_KEY = "authmw.identity"
"""Where the identity (an :class:`~authmw.Identity`, or None) is put in environ/scope."""
SERVICE_IDENTITY_KEY = "authmw.service_identity"
"""Where a service token's identity is put in environ/scope."""
RESPONSES_KEY = "authmw.responses"
"""Where the pipeline leaves its :class:`~authmw.responses.Responses` in environ/scope,
so a check deep in a view answers with the same challenge and ``Retry-After``."""

# The default credential headers (``token_header``, ``service_token_header``).
AUTH_TOKEN = "X-Auth-Token"  # noqa: S105 - a header name
SERVICE_TOKEN = "X-Service-Token"  # noqa: S105 - a header name

# Headers authmw reads besides the configured credential headers.
FIWARE_SERVICE = "Fiware-Service"
FIWARE_SERVICE_PATH = "Fiware-ServicePath"
ORIGIN = "Origin"
X_FORWARDED_FOR = "X-Forwarded-For"
REQUEST_IDS = ("X-OpenStack-Request-ID", "X-Request-Id")
"""Headers a request id is read from (audit records, sent on to the identity service)."""
ACCESS_CONTROL_REQUEST_METHOD = "Access-Control-Request-Method"

# What gateways send a forward-auth server about the request they are checking
# (authmw.gateway); each gateway mode reads its own pair and no other.
ORIGINAL_METHOD = "X-Original-Method"
"""nginx ``auth_request``: the method, as the snippet's ``proxy_set_header`` sets it."""
ORIGINAL_URI = "X-Original-URI"
"""nginx ``auth_request``: the request target as sent (``$request_uri``)."""
FORWARDED_METHOD = "X-Forwarded-Method"
"""Traefik ForwardAuth: the method."""
FORWARDED_URI = "X-Forwarded-Uri"
"""Traefik ForwardAuth: the path and query."""
ENVOY_HEADERS_TO_REMOVE = "X-Envoy-Auth-Headers-To-Remove"
"""Envoy ``ext_authz`` (HTTP): request headers an OK answer asks Envoy to remove."""

IDENTITY_STATUS = "X-Identity-Status"
SERVICE_IDENTITY_STATUS = "X-Service-Identity-Status"
SYSTEM_SCOPE = "OpenStack-System-Scope"
SERVICE_SYSTEM_SCOPE = "X-Service-System-Scope"
SERVICE_CATALOG = "X-Service-Catalog"
IS_ADMIN_PROJECT = "X-Is-Admin-Project"

Getter = Callable[[Identity], "str | None"]

OWN_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-User-Id", "user_id"),
    ("X-User-Name", "user_name"),
    ("X-User", "user_name"),
)
"""(header, Identity attribute) of the injected headers whose values are the identity's
own (unique to it); the others are shared by many identities."""


def _roles(identity: Identity) -> str | None:
    return ",".join(identity.roles)


# Headers rendered for both the user (``X-...``) and the service token
# (``X-Service-...``). Order is the order they are written in.
_SCOPED: tuple[tuple[str, Getter], ...] = (
    ("User-Id", lambda i: i.user_id),
    ("User-Name", lambda i: i.user_name),
    ("User-Domain-Id", lambda i: i.user_domain_id),
    ("User-Domain-Name", lambda i: i.user_domain_name),
    ("Project-Id", lambda i: i.project_id),
    ("Project-Name", lambda i: i.project_name),
    ("Project-Domain-Id", lambda i: i.project_domain_id),
    ("Project-Domain-Name", lambda i: i.project_domain_name),
    ("Domain-Id", lambda i: i.domain_id),
    ("Domain-Name", lambda i: i.domain_name),
    ("Roles", _roles),
)

# Legacy names kept for old OpenStack-style code: (legacy, modern source).
_LEGACY: tuple[tuple[str, str], ...] = (
    ("X-Role", "X-Roles"),
    ("X-User", "X-User-Name"),
    ("X-Tenant-Id", "X-Project-Id"),
    ("X-Tenant-Name", "X-Project-Name"),
    ("X-Tenant", "X-Project-Name"),
)


def _user_headers() -> tuple[tuple[str, Getter], ...]:
    headers = [(f"X-{suffix}", getter) for suffix, getter in _SCOPED]
    headers.append((IS_ADMIN_PROJECT, lambda i: "True" if i.is_admin_project else "False"))
    headers.append((SYSTEM_SCOPE, lambda i: i.system_scope))
    headers.append((SERVICE_CATALOG, _catalog_json))
    return tuple(headers)


def _service_headers() -> tuple[tuple[str, Getter], ...]:
    headers = [(f"X-Service-{suffix}", getter) for suffix, getter in _SCOPED]
    headers.append(
        ("X-Service-Is-Admin-Project", lambda i: "True" if i.is_admin_project else "False")
    )
    headers.append((SERVICE_SYSTEM_SCOPE, lambda i: i.system_scope))
    return tuple(headers)


def _v3_to_v2_catalog(catalog: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # X-Service-Catalog has always carried the v2 layout (one dict per region
    # with publicURL/internalURL/adminURL); keystonemiddleware converts too.
    services = []
    for service in catalog:
        converted: dict[str, Any] = {"type": service.get("type")}
        if "name" in service:
            converted["name"] = service["name"]
        regions: dict[Any, dict[str, Any]] = {}
        for endpoint in service.get("endpoints", ()):
            region_name = endpoint.get("region")
            region = regions.setdefault(region_name, {"region": region_name} if region_name else {})
            interface = endpoint.get("interface")
            if isinstance(interface, str) and "url" in endpoint:
                region[interface.lower() + "URL"] = endpoint["url"]
            else:  # already v2 layout
                region.update(endpoint)
        converted["endpoints"] = list(regions.values())
        services.append(converted)
    return services


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _catalog_json(identity: Identity) -> str | None:
    if identity.service_catalog is None:
        return None
    catalog = _v3_to_v2_catalog(_thaw(identity.service_catalog))
    return json.dumps(catalog, separators=(",", ":"))


USER_HEADERS = _user_headers()
SERVICE_HEADERS = _service_headers()

INJECTED_HEADERS: tuple[str, ...] = (
    IDENTITY_STATUS,
    SERVICE_IDENTITY_STATUS,
    *(name for name, _ in USER_HEADERS),
    *(name for name, _ in SERVICE_HEADERS),
    *(legacy for legacy, _ in _LEGACY),
)
"""Every header name authmw may add to a request."""

STRIPPED_HEADERS: frozenset[str] = frozenset(INJECTED_HEADERS) | {
    "X-Service-Service-Catalog",
}
"""Every header name removed from incoming requests (canonical spelling)."""


def _fold(name: str) -> str:
    return name.lower().replace("_", "-")


def environ_key(header: str) -> str:
    """WSGI environ key of a header name (``X-Roles`` -> ``HTTP_X_ROLES``)."""
    return "HTTP_" + header.upper().replace("-", "_")


_STRIPPED_FOLDED: frozenset[str] = frozenset(_fold(n) for n in STRIPPED_HEADERS)
_STRIPPED_FOLDED_BYTES: frozenset[bytes] = frozenset(n.encode() for n in _STRIPPED_FOLDED)
STRIPPED_ENVIRON_KEYS: tuple[str, ...] = tuple(sorted({environ_key(n) for n in STRIPPED_HEADERS}))


def is_stripped(name: str) -> bool:
    """True if a header of this name (any case, ``_`` or ``-``) is stripped."""
    return _fold(name) in _STRIPPED_FOLDED


_STRIPPED_KEY_SET = frozenset(STRIPPED_ENVIRON_KEYS)
_stripped_keys_absent = _STRIPPED_KEY_SET.isdisjoint
_NAME_OF_KEY: dict[str, str] = {environ_key(n): n for n in INJECTED_HEADERS}


def injected_asgi_items(items: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The identity headers among the header items of a scope the pipeline has run on.

    The pipeline strips every client-sent copy first, so what is left under
    an identity header name is what it injected.
    """
    return [item for item in items if item[0].lower().replace(b"_", b"-") in _STRIPPED_FOLDED_BYTES]


def injected_environ_items(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(canonical name, value) of the identity headers in an environ the pipeline has
    run on (values stay PEP 3333 latin-1 strings, as WSGI response headers are)."""
    return [(_NAME_OF_KEY[key], environ[key]) for key in environ.keys() & _NAME_OF_KEY.keys()]


def strip_environ(environ: MutableMapping[str, Any]) -> None:
    """Remove every forgeable identity header from a WSGI environ, in place."""
    # One pass in C over the environ's keys (no set built when nothing is forged).
    if not _stripped_keys_absent(environ):
        for key in environ.keys() & _STRIPPED_KEY_SET:
            del environ[key]


def _clean(value: str) -> str:
    # Values come from the identity service; never let one carry a line break.
    # NUL is replaced, not deleted: "\x00admin" must not read as "admin".
    if "\r" in value or "\n" in value or "\0" in value:
        value = value.replace("\r", " ").replace("\n", " ").replace("\0", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800") has no UTF-8 form: rendering
        # it would raise, a 500 for every request with that token.
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def rendered(identity: Identity, service: bool = False) -> tuple[tuple[str, str], ...]:
    """(canonical name, value) pairs for ``identity``; absent values omitted."""
    table = SERVICE_HEADERS if service else USER_HEADERS
    pairs: list[tuple[str, str]] = []
    for name, getter in table:
        value = getter(identity)
        if value is not None:
            pairs.append((name, _clean(value)))
    if not service:
        present = dict(pairs)
        pairs.extend((legacy, present[source]) for legacy, source in _LEGACY if source in present)
    return tuple(pairs)


_ENVIRON_KEYS: dict[str, str] = {name: environ_key(name) for name in INJECTED_HEADERS}
_ASGI_NAMES: dict[str, bytes] = {name: name.lower().encode("latin-1") for name in INJECTED_HEADERS}


def _latin1(value: str) -> str:
    return value.encode("utf-8").decode("latin-1")


def wsgi_items(identity: Identity, service: bool = False) -> tuple[tuple[str, str], ...]:
    """Environ (key, value) pairs for ``identity`` (the pipeline keeps them per decision)."""
    # PEP 3333: environ values are latin-1 "bytes as str". Shared key strings
    # and ASCII values reused as they are keep each cached identity small.
    return tuple(
        (_ENVIRON_KEYS[name], value if value.isascii() else _latin1(value))
        for name, value in rendered(identity, service)
    )


def asgi_items(identity: Identity, service: bool = False) -> tuple[tuple[bytes, bytes], ...]:
    """ASGI (lower-case name, value) byte pairs for ``identity``."""
    return tuple(
        (_ASGI_NAMES[name], value.encode("utf-8")) for name, value in rendered(identity, service)
    )
