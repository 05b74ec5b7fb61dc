"""``authmw login``: a token from Keystone v3, Keystone v2.0 / Rackspace or a token-acquire API.

Prints the token and its expiry. Secrets (password, API key, application
credential secret, token to exchange) never come from the command line: they
are read from an environment variable, from the first line of stdin
(``--password-stdin``), or from a prompt when stdin is a terminal.

Other settings can come from the usual OpenStack variables (``OS_AUTH_URL``,
``OS_USERNAME``, ``OS_PROJECT_NAME``...). Exit status: 0 a token was printed,
1 the service refused the credentials, 2 a usage error or the service could
not be reached.

Used by :mod:`authmw.cli` through :func:`add_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timezone
from typing import Any

import httpx

from .client._base import AcquiredToken, AuthenticationFailed, TokenAuth
from .errors import ConfigurationError, IdentityServiceUnavailable

__all__ = ["add_parser", "run"]

PASSWORD_ENV = ("AUTHMW_PASSWORD", "OS_PASSWORD")
API_KEY_ENV = ("AUTHMW_API_KEY", "OS_API_KEY", "RAX_API_KEY")
APP_CRED_SECRET_ENV = ("AUTHMW_APPLICATION_CREDENTIAL_SECRET", "OS_APPLICATION_CREDENTIAL_SECRET")
TOKEN_ENV = ("AUTHMW_TOKEN", "OS_TOKEN")

# option -> environment variables tried when the option is not given
_ENV_DEFAULTS: dict[str, tuple[str, ...]] = {
    "auth_url": ("AUTHMW_AUTH_URL", "OS_AUTH_URL"),
    "username": ("OS_USERNAME",),
    "user_id": ("OS_USER_ID",),
    "user_domain_name": ("OS_USER_DOMAIN_NAME",),
    "user_domain_id": ("OS_USER_DOMAIN_ID",),
    "project_name": ("OS_PROJECT_NAME",),
    "project_id": ("OS_PROJECT_ID",),
    "project_domain_name": ("OS_PROJECT_DOMAIN_NAME",),
    "project_domain_id": ("OS_PROJECT_DOMAIN_ID",),
    "domain_name": ("OS_DOMAIN_NAME",),
    "domain_id": ("OS_DOMAIN_ID",),
    "system_scope": ("OS_SYSTEM_SCOPE",),
    "application_credential_id": ("OS_APPLICATION_CREDENTIAL_ID",),
    "application_credential_name": ("OS_APPLICATION_CREDENTIAL_NAME",),
    "tenant_id": ("OS_TENANT_ID",),
    "tenant_name": ("OS_TENANT_NAME",),
    "cafile": ("OS_CACERT",),
}
_V2_ENV_DEFAULTS: dict[str, tuple[str, ...]] = {"username": ("OS_USERNAME", "RAX_USERNAME")}


class _Usage(Exception):
    """A usage mistake: one line on stderr, exit status 2."""


def _env_value(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


# -- parser ---------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``login`` command (with ``v3``, ``v2`` and ``acquire``) to ``subparsers``."""
    login: argparse.ArgumentParser = subparsers.add_parser(
        "login",
        help="get a token from Keystone v3, Keystone v2.0/Rackspace or a token-acquire API",
        description="Obtain a token and print it with its expiry. Passwords and keys are read "
        f"from {PASSWORD_ENV[0]} (or --password-env VAR), --password-stdin or a prompt, "
        "never from the command line. Exit status: 0 ok, 1 credentials refused, "
        "2 usage error or service unreachable.",
    )
    kinds = login.add_subparsers(dest="login_kind", metavar="SERVICE", required=True)

    common = argparse.ArgumentParser(add_help=False)
    secret = common.add_argument_group("secrets (never on the command line)")
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password, API key or secret from this environment variable "
        f"(default: {', '.join(PASSWORD_ENV)}; API keys: {', '.join(API_KEY_ENV)})",
    )
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password/secret from stdin"
    )
    # Accepted only to refuse it without echoing the value (argparse would).
    common.add_argument("--password", help=argparse.SUPPRESS)
    out = common.add_argument_group("output")
    out.add_argument("--json", action="store_true", help='print {"token": ..., "expires_at": ...}')
    out.add_argument("-q", "--quiet", action="store_true", help="print only the token")
    http = common.add_argument_group("HTTP")
    http.add_argument("--cafile", metavar="PATH", help="CA bundle (env OS_CACERT)")
    http.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    http.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )

    v3 = kinds.add_parser(
        "v3",
        parents=[common],
        help="Keystone v3 (OpenStack, Open Telekom Cloud IAM, FIWARE)",
        description="POST /v3/auth/tokens with a password, a token or an application "
        "credential. Options default to the OS_* variables.",
    )
    v3.add_argument("--auth-url", metavar="URL", help="Keystone URL (env OS_AUTH_URL)")
    v3.add_argument("--username", metavar="NAME", help="user name (env OS_USERNAME)")
    v3.add_argument("--user-id", metavar="ID", help="user id (env OS_USER_ID)")
    v3.add_argument(
        "--user-domain-name", metavar="NAME", help="user's domain (env OS_USER_DOMAIN_NAME)"
    )
    v3.add_argument("--user-domain-id", metavar="ID", help="user's domain id")
    v3.add_argument("--project-name", metavar="NAME", help="project scope (env OS_PROJECT_NAME)")
    v3.add_argument("--project-id", metavar="ID", help="project scope by id")
    v3.add_argument("--project-domain-name", metavar="NAME", help="the project's domain")
    v3.add_argument("--project-domain-id", metavar="ID", help="the project's domain id")
    v3.add_argument("--domain-name", metavar="NAME", help="domain scope (FIWARE service)")
    v3.add_argument("--domain-id", metavar="ID", help="domain scope by id")
    v3.add_argument("--system-scope", metavar="all", help="system scope (all)")
    v3.add_argument("--unscoped", action="store_true", help="an unscoped token")
    v3.add_argument(
        "--application-credential-id", metavar="ID", help="log in with an application credential"
    )
    v3.add_argument(
        "--application-credential-name", metavar="NAME", help="application credential by name"
    )
    v3.add_argument(
        "--token-exchange",
        action="store_true",
        help=f"exchange a token ({TOKEN_ENV[0]}/{TOKEN_ENV[1]}, stdin or prompt) for a new one",
    )

    v2 = kinds.add_parser(
        "v2",
        parents=[common],
        help="Keystone v2.0 / Rackspace Cloud Identity",
        description="POST /v2.0/tokens with passwordCredentials, or with "
        "RAX-KSKEY:apiKeyCredentials when --api-key is given.",
    )
    v2.add_argument("--auth-url", metavar="URL", help="identity URL (env OS_AUTH_URL)")
    v2.add_argument("--username", metavar="NAME", help="user name (env OS_USERNAME)")
    v2.add_argument(
        "--api-key",
        action="store_true",
        help=f"authenticate with an API key (from {', '.join(API_KEY_ENV)}, stdin or prompt)",
    )
    v2.add_argument("--tenant-id", metavar="ID", help="tenant scope (env OS_TENANT_ID)")
    v2.add_argument("--tenant-name", metavar="NAME", help="tenant scope by name")

    acquire = kinds.add_parser(
        "acquire",
        parents=[common],
        help="a token-acquire API (POST {url}/api/auth/token/acquire)",
        description="POST {url}{acquire path} with username, password and an optional "
        "authSource. The token is not released: it is for you to use.",
    )
    acquire.add_argument("--url", metavar="URL", help="API root, e.g. https://ops/suite-api")
    acquire.add_argument("--username", metavar="NAME", help="user name (env AUTHMW_USERNAME)")
    acquire.add_argument("--auth-source", metavar="NAME", help="authentication source")
    acquire.add_argument(
        "--acquire-path",
        metavar="PATH",
        default="/api/auth/token/acquire",
        help="default /api/auth/token/acquire",
    )
    return login


# -- secrets --------------------------------------------------------------------------


def _read_secret(args: argparse.Namespace, what: str, env_names: Sequence[str]) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise _Usage(f"--password-env: variable {args.password_env} is not set or empty")
        return value
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise _Usage(f"--password-stdin: no {what} on stdin")
        return line
    value = _env_value(env_names)
    if value:
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            value = getpass.getpass(f"{what.capitalize()}: ")
        except EOFError:
            value = ""
        if not value:
            raise _Usage(f"no {what} given")
        return value
    raise _Usage(
        f"no {what}: set {env_names[0]} (or --password-env VAR), use --password-stdin, "
        "or run in a terminal to be prompted"
    )


# -- building the auth ------------------------------------------------------------------


def _opt(
    args: argparse.Namespace, name: str, env: dict[str, tuple[str, ...]] = _ENV_DEFAULTS
) -> str | None:
    value = getattr(args, name, None)
    if value:
        return str(value)
    return _env_value(env.get(name, ()))


def _v3_auth(args: argparse.Namespace) -> TokenAuth:
    from .client.keystone_v3 import (
        KeystoneV3ApplicationCredential,
        KeystoneV3Password,
        KeystoneV3Token,
    )

    auth_url = _opt(args, "auth_url")
    if not auth_url:
        raise _Usage("--auth-url is required (or set OS_AUTH_URL)")
    app_id = _opt(args, "application_credential_id")
    app_name = _opt(args, "application_credential_name")
    username, user_id = args.username, args.user_id
    if not (username or user_id):  # from the environment only when neither is given
        username = _opt(args, "username")
        user_id = None if username else _opt(args, "user_id")
    user_domain_name, user_domain_id = args.user_domain_name, args.user_domain_id
    if not (user_domain_name or user_domain_id):
        user_domain_name = _opt(args, "user_domain_name")
        user_domain_id = None if user_domain_name else _opt(args, "user_domain_id")
    user = {
        "username": username,
        "user_id": user_id,
        "user_domain_name": user_domain_name,
        "user_domain_id": user_domain_id,
    }
    if app_id or app_name:
        if args.token_exchange:
            raise _Usage("--token-exchange does not go with an application credential")
        secret = _read_secret(args, "application credential secret", APP_CRED_SECRET_ENV)
        if app_id:  # the id alone names the credential; a user from OS_* is not needed
            user = dict.fromkeys(user)
        return KeystoneV3ApplicationCredential(
            auth_url,
            application_credential_secret=secret,
            application_credential_id=app_id,
            application_credential_name=None if app_id else app_name,
            **user,
        )
    scope = _v3_scope(args)
    if args.token_exchange:
        token = _read_secret(args, "token", TOKEN_ENV)
        return KeystoneV3Token(auth_url, token=token, **scope)
    if not (username or user_id):
        raise _Usage("--username or --user-id is required (or set OS_USERNAME)")
    if user_id and not username:
        user["user_domain_name"] = user["user_domain_id"] = None  # an id needs no domain
    elif not (user_domain_name or user_domain_id):
        user["user_domain_name"] = "Default"
    password = _read_secret(args, "password", PASSWORD_ENV)
    return KeystoneV3Password(auth_url, password=password, **user, **scope)


def _v3_scope(args: argparse.Namespace) -> dict[str, Any]:
    if args.unscoped:
        return {"unscoped": True}
    # An explicit scope option wins over scope variables from the environment.
    explicit = [
        name
        for name in ("project_id", "project_name", "domain_id", "domain_name", "system_scope")
        if getattr(args, name, None)
    ]
    names = explicit or [
        name
        for name in ("project_id", "project_name", "domain_id", "domain_name", "system_scope")
        if _opt(args, name)
    ]
    scope: dict[str, Any] = {name: _opt(args, name) for name in names}
    if scope.get("project_id") and scope.get("project_name"):
        del scope["project_name"]
    if scope.get("project_name"):
        scope["project_domain_name"] = _opt(args, "project_domain_name")
        scope["project_domain_id"] = _opt(args, "project_domain_id")
        if not (scope["project_domain_name"] or scope["project_domain_id"]):
            scope["project_domain_name"] = _opt(args, "user_domain_name") or "Default"
        if scope["project_domain_name"] and scope["project_domain_id"]:
            del scope["project_domain_name"]
    return scope


def _v2_auth(args: argparse.Namespace) -> TokenAuth:
    from .client.keystone_v2 import KeystoneV2Auth

    auth_url = _opt(args, "auth_url")
    if not auth_url:
        raise _Usage("--auth-url is required (or set OS_AUTH_URL)")
    username = _opt(args, "username", _V2_ENV_DEFAULTS)
    if not username:
        raise _Usage("--username is required (or set OS_USERNAME)")
    tenant_id, tenant_name = args.tenant_id, args.tenant_name
    if not (tenant_id or tenant_name):  # from the environment only when neither is given
        tenant_id, tenant_name = _opt(args, "tenant_id"), _opt(args, "tenant_name")
    if args.api_key:
        key = _read_secret(args, "API key", API_KEY_ENV)
        return KeystoneV2Auth(
            auth_url, username=username, api_key=key, tenant_id=tenant_id, tenant_name=tenant_name
        )
    password = _read_secret(args, "password", PASSWORD_ENV)
    return KeystoneV2Auth(
        auth_url, username=username, password=password, tenant_id=tenant_id, tenant_name=tenant_name
    )


def _acquire_auth(args: argparse.Namespace) -> TokenAuth:
    from .client.acquire import TokenAcquireAuth

    url = args.url or _env_value(("AUTHMW_ACQUIRE_URL",))
    if not url:
        raise _Usage("--url is required (or set AUTHMW_ACQUIRE_URL)")
    username = args.username or _env_value(("AUTHMW_USERNAME",))
    if not username:
        raise _Usage("--username is required (or set AUTHMW_USERNAME)")
    password = _read_secret(args, "password", PASSWORD_ENV)
    return TokenAcquireAuth(
        url,
        username=username,
        password=password,
        auth_source=args.auth_source,
        acquire_path=args.acquire_path,
        release_path=None,
    )


_BUILDERS: dict[str, Callable[[argparse.Namespace], TokenAuth]] = {
    "v3": _v3_auth,
    "v2": _v2_auth,
    "acquire": _acquire_auth,
}


# -- running ----------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> bool | str:
    cafile = _opt(args, "cafile")
    if args.insecure and cafile:
        raise _Usage("--insecure conflicts with --cafile")
    if args.insecure:
        return False
    if cafile:
        if not os.path.isfile(cafile):
            raise _Usage(f"--cafile: no such file {cafile}")
        return cafile
    return True


def _print_token(args: argparse.Namespace, token: AcquiredToken) -> None:
    expires = (
        token.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if token.expires_at is not None
        else None
    )
    if args.json:
        print(json.dumps({"token": token.token, "expires_at": expires}))
    elif args.quiet:
        print(token.token)
    else:
        print(f"token: {token.token}")
        print(f"expires: {expires or 'unknown'}")


def _fail(message: str, status: int) -> int:
    print(f"authmw: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def run(args: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run ``authmw login`` with parsed ``args``; returns the exit status.

    ``transport`` replaces the network (tests).
    """
    if getattr(args, "password", None) is not None:
        return _fail(
            "passwords and keys are not accepted on the command line (they would stay in "
            f"shell history and ps): set {PASSWORD_ENV[0]}, use --password-stdin or the prompt",
            2,
        )
    try:
        if args.timeout is None or not args.timeout > 0:
            raise _Usage("--timeout must be > 0")
        verify = _verify(args)
        auth = _BUILDERS[args.login_kind](args)
        with httpx.Client(
            timeout=args.timeout, verify=verify, transport=transport, follow_redirects=False
        ) as client:
            token = auth.acquire(client)
    except _Usage as exc:
        return _fail(str(exc), 2)
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    except AuthenticationFailed as exc:
        return _fail(str(exc), 1)
    except IdentityServiceUnavailable as exc:
        return _fail(str(exc), 2)
    _print_token(args, token)
    return 0
