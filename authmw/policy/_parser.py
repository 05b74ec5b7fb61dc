"""The oslo.policy rule language, compiled to check trees.

Grammar (keywords case-insensitive, precedence ``not`` > ``and`` > ``or``)::

    rule    := ""  |  or_expr
    or_expr := and_expr ("or" and_expr)*
    and_expr:= not_expr ("and" not_expr)*
    not_expr:= "not" not_expr  |  atom
    atom    := "(" or_expr ")"  |  "@"  |  "!"  |  KIND ":" MATCH

Tokens are split on whitespace; parentheses are peeled off the start and
end of each token, as oslo.policy does, so ``%(project_id)s`` inside a
check is left alone. Every mistake raises :class:`PolicyError` naming the
rule instead of quietly compiling to "deny".
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any, Final

from ..errors import ConfigurationError
from ._checks import (
    ALLOW,
    DENY,
    And,
    Check,
    GenericCheck,
    Not,
    Or,
    RoleCheck,
    RuleRef,
    Template,
    TemplateKey,
    TokenScopeCheck,
)

__all__ = ["PolicyError", "parse_rule", "parse_template"]

_MAX_DEPTH: Final = 64
_KEYWORDS: Final = frozenset({"and", "or", "not"})
_REMOTE_KINDS: Final = frozenset({"http", "https"})


class PolicyError(ConfigurationError):
    """A policy rule cannot be compiled: a syntax error, an unknown reference, a cycle.

    ``rule`` names the rule (None for an inline expression), ``source`` the
    policy file when there is one.
    """

    def __init__(self, message: str, *, rule: str | None = None, source: str | None = None):
        self.rule = rule
        self.source = source
        self.detail = message
        option = f"policy file {source}" if source else "policy"
        if rule is not None:
            message = f"rule {rule!r}: {message}"
        super().__init__(option, message)


class _Token:
    __slots__ = ("check", "kind", "text")

    def __init__(self, kind: str, text: str, check: Check | None = None) -> None:
        self.kind = kind  # "(", ")", "and", "or", "not", "check"
        self.text = text
        self.check = check


def parse_template(text: str, *, rule: str | None = None) -> Template:
    """Split ``text`` into literal parts and ``%(key)s`` substitutions."""
    parts: list[str | TemplateKey] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "%":
            buf.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "%":
            buf.append("%")
            i += 2
            continue
        if following != "(":
            raise PolicyError(
                f"stray '%' in {text!r} (substitutions are written %(key)s, a literal % as %%)",
                rule=rule,
            )
        end = text.find(")", i + 2)
        if end == -1:
            raise PolicyError(f"unterminated '%(' in {text!r}", rule=rule)
        name = text[i + 2 : end]
        if not name:
            raise PolicyError(f"empty substitution '%()' in {text!r}", rule=rule)
        if text[end + 1 : end + 2] != "s":
            raise PolicyError(
                f"only %(key)s substitutions are supported, found {text[i : end + 2]!r}",
                rule=rule,
            )
        if buf:
            parts.append("".join(buf))
            buf.clear()
        parts.append(TemplateKey(name))
        i = end + 2
    if buf:
        parts.append("".join(buf))
    return Template(text, tuple(parts))


def _literal(kind: str) -> str | None:
    """``'shared'``, ``True``, ``42``: the string oslo.policy compares; else None."""
    if not kind or not (kind[0] in "'\"-+.0123456789" or kind in ("True", "False", "None")):
        return None
    try:
        value = ast.literal_eval(kind)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return str(value)


def parse_check(text: str, *, rule: str | None = None) -> Check:
    """Compile one check (``role:x``, ``rule:x``, ``kind:match``, ``@``, ``!``)."""
    if text == "@":
        return ALLOW
    if text == "!":
        return DENY
    kind, sep, match = text.partition(":")
    if not sep:
        hint = f"; did you mean 'rule:{text}'?" if text.replace("_", "").isalnum() else ""
        raise PolicyError(
            f"{text!r} is not a check (expected kind:match, '@' or '!'){hint}", rule=rule
        )
    if not kind:
        raise PolicyError(f"check {text!r} has no kind before ':'", rule=rule)
    if kind == "rule":
        if not match:
            raise PolicyError("'rule:' needs a rule name", rule=rule)
        return RuleRef(match)
    if kind == "role":
        template = parse_template(match, rule=rule)
        if template.static == "":
            raise PolicyError("'role:' needs a role name", rule=rule)
        return RoleCheck(template)
    if kind == "token_scope":
        template = parse_template(match, rule=rule)
        if template.static == "":
            raise PolicyError("'token_scope:' needs a scope name", rule=rule)
        return TokenScopeCheck(template)
    if kind in _REMOTE_KINDS:
        raise PolicyError(f"remote {kind}: checks are not supported ({text!r})", rule=rule)
    if not match:
        raise PolicyError(f"check {text!r} has nothing to compare after ':'", rule=rule)
    literal = _literal(kind)
    if literal is None and "" in kind.split("."):
        raise PolicyError(f"bad credential path {kind!r} in {text!r}", rule=rule)
    return GenericCheck(kind, parse_template(match, rule=rule), literal)


def _tokenize(text: str, rule: str | None) -> list[_Token]:
    tokens: list[_Token] = []
    for raw in text.split():
        body = raw.lstrip("(")
        tokens.extend(_Token("(", "(") for _ in range(len(raw) - len(body)))
        if not body:
            continue
        stripped = body.rstrip(")")
        trailing = len(body) - len(stripped)
        if stripped:
            lowered = stripped.lower()
            if lowered in _KEYWORDS:
                tokens.append(_Token(lowered, stripped))
            elif len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
                raise PolicyError(f"quoted string {body} is not a check", rule=rule)
            else:
                tokens.append(_Token("check", stripped, parse_check(stripped, rule=rule)))
        tokens.extend(_Token(")", ")") for _ in range(trailing))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token], text: str, rule: str | None) -> None:
        self.tokens = tokens
        self.text = text
        self.rule = rule
        self.pos = 0
        self.depth = 0

    def error(self, message: str) -> PolicyError:
        return PolicyError(f"{message} in {self.text!r}", rule=self.rule)

    def peek(self) -> str | None:
        return self.tokens[self.pos].kind if self.pos < len(self.tokens) else None

    def parse(self) -> Check:
        check = self.or_expr()
        if self.pos < len(self.tokens):
            raise self.error(f"unexpected {self.tokens[self.pos].text!r}")
        return check

    def or_expr(self) -> Check:
        checks = [self.and_expr()]
        while self.peek() == "or":
            self.pos += 1
            checks.append(self.and_expr())
        return checks[0] if len(checks) == 1 else Or(tuple(checks))

    def and_expr(self) -> Check:
        checks = [self.not_expr()]
        while self.peek() == "and":
            self.pos += 1
            checks.append(self.not_expr())
        return checks[0] if len(checks) == 1 else And(tuple(checks))

    def not_expr(self) -> Check:
        if self.peek() == "not":
            self.pos += 1
            self.enter()
            check = Not(self.not_expr())
            self.depth -= 1
            return check
        return self.atom()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"nested deeper than {_MAX_DEPTH} levels")

    def atom(self) -> Check:
        if self.pos >= len(self.tokens):
            before = self.tokens[-1].text if self.tokens else None
            where = f" after {before!r}" if before else ""
            raise self.error(f"expected a check{where}, found the end of the rule")
        token = self.tokens[self.pos]
        self.pos += 1
        if token.kind == "check":
            assert token.check is not None
            return token.check
        if token.kind == "(":
            self.enter()
            check = self.or_expr()
            if self.peek() != ")":
                found = (
                    repr(self.tokens[self.pos].text)
                    if self.pos < len(self.tokens)
                    else "the end of the rule"
                )
                raise self.error(f"expected ')', found {found}")
            self.pos += 1
            self.depth -= 1
            return check
        raise self.error(f"expected a check, found {token.text!r}")


def _parse_list(value: Sequence[Any], rule: str | None) -> Check:
    # oslo.policy's legacy list syntax: [[a, b], [c]] means (a and b) or c.
    if not value:
        return ALLOW
    alternatives: list[Check] = []
    for inner in value:
        items = [inner] if isinstance(inner, str) else inner
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise PolicyError(
                f"list rule items must be strings or lists of strings: {inner!r}", rule=rule
            )
        if not items:
            continue
        checks = tuple(parse_check(item, rule=rule) for item in items)
        alternatives.append(checks[0] if len(checks) == 1 else And(checks))
    if not alternatives:
        return DENY
    return alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))


def parse_rule(value: str | Sequence[Any], *, rule: str | None = None) -> Check:
    """Compile a rule (policy-language text, or oslo's legacy list syntax).

    An empty string allows everything, as in oslo.policy.
    """
    if isinstance(value, str):
        if value == "":
            return ALLOW
        tokens = _tokenize(value, rule)
        if not tokens:
            raise PolicyError(
                "a rule of only whitespace is ambiguous; use '' or '@' to allow", rule=rule
            )
        return _Parser(tokens, value, rule).parse()
    if isinstance(value, (list, tuple)):
        return _parse_list(value, rule)
    raise PolicyError(
        f"a rule must be a string (or a list of checks), got {type(value).__name__}", rule=rule
    )
