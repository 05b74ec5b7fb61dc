#!/usr/bin/env python3
"""Create the test identities in a Keystone started by start.sh.

Idempotent: looks everything up by name and creates only what is missing; a
user whose password or default project drifted is fixed. Standard library only.
Writes every id (and the passwords) to <state>/seed.json and prints it.

    python3 scripts/keystone/seed.py              # seed (about 3 s), print seed.json
    python3 scripts/keystone/seed.py --if-needed  # quick exit when seed.json is current

Environment (all optional): AUTHMW_KEYSTONE_HOME / AUTHMW_KEYSTONE_STATE_DIR
(as in start.sh), AUTHMW_KEYSTONE_AUTH_URL (default: <state>/keystone.url),
AUTHMW_KEYSTONE_ADMIN_PASSWORD [admin-secret].

Bootstrap (start.sh) already made domain Default, project admin, user admin
(admin on project admin and on the system) and the roles admin > manager >
member > reader (implied) and service.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# Bump when the data below changes, so `--if-needed` seeds again.
SEED_VERSION = 1

DOMAINS = {
    "demo": "A customer domain",
    "smartcity": "FIWARE-style service (Fiware-Service: smartcity)",
}
# project name -> domain name (project names are unique across all domains here)
PROJECTS = {
    "alpha": "Default",
    "service": "Default",
    "demo-project": "demo",
    "demo-other": "demo",
    "/gardens": "smartcity",  # FIWARE service path
    "/parks": "smartcity",
}
# name, domain, password, default project, grants (kind, target, role); kind
# is "project" (target: project name), "domain" (domain name) or "system" ("all").
# admin implies manager, member and reader: tokens list the implied roles too.
USERS: list[tuple[str, str, str, str | None, list[tuple[str, str, str]]]] = [
    (
        "demo-user",
        "demo",
        "demo-secret",
        None,
        [
            ("project", "demo-project", "member"),
            ("project", "demo-project", "reader"),
            ("domain", "demo", "reader"),  # so it can get a domain-scoped token
        ],
    ),
    ("demo-reader", "demo", "demo-reader-secret", None, [("project", "demo-project", "reader")]),
    (
        "demo-admin",
        "demo",
        "demo-admin-secret",
        "demo-project",
        [
            ("project", "demo-project", "admin"),
            ("project", "demo-other", "member"),
            ("domain", "demo", "admin"),
        ],
    ),
    (
        "alice",
        "Default",
        "alice-secret",
        "alpha",
        [
            ("project", "alpha", "member"),
            ("project", "demo-other", "reader"),  # a grant across domains
        ],
    ),
    ("service-user", "Default", "service-secret", None, [("project", "service", "service")]),
    ("system-reader", "Default", "system-reader-secret", None, [("system", "all", "reader")]),
    (
        "gardener",
        "smartcity",
        "gardener-secret",
        "/gardens",
        [
            ("project", "/gardens", "member"),
            ("domain", "smartcity", "member"),
        ],
    ),
    ("norole", "Default", "norole-secret", None, []),  # can only get unscoped tokens
]
APP_CRED_USER = "service-user"
APP_CRED_NAME = "authmw-tests"
APP_CRED_PROJECT = "service"


def _abspath(p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(os.getcwd(), p)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATE = _abspath(
    os.environ.get("AUTHMW_KEYSTONE_STATE_DIR")
    or os.path.join(
        os.environ.get("AUTHMW_KEYSTONE_HOME") or os.path.join(REPO, ".cache", "keystone"), "state"
    )
)
ADMIN_PASSWORD = os.environ.get("AUTHMW_KEYSTONE_ADMIN_PASSWORD", "admin-secret")


def _auth_url() -> str:
    if os.environ.get("AUTHMW_KEYSTONE_AUTH_URL"):
        return os.environ["AUTHMW_KEYSTONE_AUTH_URL"].rstrip("/")
    try:
        with open(os.path.join(STATE, "keystone.url")) as f:
            return f.read().strip()
    except OSError:
        raise SystemExit(
            f"seed: no {STATE}/keystone.url; start Keystone first (scripts/keystone/start.sh)"
        ) from None


URL = _auth_url()


def call(
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    ok: tuple[int, ...] = (200, 201, 204),
) -> tuple[int, Any, Any]:
    """Return (status, headers, json-or-None); exit on a status not in ok."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    # URL is Keystone's http:// address from start.sh (or the environment).
    req = urllib.request.Request(URL + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    if status not in ok:
        raise SystemExit(f"seed: {method} {path} -> {status} {raw[:300]}")
    return status, hdrs, (json.loads(raw) if raw else None)


def token_for(
    identity: dict[str, Any], scope: Any = None, ok: tuple[int, ...] = (201,)
) -> str | None:
    body: dict[str, Any] = {"auth": {"identity": identity}}
    if scope is not None:
        body["auth"]["scope"] = scope
    status, hdrs, _ = call("POST", "/auth/tokens", body, ok=ok)
    return hdrs["X-Subject-Token"] if status == 201 else None


def password_identity(user_id: str, password: str) -> dict[str, Any]:
    return {"methods": ["password"], "password": {"user": {"id": user_id, "password": password}}}


def app_cred_identity(cred_id: str, secret: str) -> dict[str, Any]:
    return {
        "methods": ["application_credential"],
        "application_credential": {"id": cred_id, "secret": secret},
    }


def read_previous() -> dict[str, Any]:
    try:
        with open(os.path.join(STATE, "seed.json")) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return {}


def is_current(prev: dict[str, Any]) -> bool:
    """seed.json matches this script and this server's database."""
    if prev.get("seed_version") != SEED_VERSION or prev.get("auth_url") != URL:
        return False
    try:
        svc = prev["users"][APP_CRED_USER]
        cred = prev["application_credential"]
        scope = {"project": {"id": prev["projects"][APP_CRED_PROJECT]["id"]}}
    except KeyError:
        return False
    return (
        token_for(password_identity(svc["id"], svc["password"]), scope, ok=(201, 401)) is not None
        and token_for(app_cred_identity(cred["id"], cred["secret"]), ok=(201, 401)) is not None
    )


def seed(prev: dict[str, Any]) -> dict[str, Any]:
    admin_tok = token_for(
        {
            "methods": ["password"],
            "password": {
                "user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}
            },
        },
        {"system": {"all": True}},
    )
    assert admin_tok

    def find_or_create(
        collection: str, key: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[Any, bool]:
        _, _, found = call("GET", f"/{collection}?{urllib.parse.urlencode(query)}", token=admin_tok)
        if found[collection]:
            return found[collection][0], False
        _, _, made = call("POST", "/" + collection, {key: body}, token=admin_tok)
        return made[key], True

    out: dict[str, Any] = {
        "seed_version": SEED_VERSION,
        "auth_url": URL,
        "created": [],
        "admin": {
            "name": "admin",
            "password": ADMIN_PASSWORD,
            "domain": "Default",
            "project": "admin",
        },
        "roles": {},
        "domains": {"Default": "default"},
        "projects": {},
        "users": {},
    }

    _, _, roles = call("GET", "/roles", token=admin_tok)
    role_ids = {r["name"]: r["id"] for r in roles["roles"] if not r.get("domain_id")}
    out["roles"] = role_ids

    for name, description in DOMAINS.items():
        dom, created = find_or_create(
            "domains",
            "domain",
            {"name": name},
            {"name": name, "description": description, "enabled": True},
        )
        out["domains"][name] = dom["id"]
        if created:
            out["created"].append("domain " + name)

    for name, dom_name in [("admin", "Default"), *PROJECTS.items()]:
        dom_id = out["domains"][dom_name]
        proj, created = find_or_create(
            "projects",
            "project",
            {"name": name, "domain_id": dom_id},
            {"name": name, "domain_id": dom_id, "description": "authmw tests"},
        )
        out["projects"][name] = {
            "id": proj["id"],
            "name": name,
            "domain": dom_name,
            "domain_id": dom_id,
        }
        if created:
            out["created"].append("project " + name)

    for name, dom_name, password, default_project, grants in USERS:
        dom_id = out["domains"][dom_name]
        default_project_id = out["projects"][default_project]["id"] if default_project else None
        want = {"name": name, "domain_id": dom_id, "password": password, "enabled": True}
        if default_project_id:
            want["default_project_id"] = default_project_id
        user, created = find_or_create("users", "user", {"name": name, "domain_id": dom_id}, want)
        if created:
            out["created"].append("user " + name)
        else:
            fix: dict[str, Any] = {}
            if not user.get("enabled", True):
                fix["enabled"] = True
            if user.get("default_project_id") != default_project_id:
                fix["default_project_id"] = default_project_id
            if fix:
                call("PATCH", "/users/" + user["id"], {"user": fix}, token=admin_tok)
            if (
                token_for(password_identity(user["id"], password), "unscoped", ok=(201, 401))
                is None
            ):
                # A password change revokes the user's tokens: only when needed.
                call(
                    "PATCH",
                    "/users/" + user["id"],
                    {"user": {"password": password}},
                    token=admin_tok,
                )
                out["created"].append("password reset for " + name)
        for kind, target, role in grants:
            rid = role_ids[role]
            if kind == "system":
                path = "/system/users/{}/roles/{}".format(user["id"], rid)
            elif kind == "domain":
                path = "/domains/{}/users/{}/roles/{}".format(
                    out["domains"][target], user["id"], rid
                )
            else:
                path = "/projects/{}/users/{}/roles/{}".format(
                    out["projects"][target]["id"], user["id"], rid
                )
            call("PUT", path, token=admin_tok)  # idempotent
        out["users"][name] = {
            "id": user["id"],
            "name": name,
            "domain": dom_name,
            "domain_id": dom_id,
            "password": password,
            "default_project": default_project,
            "grants": [list(g) for g in grants],
        }

    out["application_credential"] = application_credential(out, prev.get("application_credential"))
    return out


def application_credential(out: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    """The service user's application credential; its secret is only shown at creation."""
    if (
        prev
        and prev.get("name") == APP_CRED_NAME
        and token_for(app_cred_identity(prev["id"], prev["secret"]), ok=(201, 401))
    ):
        return prev
    svc = out["users"][APP_CRED_USER]
    tok = token_for(
        password_identity(svc["id"], svc["password"]),
        {"project": {"id": out["projects"][APP_CRED_PROJECT]["id"]}},
    )
    base = "/users/{}/application_credentials".format(svc["id"])
    _, _, found = call(
        "GET", base + "?" + urllib.parse.urlencode({"name": APP_CRED_NAME}), token=tok
    )
    for cred in found["application_credentials"]:
        call("DELETE", "{}/{}".format(base, cred["id"]), token=tok)
    _, _, made = call(
        "POST",
        base,
        {
            "application_credential": {
                "name": APP_CRED_NAME,
                "description": "service identity for authmw tests",
                "roles": [{"name": "service"}],
            }
        },
        token=tok,
    )
    cred = made["application_credential"]
    out["created"].append("application credential " + APP_CRED_NAME)
    return {
        "id": cred["id"],
        "name": APP_CRED_NAME,
        "secret": cred["secret"],
        "user": APP_CRED_USER,
        "project": APP_CRED_PROJECT,
        "roles": ["service"],
    }


def main(argv: list[str]) -> int:
    if not os.path.isdir(STATE):
        raise SystemExit(f"seed: no state dir {STATE}; start Keystone first")
    with open(os.path.join(STATE, ".seed.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test sessions seed one at a time
        prev = read_previous()
        if "--if-needed" in argv and is_current(prev):
            data = prev
        else:
            data = seed(prev)
            tmp = os.path.join(STATE, "seed.json.tmp")
            with open(tmp, "w") as f:
                f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, os.path.join(STATE, "seed.json"))
    if "--quiet" not in argv:
        print(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
