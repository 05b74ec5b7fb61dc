"""examples/jwt_app.py against the real OpenID provider: Bearer JWTs, roles and claim rules."""

from __future__ import annotations

import pytest
from _services import OIDCProvider
from examples_support import load_example
from jwt_tokens import SigningKey, claims, token
from starlette.testclient import TestClient

example = load_example("jwt_app.py")


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


def test_items_api_with_provider_tokens(
    oidc_provider: OIDCProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHMW_OIDC_ISSUER", oidc_provider.url)
    monkeypatch.setenv("AUTHMW_OIDC_AUDIENCE", OIDCProvider.RESOURCES["RS256"])
    monkeypatch.setenv("AUTHMW_OIDC_TOKEN_TYPE", "at+jwt")
    reader = oidc_provider.token("reader")
    admin = oidc_provider.token("admin")
    with TestClient(example.create_app()) as client:
        assert client.get("/health").json() == {"status": "ok"}
        response = client.get("/items")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")

        me = client.get("/whoami", headers=bearer(admin)).json()
        assert me["user_id"] == "admin"
        assert me["roles"] == ["admin", "member", "reader"]
        assert me["client_id"] == "admin"

        assert client.get("/items", headers=bearer(reader)).json() == {"items": []}
        assert client.post("/items", json={"name": "x"}, headers=bearer(reader)).status_code == 403
        item = client.post("/items", json={"name": "hammer"}, headers=bearer(admin)).json()
        assert item["owner"] == "admin"
        # Only the client that owns the item may delete it (a rule on a claim).
        assert client.delete(f"/items/{item['id']}", headers=bearer(reader)).status_code == 403
        assert client.delete(f"/items/{item['id']}", headers=bearer(admin)).status_code == 204

        forged = token(
            SigningKey.rsa(oidc_provider.signing_kid()),
            claims(iss=oidc_provider.url, aud=OIDCProvider.RESOURCES["RS256"], roles=["admin"]),
            header={"typ": "at+jwt"},
        )
        assert client.get("/whoami", headers=bearer(forged)).status_code == 401
        other = oidc_provider.token("admin", OIDCProvider.OTHER_AUDIENCE)
        assert client.get("/whoami", headers=bearer(other)).status_code == 401
