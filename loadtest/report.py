"""Run every hardening check and write ``docs/reliability.md``: ``python -m loadtest.report``.

Steps (each reported with its counts):

1. the hardening test suite (``tests/hardening``, without the load test):
   property-based fuzzing, route bypasses, forged headers through real
   servers, malformed identity-service answers; example counts come from
   hypothesis' statistics, outcomes from a JUnit XML report;
2. the coverage-guided fuzz target under libFuzzer (atheris) for a bounded
   time (skipped, and said so, when atheris is not installed);
3. the load and fault test (``tests/hardening/test_load_faults.py``: the
   :mod:`loadtest.harness` against a private copy of the test suite's Keystone
   and a private redis-server), its figures and its assertions.

``--long``: hypothesis' long profile, a 10-minute libFuzzer run and the soak
(several cycles). ``--out PATH`` (default ``docs/reliability.md``),
``--json PATH`` also keeps the raw figures, ``--fuzz-seconds N``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .servers import REPO

__all__ = ["main"]

# What the hardening tests found, keyed by a substring of the ids of the tests that show it;
# the status column says whether those tests fail or pass in the run being reported.
FINDINGS: list[tuple[str, str, list[str]]] = [
    (
        'A lone surrogate in an identity value (JSON allows `"\\ud800"`) made header '
        "rendering raise `UnicodeEncodeError`: every request with such a token was a 500 "
        "under WSGI and ASGI.",
        "`authmw/headers.py` (`_clean`)",
        ["test_identity_values.py::"],
    ),
    (
        "Keystone v3: a token body without `expires_at` (or with `null`) was accepted as an "
        "identity that never expires, cached for `cache_time`; expected "
        "`IdentityServiceUnavailable` (malformed answer).",
        "`authmw/validators/_keystone_v3.py` (`identity_from_token`)",
        ["v3: expires_at missing", "v3: expires_at null"],
    ),
    (
        "Deeply nested JSON (`[` x 100000) made `json.loads` raise `RecursionError`, which "
        "escaped the validators (the middleware turns it into a 503 and an ERROR log, and the "
        "circuit breaker counts it as a failure); expected `IdentityServiceUnavailable`.",
        "the answer parsers in `authmw/validators/_keystone_v3.py`, `keystone_v2.py`, "
        "`introspection.py`",
        ["deeply nested"],
    ),
    (
        "A timestamp whose UTC value is past year 9999 (`9999-12-31T23:59:59-01:00`) made "
        "`parse_timestamp` raise `OverflowError`; an epoch integer too large for a float "
        "(`exp: 10**400`) made `parse_epoch` raise `OverflowError`. Both escaped the "
        "validators instead of `IdentityServiceUnavailable`.",
        "`authmw/client/_base.py` (`parse_timestamp`), `authmw/client/acquire.py` "
        "(`parse_epoch`), and the validators that call them",
        ["out of range in UTC", "exp a huge integer"],
    ),
    (
        "No overall deadline on a validation: httpx timeouts are per read, so an identity "
        "service that trickled its answer (24 bytes every 0.3 s) held the call, a worker "
        "thread and a concurrency slot for as long as it liked (the test's answer took 5 s "
        "with a 0.5 s timeout; a hostile one can take hours).",
        "the remote validators' HTTP calls (now `authmw/validators/_remote.py`)",
        ["test_trickling_body"],
    ),
    (
        "No bound on the answer's size: an endless (chunked) answer was read into memory "
        "until the server stopped (32 MB, the test server's cap, read twice with the retry); "
        "unbounded otherwise.",
        "the remote validators' HTTP calls (now `authmw/validators/_remote.py`)",
        ["test_endless_body"],
    ),
]

NOTES = [
    "gunicorn honours a `SCRIPT_NAME` request header from peers in `forwarded_allow_ips` "
    "(127.0.0.1 by default) and answers **500** itself when it does not prefix the path; "
    "the request never reaches authmw. When it does prefix the path, gunicorn moves it out "
    "of `PATH_INFO`: authmw and the app both route on the shortened `PATH_INFO`, so the "
    "decision is consistent (tested).",
    "gunicorn drops header names holding `_` (`header_map=drop`), uvicorn passes them; "
    "authmw strips forged identity headers in either spelling.",
    "`/static/..;/admin` is public under a `/static/*` rule: Python servers and frameworks "
    "do not treat `;` path parameters as separators. A front proxy that does (Tomcat-style "
    "normalisation) must not sit in front of an allow-list that relies on prefixes.",
    "Recovery time after an outage is dominated by the circuit breaker's cool-down "
    "(`circuit_cooldown`, 10 s by default): the breaker opens after 5 failures and lets a "
    "probe through only when the cool-down has passed, however soon Keystone is back.",
    "The test Keystone runs 2 sync gunicorn workers and keeps a worker until the client "
    "has read its (delayed) answer, so a slow network path to Keystone also lowers its "
    "throughput; uncached validations can then queue past the validator's 5 s timeout "
    "(503, never 401), while cached tokens keep being served in about a millisecond.",
]


# -- 1. the test suite -------------------------------------------------------------------


def _pytest(args: list[str], long: bool, junit: Path, env: dict[str, str] | None = None) -> Any:
    environ = {**os.environ, "AUTHMW_LONG_TESTS": "1" if long else "0", **(env or {})}
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q"]
    return subprocess.run(  # noqa: S603 (our interpreter, fixed arguments)
        [*cmd, f"--junitxml={junit}"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )


def _cases(junit: Path) -> list[dict[str, str]]:
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        module = case.get("classname", "").rsplit(".", 1)[-1]
        cases.append({"id": f"{module}.py::{case.get('name')}", "outcome": outcome})
    return cases


def run_suite(long: bool, workdir: Path) -> dict[str, Any]:
    junit = workdir / "junit.xml"
    started = datetime.datetime.now()
    proc = _pytest(
        [
            "tests/hardening",
            "--ignore=tests/hardening/test_load_faults.py",
            "--deselect=tests/hardening/test_fuzz_target.py::test_libfuzzer_run",  # step 2
            "--hypothesis-show-statistics",
        ],
        long,
        junit,
    )
    seconds = (datetime.datetime.now() - started).total_seconds()
    examples: dict[str, int] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("tests/") and line.rstrip().endswith(":"):
            current = line.strip().rstrip(":").split("::")[-1]
        match = re.search(r"- (\d+) passing, (\d+) failing", line)
        if match and current:
            examples[current] = examples.get(current, 0) + int(match[1]) + int(match[2])
    return {"cases": _cases(junit), "examples": examples, "seconds": round(seconds, 1)}


# -- 2. libFuzzer --------------------------------------------------------------------------


def run_fuzzer(seconds: int, workdir: Path) -> dict[str, Any]:
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return {"ran": False, "reason": "atheris is not installed (pip install atheris)"}
    corpus = workdir / "corpus"
    shutil.copytree(REPO / "fuzz" / "corpus" / "middleware", corpus)
    proc = subprocess.run(  # noqa: S603 (our interpreter, our target)
        [
            sys.executable,
            str(REPO / "fuzz" / "fuzz_middleware.py"),
            f"-max_total_time={seconds}",
            "-timeout=20",
            "-rss_limit_mb=4096",
            str(corpus),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stderr
    done = re.findall(r"Done (\d+) runs in (\d+) second", out)
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", out)
    return {
        "ran": True,
        "returncode": proc.returncode,
        "runs": int(done[-1][0]) if done else None,
        "seconds": int(done[-1][1]) if done else seconds,
        "coverage": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "corpus": int(cov[-1][2]) if cov else None,
        "crash": proc.returncode != 0,
        "tail": "\n".join(out.splitlines()[-15:]) if proc.returncode != 0 else "",
    }


# -- 3. load and faults ----------------------------------------------------------------------


def run_load(long: bool, workdir: Path) -> dict[str, Any]:
    """tests/hardening/test_load_faults.py: one harness run, its figures and its assertions."""
    workdir.mkdir(parents=True, exist_ok=True)
    figures_path = workdir / "load.json"
    junit = workdir / "load-junit.xml"
    proc = _pytest(
        ["tests/hardening/test_load_faults.py"],
        long,
        junit,
        {"AUTHMW_RELIABILITY_JSON": str(figures_path)},
    )
    if not figures_path.exists():
        raise RuntimeError(f"the load test produced no figures:\n{proc.stdout[-5000:]}")
    figures: dict[str, Any] = json.loads(figures_path.read_text())
    figures["assertions"] = _cases(junit)
    return figures


# -- the document ------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _module_counts(cases: list[dict[str, Any]]) -> list[list[Any]]:
    by_module: dict[str, dict[str, int]] = {}
    for case in cases:
        module = case["id"].split("::")[0]
        counts = by_module.setdefault(module, {"passed": 0, "failed": 0, "skipped": 0})
        counts[case["outcome"]] += 1
    return [[m, c["passed"], c["failed"], c["skipped"]] for m, c in sorted(by_module.items())]


def _latencies(phase: dict[str, Any]) -> list[Any]:
    """p50, p99, p50 of cached tokens; blank where the run measured none."""
    if not phase["p99_ms"]:
        return ["", "", ""]
    return [phase["p50_ms"], phase["p99_ms"], phase["p50_cached_ms"]]


def render(
    suite: dict[str, Any],
    fuzz: dict[str, Any],
    load: dict[str, Any] | None,
    long: bool,
    generated_at: str | None = None,
) -> str:
    """The markdown document for the results of :func:`main`'s three steps."""
    now = generated_at or _now()
    failed = [c["id"] for c in suite["cases"] if c["outcome"] == "failed"]
    out: list[str] = []
    add = out.append
    add("# Reliability: what authmw was put through, and what it survived\n")
    add(
        "Generated by `python -m loadtest.report"
        + (" --long" if long else "")
        + (f" --fuzz-seconds {fuzz['requested']}" if fuzz.get("requested") else "")
        + f"` on {now} ({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores). Regenerate with the same command. Without `--long` it "
        "takes about 4 minutes; `--long` (about 30 minutes) runs hypothesis' long profile, "
        "libFuzzer for 10 minutes (unless `--fuzz-seconds`) and the soak. "
        "Do not edit by hand.\n"
    )
    add(
        "The same checks run in CI as `tests/hardening/` (short versions); "
        "`AUTHMW_LONG_TESTS=1 pytest tests/hardening` runs the long ones.\n"
    )

    add("## 1. Hostile input\n")
    total_examples = sum(suite["examples"].values())
    add(
        f"{len(suite['cases'])} tests in `tests/hardening` (load test aside), "
        f"{len(failed)} failing, in {suite['seconds']} s; the property-based ones ran "
        f"{total_examples} hypothesis examples in all.\n"
    )
    add(_table(["module", "passed", "failed", "skipped"], _module_counts(suite["cases"])))
    add("")
    add(
        _table(
            ["property test", "examples"],
            [[name, count] for name, count in sorted(suite["examples"].items())],
        )
    )
    add("")
    add(
        "What the property tests send (WSGI environs and ASGI `http`/`websocket` scopes built "
        "by hand, and raw bytes on a socket to real gunicorn and uvicorn): `X-Auth-Token` and "
        "every identity header in random case and `-`/`_` spellings, duplicated, with NUL, "
        "CR/LF, non-ASCII, raw bytes, 1 MB values and thousands of headers; random methods; "
        "paths with `..`, `//`, `%2e`, `%2f`, `%5c`, backslashes, double encoding, NUL; "
        "normal and delayed mode; native-async and thread-pool validators; an outage token "
        "and a validator that raises. Properties: no exception and no 500; no identity but "
        "the one of the single token the request carried; no forged identity header reaches "
        "the app; a request skips authentication only when its path, decoded and normalised "
        "as leniently as any app might, is an allow-listed route; no token in any log record "
        "at DEBUG (every logger, httpx and httpcore included).\n"
    )
    if fuzz.get("ran"):
        add(
            f"Coverage-guided fuzzing (atheris/libFuzzer, `fuzz/fuzz_middleware.py`): "
            f"{fuzz['runs']} inputs in {fuzz['seconds']} s, {fuzz['coverage']} coverage "
            f"edges, {fuzz['features']} features, corpus {fuzz['corpus']} inputs; "
            + (
                "**a property failed:**\n\n```\n" + fuzz["tail"] + "\n```\n"
                if fuzz["crash"]
                else "no property failed.\n"
            )
        )
    else:
        add(f"Coverage-guided fuzzing: not run here ({fuzz['reason']}).\n")

    add("## 2. Findings\n")
    rows = []
    for text, where, markers in FINDINGS:
        hits = [c for c in suite["cases"] if any(m in c["id"] for m in markers)]
        failing = [c for c in hits if c["outcome"] == "failed"]
        if not hits:
            status = "not tested in this run"
        elif failing:
            status = f"**open**: {len(failing)} of {len(hits)} tests fail"
        else:
            status = f"fixed: {len(hits)} tests pass"
        rows.append([text, where, status])
    add(_table(["finding", "where", "status"], rows))
    add("")
    if failed:
        add("Failing tests in this run:\n")
        add("\n".join(f"- `{name}`" for name in failed))
        add("")

    if load is not None:
        add("## 3. Load and faults\n")
        s = load["settings"]
        summary = load["summary"]
        add(
            "gunicorn (gthread, 1 worker, "
            f"{s['server_threads']} threads) with `WSGIAuthMiddleware` and uvicorn with "
            "`ASGIAuthMiddleware`, both validating with `KeystoneValidator` against a private "
            "copy of the test suite's real Keystone (30.0.0, 2 workers), each through its own "
            "TCP proxy on loopback (to slow or stall Keystone), sharing a Redis cache "
            f"({'on' if load['redis'] else 'off'}). A load generator in a separate process "
            f"sends {s['requests_per_phase']} requests per phase to each server over "
            f"{s['concurrency']} keep-alive connections each: about 60 % valid cached tokens "
            f"({s['warm_tokens']} distinct), {s['fresh_per_phase']} never-seen valid tokens "
            f"per phase, revoked ({s['revoked_tokens']} distinct, revoked before the run), "
            f"invalid ({s['invalid_per_phase']} distinct per phase, Fernet-shaped so Keystone "
            "is asked) and missing tokens. "
            f"{s['cycles']} cycle(s), {load['seconds']} s in all; `cache_time` "
            f"{s['cache_time']:.0f} s, validator timeout {s['validator_timeout']} s, circuit "
            "breaker defaults (5 failures, 10 s cool-down).\n"
        )
        add(
            "Phases: **normal**; **keystone-down** (Keystone killed, load sent, Keystone "
            "started again; *recovery* is the time from Keystone answering again to the server "
            "validating a never-seen token); **keystone-slow** (every Keystone answer delayed "
            f"{s['slow_delay']} s); **keystone-stalled** (delayed {s['stall_delay']} s, past "
            "the timeout; *recovery* counted from the delay's removal); **redis-down** (the "
            "shared cache stopped, then started); **normal-after**; **keystone-down-stale** "
            f"(servers of their own with `cache_time` {s.get('stale_cache_time', 2):g} s and "
            f"`stale_if_error` {s.get('stale_if_error', 3600):g} s; Keystone stopped for longer "
            "than `cache_time`: tokens validated before the outage are served from the cache "
            "(expected 200), never-seen tokens get 503, tokens revoked and seen rejected before "
            "the outage 401).\n"
        )
        checks = load.get("assertions", [])
        failing = [c["id"] for c in checks if c["outcome"] != "passed"]
        add(
            f"Assertions of `tests/hardening/test_load_faults.py` on this run: "
            f"{len(checks) - len(failing)} of {len(checks)} pass"
            + (": **failing** " + ", ".join(f"`{f}`" for f in failing) if failing else "")
            + ".\n"
        )
        add(
            f"**Totals: {summary['requests']} requests, {summary['wrongly_accepted']} wrongly "
            f"accepted, {summary['wrongly_rejected_cached']} valid cached tokens rejected, "
            f"{summary['valid_told_invalid']} valid tokens answered 401, "
            f"{summary['server_errors']} 5xx other than 503 or unanswered, "
            f"{summary['unavailable']} 503s.**\n"
        )
        rows = []
        for p in load["phases"]:
            st = p["statuses"]
            b, a = p["before"], p["after"]
            rows.append(
                [
                    p["cycle"],
                    p["phase"],
                    p["server"],
                    p["requests"],
                    st.get("200", 0),
                    st.get("401", 0),
                    st.get("503", 0),
                    p["wrongly_accepted"],
                    p["wrongly_rejected_cached"],
                    p["valid_told_invalid"],
                    *_latencies(p),
                    p["validations_sent"],
                    f"{b['threads']}→{a['threads']}",
                    f"{b['fds']}→{a['fds']}",
                    f"{b['connections']}→{a['connections']}",
                    round(a["rss_kb"] / 1024, 1),
                    "" if p["recovery_s"] is None else p["recovery_s"],
                ]
            )
        add(
            _table(
                [
                    "cycle",
                    "phase",
                    "server",
                    "requests",
                    "200",
                    "401",
                    "503",
                    "wrongly accepted",
                    "cached rejected",
                    "valid→401",
                    "p50 ms",
                    "p99 ms",
                    "p50 cached ms",
                    "Keystone calls",
                    "threads",
                    "fds",
                    "TCP conns",
                    "RSS MB",
                    "recovery s",
                ],
                rows,
            )
        )
        add("")
        add(
            "*Keystone calls*: validation requests that reached Keystone from that server "
            "(counted at its proxy). Keystone's own access log counted, per phase, for both "
            "servers: "
            + ", ".join(f"{k} {v}" for k, v in load["keystone_validations_by_phase"].items())
            + ". Latencies are measured by the load generator (client side, loopback).\n"
        )
        growth = summary["growth_since_first_phase"]
        add(
            "Leaks (end of the run minus end of the first phase): "
            + "; ".join(
                f"{server}: threads {g['threads']:+d}, fds {g['fds']:+d}, "
                f"TCP connections {g['connections']:+d}"
                for server, g in growth.items()
            )
            + ".\n"
        )
        add(
            "RSS after each phase (MB): "
            + "; ".join(
                f"{server}: " + ", ".join(f"{kb / 1024:.1f}" for kb in series)
                for server, series in load["rss_kb"].items()
            )
            + ".\n"
        )
        stats = load["middleware_stats"]
        cycles = s["cycles"]
        if cycles >= 2:
            lines = []
            for server in load["rss_kb"]:
                mine = [
                    p
                    for p in load["phases"]
                    if p["server"] == server and p["phase"] != "keystone-down-stale"
                ]
                cycled = [p for p in mine if p["phase"] != "steady"]
                first_end = [p for p in cycled if p["cycle"] == 1][-1]["after"]["rss_kb"]
                last_end = cycled[-1]["after"]["rss_kb"]
                steady = [p["after"]["rss_kb"] for p in mine if p["phase"] == "steady"]
                line = (
                    f"{server}: {first_end / 1024:.1f} MB after cycle 1, "
                    f"{last_end / 1024:.1f} MB after cycle {cycles} "
                    f"({(last_end - first_end) / 1024 / (cycles - 1):+.2f} MB per cycle), "
                    f"{stats[server]['cached_tokens']} identities cached at the end"
                )
                if steady:
                    line += (
                        f"; then {len(steady)} phases with only tokens already seen: "
                        f"{min(steady) / 1024:.1f} to {max(steady) / 1024:.1f} MB"
                    )
                lines.append(line)
            add(
                "Soak: "
                + "; ".join(lines)
                + ". Each cycle caches new tokens (fresh valid ones, and invalid ones in the "
                "negative cache), bounded by the LRU caches (`cache_size`, 10,000 entries "
                "each by default); the steady phases add no new token, so any growth there "
                "would be a leak.\n"
            )
        add(
            "Middleware counters at the end: "
            + "; ".join(
                f"{server}: {st['hits']} cache hits, {st['misses']} misses, "
                f"{st['negative_hits']} negative hits, {st['coalesced']} coalesced, "
                f"{st['validations_calls']} validator calls ({st['validations_ok']} ok, "
                f"{st['validations_invalid']} invalid, {st['validations_unavailable']} "
                f"unavailable), {st['validations_rejected_open']} refused by the open circuit"
                for server, st in stats.items()
            )
            + ".\n"
        )

    add("## 4. Notes\n")
    add("\n".join(f"- {note}" for note in NOTES))
    add("")
    return "\n".join(out)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__)
    parser.add_argument("--long", action="store_true", help="soak, long profiles")
    parser.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    parser.add_argument("--fuzz-seconds", type=int, default=None)
    parser.add_argument("--no-load", action="store_true", help="skip the load and fault run")
    parser.add_argument(
        "--from-json", default=None, help="render again from a --json file (no new run)"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        text = render(
            saved["suite"], saved["fuzz"], saved["load"], saved["long"], saved["generated_at"]
        )
        Path(args.out).write_text(text)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="authmw-report-"))
    try:
        print("[report] hardening test suite", file=sys.stderr, flush=True)
        suite = run_suite(args.long, workdir)
        seconds = args.fuzz_seconds or (600 if args.long else 60)
        print(f"[report] libFuzzer for {seconds}s", file=sys.stderr, flush=True)
        fuzz = run_fuzzer(seconds, workdir)
        fuzz["requested"] = args.fuzz_seconds
        load = None
        if not args.no_load:
            print("[report] load and faults", file=sys.stderr, flush=True)
            load = run_load(args.long, workdir / "load")
        generated_at = _now()
        Path(args.out).write_text(render(suite, fuzz, load, args.long, generated_at))
        if args.json:
            saved = {
                "suite": suite,
                "fuzz": fuzz,
                "load": load,
                "long": args.long,
                "generated_at": generated_at,
            }
            Path(args.json).write_text(json.dumps(saved, indent=1))
        print(f"[report] wrote {args.out}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
