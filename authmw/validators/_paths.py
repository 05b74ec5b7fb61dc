"""Paths into JSON documents (token claims, identity-service answers), compiled once.

A path is written as a dotted string (``"realm_access.roles"``) or, when a key
itself holds dots (a Keycloak client id such as ``"items.api"``), as a tuple
of keys (``("resource_access", "items.api", "roles")``). Where alternatives
are allowed, a list or tuple of such paths is tried in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from ..errors import ConfigurationError

__all__ = ["MISSING", "Compiled", "Path", "Paths", "compile_path", "compile_paths", "lookup"]

Path: TypeAlias = "str | tuple[str, ...]"
"""One path: ``"a.b.c"`` or ``("a", "b.c")``."""

Paths: TypeAlias = "str | Sequence[str | tuple[str, ...]]"
"""One dotted path, or a list/tuple of paths (each a dotted path or a tuple of keys).

``("sub", "client_id")`` is two paths; a path of keys goes inside the list:
``[("resource_access", "items.api", "roles")]``.
"""

Compiled: TypeAlias = "tuple[tuple[str, ...], ...]"
"""Alternatives, each a tuple of keys."""

MISSING: Final[Any] = object()


def compile_path(option: str, path: Any) -> tuple[str, ...]:
    """One path as a tuple of keys; :class:`ConfigurationError` naming ``option`` if malformed."""
    if isinstance(path, str):
        keys = tuple(path.split("."))
    elif isinstance(path, tuple) and path:
        keys = path
    else:
        raise ConfigurationError(option, f"not a dotted path or a tuple of keys: {path!r}")
    if not all(isinstance(key, str) and key for key in keys):
        raise ConfigurationError(option, f"not a dotted path or a tuple of keys: {path!r}")
    return keys


def compile_paths(option: str, paths: Any, *, required: bool = False) -> Compiled:
    """Alternatives (or one path) compiled; ``None`` compiles to no path at all."""
    if paths is None:
        if required:
            raise ConfigurationError(option, "is required")
        return ()
    if isinstance(paths, str):
        return (compile_path(option, paths),)
    if not isinstance(paths, Sequence) or not paths:
        raise ConfigurationError(option, f"must be a dotted path or a list of them, got {paths!r}")
    return tuple(compile_path(option, path) for path in paths)


def lookup(data: Mapping[str, Any], compiled: Compiled) -> Any:
    """The first present, non-empty value among the alternatives, else :data:`MISSING`."""
    for path in compiled:
        value: Any = data
        for key in path:
            if not isinstance(value, Mapping):
                value = MISSING
                break
            value = value.get(key, MISSING)
            if value is MISSING:
                break
        if value is not MISSING and value is not None and value != "":
            return value
    return MISSING
