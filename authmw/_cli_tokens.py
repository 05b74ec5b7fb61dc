"""``authmw token ...``: issue, list, show, rotate, revoke and purge local tokens.
Part of :mod:`authmw.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ._cli_store import Failure, add_store_parsers, duration, finite, open_store, when

if TYPE_CHECKING:
    from .store import TokenRecord

__all__ = ["add_parser"]

DEFAULT_TTL = "30d"


def _restrictions(record: TokenRecord) -> str:
    parts = []
    if record.read_only:
        parts.append("read-only")
    if record.allowed_ips:
        parts.append("from " + " ".join(record.allowed_ips))
    if record.idle_ttl is not None:
        from .store import format_duration

        parts.append(f"idle {format_duration(record.idle_ttl)}")
    if record.scopes:
        parts.append("scopes " + " ".join(record.scopes))
    return "; ".join(parts) or "-"


def _print_record(record: TokenRecord, max_lifetime: float | None) -> None:
    rows = [
        ("id", record.id),
        ("status", record.status(max_lifetime=max_lifetime)),
        ("user", f"{record.user_name or '-'} (id {record.user_id})"),
        ("user domain", record.user_domain_name or record.user_domain_id or "-"),
        ("scope", record.scope),
    ]
    if record.project_id:
        rows.append(("project id", record.project_id))
        rows.append(
            ("project domain", record.project_domain_name or record.project_domain_id or "-")
        )
    if record.domain_id:
        rows.append(("domain id", record.domain_id))
    rows += [
        ("roles", ", ".join(record.roles) or "-"),
        ("token scopes", ", ".join(record.scopes) or "-"),
        ("read-only", "yes" if record.read_only else "no"),
        ("networks", ", ".join(record.allowed_ips) or "any"),
        ("description", record.description or "-"),
        ("created", when(record.created_at)),
        ("expires", when(record.effective_expiry(max_lifetime))),
    ]
    if record.idle_ttl is not None:
        rows.append(("idle after", when(record.idle_deadline())))
    rows += [
        ("revoked", when(record.revoked_at) if record.revoked_at else "-"),
        ("rotated", when(record.rotated_at) if record.rotated_at else "-"),
        ("last used", when(record.last_used_at) if record.last_used_at else "-"),
    ]
    if record.pepper_id is not None:
        rows.append(("pepper", record.pepper_id))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name + ':':<{width + 1}} {value}")


def _record_json(record: TokenRecord, max_lifetime: float | None) -> dict[str, Any]:
    data = record.to_dict()
    data["status"] = record.status(max_lifetime=max_lifetime)
    expiry, idle = record.effective_expiry(max_lifetime), record.idle_deadline()
    data["effective_expires_at"] = None if expiry is None else expiry.isoformat()
    data["idle_deadline"] = None if idle is None else idle.isoformat()
    return data


def _print_secret(record: TokenRecord, token: str, quiet: bool) -> None:
    if quiet:
        print(token)
        return
    print(f"id:      {record.id}")
    print(f"token:   {token}")
    print(f"user:    {record.user_name or record.user_id}")
    print(f"scope:   {record.scope}")
    print(f"roles:   {', '.join(record.roles) or '-'}")
    print(f"limits:  {_restrictions(record)}")
    print(f"expires: {when(record.expires_at)}")
    print(
        "Copy the token now: it is shown only this once (the store keeps only its hash).",
        file=sys.stderr,
    )


# -- commands ---------------------------------------------------------------
def _cmd_issue(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=False) as store:
        issued = store.issue(
            user_id=args.user_id,
            user_name=args.user,
            user_domain_id=args.user_domain_id or args.user_domain,
            user_domain_name=args.user_domain,
            project_id=args.project_id,
            project_name=args.project,
            project_domain_id=args.project_domain_id or args.project_domain,
            project_domain_name=args.project_domain,
            domain_id=args.domain_id,
            domain_name=args.domain,
            system_scope=args.system,
            roles=args.role,
            description=args.description or "",
            ttl=args.ttl,
            scopes=args.scope,
            read_only=args.read_only,
            allowed_ips=args.allow_ip,
            idle_ttl=args.idle_ttl,
        )
    _print_secret(issued.record, issued.token, args.quiet)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        records = store.list_tokens(
            user=args.user, include_inactive=args.all, expiring_within=args.expiring
        )
        lifetime = store.policy.max_lifetime
    if args.json:
        print(json.dumps([_record_json(r, lifetime) for r in records], indent=2))
        return 0
    if not records:
        print(
            "no tokens"
            + (" (use --all to include revoked and expired ones)" if not args.all else "")
        )
        return 0
    header = ("ID", "USER", "SCOPE", "ROLES", "EXPIRES", "LAST USED", "STATUS", "LIMITS", "NOTE")
    table = [header]
    for r in records:
        description = r.description if len(r.description) <= 40 else r.description[:39] + "…"
        table.append(
            (
                r.id,
                r.user_name or r.user_id,
                r.scope,
                ",".join(r.roles) or "-",
                when(r.effective_expiry(lifetime), short=True),
                when(r.last_used_at, short=True),
                r.status(max_lifetime=lifetime),
                _restrictions(r),
                description,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        record = store.get(args.id)
        lifetime = store.policy.max_lifetime
    if record is None:
        raise Failure(f"no token with id {args.id!r}", status=1)
    if args.json:
        print(json.dumps(_record_json(record, lifetime), indent=2))
    else:
        _print_record(record, lifetime)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        if store.get(args.id) is None:
            raise Failure(f"no token with id {args.id!r}", status=1)
        if store.revoke(args.id):
            print(f"revoked token {args.id}")
        else:
            print(f"token {args.id} was already revoked")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    with open_store(args, must_exist=True) as store:
        try:
            issued = store.rotate(args.id, grace=args.grace)
        except LookupError as exc:
            raise Failure(str(exc), status=1) from None
    if not args.quiet:
        from .store import format_duration

        grace = format_duration(args.grace) if args.grace else "none: it no longer works"
        print(f"rotated token {args.id}; the old secret's grace period: {grace}", file=sys.stderr)
    _print_secret(issued.record, issued.token, args.quiet)
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    if not (args.expired or args.revoked):
        raise Failure("say what to purge: --expired and/or --revoked")
    with open_store(args, must_exist=True) as store:
        count = store.purge(
            expired=args.expired, revoked=args.revoked, older_than=args.older_than or 0.0
        )
    print(f"deleted {count} token{'s' if count != 1 else ''}")
    return 0


# -- parser -----------------------------------------------------------------
def add_parser(commands: Any, db: argparse.ArgumentParser) -> None:
    """Add ``token ...`` to the ``authmw`` parser (``db``: the ``--db`` parent)."""
    token = commands.add_parser(
        "token", help="issue, list, show, rotate, revoke and purge local tokens"
    )
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    issue = actions.add_parser("issue", parents=[db], help="issue a token (printed once)")
    issue.add_argument("--user", metavar="NAME", help="user name (also the id unless --user-id)")
    issue.add_argument("--user-id", metavar="ID", help="user id")
    issue.add_argument("--user-domain", metavar="NAME", help="user's domain (default: Default)")
    issue.add_argument("--user-domain-id", metavar="ID", help="user's domain id")
    scope = issue.add_mutually_exclusive_group()
    scope.add_argument("--project", metavar="NAME", help="project scope (name; also the id)")
    scope.add_argument("--domain", metavar="NAME", help="domain scope (name; also the id)")
    scope.add_argument("--system", metavar="all", choices=["all"], help="system scope")
    issue.add_argument("--project-id", metavar="ID", help="project id (with or without --project)")
    issue.add_argument(
        "--project-domain", metavar="NAME", help="project's domain (default: Default)"
    )
    issue.add_argument("--project-domain-id", metavar="ID", help="project's domain id")
    issue.add_argument("--domain-id", metavar="ID", help="domain id (with or without --domain)")
    issue.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="a role (repeat for more)"
    )
    issue.add_argument(
        "--ttl",
        type=duration,
        default=duration(DEFAULT_TTL),
        metavar="DURATION",
        help=f"lifetime: 30d, 12h, 90m, 3600 (seconds) or never (default: {DEFAULT_TTL})",
    )
    issue.add_argument("--description", metavar="TEXT", help="what the token is for")
    issue.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="SCOPE",
        help="a permission for token_scope: rules, e.g. items:read (repeat for more)",
    )
    issue.add_argument(
        "--read-only", action="store_true", help="only GET, HEAD and OPTIONS requests"
    )
    issue.add_argument(
        "--allow-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="only from this client network, e.g. 10.0.0.0/8 (repeat for more)",
    )
    issue.add_argument(
        "--idle-ttl",
        type=finite,
        metavar="DURATION",
        help="invalid once unused this long (each use moves it), e.g. 6h",
    )
    issue.add_argument("-q", "--quiet", action="store_true", help="print only the token")
    issue.set_defaults(func=_cmd_issue)

    listing = actions.add_parser("list", parents=[db], help="list tokens (no secrets)")
    listing.add_argument("--user", metavar="USER", help="only this user's tokens (name or id)")
    listing.add_argument("--all", action="store_true", help="include revoked and expired tokens")
    listing.add_argument(
        "--expiring",
        type=finite,
        metavar="DURATION",
        help="only active tokens expiring within this time, e.g. 7d (for alerts)",
    )
    listing.add_argument("--json", action="store_true", help="JSON output")
    listing.set_defaults(func=_cmd_list)

    show = actions.add_parser("show", parents=[db], help="show one token's details")
    show.add_argument("id", metavar="ID", help="the token's id (not the token)")
    show.add_argument("--json", action="store_true", help="JSON output")
    show.set_defaults(func=_cmd_show)

    rotate = actions.add_parser(
        "rotate", parents=[db], help="a new secret for a token (printed once), same record"
    )
    rotate.add_argument("id", metavar="ID", help="the token's id (not the token)")
    rotate.add_argument(
        "--grace",
        type=finite,
        default=0.0,
        metavar="DURATION",
        help="how long the old secret keeps working, e.g. 24h (default: not at all)",
    )
    rotate.add_argument("-q", "--quiet", action="store_true", help="print only the new token")
    rotate.set_defaults(func=_cmd_rotate)

    revoke = actions.add_parser("revoke", parents=[db], help="revoke a token")
    revoke.add_argument("id", metavar="ID", help="the token's id (not the token)")
    revoke.set_defaults(func=_cmd_revoke)

    purge = actions.add_parser("purge", parents=[db], help="delete expired and/or revoked tokens")
    purge.add_argument("--expired", action="store_true", help="delete expired (or idle) tokens")
    purge.add_argument("--revoked", action="store_true", help="delete revoked tokens")
    purge.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help="only those expired/revoked at least this long ago (e.g. 7d)",
    )
    purge.set_defaults(func=_cmd_purge)

    add_store_parsers(actions, db)
