"""Differential tests: authmw.policy and oslo.policy give the same verdicts.

Rules are generated from the language's pieces; identities and targets
are random. With every target key present and not None, authmw must agree
with oslo.policy exactly. For token soups (random, mostly invalid rules)
authmw must accept exactly the rules oslo.policy can parse.
"""

from __future__ import annotations

import logging
from typing import Any

import oslo_config.cfg as oslo_cfg  # test extra: the reference implementation
import oslo_policy._parser as oslo_parser
import oslo_policy.policy as oslo_policy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authmw.identity import Identity
from authmw.policy import Policy, PolicyError, credentials

# oslo.policy logs a traceback for each rule it cannot parse.
logging.getLogger("oslo_policy").setLevel(logging.CRITICAL)

CHECKS = [
    "@",
    "!",
    "role:admin",
    "role:Member",
    "role:READER",
    "role:%(needed_role)s",
    "project_id:%(project_id)s",
    "user_id:%(target.owner)s",
    "domain_id:%(domain_id)s",
    "user_domain_id:%(target.user.domain_id)s",
    "'shared':%(visibility)s",
    '"public":%(visibility)s',
    "True:%(enabled)s",
    "is_admin_project:True",
    "is_admin_project:False",
    "system_scope:all",
    "system:all",
    "roles:member",
    "project_id:p1",
    "is_admin:True",
    "rule:base_admin",
    "rule:base_owner",
]

BASE_RULES = {
    "base_admin": "role:admin and (is_admin_project:True or system_scope:all)",
    "base_owner": "project_id:%(project_id)s or user_id:%(target.owner)s",
}


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(CHECKS))
    kind = draw(st.sampled_from(["and", "or", "not", "paren", "and", "or"]))
    if kind == "not":
        return f"{draw(st.sampled_from(['not', 'NOT', 'Not']))} {draw(expressions(depth + 1))}"
    if kind == "paren":
        return f"({draw(expressions(depth + 1))})"
    word = draw(st.sampled_from([kind, kind.upper()]))
    return f"{draw(expressions(depth + 1))} {word} {draw(expressions(depth + 1))}"


values = st.sampled_from(["p1", "p2", "u1", "d1"])
roles = st.lists(
    st.sampled_from(["admin", "ADMIN", "member", "Member", "reader", "other"]),
    max_size=4,
    unique=True,
)


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    return Identity(
        user_id=draw(values),
        user_domain_id=draw(st.none() | values),
        project_id=draw(st.none() | values),
        domain_id=draw(st.none() | values),
        system_scope=draw(st.none() | st.just("all")),
        roles=tuple(draw(roles)),
        is_admin_project=draw(st.booleans()),
        extra=draw(st.sampled_from([{}, {"is_admin": True}, {"is_admin": False}])),
    )


@st.composite
def targets(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "project_id": draw(values),
        "target.owner": draw(values),
        "domain_id": draw(values),
        "target.user.domain_id": draw(values),
        "visibility": draw(st.sampled_from(["shared", "public", "private"])),
        "enabled": draw(st.booleans()),
        "needed_role": draw(st.sampled_from(["admin", "MEMBER", "reader", "x"])),
    }


def oslo_enforcer(rules: dict[str, str]) -> Any:
    conf = oslo_cfg.ConfigOpts()
    conf([])
    enforcer = oslo_policy.Enforcer(conf, use_conf=False)
    enforcer.set_rules(oslo_policy.Rules.from_dict(rules), overwrite=True, use_conf=False)
    return enforcer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), identities(), targets())
def test_same_verdicts_as_oslo_policy(
    rule: str, identity: Identity, target: dict[str, Any]
) -> None:
    rules = {**BASE_RULES, "r": rule}
    ours = Policy(rules).enforce("r", identity, target)
    theirs = oslo_enforcer(rules).enforce("r", target, credentials(identity))
    assert ours is bool(theirs), (rule, identity, target)


# Letters whose casefold() and lower() differ, and their look-alikes.
case_letters = st.sampled_from(
    list("sSK\u017f\u00df\u1e9e\u212akI\u0130i\u03c3\u03c2\u03a3\ufb01f")
)
role_names = st.text(case_letters, min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(st.lists(role_names, max_size=3), role_names, st.data())
def test_role_checks_match_like_oslo_policy(held: list[str], other: str, data: Any) -> None:
    # The role needed is mostly a held one in another case form.
    base = data.draw(st.sampled_from([*held, other]))
    case_forms = [base, base.upper(), base.lower(), base.casefold(), base.swapcase()]
    needed = data.draw(st.sampled_from(case_forms))
    identity = Identity("u1", roles=tuple(held))
    rules = {"r": f"role:{needed}"}
    theirs = bool(oslo_enforcer(rules).enforce("r", {}, credentials(identity)))
    assert Policy(rules).enforce("r", identity, {}) is theirs, (held, needed)
    assert identity.has_role(needed) is theirs, (held, needed)


def test_long_s_is_not_service_for_oslo_policy_nor_for_authmw() -> None:
    identity = Identity("u1", roles=("\u017fervice",))
    rules = {"r": "role:service"}
    assert not oslo_enforcer(rules).enforce("r", {}, credentials(identity))
    assert not Policy(rules).enforce("r", identity, {})


TOKENS = [
    "role:admin",
    "role:member",
    "project_id:%(project_id)s",
    "@",
    "!",
    "and",
    "or",
    "not",
    "(",
    ")",
    "((",
    "))",
    "(role:admin",
    "role:member)",
    "OR",
    "Not",
]


@st.composite
def near_valid(draw: st.DrawFn) -> list[str]:
    """A valid rule with one token dropped, duplicated, inserted or swapped."""
    words = draw(expressions()).replace("(", "( ").replace(")", " )").split()
    i = draw(st.integers(0, len(words) - 1))
    op = draw(st.sampled_from(["drop", "dup", "insert", "swap"]))
    if op == "drop" and len(words) > 1:
        del words[i]
    elif op == "dup":
        words.insert(i, words[i])
    elif op == "insert":
        words.insert(i, draw(st.sampled_from(TOKENS)))
    elif i + 1 < len(words):
        words[i], words[i + 1] = words[i + 1], words[i]
    return words


soups = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=9) | near_valid()


@settings(max_examples=800, deadline=None)
@given(soups, identities(), targets())
def test_accepts_exactly_what_oslo_policy_parses(
    soup: list[str], identity: Identity, target: dict[str, Any]
) -> None:
    rule = " ".join(soup)
    if "rule:" in rule:
        rule = rule.replace("rule:base_", "role:base_")
    theirs = oslo_parser.parse_rule(rule)
    try:
        ours = Policy({"r": rule})
    except PolicyError:
        # oslo.policy compiles what it cannot parse to FalseCheck ("!").
        assert str(theirs) == "!", rule
        return
    assume(rule.strip() != "!")
    assert str(theirs) != "!" or "!" in soup, rule
    creds = credentials(identity)
    assert ours.enforce("r", identity, target) is bool(theirs(target, creds, None)), rule


@pytest.mark.parametrize(
    "rule",
    [
        "is_admin:True or project_id:%(project_id)s",
        "role:admin and system_scope:all",
        "(role:reader and system_scope:all) or (role:reader and project_id:%(project_id)s)",
        "role:admin or role:member and not role:reader",
        "not role:admin or role:member and role:reader or @",
    ],
)
def test_sample_rules_against_oslo_policy_exhaustively(rule: str) -> None:
    rules = {"r": rule}
    ours, theirs = Policy(rules), oslo_enforcer(rules)
    for role_set in [
        (),
        ("admin",),
        ("Member",),
        ("reader",),
        ("admin", "reader"),
        ("member", "reader"),
    ]:
        for project in (None, "p1", "p2"):
            for system in (None, "all"):
                for extra in ({}, {"is_admin": True}):
                    identity = Identity(
                        user_id="u",
                        roles=role_set,
                        project_id=project,
                        system_scope=system,
                        extra=extra,
                    )
                    target = {"project_id": "p1"}
                    expected = bool(theirs.enforce("r", target, credentials(identity)))
                    assert ours.enforce("r", identity, target) is expected
