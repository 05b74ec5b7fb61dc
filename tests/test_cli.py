"""The ``authmw`` command line, run as a real subprocess: outputs and exit codes."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _services import free_port

import authmw
from authmw.store import TOKEN_PATTERN, LocalTokenStore

REPO = str(Path(authmw.__file__).resolve().parent.parent)
DAY = 86400.0


class CLI:
    """Runs ``python -m authmw`` in a folder of its own, with a clean AUTHMW_* environment."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
        self.env["PYTHONPATH"] = REPO + os.pathsep + self.env.get("PYTHONPATH", "")

    def __call__(
        self, *args: str, input: str | None = None, stdin: int | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run it; standard input is ``input``, else ``stdin`` (a file descriptor), else empty."""
        if input is None and stdin is None:
            stdin = subprocess.DEVNULL  # not the terminal pytest may run in
        return subprocess.run(
            [sys.executable, "-m", "authmw", *args],
            cwd=self.cwd,
            env={**self.env, **env},
            input=input,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def argv_while_checking(
        self, *args: str, input: str = "", **env: str
    ) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        """What ``ps`` shows of ``authmw check ARGS`` while it runs, and how it ended.

        Its database server accepts the connection and says nothing: the check
        is then past its start-up and still running, so /proc/PID/cmdline holds
        its arguments. Then the server hangs up (the check ends with status 2).
        A check that ends or prints before connecting shows no arguments.
        """
        stdin, feed = os.pipe()
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            silent.settimeout(60)
            db = f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/x"
            child = subprocess.Popen(
                [sys.executable, "-m", "authmw", "check", "--db", db, *args],
                cwd=self.cwd,
                env={**self.env, **env},
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.close(stdin)
            argv: list[bytes] = []
            try:
                try:
                    os.write(feed, input.encode())
                finally:
                    os.close(feed)
                # The connection, or output / an end before it (then there is no argv).
                ready, _, _ = select.select([silent, child.stdout, child.stderr], [], [], 60)
                if silent in ready:
                    connection, _ = silent.accept()
                    with connection:
                        argv = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
                stdout, stderr = child.communicate(timeout=60)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        shown = [a.decode() for a in argv if a]
        return shown, subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)

    def issue(self, *args: str, **env: str) -> tuple[str, str]:
        result = self("token", "issue", *args, **env)
        assert result.returncode == 0, result.stderr
        token = re.search(r"^token:\s+(\S+)$", result.stdout, re.M)
        token_id = re.search(r"^id:\s+(\S+)$", result.stdout, re.M)
        assert token and token_id, result.stdout
        return token.group(1), token_id.group(1)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- issue / check ----------------------------------------------------------
def test_issue_prints_the_token_once_and_check_accepts_it(cli: CLI, tmp_path: Path) -> None:
    result = cli(
        "token", "issue", "--user", "alice", "--project", "demo",
        "--role", "member", "--role", "reader", "--ttl", "30d", "--description", "ci bot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tokens = re.findall(TOKEN_PATTERN, result.stdout)
    assert len(tokens) == 1
    token = tokens[0]
    assert "shown only this once" in result.stderr
    token_id = re.search(r"^id:\s+([0-9a-f]{16})$", result.stdout, re.M)
    assert token_id is not None
    assert "project:demo" in result.stdout
    assert "member, reader" in result.stdout
    assert (tmp_path / "authmw-tokens.db").exists()  # the documented default location

    check = cli("check", token)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("valid token")
    assert "alice" in check.stdout
    assert "member, reader" in check.stdout
    assert token_id.group(1) in check.stdout  # the audit id

    as_json = json.loads(cli("check", "--json", token).stdout)
    assert as_json["user_name"] == "alice"
    assert as_json["project_name"] == "demo"
    assert as_json["roles"] == ["member", "reader"]
    assert as_json["audit_ids"] == [token_id.group(1)]

    from_stdin = cli("check", "-", input=token + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr


def test_quiet_issue_prints_only_the_token(cli: CLI) -> None:
    result = cli("token", "issue", "--user", "bob", "--system", "all", "--role", "admin", "-q")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(TOKEN_PATTERN + r"\n", result.stdout)
    check = cli("check", "--json", result.stdout.strip())
    assert json.loads(check.stdout)["system_scope"] == "all"


def test_check_exit_codes(cli: CLI) -> None:
    cli.issue("--user", "alice")
    invalid = cli("check", AUTHMW_TOKEN="amw_" + "A" * 49)
    assert invalid.returncode == 1
    assert invalid.stderr.strip() == "invalid token: malformed token"
    from authmw.store._tokens import new_token

    unknown = cli("check", "-", input=new_token())
    assert unknown.returncode == 1
    assert "unknown token" in unknown.stderr

    port = free_port()
    unavailable = cli(
        "check", "--db", f"postgresql://u:pw@127.0.0.1:{port}/x", AUTHMW_TOKEN=new_token()
    )
    assert_one_line_error(unavailable, "unavailable", "***")
    assert ":pw@" not in unavailable.stderr


def test_check_with_keystone_settings_uses_keystone(cli: CLI) -> None:
    """The Keystone path is wired: with nothing listening at the auth URL the answer is 2."""
    port = free_port()
    keystone_token = "gAAAAABn" + "x" * 120
    result = cli(
        "check", keystone_token, "--auth-url", f"http://127.0.0.1:{port}/v3",
        AUTHMW_STATIC_TOKEN="service-token",
    )  # fmt: skip
    assert_one_line_error(result, "Keystone")
    via_env = cli(
        "check",
        keystone_token,
        AUTHMW_AUTH_URL=f"http://127.0.0.1:{port}/v3",
        AUTHMW_STATIC_TOKEN="service-token",
    )
    assert_one_line_error(via_env, "Keystone")
    both = cli("check", keystone_token, "--auth-url", "http://x/v3", "--db", "t.db")
    assert_one_line_error(both, "not both")
    both_env = cli("check", keystone_token, AUTHMW_AUTH_URL="http://x/v3", AUTHMW_DB="t.db")
    assert_one_line_error(both_env, "not both")
    secret_option = cli("check", keystone_token, "--auth-url", "http://x/v3", "--password", "pw")
    assert_one_line_error(secret_option, "unrecognized arguments: --password")


# -- where the token comes from ------------------------------------------------
ARGV_WARNING = "warning: a token on the command line"


def test_check_reads_the_token_from_stdin_or_the_environment(cli: CLI) -> None:
    token, token_id = cli.issue("--user", "alice")
    bad = "amw_" + "A" * 49

    for result in (
        cli("check", "-", input=token + "\n"),  # explicitly from stdin
        cli("check", input=token),  # no TOKEN, stdin is not a terminal
        cli("check", AUTHMW_TOKEN=token),
        cli("check", "--json", AUTHMW_TOKEN=token, input=bad),  # the variable comes first
        cli("check", "-", input=token, AUTHMW_TOKEN=bad),  # but not before an explicit -
    ):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert token_id in result.stdout

    invalid = cli("check", AUTHMW_TOKEN=bad)
    assert (invalid.returncode, invalid.stderr.strip()) == (1, "invalid token: malformed token")
    invalid = cli("check", input=bad)
    assert (invalid.returncode, invalid.stderr.strip()) == (1, "invalid token: malformed token")


def test_check_without_a_token_is_a_usage_error(cli: CLI) -> None:
    cli.issue("--user", "alice")
    assert_one_line_error(cli("check"), "no token on standard input")
    assert_one_line_error(cli("check", "-", input="\n"), "no token on standard input")
    assert_one_line_error(cli("check", AUTHMW_TOKEN=""), "no token on standard input")
    leader, follower = os.openpty()  # a terminal on stdin: nothing to read, nothing given
    try:
        at_terminal = cli("check", stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert_one_line_error(at_terminal, "no token", "authmw check -", "AUTHMW_TOKEN")


def test_token_as_an_argument_still_works_with_a_warning(cli: CLI) -> None:
    token, _ = cli.issue("--user", "alice")
    result = cli("check", token)
    assert result.returncode == 0
    assert result.stdout.startswith("valid token")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert ARGV_WARNING in lines[0] and "AUTHMW_TOKEN" in lines[0] and "check -" in lines[0]
    assert token not in result.stderr
    invalid = cli("check", "amw_" + "A" * 49)
    assert invalid.returncode == 1
    assert ARGV_WARNING in invalid.stderr
    assert "AUTHMW_TOKEN" in cli("check", "--help").stdout
    # A usage mistake stays one line, without the warning.
    assert_one_line_error(cli("check", token, "--auth-url", "http://x/v3", "--db", "t.db"))


def test_token_from_stdin_or_environment_is_not_in_the_process_arguments(cli: CLI) -> None:
    token = "amw_" + "Q" * 49  # well-formed enough to reach the database

    argv, result = cli.argv_while_checking("-", input=token + "\n")
    assert argv[-1] == "-"
    assert not any(token in a for a in argv), argv
    assert result.returncode == 2 and token not in result.stderr

    argv, result = cli.argv_while_checking(AUTHMW_TOKEN=token)
    assert argv[-2] == "--db"
    assert not any(token in a for a in argv), argv
    assert result.returncode == 2 and token not in result.stderr

    # The way this test looks is the way ps looks: a token given as TOKEN is there.
    argv, result = cli.argv_while_checking(token)
    assert token in argv
    assert_one_line_error(result, "unavailable")  # no warning without an answer


# -- list / show / revoke / purge ----------------------------------------------
def test_list_show_revoke(cli: CLI) -> None:
    alice_token, alice_id = cli.issue("--user", "alice", "--project", "demo", "--role", "reader")
    _, alice2_id = cli.issue("--user", "alice", "--domain", "acme", "--description", "laptop")
    bob_token, bob_id = cli.issue("--user", "bob", "--user-id", "u-bob", "--ttl", "2h")

    listing = cli("token", "list")
    assert listing.returncode == 0
    assert "amw_" not in listing.stdout
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["ID", "USER", "SCOPE", "ROLES"]
    assert [line.split()[0] for line in lines[1:]] == [alice_id, alice2_id, bob_id]
    assert "project:demo" in lines[1] and "domain:acme" in lines[2] and "laptop" in lines[2]

    only_bob = cli("token", "list", "--user", "u-bob", "--json")
    assert [r["id"] for r in json.loads(only_bob.stdout)] == [bob_id]

    show = cli("token", "show", bob_id)
    assert show.returncode == 0
    assert re.search(r"^status:\s+active$", show.stdout, re.M)
    assert re.search(r"^user:\s+bob \(id u-bob\)$", show.stdout, re.M)
    assert "amw_" not in show.stdout

    revoke = cli("token", "revoke", bob_id)
    assert (revoke.returncode, revoke.stdout.strip()) == (0, f"revoked token {bob_id}")
    assert cli("check", bob_token).returncode == 1
    assert "revoked" in cli("check", bob_token).stderr
    again = cli("token", "revoke", bob_id)
    assert (again.returncode, again.stdout.strip()) == (0, f"token {bob_id} was already revoked")
    assert cli("check", alice_token).returncode == 0

    active = cli("token", "list").stdout
    assert bob_id not in active
    everything = cli("token", "list", "--all").stdout
    assert bob_id in everything and "revoked" in everything

    for command in (("token", "show", "nope"), ("token", "revoke", "nope")):
        missing = cli(*command)
        assert missing.returncode == 1
        assert missing.stderr.strip() == "authmw: error: no token with id 'nope'"


def test_purge_expired_and_revoked(cli: CLI, tmp_path: Path) -> None:
    keep_token, keep_id = cli.issue("--user", "alice")
    _, revoked_id = cli.issue("--user", "bob")
    assert cli("token", "revoke", revoked_id).returncode == 0
    past = time.time() - 2 * DAY  # issued two days ago for one day: expired now
    with LocalTokenStore(f"sqlite:///{tmp_path}/authmw-tokens.db", clock=lambda: past) as store:
        expired_id = store.issue(user_name="carol", ttl=DAY).id

    assert expired_id in cli("token", "list", "--all").stdout
    purged = cli("token", "purge", "--expired")
    assert (purged.returncode, purged.stdout.strip()) == (0, "deleted 1 token")
    remaining = cli("token", "list", "--all").stdout
    assert expired_id not in remaining and revoked_id in remaining
    assert cli("token", "purge", "--revoked", "--older-than", "7d").stdout.strip() == (
        "deleted 0 tokens"
    )
    assert cli("token", "purge", "--revoked").stdout.strip() == "deleted 1 token"
    assert [r["id"] for r in json.loads(cli("token", "list", "--all", "--json").stdout)] == [
        keep_id
    ]
    assert cli("check", keep_token).returncode == 0
    assert_one_line_error(cli("token", "purge"), "--expired")


# -- configuration ----------------------------------------------------------
def test_db_option_and_environment(cli: CLI, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/elsewhere.db"
    token, token_id = cli.issue("--user", "alice", "--db", url)
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "authmw-tokens.db").exists()
    assert cli("--db", url, "check", token).returncode == 0
    assert token_id in cli("token", "list", AUTHMW_DB=url).stdout
    plain_path = cli("token", "list", "--db", str(tmp_path / "elsewhere.db"))
    assert token_id in plain_path.stdout


def test_max_ttl_and_never_expiring_tokens(cli: CLI) -> None:
    assert_one_line_error(cli("token", "issue", "--user", "a", "--ttl", "400d"), "365d")
    assert_one_line_error(
        cli("token", "issue", "--user", "a", "--ttl", "2h", AUTHMW_MAX_TTL="1h"), "maximum of 1h"
    )
    assert_one_line_error(cli("token", "issue", "--user", "a", "--ttl", "never"), "must expire")
    assert_one_line_error(
        cli("token", "list", AUTHMW_MAX_TTL="soon"), "AUTHMW_MAX_TTL", "invalid duration"
    )
    token, _ = cli.issue("--user", "a", "--ttl", "never", AUTHMW_MAX_TTL="none")
    shown = cli("check", token)
    assert re.search(r"^expires:\s+never$", shown.stdout, re.M)


def test_pepper_from_the_environment(cli: CLI) -> None:
    pepper = "0123456789abcdef0123456789abcdef"
    token, _ = cli.issue("--user", "alice", AUTHMW_PEPPER=pepper)
    assert cli("check", token, AUTHMW_PEPPER=pepper).returncode == 0
    assert_one_line_error(cli("check", token), "pepper", "created with a pepper")
    assert_one_line_error(cli("token", "list", AUTHMW_PEPPER="too-short"), "pepper", "16 bytes")


# -- bad input --------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("token", "issue", "--usr", "bob"), ("unrecognized arguments: --usr",)),
        (("token", "issue", "--user", "bob", "--ttl", "3x"), ("--ttl", "'3x'")),
        (("token", "issue", "--user", "bob", "--system", "some"), ("--system", "invalid choice")),
        (("token", "issue", "--role", "admin"), ("user",)),
        (("token", "issue", "--user", "bob", "--project", "p", "--domain", "d"), ("not allowed",)),
        (("token", "issue", "--user", "bob", "--role", "a,b"), ("comma",)),
        (("token", "frobnicate"), ("invalid choice",)),
        (("token",), ("required",)),
        ((), ("required",)),
        (("check",), ("no token",)),
        (("token", "list"), ("no token store",)),
        (("token", "issue", "--user", "bob", "--db", "mysql://x/y"), ("url", "unsupported")),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: CLI, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""


def test_unreachable_or_unwritable_databases(cli: CLI, tmp_path: Path) -> None:
    port = free_port()
    pg = cli("token", "issue", "--user", "a", "--db", f"postgresql://127.0.0.1:{port}/tokens")
    assert_one_line_error(pg, "unavailable", "Connection refused")

    missing_dir = cli("token", "issue", "--user", "a", "--db", f"{tmp_path}/no/such/dir/t.db")
    assert_one_line_error(missing_dir, "unavailable", "No such file or directory")

    (tmp_path / "a-file").write_text("not a folder")
    under_file = cli("token", "issue", "--user", "a", "--db", f"{tmp_path}/a-file/t.db")
    assert_one_line_error(under_file, "unavailable", "Not a directory")

    (tmp_path / "garbage.db").write_bytes(b"garbage" * 200)
    garbage = cli("token", "list", "--db", f"{tmp_path}/garbage.db")
    assert_one_line_error(garbage, "not a database")


def test_help_version_and_console_script(cli: CLI) -> None:
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("token", "check", "demo", "login"):
        assert command in helped.stdout
    assert cli("login", "--help").returncode == 0  # registered from authmw._cli_login
    issue_help = cli("token", "issue", "--help")
    assert "--ttl" in issue_help.stdout and "--role" in issue_help.stdout
    version = cli("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"authmw {authmw.__version__}")

    script = Path(sys.executable).with_name("authmw")
    assert script.exists(), "console script not installed: pip install -e ."
    installed = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert installed.stdout.strip() == f"authmw {authmw.__version__}"


# -- PostgreSQL ---------------------------------------------------------------
@pytest.mark.postgres
def test_token_commands_on_postgresql(cli: CLI, postgres_url: str) -> None:
    pg_url = postgres_url
    token, token_id = cli.issue("--user", "alice", "--project", "demo", "--db", pg_url)
    assert cli("check", token, AUTHMW_DB=pg_url).returncode == 0
    assert token_id in cli("token", "list", "--db", pg_url).stdout
    assert cli("token", "revoke", token_id, "--db", pg_url).returncode == 0
    assert cli("check", token, "--db", pg_url).returncode == 1
