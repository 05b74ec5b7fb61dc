"""LocalTokenStore on SQLite and PostgreSQL: issue, validate, revoke, list, purge, hashing."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from authmw import CachedValidator, ConfigurationError, Identity, InvalidToken
from authmw.store import TOKEN_PATTERN, LocalTokenStore, is_well_formed

from .conftest import Clock

RawSQL = Callable[..., list[tuple[Any, ...]]]
MakeStore = Callable[..., LocalTokenStore]

DAY = 86400.0


def issue(store: LocalTokenStore, **fields: Any) -> tuple[str, str]:
    fields.setdefault("user_name", "alice")
    fields.setdefault("ttl", DAY)
    issued = store.issue(**fields)
    return issued.token, issued.id


# -- issue and validate -----------------------------------------------------
def test_validate_returns_the_identity_the_token_was_issued_for(
    store: LocalTokenStore, clock: Clock
) -> None:
    issued = store.issue(
        user_name="alice",
        user_id="u-1",
        project_name="demo",
        project_id="p-1",
        roles=["member", "reader", "Member"],
        description="ci bot",
        ttl=timedelta(days=30),
    )
    assert store.get(issued.id) == issued.record
    identity = store.validate(issued.token)

    assert isinstance(identity, Identity)
    assert identity.user_id == "u-1"
    assert identity.user_name == "alice"
    assert (identity.user_domain_id, identity.user_domain_name) == ("default", "Default")
    assert (identity.project_id, identity.project_name) == ("p-1", "demo")
    assert (identity.project_domain_id, identity.project_domain_name) == ("default", "Default")
    assert identity.scope == "project"
    assert identity.roles == ("member", "reader")  # order kept, duplicates folded
    assert identity.audit_ids == (issued.id,)
    assert identity.methods == ("token",)
    assert identity.issued_at == datetime.fromtimestamp(clock.now, timezone.utc)
    assert identity.expires_at == datetime.fromtimestamp(clock.now + 30 * DAY, timezone.utc)
    assert identity.expires_at.tzinfo is not None

    record = issued.record
    assert record.id == issued.id
    assert record.description == "ci bot"
    assert record.status(clock.now) == "active"


def test_duplicate_roles_fold_with_str_lower_as_oslo_policy(store: LocalTokenStore) -> None:
    # "\u017fervice" (long s) casefolds to "service" but is another role
    # for oslo.policy: neither may swallow the other.
    token, _ = issue(store, roles=["\u017fervice", "service", "Service", "ADMIN", "admin"])
    identity = store.validate(token)
    assert identity.roles == ("\u017fervice", "service", "ADMIN")
    assert identity.has_role("service")


def test_names_default_to_ids_and_domain_and_system_scopes(store: LocalTokenStore) -> None:
    token, _ = issue(store, user_name="bob", domain_name="acme", roles=["admin"])
    identity = store.validate(token)
    assert identity.user_id == "bob"
    assert identity.scope == "domain"
    assert (identity.domain_id, identity.domain_name) == ("acme", "acme")
    assert identity.project_id is None

    token, _ = issue(store, user_name=None, user_id="svc-7", system_scope="all", roles=["admin"])
    identity = store.validate(token)
    assert (identity.user_id, identity.user_name) == ("svc-7", None)
    assert identity.scope == "system"
    assert identity.system_scope == "all"

    token, _ = issue(store, user_name="carol")
    assert store.validate(token).scope == "unscoped"
    assert store.validate(token).roles == ()


def test_tokens_are_random_prefixed_and_checksummed(store: LocalTokenStore) -> None:
    tokens = {issue(store)[0] for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert re.fullmatch(TOKEN_PATTERN, token)
        assert token.startswith("amw_") and len(token) == 53
        assert is_well_formed(token)


def test_a_mistyped_token_is_rejected_as_malformed(store: LocalTokenStore) -> None:
    token, _ = issue(store)
    body = token[4:47]
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in (
        "amw_" + flipped + token[47:],  # checksum no longer matches
        token[:-1],
        token + "x",
        "xyz_" + token[4:],
        "",
        token.replace(token[5], "é"),
    ):
        assert not is_well_formed(bad)
        with pytest.raises(InvalidToken, match="malformed"):
            store.validate(bad)


def test_unknown_well_formed_token_is_invalid(store: LocalTokenStore) -> None:
    from authmw.store._tokens import new_token

    issue(store)
    with pytest.raises(InvalidToken, match="unknown"):
        store.validate(new_token())


def test_expired_token_is_invalid_unless_allow_expired(
    store: LocalTokenStore, clock: Clock
) -> None:
    token, _ = issue(store, ttl=3600)
    clock.advance(3599)
    assert store.validate(token).user_name == "alice"
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        store.validate(token)
    assert store.validate(token, allow_expired=True).user_name == "alice"


def test_leeway_accepts_a_token_just_past_expiry(make_store: MakeStore, clock: Clock) -> None:
    store = make_store(leeway=30)
    token, _ = issue(store, ttl=60)
    clock.advance(80)
    assert store.validate(token).user_name == "alice"
    clock.advance(20)
    with pytest.raises(InvalidToken):
        store.validate(token)


# -- revocation -------------------------------------------------------------
def test_revoke_is_immediate_and_notifies_listeners(store: LocalTokenStore) -> None:
    token, token_id = issue(store)
    other, _ = issue(store)
    seen: list[str | None] = []
    store.add_revocation_listener(seen.append)

    assert store.revoke(token_id) is True
    assert seen == [token_id]
    with pytest.raises(InvalidToken, match="revoked"):
        store.validate(token)
    with pytest.raises(InvalidToken, match="revoked"):
        store.validate(token, allow_expired=True)
    assert store.validate(other).user_name == "alice"

    assert store.revoke(token_id) is False  # already revoked: no second notification
    assert store.revoke("0123456789abcdef") is False
    assert seen == [token_id]
    record = store.get(token_id)
    assert record is not None and record.status() == "revoked"


def test_revocation_drops_the_token_from_a_cache_in_the_same_process(
    store: LocalTokenStore,
) -> None:
    cached = CachedValidator(store, cache_time=300)
    token, token_id = issue(store)
    assert cached.validate(token).user_name == "alice"
    assert cached.lookup(token) is not None  # served from the cache from now on

    store.revoke(token_id)

    assert cached.lookup(token) is None
    with pytest.raises(InvalidToken, match="revoked"):
        cached.validate(token)


def test_a_failing_listener_does_not_stop_revocation(store: LocalTokenStore) -> None:
    token, token_id = issue(store)
    seen: list[str | None] = []

    def broken(audit_id: str | None) -> None:
        raise RuntimeError("listener bug")

    store.add_revocation_listener(broken)
    store.add_revocation_listener(seen.append)
    assert store.revoke(token_id) is True
    assert seen == [token_id]
    with pytest.raises(InvalidToken):
        store.validate(token)


# -- listing and purging ----------------------------------------------------
def test_list_tokens_many_per_user_filtered_and_without_secrets(
    store: LocalTokenStore, clock: Clock
) -> None:
    a1 = store.issue(user_name="alice", ttl=DAY)
    clock.advance(1)
    a2 = store.issue(user_name="alice", project_name="demo", roles=["reader"], ttl=DAY)
    clock.advance(1)
    b1 = store.issue(user_name="bob", user_id="u-bob", ttl=DAY)
    clock.advance(1)
    short = store.issue(user_name="alice", ttl=10)
    clock.advance(1)
    revoked = store.issue(user_name="alice", ttl=DAY)
    store.revoke(revoked.id)
    clock.advance(10)

    assert [r.id for r in store.list_tokens()] == [a1.id, a2.id, b1.id]
    assert [r.id for r in store.list_tokens(user="alice")] == [a1.id, a2.id]
    assert [r.id for r in store.list_tokens(user="u-bob")] == [b1.id]
    assert [r.id for r in store.list_tokens(user="bob")] == [b1.id]
    everything = store.list_tokens(include_inactive=True)
    assert [r.id for r in everything] == [a1.id, a2.id, b1.id, short.id, revoked.id]
    assert [r.status(clock.now) for r in everything] == [
        "active",
        "active",
        "active",
        "expired",
        "revoked",
    ]
    assert store.list_tokens(include_inactive=True, limit=2)[1].id == a2.id
    for record in everything:
        data = record.to_dict()
        assert "token_hash" not in data and "token" not in data
        assert not any(str(v).startswith("amw_") for v in data.values())


def test_purge_deletes_only_what_was_asked(
    store: LocalTokenStore, clock: Clock, raw_sql: RawSQL
) -> None:
    keep, _ = issue(store, ttl=DAY)
    old, _ = issue(store, ttl=60)
    _, revoked_id = issue(store, ttl=DAY)
    store.revoke(revoked_id)
    clock.advance(120)

    assert store.purge(expired=True, older_than=3600) == 0  # expired only 60 s ago
    assert store.purge(expired=True) == 1
    assert raw_sql("SELECT COUNT(*) FROM authmw_tokens")[0][0] == 2
    assert store.purge(expired=False, revoked=True) == 1
    assert [r.id for r in store.list_tokens(include_inactive=True)] == [
        store.validate(keep).audit_ids[0]
    ]
    with pytest.raises(InvalidToken):
        store.validate(old)
    with pytest.raises(ValueError, match="purge"):
        store.purge(expired=False, revoked=False)


# -- input checks -----------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user_name": None}, "user"),
        ({"project_name": "p", "domain_name": "d"}, "one scope"),
        ({"project_name": "p", "system_scope": "all"}, "one scope"),
        ({"system_scope": "everything"}, "only 'all'"),
        ({"roles": ["a,b"]}, "comma"),
        ({"roles": [""]}, "empty"),
        ({"roles": "admin"}, "not a string"),
        ({"user_name": "al\nice"}, "control"),
        ({"user_name": "x" * 256}, "longer"),
        ({"description": "two\nlines"}, "control"),
        ({"ttl": 0}, "positive"),
        ({"ttl": -5}, "positive"),
        ({"ttl": 400 * DAY}, "maximum of 365d"),
        ({"ttl": None}, "must expire"),
        ({"ttl": None, "expires_at": datetime(2000, 1, 1, tzinfo=timezone.utc)}, "past"),
        ({"ttl": None, "expires_at": datetime(2099, 1, 1)}, "timezone"),
        ({"expires_at": datetime(2099, 1, 1, tzinfo=timezone.utc)}, "not both"),
        ({"project_domain_name": "x"}, "only meaningful with a project"),
    ],
)
def test_issue_refuses_bad_input(
    store: LocalTokenStore, raw_sql: RawSQL, fields: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {"user_name": "alice", "ttl": DAY, **fields}
    with pytest.raises((ValueError, TypeError), match=message):
        store.issue(**values)
    assert raw_sql("SELECT COUNT(*) FROM authmw_tokens")[0][0] == 0


def test_expires_at_and_tokens_without_expiry_when_allowed(
    make_store: MakeStore, clock: Clock
) -> None:
    store = make_store(max_ttl=None, require_expiry=False)
    forever, _ = issue(store, ttl=None)
    when = datetime.fromtimestamp(clock.now + 7200, timezone.utc)
    dated = store.issue(user_name="bob", expires_at=when)
    clock.advance(10 * 365 * DAY)
    identity = store.validate(forever)
    assert identity.expires_at is None
    assert identity.expires_timestamp == float("inf")
    assert dated.record.expires_at == when


def test_bad_options_name_the_option(db_url: str) -> None:
    for options, option in (
        ({"pepper": "short"}, "pepper"),
        ({"max_ttl": 0}, "max_ttl"),
        ({"max_ttl": -1}, "max_ttl"),
        ({"require_expiry": False}, "require_expiry"),
        ({"timeout": 0}, "timeout"),
        ({"touch_interval": -1}, "touch_interval"),
    ):
        with pytest.raises(ConfigurationError) as info:
            LocalTokenStore(db_url, **options)
        assert info.value.option == option


# -- hashing and pepper -----------------------------------------------------
def test_only_a_sha256_of_the_token_is_stored(store: LocalTokenStore, raw_sql: RawSQL) -> None:
    token, token_id = issue(store, description="visible")
    rows = raw_sql("SELECT * FROM authmw_tokens")
    assert len(rows) == 1
    assert token not in repr(rows)
    assert token[4:47] not in repr(rows)
    (stored,) = raw_sql("SELECT token_hash FROM authmw_tokens WHERE id = ?", (token_id,))[0]
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()


def test_with_a_pepper_the_stored_hash_is_an_hmac(make_store: MakeStore, raw_sql: RawSQL) -> None:
    pepper = "a server-side secret of 32 bytes"
    store = make_store(pepper=pepper)
    token, token_id = issue(store)
    (stored,) = raw_sql("SELECT token_hash FROM authmw_tokens WHERE id = ?", (token_id,))[0]
    assert bytes(stored) == hmac.new(pepper.encode(), token.encode(), hashlib.sha256).digest()
    assert bytes(stored) != hashlib.sha256(token.encode()).digest()
    assert store.validate(token).user_name == "alice"


def test_a_store_refuses_to_open_with_another_pepper(make_store: MakeStore) -> None:
    peppered = make_store(pepper="p" * 32)
    token, _ = issue(peppered)

    for pepper, message in ((None, "created with a pepper"), ("q" * 32, "not the pepper")):
        with pytest.raises(ConfigurationError, match=message) as info:
            make_store(pepper=pepper)
        assert info.value.option == "pepper"
    assert make_store(pepper="p" * 32).validate(token).user_name == "alice"


def test_a_store_without_pepper_refuses_one(make_store: MakeStore) -> None:
    make_store()
    with pytest.raises(ConfigurationError, match="without a pepper"):
        make_store(pepper="p" * 32)


def test_the_issued_token_is_not_in_its_repr(store: LocalTokenStore) -> None:
    issued = store.issue(user_name="alice", ttl=DAY)
    assert issued.token not in repr(issued)
    assert issued.token not in repr(issued.record)


# -- last_used_at -----------------------------------------------------------
def test_last_used_is_written_at_most_once_per_interval(
    store: LocalTokenStore, clock: Clock, raw_sql: RawSQL
) -> None:
    token, token_id = issue(store)

    def last_used() -> float | None:
        value = raw_sql("SELECT last_used_at FROM authmw_tokens WHERE id = ?", (token_id,))[0][0]
        return None if value is None else float(value)

    assert last_used() is None
    start = clock.now
    store.validate(token)
    assert last_used() == start
    clock.advance(59)
    store.validate(token)
    assert last_used() == start  # within the minute: no write
    clock.advance(1)
    store.validate(token)
    assert last_used() == start + 60
    record = store.get(token_id)
    assert record is not None
    assert record.last_used_at == datetime.fromtimestamp(start + 60, timezone.utc)


def test_last_used_tracking_can_be_turned_off(make_store: MakeStore, raw_sql: RawSQL) -> None:
    store = make_store(touch_interval=None)
    token, _ = issue(store)
    store.validate(token)
    assert raw_sql("SELECT last_used_at FROM authmw_tokens")[0][0] is None


# -- life cycle -------------------------------------------------------------
def test_a_closed_store_is_unavailable(make_store: MakeStore) -> None:
    from authmw import IdentityServiceUnavailable

    store = make_store()
    token, _ = issue(store)
    store.close()
    with pytest.raises(IdentityServiceUnavailable, match="closed"):
        store.validate(token)


def test_context_manager_and_repr(db_url: str) -> None:
    with LocalTokenStore(db_url) as store:
        token, _ = issue(store)
        assert store.validate(token).user_name == "alice"
        assert repr(store).startswith("LocalTokenStore(")
        assert store.dialect in ("sqlite", "postgresql")
