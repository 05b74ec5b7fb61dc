"""Public routes: the allow-list of requests that skip authentication.

Rules are ``/exact``, ``/prefix/*`` or ``*`` (any path), each optionally
preceded by a comma list of methods: ``GET /healthz``, ``GET,HEAD /status``,
``OPTIONS *``.

Only a path in normal form can match: a path holding ``//``, ``.``/``..``
segments, backslashes or percent-encoded separators (raw or decoded) is never
public, so ``/healthz/../admin`` and ``/healthz%2f..%2fadmin`` are
authenticated like any other path.

``OPTIONS`` in a rule matches **CORS preflights only**: an ``OPTIONS``
request carrying both ``Origin`` and ``Access-Control-Request-Method``,
which browsers send without credentials. Frameworks that dispatch to a
function whatever the method (Django function views, Flask views listing
``OPTIONS``) would otherwise run a view's body for an anonymous ``OPTIONS``
request and return its data. Letting every ``OPTIONS`` request through
takes the method ``ANY-OPTIONS`` (``ANY-OPTIONS *``), with that risk.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = ["ANY_OPTIONS", "PublicRoutes"]

ANY_OPTIONS = "ANY-OPTIONS"
"""The method that makes every ``OPTIONS`` request public, not only preflights."""

_Methods = frozenset[str] | None  # None: any method


class PublicRoutes:
    """A compiled allow-list; :meth:`match` answers one request."""

    __slots__ = ("any_path_any_method", "any_path_methods", "enabled", "exact", "prefixes")

    def __init__(self, rules: Iterable[str]) -> None:
        self.exact: dict[str, _Methods] = {}
        self.prefixes: list[tuple[str, _Methods]] = []
        self.any_path_methods: set[str] = set()
        self.any_path_any_method = False
        if isinstance(rules, str) or not isinstance(rules, Iterable):
            raise ConfigurationError(
                "public_routes", f"must be a list of rules like 'GET /healthz', got {rules!r}"
            )
        for rule in rules:
            self._add(rule)
        self.enabled = bool(
            self.exact or self.prefixes or self.any_path_methods or self.any_path_any_method
        )

    def _add(self, rule: str) -> None:
        if not isinstance(rule, str) or not rule.strip():
            raise ConfigurationError("public_routes", f"empty or non-string rule {rule!r}")
        parts = rule.split()
        if len(parts) == 1:
            methods: _Methods = None
            path = parts[0]
        elif len(parts) == 2:
            methods = _methods(parts[0], rule)
            path = parts[1]
        else:
            raise ConfigurationError("public_routes", f"expected '[METHODS] PATH', got {rule!r}")
        if path == "*":
            if methods is None:
                self.any_path_any_method = True
            else:
                self.any_path_methods |= methods
            return
        if not path.startswith("/") or not is_normal_path(path.removesuffix("*")):
            raise ConfigurationError(
                "public_routes", f"path must be absolute and in normal form: {rule!r}"
            )
        if path.endswith("*"):
            self.prefixes.append((path[:-1], methods))
            return
        known = self.exact.get(path, frozenset())
        self.exact[path] = None if methods is None or known is None else methods | known

    def match(
        self, method: str, path: str, raw_path: str | None = None, preflight: bool = False
    ) -> bool:
        """True if this request skips authentication.

        ``path`` is the decoded path inside the app, ``raw_path`` the request
        target as sent (when the server gives it), ``preflight`` whether the
        request carries ``Origin`` and ``Access-Control-Request-Method``.
        """
        if method == "OPTIONS" and not preflight:
            method = ANY_OPTIONS
        if self.any_path_any_method or method in self.any_path_methods:
            return True
        if not is_normal_path(path) or (raw_path is not None and not _is_clean_raw(raw_path)):
            return False
        if path in self.exact:
            methods = self.exact[path]
            if methods is None or method in methods:
                return True
        for prefix, methods in self.prefixes:
            if path.startswith(prefix) and (methods is None or method in methods):
                return True
        return False


def _methods(spec: str, rule: str) -> frozenset[str]:
    methods = {m.strip().upper() for m in spec.split(",") if m.strip()}
    if not methods or not all(m.isalpha() or m == ANY_OPTIONS for m in methods):
        raise ConfigurationError("public_routes", f"bad method list in {rule!r}")
    if ANY_OPTIONS in methods:
        methods.add("OPTIONS")  # every OPTIONS request includes the preflights
    return frozenset(methods)


def is_normal_path(path: str) -> bool:
    """True for an absolute path without ``%``, ``//``, ``.``/``..`` segments or backslashes."""
    return "%" not in path and _has_normal_segments(path)


def _has_normal_segments(path: str) -> bool:
    if not path.startswith("/") or "//" in path or "\\" in path or "\x00" in path:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _is_clean_raw(raw: str) -> bool:
    # The request target as sent: percent-escapes are fine (``%20``), except
    # those that decode to a separator, a dot, NUL or another escape.
    raw = raw.split("?", 1)[0].lower()
    return not any(
        bad in raw for bad in ("%2f", "%5c", "%2e", "%00", "%25")
    ) and _has_normal_segments(raw if raw.startswith("/") else "/" + raw.split("/", 3)[-1])
