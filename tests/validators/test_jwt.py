"""JWTValidator with configured keys: verification, hostile tokens, claim mapping, options.

Tokens are made and signed here with ``cryptography`` (tests/jwt_tokens.py),
never by the library under test. The provider-facing behaviour (discovery,
rotation, outages, refetch limits) is in test_jwt_provider.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt_tokens import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    b64,
    b64json,
    claims,
    hs256,
    raw_token,
    signed_text,
    token,
)

from authmw import (
    ClaimMapping,
    ConfigurationError,
    Identity,
    InvalidToken,
    Issuer,
    JWTValidator,
)

RSA = SigningKey.rsa("rsa-1")
RSA_PS = SigningKey.rsa("rsa-ps", alg="PS256")
EC = SigningKey.ec("ec-1")
ED = SigningKey.ed25519("ed-1")
ATTACKER = SigningKey.rsa("rsa-1")  # same kid, other key


def validator(**issuer: Any) -> JWTValidator:
    options: dict[str, Any] = {
        "audiences": AUDIENCE,
        "keys": [RSA.jwk(), RSA_PS.jwk(), EC.jwk(), ED.jwk()],
    }
    options.update(issuer)
    return JWTValidator(Issuer(ISSUER, **options))


V = validator()


def rejected(v: JWTValidator, token_text: str) -> str:
    with pytest.raises(InvalidToken) as info:
        v.validate(token_text)
    with pytest.raises(InvalidToken):
        asyncio.run(v.avalidate(token_text))
    return str(info.value)


# -- good tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, RSA_PS, EC, ED], ids=lambda k: k.alg)
def test_each_default_algorithm_verifies(key: SigningKey) -> None:
    # One token for both calls: two would differ in iat/exp across a second boundary.
    signed = token(key)
    identity = V.validate(signed)
    assert identity.user_id == "user-1"
    assert identity.user_name == "alice"
    assert identity.roles == ("reader",)
    assert identity == asyncio.run(V.avalidate(signed))


def test_identity_carries_claims_expiry_and_key_marker() -> None:
    payload = claims(client_id="cli", scope="items:read items:write", roles=["reader", "member"])
    identity = V.validate(token(RSA, payload))
    assert identity.expires_at is not None
    assert int(identity.expires_at.timestamp()) == payload["exp"]
    assert identity.issued_at is not None
    assert int(identity.issued_at.timestamp()) == payload["iat"]
    assert identity.roles == ("reader", "member", "items:read", "items:write")
    assert identity.extra["claims"]["sub"] == "user-1"
    assert identity.extra["client_id"] == "cli"
    assert identity.extra["scope"] == "items:read items:write"
    (marker,) = identity.audit_ids
    assert marker.startswith("jwk:")
    assert V.validate(token(RSA, claims(sub="user-2"))).audit_ids == (marker,)
    assert V.validate(token(EC)).audit_ids != (marker,)


def test_audience_list_needs_one_of_ours() -> None:
    assert V.validate(token(RSA, claims(aud=["https://elsewhere", AUDIENCE])))
    v = validator(audiences=["https://a", "https://b"])
    assert v.validate(token(RSA, claims(aud="https://b")))
    assert "aud" in rejected(v, token(RSA, claims(aud=["https://c"])))


def test_leeway_applies_to_exp_nbf_and_iat() -> None:
    now = int(time.time())
    v = validator(leeway=60)
    assert v.validate(token(RSA, claims(exp=now - 30)))
    assert v.validate(token(RSA, claims(nbf=now + 30, iat=now + 30)))
    strict = validator(leeway=0)
    assert "expired" in rejected(strict, token(RSA, claims(exp=now - 2)))
    assert "nbf" in rejected(strict, token(RSA, claims(nbf=now + 30)))


def test_allow_expired_skips_only_the_expiry() -> None:
    expired = token(RSA, claims(exp=int(time.time()) - 3600))
    identity = V.validate(expired, allow_expired=True)
    assert identity.user_id == "user-1"
    with pytest.raises(InvalidToken):
        V.validate(token(RSA, claims(exp=int(time.time()) - 3600, aud="x")), allow_expired=True)
    with pytest.raises(InvalidToken):
        V.validate(token(RSA, claims(exp="soon")), allow_expired=True)


def test_pem_public_keys_and_kidless_tokens() -> None:
    v = JWTValidator(Issuer(ISSUER, audiences=AUDIENCE, keys=RSA.public_pem().decode()))
    assert v.validate(token(RSA, header={"kid": None})).user_id == "user-1"
    # A kid the configuration does not name: static keys are never fetched.
    assert "unknown key" in rejected(v, token(SigningKey.rsa("rsa-x")))
    two = JWTValidator(Issuer(ISSUER, audiences=AUDIENCE, keys=[RSA.jwk(), RSA_PS.jwk()]))
    assert two.validate(token(RSA, header={"kid": None}))  # one RS256 key
    three = JWTValidator(Issuer(ISSUER, audiences=AUDIENCE, keys=[RSA.jwk(), ATTACKER.jwk()]))
    # Two keys could verify it: no kid, no guessing.
    assert "no kid" in rejected(three, token(RSA, header={"kid": None}))


def test_token_type_is_checked_when_configured() -> None:
    v = validator(token_type="at+jwt")
    assert v.validate(token(RSA, header={"typ": "at+jwt"}))
    assert v.validate(token(RSA, header={"typ": "application/AT+JWT"}))
    assert "typ" in rejected(v, token(RSA))  # typ JWT: an ID token, say
    assert "typ" in rejected(v, token(RSA, header={"typ": None}))


def test_required_claims() -> None:
    v = validator(required_claims={"typ": "Bearer"})
    assert v.validate(token(RSA, claims(typ="Bearer")))
    assert "typ" in rejected(v, token(RSA, claims(typ="ID")))
    assert "typ" in rejected(v, token(RSA))


def test_expiry_is_required_unless_disabled() -> None:
    assert "exp" in rejected(V, token(RSA, claims(exp=None)))
    identity = validator(require_expiry=False).validate(token(RSA, claims(exp=None)))
    assert identity.expires_at is None


def test_audience_check_can_be_disabled_explicitly() -> None:
    v = validator(audiences=(), check_audience=False)
    assert v.validate(token(RSA, claims(aud="https://anything")))
    assert v.validate(token(RSA, claims(aud=None)))


def test_several_issuers_each_with_its_own_keys_and_audiences() -> None:
    other_key = SigningKey.ec("other-1")
    v = JWTValidator(
        [
            Issuer(ISSUER, audiences=AUDIENCE, keys=[RSA.jwk()]),
            Issuer("https://other.test", audiences="https://api.other", keys=[other_key.jwk()]),
        ]
    )
    assert v.validate(token(RSA)).user_id == "user-1"
    good = claims(iss="https://other.test", aud="https://api.other")
    assert v.validate(token(other_key, good)).user_id == "user-1"
    # Each issuer's keys and audiences are its own.
    assert "unknown key" in rejected(v, token(other_key, claims()))
    assert "unknown key" in rejected(v, token(RSA, good))
    assert "aud" in rejected(v, token(other_key, claims(iss="https://other.test")))


# -- hostile tokens: each 401, never anything else --------------------------------------------


def test_alg_none_is_refused() -> None:
    payload = b64json(claims())
    for alg in ("none", "None", "NONE", "nOnE"):
        header = b64json({"alg": alg, "typ": "JWT", "kid": RSA.kid})
        assert rejected(V, raw_token(header, payload, ""))
        assert rejected(V, raw_token(header, payload, b64(RSA.sign(b"x"))))


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    pem = RSA.public_pem()
    for secret in (pem, pem.strip(), json.dumps(RSA.jwk()).encode(), RSA.jwk()["n"].encode()):
        message = rejected(V, hs256(secret, claims(), {"kid": RSA.kid}))
        assert "HS256" in message


def test_wrong_issuer_is_refused() -> None:
    assert "issuer" in rejected(V, token(RSA, claims(iss="https://evil.test")))
    assert "iss" in rejected(V, token(RSA, claims(iss=None)))
    assert "iss" in rejected(V, token(RSA, claims(iss=["x"])))


def test_missing_and_wrong_audience_are_refused() -> None:
    assert "aud" in rejected(V, token(RSA, claims(aud=None)))
    assert "aud" in rejected(V, token(RSA, claims(aud="https://other.test")))
    assert "aud" in rejected(V, token(RSA, claims(aud=[])))
    assert "aud" in rejected(V, token(RSA, claims(aud={"x": AUDIENCE})))


def test_expired_and_not_yet_valid_are_refused() -> None:
    now = int(time.time())
    assert "expired" in rejected(V, token(RSA, claims(exp=now - 3600)))
    assert "nbf" in rejected(V, token(RSA, claims(nbf=now + 3600)))
    assert "iat" in rejected(V, token(RSA, claims(iat=now + 3600)))
    assert rejected(V, token(RSA, claims(exp="tomorrow")))
    assert rejected(V, token(RSA, claims(exp=True)))
    for odd in ("NaN", "Infinity", "1e400", "-1e400", "99999999999999999999999"):
        text = json.dumps(claims(exp=0)).replace('"exp": 0', f'"exp": {odd}')
        assert odd in text
        rejected(V, signed_text(RSA, text))


def test_times_no_datetime_can_hold_are_refused() -> None:
    # Signed by the real key: an authentic but absurd time is refused, never a crash
    # (on Linux, fromtimestamp raises OSError for this iat, ValueError for this exp).
    assert "claims" in rejected(V, token(RSA, claims(iat=-67768040609740801)))
    assert "claims" in rejected(V, token(RSA, claims(exp=10**20)))


def test_unknown_kid_is_refused() -> None:
    assert "unknown key" in rejected(V, token(SigningKey.rsa("no-such-kid")))
    assert "unknown key" in rejected(V, token(RSA, header={"kid": "x" * 300}))


def test_signature_by_another_key_is_refused() -> None:
    assert "signature" in rejected(V, token(ATTACKER))  # same kid, attacker's key


def test_tampered_payload_is_refused() -> None:
    header, _, signature = token(RSA).split(".")
    forged = b64json(claims(roles=["admin"]))
    assert "signature" in rejected(V, raw_token(header, forged, signature))
    header, payload, signature = token(EC).split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert rejected(V, raw_token(header, payload, flipped))


def test_key_type_and_algorithm_must_match() -> None:
    # An RS256 header on the EC key's kid, an ES256 header on the RSA key's kid.
    assert rejected(V, token(RSA, header={"kid": EC.kid}))
    assert rejected(V, token(RSA, header={"alg": "ES256"}))
    # ES256 signed with a P-384 key under the P-256 key's kid.
    p384 = SigningKey.ec("ec-1", ec.SECP384R1())
    assert rejected(V, token(p384, alg="ES256"))
    # A PS256 key with alg in its JWK does not verify RS256.
    assert rejected(V, token(RSA_PS, alg="RS256"))


def test_algorithms_outside_the_allow_list_are_refused() -> None:
    v = validator(algorithms=["ES256"], keys=[EC.jwk()])
    assert v.validate(token(EC))
    assert "not allowed" in rejected(v, token(RSA))
    assert "not allowed" in rejected(V, token(RSA, alg="RS512"))


def test_huge_header_is_refused() -> None:
    assert rejected(V, token(RSA, header={"x": "a" * 100_000}))
    assert rejected(V, token(RSA, header={"x5c": ["MII" + "A" * 4000] * 3}))


def test_nested_json_bombs_are_refused() -> None:
    for depth in (100, 10_000, 100_000):
        bomb = "[" * depth + "]" * depth
        deep = b64(('{"a":' * depth + "1" + "}" * depth).encode())
        assert rejected(V, raw_token(b64(bomb.encode()), b64json(claims()), "AAAA"))
        assert rejected(V, raw_token(b64json({"alg": "RS256"}), b64(bomb.encode()), "AAAA"))
        assert rejected(V, raw_token(b64json({"alg": "RS256", "kid": RSA.kid}), deep, "AAAA"))
        signed = token(RSA, {**claims(), "x": json.loads("[" * 50 + "]" * 50)})
        assert V.validate(signed)  # a little nesting inside signed claims is fine


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d.e",  # JWE compact serialization
        "not a token",
        "é.é.é",
        "\x00.\x00.\x00",
        "eyJ.eyJ.",
        raw_token(b64json({"alg": "RS256"}), "", "AAAA"),
        raw_token(b64json(["RS256"]), b64json(claims()), "AAAA"),
        raw_token(b64json({"alg": ["RS256"]}), b64json(claims()), "AAAA"),
        raw_token(b64json({"alg": "RS256", "kid": 7}), b64json(claims()), "AAAA"),
        raw_token(b64json({"alg": "RS256", "kid": RSA.kid}), b64json([1, 2]), "AAAA"),
        raw_token(b64json({"alg": "RS256", "kid": RSA.kid}), b64(b"\xff\xfe"), "AAAA"),
        raw_token(b64json({"alg": "RS256", "kid": RSA.kid}), b64json(claims()), "!!!!"),
        raw_token(b64json({"alg": "RS256", "kid": RSA.kid}) + "=", b64json(claims()), "AAAA"),
    ],
)
def test_malformed_tokens_are_refused(text: str) -> None:
    rejected(V, text)


def test_padded_or_crit_variants_of_a_good_token_are_refused() -> None:
    good = token(RSA)
    header, payload, signature = good.split(".")
    assert V.validate(good)
    assert rejected(V, raw_token(header, payload, signature + "="))
    assert rejected(V, raw_token(header, payload + "=", signature))
    crit = token(RSA, header={"crit": ["exp"], "exp": 1})
    assert "crit" in rejected(V, crit)
    assert rejected(V, token(RSA, header={"b64": False, "crit": ["b64"]}))


def test_header_keys_are_never_taken_from_the_token() -> None:
    # jwk / jku / x5u in the header: the attacker's key must not be used.
    attacker = SigningKey.rsa("evil")
    for extra in (
        {"jwk": attacker.jwk()},
        {"jku": "https://evil.test/jwks"},
        {"x5u": "https://evil.test/cert"},
    ):
        assert rejected(V, token(attacker, header={**extra, "kid": RSA.kid}))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b64(b) + "." + b64(b)))
def test_arbitrary_input_is_only_ever_invalid(text: str) -> None:
    with pytest.raises(InvalidToken):
        V.validate(text)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "x", "jwk", "cty"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.text()),
    ),
    st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "roles", "scope"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    ),
)
def test_arbitrary_headers_and_claims_are_only_ever_invalid(
    header: dict[str, Any], payload: dict[str, Any]
) -> None:
    forged = raw_token(b64json(header), b64json(payload), b64(RSA.sign(b"x")))
    with pytest.raises(InvalidToken):
        V.validate(forged)
    # Signed by the real key, odd claims still map or are refused, never crash.
    signed = token(RSA, {**claims(), **payload})
    with contextlib.suppress(InvalidToken):
        assert isinstance(V.validate(signed), Identity)


# -- claim mapping ---------------------------------------------------------------------------


def test_keycloak_shape() -> None:
    kc = SigningKey.rsa("kc-1")
    realm = "https://sso.test/realms/acme"
    v = JWTValidator(
        Issuer.keycloak(realm, audiences="items-api", client_id="items.api", keys=[kc.jwk()])
    )
    access = claims(
        iss=realm,
        aud=["items-api", "account"],
        typ="Bearer",
        azp="web-frontend",
        realm_access={"roles": ["offline_access", "reader"]},
        resource_access={"items.api": {"roles": ["items-admin"]}, "account": {"roles": ["x"]}},
        email="alice@example.com",
        roles=None,
    )
    identity = v.validate(token(kc, access))
    assert identity.roles == ("offline_access", "reader", "items-admin")
    assert identity.user_name == "alice"
    assert identity.extra["client_id"] == "web-frontend"
    assert identity.extra["email"] == "alice@example.com"
    # Keycloak's ID tokens (typ ID) and refresh tokens are no access tokens.
    assert "typ" in rejected(v, token(kc, {**access, "typ": "ID"}))
    assert "typ" in rejected(v, token(kc, {**access, "typ": "Refresh"}))


def test_keyrock_shape_hs256_with_the_application_secret() -> None:
    secret = b"4f5d2a9c1b7e3d60"  # Keyrock: 16 hex characters per application
    v = JWTValidator(Issuer.keyrock("app-123", secret))
    payload = {
        "organizations": [{"id": "org-1", "name": "Org", "roles": [{"id": "r9", "name": "boss"}]}],
        "displayName": "",
        "roles": [{"id": "r1", "name": "provider"}, {"id": "r2", "name": "member,admin"}],
        "app_id": "app-123",
        "trusted_apps": [],
        "isGravatarEnabled": False,
        "id": "user-77",
        "authorization_decision": "",
        "app_azf_domain": "",
        "eidas_profile": {},
        "attributes": {},
        "shared_attributes": "",
        "username": "alice",
        "email": "alice@example.com",
        "image": "",
        "gravatar": "",
        "extra": "",
        "type": "user",
        "iat": int(time.time()),
        "exp": int(time.time()) + 3600,
    }
    identity = v.validate(hs256(secret, payload))
    assert identity.user_id == "user-77"
    assert identity.user_name == "alice"
    assert identity.roles == ("provider",)  # "member,admin" cannot go in X-Roles
    assert identity.extra["app_id"] == "app-123"
    assert identity.extra["claims"]["organizations"][0]["roles"][0]["name"] == "boss"
    # Another application's token, a wrong secret, RS256 on a Keyrock issuer: refused.
    assert rejected(v, hs256(secret, {**payload, "app_id": "app-999"}))
    assert rejected(v, hs256(b"0000000000000000", payload))
    assert rejected(v, token(RSA, payload))
    # An application token (client credentials): app_id is the caller.
    app_only = {"app_id": "app-123", "type": "app", "exp": int(time.time()) + 60}
    assert v.validate(hs256(secret, app_only)).user_id == "app-123"


def test_roles_that_x_roles_cannot_carry_are_dropped_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = [f"odd,{time.time_ns()}", f" padded{time.time_ns()}"]  # fresh names: warned once
    payload = claims(roles=["reader", *names, "member"])
    with caplog.at_level(logging.DEBUG, logger="authmw"):
        for _ in range(3):
            assert V.validate(token(RSA, payload)).roles == ("reader", "member")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert {repr(n) for n in names} == {
        next(word for word in r.getMessage().split(" named ")[1:]).split(", which")[0]
        for r in warnings
    }


def test_custom_mapping_project_domain_and_roles_paths() -> None:
    mapping = ClaimMapping(
        user_id=("uid", "sub"),
        user_name="name",
        project_id="tenant.id",
        project_name="tenant.name",
        domain_id="org",
        roles=["groups", ("resource_access", "my.client", "roles"), "scp"],
        extra={"tenant": "tenant"},
    )
    v = validator(claims=mapping)
    identity = v.validate(
        token(
            RSA,
            claims(
                name="Alice A.",
                tenant={"id": "t-1", "name": "Tenant One"},
                org="o-9",
                groups=["g1", "g2"],
                resource_access={"my.client": {"roles": ["c1"]}},
                scp=["s1", "g1"],
            ),
        )
    )
    assert identity.user_id == "user-1"
    assert identity.user_name == "Alice A."
    assert (identity.project_id, identity.project_name) == ("t-1", "Tenant One")
    assert identity.domain_id == "o-9"
    assert identity.roles == ("g1", "g2", "c1", "s1")
    assert identity.extra["tenant"] == {"id": "t-1", "name": "Tenant One"}
    assert "user id" in rejected(v, token(RSA, claims(sub=None)))
    assert rejected(v, token(RSA, claims(name={"first": "x"})))


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: Issuer(ISSUER), "Issuer.audiences"),
        (lambda: Issuer(ISSUER, audiences=""), "Issuer.audiences"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, algorithms=["none"]), "Issuer.algorithms"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, algorithms=["HS256"]), "Issuer.algorithms"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, algorithms=["XX1"]), "Issuer.algorithms"),
        (
            lambda: Issuer(
                ISSUER, audiences=AUDIENCE, algorithms=["HS256", "RS256"], secret="x" * 32
            ),
            "Issuer.algorithms",
        ),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, secret="x" * 32), "Issuer.secret"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, jwks_uri="ftp://x"), "Issuer.jwks_uri"),
        (
            lambda: Issuer(ISSUER, audiences=AUDIENCE, jwks_uri="https://x/j", keys=[RSA.jwk()]),
            "Issuer.keys",
        ),
        (lambda: Issuer("not a url", audiences=AUDIENCE), "Issuer.issuer"),
        (lambda: Issuer(None, audiences=AUDIENCE), "Issuer.keys"),
        (
            lambda: Issuer(None, audiences=(), check_audience=False, keys=[RSA.jwk()]),
            "Issuer.check_audience",
        ),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, leeway=3600), "Issuer.leeway"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, leeway=float("nan")), "Issuer.leeway"),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, check_audience="no"), "Issuer.check_audience"),
        (lambda: Issuer(ISSUER, audience=AUDIENCE), "audience"),  # misspelled
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, claims={"roles": "x"}), "Issuer.claims"),
        (lambda: ClaimMapping(roles=[""]), "ClaimMapping.roles"),
        (lambda: ClaimMapping(user_id=None), "ClaimMapping.user_id"),
        (lambda: ClaimMapping(extra={"claims": "sub"}), "ClaimMapping.extra"),
        (lambda: ClaimMapping(role=["x"]), "role"),
        (lambda: Issuer.keyrock("app", "short"), "issuers[0].secret"),
        (lambda: Issuer.keyrock("app", RSA.public_pem()), "issuers[0].secret"),
        (
            lambda: Issuer(ISSUER, audiences=AUDIENCE, keys=[{**RSA.jwk(), "d": "x"}]),
            "issuers[0].keys",
        ),
        (
            lambda: Issuer(ISSUER, audiences=AUDIENCE, keys=[{"kty": "oct", "k": "AAAA"}]),
            "issuers[0].keys",
        ),
        (
            lambda: Issuer(ISSUER, audiences=AUDIENCE, keys=[SigningKey.rsa(bits=1024).jwk()]),
            "issuers[0].keys",
        ),
        (lambda: Issuer(ISSUER, audiences=AUDIENCE, keys="not a pem"), "issuers[0].keys"),
        (
            lambda: Issuer(ISSUER, audiences=AUDIENCE, keys=[EC.jwk()], algorithms=["RS256"]),
            "issuers[0].keys",
        ),
    ],
)
def test_configuration_mistakes_fail_at_start_naming_the_option(build: Any, option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        built = build()
        if isinstance(built, Issuer):
            JWTValidator(built)
    assert info.value.option == option


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"min_refresh_interval": 0}, "min_refresh_interval"),
        ({"min_refresh_interval": float("inf")}, "min_refresh_interval"),
        ({"keys_max_age": True}, "keys_max_age"),
        ({"max_stale": 10}, "max_stale"),
        ({"min_refresh_interval": 900}, "min_refresh_interval"),
        ({"timeout": -1}, "timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"min_refresh": 5}, "min_refresh"),
    ],
)
def test_validator_options_are_checked(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        JWTValidator(Issuer(ISSUER, audiences=AUDIENCE), **options)
    assert info.value.option == option


def test_issuers_must_be_distinct() -> None:
    with pytest.raises(ConfigurationError) as info:
        JWTValidator([Issuer(ISSUER, audiences="a"), Issuer(ISSUER, audiences="b")])
    assert info.value.option == "issuers[1]"
    with pytest.raises(ConfigurationError):
        JWTValidator([Issuer.keyrock("app", "x" * 16), Issuer.keyrock("app", "y" * 16)])
    with pytest.raises(ConfigurationError):
        JWTValidator([])
    with pytest.raises(ConfigurationError):
        JWTValidator(["https://issuer"])  # type: ignore[list-item]


def test_did_you_mean() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'audiences'"):
        Issuer(ISSUER, audience="x")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="did you mean 'max_stale'"):
        JWTValidator(Issuer(ISSUER, audiences="x"), max_stal=5)  # type: ignore[call-arg]


def test_secret_is_not_in_repr() -> None:
    issuer = Issuer.keyrock("app-1", "s3cret-s3cret-s3cret")
    assert "s3cret" not in repr(issuer)
    assert "s3cret" not in repr(JWTValidator(issuer))


def test_no_token_reaches_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    good = token(RSA)
    bad = [token(ATTACKER), token(RSA, claims(aud="x")), "x" + good, good + "x"]
    with caplog.at_level(logging.DEBUG):
        V.validate(good)
        for text in bad:
            with pytest.raises(InvalidToken):
                V.validate(text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected" in logged  # fingerprints are logged...
    for text in (good, *bad):
        for part in text.split("."):
            assert part not in logged  # ...never a token or a piece of one
