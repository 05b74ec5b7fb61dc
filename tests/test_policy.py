from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authmw.errors import ConfigurationError, Forbidden, NotAuthenticated
from authmw.identity import Identity
from authmw.policy import (
    Policy,
    PolicyError,
    Requirement,
    compile_rule,
    credentials,
    require_any_role,
    require_authenticated,
    require_project_scope,
    require_roles,
    require_system_scope,
)


def ident(**kwargs: Any) -> Identity:
    kwargs.setdefault("user_id", "u1")
    return Identity(**kwargs)


def allows(rule: Any, identity: Identity, target: dict[str, Any] | None = None) -> bool:
    return Policy({"r": rule}).enforce("r", identity, target)


MEMBER = ident(project_id="p1", roles=("member", "reader"))
ADMIN = ident(user_id="a1", project_id="p1", roles=("admin", "member", "reader"))
SYSTEM_ADMIN = ident(user_id="s1", system_scope="all", roles=("admin",))


# -- the grammar ---------------------------------------------------------------


def test_empty_rule_allows_and_at_allows_and_bang_denies() -> None:
    assert allows("", MEMBER)
    assert allows("@", MEMBER)
    assert not allows("!", MEMBER)
    assert allows([], MEMBER)  # oslo's legacy list syntax: empty list allows


@pytest.mark.parametrize(
    "rule", ["role:member", "role:MEMBER", "role:Member", "ROLE:x or role:member"]
)
def test_role_check_is_case_insensitive(rule: str) -> None:
    # The kind itself ("ROLE") is not a keyword: "ROLE:x" is a generic check that fails.
    assert allows(rule, MEMBER)


def test_role_check_denies_missing_role() -> None:
    assert not allows("role:admin", MEMBER)
    assert allows("role:admin", ADMIN)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("role:admin or role:member and role:nope", False),
        ("role:member or role:admin and role:nope", True),
        ("(role:member or role:admin) and role:nope", False),
        ("not role:member or role:reader", True),
        ("not (role:member or role:admin)", False),
        ("not role:admin and role:member", True),
        ("role:admin and role:member or role:reader", True),
        ("role:nope or role:nope2 or role:reader and not role:admin", True),
        ("not not role:member", True),
        ("((role:member))", True),
        ("role:member AND NOT role:admin", True),
        ("role:admin Or role:member", True),
    ],
)
def test_operators_and_precedence(rule: str, expected: bool) -> None:
    assert allows(rule, MEMBER) is expected


_ROLE_NAMES = ("a", "b", "c", "d")


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 0) -> tuple[str, str]:
    """(policy text, equivalent Python expression over variables a..d)."""
    if depth > 3 or draw(st.booleans()):
        name = draw(st.sampled_from(_ROLE_NAMES))
        return f"role:{name}", name
    kind = draw(st.sampled_from(["and", "or", "not", "paren"]))
    if kind == "not":
        text, py = draw(_expressions(depth + 1))
        return f"not {text}", f"not {py}"
    if kind == "paren":
        text, py = draw(_expressions(depth + 1))
        return f"({text})", f"({py})"
    left, lpy = draw(_expressions(depth + 1))
    right, rpy = draw(_expressions(depth + 1))
    word = draw(st.sampled_from([kind, kind.upper(), kind.title()]))
    return f"{left} {word} {right}", f"{lpy} {kind} {rpy}"


@settings(max_examples=300, deadline=None)
@given(_expressions(), st.sets(st.sampled_from(_ROLE_NAMES)))
def test_precedence_matches_python_boolean_precedence(
    expr: tuple[str, str], held: set[str]
) -> None:
    # Python's not > and > or is the policy language's precedence.
    text, py = expr
    env = {name: name in held for name in _ROLE_NAMES}
    expected = eval(py, {"__builtins__": {}}, env)  # noqa: S307 - generated boolean expression
    assert allows(text, ident(roles=tuple(held))) is expected


def test_parentheses_glued_to_checks_and_inside_substitutions() -> None:
    rule = "(role:admin or (project_id:%(project_id)s and role:member))"
    assert allows(rule, MEMBER, {"project_id": "p1"})
    assert not allows(rule, MEMBER, {"project_id": "p2"})


def test_generic_check_compares_credential_with_target() -> None:
    rule = "project_id:%(project_id)s"
    assert allows(rule, MEMBER, {"project_id": "p1"})
    assert not allows(rule, MEMBER, {"project_id": "p2"})


def test_generic_check_with_constant_match() -> None:
    assert allows("system_scope:all", SYSTEM_ADMIN)
    assert not allows("system_scope:all", ADMIN)
    assert allows("is_admin_project:True", MEMBER)
    assert not allows("is_admin_project:True", ident(roles=("admin",), is_admin_project=False))
    assert allows("is_admin_project:False", ident(is_admin_project=False))


@pytest.mark.parametrize("literal", ["'shared'", '"shared"'])
def test_quoted_literal_on_the_left(literal: str) -> None:
    rule = f"{literal}:%(visibility)s"
    assert allows(rule, MEMBER, {"visibility": "shared"})
    assert not allows(rule, MEMBER, {"visibility": "private"})


def test_other_literals_on_the_left() -> None:
    assert allows("True:%(enabled)s", MEMBER, {"enabled": True})
    assert not allows("True:%(enabled)s", MEMBER, {"enabled": False})
    assert allows("42:%(size)s", MEMBER, {"size": 42})


def test_template_with_literal_text_and_percent_escape() -> None:
    rule = "project_name:team-%(team)s-100%%"
    assert allows(rule, ident(project_name="team-red-100%"), {"team": "red"})
    assert not allows(rule, ident(project_name="team-red-100%"), {"team": "blue"})


def test_dotted_target_key_flat_or_nested() -> None:
    rule = "user_id:%(target.owner)s"
    assert allows(rule, MEMBER, {"target.owner": "u1"})
    assert allows(rule, MEMBER, {"target": {"owner": "u1"}})
    assert not allows(rule, MEMBER, {"target": {"owner": "u2"}})
    assert not allows(rule, MEMBER, {"target": "u1"})


def test_role_name_from_target() -> None:
    rule = "role:%(required_role)s"
    assert allows(rule, MEMBER, {"required_role": "Reader"})
    assert not allows(rule, MEMBER, {"required_role": "admin"})
    assert not allows(rule, MEMBER, {})


def test_generic_check_on_roles_and_nested_credentials() -> None:
    assert allows("roles:member", MEMBER)  # a list credential matches if any item does
    assert not allows("roles:admin", MEMBER)
    appcred = ident(application_credential={"id": "ac1", "access_rules": [{"service": "x"}]})
    assert allows("application_credential.id:ac1", appcred)
    assert allows("application_credential.access_rules.service:x", appcred)
    assert not allows("application_credential.id:ac2", appcred)
    assert not allows("application_credential.id:ac1", MEMBER)


def test_credentials_use_oslo_names() -> None:
    identity = ident(
        user_id="u1",
        user_domain_id="d1",
        project_id="p1",
        project_domain_id="d2",
        roles=("Member",),
        is_admin_project=False,
        extra={"is_admin": True, "project_id": "spoofed"},
    )
    creds = credentials(identity)
    assert creds["user_id"] == "u1"
    assert creds["user_domain_id"] == "d1"
    assert creds["project_id"] == "p1"  # a standard name is never taken from extra
    assert creds["project_domain_id"] == "d2"
    assert creds["roles"] == ["Member"]
    assert creds["is_admin_project"] is False
    assert creds["is_admin"] is True
    assert "system_scope" not in creds and "domain_id" not in creds
    assert credentials(SYSTEM_ADMIN)["system"] == "all"


def test_unknown_credentials_come_from_identity_extra() -> None:
    rule = "is_admin:True or project_id:%(project_id)s"
    assert allows(rule, ident(extra={"is_admin": True}), {"project_id": "p9"})
    assert not allows(rule, ident(), {"project_id": "p9"})
    spoof = ident(project_id="p1", extra={"project_id": "p9"})
    assert not allows("project_id:%(project_id)s", spoof, {"project_id": "p9"})


def test_domain_and_user_domain_checks() -> None:
    domain_admin = ident(domain_id="d1", roles=("admin",), user_domain_id="d1")
    assert allows("role:admin and domain_id:%(domain_id)s", domain_admin, {"domain_id": "d1"})
    assert not allows("role:admin and domain_id:%(domain_id)s", domain_admin, {"domain_id": "d2"})
    assert allows(
        "user_domain_id:%(target.user.domain_id)s", domain_admin, {"target.user.domain_id": "d1"}
    )


def test_rule_references() -> None:
    policy = Policy(
        {
            "admin_required": "role:admin",
            "owner": "user_id:%(user_id)s",
            "admin_or_owner": "rule:admin_required or rule:owner",
        }
    )
    assert policy.enforce("admin_or_owner", ADMIN, {"user_id": "someone"})
    assert policy.enforce("admin_or_owner", MEMBER, {"user_id": "u1"})
    assert not policy.enforce("admin_or_owner", MEMBER, {"user_id": "someone"})


def test_legacy_list_syntax() -> None:
    rule = [["role:admin"], ["project_id:%(project_id)s", "role:member"]]
    assert allows(rule, ADMIN, {"project_id": "p2"})
    assert allows(rule, MEMBER, {"project_id": "p1"})
    assert not allows(rule, MEMBER, {"project_id": "p2"})
    assert not allows([[]], ADMIN)  # only empty alternatives: deny, as oslo.policy does
    assert allows(["role:member"], MEMBER)


# -- oslo.policy's sample rules --------------------------------------------------

NOVA = {
    "context_is_admin": "role:admin",
    "admin_or_owner": "is_admin:True or project_id:%(project_id)s",
    "default": "rule:admin_or_owner",
    "admin_api": "is_admin:True",
    "system_admin_api": "role:admin and system_scope:all",
    "project_member_api": "role:member and project_id:%(project_id)s",
    "project_reader_api": "role:reader and project_id:%(project_id)s",
    "system_or_project_reader": "(role:reader and system_scope:all) or rule:project_reader_api",
}

KEYSTONE = {
    "admin_required": "role:admin",
    "cloud_admin": "role:admin and (is_admin_project:True or domain_id:admin_domain_id)",
    "service_role": "role:service",
    "service_or_admin": "rule:admin_required or rule:service_role",
    "owner": "user_id:%(user_id)s or user_id:%(target.token.user_id)s",
    "admin_and_matching_domain_id": "rule:admin_required and domain_id:%(domain_id)s",
    "identity:get_user": (
        "(role:reader and system_scope:all) or "
        "(role:reader and token.domain.id:%(target.user.domain_id)s) or "
        "user_id:%(target.user.id)s"
    ),
    "identity:list_projects": "rule:cloud_admin or rule:admin_and_matching_domain_id",
}

GLANCE = {
    "default": "role:admin",
    "communitize_image": "",
    "publicize_image": "role:admin",
    "get_image": (
        "role:admin or project_id:%(owner)s or 'public':%(visibility)s "
        "or 'community':%(visibility)s or 'shared':%(visibility)s"
    ),
}


def test_nova_sample_rules() -> None:
    policy = Policy(NOVA)
    target = {"project_id": "p1"}
    assert policy.enforce("default", MEMBER, target)
    assert not policy.enforce("default", MEMBER, {"project_id": "p2"})
    # is_admin is not an oslo.context credential: only an app-supplied extra sets it.
    assert not policy.enforce("admin_api", ADMIN)
    assert policy.enforce("admin_api", ident(extra={"is_admin": True}))
    assert policy.enforce("system_admin_api", SYSTEM_ADMIN)
    assert not policy.enforce("system_admin_api", ADMIN)
    assert policy.enforce("project_member_api", MEMBER, target)
    assert not policy.enforce(
        "project_member_api", ident(project_id="p1", roles=("reader",)), target
    )
    assert policy.enforce(
        "system_or_project_reader",
        ident(system_scope="all", roles=("reader",)),
        {"project_id": "any"},
    )
    assert policy.enforce("system_or_project_reader", MEMBER, target)
    assert not policy.enforce("system_or_project_reader", MEMBER, {"project_id": "p2"})


def test_keystone_sample_rules() -> None:
    policy = Policy(KEYSTONE)
    cloud_admin = ident(project_id="admin", roles=("admin",), is_admin_project=True)
    assert policy.enforce("cloud_admin", cloud_admin)
    assert not policy.enforce("cloud_admin", ident(roles=("admin",), is_admin_project=False))
    assert policy.enforce(
        "cloud_admin", ident(roles=("admin",), is_admin_project=False, domain_id="admin_domain_id")
    )
    assert policy.enforce("service_or_admin", ident(roles=("service",)))
    assert policy.enforce("owner", MEMBER, {"user_id": "u1", "target.token.user_id": "x"})
    assert policy.enforce("owner", MEMBER, {"user_id": "x", "target.token.user_id": "u1"})
    reader = ident(system_scope="all", roles=("Reader",))
    target = {"target.user.domain_id": "d1", "target.user.id": "u7"}
    assert policy.enforce("identity:get_user", reader, target)
    assert policy.enforce("identity:get_user", ident(user_id="u7"), target)
    assert not policy.enforce("identity:get_user", MEMBER, target)
    domain_admin = ident(domain_id="d1", roles=("admin",), is_admin_project=False)
    assert policy.enforce("identity:list_projects", domain_admin, {"domain_id": "d1"})
    assert not policy.enforce("identity:list_projects", domain_admin, {"domain_id": "d2"})


def test_glance_sample_rules() -> None:
    policy = Policy(GLANCE)
    other = ident(project_id="p2", roles=("member",))
    assert policy.enforce("communitize_image", other)
    assert not policy.enforce("publicize_image", other)
    assert policy.enforce("get_image", other, {"owner": "p1", "visibility": "public"})
    assert policy.enforce("get_image", MEMBER, {"owner": "p1", "visibility": "private"})
    assert not policy.enforce("get_image", other, {"owner": "p1", "visibility": "private"})


# -- fail closed ---------------------------------------------------------------------


def test_missing_target_key_denies_even_under_not() -> None:
    assert not allows("project_id:%(project_id)s", MEMBER, {})
    assert not allows("project_id:%(project_id)s", MEMBER)
    # oslo.policy would allow this one (not False); authmw cannot decide, so denies.
    assert not allows("not project_id:%(project_id)s", MEMBER, {})
    assert not allows("not (role:nope or project_id:%(project_id)s)", MEMBER, {})
    # A decided branch still decides: admins pass whatever the target lacks.
    assert allows("role:member or project_id:%(project_id)s", MEMBER, {})
    assert allows("project_id:%(project_id)s or role:member", MEMBER, {})
    assert not allows("role:nope and project_id:%(project_id)s", MEMBER, {})


def test_none_target_value_never_matches() -> None:
    unscoped = ident(roles=("member",))
    # oslo.policy compares str(None) == str(None) and would allow.
    assert not allows("project_id:%(project_id)s", unscoped, {"project_id": None})
    assert not allows("not project_id:%(project_id)s", unscoped, {"project_id": None})


def test_missing_credential_is_a_plain_false() -> None:
    # The caller lacks the attribute: "not" may use that (as in oslo.policy).
    unscoped = ident(roles=("member",))
    assert not allows("project_id:%(project_id)s", unscoped, {"project_id": "p1"})
    assert allows("not project_id:%(project_id)s", unscoped, {"project_id": "p1"})


def test_enforce_unknown_rule_denies_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    policy = Policy({"a": "@"})
    with caplog.at_level(logging.WARNING, logger="authmw.policy"):
        assert not policy.enforce("b", ADMIN)
        assert not policy.enforce("b", ADMIN)
    assert [r.getMessage() for r in caplog.records] == ["policy has no rule 'b'; denying"]
    with pytest.raises(Forbidden, match="policy does not allow b"):
        policy.authorize("b", ADMIN)


def test_no_identity() -> None:
    policy = Policy({"open": "@"})
    assert not policy.enforce("open", None)
    with pytest.raises(NotAuthenticated):
        policy.authorize("open", None)
    assert policy.authorize("open", MEMBER) is MEMBER


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("role:admin and", "expected a check after 'and', found the end of the rule"),
        ("or role:admin", "expected a check, found 'or'"),
        ("role:admin role:member", "unexpected 'role:member'"),
        ("(role:admin", "expected ')', found the end of the rule"),
        ("role:admin)", "unexpected ')'"),
        ("()", "expected a check, found ')'"),
        ("not", "expected a check after 'not'"),
        ("admin_required", "did you mean 'rule:admin_required'?"),
        ("'shared'", "quoted string 'shared' is not a check"),
        ("role:", "'role:' needs a role name"),
        ("rule:", "'rule:' needs a rule name"),
        (":admin", "has no kind"),
        ("project_id:", "nothing to compare"),
        ("project_id:%(project_id)d", "only %(key)s substitutions"),
        ("project_id:%(project_id", "unterminated"),
        ("project_id:%()s", "empty substitution"),
        ("project_id:50%", "stray '%'"),
        ("http://example.com/check", "remote http: checks are not supported"),
        ("user..id:x", "bad credential path"),
        ("   ", "only whitespace"),
        (42, "must be a string"),
        ([["role:a", 3]], "list rule items"),
    ],
)
def test_unparseable_rules_raise_policy_error_naming_the_rule(rule: Any, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy({"ok": "@", "broken_rule": rule})
    assert info.value.rule == "broken_rule"
    assert "rule 'broken_rule'" in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_deeply_nested_rule_is_rejected() -> None:
    with pytest.raises(PolicyError, match="nested deeper"):
        Policy({"deep": "(" * 100 + "@" + ")" * 100})
    with pytest.raises(PolicyError, match="nested deeper"):
        Policy({"deep": "not " * 100 + "@"})
    assert Policy({"ok": "(" * 20 + "@" + ")" * 20}).enforce("ok", MEMBER)


def test_undefined_reference_is_reported_at_load() -> None:
    with pytest.raises(PolicyError, match="rule 'a': refers to undefined rule 'missing'"):
        Policy({"a": "role:x or rule:missing"})


def test_reference_cycles_are_reported_at_load() -> None:
    with pytest.raises(PolicyError, match=r"reference cycle a -> b -> c -> a"):
        Policy({"a": "rule:b", "b": "role:x or rule:c", "c": "rule:a", "d": "@"})
    with pytest.raises(PolicyError, match="reference cycle self -> self"):
        Policy({"self": "not rule:self"})


def test_several_problems_are_all_named() -> None:
    with pytest.raises(PolicyError) as info:
        Policy({"a": "role:", "b": "rule:zz", "c": "@"})
    text = str(info.value)
    assert "rule 'a'" in text and "rule 'b'" in text and "1 more" in text


def test_lenient_mode_denies_broken_rules_and_everything_that_uses_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="authmw.policy"):
        policy = Policy(
            {
                "broken": "role:admin and",
                "uses_broken": "not rule:broken",
                "dangling": "not rule:missing",
                "loop_a": "rule:loop_b",
                "loop_b": "not rule:loop_a",
                "fine": "role:member",
                "remote": "http://policy.example.com",
            },
            strict=False,
        )
    for name in ("broken", "uses_broken", "dangling", "loop_a", "loop_b", "remote"):
        assert not policy.enforce(name, ADMIN), name
    assert policy.enforce("fine", MEMBER)
    assert {p.rule for p in policy.problems} == {"broken", "dangling", "loop_a", "remote"}
    assert len(caplog.records) == 4


# -- files and reload ------------------------------------------------------------------


def test_yaml_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        '# comment\n"items:list": ""\n"items:create": "role:member"\n'
        '"items:delete": "role:admin and project_id:%(project_id)s"\n'
    )
    policy = Policy.from_file(path)
    assert policy.path == path
    assert policy.names == ("items:list", "items:create", "items:delete")
    assert policy.enforce("items:create", MEMBER)
    assert not policy.enforce("items:delete", MEMBER, {"project_id": "p1"})
    assert policy.enforce("items:delete", ADMIN, {"project_id": "p1"})
    assert policy.rule_text("items:create") == "role:member"


def test_json_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(NOVA))
    policy = Policy.from_file(path)
    assert policy.enforce("default", MEMBER, {"project_id": "p1"})
    assert len(policy) == len(NOVA)


def test_empty_policy_files(tmp_path: Path) -> None:
    for name in ("empty.yaml", "empty.json"):
        path = tmp_path / name
        path.write_text("")
        assert len(Policy.from_file(path)) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.json", '{"a": "@", "a": "!"}', "rule 'a': defined twice"),
        ("p.yaml", '"a": "@"\n"b": "!"\n"a": "!"\n', "rule 'a': defined twice (line 3)"),
        ("p.json", '{"a": ', "not valid JSON"),
        ("p.yaml", "a: [", "not valid YAML"),
        ("p.yaml", "- a\n- b\n", "must map rule names to rules, got list"),
        ("p.yaml", "a: 3\n", "rule 'a': a rule must be a string"),
        ("p.yaml", '"a": "role:x and"\n', "rule 'a': expected a check"),
    ],
)
def test_bad_policy_files_name_file_and_rule(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.from_file(tmp_path / "nope.yaml")


def test_defaults_are_overridden_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('"items:delete": "role:member"\n')
    defaults = {"items:delete": "role:admin", "items:list": "", "admin": "role:admin"}
    policy = Policy.from_file(path, defaults=defaults)
    assert policy.enforce("items:delete", MEMBER)
    assert policy.enforce("items:list", MEMBER)
    # A file rule may refer to a default and vice versa.
    path.write_text('"items:delete": "rule:admin"\n')
    policy.reload()
    assert not policy.enforce("items:delete", MEMBER)


def test_reload_picks_up_changes_and_keeps_old_rules_on_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('"items:create": "role:admin"\n')
    policy = Policy.from_file(path)
    assert not policy.enforce("items:create", MEMBER)
    path.write_text('"items:create": "role:member"\n')
    # Compiled once: editing the file changes nothing until reload().
    assert not policy.enforce("items:create", MEMBER)
    policy.reload()
    assert policy.enforce("items:create", MEMBER)
    path.write_text('"items:create": "role:member and"\n')
    with pytest.raises(PolicyError):
        policy.reload()
    assert policy.enforce("items:create", MEMBER)
    assert policy.rule_text("items:create") == "role:member"


def test_reload_with_inline_rules() -> None:
    policy = Policy({"a": "role:admin"})
    policy.reload({"a": "role:member"})
    assert policy.enforce("a", MEMBER)
    with pytest.raises(PolicyError):
        policy.reload({"a": "rule:b"})
    assert policy.enforce("a", MEMBER)


# -- requirements ----------------------------------------------------------------------


def test_require_roles_needs_all() -> None:
    req = require_roles("member", "READER")
    assert req.check(MEMBER)
    assert not req.check(ident(roles=("member",)))
    assert not req.check(None)
    assert req.authorize(MEMBER) is MEMBER
    with pytest.raises(Forbidden, match="requires role admin"):
        require_roles("admin").authorize(MEMBER)
    with pytest.raises(NotAuthenticated):
        req.authorize(None)


def test_require_any_role() -> None:
    req = require_any_role("admin", "Member")
    assert req.check(MEMBER) and req.check(ADMIN)
    assert not req.check(ident(roles=("reader",)))


@pytest.mark.parametrize("helper", [require_roles, require_any_role])
def test_role_helpers_reject_empty(helper: Any) -> None:
    with pytest.raises(ValueError, match="at least one role"):
        helper()
    with pytest.raises(ValueError, match="non-empty"):
        helper("admin", "")


def test_scope_requirements() -> None:
    assert require_project_scope().check(MEMBER)
    assert not require_project_scope().check(SYSTEM_ADMIN)
    assert require_project_scope("p1").check(MEMBER)
    assert not require_project_scope("p2").check(MEMBER)
    assert require_system_scope().check(SYSTEM_ADMIN)
    assert not require_system_scope().check(ADMIN)
    assert require_authenticated().check(ident())
    assert not require_authenticated().check(None)


def test_requirement_combinators() -> None:
    req = require_roles("admin") & require_project_scope() | require_system_scope()
    assert req.check(ADMIN) and req.check(SYSTEM_ADMIN)
    assert not req.check(MEMBER)
    assert not (~require_roles("admin")).check(ADMIN)
    assert (~require_roles("admin")).check(MEMBER)
    assert (
        req.description
        == "((role admin and a project-scoped token) or a system-scoped token (all))"
    )
    with pytest.raises(Forbidden, match="requires"):
        req.authorize(MEMBER)


def test_compile_rule_and_policy_requirement() -> None:
    policy = Policy({"items:delete": "role:admin and project_id:%(project_id)s"})
    named = policy.requirement("items:delete")
    assert isinstance(named, Requirement)
    assert named.check(ADMIN, {"project_id": "p1"})
    assert not named.check(ADMIN, {"project_id": "p2"})
    expr = policy.requirement("rule:items:delete or role:auditor")
    assert expr.check(ident(roles=("auditor",)), {"project_id": "x"})
    # Bound requirements follow reloads.
    policy.reload({"items:delete": "role:member"})
    assert named.check(MEMBER)
    assert compile_rule("role:member").check(MEMBER)
    with pytest.raises(PolicyError, match="refers to rule 'nope', not defined in the policy"):
        policy.requirement("rule:nope")
    with pytest.raises(PolicyError, match="pass policy="):
        compile_rule("rule:x")


def test_requirement_of_removed_rule_denies() -> None:
    policy = Policy({"a": "@"})
    req = policy.requirement("a")
    negated = ~policy.requirement("rule:a")
    policy.reload({"b": "@"})
    assert not req.check(MEMBER)
    assert not negated.check(MEMBER)


def test_requirements_bound_to_different_policies_do_not_combine() -> None:
    first, second = Policy({"a": "@"}), Policy({"a": "@"})
    with pytest.raises(ValueError, match="different policies"):
        _ = first.requirement("a") & second.requirement("a")


def test_decide_tells_undecided_from_denied() -> None:
    req = Policy({"d": "role:admin and project_id:%(project_id)s"}).requirement("d")
    assert req.decide(MEMBER) is False  # not an admin: no target could change that
    assert req.decide(ADMIN) is None  # an admin: depends on the target
    assert req.decide(ADMIN, {"project_id": "p1"}) is True
    assert req.decide(ADMIN, {"project_id": "p2"}) is False
