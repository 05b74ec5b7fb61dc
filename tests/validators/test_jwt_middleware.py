"""JWTValidator under the middleware: Bearer tokens, policy rules on claims, a chain, outages.

The provider is the real oidc-provider; the middleware stacks are the ones
users build (``WSGIAuthMiddleware``/``ASGIAuthMiddleware`` with
``token_sources=["Authorization: Bearer"]``), with their cache and breaker.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from _services import OIDCProvider
from helpers import ASGIRecorder, WSGIRecorder, call_asgi, call_wsgi, environ, http_scope
from jwt_tokens import SigningKey, b64, b64json, claims, hs256, raw_token, token

from authmw import (
    ASGIAuthMiddleware,
    ChainValidator,
    ClaimMapping,
    Identity,
    Issuer,
    JWTValidator,
    LocalTokenStore,
    WSGIAuthMiddleware,
)
from authmw.policy import Policy

BEARER = ["Authorization: Bearer"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def jwt_validator(provider: OIDCProvider, **options: Any) -> JWTValidator:
    mapping = ClaimMapping(project_id="project_id", roles=["roles", "scope"])
    issuer = Issuer(
        provider.url,
        audiences=list(provider.RESOURCES.values()),
        token_type="at+jwt",
        claims=mapping,
    )
    return JWTValidator(issuer, **options)


def bearer(text: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {text}")]


def hostile(provider: OIDCProvider) -> dict[str, str]:
    """Hand-made tokens aimed at the provider's issuer and audience."""
    attacker = SigningKey.rsa(provider.signing_kid())  # the real kid, another key
    good = claims(iss=provider.url, aud=OIDCProvider.RESOURCES["RS256"])
    header = {"typ": "at+jwt"}
    pem = attacker.public_pem()
    now = int(time.time())
    return {
        "alg none": raw_token(
            b64json({"alg": "none", "typ": "at+jwt", "kid": provider.signing_kid()}),
            b64json(good),
        ),
        "hs256 with a public key": hs256(pem, good, {"kid": provider.signing_kid(), **header}),
        "wrong iss": token(attacker, {**good, "iss": "https://evil.test"}, header=header),
        "missing aud": token(attacker, {**good, "aud": None}, header=header),
        "expired": token(attacker, {**good, "exp": now - 3600}, header=header),
        "nbf in the future": token(attacker, {**good, "nbf": now + 3600}, header=header),
        "unknown kid": token(SigningKey.rsa("made-up"), good, header=header),
        "signed by another key": token(attacker, good, header=header),
        "huge header": token(attacker, good, header={**header, "x": "a" * 3000}),
        "json bomb": raw_token(b64(b"[" * 1500 + b"]" * 1500), b64json(good), "AAAA"),
        "not a jwt": "bm90LWEtand0",
    }


# -- WSGI -------------------------------------------------------------------------------------


def test_wsgi_bearer_jwt_from_the_provider(oidc_provider: OIDCProvider) -> None:
    app = WSGIRecorder()
    mw = WSGIAuthMiddleware(app, jwt_validator(oidc_provider), token_sources=BEARER)
    admin = oidc_provider.token("admin", scope="items:read items:write")
    result = call_wsgi(mw, environ(headers=bearer(admin)))
    assert result.code == 200
    env = app.last
    identity: Identity = env["authmw.identity"]
    assert identity.extra["claims"]["client_id"] == "admin"
    assert env["HTTP_X_USER_ID"] == "admin"
    assert env["HTTP_X_USER_NAME"] == "admin-bot"
    assert env["HTTP_X_PROJECT_ID"] == "demo-project"
    assert env["HTTP_X_ROLES"] == "admin,member,reader,items:read,items:write"
    # The bad roles of 'weird' never reach X-Roles.
    call_wsgi(
        mw, environ(headers=bearer(oidc_provider.token("weird", scope="items:read items:write")))
    )
    assert app.last["HTTP_X_ROLES"] == "reader,items:read,items:write"


def test_wsgi_hostile_tokens_are_401_never_500(oidc_provider: OIDCProvider) -> None:
    app = WSGIRecorder()
    validator = jwt_validator(oidc_provider)
    mw = WSGIAuthMiddleware(app, validator, token_sources=BEARER, max_token_size=8192)
    assert call_wsgi(mw, environ(headers=bearer(oidc_provider.token()))).code == 200
    for name, text in hostile(oidc_provider).items():
        result = call_wsgi(mw, environ(headers=bearer(text)))
        assert result.code == 401, name
        assert (result.header("WWW-Authenticate") or "").startswith("Bearer "), name
        assert json.loads(result.body)["error"]["code"] == 401
    assert len(app.environs) == 1
    assert mw.stats()["circuit_state"] == "closed"


def test_wsgi_outage_valid_tokens_until_max_stale_then_503(oidc_provider: OIDCProvider) -> None:
    clock = Clock()
    validator = jwt_validator(
        oidc_provider, keys_max_age=60, min_refresh_interval=10, max_stale=300, clock=clock
    )
    mw = WSGIAuthMiddleware(WSGIRecorder(), validator, token_sources=BEARER, cache_time=0)
    tokens = [oidc_provider.token(c) for c in ("reader", "admin", "weird")]
    assert all(call_wsgi(mw, environ(headers=bearer(t))).code == 200 for t in tokens)
    oidc_provider.stop()
    codes = []
    for _ in range(40):  # 280 s of provider outage, past keys_max_age
        clock.now += 7
        codes += [call_wsgi(mw, environ(headers=bearer(t))).code for t in tokens]
    assert set(codes) == {200}
    clock.now += 30  # past max_stale
    result = call_wsgi(mw, environ(headers=bearer(tokens[0])))
    assert result.code == 503
    assert result.header("Retry-After")


# -- ASGI --------------------------------------------------------------------------------------


def test_asgi_bearer_jwt_and_hostile_tokens(oidc_provider: OIDCProvider) -> None:
    app = ASGIRecorder()
    mw = ASGIAuthMiddleware(
        app, jwt_validator(oidc_provider), token_sources=BEARER, max_token_size=8192
    )
    hostile_tokens = hostile(oidc_provider)

    async def run() -> None:
        good = oidc_provider.token("reader", oidc_provider.RESOURCES["ES256"])
        headers = [(b"authorization", f"Bearer {good}".encode())]
        result = await call_asgi(mw, http_scope(headers=headers))
        assert result.status == 200
        assert app.last["authmw.identity"].roles == ("reader",)
        for name, text in hostile_tokens.items():
            headers = [(b"authorization", f"Bearer {text}".encode())]
            result = await call_asgi(mw, http_scope(headers=headers))
            assert result.status == 401, name
            assert (result.header(b"www-authenticate") or b"").startswith(b"Bearer ")

    asyncio.run(run())
    assert len(app.scopes) == 1


# -- policy rules on roles and claims ------------------------------------------------------------


def test_policy_rules_read_roles_and_verified_claims(oidc_provider: OIDCProvider) -> None:
    validator = jwt_validator(oidc_provider)
    policy = Policy(
        {
            "items:list": "role:reader",
            "items:delete": "role:admin and project_id:%(project_id)s",
            "realm:admin": "claims.realm_access.roles:admin",
            "client:items": "claims.resource_access.items.api.roles:items-admin",
            "ops": "claims.groups:ops",
            "by-client": "client_id:%(client)s",
            "scoped": "claims.scope:items:read",
        }
    )
    admin = validator.validate(oidc_provider.token("admin", scope="items:read"))
    reader = validator.validate(oidc_provider.token("reader"))
    target = {"project_id": "demo-project", "client": "admin"}
    assert policy.enforce("items:list", admin, target)
    assert policy.enforce("items:list", reader, target)
    assert policy.enforce("items:delete", admin, target)
    assert not policy.enforce("items:delete", reader, target)
    assert not policy.enforce("items:delete", admin, {"project_id": "other"})
    assert policy.enforce("realm:admin", admin, target)
    assert not policy.enforce("realm:admin", reader, target)
    assert policy.enforce("ops", admin, target)
    assert not policy.enforce("ops", reader, target)
    assert policy.enforce("by-client", admin, target)
    assert not policy.enforce("by-client", reader, target)
    assert policy.enforce("scoped", admin, target)
    # Keys with dots cannot be addressed by the rule syntax: a mapped role does it.
    assert not policy.enforce("client:items", admin, target)
    mapped = JWTValidator(
        Issuer(
            oidc_provider.url,
            audiences=list(oidc_provider.RESOURCES.values()),
            claims=ClaimMapping(roles=[("resource_access", "items.api", "roles")]),
        )
    ).validate(oidc_provider.token("admin"))
    assert mapped.roles == ("items-admin",)


# -- next to the local token store --------------------------------------------------------------


def test_chain_with_the_local_store_through_the_middleware(
    oidc_provider: OIDCProvider, tmp_path: Path
) -> None:
    store = LocalTokenStore(f"sqlite:///{tmp_path}/tokens.db")
    local = store.issue(user_name="svc-bot", project_id="p1", roles=["member"], ttl=3600).token
    chain = ChainValidator(routes={"amw_": store}, fallback=[jwt_validator(oidc_provider)])
    app = WSGIRecorder()
    mw = WSGIAuthMiddleware(app, chain, token_sources=[*BEARER, "X-Auth-Token"])
    assert call_wsgi(mw, environ(headers=bearer(local))).code == 200
    assert app.last["authmw.identity"].user_name == "svc-bot"
    assert call_wsgi(mw, environ(headers=[("X-Auth-Token", local)])).code == 200
    assert call_wsgi(mw, environ(headers=bearer(oidc_provider.token("admin")))).code == 200
    assert app.last["authmw.identity"].user_id == "admin"
    # A made-up amw_ token never reaches the JWT validator, nor a JWT the store.
    assert call_wsgi(mw, environ(headers=bearer("amw_" + "x" * 40))).code == 401
    before = oidc_provider.stats()["jwks"]
    forged = token(SigningKey.rsa("nope"), claims(iss=oidc_provider.url, aud="x"))
    assert call_wsgi(mw, environ(headers=bearer(forged))).code == 401
    assert oidc_provider.stats()["jwks"] == before  # wrong audience: no fetch either


@pytest.mark.parametrize("entry", ["wsgi", "asgi"])
def test_retired_key_drops_cached_identities_through_the_middleware(
    oidc_provider: OIDCProvider, entry: str
) -> None:
    clock = Clock()
    validator = jwt_validator(oidc_provider, keys_max_age=60, min_refresh_interval=10, clock=clock)
    old = oidc_provider.token("admin")
    old_kid = oidc_provider.signing_kid()
    if entry == "wsgi":
        wsgi = WSGIAuthMiddleware(WSGIRecorder(), validator, token_sources=BEARER)

        def status(text: str) -> int:
            return call_wsgi(wsgi, environ(headers=bearer(text))).code
    else:
        asgi = ASGIAuthMiddleware(ASGIRecorder(), validator, token_sources=BEARER)

        def status(text: str) -> int:
            headers = [(b"authorization", f"Bearer {text}".encode())]
            return asyncio.run(call_asgi(asgi, http_scope(headers=headers))).status

    assert status(old) == 200  # now cached for cache_time
    oidc_provider.sign_with(oidc_provider.publish_key())
    oidc_provider.retire_key(old_kid)
    assert status(old) == 200  # the keys were not fetched again yet
    clock.now += 61
    assert status(oidc_provider.token("reader")) == 200  # fetches: the old key is gone
    assert status(old) == 401  # its cached identity went with it


def test_a_websocket_closes_when_its_key_is_retired(oidc_provider: OIDCProvider) -> None:
    """The socket's identity carries its key's marker: a fetch without the key closes it."""
    clock = Clock()
    validator = jwt_validator(oidc_provider, keys_max_age=60, min_refresh_interval=10, clock=clock)
    old = oidc_provider.token("admin")
    old_kid = oidc_provider.signing_kid()
    events: list[str] = []
    accepted: list[asyncio.Event] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        events.append("accepted")
        accepted[0].set()
        message = await receive()  # authmw answers this when it ends the socket
        events.append(message["type"])

    mw = ASGIAuthMiddleware(app, validator, token_sources=BEARER)

    async def run() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        never = asyncio.Event()
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await never.wait()  # the client says nothing more
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = http_scope(
            "/socket",
            headers=[(b"authorization", f"Bearer {old}".encode())],
            type="websocket",
            scheme="ws",
            subprotocols=[],
        )
        scope.pop("method")
        accepted.append(asyncio.Event())
        socket = asyncio.ensure_future(mw(scope, receive, send))
        await asyncio.wait_for(accepted[0].wait(), 10)
        # The provider rotates and retires the key; the next fetch sees it gone.
        oidc_provider.sign_with(oidc_provider.publish_key())
        oidc_provider.retire_key(old_kid)
        clock.now += 61
        assert (await validator.avalidate(oidc_provider.token())).user_id == "reader"
        await asyncio.wait_for(socket, 10)
        return sent

    sent = asyncio.run(run())
    assert events == ["accepted", "websocket.disconnect"]
    closes = [m for m in sent if m["type"] == "websocket.close"]
    assert closes and closes[0]["code"] == 1008
