"""Before/after in one run: benchmarks/micro.py against a base revision and this checkout.

    python benchmarks/compare.py --base edcfa09 [--rounds 7] [--seconds 0.5]

The base revision is checked out once into ``.cache/bench-base/<rev>`` (a
git worktree); each round runs micro.py under the base tree and under this
tree, alternately and in fresh processes, so machine noise hits both alike.
The table shows the median over rounds (microseconds of overhead per
request over the bare app) and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tree(rev: str) -> Path:
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = REPO / ".cache" / "bench-base" / commit[:12]
    if not (tree / "authmw").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(tree), commit],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    return tree


def _round(tree: Path, seconds: float) -> dict[str, float | None]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "micro.py"), "--seconds", str(seconds)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float | None] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    trees = {"base": _tree(args.base), "this": REPO}
    runs: dict[str, list[dict[str, float | None]]] = {"base": [], "this": []}
    loads = []
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(_round(tree, args.seconds))
        loads.append(os.getloadavg()[0])
    print(
        f"base {args.base}, {args.rounds} alternating rounds, load average "
        f"{min(loads):.1f}-{max(loads):.1f}, {os.cpu_count()} CPUs"
    )
    print("| scenario | base, us | this, us | change, us |")
    print("| --- | --- | --- | --- |")
    for scenario in runs["this"][0]:
        cells = []
        medians = {}
        for name in ("base", "this"):
            values = [r[scenario] for r in runs[name] if r.get(scenario) is not None]
            medians[name] = statistics.median(values) if values else None  # type: ignore[type-var]
            cells.append(f"{medians[name]:.2f}" if medians[name] is not None else "n/a")
        base, this = medians["base"], medians["this"]
        change = f"{this - base:+.2f}" if base is not None and this is not None else "-"
        print(f"| {scenario} | {cells[0]} | {cells[1]} | {change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
