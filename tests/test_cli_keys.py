"""API keys from the ``authmw`` command line, run as a real subprocess on SQLite and PostgreSQL:
restrictions, rotation, the store's policy, peppers, ``list --json --expiring``, and a
reason for every refusal in ``authmw check``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from test_cli import CLI, assert_one_line_error

from authmw.store import LocalTokenStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tokens.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def cli(tmp_path: Path, db: str) -> CLI:
    runner = CLI(tmp_path)
    runner.env["AUTHMW_DB"] = db
    return runner


def check(cli: CLI, token: str, *args: str) -> tuple[int, str, str]:
    result = cli("check", "-", *args, input=token + "\n")
    return result.returncode, result.stdout, result.stderr.strip()


def test_restrictions_from_the_command_line(cli: CLI) -> None:
    issued = cli(
        "token",
        "issue",
        "--user",
        "ci",
        "--scope",
        "items:read",
        "--scope",
        "items:write",
        "--read-only",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-ip",
        "::ffff:192.0.2.0/120",
        "--idle-ttl",
        "6h",
    )
    assert issued.returncode == 0, issued.stderr
    assert re.search(
        r"^limits:\s+read-only; from 10.0.0.0/8 192.0.2.0/24; idle 6h; scopes items:read "
        r"items:write$",
        issued.stdout,
        re.M,
    )
    token = re.search(r"^token:\s+(\S+)$", issued.stdout, re.M)
    token_id = re.search(r"^id:\s+(\S+)$", issued.stdout, re.M)
    assert token and token_id
    record = json.loads(cli("token", "show", token_id.group(1), "--json").stdout)
    assert record["scopes"] == ["items:read", "items:write"]
    assert record["read_only"] is True
    assert record["allowed_ips"] == ["10.0.0.0/8", "192.0.2.0/24"]
    assert record["idle_ttl"] == 6 * 3600
    assert record["idle_deadline"] is not None

    status, out, _ = check(cli, token.group(1))
    assert status == 0
    assert re.search(r"^token scopes:\s+items:read, items:write$", out, re.M)
    assert re.search(r"^methods:\s+GET, HEAD, OPTIONS$", out, re.M)
    assert check(cli, token.group(1), "--method", "GET", "--client", "10.1.2.3")[0] == 0
    assert check(cli, token.group(1), "--client", "::ffff:192.0.2.9")[0] == 0
    status, _, err = check(cli, token.group(1), "--method", "POST")
    assert (status, err) == (
        1,
        "refused: this token allows only GET, HEAD, OPTIONS requests (reason: read-only)",
    )
    status, _, err = check(cli, token.group(1), "--client", "203.0.113.5")
    assert (status, err) == (
        1,
        "refused: this token may not be used from this address (reason: ip)",
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--allow-ip", "10.0.0.0/33"), "not an IP network"),
        (("--idle-ttl", "30s"), "idle_ttl: at least 1m"),
        (("--idle-ttl", "never"), "--idle-ttl"),
        (("--scope", "two words"), "white space"),
    ],
)
def test_bad_restrictions_are_one_line_and_exit_2(
    cli: CLI, args: tuple[str, ...], fragment: str
) -> None:
    assert_one_line_error(cli("token", "issue", "--user", "ci", *args), fragment)


def test_rotation_from_the_command_line(cli: CLI) -> None:
    old, token_id = cli.issue("--user", "svc", "--role", "member")
    rotated = cli("token", "rotate", token_id, "--grace", "24h", "-q")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("amw_") and new != old
    assert check(cli, new)[0] == 0
    assert check(cli, old)[0] == 0  # within its grace period

    again = cli("token", "rotate", token_id)
    assert again.returncode == 0
    assert "no longer works" in again.stderr
    status, _, err = check(cli, new)
    assert (status, err) == (
        1,
        f"invalid token: token {token_id} rotated, its grace period over (reason: rotated)",
    )
    missing = cli("token", "rotate", "0123456789abcdef")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "authmw: error: no token with id '0123456789abcdef'",
    )
    cli("token", "revoke", token_id)
    assert_one_line_error(cli("token", "rotate", token_id), "revoked")


def test_check_names_the_reason_of_each_rejection(cli: CLI, db: str) -> None:
    expired, _ = cli.issue("--user", "a", "--ttl", "1")
    revoked, revoked_id = cli.issue("--user", "b")
    cli("token", "revoke", revoked_id)
    idle, idle_id = cli.issue("--user", "c", "--idle-ttl", "1h")
    with LocalTokenStore(db) as store:  # two hours without a use, without waiting for them
        store._backend.execute(
            store._backend.sql(
                "UPDATE authmw_tokens SET created_at = created_at - 7200 WHERE id = ?"
            ),
            (idle_id,),
        )
    time.sleep(1.1)
    for token, reason in ((expired, "expired"), (revoked, "revoked"), (idle, "idle")):
        status, _, err = check(cli, token)
        assert status == 1
        assert err.startswith("invalid token: ") and err.endswith(f"(reason: {reason})"), err

    young, _ = cli.issue("--user", "d")
    policy = cli("token", "policy", "--max-lifetime", "1")
    assert policy.returncode == 0, policy.stderr
    assert re.search(r"^max lifetime:\s+1s$", policy.stdout, re.M)
    time.sleep(1.1)
    status, _, err = check(cli, young)
    assert status == 1 and err.endswith("(reason: policy)"), err


def test_a_check_is_not_a_use(cli: CLI) -> None:
    token, token_id = cli.issue("--user", "c", "--idle-ttl", "1h")
    assert check(cli, token)[0] == 0
    shown = json.loads(cli("token", "show", token_id, "--json").stdout)
    assert shown["last_used_at"] is None


def test_policy_from_the_command_line(cli: CLI) -> None:
    cli.issue("--user", "alice")
    shown = cli("token", "policy")
    assert shown.stdout.splitlines() == [
        "max tokens per user: no limit",
        "max lifetime:        no limit",
    ]
    set_ = cli("token", "policy", "--max-tokens-per-user", "2")
    assert re.search(r"^max tokens per user:\s+2$", set_.stdout, re.M)
    cli.issue("--user", "alice")
    assert_one_line_error(
        cli("token", "issue", "--user", "alice"),
        "policy: user 'alice' already has 2 active tokens",
    )
    cli.issue("--user", "bob")
    cleared = cli("token", "policy", "--max-tokens-per-user", "none")
    assert "no limit" in cleared.stdout
    cli.issue("--user", "alice")
    assert_one_line_error(cli("token", "policy", "--max-tokens-per-user", "0"), "whole number")


def test_list_json_and_expiring(cli: CLI) -> None:
    _, soon = cli.issue("--user", "a", "--ttl", "3d")
    _, later = cli.issue("--user", "b", "--ttl", "30d")
    expiring = cli("token", "list", "--expiring", "7d", "--json")
    records = json.loads(expiring.stdout)
    assert [r["id"] for r in records] == [soon]
    assert records[0]["status"] == "active"
    assert records[0]["effective_expires_at"] == records[0]["expires_at"]
    assert "token_hash" not in records[0]
    everything = json.loads(cli("token", "list", "--json").stdout)
    assert [r["id"] for r in everything] == [soon, later]
    assert "amw_" not in cli("token", "list", "--json").stdout
    assert_one_line_error(cli("token", "list", "--expiring", "never"), "--expiring")


PEPPERS = json.dumps({"2024": "first pepper, 32 bytes long....", "2025": "x" * 32})


def test_peppers_from_the_environment(cli: CLI) -> None:
    old_pepper = json.dumps({"2024": "first pepper, 32 bytes long...."})
    old, _ = cli.issue("--user", "a", AUTHMW_PEPPERS=old_pepper)
    new, _ = cli.issue("--user", "b", AUTHMW_PEPPERS=PEPPERS)
    for token in (old, new):
        assert cli("check", "-", input=token, AUTHMW_PEPPERS=PEPPERS).returncode == 0
    listing = cli("token", "peppers", "--json", AUTHMW_PEPPERS=PEPPERS)
    assert [(p["id"], p["newest"], p["active_tokens"]) for p in json.loads(listing.stdout)] == [
        ("2024", False, 1),
        ("2025", True, 1),
    ]
    retired = cli("token", "retire-pepper", "2024", AUTHMW_PEPPERS=PEPPERS)
    assert retired.stdout.strip() == "retired pepper 2024: 1 token revoked"
    assert_one_line_error(cli("token", "list", AUTHMW_PEPPERS=PEPPERS), "2024", "retired")
    only_new = json.dumps({"2025": "x" * 32})
    assert cli("check", "-", input=new, AUTHMW_PEPPERS=only_new).returncode == 0
    assert cli("check", "-", input=old, AUTHMW_PEPPERS=only_new).returncode == 1

    assert_one_line_error(
        cli("token", "list", AUTHMW_PEPPERS=PEPPERS, AUTHMW_PEPPER="y" * 32), "AUTHMW_PEPPERS"
    )
    assert_one_line_error(cli("token", "list", AUTHMW_PEPPERS="not json"), "AUTHMW_PEPPERS")
