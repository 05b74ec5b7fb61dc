"""``authmw demo`` as a user runs it: start it, paste its curl commands, revoke, Ctrl-C."""

from __future__ import annotations

import itertools
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import authmw

REPO = str(Path(authmw.__file__).resolve().parent.parent)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHMW_")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class Curl:
    expected: int
    comment: str
    url: str
    headers: dict[str, str]
    method: str = "GET"


class Demo:
    """The demo process, its printed introduction, and the rest of its output."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "authmw", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.intro = self._read_intro()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_intro(self) -> list[str]:
        intro: list[str] = []
        while True:
            line = self.lines.get(timeout=60)
            if line is None:
                return intro
            intro.append(line)
            if line == "Press Ctrl-C to stop.":
                return intro

    def curls(self) -> list[Curl]:
        found = []
        for comment, command in zip(self.intro, self.intro[1:], strict=False):
            match = re.fullmatch(r"\s*# (\d{3}): (.*)", comment)
            if not match or not command.strip().startswith("curl "):
                continue
            words = shlex.split(command)
            headers = {}
            method = "GET"
            for flag, value in itertools.pairwise(words):
                if flag == "-H":
                    name, _, header_value = value.partition(":")
                    headers[name.strip()] = header_value.strip()
                if flag == "-X":
                    method = value
            found.append(Curl(int(match.group(1)), match.group(2), words[-1], headers, method))
        return found

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, then the exit status, the rest of stdout, and stderr."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=30)
        rest = []
        while (line := self.lines.get(timeout=30)) is not None:
            rest.append(line)
        assert self.process.stderr is not None
        return status, "\n".join(rest), self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo("--port", "0", "--dir", str(tmp_path / "demo"))
    yield running
    running.kill()


def test_the_printed_curl_commands_do_what_they_say(demo: Demo, tmp_path: Path) -> None:
    assert demo.process.poll() is None, demo.intro
    curls = demo.curls()
    assert {c.expected for c in curls} >= {200, 201, 401, 403}
    assert len(curls) == 7

    for curl in curls:
        response = httpx.request(curl.method, curl.url, headers=curl.headers, timeout=10)
        assert response.status_code == curl.expected, (curl, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        if curl.expected in (401, 403):
            assert set(body) == {"error"}
            assert body["error"]["code"] == curl.expected
            assert body["error"]["title"] == {401: "Unauthorized", 403: "Forbidden"}[curl.expected]
            assert body["error"]["message"]
        if "echoed" in curl.comment:
            identity = body["identity"]
            assert identity["user_name"] == "alice"
            assert identity["roles"] == ["reader"]
            assert identity["project_name"] == "demo"
            assert body["headers"]["X-Roles"] == "reader"
            assert "X-Auth-Token" not in body["headers"]
    refused = next(c for c in curls if c.method == "POST" and c.expected == 403)
    message = httpx.post(refused.url, headers=refused.headers, timeout=10).json()
    assert message["error"]["message"] == "this token allows only GET, HEAD, OPTIONS requests"
    assert "read-only" in refused.comment
    assert (tmp_path / "demo" / "demo-tokens.db").exists()

    status, rest, stderr = demo.stop()
    assert status == 0, stderr
    assert "stopped" in rest
    assert "Traceback" not in stderr


def test_revoking_with_the_printed_command_locks_the_reader_out(demo: Demo) -> None:
    reader = next(c for c in demo.curls() if "echoed" in c.comment)
    assert httpx.get(reader.url, headers=reader.headers, timeout=10).status_code == 200
    revoke_line = next(line for line in demo.intro if "authmw token revoke" in line)
    words = shlex.split(revoke_line)
    assert words[0] == "authmw"
    revoked = subprocess.run(
        [sys.executable, "-m", "authmw", *words[1:]],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr

    # Another process revoked it: the store tells the demo's cache within a second.
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(reader.url, headers=reader.headers, timeout=10).status_code
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert status == 401
    admin = next(c for c in demo.curls() if c.expected == 200 and c.url.endswith("/admin"))
    assert httpx.get(admin.url, headers=admin.headers, timeout=10).status_code == 200
    assert demo.stop()[0] == 0


def test_without_dir_the_store_lives_in_a_temp_folder_removed_on_exit() -> None:
    demo = Demo("--port", "0")
    try:
        store_line = next(line for line in demo.intro if line.startswith("token store: "))
        path = Path(store_line.removeprefix("token store: sqlite:///"))
        assert path.exists()
        status, _, stderr = demo.stop()
        assert status == 0, stderr
        assert not path.parent.exists()
    finally:
        demo.kill()


def test_a_busy_port_is_one_clear_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "authmw", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "--port 0" in lines[0]
