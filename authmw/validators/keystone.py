"""Validate tokens against OpenStack Keystone's v3 API (also OTC IAM and FIWARE Keystone).

The validator authenticates itself as a service user (password, application
credential or a pre-issued token) and asks ``GET /v3/auth/tokens`` about each
user token. It does not cache: :class:`~authmw.cache.CachedValidator` (set up
by the middleware) does.

Logging: records carry token fingerprints only. httpcore logs response
headers at DEBUG and Keystone echoes the user's token in ``X-Subject-Token``;
authmw installs a filter on the ``httpx``/``httpcore.*`` loggers that replaces
token header values with digests. To silence them instead:
``logging.getLogger("httpcore").setLevel(logging.INFO)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

from .. import _checks
from ..client._base import TokenAuth
from ..client.keystone_v3 import (
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    keystone_v3_url,
)
from ..errors import ConfigurationError
from ..identity import SCOPE_FIELDS, Identity
from ._keystone_v3 import build_validation_request, interpret_validation_response
from ._remote import DEFAULT_TIMEOUT, RemoteValidator, _Step, given_service_auth, http_options
from ._revocation_follower import RevocationFollower
from .base import RevocationListener

__all__ = ["DEFAULT_TIMEOUT", "KeystoneValidator"]


class KeystoneValidator(RemoteValidator):
    """Validates tokens with Keystone v3 (``GET /v3/auth/tokens``).

    Service identity, one of:

    - ``auth``: any :class:`~authmw.client.TokenAuth` (e.g. a
      :class:`~authmw.client.KeystoneV3Password` with a special scope);
    - ``username`` (+ ``user_domain_name``/``user_domain_id``) or ``user_id``,
      with ``password`` and a scope (``project_id``, or ``project_name`` +
      ``project_domain_name``/``project_domain_id``, ``domain_id``/``domain_name``,
      ``system_scope="all"``);
    - ``application_credential_id`` (or ``_name`` + user) and
      ``application_credential_secret``;
    - ``static_token``: a pre-issued token, used as is.

    The user needs a role that may validate others' tokens (``service`` in
    Keystone's default policy, or admin / system reader).

    Answers: an :class:`Identity`; :class:`InvalidToken` (404, expired beyond
    ``expiry_leeway`` seconds, not token-shaped); :class:`IdentityServiceUnavailable`
    (5xx, network, TLS, timeout, malformed answer, service identity refused
    twice). Nothing else escapes. ``include_service_catalog`` asks Keystone for
    the catalog and puts it in ``Identity.service_catalog``.

    Application credentials with access rules: every validation tells Keystone
    that the rules will be enforced (``OpenStack-Identity-Access-Rules: 1``,
    as keystonemiddleware does), and the rules go into the identity's
    ``access_rules`` restriction, checked on every request against
    ``service_type`` (this service's type in the catalog, e.g. ``placement``;
    without it such tokens are refused, as keystonemiddleware refuses them).

    HTTP: one pooled :class:`httpx.Client`, and one :class:`httpx.AsyncClient`
    created in the running event loop (a new one if the loop changes).
    ``timeout`` (default :data:`DEFAULT_TIMEOUT`), ``http_connect_timeout``,
    ``http_request_max_retries`` (extra tries of a validation whose connection
    was refused or dropped; timeouts are not retried, and the service login is
    tried once per call), ``cafile``/``certfile``/``keyfile``/``insecure``.
    Call :meth:`close` / :meth:`aclose` at shutdown.
    """

    auth: TokenAuth
    service = "Keystone"
    refusal_hint = ": check that the service user may validate tokens (the 'service' role)"
    _log = logging.getLogger("authmw.keystone")

    def __init__(
        self,
        auth_url: str,
        *,
        auth: TokenAuth | None = None,
        username: str | None = None,
        user_id: str | None = None,
        password: str | None = None,
        user_domain_name: str | None = None,
        user_domain_id: str | None = None,
        project_id: str | None = None,
        project_name: str | None = None,
        project_domain_name: str | None = None,
        project_domain_id: str | None = None,
        domain_id: str | None = None,
        domain_name: str | None = None,
        system_scope: str | None = None,
        application_credential_id: str | None = None,
        application_credential_name: str | None = None,
        application_credential_secret: str | None = None,
        static_token: str | None = None,
        include_service_catalog: bool = False,
        service_type: str | None = None,
        revocation_poll_interval: float | None = None,
        expiry_leeway: float = 0.0,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 2,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        renew_margin: float = 60.0,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = keystone_v3_url(auth_url)
        self.include_service_catalog = bool(include_service_catalog)
        if service_type is not None and (
            not isinstance(service_type, str) or not service_type.strip()
        ):
            raise ConfigurationError(
                "service_type", f"must be a non-empty string, got {service_type!r}"
            )
        self.service_type = service_type.strip() if service_type is not None else None
        self.revocations: RevocationFollower | None = None
        if revocation_poll_interval is not None:
            interval = _checks.positive("revocation_poll_interval", revocation_poll_interval)
            self.revocations = RevocationFollower(self, interval)
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        super().__init__(expiry_leeway=expiry_leeway, clock=clock, **http_options(locals()))
        credentials = {
            "username": username,
            "user_id": user_id,
            "password": password,
            "user_domain_name": user_domain_name,
            "user_domain_id": user_domain_id,
            "project_id": project_id,
            "project_name": project_name,
            "project_domain_name": project_domain_name,
            "project_domain_id": project_domain_id,
            "domain_id": domain_id,
            "domain_name": domain_name,
            "system_scope": system_scope,
            "application_credential_id": application_credential_id,
            "application_credential_name": application_credential_name,
            "application_credential_secret": application_credential_secret,
            "static_token": static_token,
        }
        self.auth = _service_auth(self.base_url, auth, credentials, renew_margin, clock)

    def __repr__(self) -> str:
        return f"KeystoneValidator({self.base_url!r}, auth={self.auth!r})"

    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """With ``revocation_poll_interval``: hand Keystone's revocation events to
        ``listener`` (the middleware's cache registers itself with its first miss);
        polling starts now."""
        if self.revocations is not None:
            self.revocations.add_listener(listener)

    def close(self) -> None:
        """Close the blocking client and stop following revocation events."""
        if self.revocations is not None:
            self.revocations.close()
        super().close()

    def _build_request(
        self, token: str, credential: str | None, allow_expired: bool
    ) -> httpx.Request:
        assert credential is not None  # there is always a service identity
        return build_validation_request(
            self.base_url,
            credential,
            token,
            include_catalog=self.include_service_catalog,
            allow_expired=allow_expired,
        )

    def _parse_answer(self, status: int, body: bytes, token: str, allow_expired: bool) -> Identity:
        identity = self._identity(status, body, allow_expired)
        if (
            self.service_type
            and "access_rules" in identity.restrictions
            and identity.token_body is not None
            and "catalog" not in identity.token_body
        ):
            raise _CatalogNeeded
        return self._checked(identity)

    def _identity(self, status: int, body: bytes, allow_expired: bool) -> Identity:
        return interpret_validation_response(
            status,
            body,
            now=self._clock(),
            leeway=self.expiry_leeway,
            allow_expired=allow_expired,
            include_catalog=self.include_service_catalog,
            service_type=self.service_type,
        )

    def _checked(self, identity: Identity) -> Identity:
        """``identity``, after one WARNING per cause when its access rules will refuse it."""
        rules = identity.restrictions.get("access_rules")
        if rules is None:
            return identity
        if not self.service_type:
            self._warn_once(
                "service_type",
                "refusing tokens with application-credential access rules: set "
                "service_type (this service's type in the Keystone catalog) to enforce them",
            )
        elif not rules.get("in_catalog"):
            self._warn_once(
                "catalog",
                f"refusing tokens with access rules: service_type {self.service_type!r} "
                "is not a service type in their catalog",
            )
        return identity

    def _warn_once(self, what: str, message: str) -> None:
        with self._warn_lock:
            if what in self._warned:
                return
            self._warned.add(what)
        self._log.warning(message)

    def _flow(self, token: str, allow_expired: bool) -> Generator[_Step, Any, Identity]:
        self._check_token(token)
        try:
            return (
                yield from self._ask(token, allow_expired, self._build_request, self._parse_answer)
            )
        except _CatalogNeeded:
            # Validated without the catalog, but the access-rule check needs it
            # (keystonemiddleware would fail here): ask once more, with it.
            return (
                yield from self._ask(
                    token, allow_expired, self._build_catalog_request, self._parse_catalog_answer
                )
            )

    def _build_catalog_request(
        self, token: str, credential: str | None, allow_expired: bool
    ) -> httpx.Request:
        assert credential is not None
        return build_validation_request(
            self.base_url, credential, token, include_catalog=True, allow_expired=allow_expired
        )

    def _parse_catalog_answer(
        self, status: int, body: bytes, token: str, allow_expired: bool
    ) -> Identity:
        identity = self._checked(self._identity(status, body, allow_expired))
        if identity.token_body is None or "catalog" not in identity.token_body:
            return identity
        # Keep the identity as a validation without the catalog would give it.
        kept = {k: v for k, v in identity.token_body.items() if k != "catalog"}
        return identity.replace(token_body=kept)


class _CatalogNeeded(Exception):
    """An access-rule token was validated without the catalog the check needs."""


def _service_auth(
    base_url: str,
    auth: TokenAuth | None,
    credentials: dict[str, Any],
    renew_margin: float,
    clock: Callable[[], float],
) -> TokenAuth:
    given = given_service_auth(auth, credentials)
    if given is not None:
        return given
    del credentials["static_token"]
    secret = credentials.pop("application_credential_secret")
    cred_id = credentials.pop("application_credential_id")
    cred_name = credentials.pop("application_credential_name")
    if secret is not None or cred_id is not None or cred_name is not None:
        if secret is None:
            raise ConfigurationError(
                "application_credential_secret", "is needed with an application credential"
            )
        for name in ("password", *SCOPE_FIELDS):
            if credentials[name] is not None:
                raise ConfigurationError(
                    name, "does not go with an application credential (it has its own scope)"
                )
        return KeystoneV3ApplicationCredential(
            base_url,
            application_credential_secret=secret,
            application_credential_id=cred_id,
            application_credential_name=cred_name,
            username=credentials["username"],
            user_id=credentials["user_id"],
            user_domain_id=credentials["user_domain_id"],
            user_domain_name=credentials["user_domain_name"],
            renew_margin=renew_margin,
            clock=clock,
        )
    if credentials["password"] is None:
        raise ConfigurationError(
            "password",
            "no service identity: give username/user_id + password, "
            "application_credential_id + application_credential_secret, static_token or auth",
        )
    return KeystoneV3Password(base_url, renew_margin=renew_margin, clock=clock, **credentials)
