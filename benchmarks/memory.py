"""Memory per cached identity, as a worker holds them: RSS and tracemalloc.

    python benchmarks/memory.py [--count 100000] [--base REV]

A WSGI middleware whose validator parses Keystone's answer for a v3
project token (catalog off, the bytes as Keystone sends them) for each
token, exactly as ``KeystoneValidator`` does
(``interpret_validation_response``), validates ``--count`` tokens (each a
different user) and then serves one more request per token from the cache,
which builds what the hot path memoises. Reported per
identity: the growth of the process's resident set (``VmRSS``) and of
tracemalloc's traced memory, each measured in its own fresh process. With
``--base``, the same runs against that revision (checked out once into
``.cache/bench-base/``), alternately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from _support import checkouts, child_figure, hello_wsgi, wsgi_caller

_DOMAIN = {"id": "d0a3d29fb654442f9ff0102739548008", "name": "demo"}
BODY = {
    "methods": ["password"],
    "user": {
        "domain": _DOMAIN,
        "id": "a6b05be4e4e54d55be0ad94c4453ec4d",
        "name": "demo-user",
        "password_expires_at": None,
    },
    "audit_ids": ["SN6zsK-FRACe296XXUZKLw"],
    "expires_at": "2099-11-23T13:27:43.000000Z",
    "issued_at": "2026-11-23T12:27:43.000000Z",
    "project": {"domain": _DOMAIN, "id": "15019379c35849969f88869cb10f7112", "name": "demo"},
    "is_domain": False,
    "roles": [
        {"id": "b7873bcbdc2f4180a83443ab318626ca", "name": "member"},
        {"id": "4ca98e9ddabe4a33bee3ef93409a918e", "name": "reader"},
    ],
}


def answer(n: int) -> bytes:
    """Keystone's answer (``json.dumps`` separators, as Keystone sends it) for user ``n``."""
    token = {
        **BODY,
        "user": {**BODY["user"], "id": f"{n:032x}", "name": f"user-{n:08d}"},  # type: ignore[dict-item]
        "audit_ids": [f"audit{n:017d}"],
    }
    return json.dumps({"token": token}).encode()


def _measure(count: int, mode: str) -> float:
    """Bytes per identity in this process (``rss`` or ``tracemalloc``)."""
    import gc
    import tracemalloc

    from authmw import WSGIAuthMiddleware
    from authmw.validators._keystone_v3 import interpret_validation_response

    class Parsing:
        def validate(self, token: str, *, allow_expired: bool = False) -> Any:
            body = answer(int(token.rsplit("-", 1)[1]))
            return interpret_validation_response(200, body, now=0.0)

    def run(tokens: list[str]) -> None:
        for token in tokens:
            status = wsgi_caller(app, token)()
            if not status.startswith("200"):
                raise RuntimeError(status)

    tokens = [f"synthetic-token-{n:08d}" for n in range(count)]
    app = WSGIAuthMiddleware(
        hello_wsgi, validator=Parsing(), cache_size=count + 10, cache_time=3600
    )
    run(tokens[:10])
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss()
    run(tokens)  # validated and cached
    run(tokens)  # one cache hit each: what the hot path memoises is built
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else _rss()
    return (after - before) / count


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--base", help="git revision to measure beside this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(_measure(args.count, args.child))
        return 0
    trees = checkouts(args.base)
    print(f"{args.count:,} cached Keystone project identities, median of {args.rounds} rounds\n")
    print("| authmw | RSS per identity | tracemalloc per identity |")
    print("| --- | --- | --- |")
    results: dict[str, dict[str, list[float]]] = {
        name: {"rss": [], "tracemalloc": []} for name in trees
    }
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for mode in ("rss", "tracemalloc"):
                results[name][mode].append(
                    child_figure(__file__, tree, mode, "--count", str(args.count))
                )
    for name, figures in results.items():
        rss = statistics.median(figures["rss"])
        traced = statistics.median(figures["tracemalloc"])
        print(f"| {name} | {rss:,.0f} bytes | {traced:,.0f} bytes |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
