from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import BAD, GOOD, OTHER, Counting, counting, full_identity, outage

from authmw import (
    AuthCore,
    ConfigurationError,
    Decision,
    Identity,
    InMemoryValidator,
    InvalidToken,
)


@pytest.fixture(params=["sync", "async"])
def decide(request: pytest.FixtureRequest) -> Any:
    """Drive the core through its blocking or its awaitable entry point."""

    def run(core: AuthCore, token: str | None, *args: str | None) -> Decision:
        if request.param == "sync":
            return core.authenticate(token, *args)
        return asyncio.run(core.authenticate_async(token, *args))

    return run


def body(decision: Decision) -> dict[str, Any]:
    assert decision.rejection is not None
    data: dict[str, Any] = json.loads(decision.rejection.body)
    return data


def header(decision: Decision, name: str) -> str | None:
    assert decision.rejection is not None
    values = [v for n, v in decision.rejection.headers if n.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def test_good_token_is_confirmed(decide: Any) -> None:
    identity = full_identity()
    validator = counting(identity)
    decision = decide(AuthCore(validator), GOOD)
    assert decision.identity is identity
    assert decision.rejection is None
    assert decision.status == "Confirmed"
    assert validator.calls == [GOOD]


@pytest.mark.parametrize("value", [f"  {GOOD}", f"{GOOD} \t", f"\t {GOOD}  "])
def test_surrounding_whitespace_is_stripped(decide: Any, value: str) -> None:
    validator = counting()
    decision = decide(AuthCore(validator), value)
    assert decision.identity is not None
    assert validator.calls == [GOOD]


@pytest.mark.parametrize("value", [None, "", "   ", "\t"])
def test_missing_or_blank_token_is_401_without_calling_the_validator(
    decide: Any, value: str | None
) -> None:
    validator = counting()
    decision = decide(AuthCore(validator), value)
    assert decision.identity is None
    assert decision.rejection is not None
    assert decision.rejection.status == 401
    assert validator.calls == []


def test_401_body_and_challenge_with_realm(decide: Any) -> None:
    decision = decide(AuthCore(counting(), realm="my-api"), BAD)
    assert decision.rejection is not None
    assert decision.rejection.status == 401
    assert decision.rejection.status_line == "401 Unauthorized"
    error = body(decision)["error"]
    assert error["code"] == 401
    assert error["title"] == "Unauthorized"
    assert isinstance(error["message"], str) and error["message"]
    assert set(body(decision)) == {"error"}
    assert header(decision, "WWW-Authenticate") == 'Keystone realm="my-api"'
    assert header(decision, "Content-Type") == "application/json"
    assert header(decision, "Content-Length") == str(len(decision.rejection.body))


def test_401_challenge_names_the_identity_uri(decide: Any) -> None:
    core = AuthCore(counting(), www_authenticate_uri="https://keystone.example:5000/v3")
    decision = decide(core, None)
    assert header(decision, "WWW-Authenticate") == 'Keystone uri="https://keystone.example:5000/v3"'


def test_default_realm() -> None:
    assert AuthCore(counting()).www_authenticate == 'Keystone realm="authmw"'


def test_token_over_the_size_limit_never_reaches_the_validator(decide: Any) -> None:
    validator = Counting()
    core = AuthCore(validator)
    assert core.max_token_size == 4096  # fits every real token; Fernet tokens are <= 255
    at_limit = "a" * core.max_token_size
    over = "a" * (core.max_token_size + 1)
    validator.answers[at_limit] = validator.answers[over] = full_identity()
    assert decide(core, at_limit).identity is not None
    decision = decide(core, over)
    assert decision.rejection is not None and decision.rejection.status == 401
    huge = decide(core, "b" * 1_000_000)
    assert huge.rejection is not None and huge.rejection.status == 401
    assert validator.calls == [at_limit]


def test_size_limit_is_configurable(decide: Any) -> None:
    validator = Counting({"x" * 20: full_identity()})
    core = AuthCore(validator, max_token_size=16)
    decision = decide(core, "x" * 20)
    assert decision.rejection is not None and decision.rejection.status == 401
    assert validator.calls == []


@pytest.mark.parametrize(
    "value", [f"{GOOD},{OTHER}", f"{GOOD}, {OTHER}", f"{GOOD},{GOOD},{OTHER}", f"{BAD},{GOOD}"]
)
def test_two_different_tokens_are_refused_without_guessing(decide: Any, value: str) -> None:
    validator = Counting({GOOD: full_identity(), OTHER: full_identity(user_id="u-2")})
    decision = decide(AuthCore(validator), value)
    assert decision.identity is None
    assert decision.rejection is not None and decision.rejection.status in (400, 401)
    assert validator.calls == []


@pytest.mark.parametrize("value", [f"{GOOD},{GOOD}", f"{GOOD}, {GOOD}", f" {GOOD} ,{GOOD} "])
def test_the_same_token_twice_is_fine(decide: Any, value: str) -> None:
    validator = counting()
    decision = decide(AuthCore(validator), value)
    assert decision.identity is not None
    assert validator.calls == [GOOD]


@pytest.mark.parametrize("value", ["a b", "tok\x00en", "tök", "line\nbreak", ","])
def test_malformed_token_is_401_without_calling_the_validator(decide: Any, value: str) -> None:
    validator = Counting({value: full_identity()})
    decision = decide(AuthCore(validator), value)
    assert decision.rejection is not None and decision.rejection.status == 401
    assert validator.calls == []


def test_invalid_token_is_401(decide: Any) -> None:
    validator = counting()
    decision = decide(AuthCore(validator), BAD)
    assert decision.identity is None
    assert decision.rejection is not None and decision.rejection.status == 401
    assert validator.calls == [BAD]


def test_outage_is_503_with_retry_after_never_401(decide: Any) -> None:
    decision = decide(AuthCore(outage(), retry_after=7), GOOD)
    assert decision.identity is None
    assert decision.rejection is not None
    assert decision.rejection.status == 503
    assert decision.rejection.status_line == "503 Service Unavailable"
    error = body(decision)["error"]
    assert error["code"] == 503 and error["title"] == "Service Unavailable"
    assert header(decision, "Retry-After") == "7"
    assert header(decision, "WWW-Authenticate") is None
    assert header(decision, "Content-Type") == "application/json"


def test_retry_after_is_a_whole_number_of_seconds(decide: Any) -> None:
    assert header(decide(AuthCore(outage(), retry_after=0), GOOD), "Retry-After") == "1"
    assert header(decide(AuthCore(outage(), retry_after=2.2), GOOD), "Retry-After") == "3"


class Broken:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        raise self.error


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyError("k"), ValueError("v"), TypeError("t"), OSError("o")]
)
def test_unexpected_validator_error_is_503_not_500(decide: Any, error: Exception) -> None:
    decision = decide(AuthCore(Broken(error)), GOOD)
    assert decision.rejection is not None and decision.rejection.status == 503


class ReturnsNone:
    def validate(self, token: str, *, allow_expired: bool = False) -> Any:
        return None


def test_validator_returning_no_identity_fails_closed(decide: Any) -> None:
    decision = decide(AuthCore(ReturnsNone()), GOOD)
    assert decision.identity is None
    assert decision.rejection is not None and decision.rejection.status == 503


@pytest.mark.parametrize("value", [None, "", BAD, f"{GOOD},{OTHER}", "a" * 9000, "a b"])
def test_delayed_mode_never_rejects(decide: Any, value: str | None) -> None:
    decision = decide(AuthCore(counting(), delay_auth_decision=True), value)
    assert decision.rejection is None
    assert decision.identity is None
    assert decision.status == "Invalid"


def test_delayed_mode_outage_is_invalid(decide: Any) -> None:
    decision = decide(AuthCore(outage(), delay_auth_decision=True), GOOD)
    assert decision.rejection is None
    assert decision.identity is None
    assert decision.status == "Invalid"
    broken = decide(AuthCore(Broken(RuntimeError("x")), delay_auth_decision=True), GOOD)
    assert broken.rejection is None and broken.status == "Invalid"


def test_delayed_mode_good_token_is_confirmed(decide: Any) -> None:
    decision = decide(AuthCore(counting(), delay_auth_decision=True), GOOD)
    assert decision.identity is not None
    assert decision.status == "Confirmed"


def test_confirmed_token_is_served_from_the_cache(decide: Any) -> None:
    validator = counting()
    core = AuthCore(validator)
    first = decide(core, GOOD)
    second = decide(core, GOOD)
    assert first.identity is second.identity
    assert validator.calls == [GOOD]


def test_cached_reads_a_header_value_as_bytes_like_its_text() -> None:
    validator = counting()
    core = AuthCore(validator, max_token_size=len(GOOD))
    assert core.cached(GOOD.encode()) is None  # nothing cached yet
    accepted = core.authenticate(GOOD).identity
    found = core.cached(GOOD.encode())  # ASGI header bytes: the same entry
    assert found is not None and found.identity is accepted is not None
    assert found is core.cached(GOOD)
    assert core.cached(GOOD.encode() + b" ") is found  # surrounding blanks: the same token
    assert core.cached(GOOD[:-1].encode() + b"X") is None
    assert core.cached(GOOD.encode().upper()) is None
    assert core.authenticate(BAD).rejection is not None
    remembered = core.cached(BAD.encode())  # a remembered rejection, from bytes too
    assert remembered is not None and remembered.rejection is not None
    assert remembered.rejection.status == 401
    assert core.cached(GOOD.encode() + b"x") is None  # over the size limit: not looked up
    assert validator.calls == [GOOD, BAD]


def test_outage_is_never_cached(decide: Any) -> None:
    validator = outage()
    core = AuthCore(validator)
    assert decide(core, GOOD).rejection.status == 503
    validator.error = None
    validator.answers[GOOD] = full_identity()
    assert decide(core, GOOD).identity is not None


def test_revocation_takes_effect_through_the_cache(decide: Any) -> None:
    validator = InMemoryValidator({GOOD: full_identity()})
    core = AuthCore(validator)
    assert decide(core, GOOD).identity is not None
    validator.revoke(GOOD)
    decision = decide(core, GOOD)
    assert decision.rejection is not None and decision.rejection.status == 401


def test_expired_token_is_401(decide: Any) -> None:
    now = [1_000.0]
    identity = Identity("u1", expires_at=full_identity().expires_at)
    validator = InMemoryValidator({GOOD: identity}, clock=lambda: now[0])
    core = AuthCore(validator, timer=lambda: now[0])
    assert decide(core, GOOD).identity is identity
    now[0] = identity.expires_timestamp + 1
    decision = decide(core, GOOD)
    assert decision.rejection is not None and decision.rejection.status == 401


def test_is_public() -> None:
    core = AuthCore(counting(), public_routes=["GET /healthz"])
    assert core.is_public("GET", "/healthz")
    assert not core.is_public("POST", "/healthz")
    assert not AuthCore(counting()).is_public("GET", "/healthz")


# -- configuration --------------------------------------------------------------

BAD_OPTIONS: list[tuple[str, Any]] = [
    ("token_header", ""),
    ("token_header", "X Auth"),
    ("token_header", 5),
    ("token_header", "X-Roles"),
    ("token_header", "x_user_id"),
    ("service_token_header", ""),
    ("service_token_header", "OpenStack-System-Scope"),
    ("delay_auth_decision", "false"),
    ("delay_auth_decision", None),
    ("www_authenticate_uri", 5),
    ("www_authenticate_uri", 'https://ks"/v3'),
    ("www_authenticate_uri", "https://ks/v3\r\nSet-Cookie: a=b"),
    ("realm", None),
    ("realm", 'a"b'),
    ("realm", "a\r\nSet-Cookie: a=b"),
    ("public_routes", "GET /healthz"),
    ("public_routes", ["healthz"]),
    ("public_routes", ["GET /a/../b"]),
    ("public_routes", ["GET /a//b"]),
    ("public_routes", [""]),
    ("public_routes", ["GET POST /x"]),
    ("public_routes", ["G3T /x"]),
    ("public_routes", [5]),
    ("public_routes", 5),
    ("max_token_size", "8192"),
    ("max_token_size", 8),
    ("max_token_size", True),
    ("max_token_size", 8192.0),
    ("cache_time", -1),
    ("cache_time", "300"),
    ("cache_time", float("nan")),
    ("cache_time", True),
    ("negative_cache_time", -1),
    ("negative_cache_time", "10"),
    ("cache_size", 0),
    ("cache_size", "10"),
    ("cache_size", 1.5),
    ("shared_cache", object()),
    ("shared_cache", "redis://localhost"),
    ("service_token_roles", 5),
    ("service_token_roles", [""]),
    ("service_token_roles", [1]),
    ("service_token_roles_required", "no"),
    ("fiware_service_scope", "yes"),
    ("retry_after", -1),
    ("retry_after", "5"),
    ("retry_after", float("inf")),
    ("failure_threshold", 0),
    ("failure_threshold", "5"),
    ("failure_threshold", True),
    ("circuit_cooldown", -1),
    ("circuit_cooldown", "10"),
    ("max_concurrency", 0),
    ("max_concurrency", "32"),
    ("max_concurrency", True),
    ("acquire_timeout", -1),
    ("acquire_timeout", "5"),
    ("timer", "now"),
    ("timer", None),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_bad_option_fails_at_start_up_naming_it(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AuthCore(counting(), **{option: value})
    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}: ")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("validator", [None, object(), "validator"])
def test_bad_validator_fails_at_start_up(validator: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AuthCore(validator)
    assert caught.value.option == "validator"


def test_good_options_are_accepted() -> None:
    core = AuthCore(
        counting(),
        token_header="X-Token",
        service_token_header="X-Svc-Token",
        delay_auth_decision=True,
        www_authenticate_uri="https://ks.example/v3",
        realm="r",
        public_routes=["GET /healthz", "GET,HEAD /status", "/static/*", "OPTIONS *"],
        max_token_size=16,
        cache_time=0,
        negative_cache_time=0,
        cache_size=1,
        service_token_roles="service, admin",
        service_token_roles_required=True,
        fiware_service_scope=False,
        retry_after=0,
        failure_threshold=1,
        circuit_cooldown=0,
        max_concurrency=1,
        acquire_timeout=0,
        timer=lambda: 0.0,
    )
    assert core.service_token_roles == ("service", "admin")
    assert core.token_header == "X-Token"


def test_unknown_option_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match=r"delay_auth_desicion.*'delay_auth_decision'"):
        AuthCore(counting(), delay_auth_desicion=True)  # type: ignore[call-arg]


def test_misspelled_middleware_option_names_it_and_suggests_the_right_one() -> None:
    from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware

    for middleware in (WSGIAuthMiddleware, ASGIAuthMiddleware):
        with pytest.raises(ConfigurationError, match=r"delay_auth_desicion.*delay_auth_decision"):
            middleware(lambda *a: None, counting(), delay_auth_desicion=True)  # type: ignore[arg-type]


def test_service_token_without_service_role_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    validator = InMemoryValidator()
    validator.add(GOOD, full_identity())
    validator.add(OTHER, Identity("caller", roles=("member",)))
    core = AuthCore(validator, service_token_roles_required=False)
    caplog.set_level("DEBUG", logger="authmw")
    for _ in range(5):
        decision = core.authenticate(GOOD, OTHER)
        assert decision.identity is not None and decision.service_status == "Confirmed"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "lacks the service roles" in warnings[0].getMessage()


def test_cache_time_zero_validates_every_time(decide: Any) -> None:
    validator = counting()
    core = AuthCore(validator, cache_time=0)
    decide(core, GOOD)
    decide(core, GOOD)
    assert validator.calls == [GOOD, GOOD]


def test_invalid_token_error_from_validator_keeps_401(decide: Any) -> None:
    validator = Counting()
    validator.error = InvalidToken("expired")
    decision = decide(AuthCore(validator), GOOD)
    assert decision.rejection is not None and decision.rejection.status == 401


def test_service_token_without_service_role_is_rejected_by_default() -> None:
    validator = InMemoryValidator()
    validator.add(GOOD, full_identity())
    validator.add(OTHER, Identity("caller", roles=("member",)))
    decision = AuthCore(validator).authenticate(GOOD, OTHER)
    assert decision.rejection is not None and decision.rejection.status == 401
    assert decision.service_status == "Invalid"
    assert decision.rejection.reason == "Service token is invalid."  # in the logs, not the body
    assert b"Service token" not in decision.rejection.body


@pytest.mark.parametrize(
    ("role", "confirmed"),
    [("service", True), ("Service", True), ("SERVICE", True), ("\u017fervice", False)],
)
def test_service_role_matches_like_oslo_policy(decide: Any, role: str, confirmed: bool) -> None:
    # str.lower(), as oslo.policy: a role named with a long s (casefolds to
    # "service") must not make a token a service token.
    validator = InMemoryValidator()
    validator.add(GOOD, full_identity())
    validator.add(OTHER, Identity("caller", roles=("member", role)))
    decision = decide(AuthCore(validator), GOOD, OTHER)
    assert decision.service_status == ("Confirmed" if confirmed else "Invalid")
    assert (decision.identity is not None) is confirmed
