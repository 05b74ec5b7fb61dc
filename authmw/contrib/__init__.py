"""Framework integrations: Flask, Django (and DRF), Starlette, FastAPI.

Each submodule imports its framework; this package itself imports none, so
``import authmw`` never pulls a framework in. What the integrations share
lives here: turning a rule spec into a :class:`~authmw.policy.Requirement`
and an access failure into the status, headers and JSON body the
middleware itself would send.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

from ..errors import AuthError, ConfigurationError, Forbidden, NotAuthenticated
from ..headers import IDENTITY_KEY, RESPONSES_KEY
from ..identity import Identity
from ..policy import Policy, PolicyError, Requirement, RuleText, compile_rule
from ..responses import (
    DEFAULT_CHALLENGE,
    DEFAULT_RESPONSES,
    NOT_AUTHENTICATED,
    Rejection,
    Responses,
)
from ..validators.base import Validator

__all__ = [
    "DEFAULT_CHALLENGE",
    "IDENTITY_KEY",
    "RESPONSES_KEY",
    "PolicySpec",
    "RequirementSpec",
    "SpecResolver",
    "as_policy",
    "rejection_for",
    "resolver_for",
    "responses_in",
    "validator_from_env",
]

log = logging.getLogger("authmw.contrib")

NOT_AUTHENTICATED_MESSAGE: Final = NOT_AUTHENTICATED

PolicySpec: TypeAlias = "Policy | Mapping[str, RuleText] | str | os.PathLike[str] | None"
"""A Policy, a mapping of rules, or the path of a YAML/JSON policy file."""

RequirementSpec: TypeAlias = "str | Requirement"
"""A policy rule name, a policy-language expression, or a Requirement."""


def responses_in(request_state: Mapping[str, Any]) -> Responses:
    """The answers of the pipeline that handled this environ/scope (defaults without one)."""
    responses = request_state.get(RESPONSES_KEY)
    return responses if isinstance(responses, Responses) else DEFAULT_RESPONSES


def rejection_for(exc: AuthError, request_state: Mapping[str, Any]) -> Rejection:
    """401 (with ``WWW-Authenticate``), 403 or 503 for an access error, as the pipeline answers."""
    return responses_in(request_state).for_error(exc)


def as_policy(policy: PolicySpec) -> Policy | None:
    """A :class:`~authmw.policy.Policy` from a policy, a rules mapping or a file path."""
    if policy is None or isinstance(policy, Policy):
        return policy
    if isinstance(policy, Mapping):
        return Policy(policy)
    if isinstance(policy, (str, os.PathLike)):
        return Policy.from_file(policy)
    raise ConfigurationError(
        "policy", f"must be a Policy, a rules mapping or a file path, got {policy!r}"
    )


def _could_be_rule_name(spec: str) -> bool:
    return not any(c.isspace() for c in spec)


class SpecResolver:
    """A rule spec resolved once per policy (rule name first, then expression).

    Syntax errors in a spec that cannot be a rule name (it has spaces) are
    raised at once, when the decorator is applied. Anything else is resolved
    on first use against the policy in force; a spec that still cannot be
    resolved denies every request and is logged once.
    """

    __slots__ = ("_cache", "_lock", "spec")

    def __init__(self, spec: RequirementSpec) -> None:
        if not isinstance(spec, (str, Requirement)):
            raise TypeError(f"expected a rule name, expression or Requirement, got {spec!r}")
        self.spec = spec
        self._cache: dict[int, tuple[Policy | None, Requirement | None]] = {}
        self._lock = threading.Lock()
        if isinstance(spec, str) and not _could_be_rule_name(spec):
            try:
                compile_rule(spec)
            except PolicyError as exc:
                if "refers to rule" not in exc.detail:
                    raise

    def resolve(self, policy: Policy | None) -> Requirement | None:
        spec = self.spec
        if isinstance(spec, Requirement):
            return spec
        entry = self._cache.get(id(policy))
        if entry is not None and entry[0] is policy:
            return entry[1]
        requirement: Requirement | None
        try:
            requirement = policy.requirement(spec) if policy is not None else compile_rule(spec)
        except PolicyError as exc:
            log.error("access rule %r cannot be used (every request is denied): %s", spec, exc)
            requirement = None
        with self._lock:
            self._cache[id(policy)] = (policy, requirement)
        return requirement

    def authorize(
        self,
        policy: Policy | None,
        identity: Identity | None,
        target: Mapping[str, Any] | None = None,
    ) -> Identity:
        """Resolve and authorize; raises NotAuthenticated or Forbidden."""
        requirement = self.resolve(policy)
        if identity is None:
            raise NotAuthenticated(NOT_AUTHENTICATED)
        if requirement is None:
            raise Forbidden(f"not allowed: rule {self.spec!r} is not usable")
        return requirement.authorize(identity, target)

    def __repr__(self) -> str:
        return f"SpecResolver({self.spec!r})"


@functools.lru_cache(maxsize=1024)
def resolver_for(spec: RequirementSpec) -> SpecResolver:
    """A shared :class:`SpecResolver` per spec (for checks made inside views)."""
    return SpecResolver(spec)


# KeystoneValidator keywords settable as AUTHMW_<KEYWORD>, as in the ``authmw`` CLI.
_KEYSTONE_ENV: Final = (
    "username",
    "user_id",
    "password",
    "user_domain_name",
    "user_domain_id",
    "project_name",
    "project_id",
    "project_domain_name",
    "project_domain_id",
    "domain_name",
    "domain_id",
    "system_scope",
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
    "static_token",
    "cafile",
    "certfile",
    "keyfile",
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def validator_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    default: Callable[[], Validator] | None = None,
) -> Validator:
    """The validator the environment asks for (the ``authmw`` CLI's variable names).

    - ``AUTHMW_AUTH_URL``: Keystone, with the service account in
      ``AUTHMW_USERNAME``, ``AUTHMW_PASSWORD``, ``AUTHMW_USER_DOMAIN_NAME``,
      ``AUTHMW_PROJECT_NAME``, ``AUTHMW_PROJECT_DOMAIN_NAME`` (or
      ``AUTHMW_APPLICATION_CREDENTIAL_ID``/``_SECRET``, ...), ``AUTHMW_CAFILE``,
      ``AUTHMW_INSECURE``, ``AUTHMW_INCLUDE_SERVICE_CATALOG``;
    - ``AUTHMW_DB``: the local token store (``sqlite:///tokens.db``,
      ``postgresql://...``), with ``AUTHMW_PEPPER`` (or ``AUTHMW_PEPPERS``, a JSON
      object of pepper ids to secrets) if it was created with one;
    - neither: ``default()``, or :class:`~authmw.ConfigurationError`.
    """
    env = os.environ if environ is None else environ
    auth_url = env.get("AUTHMW_AUTH_URL") or None
    db_url = env.get("AUTHMW_DB") or None
    if auth_url and db_url:
        raise ConfigurationError("AUTHMW_DB", "set AUTHMW_AUTH_URL or AUTHMW_DB, not both")
    if auth_url:
        from ..validators.keystone import KeystoneValidator

        kwargs: dict[str, Any] = {
            name: env[f"AUTHMW_{name.upper()}"]
            for name in _KEYSTONE_ENV
            if env.get(f"AUTHMW_{name.upper()}")
        }
        for flag in ("insecure", "include_service_catalog"):
            value = env.get(f"AUTHMW_{flag.upper()}")
            if value:
                kwargs[flag] = value.strip().lower() in _TRUE
        return KeystoneValidator(auth_url, **kwargs)
    if db_url:
        from ..store import LocalTokenStore
        from ..store._tokens import pepper_from_environment

        return LocalTokenStore(db_url, pepper=pepper_from_environment(env))
    if default is None:
        raise ConfigurationError("AUTHMW_AUTH_URL", "set AUTHMW_AUTH_URL (Keystone) or AUTHMW_DB")
    return default()
