"""ChainValidator: routing by prefix, fallback order, outages, one breaker per member."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Counting, full_identity

from authmw import (
    AuthCore,
    ChainValidator,
    ConfigurationError,
    IdentityServiceUnavailable,
    InvalidToken,
    LocalTokenStore,
    WSGIAuthMiddleware,
)
from authmw.validators.keystone import KeystoneValidator

LOCAL = "amw_local-token-0123456789"
REMOTE = "remote-token-0123456789"


def counting(**answers: Any) -> Counting:
    return Counting({token: full_identity(user_id=user) for token, user in answers.items()})


@pytest.fixture(params=["sync", "async"])
def validate(request: pytest.FixtureRequest) -> Any:
    def run(validator: ChainValidator, token: str) -> Any:
        if request.param == "sync":
            return validator.validate(token)
        return asyncio.run(validator.avalidate(token))

    return run


def test_a_routed_token_reaches_only_its_validator(validate: Any) -> None:
    store = counting(**{LOCAL: "u-local"})
    remote = counting(**{REMOTE: "u-remote", LOCAL: "u-wrong"})
    chain = ChainValidator(routes={"amw_": store}, fallback=remote)
    assert validate(chain, LOCAL).user_id == "u-local"
    assert validate(chain, REMOTE).user_id == "u-remote"
    with pytest.raises(InvalidToken):
        validate(chain, "amw_unknown-0123456789")
    assert store.calls == [LOCAL, "amw_unknown-0123456789"]
    assert remote.calls == [REMOTE]


def test_longest_prefix_wins(validate: Any) -> None:
    live, test = counting(**{"amw_live_x": "live"}), counting(**{"amw_live_x": "test"})
    chain = ChainValidator(routes={"amw_": test, "amw_live_": live})
    assert validate(chain, "amw_live_x").user_id == "live"
    assert test.calls == []


def test_fallback_tries_in_order_on_a_definite_no(validate: Any) -> None:
    first, second = counting(a="u-first"), counting(b="u-second")
    chain = ChainValidator(fallback=[first, second])
    assert validate(chain, "a").user_id == "u-first"
    assert validate(chain, "b").user_id == "u-second"
    with pytest.raises(InvalidToken):
        validate(chain, "c")
    assert first.calls == ["a", "b", "c"] and second.calls == ["b", "c"]


def test_an_outage_never_falls_through_to_the_next_validator(validate: Any) -> None:
    first, second = counting(), counting(b="u-second")
    first.error = IdentityServiceUnavailable("down")
    chain = ChainValidator(fallback=[first, second])
    with pytest.raises(IdentityServiceUnavailable):
        validate(chain, "b")
    assert second.calls == []


def test_bad_chains_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^routes: "):
        ChainValidator()
    with pytest.raises(ConfigurationError, match=r"^routes: "):
        ChainValidator(routes={"": counting()})
    with pytest.raises(ConfigurationError, match=r"^fallback: "):
        ChainValidator(fallback=[object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="did you mean 'fallback'"):
        ChainValidator(fallbak=[counting()])  # type: ignore[call-arg]


def test_each_member_has_its_own_circuit_breaker() -> None:
    store = counting(**{LOCAL: "u-local"})
    remote = counting()
    remote.error = IdentityServiceUnavailable("down")
    core = AuthCore(
        ChainValidator(routes={"amw_": store}, fallback=remote),
        failure_threshold=2,
        cache_time=0,
    )
    assert len(core.guards) == 2
    for n in range(4):
        assert core.authenticate(f"remote-{n}-0123456789").rejection.status == 503  # type: ignore[union-attr]
    assert len(remote.calls) == 2  # the remote breaker opened after two outages
    assert core.stats()["circuit_state"] == "open"
    decision = core.authenticate(LOCAL)
    assert decision.identity is not None and decision.identity.user_id == "u-local"


def test_the_chain_passes_revocations_on(tmp_path: Path) -> None:
    store = LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db")
    issued = store.issue(user_name="alice", ttl=3600)
    core = AuthCore(ChainValidator(routes={"amw_": store}, fallback=counting()))
    assert core.authenticate(issued.token).identity is not None
    store.revoke(issued.record.id)
    assert core.authenticate(issued.token).rejection is not None


# -- the real thing: the local store and Keystone behind one middleware --------------------


@pytest.fixture
def chained(keystone: Any, tmp_path: Path) -> Iterator[tuple[AuthCore, LocalTokenStore]]:
    store = LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db")
    with KeystoneValidator(keystone.url, **keystone.service_credentials) as remote:
        yield AuthCore(ChainValidator(routes={"amw_": store}, fallback=remote)), store


def test_local_and_keystone_tokens_through_one_middleware(
    keystone: Any, chained: tuple[AuthCore, LocalTokenStore]
) -> None:
    import httpx

    core, store = chained
    local = store.issue(user_name="svc-bot", project_id="p1", roles=["member"], ttl=3600).token
    remote = keystone.issue_token(
        user="demo-user",
        password="demo-secret",
        user_domain="demo",
        project="demo-project",
        project_domain="demo",
    )

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [environ["authmw.identity"].user_name.encode()]

    client = httpx.Client(
        transport=httpx.WSGITransport(app=WSGIAuthMiddleware(app, core=core)),
        base_url="http://test",
    )
    assert client.get("/", headers={"X-Auth-Token": local}).text == "svc-bot"
    assert client.get("/", headers={"X-Auth-Token": remote}).text == "demo-user"
    assert client.get("/", headers={"X-Auth-Token": "amw_" + "x" * 40}).status_code == 401
    store_guard, keystone_guard = core.guards
    # One call each: the amw_ tokens never reached Keystone, the Keystone token never the store.
    assert store_guard.stats.calls == 2 and store_guard.stats.ok == 1
    assert keystone_guard.stats.calls == 1 and keystone_guard.stats.ok == 1
