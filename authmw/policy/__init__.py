"""Access rules: oslo.policy-compatible policy files and plain role requirements.

Two ways to say who may do what, both checked against an
:class:`~authmw.Identity`:

* :class:`Policy`: named rules in the oslo.policy language, from a dict or a
  YAML/JSON file, compiled once at load::

      policy = Policy.from_file("policy.yaml")
      policy.authorize("items:delete", identity, {"project_id": item.project_id})

* :class:`Requirement`: a single rule for code without a policy file::

      require_roles("admin").authorize(identity)
      (require_any_role("member", "admin") & require_project_scope()).check(identity)

``authorize`` raises :class:`~authmw.errors.NotAuthenticated` (401) when there
is no identity and :class:`~authmw.errors.Forbidden` (403) when the rule
denies; ``enforce``/``check`` return a bool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from ..errors import Forbidden, NotAuthenticated
from ..identity import Identity
from ._checks import ALLOW, DENY, And, Check, Not, Or, Rules, credentials
from ._parser import PolicyError, parse_rule

__all__ = [
    "Policy",
    "PolicyError",
    "Requirement",
    "RuleText",
    "compile_rule",
    "credentials",
    "require_any_role",
    "require_authenticated",
    "require_project_scope",
    "require_roles",
    "require_system_scope",
    "require_token_scopes",
]

log = logging.getLogger("authmw.policy")

RuleText: TypeAlias = "str | Sequence[str | Sequence[str]]"
"""A rule in the policy language, or oslo.policy's legacy list-of-lists form."""

_NOT_AUTHENTICATED: Final = "The request you have made requires authentication."
_NO_TARGET: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_RULES: Final[Rules] = MappingProxyType({})


# -- plain requirements -------------------------------------------------------


class _Predicate(Check):
    """A check on the identity alone, built by the ``require_*`` helpers."""

    __slots__ = ("test", "text")

    def __init__(self, text: str, test: Callable[[Identity], bool]) -> None:
        self.text = text
        self.test = test

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> bool:
        return bool(self.test(identity))

    def __str__(self) -> str:
        return self.text


class Requirement:
    """One access rule: ``check(identity) -> bool``, ``authorize(identity)`` raises.

    Combine with ``&``, ``|`` and ``~``. A requirement compiled against a
    :class:`Policy` (:meth:`Policy.requirement`) reads the policy's current
    rules for its ``rule:`` references, so it follows :meth:`Policy.reload`.
    """

    __slots__ = ("_check", "_message", "_policy", "description")

    def __init__(
        self,
        check: Check,
        description: str | None = None,
        *,
        policy: Policy | None = None,
        message: str | None = None,
    ) -> None:
        self._check = check
        self._policy = policy
        self._message = message
        self.description = description if description is not None else str(check)

    def check(self, identity: Identity | None, target: Mapping[str, Any] | None = None) -> bool:
        """True if ``identity`` satisfies the rule (False when it is None)."""
        return identity is not None and self.decide(identity, target) is True

    def decide(self, identity: Identity, target: Mapping[str, Any] | None = None) -> bool | None:
        """True or False, or None when ``target`` lacks a key the rule needs to decide."""
        rules = self._policy._rules if self._policy is not None else _NO_RULES
        return self._check(identity, _NO_TARGET if target is None else target, rules)

    def authorize(
        self, identity: Identity | None, target: Mapping[str, Any] | None = None
    ) -> Identity:
        """Return ``identity`` if allowed; raise ``NotAuthenticated`` or ``Forbidden``."""
        if identity is None:
            raise NotAuthenticated(_NOT_AUTHENTICATED)
        if not self.check(identity, target):
            raise Forbidden(self._message or f"not allowed: requires {self.description}")
        return identity

    def _combine(self, other: Requirement, op: type[And] | type[Or], word: str) -> Requirement:
        if not isinstance(other, Requirement):
            return NotImplemented
        policy = self._policy or other._policy
        if self._policy and other._policy and self._policy is not other._policy:
            raise ValueError("cannot combine requirements bound to different policies")
        return Requirement(
            op((self._check, other._check)),
            f"({self.description} {word} {other.description})",
            policy=policy,
        )

    def __and__(self, other: Requirement) -> Requirement:
        return self._combine(other, And, "and")

    def __or__(self, other: Requirement) -> Requirement:
        return self._combine(other, Or, "or")

    def __invert__(self) -> Requirement:
        return Requirement(Not(self._check), f"not {self.description}", policy=self._policy)

    def __repr__(self) -> str:
        return f"Requirement({self.description!r})"


def _role_names(roles: Iterable[str], helper: str) -> tuple[str, ...]:
    names = tuple(roles)
    if not names:
        raise ValueError(f"{helper}() needs at least one role")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{helper}(): role names must be non-empty strings, got {name!r}")
    return names


def require_authenticated() -> Requirement:
    """Any authenticated identity."""
    return Requirement(ALLOW, "an authenticated identity")


def require_roles(*roles: str) -> Requirement:
    """Every one of ``roles`` (case-insensitive)."""
    names = _role_names(roles, "require_roles")
    text = " and ".join(f"role:{r}" for r in names)
    return Requirement(
        _Predicate(text, lambda i: i.has_all_roles(*names)),
        "role " + " and ".join(names),
    )


def require_any_role(*roles: str) -> Requirement:
    """At least one of ``roles`` (case-insensitive)."""
    names = _role_names(roles, "require_any_role")
    text = " or ".join(f"role:{r}" for r in names)
    return Requirement(
        _Predicate(text, lambda i: i.has_any_role(*names)),
        "role " + " or ".join(names),
    )


def require_project_scope(project_id: str | None = None) -> Requirement:
    """A project-scoped token (optionally for one given project)."""
    if project_id is None:
        return Requirement(
            _Predicate("project_scope", lambda i: bool(i.project_id)), "a project-scoped token"
        )
    return Requirement(
        _Predicate(f"project_id:{project_id}", lambda i: i.project_id == project_id),
        f"a token scoped to project {project_id}",
    )


def require_system_scope(scope: str = "all") -> Requirement:
    """A system-scoped token (``system_scope`` equal to ``scope``)."""
    return Requirement(
        _Predicate(f"system_scope:{scope}", lambda i: i.system_scope == scope),
        f"a system-scoped token ({scope})",
    )


def require_token_scopes(*scopes: str) -> Requirement:
    """A token issued with every one of ``scopes`` (``token_scope:`` checks; exact match)."""
    if not scopes or not all(isinstance(s, str) and s.strip() for s in scopes):
        raise ValueError("require_token_scopes() needs non-empty scope names")
    text = " and ".join(f"token_scope:{s}" for s in scopes)
    return Requirement(
        _Predicate(text, lambda i: all(i.has_token_scope(s) for s in scopes)),
        "token scope " + " and ".join(scopes),
    )


def compile_rule(expression: RuleText, *, policy: Policy | None = None) -> Requirement:
    """Compile a policy-language expression into a :class:`Requirement`.

    ``rule:name`` references need ``policy``; they are checked now and
    raise :class:`PolicyError` if the policy does not define them.
    """
    check = parse_rule(expression)
    missing = sorted({name for name in check.references() if policy is None or name not in policy})
    if missing:
        where = "the policy" if policy is not None else "no policy (pass policy=...)"
        raise PolicyError(f"{expression!r} refers to rule {missing[0]!r}, not defined in {where}")
    text = expression if isinstance(expression, str) else str(check)
    return Requirement(check, text or "@", policy=policy)


# -- policies -----------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError("defined twice", rule=key)
        out[key] = value
    return out


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise PolicyError(
            "YAML policy files need PyYAML: pip install 'authmw[yaml]' (or use JSON)"
        ) from None

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: Loader, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise PolicyError(f"defined twice (line {key_node.start_mark.line + 1})", rule=key)
            seen.add(key)
        return dict(loader.construct_mapping(node, deep=deep))

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from None


def _read_file(path: Path) -> dict[str, RuleText]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicates) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise PolicyError(f"not valid JSON: {exc}") from None
    else:
        data = _load_yaml(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError(f"must map rule names to rules, got {type(data).__name__}")
    return data


class Policy:
    """Named rules in the oslo.policy language, compiled once.

    ``defaults`` are rules defined in code; ``rules`` (or the file of
    :meth:`from_file`) override them by name. With ``strict`` (the default)
    any rule that cannot be compiled, refers to an undefined rule or takes
    part in a reference cycle raises :class:`PolicyError` naming it. With
    ``strict=False`` such rules, and every rule that refers to them, deny;
    the errors are logged and kept in :attr:`problems`.
    """

    def __init__(
        self,
        rules: Mapping[str, RuleText] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        defaults: Mapping[str, RuleText] | None = None,
        strict: bool = True,
    ) -> None:
        self._path = Path(path) if path is not None else None
        self._defaults = dict(defaults or {})
        self._inline = dict(rules or {})
        self._strict = strict
        self._rules: dict[str, Check] = {}
        self._sources: dict[str, RuleText] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.problems: tuple[PolicyError, ...] = ()
        self.reload()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        defaults: Mapping[str, RuleText] | None = None,
        strict: bool = True,
    ) -> Policy:
        """Load a YAML (``.yaml``/``.yml``, needs PyYAML) or JSON (``.json``) policy file."""
        return cls(path=path, defaults=defaults, strict=strict)

    @property
    def path(self) -> Path | None:
        """The policy file, if the policy came from one."""
        return self._path

    def reload(self, rules: Mapping[str, RuleText] | None = None) -> None:
        """Re-read the policy file and recompile; ``rules`` replaces the inline rules.

        Precedence: ``defaults`` < the file < inline ``rules``. All-or-nothing:
        on :class:`PolicyError` the previous rules stay in force.
        """
        with self._lock:
            inline = dict(rules) if rules is not None else self._inline
            merged = dict(self._defaults)
            if self._path is not None:
                try:
                    merged.update(_read_file(self._path))
                except PolicyError as exc:
                    raise PolicyError(exc.detail, rule=exc.rule, source=str(self._path)) from None
            merged.update(inline)
            self._install(merged)
            self._inline = inline
            self._warned = set()

    def _install(self, sources: dict[str, RuleText]) -> None:
        source = str(self._path) if self._path is not None else None
        problems: list[PolicyError] = []
        compiled: dict[str, Check] = {}
        broken: set[str] = set()
        for name, text in sources.items():
            if not isinstance(name, str) or not name:
                problems.append(PolicyError(f"rule names must be non-empty strings, got {name!r}"))
                continue
            try:
                compiled[name] = parse_rule(text, rule=name)
            except PolicyError as exc:
                problems.append(PolicyError(exc.detail, rule=name, source=source))
                compiled[name] = DENY
                broken.add(name)
        refs = {name: set(check.references()) for name, check in compiled.items()}
        for name, names in refs.items():
            for ref in sorted(names - compiled.keys()):
                problems.append(
                    PolicyError(f"refers to undefined rule {ref!r}", rule=name, source=source)
                )
                broken.add(name)
        for cycle in _cycles(refs):
            problems.append(
                PolicyError(
                    "reference cycle " + " -> ".join([*cycle, cycle[0]]),
                    rule=cycle[0],
                    source=source,
                )
            )
            broken.update(cycle)
        if problems and self._strict:
            first = problems[0]
            if len(problems) == 1:
                raise first
            more = "; ".join(f"rule {p.rule!r}: {p.detail}" for p in problems[1:])
            raise PolicyError(
                f"{first.detail} (and {len(problems) - 1} more: {more})",
                rule=first.rule,
                source=first.source,
            )
        for problem in problems:
            log.error("%s (the rule denies)", problem)
        for name in _referrers(refs, broken):
            compiled[name] = DENY
        self._sources = sources
        self._rules = compiled
        self.problems = tuple(problems)

    # -- queries -------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def names(self) -> tuple[str, ...]:
        """Rule names, in definition order."""
        return tuple(self._rules)

    def rule_text(self, name: str) -> RuleText:
        """The source text of rule ``name``."""
        return self._sources[name]

    def enforce(
        self,
        rule: str,
        identity: Identity | None,
        target: Mapping[str, Any] | None = None,
    ) -> bool:
        """True if ``identity`` may do ``rule`` on ``target``.

        False for no identity, an undefined rule name (logged once), or a
        rule that cannot decide because the target lacks a key it needs.
        """
        if identity is None:
            return False
        rules = self._rules
        check = rules.get(rule)
        if check is None:
            if rule not in self._warned:
                self._warned.add(rule)
                log.warning("policy has no rule %r; denying", rule)
            return False
        return check(identity, _NO_TARGET if target is None else target, rules) is True

    def authorize(
        self,
        rule: str,
        identity: Identity | None,
        target: Mapping[str, Any] | None = None,
    ) -> Identity:
        """Return ``identity`` if allowed; raise ``NotAuthenticated`` or ``Forbidden``."""
        if identity is None:
            raise NotAuthenticated(_NOT_AUTHENTICATED)
        if not self.enforce(rule, identity, target):
            raise Forbidden(f"policy does not allow {rule}")
        return identity

    def requirement(self, spec: str) -> Requirement:
        """A :class:`Requirement` for a rule name, or else a policy expression.

        ``"items:delete"`` (a defined name) checks that rule; anything else is
        compiled as an expression whose ``rule:`` references must exist.
        """
        if spec in self._rules:
            return Requirement(
                _Named(spec), spec, policy=self, message=f"policy does not allow {spec}"
            )
        return compile_rule(spec, policy=self)


class _Named(Check):
    """A whole named rule, looked up at check time so it follows reloads."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, identity: Identity, target: Mapping[str, Any], rules: Rules) -> bool | None:
        check = rules.get(self.name)
        return None if check is None else check(identity, target, rules)

    def __str__(self) -> str:
        return self.name


def _cycles(refs: Mapping[str, set[str]]) -> list[list[str]]:
    """Reference cycles, each once, as lists of rule names."""
    white, grey, black = 0, 1, 2
    state = dict.fromkeys(refs, white)
    cycles: list[list[str]] = []
    for root in refs:
        if state[root] != white:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(refs[root]))]
        path = [root]
        state[root] = grey
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                state[node] = black
                continue
            nxt = pending.pop()
            if nxt not in state:
                continue
            if state[nxt] == grey:
                cycles.append(path[path.index(nxt) :])
            elif state[nxt] == white:
                state[nxt] = grey
                path.append(nxt)
                stack.append((nxt, sorted(refs[nxt])))
    return cycles


def _referrers(refs: Mapping[str, set[str]], broken: set[str]) -> set[str]:
    """``broken`` plus every rule that reaches one of them through references."""
    result = set(broken)
    changed = True
    while changed:
        changed = False
        for name, names in refs.items():
            if name not in result and names & result:
                result.add(name)
                changed = True
    return result
