"""API keys on SQLite and PostgreSQL: restrictions fixed at issue, rotation, idle time,
the store's policy, versioned peppers, and a reason for every rejection."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from authmw import CachedValidator, ConfigurationError, InvalidToken
from authmw.restrictions import RequestFacts, refusal
from authmw.store import LocalTokenStore, StorePolicy, TokenRejected
from authmw.store._tokens import new_token

from .conftest import Clock

RawSQL = Callable[..., list[tuple[Any, ...]]]
MakeStore = Callable[..., LocalTokenStore]
DAY = 86400.0
GET = RequestFacts("GET", "/items", "10.1.2.3", False)


def rejected(reason: str) -> Any:
    """pytest.raises for a TokenRejected with ``reason``, its message naming it too."""
    return pytest.raises(TokenRejected, match=rf"\(reason: {reason}\)")


# -- restrictions --------------------------------------------------------------
def test_restrictions_are_fixed_at_issue_and_carried_by_the_identity(
    store: LocalTokenStore,
) -> None:
    issued = store.issue(
        user_name="ci",
        roles=["member"],
        ttl=DAY,
        scopes=["items:read", "items:write", "items:read"],
        read_only=True,
        allowed_ips=["10.0.0.0/8", "::ffff:192.0.2.0/120", "2001:db8::/32"],
    )
    record = issued.record
    assert record.scopes == ("items:read", "items:write")
    assert record.read_only is True
    assert record.allowed_ips == ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32")
    assert store.get(issued.id) == record
    assert record.restricted

    identity = store.validate(issued.token)
    assert identity.token_scopes == ("items:read", "items:write")
    assert dict(identity.restrictions) == {
        "methods": ("GET", "HEAD", "OPTIONS"),
        "ips": ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"),
    }
    assert refusal(identity.restrictions, GET) is None
    post = refusal(identity.restrictions, GET._replace(method="POST"))
    assert post is not None and (post.status, post.reason) == (403, "read-only")
    elsewhere = refusal(identity.restrictions, GET._replace(client="203.0.113.9"))
    assert elsewhere is not None and (elsewhere.status, elsewhere.reason) == (403, "ip")


def test_an_unrestricted_token_carries_no_restrictions(store: LocalTokenStore) -> None:
    issued = store.issue(user_name="alice", ttl=DAY)
    identity = store.validate(issued.token)
    assert identity.restrictions == {}
    assert identity.token_scopes == ()
    assert not issued.record.restricted


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": "items:read"}, "not a string"),
        ({"scopes": ["items read"]}, "white space"),
        ({"scopes": ["a,b"]}, "comma"),
        ({"scopes": [""]}, "empty"),
        ({"allowed_ips": ["10.0.0.0/33"]}, "not an IP network"),
        ({"allowed_ips": "10.0.0.0/8"}, "not a string"),
        ({"idle_ttl": 30}, "at least 1m"),
        ({"idle_ttl": 0}, "positive"),
        ({"read_only": "yes"}, "True or False"),
    ],
)
def test_bad_restrictions_are_refused_before_anything_is_stored(
    store: LocalTokenStore, raw_sql: RawSQL, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        store.issue(user_name="alice", ttl=DAY, **fields)
    assert raw_sql("SELECT COUNT(*) FROM authmw_tokens")[0][0] == 0


def test_no_method_can_change_a_restriction_after_issue() -> None:
    """Only issue() takes restrictions; nothing updates a token's record."""
    restriction_args = {"scopes", "read_only", "allowed_ips", "idle_ttl", "roles", "ttl"}
    for name, member in inspect.getmembers(LocalTokenStore, inspect.isfunction):
        if name.startswith("_") or name == "issue":
            continue
        assert not restriction_args & set(inspect.signature(member).parameters), name


# -- rotation ------------------------------------------------------------------
def test_rotation_gives_a_new_secret_and_the_old_one_ends_with_its_grace(
    store: LocalTokenStore, clock: Clock
) -> None:
    old = store.issue(user_name="svc", roles=["member"], ttl=30 * DAY, scopes=["items:read"])
    heard: list[str | None] = []
    store.add_revocation_listener(heard.append)

    new = store.rotate(old.id, grace=timedelta(hours=24))

    assert heard == [old.id]  # caches drop what they hold for the old secret
    assert new.token != old.token and new.id == old.id
    assert new.record.scopes == old.record.scopes
    assert new.record.expires_at == old.record.expires_at  # same record data
    assert new.record.rotated_at is not None
    assert store.validate(new.token).token_scopes == ("items:read",)
    during = store.validate(old.token)
    assert during.user_name == "svc"
    assert during.expires_at is not None
    assert during.expires_at.timestamp() == clock.now + 24 * 3600  # cached no longer
    clock.advance(24 * 3600 - 1)
    store.validate(old.token)
    clock.advance(1)
    with rejected("rotated"):
        store.validate(old.token)
    assert store.validate(new.token).user_name == "svc"


def test_rotation_without_grace_ends_the_old_secret_at_once(store: LocalTokenStore) -> None:
    old = store.issue(user_name="svc", ttl=DAY)
    new = store.rotate(old.id)
    with rejected("rotated"):
        store.validate(old.token)
    assert store.validate(new.token).user_name == "svc"
    newer = store.rotate(old.id, grace=60)
    with rejected("rotated"):
        store.validate(old.token)
    assert store.validate(new.token).user_name == "svc"  # within its grace
    assert store.validate(newer.token).user_name == "svc"


def test_only_an_active_token_rotates(store: LocalTokenStore, clock: Clock) -> None:
    revoked = store.issue(user_name="a", ttl=DAY)
    store.revoke(revoked.id)
    with pytest.raises(ValueError, match="revoked"):
        store.rotate(revoked.id)
    short = store.issue(user_name="b", ttl=60)
    clock.advance(61)
    with pytest.raises(ValueError, match="expired"):
        store.rotate(short.id)
    with pytest.raises(LookupError, match="no token"):
        store.rotate("0123456789abcdef")
    with pytest.raises(ValueError, match="grace"):
        store.rotate(revoked.id, grace=-1)


def test_a_revoked_token_is_refused_under_both_secrets(store: LocalTokenStore) -> None:
    old = store.issue(user_name="svc", ttl=DAY)
    new = store.rotate(old.id, grace=3600)
    store.revoke(old.id)
    for token in (old.token, new.token):
        with rejected("revoked"):
            store.validate(token)


def test_a_cached_old_secret_is_dropped_by_a_rotation_elsewhere(
    make_store: MakeStore, clock: Clock
) -> None:
    here, elsewhere = make_store(), make_store()
    cache = CachedValidator(here, cache_time=300, timer=clock)
    old = elsewhere.issue(user_name="svc", ttl=DAY)
    assert cache.validate(old.token).expires_at is not None

    elsewhere.rotate(old.id, grace=60)

    deadline = time.monotonic() + 20
    while cache.lookup(old.token) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.lookup(old.token) is None
    assert cache.validate(old.token).user_name == "svc"  # within the grace, capped
    clock.advance(60)
    assert cache.lookup(old.token) is None  # its cache entry ended with the grace
    with rejected("rotated"):
        cache.validate(old.token)


# -- idle time -----------------------------------------------------------------
def test_an_idle_token_is_refused_and_each_use_moves_the_deadline(
    store: LocalTokenStore, clock: Clock, raw_sql: RawSQL
) -> None:
    issued = store.issue(user_name="ci", ttl=30 * DAY, idle_ttl=timedelta(hours=6))
    hours = 3600.0
    clock.advance(5 * hours)
    identity = store.validate(issued.token)  # a use
    assert identity.restrictions["idle"]["deadline"] == clock.now + 6 * hours
    assert identity.expires_at is not None
    assert identity.expires_at.timestamp() == clock.now + 6 * hours  # the cache honours it
    clock.advance(5 * hours)
    store.validate(issued.token)
    clock.advance(6 * hours)
    with rejected("idle"):
        store.validate(issued.token)
    record = store.get(issued.id)
    assert record is not None and record.status(clock.now) == "idle"
    assert store.list_tokens() == []


def test_uses_served_from_a_cache_move_the_deadline_other_processes_see(
    make_store: MakeStore, clock: Clock, raw_sql: RawSQL
) -> None:
    here, elsewhere = make_store(), make_store()
    issued = here.issue(user_name="ci", ttl=30 * DAY, idle_ttl=600)
    identity = here.validate(issued.token)
    start = clock.now

    def last_used() -> float:
        return float(raw_sql("SELECT last_used_at FROM authmw_tokens")[0][0])

    assert last_used() == start
    # Cache hits: only the restriction check runs, and tells this store of the use.
    for _ in range(5):
        clock.advance(100)
        assert refusal(identity.restrictions, GET) is None
    # Written in a batch by this store's watcher thread, a tenth of the idle time on.
    deadline = time.monotonic() + 20
    while last_used() == start and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last_used() > start
    clock.advance(250)  # 750 s after the validation, 250 s after the last use
    assert elsewhere.validate(issued.token).user_name == "ci"


def test_the_idle_check_on_a_cache_hit_refuses_past_the_deadline(
    store: LocalTokenStore, clock: Clock
) -> None:
    issued = store.issue(user_name="ci", ttl=30 * DAY, idle_ttl=600)
    identity = store.validate(issued.token)
    clock.advance(601)
    answer = refusal(identity.restrictions, GET)
    assert answer is not None
    assert (answer.status, answer.reason) == (401, "idle")


# -- the store's policy --------------------------------------------------------
def test_max_tokens_per_user_counts_active_tokens_only(
    store: LocalTokenStore, clock: Clock
) -> None:
    assert store.policy == StorePolicy()
    store.set_policy(max_tokens_per_user=2)
    first = store.issue(user_name="alice", ttl=DAY)
    store.issue(user_name="alice", ttl=60)
    with pytest.raises(ValueError, match=r"policy: user 'alice' already has 2 active tokens"):
        store.issue(user_name="alice", ttl=DAY)
    store.issue(user_name="bob", ttl=DAY)  # another user
    clock.advance(61)  # the short one expired
    store.issue(user_name="alice", ttl=DAY)
    store.revoke(first.id)
    store.issue(user_name="alice", ttl=DAY)
    with pytest.raises(ValueError, match="policy"):
        store.issue(user_name="alice", ttl=DAY)
    store.set_policy(max_tokens_per_user=None)
    store.issue(user_name="alice", ttl=DAY)
    with pytest.raises(ValueError, match="whole number"):
        store.set_policy(max_tokens_per_user=0)


def test_max_tokens_per_user_holds_when_issuing_at_once(
    make_store: MakeStore, clock: Clock
) -> None:
    make_store().set_policy(max_tokens_per_user=3)
    stores = [make_store() for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def issue(store: LocalTokenStore) -> None:
        barrier.wait()
        try:
            store.issue(user_name="alice", ttl=DAY)
            outcomes.append("issued")
        except ValueError:
            outcomes.append("refused")

    threads = [threading.Thread(target=issue, args=(stores[n % 4],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["issued"] * 3 + ["refused"] * 5


def test_a_lowered_max_lifetime_applies_to_tokens_issued_before(
    make_store: MakeStore, clock: Clock
) -> None:
    store, elsewhere = make_store(), make_store()
    issued = store.issue(user_name="alice", ttl=30 * DAY)
    cache = CachedValidator(elsewhere, cache_time=300, timer=clock)
    cache.validate(issued.token)

    store.set_policy(max_lifetime=7 * DAY)

    deadline = time.monotonic() + 20
    while cache.lookup(issued.token) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.lookup(issued.token) is None  # every process dropped its cached tokens
    assert elsewhere.policy.max_lifetime == 7 * DAY
    identity = cache.validate(issued.token)
    assert identity.expires_at is not None
    assert identity.expires_at.timestamp() == clock.now + 7 * DAY  # cached no longer
    clock.advance(7 * DAY)
    for validator in (store, cache):
        with rejected("policy"):
            validator.validate(issued.token)
    with pytest.raises(ValueError, match="maximum lifetime of 1w"):
        store.issue(user_name="alice", ttl=8 * DAY)
    young = store.issue(user_name="alice", ttl=7 * DAY)
    record = store.get(issued.id)
    assert record is not None
    assert record.status(clock.now, max_lifetime=7 * DAY) == "expired"
    assert [r.id for r in store.list_tokens()] == [young.id]


def test_list_tokens_expiring_within_a_window(store: LocalTokenStore, clock: Clock) -> None:
    soon = store.issue(user_name="a", ttl=3 * DAY)
    store.issue(user_name="b", ttl=30 * DAY)
    gone = store.issue(user_name="c", ttl=DAY)
    store.revoke(gone.id)
    assert [r.id for r in store.list_tokens(expiring_within=7 * DAY)] == [soon.id]
    store.set_policy(max_lifetime=10 * DAY)
    clock.advance(4 * DAY)
    assert {r.user_id for r in store.list_tokens(expiring_within=7 * DAY)} == {"b"}


# -- peppers -------------------------------------------------------------------
P1, P2, P3 = "first pepper, 32 bytes long....", "second pepper, 32 bytes long...", "x" * 32


def test_several_peppers_issue_with_the_newest_and_validate_all(
    make_store: MakeStore, raw_sql: RawSQL, caplog: pytest.LogCaptureFixture
) -> None:
    one = make_store(pepper={"2024": P1})
    t1 = one.issue(user_name="a", ttl=DAY)
    both = make_store(pepper={"2024": P1, "2025": P2})
    t2 = both.issue(user_name="b", ttl=DAY)
    assert (t1.record.pepper_id, t2.record.pepper_id) == ("2024", "2025")
    assert both.validate(t1.token).user_name == "a"
    assert both.validate(t2.token).user_name == "b"
    rotated = both.rotate(t1.id, grace=timedelta(hours=1))
    assert rotated.record.pepper_id == "2025"  # a rotation moves to the newest
    # The old secret, under the old pepper, is a rotated-out one in its grace.
    assert both.validate(t1.token).user_name == "a"
    assert both.validate(rotated.token).user_name == "a"

    with pytest.raises(ConfigurationError, match="not pepper '2025'") as info:
        make_store(pepper={"2024": P1, "2025": P3})
    assert info.value.option == "pepper"

    only_new = make_store(pepper={"2025": P2})
    assert "'2024'" in caplog.text  # tokens of a pepper not configured here are refused
    assert only_new.validate(t2.token).user_name == "b"


def test_retiring_a_pepper_ends_its_tokens(make_store: MakeStore) -> None:
    store = make_store(pepper={"old": P1})
    old = store.issue(user_name="a", ttl=DAY)
    keep = store.issue(user_name="b", ttl=DAY)
    store = make_store(pepper={"old": P1, "new": P2})
    running = make_store(pepper={"old": P1, "new": P2})  # a process started before
    kept = store.rotate(keep.id)
    assert {p["id"]: p["active_tokens"] for p in store.peppers()} == {"new": 1, "old": 1}
    with pytest.raises(ValueError, match="newest"):
        store.retire_pepper("new")
    with pytest.raises(LookupError):
        store.retire_pepper("never")

    assert store.retire_pepper("old") == 1

    with pytest.raises(InvalidToken, match=r"^unknown token$"):
        store.validate(old.token)  # this instance forgot the pepper
    with rejected("revoked"):
        running.validate(old.token)  # one that still has it finds the token revoked
    assert store.validate(kept.token).user_name == "b"
    retired = {p["id"]: p for p in store.peppers()}["old"]
    assert retired["retired"] and not retired["configured"]
    with pytest.raises(ConfigurationError, match="retired") as info:
        make_store(pepper={"old": P1, "new": P2})
    assert info.value.option == "pepper"
    assert make_store(pepper={"new": P2}).validate(kept.token).user_name == "b"


def test_a_single_pepper_is_pepper_1(make_store: MakeStore) -> None:
    store = make_store(pepper=P1)
    issued = store.issue(user_name="a", ttl=DAY)
    assert issued.record.pepper_id == "1"
    both = make_store(pepper={"1": P1, "2": P2})
    assert both.validate(issued.token).user_name == "a"
    for bad, message in (({"1": P1, "bad id!": P2}, "pepper id"), ({}, "at least one")):
        with pytest.raises(ConfigurationError, match=message):
            make_store(pepper=bad)


# -- reasons -------------------------------------------------------------------
def test_every_rejection_names_its_reason(store: LocalTokenStore, clock: Clock) -> None:
    expired = store.issue(user_name="a", ttl=60)
    revoked = store.issue(user_name="b", ttl=DAY)
    store.revoke(revoked.id)
    clock.advance(61)
    with rejected("expired") as info:
        store.validate(expired.token)
    assert info.value.reason == "expired"
    with rejected("revoked"):
        store.validate(revoked.token)
    with pytest.raises(InvalidToken, match=r"^unknown token$"):
        store.validate(new_token())


def test_a_rejection_copied_from_its_args_keeps_its_reason() -> None:
    """CachedValidator hands each waiting caller ``type(exc)(*exc.args)``."""
    original = TokenRejected("idle", "token x unused for longer than 1h")
    copy = type(original)(*original.args)
    assert (str(copy), copy.reason) == (str(original), "idle")
