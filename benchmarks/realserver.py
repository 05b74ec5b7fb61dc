"""What a cached token costs under real servers, side by side in one run.

    python benchmarks/realserver.py [--base REV ...] [--rounds 5] [--seconds 6] [--json FILE]
    python benchmarks/realserver.py --instructions [--base REV ...] [--repeats 3] [--parts]

Each server runs pinned to CPU 0 (``taskset -c 0``) and wrk (1 thread, 16
connections) pinned to CPU 1, against a hello-world app:

- gunicorn (1 worker, gthread, 8 threads): the bare app, authmw, authmw at
  each ``--base`` (the same app built from that revision, checked out once
  into ``.cache/bench-base/``), keystonemiddleware;
- uvicorn (1 worker): the bare app, authmw, authmw at each ``--base``, Starlette's
  ``AuthenticationMiddleware`` with a dict backend.

authmw and keystonemiddleware validate one real token against the Keystone
that scripts/keystone runs (validated on the warm-up request, then cached).
Every round runs every stack of a server once, in turn, so machine noise hits
them alike; the table shows medians over rounds of the throughput and of
the server's CPU time per request (user + system of all its processes, from
/proc, over the measured run), the cost per request (CPU time over the bare
app's) and the share of the bare app's throughput each implies (on a
CPU-bound server, throughput is inversely proportional to CPU per request).
The machine's load average is printed with the table.

On a shared virtual machine throughput varies by 10-20 % from one server
process to the next, more than the differences measured here.
``--instructions`` counts instead: each server runs under valgrind
(callgrind, which counts every instruction the processes execute) and
answers 500 then 1,500 sequential requests on one keep-alive connection;
the difference over 1,000 requests, less what the server executes idle
over the difference in time (uvicorn's main loop wakes ten times a second
whatever the load: about 620,000 instructions a second under callgrind, a
few thousand per request, varying with how fast a run goes; measured idle
first, on the bare app), is the server's instructions per request, bare and
with each middleware: the same figures on any run, within about 1%.
``--parts`` also splits each stack's instructions over the bare app by
where they run (callgrind_annotate's cost per function, grouped: the
interpreter loop, dict operations, OpenSSL, memory allocation, ...).

"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx
from _support import REPO, BenchKeystone, load, revision_tree, served, session_cpu_seconds

SERVERS = {
    "gunicorn": ("wsgi", "gunicorn gthread (1 worker, 8 threads)", "keystonemiddleware"),
    "uvicorn": ("asgi", "uvicorn (1 worker)", "starlette"),
}
REFERENCE_NAMES = {
    "keystonemiddleware": "keystonemiddleware 13.0.1",
    "starlette": "Starlette AuthenticationMiddleware, dict backend",
}


def _imported_from(tree: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import authmw; print(authmw.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not out.startswith(str(tree)):
        raise RuntimeError(f"PYTHONPATH={tree} imports authmw from {out}")
    return out


def _stacks(kind: str, bases: list[str]) -> list[tuple[str, str, Path | None]]:
    """(label, app name in apps.py, authmw tree) for every stack of one server."""
    prefix, _, reference = SERVERS[kind]
    stacks: list[tuple[str, str, Path | None]] = [
        ("bare app", f"{prefix}_bare", None),
        ("authmw", f"{prefix}_authmw", REPO),
    ]
    for base in bases:
        stacks.append((f"authmw at {base}", f"{prefix}_authmw", revision_tree(base)))
    stacks.append((REFERENCE_NAMES[reference], f"{prefix}_{reference}", None))
    return stacks


def _measure(
    kind: str, app: str, tree: Path | None, env: dict[str, str], token: str, seconds: float
) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request) of one run."""
    extra = env
    if tree is not None:
        extra = {**env, "PYTHONPATH": str(tree), "AUTHMW_BENCH_TREE": str(tree / "authmw")}
    with served(kind, app, extra, cpu=0) as (port, session):
        try:
            first = httpx.get(
                f"http://127.0.0.1:{port}/", headers={"X-Auth-Token": token}, timeout=60
            )
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{app} under {kind} ({tree}): {exc!r}") from exc
        if first.status_code != 200:  # this request validated the token; the rest hit the cache
            raise RuntimeError(f"{app} under {kind}: {first.status_code} {first.text[:200]}")
        load(port, token, 1.0, cpu=1)  # warm-up
        cpu_before = session_cpu_seconds(session)
        result = load(port, token, seconds, cpu=1)
        cpu = session_cpu_seconds(session) - cpu_before
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"{app} under {kind}: errors {result}")
    return result["rps"], cpu / result["requests"] * 1e6


def _table(kind: str, stacks: list[str], runs: dict[str, list[tuple[float, float]]]) -> list[str]:
    lines = [
        f"#### {SERVERS[kind][1]}",
        "",
        "| stack | requests/s | share of the bare app | server CPU per request "
        "| cost per request (CPU) | share of the bare app (CPU) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    bare_rps = statistics.median(rps for rps, _ in runs[stacks[0]])
    bare_cpu = statistics.median(cpu for _, cpu in runs[stacks[0]])
    for label in stacks:
        rps = statistics.median(rps for rps, _ in runs[label])
        cpu = statistics.median(cpu for _, cpu in runs[label])
        bare = label == stacks[0]
        cost = "-" if bare else f"{cpu - bare_cpu:.1f} us"
        lines.append(
            f"| {label} | {rps:,.0f} | {rps / bare_rps:.1%} | {cpu:.1f} us | {cost} "
            f"| {bare_cpu / cpu:.1%} |"
        )
    return lines


# Where an instruction runs, by the source file or library callgrind names for its
# function: (part of the name, part), first match wins; unmatched functions are "other".
PARTS = (
    ("libcrypto", "OpenSSL (SHA-256)"),
    ("_hashopenssl", "OpenSSL (SHA-256)"),
    ("/Include/", "inlined helpers (reference counts, object life)"),
    ("ceval.c", "interpreter loop"),
    ("abstract.c", "iteration and sequence protocols"),
    ("pytime", "clock"),
    ("gcmodule", "garbage collector"),
    ("malloc", "memory allocation"),
    ("dictobject", "dict operations"),
    ("setobject", "set operations"),
    ("listobject", "list and tuple operations"),
    ("tupleobject", "list and tuple operations"),
    ("unicodeobject", "str and bytes operations"),
    ("bytesobject", "str and bytes operations"),
    ("pyhash", "str and bytes hashing"),
    ("frame", "function calls"),
    ("call.c", "function calls"),
    ("object.c", "attribute look-up, comparison"),
    ("descrobject", "attribute look-up, comparison"),
    ("mem", "memory copies"),
)
Counts = collections.Counter[str]


def _less(counts: Counts, *taken: Counts) -> Counts:
    """``counts`` minus each of ``taken``, part by part (negative results kept)."""
    left = counts.copy()
    for other in taken:
        left.subtract(other)
    return left


def _part(function: str) -> str:
    return next((part for pattern, part in PARTS if pattern in function), "other")


def _parts(out: str) -> Counts:
    """Instructions by part, over every callgrind file in ``out``."""
    parts: Counts = collections.Counter()
    for path in Path(out).glob("callgrind.*"):
        report = subprocess.run(
            ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in report.splitlines():
            found = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)", line)
            if found and "PROGRAM TOTALS" not in found[2]:
                parts[_part(found[2])] += int(found[1].replace(",", ""))
    return parts


class Idle(NamedTuple):
    """What a server executes per second while it serves nothing: uvicorn's main loop
    wakes ten times a second, so a run that lasts longer counts more of it."""

    instructions: float
    parts: Counts


def _callgrind_run(
    kind: str, app: str, extra: dict[str, str], token: str, count: int, parts: bool, idle: float
) -> tuple[int, float, Counts]:
    """(instructions, seconds served, instructions by part) of one server under callgrind
    answering ``count`` sequential requests, then idle for ``idle`` seconds."""
    with tempfile.TemporaryDirectory() as out:
        prefix = (
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/callgrind.%p",
            "--trace-children=yes",
        )
        with (
            served(kind, app, extra, cpu=0, prefix=prefix) as (port, _),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
        ):
            started = time.monotonic()
            for _ in range(count):
                answer = client.get("/", headers={"X-Auth-Token": token})
                if answer.status_code != 200:
                    raise RuntimeError(f"{app} under {kind}: {answer.status_code}")
            time.sleep(idle)
            seconds = time.monotonic() - started
        total = sum(_callgrind_total(f) for f in Path(out).glob("callgrind.*"))
        return total, seconds, _parts(out) if parts else collections.Counter()


def _idle(kind: str, env: dict[str, str], parts: bool) -> Idle:
    """:class:`Idle` for ``kind``, from its bare app idle 2 and then 12 seconds."""
    app = f"{SERVERS[kind][0]}_bare"
    short, long = (_callgrind_run(kind, app, env, "", 0, parts, idle) for idle in (2.0, 12.0))
    seconds = long[1] - short[1]
    by_part = _less(long[2], short[2])
    return Idle(
        (long[0] - short[0]) / seconds, Counts({k: v / seconds for k, v in by_part.items()})
    )


def _instructions(
    kind: str,
    app: str,
    tree: Path | None,
    env: dict[str, str],
    token: str,
    idle: Idle,
    parts: bool,
) -> tuple[float, Counts]:
    """Instructions per request of one server, under callgrind (see the module docstring),
    less what it executes idle over the same time; if ``parts``, also by part (x 1,000)."""
    extra = env
    if tree is not None:
        extra = {**env, "PYTHONPATH": str(tree), "AUTHMW_BENCH_TREE": str(tree / "authmw")}
    few, many = (_callgrind_run(kind, app, extra, token, n, parts, 0.0) for n in (500, 1500))
    seconds = many[1] - few[1]
    by_part = _less(many[2], few[2], Counts({k: v * seconds for k, v in idle.parts.items()}))
    return (many[0] - few[0] - idle.instructions * seconds) / 1000, by_part


def _callgrind_total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def _instruction_table(kind: str, runs: dict[str, list[float]]) -> list[str]:
    """Medians over the runs of each stack (and their range, with more than one)."""
    ranged = len(next(iter(runs.values()))) > 1
    lines = [
        f"#### {SERVERS[kind][1]}, instructions per request (callgrind)",
        "",
        "| stack | instructions per request | over the bare app | share of the bare app |"
        + (" over the bare app, min-max |" if ranged else ""),
        "| --- | --- | --- | --- |" + (" --- |" if ranged else ""),
    ]
    labels = list(runs)
    bare = statistics.median(runs[labels[0]])
    for label in labels:
        value = statistics.median(runs[label])
        over = "-" if label == labels[0] else f"{value - bare:,.0f}"
        line = f"| {label} | {value:,.0f} | {over} | {bare / value:.1%} |"
        if ranged:
            spread = "-"
            if label != labels[0]:
                spread = f"{min(runs[label]) - bare:,.0f}-{max(runs[label]) - bare:,.0f}"
            line += f" {spread} |"
        lines.append(line)
    return lines


def _parts_table(kind: str, results: dict[str, tuple[float, Counts]]) -> list[str]:
    """Each stack's instructions over the bare app, per request, by part."""
    labels = list(results)
    bare = results[labels[0]][1]
    over = {label: _less(results[label][1], bare) for label in labels[1:]}
    order = sorted({p for c in over.values() for p in c}, key=lambda p: -over[labels[1]][p])
    lines = [
        f"#### {SERVERS[kind][1]}, instructions over the bare app by part (callgrind)",
        "",
        "| part | " + " | ".join(labels[1:]) + " |",
        "| --- |" + " --- |" * len(over),
    ]
    for part in [*order, None]:
        cells = [
            f"{(sum(c.values()) if part is None else c[part]) / 1000:,.0f}" for c in over.values()
        ]
        lines.append(f"| {'all' if part is None else part} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        action="append",
        default=[],
        help="git revision of authmw to run beside this checkout (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--servers", default="gunicorn,uvicorn")
    parser.add_argument("--json", type=Path, help="also write the raw figures there")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead"
    )
    parser.add_argument(
        "--parts", action="store_true", help="with --instructions: where they run, by part"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="with --instructions: runs per stack (medians)"
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.servers.split(",") if k]
    unknown = [k for k in kinds if k not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown server {unknown[0]!r} (gunicorn, uvicorn)")
    _imported_from(REPO)
    for base in args.base:
        _imported_from(revision_tree(base))
    keystone = BenchKeystone()
    keystone.start()
    try:
        token = keystone.issue_token()
        # A fixed hash seed: string hashing otherwise varies dict layouts per process.
        env = {
            "AUTHMW_BENCH_AUTH_URL": keystone.url,
            "AUTHMW_BENCH_TOKEN": token,
            "PYTHONHASHSEED": "0",
        }
        if args.instructions:
            for kind in kinds:
                stacks = _stacks(kind, args.base)
                idle = _idle(kind, env, args.parts)
                print(f"{SERVERS[kind][1]}: {idle.instructions:,.0f} instructions per second idle")
                measured: dict[str, list[tuple[float, Counts]]] = {s[0]: [] for s in stacks}
                for _ in range(args.repeats):  # alternating, as the throughput rounds
                    for label, app, tree in stacks:
                        found = _instructions(kind, app, tree, env, token, idle, args.parts)
                        measured[label].append(found)
                counts = {label: [total for total, _ in found] for label, found in measured.items()}
                print("\n".join(_instruction_table(kind, counts)) + "\n")
                if args.parts:  # each stack's parts from its median run
                    medians = {
                        label: sorted(found, key=lambda run: run[0])[len(found) // 2]
                        for label, found in measured.items()
                    }
                    print("\n".join(_parts_table(kind, medians)) + "\n")
            return 0
        load_before = os.getloadavg()
        raw: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for kind in kinds:
            stacks = _stacks(kind, args.base)
            runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in stacks}
            for _ in range(args.rounds):
                for label, app, tree in stacks:
                    runs[label].append(_measure(kind, app, tree, env, token, args.seconds))
            raw[kind] = runs
        load_after = os.getloadavg()
    finally:
        keystone.stop()
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s per stack, medians; server "
        f"on CPU 0, wrk -t1 -c16 on CPU 1; load average (1/5/15 min) "
        f"{'/'.join(f'{v:.1f}' for v in load_before)} before, "
        f"{'/'.join(f'{v:.1f}' for v in load_after)} after.\n"
    )
    for kind in kinds:
        print("\n".join(_table(kind, list(raw[kind]), raw[kind])) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
