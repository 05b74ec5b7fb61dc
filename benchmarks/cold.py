"""CPU cost of a cold validation's answer: Keystone's bytes to an identity.

    python benchmarks/cold.py [--count 20000] [--rounds 5] [--base REV]

Times ``interpret_validation_response`` (what ``KeystoneValidator`` runs on
each answer, blocking and async alike) over ``--count`` answers of
different users, built beforehand as Keystone sends them (the body of
``benchmarks/memory.py``). Reported: microseconds per answer, the median of
``--rounds`` rounds, each in a fresh process. With ``--base``, the same runs
against that revision (checked out once into ``.cache/bench-base/``),
alternately. The network call this follows takes milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _support import checkouts, child_figure


def _measure(count: int) -> float:
    """Microseconds per answer in this process."""
    from memory import answer

    from authmw.validators._keystone_v3 import interpret_validation_response

    bodies = [answer(n) for n in range(count)]
    interpret_validation_response(200, bodies[0], now=0.0)  # warm: imports, dictionaries
    start = time.perf_counter()
    for body in bodies:
        interpret_validation_response(200, body, now=0.0)
    return (time.perf_counter() - start) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", help="git revision to measure beside this checkout")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(_measure(args.count))
        return 0
    trees = checkouts(args.base)
    rounds: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(child_figure(__file__, tree, "--count", str(args.count)))
    print(f"Keystone answer -> identity, {args.count:,} answers, median of {args.rounds} rounds\n")
    print("| authmw | us per answer (median) | min-max |")
    print("| --- | --- | --- |")
    for name, figures in rounds.items():
        print(
            f"| {name} | {statistics.median(figures):.1f} | {min(figures):.1f}-{max(figures):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
