"""The forward-auth server's route policy: method + path patterns mapped to policy rules.

Rules are tried in order; the first whose pattern matches decides, else
the ``default`` rule (no default: allowed). A pattern is ``[METHODS] PATH``:
``GET,HEAD /v2/entities``, ``DELETE /v2/entities/*`` (``*`` at the end: any
rest), ``/v2/entities/{id}/attrs`` (``{name}``: one segment, passed to the
rule as ``%(name)s``), or ``*`` (any path). The rule is in the policy
language (``role:admin``, ``project_id:%(project)s``, ``rule:name`` from
the policy file).

A path that is not in normal form (``//``, ``.``/``..`` segments, a
backslash, an escape left after decoding) is checked in every form an
upstream might route it on, and each must be allowed: ``/public/../admin``
gets the rules of ``/public/../admin`` and of ``/admin``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote

from ..errors import ConfigurationError, Forbidden
from ..identity import Identity
from ..policy import Policy, PolicyError, Requirement, compile_rule
from ..restrictions import Refusal, RequestFacts

__all__ = ["RoutePolicy", "RouteRule"]

_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteRule(NamedTuple):
    """One compiled rule: its pattern text, methods (None: any), path regex, requirement."""

    pattern: str
    methods: frozenset[str] | None
    path: re.Pattern[str]
    requirement: Requirement


class RoutePolicy:
    """``rules``: ``(pattern, rule)`` pairs in order; ``default``: the rule for the rest.

    ``policy`` resolves ``rule:name`` references. Mistakes raise
    :class:`~authmw.ConfigurationError` naming ``setting`` (``routes``).
    Called with an identity and the request, it returns None (allowed) or
    a 403 :class:`~authmw.restrictions.Refusal`.
    """

    __slots__ = ("default", "rules")

    def __init__(
        self,
        rules: Iterable[tuple[str, str]],
        default: str | None = None,
        *,
        policy: Policy | None = None,
        setting: str = "routes",
    ) -> None:
        self.rules = tuple(
            _compile(pattern, rule, policy, f"{setting}[{index}]")
            for index, (pattern, rule) in enumerate(rules)
        )
        self.default = None if default is None else _requirement(default, policy, "default")

    def __call__(self, identity: Identity, request: RequestFacts) -> Refusal | None:
        method = request.method.upper()
        for path in _forms(request.path):
            requirement, target = self._match(method, path)
            if requirement is None:
                continue
            try:
                requirement.authorize(identity, target)
            except Forbidden as exc:
                return Refusal(403, str(exc))
        return None

    def _match(self, method: str, path: str) -> tuple[Requirement | None, Mapping[str, Any]]:
        for rule in self.rules:
            if rule.methods is not None and method not in rule.methods:
                continue
            match = rule.path.fullmatch(path)
            if match is not None:
                return rule.requirement, {"method": method, **match.groupdict()}
        return self.default, {"method": method}

    def __len__(self) -> int:
        return len(self.rules)


def _requirement(rule: Any, policy: Policy | None, setting: str) -> Requirement:
    if not isinstance(rule, str) or not rule.strip():
        raise ConfigurationError(setting, f"must be a rule like 'role:admin', got {rule!r}")
    try:
        return compile_rule(rule, policy=policy)
    except PolicyError as exc:
        raise ConfigurationError(setting, str(exc)) from None


def _compile(pattern: Any, rule: Any, policy: Policy | None, setting: str) -> RouteRule:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigurationError(setting, f"needs a pattern like 'GET /items/*', got {pattern!r}")
    parts = pattern.split()
    if len(parts) > 2:
        raise ConfigurationError(setting, f"expected '[METHODS] PATH', got {pattern!r}")
    methods: frozenset[str] | None = None
    if len(parts) == 2:
        methods = frozenset(m.strip().upper() for m in parts[0].split(",") if m.strip())
        if not methods or not all(m.isalpha() for m in methods):
            raise ConfigurationError(setting, f"bad method list in {pattern!r}")
    path = parts[-1]
    return RouteRule(
        pattern,
        methods,
        _path_regex(path, pattern, setting),
        _requirement(rule, policy, f"{setting}.rule"),
    )


def _path_regex(path: str, pattern: str, setting: str) -> re.Pattern[str]:
    if path == "*":
        return re.compile(".*", re.DOTALL)
    prefix = path.endswith("/*")
    body = path[:-1] if prefix else path
    if not body.startswith("/") or _normal(body) != body or "*" in body:
        raise ConfigurationError(
            setting, f"path must be absolute, in normal form, '*' only at the end: {pattern!r}"
        )
    regex = ""
    position = 0
    for match in _SEGMENT.finditer(body):
        regex += re.escape(body[position : match.start()]) + f"(?P<{match[1]}>[^/]+)"
        position = match.end()
    if "{" in body[position:] or "}" in body[position:]:
        raise ConfigurationError(setting, f"bad {{name}} segment in {pattern!r}")
    regex += re.escape(body[position:]) + (".*" if prefix else "")
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as exc:  # a name used twice
        raise ConfigurationError(setting, f"{pattern!r}: {exc}") from None


def _forms(path: str) -> list[str]:
    """``path`` and every other form an upstream could route it on."""
    forms = [path]
    for candidate in (_normal(path), _normal(unquote(path)) if "%" in path else path):
        if candidate not in forms:
            forms.append(candidate)
    return forms


def _normal(path: str) -> str:
    """Backslashes as slashes, empty and ``.`` segments dropped, ``..`` resolved."""
    segments: list[str] = []
    parts = path.replace("\\", "/").split("/")
    for segment in parts:
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = len(parts) > 1 and parts[-1] in ("", ".", "..") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")
