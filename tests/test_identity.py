from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest
from helpers import full_identity

from authmw import Identity


def test_minimal_identity_defaults() -> None:
    identity = Identity("u1")
    assert identity.user_id == "u1"
    assert identity.roles == ()
    assert identity.is_admin_project is True
    assert identity.expires_at is None
    assert identity.scope == "unscoped"
    assert identity.expires_timestamp == float("inf")
    assert not identity.is_expired(1e12)


@pytest.mark.parametrize("bad", ["", None, 42])
def test_user_id_is_required(bad: object) -> None:
    with pytest.raises(ValueError, match="user_id"):
        Identity(bad)  # type: ignore[arg-type]


def test_is_immutable() -> None:
    identity = full_identity()
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.user_id = "mallory"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.roles = ("admin",)  # type: ignore[misc]


def test_sequences_become_tuples_and_nested_data_read_only() -> None:
    catalog = [{"type": "compute", "endpoints": [{"url": "http://nova", "interface": "public"}]}]
    body = {"token": {"user": {"id": "u1"}}}
    identity = Identity(
        "u1",
        roles=["b", "a"],  # type: ignore[arg-type]
        audit_ids=["x"],  # type: ignore[arg-type]
        methods=["token"],  # type: ignore[arg-type]
        service_catalog=catalog,  # type: ignore[arg-type]
        token_body=body,
    )
    assert identity.roles == ("b", "a")
    assert identity.audit_ids == ("x",)
    assert identity.methods == ("token",)
    catalog[0]["type"] = "changed"  # the caller's data is copied
    assert identity.service_catalog is not None
    assert identity.service_catalog[0]["type"] == "compute"
    with pytest.raises(TypeError):
        identity.service_catalog[0]["type"] = "x"  # type: ignore[index]
    assert identity.token_body is not None
    with pytest.raises(TypeError):
        identity.token_body["token"] = {}  # type: ignore[index]


def test_roles_as_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="roles"):
        Identity("u1", roles="admin")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="roles"):
        Identity("u1", roles=("admin", 3))  # type: ignore[arg-type]


def test_roles_keep_order_and_case() -> None:
    identity = full_identity(roles=("Member", "reader", "Admin"))
    assert identity.roles == ("Member", "reader", "Admin")


def test_role_checks_are_case_insensitive() -> None:
    identity = full_identity(roles=("Member", "reader", "Admin"))
    assert identity.has_role("member")
    assert identity.has_role("ADMIN")
    assert not identity.has_role("service")
    assert identity.has_any_role("nope", "READER")
    assert not identity.has_any_role("nope", "service")
    assert not identity.has_any_role()
    assert identity.has_all_roles("admin", "member")
    assert not identity.has_all_roles("admin", "service")
    assert identity.has_all_roles()


BAD_ROLE_NAMES = [
    "member,admin",  # oslo.context splits X-Roles on commas: "admin"
    ",admin",
    " admin",  # ... and strips each part: "admin"
    "admin ",
    "\tadmin",
    "admin\n",
    "\u00a0admin",  # white space beyond ASCII: str.strip() removes it too
    "",
    "\x00admin",  # control characters: the header renderer drops NUL
    "ad\r\nmin",
    "admin\u200b",  # an invisible format character
    "\ud800",  # a lone surrogate (JSON allows it)
]


@pytest.mark.parametrize("name", BAD_ROLE_NAMES)
def test_role_names_that_x_roles_cannot_carry_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"Identity\.roles"):
        Identity("u1", roles=("member", name))
    with pytest.raises(ValueError, match=r"Identity\.roles"):
        Identity("u1").with_roles(["reader", name])
    with pytest.raises(ValueError, match=r"Identity\.roles"):
        Identity.from_dict({"user_id": "u1", "roles": [name]})


@pytest.mark.parametrize("name", ["Project Admin", "r\u00f4le", "\u017fervice", "a:b/c", "x" * 300])
def test_other_role_names_are_kept_as_they_are(name: str) -> None:
    assert Identity("u1", roles=(name,)).roles == (name,)


def test_role_match_is_str_lower_as_in_oslo_policy_not_casefold() -> None:
    # oslo.policy compares match.lower() with each role's lower(); casefold()
    # folds more: the long s, sharp s, final sigma...
    long_s = Identity("u1", roles=("\u017fervice",))  # LATIN SMALL LETTER LONG S
    assert not long_s.has_role("service")
    assert not long_s.has_any_role("service", "SERVICE")
    assert not long_s.has_all_roles("service")
    assert long_s.has_role("\u017fERVICE")  # lower() of both sides is the same
    assert not Identity("u1", roles=("Straße",)).has_role("STRASSE")
    # Exactly lower(), not stricter: KELVIN SIGN lowers to "k" there too.
    assert Identity("u1", roles=("\u212aelvin",)).has_role("kelvin")
    assert Identity("u1", roles=("Admin",)).has_role("admin")
    assert Identity("u1", roles=("admin",)).has_all_roles("ADMIN", "Admin")


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"project_id": "p"}, "project"),
        ({"project_id": "p", "domain_id": "d"}, "project"),
        ({"domain_id": "d"}, "domain"),
        ({"system_scope": "all"}, "system"),
        ({}, "unscoped"),
    ],
)
def test_scope_kind(fields: dict[str, str], kind: str) -> None:
    assert Identity("u1", **fields).scope == kind  # type: ignore[arg-type]


def test_timestamps_must_be_aware_and_become_utc() -> None:
    with pytest.raises(ValueError, match="expires_at"):
        Identity("u1", expires_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="issued_at"):
        Identity("u1", issued_at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="expires_at"):
        Identity("u1", expires_at="2030-01-01T00:00:00Z")  # type: ignore[arg-type]
    cet = timezone(timedelta(hours=1))
    identity = Identity("u1", expires_at=datetime(2030, 1, 1, 1, 0, tzinfo=cet))
    assert identity.expires_at == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert identity.expires_at is not None
    assert identity.expires_at.utcoffset() == timedelta(0)


def test_expiry_with_leeway() -> None:
    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    identity = Identity("u1", expires_at=expires)
    ts = expires.timestamp()
    assert identity.expires_timestamp == ts
    assert not identity.is_expired(ts - 1)
    assert identity.is_expired(ts)
    assert identity.is_expired(ts + 1)
    assert not identity.is_expired(ts + 1, leeway=5)
    assert identity.is_expired(ts + 6, leeway=5)


def test_is_admin_project_is_a_bool() -> None:
    assert Identity("u1", is_admin_project=0).is_admin_project is False  # type: ignore[arg-type]
    assert full_identity(is_admin_project=False).is_admin_project is False


def test_equality_and_hash() -> None:
    a = full_identity()
    b = full_identity()
    assert a == b
    assert hash(a) == hash(b)
    assert a != full_identity(roles=("Member",))
    assert len({a, b}) == 1


def test_round_trip_through_json() -> None:
    catalog = ({"type": "identity", "endpoints": ({"url": "http://ks", "interface": "public"},)},)
    identity = full_identity(
        service_catalog=catalog,
        system_scope=None,
        application_credential={"id": "ac", "name": "ci"},
        token_body={"token": {"methods": ["password"]}},
        extra={"k": [1, 2]},
    )
    data = identity.to_dict()
    assert data["scope"] == "project"
    assert data["expires_at"] == "2099-01-01T00:00:00+00:00"
    assert "token_body" not in data  # raw bodies stay out unless asked for
    assert "system_scope" not in data  # None values omitted
    again = Identity.from_dict(json.loads(json.dumps(data)))
    assert again == identity
    assert again.extra == {"k": (1, 2)}
    with_body = identity.to_dict(include_token_body=True)
    assert with_body["token_body"] == {"token": {"methods": ["password"]}}
    assert Identity.from_dict(json.loads(json.dumps(with_body))).token_body == {
        "token": {"methods": ("password",)}
    }


def test_from_dict_rejects_bad_data() -> None:
    with pytest.raises(TypeError):
        Identity.from_dict({"user_id": "u1", "expires_at": 12})
    with pytest.raises(ValueError):
        Identity.from_dict({"user_id": "u1", "expires_at": "not a date"})
    with pytest.raises(ValueError):
        Identity.from_dict({"user_id": "u1", "expires_at": "2030-01-01T00:00:00"})  # naive
    with pytest.raises(TypeError):
        Identity.from_dict({})  # no user_id


def test_with_roles_copies() -> None:
    identity = full_identity()
    changed = identity.with_roles(["x"])
    assert changed.roles == ("x",)
    assert changed.has_role("X")
    assert not changed.has_role("member")
    assert identity.roles == ("Member", "reader", "Admin")
    assert changed.user_id == identity.user_id


def test_repr_leaves_out_the_token_body() -> None:
    identity = full_identity(token_body={"secret": "s3cr3t-body"})
    assert "s3cr3t-body" not in repr(identity)


def test_text_fields_are_the_first_identity_fields_in_order() -> None:
    from authmw.identity import SCOPE_FIELDS, TEXT_FIELDS

    names = list(inspect.signature(Identity).parameters)
    assert names[: len(TEXT_FIELDS)] == list(TEXT_FIELDS)
    assert TEXT_FIELDS[-len(SCOPE_FIELDS) :] == SCOPE_FIELDS


UTC = timezone.utc


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2030, 1, 1, 12, 34, 56, 789012, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # past a float's microseconds
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_timestamps_come_back_exactly(moment: datetime) -> None:
    identity = Identity("u1", expires_at=moment, issued_at=moment)
    assert identity.expires_at == moment and identity.issued_at == moment
    assert identity.expires_timestamp == moment.timestamp()
    assert identity == Identity("u1", expires_at=moment, issued_at=moment)
    other = moment.replace(microsecond=1 - moment.microsecond % 2)
    assert identity != Identity("u1", expires_at=other)
    assert hash(identity) == hash(Identity("u1", expires_at=moment, issued_at=moment))


@pytest.mark.parametrize("audit_ids", [(), ("a1",), ("a1", "chain")])
def test_audit_ids_read_back_as_given(audit_ids: tuple[str, ...]) -> None:
    identity = Identity("u1", audit_ids=audit_ids)
    assert identity.audit_ids == audit_ids
    assert identity.to_dict()["audit_ids"] == list(audit_ids)


def test_copies_keep_every_field() -> None:
    identity = full_identity(
        audit_ids=("a1",),
        token_body={"token": {"methods": ["password"]}},
        extra={"k": "v"},
        restrictions={"read_only": True},
    )
    for copy_ in (
        pickle.loads(pickle.dumps(identity)),  # noqa: S301 (our own bytes)
        copy.copy(identity),
        copy.deepcopy(identity),
        identity.replace(),
    ):
        assert copy_ == identity and hash(copy_) == hash(identity)
        assert copy_.to_dict(include_token_body=True) == identity.to_dict(include_token_body=True)
        assert copy_.extra == {"k": "v"}


def test_replace_changes_what_it_names_only() -> None:
    identity = full_identity(token_body={"token": {"user": {"id": "u1"}}})
    changed = identity.replace(project_id="other", roles=["reader"])
    assert (changed.project_id, changed.roles) == ("other", ("reader",))
    assert changed.has_role("READER") and not changed.has_role("member")
    assert changed.expires_at == identity.expires_at
    assert changed.token_body == identity.token_body
    with pytest.raises(TypeError, match="no field 'stale'"):
        identity.replace(stale=True)


def test_served_stale_marks_a_copy_only() -> None:
    identity = full_identity()
    stale = identity.served_stale()
    assert stale.stale and not identity.stale
    assert stale == identity  # staleness is how it was served, not what it is
    assert pickle.loads(pickle.dumps(stale)).stale  # noqa: S301 (our own bytes)


def test_fields_match_by_position() -> None:
    match full_identity():
        case Identity("u-123", user_name, project_id=project):
            assert (user_name, project) == ("alice", "p-456")
        case _:
            pytest.fail("no match")


class _Subclass(Identity):
    __slots__ = ()


def test_copies_of_a_subclass_keep_its_class() -> None:
    identity = _Subclass("u1", roles=("member",))
    for copy_ in (
        identity.replace(),
        identity.served_stale(),
        identity.with_roles(["member"]),
        pickle.loads(pickle.dumps(identity)),  # noqa: S301 (our own bytes)
    ):
        assert type(copy_) is _Subclass and copy_ == identity
