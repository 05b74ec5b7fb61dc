"""The self-service token API behind the real middleware (WSGI and ASGI), SQLite and PostgreSQL:
a permission table of own and other users' tokens and of escalation attempts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from authmw import ASGIAuthMiddleware, WSGIAuthMiddleware
from authmw.store import IssuedToken, LocalTokenStore
from authmw.store.selfservice import TokenService

MakeStore = Callable[..., LocalTokenStore]
DAY = 86400.0


@dataclass
class World:
    """A store with callers (by name: their tokens) and other users' tokens."""

    store: LocalTokenStore
    tokens: dict[str, IssuedToken] = field(default_factory=dict)

    def add(self, name: str, **fields: Any) -> None:
        fields.setdefault("ttl", 30 * DAY)
        fields.setdefault("project_name", "p1")
        self.tokens[name] = self.store.issue(**fields)


def make_world(store: LocalTokenStore) -> World:
    world = World(store)
    world.add("alice", user_name="alice", roles=["member", "reader"])
    world.add("alice-scoped", user_name="alice", roles=["member"], scopes=["items:read"])
    world.add("alice-ro", user_name="alice", roles=["member"], read_only=True)
    world.add("alice-net", user_name="alice", roles=["member"], allowed_ips=["10.0.0.0/8"])
    world.add("alice-idle", user_name="alice", roles=["member"], idle_ttl=3600)
    world.add("alice-short", user_name="alice", roles=["member"], ttl=DAY)
    world.add("alice-powerful", user_name="alice", roles=["member", "admin"])
    world.add("admin", user_name="admin", roles=["admin", "member"])
    world.add("admin-p2", user_name="admin2", roles=["admin", "member"], project_name="p2")
    world.add("bob", user_name="bob", roles=["member"])
    world.add("bob-super", user_name="bob", roles=["superuser"])
    return world


@dataclass(frozen=True)
class Case:
    caller: str | None
    method: str
    path: str  # "{bob}" etc. become token ids
    body: dict[str, Any] | None
    status: int
    check: Callable[[World, Any], None] | None = None


def _active(name: str) -> Callable[[World, Any], None]:
    def check(world: World, _: Any) -> None:
        record = world.store.get(world.tokens[name].id)
        assert record is not None and record.revoked_at is None

    return check


def _revoked(name: str) -> Callable[[World, Any], None]:
    def check(world: World, _: Any) -> None:
        record = world.store.get(world.tokens[name].id)
        assert record is not None and record.revoked_at is not None

    return check


def _issued(**expected: Any) -> Callable[[World, Any], None]:
    def check(world: World, answer: Any) -> None:
        assert answer["token"].startswith("amw_")
        record = answer["record"]
        for key, value in expected.items():
            assert record[key] == value, (key, record[key])
        assert world.store.validate(answer["token"]).user_id == record["user_id"]

    return check


def _listed(*names: str) -> Callable[[World, Any], None]:
    def check(world: World, answer: Any) -> None:
        assert sorted(r["id"] for r in answer) == sorted(world.tokens[n].id for n in names)
        assert all("token_hash" not in r and "token" not in r for r in answer)

    return check


ALICE_TOKENS = (
    "alice",
    "alice-scoped",
    "alice-ro",
    "alice-net",
    "alice-idle",
    "alice-short",
    "alice-powerful",
)

CASES: dict[str, Case] = {
    # -- own tokens
    "list own": Case("alice", "GET", "/", None, 200, _listed(*ALICE_TOKENS)),
    "show own": Case("alice", "GET", "/{alice-scoped}", None, 200),
    "revoke own": Case("alice", "DELETE", "/{alice-short}", None, 204, _revoked("alice-short")),
    "issue own, fewer roles": Case(
        "alice", "POST", "/", {"roles": ["reader"]}, 201, _issued(roles=["reader"])
    ),
    "issue own, roles inherited": Case(
        "alice", "POST", "/", {}, 201, _issued(roles=["member", "reader"], project_id="p1")
    ),
    "issue own, role in other case": Case(
        "alice", "POST", "/", {"roles": ["MEMBER"]}, 201, _issued(roles=["MEMBER"])
    ),
    "rotate own": Case("alice", "POST", "/{alice-short}/rotate", {"grace": 60}, 200),
    "unauthenticated": Case(None, "GET", "/", None, 401),
    # -- other users' tokens
    "list another's": Case("alice", "GET", "/?user=bob", None, 403),
    "show another's": Case("alice", "GET", "/{bob}", None, 404),
    "revoke another's": Case("alice", "DELETE", "/{bob}", None, 404, _active("bob")),
    "rotate another's": Case("alice", "POST", "/{bob}/rotate", {}, 404, _active("bob")),
    "issue for another": Case("alice", "POST", "/", {"user_id": "bob"}, 403),
    "admin lists another's": Case(
        "admin", "GET", "/?user=bob", None, 200, _listed("bob", "bob-super")
    ),
    "admin revokes another's": Case("admin", "DELETE", "/{bob}", None, 204, _revoked("bob")),
    "admin issues for another": Case(
        "admin",
        "POST",
        "/",
        {"user_id": "bob", "user_name": "bob", "roles": ["member"]},
        201,
        _issued(user_id="bob", roles=["member"], project_id="p1"),
    ),
    "admin of another project": Case("admin-p2", "DELETE", "/{bob}", None, 404, _active("bob")),
    "admin of another project lists": Case("admin-p2", "GET", "/?user=bob", None, 200, _listed()),
    # -- escalation attempts
    "grant a role not held": Case("alice", "POST", "/", {"roles": ["admin"]}, 403),
    "admin grants a role not held": Case(
        "admin", "POST", "/", {"user_id": "bob", "roles": ["superuser"]}, 403
    ),
    "outlive own token": Case("alice-short", "POST", "/", {"ttl": 2 * DAY}, 403),
    "default lifetime capped": Case("alice-short", "POST", "/", {}, 201),
    "grant scopes without any": Case("alice", "POST", "/", {"scopes": ["items:read"]}, 403),
    "widen scopes": Case("alice-scoped", "POST", "/", {"scopes": ["items:write"]}, 403),
    "narrower scopes": Case(
        "alice-scoped", "POST", "/", {"scopes": ["items:read"]}, 201, _issued(scopes=["items:read"])
    ),
    "scopes inherited": Case("alice-scoped", "POST", "/", {}, 201, _issued(scopes=["items:read"])),
    "read-only issues nothing": Case("alice-ro", "POST", "/", {}, 403),
    "read-only revokes nothing": Case(
        "alice-ro", "DELETE", "/{alice}", None, 403, _active("alice")
    ),
    "wider networks": Case("alice-net", "POST", "/", {"allowed_ips": ["0.0.0.0/0"]}, 403),
    "narrower networks": Case(
        "alice-net",
        "POST",
        "/",
        {"allowed_ips": ["10.1.0.0/16"]},
        201,
        _issued(allowed_ips=["10.1.0.0/16"]),
    ),
    "networks inherited": Case(
        "alice-net", "POST", "/", {}, 201, _issued(allowed_ips=["10.0.0.0/8"])
    ),
    "longer idle time": Case("alice-idle", "POST", "/", {"idle_ttl": 7200}, 403),
    "no idle time": Case("alice-idle", "POST", "/", {"idle_ttl": None}, 403),
    "idle time inherited": Case("alice-idle", "POST", "/", {}, 201, _issued(idle_ttl=3600)),
    "idle-limited caller, its full lifetime": Case(
        "alice-idle", "POST", "/", {"ttl": 29 * DAY}, 201, _issued(idle_ttl=3600)
    ),
    "idle-limited caller, past its lifetime": Case(
        "alice-idle", "POST", "/", {"ttl": 31 * DAY}, 403
    ),
    "rotate a more powerful own token": Case(
        "alice", "POST", "/{alice-powerful}/rotate", {}, 403, _active("alice-powerful")
    ),
    "admin rotates a token with a role not held": Case(
        "admin", "POST", "/{bob-super}/rotate", {}, 403
    ),
    "admin rotates another's": Case("admin", "POST", "/{bob}/rotate", {}, 200),
    "rotate an unrestricted token from a restricted one": Case(
        "alice-net", "POST", "/{alice-short}/rotate", {}, 403
    ),
    # -- mistakes
    "not JSON": Case("alice", "POST", "/", None, 400),
    "bad ttl": Case("alice", "POST", "/", {"ttl": "long"}, 400),
    "unknown route": Case("alice", "PUT", "/", None, 405),
}


def _path(world: World, template: str) -> str:
    for name, issued in world.tokens.items():
        template = template.replace("{" + name + "}", issued.id)
    return template


def _send(kind: str, app: Any, case: Case, world: World) -> httpx.Response:
    headers = {} if case.caller is None else {"X-Auth-Token": world.tokens[case.caller].token}
    content = b"{not json" if case.body is None and case.method == "POST" else None
    if case.body is not None:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    url = "http://api" + _path(world, case.path)
    if kind == "wsgi":
        transport: Any = httpx.WSGITransport(app=app, remote_addr="10.1.2.3")
        with httpx.Client(transport=transport) as client:
            return client.request(case.method, url, headers=headers, content=content)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(case.method, url, headers=headers, content=content)

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("name", list(CASES))
def test_permission_table(name: str, kind: str, make_store: MakeStore) -> None:
    case = CASES[name]
    store = make_store()
    world = make_world(store)
    service = TokenService(store)
    if kind == "wsgi":
        app: Any = WSGIAuthMiddleware(service.wsgi, store)
    else:
        app = ASGIAuthMiddleware(service.asgi, validator=store)

    response = _send(kind, app, case, world)

    assert response.status_code == case.status, response.text
    if response.status_code == 201:
        assert response.headers["cache-control"] == "no-store"
    if response.status_code in (200, 201) and "token" not in (case.path + str(case.body)):
        secret_free = response.text
        for other in world.tokens.values():
            assert other.token not in secret_free
    if case.check is not None:
        case.check(world, response.json() if response.content else None)


def test_the_table_has_twenty_cases_or_more() -> None:
    assert len(CASES) >= 20


def test_a_policy_rule_decides_who_manages_others(make_store: MakeStore) -> None:
    store = make_store()
    world = make_world(store)
    service = TokenService(store, policy={"authmw:tokens:manage_others": "role:member"})
    app = WSGIAuthMiddleware(service.wsgi, store)
    case = Case("alice", "DELETE", "/{bob}", None, 204)
    assert _send("wsgi", app, case, world).status_code == 204
    own_off = TokenService(store, policy={"authmw:tokens:manage_own": "!"})
    app = WSGIAuthMiddleware(own_off.wsgi, store)
    assert _send("wsgi", app, Case("alice", "GET", "/", None, 403), world).status_code == 403
