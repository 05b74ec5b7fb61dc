"""Gateway modes: where a check request says which request it is about.

One mode per server. Each reads the original method and request target
from its own gateway's headers and from nowhere else, so a client that
sends another gateway's headers (``X-Forwarded-Uri`` through nginx,
``X-Original-URI`` through Traefik or Envoy) changes nothing:

- ``nginx`` (``auth_request``): ``X-Original-Method`` and ``X-Original-URI``,
  which the snippet sets with ``proxy_set_header`` (replacing any client copy);
- ``traefik`` (ForwardAuth): ``X-Forwarded-Method`` and ``X-Forwarded-Uri``,
  which Traefik overwrites unless ``trustForwardHeader`` is on;
- ``envoy`` (``ext_authz``, HTTP): the check request's own method and
  path, after the ``path_prefix`` Envoy put in front of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote, unquote_to_bytes

from .. import headers as _headers
from ..errors import ConfigurationError

__all__ = ["MODES", "GatewayMode", "Original", "gateway_mode"]

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # an RFC 9110 token, bounded
_COMMON_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SCHEME_AUTHORITY = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


class Original(NamedTuple):
    """The request a gateway asks about: method, raw path (without the query), query."""

    method: str
    raw_path: bytes
    query: bytes

    @property
    def path(self) -> str:
        """The decoded path, as an ASGI server decodes it."""
        return unquote(self.raw_path.decode("latin-1"))

    @property
    def path_info(self) -> str:
        """The decoded path as a WSGI server puts it in ``PATH_INFO`` (latin-1)."""
        return unquote_to_bytes(self.raw_path).decode("latin-1")


@dataclass(frozen=True)
class GatewayMode:
    """How one kind of gateway describes the original request."""

    name: str
    method_header: str | None
    """Header carrying the method (None: the check request's own method)."""
    uri_header: str | None
    """Header carrying the request target (None: the check request's own target)."""
    path_prefix: str = ""
    """Envoy: what ``http_service.path_prefix`` puts in front of the original path."""

    @property
    def read_names(self) -> frozenset[bytes]:
        """Lower-case names of the headers this mode reads (dropped from the original)."""
        return frozenset(
            name.lower().encode() for name in (self.method_header, self.uri_header) if name
        )

    def with_prefix(self, prefix: str) -> GatewayMode:
        """This mode with Envoy's ``path_prefix`` (refused for the other modes)."""
        if not prefix:
            return self
        if self.uri_header is not None:
            raise ConfigurationError("path_prefix", f"is for the envoy gateway, not {self.name}")
        if not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix or "%" in prefix:
            raise ConfigurationError(
                "path_prefix", f"must start with '/' and not end with one, got {prefix!r}"
            )
        return GatewayMode(self.name, None, None, prefix)

    def original(
        self, method: str, target: bytes, header: Callable[[str], str | None]
    ) -> Original | str:
        """The original request, or why it cannot be known (a message for a 400).

        ``method`` and ``target`` are the check request's own; ``header(name)``
        returns the check request's value of a header (None when absent, and
        for a header sent twice with different values).
        """
        if self.method_header is not None:
            value = header(self.method_header)
            if value is None or not value.strip():
                return f"missing or repeated {self.method_header} header"
            method = value.strip()
        if method not in _COMMON_METHODS and not _METHOD.fullmatch(method):
            return "the original method is not an HTTP method"
        if self.uri_header is not None:
            uri = header(self.uri_header)
            if uri is None or not uri.strip():
                return f"missing or repeated {self.uri_header} header"
            target = uri.strip().encode("latin-1")
        elif self.path_prefix:
            prefix = self.path_prefix.encode()
            if target != prefix and not target.startswith((prefix + b"/", prefix + b"?")):
                return "the check request's path does not start with the path prefix"
            target = target[len(prefix) :]
            if not target.startswith(b"/"):
                target = b"/" + target
        raw_path, _, query = _origin_form(target).partition(b"?")
        return Original(method, raw_path, query)


def _origin_form(target: bytes) -> bytes:
    """``target`` without a scheme and authority (an absolute-form request target)."""
    if target.startswith(b"/"):
        return target
    match = _SCHEME_AUTHORITY.match(target)
    if match is None:
        return target  # "*" or garbage: never a public route, authenticated as any path
    rest = target[match.end() :]
    return rest if rest.startswith(b"/") else b"/" + rest


MODES: dict[str, GatewayMode] = {
    "nginx": GatewayMode("nginx", _headers.ORIGINAL_METHOD, _headers.ORIGINAL_URI),
    "traefik": GatewayMode("traefik", _headers.FORWARDED_METHOD, _headers.FORWARDED_URI),
    "envoy": GatewayMode("envoy", None, None),
}
"""Every gateway mode by name."""


def gateway_mode(name: str, path_prefix: str = "") -> GatewayMode:
    """The mode called ``name`` (``nginx``, ``traefik``, ``envoy``)."""
    mode = MODES.get(name.strip().lower() if isinstance(name, str) else "")
    if mode is None:
        raise ConfigurationError("gateway", f"must be one of {', '.join(MODES)}, got {name!r}")
    return mode.with_prefix(path_prefix)
