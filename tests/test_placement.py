"""OpenStack Placement, unmodified, behind keystonemiddleware and behind authmw.

Two Placement 16.0.0 servers (gunicorn, SQLite, each its own placement.conf
with the same ``[keystone_authtoken]`` section) validate against the same
real Keystone: one as shipped, one with authmw swapped in where Placement
builds its auth middleware (scripts/placement/authmw_wsgi.py). A real
client (keystoneauth sessions) drives both through the same steps, as an
admin, a member, a reader, with no, bad, expired and revoked tokens, and an
application credential with access rules. Every status and response body
must match, and Placement's oslo.policy checks must have seen the same
credentials. Then again with memcached as the shared cache of both, killed
in the middle.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _services import MemcachedServer, PlacementServer, ServiceError, placement_venv
from keystoneauth1 import session as ks_session

pytestmark = pytest.mark.placement

RP = "8d5e1f56-3f2b-4c1a-9a5e-2f7a1b3c4d5e"
CONSUMER = "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
MEMCACHE_KEY = "placement-test-memcache-secret-key-0123456789"
RULES = [
    {"service": "placement", "method": "GET", "path": "/resource_providers"},
    {"service": "placement", "method": "GET", "path": "/resource_providers/*"},
]
MV = "placement 1.39"


def authtoken(keystone: Any, **extra: str) -> dict[str, str]:
    c = keystone.service_credentials
    return {
        "auth_type": "password",
        "auth_url": keystone.url,
        "www_authenticate_uri": keystone.url,
        "username": c["username"],
        "password": c["password"],
        "user_domain_name": c["user_domain_name"],
        "project_name": c["project_name"],
        "project_domain_name": c["project_domain_name"],
        "service_type": "placement",
        **extra,
    }


@pytest.fixture(scope="module")
def venv() -> Any:
    try:
        return placement_venv()
    except ServiceError as e:
        pytest.fail(f"Placement's venv could not be built: {e}", pytrace=False)


@pytest.fixture
def placements(venv: Any) -> Iterator[Callable[..., tuple[PlacementServer, PlacementServer]]]:
    made: list[PlacementServer] = []

    def start(options: dict[str, str]) -> tuple[PlacementServer, PlacementServer]:
        pair = (
            PlacementServer(venv, "keystonemiddleware", options),
            PlacementServer(venv, "authmw", options),
        )
        made.extend(pair)
        try:
            for server in pair:
                server.start()
        except ServiceError as e:
            pytest.fail(f"Placement could not start: {e}", pytrace=False)
        return pair

    yield start
    for server in made:
        server.destroy()


class Tokens:
    """Every credential the steps use, issued once, used on both servers."""

    def __init__(self, keystone: Any, short_lived: Any) -> None:
        self.keystone = keystone
        self.admin = keystone.admin_token()
        self.member = keystone.issue_token("demo-user", project="demo-project")
        self.reader = keystone.issue_token("demo-reader", project="demo-project")
        self.system = keystone.issue_token("system-reader", system=True)
        self.revoked = keystone.issue_token("demo-user", project="demo-project")
        keystone.revoke(self.revoked)
        self.expired = short_lived.issue_token("demo-user", project="demo-project")
        cred = keystone.create_application_credential(
            user="demo-user", project="demo-project", access_rules=RULES
        )
        self.app_cred = keystone.issue_application_credential_token(cred["id"], cred["secret"])
        self.demo_project = keystone.project_id("demo-project")
        self.other_project = keystone.project_id("alpha")
        self.demo_user = keystone.user("demo-user")["id"]

    def fresh_admin(self) -> str:
        """A new admin token (each server revokes its own after using it)."""
        return str(
            self.keystone.issue_token(
                "admin",
                password=self.keystone.admin_password,
                user_domain="Default",
                project="admin",
                project_domain="Default",
            )
        )

    def wait_until_expired(self) -> None:
        deadline = time.monotonic() + 60
        while self.keystone.check(self.expired).status_code != 404:
            assert time.monotonic() < deadline, "the short-lived token never expired"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def tokens(catalog_keystone: Any, keystone: Any) -> Iterator[Tokens]:
    from _services import DisposableKeystone

    short_lived = DisposableKeystone(keystone, token_expiration=3)
    try:
        short_lived.start()
        yield Tokens(catalog_keystone, short_lived)
    finally:
        short_lived.destroy()


def steps(t: Tokens, used: str) -> list[tuple[str, str, str, str | None, Any]]:
    """(label, method, path, token, JSON body); ``used`` is revoked at the "revoke" step."""
    admin, member, reader = t.admin, t.member, t.reader
    inventories = {
        "resource_provider_generation": 0,
        "inventories": {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096}},
    }
    allocation = {
        "allocations": {RP: {"resources": {"VCPU": 2, "MEMORY_MB": 512}}},
        "project_id": t.demo_project,
        "user_id": t.demo_user,
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }
    usages = f"/usages?project_id={t.demo_project}"
    other_usages = f"/usages?project_id={t.other_project}"
    return [
        ("root, no token", "GET", "/", None, None),
        ("list, no token", "GET", "/resource_providers", None, None),
        ("list, bad token", "GET", "/resource_providers", "gAAAAABnot-a-real-token", None),
        ("admin creates", "POST", "/resource_providers", admin, {"name": "rp1", "uuid": RP}),
        ("admin lists", "GET", "/resource_providers", admin, None),
        (
            "admin sets inventories",
            "PUT",
            f"/resource_providers/{RP}/inventories",
            admin,
            inventories,
        ),
        ("admin reads inventories", "GET", f"/resource_providers/{RP}/inventories", admin, None),
        ("admin allocates", "PUT", f"/allocations/{CONSUMER}", admin, allocation),
        ("admin reads allocations", "GET", f"/allocations/{CONSUMER}", admin, None),
        ("admin usages", "GET", usages, admin, None),
        ("member lists", "GET", "/resource_providers", member, None),
        ("member creates", "POST", "/resource_providers", member, {"name": "rp2"}),
        ("member allocates", "PUT", f"/allocations/{CONSUMER}", member, allocation),
        ("member usages", "GET", usages, member, None),
        ("member other usages", "GET", other_usages, member, None),
        ("reader lists", "GET", "/resource_providers", reader, None),
        (
            "reader sets inventories",
            "PUT",
            f"/resource_providers/{RP}/inventories",
            reader,
            inventories,
        ),
        ("reader usages", "GET", usages, reader, None),
        ("system reader lists", "GET", "/resource_providers", t.system, None),
        ("revoked token", "GET", "/resource_providers", t.revoked, None),
        ("expired token", "GET", "/resource_providers", t.expired, None),
        ("used token", "GET", "/resource_providers", used, None),
        ("revoke", "", "", None, None),
        ("used, then revoked token (cached)", "GET", "/resource_providers", used, None),
        ("app cred lists", "GET", "/resource_providers", t.app_cred, None),
        ("app cred shows", "GET", f"/resource_providers/{RP}", t.app_cred, None),
        ("app cred usages", "GET", usages, t.app_cred, None),
        ("app cred creates", "POST", "/resource_providers", t.app_cred, {"name": "rp3"}),
        ("admin deletes allocations", "DELETE", f"/allocations/{CONSUMER}", admin, None),
        ("admin lists again", "GET", "/resource_providers", admin, None),
    ]


def normalised(server: PlacementServer, response: Any) -> Any:
    text = response.text.replace(server.url, "<placement>")
    text = re.sub(r"req-[0-9a-f-]{36}", "<request-id>", text)
    if "json" in response.headers.get("Content-Type", ""):
        return json.loads(text) if text else None
    return text


def drive(
    server: PlacementServer,
    t: Tokens,
    between: Callable[[str], None] = lambda label: None,
) -> list[tuple[str, int, Any, str | None]]:
    """Every step on ``server``, by a keystoneauth session: (label, status, body, challenge)."""
    session = ks_session.Session()
    used = t.fresh_admin()
    seen = []
    for label, method, path, token, body in steps(t, used):
        between(label)
        if label == "revoke":
            t.keystone.revoke(used)
            continue
        headers = {"OpenStack-API-Version": MV, "X-Test-Step": label}
        if token is not None:
            headers["X-Auth-Token"] = token
        response = session.request(
            server.url + path,
            method,
            json=body,
            headers=headers,
            raise_exc=False,
            authenticated=False,
        )
        challenge = response.headers.get("WWW-Authenticate")
        seen.append((label, response.status_code, normalised(server, response), challenge))
    return seen


def compare(ksm: PlacementServer, amw: PlacementServer, t: Tokens, **hooks: Any) -> list[Any]:
    t.wait_until_expired()
    ksm_seen = drive(ksm, t, **hooks)
    amw_seen = drive(amw, t, **hooks)
    for k, a in zip(ksm_seen, amw_seen, strict=True):
        assert a == k, f"step {k[0]!r} differs:\nkeystonemiddleware: {k}\nauthmw: {a}"
    ksm_records = [r for r in ksm.records() if r["request"]]
    amw_records = [r for r in amw.records() if r["request"]]
    assert amw_records == ksm_records  # Placement's policy checks saw the same credentials
    return ksm_seen


EXPECTED = {
    "root, no token": 200,
    "list, no token": 401,
    "list, bad token": 401,
    "admin creates": 200,
    "admin lists": 200,
    "admin sets inventories": 200,
    "admin allocates": 204,
    "member lists": 403,
    "member usages": 200,
    "member other usages": 403,
    "reader lists": 403,
    "reader usages": 200,
    "system reader lists": 403,
    "revoked token": 401,
    "expired token": 401,
    "used token": 200,
    "used, then revoked token (cached)": 200,
    "app cred lists": 403,  # the rules let it through; Placement's policy refuses a member
    "app cred shows": 403,
    "app cred usages": 401,
    "app cred creates": 401,
}


def check_expected(seen: list[Any]) -> None:
    statuses = {label: status for label, status, _, _ in seen}
    for label, status in EXPECTED.items():
        assert statuses[label] == status, f"{label}: {statuses[label]} != {status}"


def test_placement_behind_keystonemiddleware_and_authmw(
    catalog_keystone: Any, tokens: Tokens, placements: Any
) -> None:
    ksm, amw = placements(authtoken(catalog_keystone))
    seen = compare(ksm, amw, tokens)
    check_expected(seen)
    assert tokens.admin not in amw.log_text() and tokens.member not in amw.log_text()


def test_placement_with_memcached_killed_in_the_middle(
    catalog_keystone: Any, tokens: Tokens, placements: Any, memcached_server: MemcachedServer
) -> None:
    options = authtoken(
        catalog_keystone,
        memcached_servers=memcached_server.address,
        memcache_security_strategy="ENCRYPT",
        memcache_secret_key=MEMCACHE_KEY,
    )
    ksm, amw = placements(options)
    runs = {"n": 0}

    def between(label: str) -> None:
        # After the revocation steps (with memcached down keystonemiddleware has no
        # cache at all, authmw its in-process one: documented), memcached dies.
        if label == "app cred lists":
            memcached_server.stop()
        if label == "root, no token":
            runs["n"] += 1
            if runs["n"] == 2:  # the second server starts with memcached back, empty
                memcached_server.start()

    seen = compare(ksm, amw, tokens, between=between)
    check_expected(seen)
    assert not any(status >= 500 for _, status, _, _ in seen)
    warnings = [line for line in amw.log_text().splitlines() if "shared cache" in line]
    assert sum("unavailable" in line for line in warnings) == 1, warnings
