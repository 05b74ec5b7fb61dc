"""Token scopes: permissions an API key carries, tested by ``token_scope:`` policy checks."""

from __future__ import annotations

import pytest

from authmw import Identity
from authmw.policy import Policy, PolicyError, credentials, require_token_scopes

SCOPED = Identity("u1", roles=("member",), token_scopes=("items:read", "items:write"))
UNSCOPED = Identity("u2", roles=("member", "items:read"))


@pytest.mark.parametrize(
    ("rule", "identity", "target", "allowed"),
    [
        ("token_scope:items:read", SCOPED, {}, True),
        ("token_scope:items:delete", SCOPED, {}, False),
        ("token_scope:Items:Read", SCOPED, {}, False),  # exact: scopes are not roles
        ("token_scope:items:read", UNSCOPED, {}, False),  # no scopes: passes no scope check
        ("role:items:read", UNSCOPED, {}, True),  # a role of that name is another thing
        ("token_scope:%(scope)s", SCOPED, {"scope": "items:write"}, True),
        ("token_scope:%(scope)s", SCOPED, {}, False),  # undecided: denied
        ("not token_scope:%(scope)s", SCOPED, {}, False),
        ("role:member and token_scope:items:write", SCOPED, {}, True),
        ("role:member and token_scope:items:write", UNSCOPED, {}, False),
    ],
)
def test_token_scope_checks(
    rule: str, identity: Identity, target: dict[str, str], allowed: bool
) -> None:
    assert Policy({"r": rule}).enforce("r", identity, target) is allowed


def test_a_token_scope_check_needs_a_name() -> None:
    with pytest.raises(PolicyError, match="scope name"):
        Policy({"r": "token_scope:"})


def test_require_token_scopes() -> None:
    requirement = require_token_scopes("items:read", "items:write")
    assert requirement.check(SCOPED)
    assert not requirement.check(UNSCOPED)
    assert not require_token_scopes("items:delete").check(SCOPED)
    with pytest.raises(ValueError, match="scope"):
        require_token_scopes()


def test_scopes_survive_serialisation_and_show_in_credentials() -> None:
    data = SCOPED.to_dict()
    assert data["token_scopes"] == ["items:read", "items:write"]
    assert Identity.from_dict(data) == SCOPED
    assert "token_scopes" not in UNSCOPED.to_dict()
    assert credentials(SCOPED)["token_scopes"] == ["items:read", "items:write"]
    with pytest.raises(TypeError):
        Identity("u1", token_scopes="items:read")  # type: ignore[arg-type]
