"""Keystone v3 token acquisition (OpenStack, Open Telekom Cloud IAM, FIWARE Keystone).

``POST {auth_url}/auth/tokens`` with the password, token or application
credential method; the token comes back in ``X-Subject-Token`` and its expiry
in the body's ``token.expires_at``. Scope (one of them, or none):

- ``project_id``, or ``project_name`` with ``project_domain_id``/``project_domain_name``
  (FIWARE "subservice": ``project_name="/gardens", project_domain_name="smartcity"``);
- ``domain_id`` or ``domain_name`` (FIWARE "service");
- ``system_scope="all"``;
- ``unscoped=True``: explicitly unscoped (Keystone otherwise scopes to the
  user's default project, if it has one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import ConfigurationError, IdentityServiceUnavailable
from ._base import AcquiredToken, TokenAuth, parse_timestamp, text_option, versioned_url

__all__ = [
    "KeystoneV3ApplicationCredential",
    "KeystoneV3Auth",
    "KeystoneV3Password",
    "KeystoneV3Token",
    "keystone_v3_url",
]


def keystone_v3_url(auth_url: str, option: str = "auth_url") -> str:
    """The v3 base URL (``…/v3``, no trailing slash) for ``auth_url``.

    Accepts ``http://host:5000``, ``http://host:5000/``, ``http://host:5000/v3``
    and ``…/identity/v3``; a v2.0 URL is a :class:`ConfigurationError`.
    """
    return versioned_url(
        auth_url,
        option,
        "must be the Keystone URL, e.g. http://keystone:5000/v3",
        "/v3",
        other="/v2.0",
        other_hint="is a v2.0 URL; use KeystoneV2Validator for v2.0",
    )


def _user(
    username: str | None,
    user_id: str | None,
    user_domain_id: str | None,
    user_domain_name: str | None,
) -> dict[str, Any]:
    username = text_option("username", username)
    user_id = text_option("user_id", user_id)
    user_domain_id = text_option("user_domain_id", user_domain_id)
    user_domain_name = text_option("user_domain_name", user_domain_name)
    if user_id and username:
        raise ConfigurationError("user_id", "give user_id or username, not both")
    if user_id:
        return {"id": user_id}
    if not username:
        raise ConfigurationError("username", "a username (with its domain) or a user_id is needed")
    if user_domain_id and user_domain_name:
        raise ConfigurationError("user_domain_id", "give user_domain_id or user_domain_name")
    if user_domain_id:
        return {"name": username, "domain": {"id": user_domain_id}}
    if user_domain_name:
        return {"name": username, "domain": {"name": user_domain_name}}
    raise ConfigurationError(
        "user_domain_name", f"user {username!r} needs user_domain_name or user_domain_id"
    )


def _scope(
    project_id: str | None,
    project_name: str | None,
    project_domain_id: str | None,
    project_domain_name: str | None,
    domain_id: str | None,
    domain_name: str | None,
    system_scope: str | None,
    unscoped: bool,
) -> dict[str, Any] | str | None:
    project_id = text_option("project_id", project_id)
    project_name = text_option("project_name", project_name)
    project_domain_id = text_option("project_domain_id", project_domain_id)
    project_domain_name = text_option("project_domain_name", project_domain_name)
    domain_id = text_option("domain_id", domain_id)
    domain_name = text_option("domain_name", domain_name)
    if system_scope is not None and system_scope != "all":
        raise ConfigurationError("system_scope", f"must be 'all', got {system_scope!r}")
    kinds = [
        name
        for name, given in (
            ("project", project_id or project_name),
            ("domain", domain_id or domain_name),
            ("system_scope", system_scope),
            ("unscoped", unscoped),
        )
        if given
    ]
    if len(kinds) > 1:
        raise ConfigurationError(kinds[1], f"conflicts with {kinds[0]}: give one scope")
    if project_id and project_name:
        raise ConfigurationError("project_id", "give project_id or project_name, not both")
    if project_domain_id and project_domain_name:
        raise ConfigurationError(
            "project_domain_id", "give project_domain_id or project_domain_name"
        )
    if domain_id and domain_name:
        raise ConfigurationError("domain_id", "give domain_id or domain_name, not both")
    if project_id:
        return {"project": {"id": project_id}}
    if project_name:
        if project_domain_id:
            return {"project": {"name": project_name, "domain": {"id": project_domain_id}}}
        if project_domain_name:
            return {"project": {"name": project_name, "domain": {"name": project_domain_name}}}
        raise ConfigurationError(
            "project_domain_name",
            f"project {project_name!r} needs project_domain_name or project_domain_id",
        )
    if domain_id:
        return {"domain": {"id": domain_id}}
    if domain_name:
        return {"domain": {"name": domain_name}}
    if system_scope:
        return {"system": {"all": True}}
    if unscoped:
        return "unscoped"
    return None


class KeystoneV3Auth(TokenAuth):
    """Base of the Keystone v3 methods; subclasses provide :meth:`identity_payload`.

    ``auth_url`` is the Keystone URL (``/v3`` is added if missing). Scope
    keywords as in the module docstring. ``include_catalog`` keeps the
    service catalog in the answer (``AcquiredToken.body``). Other keywords go
    to :class:`~authmw.client.TokenAuth`.
    """

    def __init__(
        self,
        auth_url: str,
        *,
        project_id: str | None = None,
        project_name: str | None = None,
        project_domain_id: str | None = None,
        project_domain_name: str | None = None,
        domain_id: str | None = None,
        domain_name: str | None = None,
        system_scope: str | None = None,
        unscoped: bool = False,
        include_catalog: bool = False,
        renew_margin: float = 60.0,
        retry_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(renew_margin=renew_margin, retry_on_401=retry_on_401, clock=clock)
        self.auth_url = keystone_v3_url(auth_url)
        self.scope = _scope(
            project_id,
            project_name,
            project_domain_id,
            project_domain_name,
            domain_id,
            domain_name,
            system_scope,
            unscoped,
        )
        self.include_catalog = bool(include_catalog)

    def identity_payload(self) -> dict[str, Any]:
        """The ``auth.identity`` object (methods and credentials)."""
        raise NotImplementedError

    def build_token_request(self) -> httpx.Request:
        auth: dict[str, Any] = {"identity": self.identity_payload()}
        if self.scope is not None:
            auth["scope"] = self.scope
        params = None if self.include_catalog else {"nocatalog": ""}
        return httpx.Request(
            "POST", self.auth_url + "/auth/tokens", params=params, json={"auth": auth}
        )

    def parse_token_response(self, response: httpx.Response) -> AcquiredToken:
        token = response.headers.get("X-Subject-Token")
        if not token:
            raise IdentityServiceUnavailable("Keystone answered without an X-Subject-Token")
        body = response.json()
        expires = body["token"].get("expires_at")
        return AcquiredToken(token, parse_timestamp(expires) if expires else None, body)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.auth_url!r}, scope={self.scope!r})"


class KeystoneV3Password(KeystoneV3Auth):
    """The password method: ``username`` + ``user_domain_name``/``user_domain_id``, or ``user_id``.

    Scope and other keywords as for :class:`KeystoneV3Auth`.
    """

    def __init__(
        self,
        auth_url: str,
        *,
        password: str,
        username: str | None = None,
        user_id: str | None = None,
        user_domain_id: str | None = None,
        user_domain_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(password, str) or not password:
            raise ConfigurationError("password", "must be a non-empty string")
        self._user = _user(username, user_id, user_domain_id, user_domain_name)
        self._password = password
        super().__init__(auth_url, **kwargs)

    def identity_payload(self) -> dict[str, Any]:
        return {
            "methods": ["password"],
            "password": {"user": {**self._user, "password": self._password}},
        }


class KeystoneV3Token(KeystoneV3Auth):
    """The token method: exchange ``token`` for a new one (typically with another scope)."""

    def __init__(self, auth_url: str, *, token: str, **kwargs: Any) -> None:
        token_ = text_option("token", token)
        if token_ is None:
            raise ConfigurationError("token", "must be a non-empty string")
        self._token = token_
        super().__init__(auth_url, **kwargs)

    def identity_payload(self) -> dict[str, Any]:
        return {"methods": ["token"], "token": {"id": self._token}}


class KeystoneV3ApplicationCredential(KeystoneV3Auth):
    """An application credential: ``application_credential_id`` + secret, or its name + user.

    An application credential carries its own scope, so no scope keywords.
    """

    def __init__(
        self,
        auth_url: str,
        *,
        application_credential_secret: str,
        application_credential_id: str | None = None,
        application_credential_name: str | None = None,
        username: str | None = None,
        user_id: str | None = None,
        user_domain_id: str | None = None,
        user_domain_name: str | None = None,
        include_catalog: bool = False,
        renew_margin: float = 60.0,
        retry_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(application_credential_secret, str) or not application_credential_secret:
            raise ConfigurationError("application_credential_secret", "must be a non-empty string")
        cred_id = text_option("application_credential_id", application_credential_id)
        cred_name = text_option("application_credential_name", application_credential_name)
        if cred_id and cred_name:
            raise ConfigurationError(
                "application_credential_id",
                "give application_credential_id or application_credential_name, not both",
            )
        credential: dict[str, Any]
        if cred_id:
            credential = {"id": cred_id}
        elif cred_name:
            credential = {
                "name": cred_name,
                "user": _user(username, user_id, user_domain_id, user_domain_name),
            }
        else:
            raise ConfigurationError(
                "application_credential_id",
                "an application_credential_id (or name + user) is needed",
            )
        self._credential = {**credential, "secret": application_credential_secret}
        super().__init__(
            auth_url,
            include_catalog=include_catalog,
            renew_margin=renew_margin,
            retry_on_401=retry_on_401,
            clock=clock,
        )

    def identity_payload(self) -> dict[str, Any]:
        return {
            "methods": ["application_credential"],
            "application_credential": dict(self._credential),
        }
