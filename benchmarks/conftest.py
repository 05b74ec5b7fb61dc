"""Session fixtures of the benchmarks, and the report printed (and saved) at the end.

Run everything with ``python -m pytest benchmarks/`` from the repository root;
the table goes to the terminal and to ``.benchmarks/report.md``.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from _support import REPO, BenchKeystone, load_tool

REPORT_PATH = REPO / ".benchmarks" / "report.md"


class Report:
    """Rows of the final table, grouped by the issue's five benchmark items."""

    def __init__(self) -> None:
        self.sections: dict[str, list[tuple[str, ...]]] = {}
        self.headers: dict[str, tuple[str, ...]] = {}
        self.notes: dict[str, list[str]] = {}

    def row(self, section: str, header: tuple[str, ...], *cells: Any) -> None:
        self.headers.setdefault(section, header)
        self.sections.setdefault(section, []).append(tuple(str(c) for c in cells))

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def markdown(self) -> str:
        lines = [machine(), ""]
        for section in sorted(self.sections):
            header = self.headers[section]
            lines += [f"### {section}", "", "| " + " | ".join(header) + " |"]
            lines.append("|" + "|".join(" --- " for _ in header) + "|")
            lines += ["| " + " | ".join(cells) + " |" for cells in self.sections[section]]
            lines += [""] + [f"- {n}" for n in self.notes.get(section, [])] + [""]
        return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


_LOAD_AT_START = os.getloadavg()


def machine() -> str:
    start = "/".join(f"{v:.1f}" for v in _LOAD_AT_START)
    end = "/".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"Machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} "
        f"{platform.release()}, Python {sys.version.split()[0]}. authmw {_version('authmw')}, "
        f"keystonemiddleware {_version('keystonemiddleware')}, httpx {_version('httpx')}, "
        f"gunicorn {_version('gunicorn')}, uvicorn {_version('uvicorn')}, load: {load_tool()}; "
        "Keystone 30.0.0 (scripts/keystone, 2 gunicorn workers, SQLite, fernet). "
        f"Load average (1/5/15 min) at start {start}, at end {end}."
    )


_REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    return _REPORT


@pytest.fixture(scope="session")
def keystone() -> Iterator[BenchKeystone]:
    ks = BenchKeystone()
    ks.start()
    try:
        yield ks
    finally:
        ks.stop()


@pytest.fixture(scope="session")
def token(keystone: BenchKeystone) -> str:
    """One real project-scoped token of demo-user, shared by the overhead benchmarks."""
    return keystone.issue_token()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORT.sections:
        return
    text = _REPORT.markdown()
    REPORT_PATH.parent.mkdir(exist_ok=True)
    REPORT_PATH.write_text(text + "\n")
    terminalreporter.write_sep("=", "authmw benchmark report")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(saved to {REPORT_PATH.relative_to(REPO)})")
