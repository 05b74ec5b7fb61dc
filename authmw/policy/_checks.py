"""Compiled check objects: the tree a policy rule becomes once, at load time.

Each check is called as ``check(identity, target, rules)``. Nothing here
parses strings: templates, credential paths and literal values were all
resolved by the parser.

Checks answer ``True``, ``False`` or ``None`` (undecided: a target key the
rule needs is missing or None, or a referenced rule does not exist).
``and``/``or``/``not`` combine these with Kleene's three-valued logic and
the policy allows only a definite ``True``. So ``not project_id:%(x)s``
with no ``x`` in the target denies, where oslo.policy would allow; with
every key present the verdicts are oslo.policy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from operator import attrgetter
from typing import Any, ClassVar, Final, TypeAlias

from ..identity import TEXT_FIELDS, Identity

__all__ = [
    "ALLOW",
    "DENY",
    "Allow",
    "And",
    "Check",
    "Deny",
    "GenericCheck",
    "Not",
    "Or",
    "RoleCheck",
    "RuleRef",
    "Rules",
    "Template",
    "TemplateKey",
    "TokenScopeCheck",
    "Verdict",
    "credential_getter",
    "credentials",
]

MISSING: Final[Any] = object()

Rules: TypeAlias = "Mapping[str, Check]"
Verdict: TypeAlias = "bool | None"
Getter: TypeAlias = Callable[[Identity], Any]

# oslo.context's policy values (RequestContext.to_policy_values), plus
# oslo.policy's "system" alias and the names authmw's Identity also knows.
_CREDENTIALS: Final[dict[str, Getter]] = {
    name: attrgetter(name)
    for name in (
        *TEXT_FIELDS,
        "roles",
        "is_admin_project",
        "application_credential",
        "token_scopes",
    )
}
_CREDENTIALS["system"] = attrgetter("system_scope")


def credential_getter(name: str) -> Getter:
    """Getter for the credential ``name``; unknown names read ``Identity.extra``."""
    getter = _CREDENTIALS.get(name)
    if getter is not None:
        return getter

    def from_extra(identity: Identity) -> Any:
        return identity.extra.get(name, MISSING)

    return from_extra


def credentials(identity: Identity) -> dict[str, Any]:
    """The oslo.policy credentials dict an identity is checked as (for debugging).

    Standard names win over ``Identity.extra`` entries of the same name; None
    values are left out.
    """
    creds: dict[str, Any] = dict(identity.extra)
    for name, getter in _CREDENTIALS.items():
        value = getter(identity)
        if value is not None:
            creds[name] = list(value) if isinstance(value, tuple) else value
        else:
            creds.pop(name, None)
    return creds


# -- templates: the right-hand side of a check ------------------------------


class TemplateKey:
    """One ``%(name)s`` in a template."""

    __slots__ = ("name", "path")

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = tuple(name.split(".")) if "." in name else None


def _lookup(target: Mapping[str, Any], key: TemplateKey) -> Any:
    try:
        return target[key.name]
    except KeyError:
        pass
    if key.path is None:
        return MISSING
    # ``%(target.owner)s`` also reads a nested ``{"target": {"owner": ...}}``.
    node: Any = target
    for segment in key.path:
        if not isinstance(node, Mapping):
            return MISSING
        node = node.get(segment, MISSING)
        if node is MISSING:
            return MISSING
    return node


class Template:
    """``%(key)s`` substitution from the target, pre-split at load time.

    :meth:`render` returns None when a key is missing or its value is None:
    such a check denies (oslo.policy would compare the string ``"None"``).
    """

    __slots__ = ("_key", "_parts", "text")

    def __init__(self, text: str, parts: tuple[str | TemplateKey, ...]) -> None:
        self.text = text
        self._parts = parts
        self._key = parts[0] if len(parts) == 1 and isinstance(parts[0], TemplateKey) else None

    @property
    def static(self) -> str | None:
        """The text when there is nothing to substitute, else None."""
        if not self._parts:
            return ""
        if len(self._parts) == 1 and isinstance(self._parts[0], str):
            return self._parts[0]
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.name for p in self._parts if isinstance(p, TemplateKey))

    def render(self, target: Mapping[str, Any]) -> str | None:
        key = self._key
        if key is not None:
            value = _lookup(target, key)
            return None if value is None or value is MISSING else str(value)
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(target, part)
            if value is None or value is MISSING:
                return None
            out.append(str(value))
        return "".join(out)


# -- checks ------------------------------------------------------------------


class Check:
    """A compiled rule: ``check(identity, target, rules)`` -> True, False or None."""

    __slots__ = ()

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        raise NotImplementedError

    def references(self) -> Iterator[str]:
        """Names of the ``rule:`` references in this tree."""
        return iter(())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class Allow(Check):
    """``@`` or an empty rule: always allow."""

    __slots__ = ()

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        return True

    def __str__(self) -> str:
        return "@"


class Deny(Check):
    """``!``: never allow."""

    __slots__ = ()

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        return False

    def __str__(self) -> str:
        return "!"


ALLOW: Final = Allow()
DENY: Final = Deny()


class Not(Check):
    __slots__ = ("check",)

    def __init__(self, check: Check) -> None:
        self.check = check

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        result = self.check(identity, target, rules)
        return None if result is None else not result

    def references(self) -> Iterator[str]:
        return self.check.references()

    def __str__(self) -> str:
        return f"not {self.check}"


class _Junction(Check):
    """``and`` / ``or`` of several checks, in three-valued logic (None: undecided)."""

    __slots__ = ("checks",)
    #: The verdict that decides the whole at once (False for and, True for or).
    decisive: ClassVar[bool]
    word: ClassVar[str]

    def __init__(self, checks: tuple[Check, ...]) -> None:
        self.checks = checks

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        undecided = False
        for check in self.checks:
            result = check(identity, target, rules)
            if result is self.decisive:
                return result
            if result is None:
                undecided = True
        return None if undecided else not self.decisive

    def references(self) -> Iterator[str]:
        for check in self.checks:
            yield from check.references()

    def __str__(self) -> str:
        return "(" + f" {self.word} ".join(str(c) for c in self.checks) + ")"


class And(_Junction):
    __slots__ = ()
    decisive = False
    word = "and"


class Or(_Junction):
    __slots__ = ()
    decisive = True
    word = "or"


class RuleRef(Check):
    """``rule:name``: the named rule of the policy, looked up when checked."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        rule = rules.get(self.name)
        if rule is None:
            return None
        return rule(identity, target, rules)

    def references(self) -> Iterator[str]:
        yield self.name

    def __str__(self) -> str:
        return f"rule:{self.name}"


class RoleCheck(Check):
    """``role:name`` (case-insensitive); the name may come from the target."""

    __slots__ = ("_static", "template")

    def __init__(self, template: Template) -> None:
        self.template = template
        self._static = template.static

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        role = self._static
        if role is None:
            role = self.template.render(target)
            if role is None:
                return None
        return identity.has_role(role)

    def __str__(self) -> str:
        return f"role:{self.template.text}"


class TokenScopeCheck(Check):
    """``token_scope:items:read``: the token was issued with that scope (exact match);
    the name may come from the target. A token issued without scopes passes none."""

    __slots__ = ("_static", "template")

    def __init__(self, template: Template) -> None:
        self.template = template
        self._static = template.static

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        scope = self._static
        if scope is None:
            scope = self.template.render(target)
            if scope is None:
                return None
        return identity.has_token_scope(scope)

    def __str__(self) -> str:
        return f"token_scope:{self.template.text}"


def _matches(value: Any, path: tuple[str, ...], expected: str) -> bool:
    # oslo.policy's _find_in_dict: walk the path; a list matches if any item does.
    if value is None or value is MISSING:
        return False
    if isinstance(value, (list, tuple)):
        return any(_matches(item, path, expected) for item in value)
    if path:
        if not isinstance(value, Mapping):
            return False
        return _matches(value.get(path[0], MISSING), path[1:], expected)
    return str(value) == expected


class GenericCheck(Check):
    """``kind:match``: a credential (or a literal) compared with the rendered match.

    ``project_id:%(project_id)s`` compares the caller's project with the
    target's; ``'shared':%(visibility)s`` compares a literal with the target;
    ``is_admin_project:True`` compares a credential with a constant. A
    credential the identity does not have (None or absent) never matches.
    """

    __slots__ = ("_getter", "_literal", "_path", "_static", "kind", "template")

    def __init__(self, kind: str, template: Template, literal: str | None) -> None:
        self.kind = kind
        self.template = template
        self._static = template.static
        self._literal = literal
        self._getter: Getter | None = None
        self._path: tuple[str, ...] = ()
        if literal is None:
            head, *rest = kind.split(".")
            self._getter = credential_getter(head)
            self._path = tuple(rest)

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> Verdict:
        expected = self._static
        if expected is None:
            expected = self.template.render(target)
            if expected is None:
                return None
        getter = self._getter
        if getter is None:
            return expected == self._literal
        return _matches(getter(identity), self._path, expected)

    def __str__(self) -> str:
        return f"{self.kind}:{self.template.text}"
