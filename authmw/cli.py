"""The ``authmw`` command: manage local API tokens, check a token, run the demo, serve.

Settings come from options or environment variables:

- ``--db URL`` / ``AUTHMW_DB``: the token store, ``sqlite:///authmw-tokens.db``
  (a file in the working directory) unless given; ``postgresql://...`` works too.
- ``AUTHMW_PEPPER``: the store's HMAC pepper, if it was created with one
  (never an option, so it stays out of shell history and ``ps``); or
  ``AUTHMW_PEPPERS``, a JSON object of pepper ids to secrets, newest last.
- ``AUTHMW_MAX_TTL``: longest lifetime of new tokens (default ``365d``;
  ``none`` allows tokens that never expire, with ``--ttl never``).
- ``authmw check`` reads the token from standard input (``authmw check -``,
  or no TOKEN when stdin is not a terminal) or from ``AUTHMW_TOKEN``; a
  TOKEN argument works but is visible in ``ps`` and shell history (a
  warning says so). It uses Keystone when ``--auth-url`` /
  ``AUTHMW_AUTH_URL`` is set; every Keystone option ``--some-option`` can be
  given as ``AUTHMW_SOME_OPTION``.

Exit status: 0 success, 1 a negative answer (invalid token, unknown token
id), 2 a usage error or an unreachable store / identity service.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ._cli_store import Failure, env, open_store, when
from ._cli_tokens import add_parser as add_token_parser
from .errors import AuthError, IdentityServiceUnavailable, InvalidToken

if TYPE_CHECKING:
    from .identity import Identity
    from .validators.base import Validator

__all__ = ["main"]

_FROM_STDIN = "-"
_TOKEN_ENV = "AUTHMW_TOKEN"  # noqa: S105 - the variable's name, not a secret
_ARGV_WARNING = (
    "authmw: warning: a token on the command line is visible to other users (ps, /proc) "
    f"and kept in shell history; pipe it to 'authmw check -' or set {_TOKEN_ENV} instead"
)

# Keystone options of `authmw check` (option and KeystoneValidator keyword, help). Secrets
# come only from the environment, never from the command line (shell history, ps).
_KEYSTONE_SECRETS = ("password", "application_credential_secret", "static_token")
_KEYSTONE_OPTIONS = (
    ("username", "service user name"),
    ("user-id", "service user id"),
    ("user-domain-name", "service user's domain name"),
    ("user-domain-id", "service user's domain id"),
    ("project-name", "service project name"),
    ("project-id", "service project id"),
    ("project-domain-name", "service project's domain name"),
    ("project-domain-id", "service project's domain id"),
    ("domain-name", "service domain scope (name)"),
    ("domain-id", "service domain scope (id)"),
    ("system-scope", "service system scope (all)"),
    ("application-credential-id", "application credential id"),
    ("application-credential-name", "application credential name"),
    ("cafile", "CA bundle for Keystone's TLS certificate"),
)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_Failure = Failure
_env = env
_open_store = open_store
_when = when


# -- check ----------------------------------------------------------------
def _keystone_settings(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    auth_url = args.auth_url or _env("AUTHMW_AUTH_URL")
    settings: dict[str, Any] = {}
    for option, _help in _KEYSTONE_OPTIONS:
        keyword = option.replace("-", "_")
        value = getattr(args, keyword) or _env("AUTHMW_" + keyword.upper())
        if value is not None:
            settings[keyword] = value
    for keyword in _KEYSTONE_SECRETS:
        value = _env("AUTHMW_" + keyword.upper())
        if value is not None:
            settings[keyword] = value
    if args.insecure or (_env("AUTHMW_INSECURE") or "").lower() in ("1", "true", "yes"):
        settings["insecure"] = True
    return auth_url, settings


def _check_validator(args: argparse.Namespace) -> Validator:
    """Keystone with --auth-url / AUTHMW_AUTH_URL, else the local store; not both."""
    if args.auth_url and args.db:
        raise _Failure("give --auth-url (Keystone) or --db (local store), not both")
    if not args.auth_url and not args.db and _env("AUTHMW_AUTH_URL") and _env("AUTHMW_DB"):
        raise _Failure("set AUTHMW_AUTH_URL (Keystone) or AUTHMW_DB (local store), not both")
    auth_url, settings = _keystone_settings(args)
    if args.db or auth_url is None:
        return _open_store(args, must_exist=True)
    from .validators.keystone import KeystoneValidator

    return KeystoneValidator(auth_url, **settings)


def _print_identity(identity: Identity) -> None:
    rows = [
        ("user", f"{identity.user_name or '-'} (id {identity.user_id})"),
        ("user domain", identity.user_domain_name or identity.user_domain_id or "-"),
        ("scope", identity.scope),
    ]
    if identity.project_id:
        rows.append(("project", f"{identity.project_name or '-'} (id {identity.project_id})"))
    if identity.domain_id:
        rows.append(("domain", f"{identity.domain_name or '-'} (id {identity.domain_id})"))
    if identity.system_scope:
        rows.append(("system", identity.system_scope))
    rows += [
        ("roles", ", ".join(identity.roles) or "-"),
        ("expires", _when(identity.expires_at)),
        ("audit ids", ", ".join(identity.audit_ids) or "-"),
    ]
    if identity.token_scopes:
        rows.append(("token scopes", ", ".join(identity.token_scopes)))
    limits = identity.restrictions
    if "methods" in limits:
        rows.append(("methods", ", ".join(limits["methods"])))
    if "ips" in limits:
        rows.append(("networks", ", ".join(limits["ips"])))
    if "idle" in limits:
        rows.append(("idle time", f"{limits['idle']['ttl']:g} s of no use"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name + ':':<{width + 1}} {value}")


def _check_token(args: argparse.Namespace) -> tuple[str, bool]:
    """The token to check, and whether it came from the command line.

    TOKEN, or ``-`` for standard input; without it, ``AUTHMW_TOKEN``, else
    standard input unless that is a terminal.
    """
    given: str | None = args.token
    if given is not None and given != _FROM_STDIN:
        return given, True
    if given is None:
        from_env = _env(_TOKEN_ENV)
        if from_env is not None:
            return from_env.strip(), False
        if sys.stdin is None or sys.stdin.isatty():
            raise _Failure(
                f"no token: pipe it to 'authmw check -' or set {_TOKEN_ENV} "
                "(a TOKEN argument shows in ps and shell history)"
            )
    token = sys.stdin.readline().strip() if sys.stdin is not None else ""
    if not token:
        raise _Failure("no token on standard input")
    return token, False


def _cmd_check(args: argparse.Namespace) -> int:
    token, on_command_line = _check_token(args)
    validator = _check_validator(args)
    rejection: InvalidToken | None = None
    try:
        from .store import LocalTokenStore

        if isinstance(validator, LocalTokenStore):
            # A check is not a use: it must not keep an idle token alive.
            identity = validator.validate(token, record_use=False)
        else:
            identity = validator.validate(token)
    except InvalidToken as exc:
        rejection = exc
    finally:
        close = getattr(validator, "close", None)
        if close is not None:
            close()
    # With an answer only: an error (status 2) stays one line.
    if on_command_line:
        print(_ARGV_WARNING, file=sys.stderr)
    if rejection is not None:
        print(f"invalid token: {rejection}", file=sys.stderr)
        return 1
    refused = _request_refusal(args, identity)
    if refused is not None:
        print(f"refused: {refused.message} (reason: {refused.reason})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(identity.to_dict(), indent=2))
    else:
        print("valid token")
        _print_identity(identity)
    return 0


def _request_refusal(args: argparse.Namespace, identity: Identity) -> Any:
    """What the token's restrictions say of a request with ``--method``/``--client``
    (those not given are not checked), or None."""
    from .restrictions import RequestFacts, refusal

    limits = {}
    if args.method is not None and "methods" in identity.restrictions:
        limits["methods"] = identity.restrictions["methods"]
    if args.client is not None and "ips" in identity.restrictions:
        limits["ips"] = identity.restrictions["ips"]
    request = RequestFacts((args.method or "GET").upper(), "/", args.client, False)
    return refusal(limits, request) if limits else None


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(directory=args.dir, port=args.port)


# -- parser ---------------------------------------------------------------
def _build_parser() -> argparse.ArgumentParser:
    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="token store: sqlite:///path.db, a file path or postgresql://... "
        "(default: $AUTHMW_DB or sqlite:///authmw-tokens.db)",
    )

    parser = _Parser(
        prog="authmw",
        description="Manage local API tokens, check tokens, run the demo.",
        epilog="Exit status: 0 ok, 1 invalid token or unknown id, 2 usage error or "
        "store / identity service unavailable.",
        parents=[db],
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"authmw {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log to stderr (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_token_parser(commands, db)

    check = commands.add_parser(
        "check",
        parents=[db],
        help="validate a token and print its identity",
        description="Validate a token with the local store, or with Keystone when --auth-url "
        f"or AUTHMW_AUTH_URL is set. Give the token on standard input ('authmw check -') or "
        f"in {_TOKEN_ENV}; with neither TOKEN nor {_TOKEN_ENV}, standard input is read unless "
        "it is a terminal. A TOKEN argument works but is visible to other users in ps and "
        "kept in shell history (a warning says so). "
        "Keystone secrets come from AUTHMW_PASSWORD, "
        "AUTHMW_APPLICATION_CREDENTIAL_SECRET or AUTHMW_STATIC_TOKEN. "
        "Exit status 0 valid, 1 invalid, 2 usage error or unavailable.",
    )
    check.add_argument(
        "token",
        metavar="TOKEN",
        nargs="?",
        help="- to read the token from stdin; the token itself is accepted, with a warning",
    )
    check.add_argument("--json", action="store_true", help="print the identity as JSON")
    check.add_argument(
        "--method", metavar="METHOD", help="also check the token may make this request (POST)"
    )
    check.add_argument(
        "--client", metavar="ADDRESS", help="also check the token may be used from this address"
    )
    check.add_argument("--auth-url", metavar="URL", help="Keystone URL (env AUTHMW_AUTH_URL)")
    for option, text in _KEYSTONE_OPTIONS:
        check.add_argument(f"--{option}", metavar="VALUE", help=text)
    check.add_argument("--insecure", action="store_true", help="do not verify Keystone's TLS")
    check.set_defaults(func=_cmd_check)

    demo = commands.add_parser(
        "demo",
        help="run a protected example API on 127.0.0.1 and print curl commands",
    )
    demo.add_argument(
        "--dir", metavar="DIR", help="keep the demo's token store here (default: a temp dir)"
    )
    demo.add_argument(
        "--port", type=int, default=8000, metavar="N", help="port (default 8000; 0 picks one)"
    )
    demo.set_defaults(func=_cmd_demo)

    login = _login_module()
    if login is not None:
        login.add_parser(commands)
    from .gateway import _serve

    _serve.add_parser(commands)
    return parser


def _login_module() -> Any:
    """helper module of ``authmw login``, when this installation has it."""
    if importlib.util.find_spec("authmw._cli_login") is None:
        return None
    try:
        return importlib.import_module("authmw._cli_login")
    except ImportError:  # its optional dependencies are missing: no login command
        return None


def _run(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        login = _login_module()
        if args.command == "login" and login is not None:
            return int(login.run(args))
        raise _Failure(f"unknown command {args.command!r}")
    return func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``authmw`` command line; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if "db" not in args:
        args.db = None
    _configure_logging(args.verbose)
    try:
        return _run(args)
    except _Failure as exc:
        _complain(str(exc))
        return exc.status
    except IdentityServiceUnavailable as exc:
        message = str(exc)
        _complain(message if "unavailable" in message else f"unavailable: {message}")
        return 2
    except (AuthError, ValueError, OSError) as exc:
        # ConfigurationError is both an AuthError and a ValueError.
        _complain(str(exc) or type(exc).__name__)
        return 2
    except KeyboardInterrupt:
        return 130


def _configure_logging(verbosity: int) -> None:
    if verbosity:
        logging.basicConfig(
            level=logging.DEBUG if verbosity > 1 else logging.INFO,
            format="authmw: %(levelname)s %(name)s: %(message)s",
        )
    else:
        # Errors reach the user as one line from main(); keep library warnings quiet.
        logging.getLogger("authmw").addHandler(logging.NullHandler())
        logging.getLogger("authmw").propagate = False


def _complain(message: str) -> None:
    print(f"authmw: error: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
