"""A small items API on Starlette that accepts JWT access tokens from an OpenID provider.

    GET    /health        public
    GET    /whoami        any valid token: who the token says you are
    GET    /items         role reader
    POST   /items         role member, or the provider's realm role "admin"
    DELETE /items/{id}    claim-based: the token's client_id must own the item

Run it against your provider::

    AUTHMW_OIDC_ISSUER=https://sso.example.com/realms/acme \\
    AUTHMW_OIDC_AUDIENCE=items-api \\
    uvicorn --app-dir examples jwt_app:app
    curl -H "Authorization: Bearer $ACCESS_TOKEN" localhost:8000/whoami

``AUTHMW_OIDC_TOKEN_TYPE=at+jwt`` requires RFC 9068 access tokens (set it for
providers that issue them). Keycloak: ``AUTHMW_OIDC_KEYCLOAK_CLIENT=items-api``
uses the Keycloak preset (realm and client roles, typ Bearer).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authmw import (
    ASGIAuthMiddleware,
    ClaimMapping,
    Forbidden,
    Identity,
    Issuer,
    JWTValidator,
    error_body,
)
from authmw.policy import Policy

RULES = {
    "items:list": "role:reader",
    "items:create": "role:member or claims.realm_access.roles:admin",
    "items:delete": "client_id:%(owner)s",
}


def _error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status, media_type="application/json")


def issuer_from_env() -> Issuer:
    """The token issuer named by the environment."""
    url = os.environ["AUTHMW_OIDC_ISSUER"]
    audiences = [a for a in os.environ["AUTHMW_OIDC_AUDIENCE"].split(",") if a]
    keycloak_client = os.environ.get("AUTHMW_OIDC_KEYCLOAK_CLIENT")
    if keycloak_client:
        return Issuer.keycloak(url, audiences, client_id=keycloak_client)
    return Issuer(
        url,
        audiences=audiences,
        token_type=os.environ.get("AUTHMW_OIDC_TOKEN_TYPE") or None,
        claims=ClaimMapping(roles=["roles", "realm_access.roles", "scope"]),
    )


def create_app(validator: JWTValidator | None = None, policy: Policy | None = None) -> Any:
    """The API behind ASGIAuthMiddleware (Bearer tokens only)."""
    policy = policy or Policy(RULES)
    items: dict[str, dict[str, str]] = {}

    def caller(request: Request) -> Identity:
        identity: Identity = request.scope["authmw.identity"]
        return identity

    def allowed(
        rule: str, request: Request, target: dict[str, Any] | None = None
    ) -> Response | None:
        try:
            policy.authorize(rule, caller(request), target or {})
        except Forbidden as exc:
            return _error(403, str(exc))
        return None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def whoami(request: Request) -> Response:
        identity = caller(request)
        return JSONResponse(
            {
                "user_id": identity.user_id,
                "user_name": identity.user_name,
                "roles": list(identity.roles),
                "client_id": identity.extra.get("client_id"),
                "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
            }
        )

    async def list_items(request: Request) -> Response:
        return allowed("items:list", request) or JSONResponse({"items": list(items.values())})

    async def create_item(request: Request) -> Response:
        denied = allowed("items:create", request)
        if denied:
            return denied
        body = await request.json()
        item = {
            "id": uuid.uuid4().hex,
            "name": str(body.get("name", "")),
            "owner": str(caller(request).extra.get("client_id")),
        }
        items[item["id"]] = item
        return JSONResponse(item, status_code=201)

    async def delete_item(request: Request) -> Response:
        item = items.get(request.path_params["item_id"])
        if item is None:
            return _error(404, "no such item")
        denied = allowed("items:delete", request, {"owner": item["owner"]})
        if denied:
            return denied
        del items[item["id"]]
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/whoami", whoami),
            Route("/items", list_items, methods=["GET"]),
            Route("/items", create_item, methods=["POST"]),
            Route("/items/{item_id}", delete_item, methods=["DELETE"]),
        ]
    )
    return ASGIAuthMiddleware(
        app,
        validator or JWTValidator(issuer_from_env()),
        token_sources=["Authorization: Bearer"],
        public_routes=["GET /health"],
    )


app = create_app() if os.environ.get("AUTHMW_OIDC_ISSUER") else None
