"""The real servers the suite starts: Keystone, redis-server, PostgreSQL, an OpenID provider."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
import redis
from _services import (
    DisposableKeystone,
    Keystone,
    OIDCProvider,
    PostgresServer,
    RedisServer,
    ServiceError,
)


def test_project_scoped_token(keystone: Keystone) -> None:
    token = keystone.issue_token("demo-user", project="demo-project")
    body = keystone.token_body(token)["token"]
    assert body["user"]["name"] == "demo-user"
    assert body["user"]["domain"]["name"] == "demo"
    assert body["project"]["name"] == "demo-project"
    assert body["project"]["domain"]["name"] == "demo"
    assert {"member", "reader"} <= {r["name"] for r in body["roles"]}
    assert body["is_admin_project"] is False


def test_default_project_and_implied_roles(keystone: Keystone) -> None:
    body = keystone.token_body(keystone.issue_token("demo-admin"))["token"]
    assert body["project"]["id"] == keystone.project_id("demo-project")
    assert {"admin", "manager", "member", "reader"} <= {r["name"] for r in body["roles"]}


def test_domain_scoped_token(keystone: Keystone) -> None:
    body = keystone.token_body(keystone.issue_token("demo-user", domain="demo"))["token"]
    assert body["domain"] == {"id": keystone.domain_id("demo"), "name": "demo"}
    assert "project" not in body
    assert [r["name"] for r in body["roles"]] == ["reader"]


def test_system_scoped_token(keystone: Keystone) -> None:
    body = keystone.token_body(keystone.issue_token("system-reader", system=True))["token"]
    assert body["system"] == {"all": True}
    assert "reader" in {r["name"] for r in body["roles"]}


def test_unscoped_token(keystone: Keystone) -> None:
    body = keystone.token_body(keystone.issue_token("demo-admin", unscoped=True))["token"]
    assert body["user"]["name"] == "demo-admin"
    assert not {"project", "domain", "system", "roles"} & body.keys()


def test_fiware_smartcity_tokens(keystone: Keystone) -> None:
    project = keystone.token_body(keystone.issue_token("gardener", project="/gardens"))["token"]
    assert project["project"]["name"] == "/gardens"
    assert project["project"]["domain"]["name"] == "smartcity"
    domain = keystone.token_body(keystone.issue_token("gardener", domain="smartcity"))["token"]
    assert domain["domain"]["name"] == "smartcity"


def test_user_without_roles_gets_no_project_token(keystone: Keystone) -> None:
    with pytest.raises(AssertionError, match="HTTP 401"):
        keystone.issue_token("norole", project="alpha")
    assert keystone.issue_token("norole", unscoped=True)


def test_service_user_validates_and_counts(keystone_disposable: DisposableKeystone) -> None:
    ks = keystone_disposable
    user_token = ks.issue_token("demo-user", project="demo-project")
    service_token = ks.service_token()
    before = ks.validation_count()
    r = httpx.get(
        f"{ks.url}/auth/tokens",
        headers={"X-Auth-Token": service_token, "X-Subject-Token": user_token},
        params={"nocatalog": "1"},
    )
    assert r.status_code == 200
    assert r.json()["token"]["user"]["name"] == "demo-user"
    ks.token_body(user_token)  # helper calls are not counted
    assert ks.validation_count() == before + 1


def test_revoked_token_is_not_found(keystone: Keystone) -> None:
    token = keystone.issue_token("demo-reader", project="demo-project")
    assert keystone.check(token).status_code == 200
    keystone.revoke(token)
    assert keystone.check(token).status_code == 404


def test_application_credentials(keystone: Keystone) -> None:
    body = keystone.token_body(keystone.issue_application_credential_token())["token"]
    assert body["application_credential"]["id"] == keystone.application_credential["id"]
    assert body["project"]["name"] == "service"
    cred = keystone.create_application_credential("demo-user", roles=["reader"])
    token = keystone.issue_application_credential_token(cred["id"], cred["secret"])
    assert [r["name"] for r in keystone.token_body(token)["token"]["roles"]] == ["reader"]
    keystone.delete_application_credential(cred["id"], user="demo-user")
    with pytest.raises(AssertionError, match="HTTP 404"):  # Keystone: no such credential
        keystone.issue_application_credential_token(cred["id"], cred["secret"])


def test_disposable_keystone_stops_and_starts(
    keystone: Keystone, keystone_disposable: DisposableKeystone
) -> None:
    ks = keystone_disposable
    assert ks.url != keystone.url
    token = keystone.issue_token("demo-user", project="demo-project")  # issued by the shared one
    assert ks.token_body(token)["token"]["user"]["name"] == "demo-user"
    ks.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(ks.url)
    ks.start()
    assert ks.token_body(token)["token"]["user"]["name"] == "demo-user"


def test_make_keystone_with_short_lived_tokens(
    make_keystone: Callable[..., DisposableKeystone],
) -> None:
    ks = make_keystone(token_expiration=60, workers=1)
    body = ks.token_body(ks.issue_token("demo-user", project="demo-project"))["token"]
    issued = datetime.fromisoformat(body["issued_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert (expires - issued).total_seconds() == pytest.approx(60, abs=1)


def test_redis_url(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        assert client.dbsize() == 0
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()


def test_redis_server_stops_and_starts(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1)
    try:
        assert client.ping() is True
        redis_server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        redis_server.start()
        assert client.ping() is True
    finally:
        client.close()


def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")


def test_postgres_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)


def test_missing_server_binaries_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHMW_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(ServiceError, match=r"install-services\.sh"):
        RedisServer()
    monkeypatch.setenv("AUTHMW_PG_BINDIR", "/nonexistent")
    with pytest.raises(ServiceError, match=r"install-services\.sh"):
        PostgresServer()


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
        json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))),
    )


def test_oidc_provider_issues_jwt_access_tokens(oidc_provider: OIDCProvider) -> None:
    discovery = httpx.get(f"{oidc_provider.url}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == oidc_provider.url
    assert discovery["jwks_uri"] == f"{oidc_provider.url}/jwks"
    for alg, resource in oidc_provider.RESOURCES.items():
        header, claims = _jwt_parts(oidc_provider.token("admin", resource))
        assert header["alg"] == alg
        assert header["typ"] == "at+jwt"
        assert header["kid"] == oidc_provider.signing_kid(alg)
        assert claims["iss"] == oidc_provider.url
        assert claims["aud"] == resource
        assert claims["client_id"] == claims["sub"] == "admin"
        assert claims["roles"] == ["admin", "member", "reader"]
    jwks = httpx.get(discovery["jwks_uri"]).json()["keys"]
    assert all("d" not in key for key in jwks)  # public keys only
    assert oidc_provider.stats() == {"jwks": 1, "discovery": 1, "token": 4}


def test_oidc_provider_rotates_keys_and_survives_restarts(oidc_provider: OIDCProvider) -> None:
    old = oidc_provider.signing_kid("RS256")
    new = oidc_provider.publish_key("RS256")
    assert _jwt_parts(oidc_provider.token())[0]["kid"] == old  # published, not signing yet
    oidc_provider.sign_with(new)
    assert _jwt_parts(oidc_provider.token())[0]["kid"] == new
    oidc_provider.retire_key(old)
    kids = {key["kid"] for key in httpx.get(f"{oidc_provider.url}/jwks").json()["keys"]}
    assert new in kids and old not in kids

    oidc_provider.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{oidc_provider.url}/jwks")
    oidc_provider.start()
    assert _jwt_parts(oidc_provider.token())[0]["kid"] == new  # same keys after the outage


def test_oidc_provider_jwks_faults(oidc_provider: OIDCProvider) -> None:
    oidc_provider.jwks_fault("500")
    assert httpx.get(f"{oidc_provider.url}/jwks").status_code == 500
    oidc_provider.jwks_fault("redirect")
    assert httpx.get(f"{oidc_provider.url}/jwks").status_code == 302
    oidc_provider.jwks_fault("ok")
    assert httpx.get(f"{oidc_provider.url}/jwks").status_code == 200
    assert oidc_provider.stats()["jwks"] == 3
