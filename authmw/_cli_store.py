"""``authmw token policy|peppers|retire-pepper``, and what every ``authmw`` command shares:
opening the store from the environment, durations, one-line failures."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .store import LocalTokenStore

__all__ = ["Failure", "add_store_parsers", "duration", "env", "finite", "open_store", "when"]


class Failure(Exception):
    """A message for stderr and an exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def duration(text: str) -> float | None:
    """argparse type: ``30d``, ``12h``, ``3600`` or ``never`` (None)."""
    from .store import parse_duration

    if text.strip().lower() == "never":
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite(text: str) -> float:
    seconds = duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError("give a duration (never is not one here)")
    return seconds


def _limit(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1, or none")
    return int(text)


def when(value: datetime | None, *, short: bool = False) -> str:
    if value is None:
        return "-" if short else "never"
    return value.strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%dT%H:%M:%SZ")


def open_store(args: argparse.Namespace, *, must_exist: bool) -> LocalTokenStore:
    """The store of ``--db`` / ``AUTHMW_DB``, with the peppers and limits of the environment."""
    from .store import DEFAULT_URL, LocalTokenStore
    from .store._backend import sqlite_path
    from .store._tokens import pepper_from_environment

    url = args.db or env("AUTHMW_DB") or DEFAULT_URL
    path = sqlite_path(url)
    if must_exist and path is not None and not os.path.exists(path):
        raise Failure(
            f"no token store at {path} (issue a token first, or pass --db URL / set AUTHMW_DB)"
        )
    max_ttl_text = env("AUTHMW_MAX_TTL")
    max_ttl: float | None = 365 * 86400.0
    if max_ttl_text is not None:
        if max_ttl_text.strip().lower() == "none":
            max_ttl = None
        else:
            try:
                max_ttl = duration(max_ttl_text)
            except argparse.ArgumentTypeError as exc:
                raise ConfigurationError("AUTHMW_MAX_TTL", str(exc)) from None
    return LocalTokenStore(
        url,
        pepper=pepper_from_environment(os.environ),
        max_ttl=max_ttl,
        require_expiry=max_ttl is not None,
        watch_interval=None,  # a command does not stay to hear of changes
    )


def _cmd_policy(args: argparse.Namespace) -> int:
    from .store import format_duration

    changes: dict[str, Any] = {}
    for name in ("max_tokens_per_user", "max_lifetime"):
        if name in args:  # given (the default is argparse.SUPPRESS)
            changes[name] = getattr(args, name)
    with open_store(args, must_exist=bool(not changes)) as store:
        policy = store.set_policy(**changes) if changes else store.policy
    lifetime = policy.max_lifetime
    print(f"max tokens per user: {policy.max_tokens_per_user or 'no limit'}")
    print(f"max lifetime:        {format_duration(lifetime) if lifetime else 'no limit'}")
    return 0


def _cmd_peppers(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        peppers = store.peppers()
    if args.json:
        print(json.dumps(peppers, indent=2))
        return 0
    if not peppers:
        print("this store uses no pepper")
    for p in peppers:
        state = "retired" if p["retired"] else ("newest" if p["newest"] else "in use")
        here = "configured" if p["configured"] else "not configured here"
        print(f"{p['id']}: {state}, {here}, {p['active_tokens']} active tokens")
    return 0


def _cmd_retire_pepper(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        try:
            count = store.retire_pepper(args.id)
        except LookupError as exc:
            raise Failure(str(exc), status=1) from None
    print(f"retired pepper {args.id}: {count} token{'s' if count != 1 else ''} revoked")
    return 0


def add_store_parsers(actions: Any, db: argparse.ArgumentParser) -> None:
    """Add ``policy``, ``peppers`` and ``retire-pepper`` to ``authmw token``."""
    policy = actions.add_parser(
        "policy", parents=[db], help="show or set the store's policy (kept in the database)"
    )
    policy.add_argument(
        "--max-tokens-per-user",
        type=_limit,
        default=argparse.SUPPRESS,
        metavar="N",
        help="active tokens a user may hold, or none",
    )
    policy.add_argument(
        "--max-lifetime",
        type=duration,
        default=argparse.SUPPRESS,
        metavar="DURATION",
        help="longest life of a token, also of those issued before (e.g. 90d), or never",
    )
    policy.set_defaults(func=_cmd_policy)

    peppers = actions.add_parser("peppers", parents=[db], help="the peppers the store knows")
    peppers.add_argument("--json", action="store_true", help="JSON output")
    peppers.set_defaults(func=_cmd_peppers)

    retire = actions.add_parser(
        "retire-pepper", parents=[db], help="revoke the tokens of a pepper and retire it"
    )
    retire.add_argument("id", metavar="ID", help="the pepper's id")
    retire.set_defaults(func=_cmd_retire_pepper)
