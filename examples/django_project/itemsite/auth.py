"""Where the example's tokens and rules come from (referenced by settings.AUTHMW)."""

from __future__ import annotations

import os

from authmw import Identity, InMemoryValidator, Validator
from authmw.contrib import validator_from_env
from authmw.policy import Policy

RULES = {
    "items:list": "",  # any authenticated caller
    "items:create": "role:member",
    "items:delete": "role:admin and project_id:%(project_id)s",
}

DEMO_TOKENS = {  # token: (user, project, roles)
    "demo-reader-token": ("reader", "demo-project", ("reader",)),
    "demo-member-token": ("member", "demo-project", ("member", "reader")),
    "demo-admin-token": ("admin", "demo-project", ("admin", "member", "reader")),
    "other-admin-token": ("other-admin", "other-project", ("admin", "member", "reader")),
}


def demo_validator() -> InMemoryValidator:
    """Demo users for trying the API without an identity service."""
    return InMemoryValidator(
        {
            token: Identity(user_id=user, user_name=user, project_id=project, roles=roles)
            for token, (user, project, roles) in DEMO_TOKENS.items()
        }
    )


def make_validator() -> Validator:
    """Keystone (AUTHMW_AUTH_URL...), the local store (AUTHMW_DB) or the demo tokens."""
    if os.environ.get("AUTHMW_DB") and not os.environ.get("AUTHMW_AUTH_URL"):
        # The store instance the admin and the token API use: a revocation made
        # there drops the token from this middleware's cache at once.
        from authmw.contrib.django_admin import get_store

        store: Validator = get_store()
        return store
    return validator_from_env(default=demo_validator)


def load_policy() -> Policy:
    path = os.environ.get("AUTHMW_POLICY_FILE")
    return Policy.from_file(path, defaults=RULES) if path else Policy(RULES)
