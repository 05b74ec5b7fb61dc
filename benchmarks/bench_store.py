"""LocalTokenStore.validate() latency on a store holding 1,000,000 tokens.

    .venv/bin/python benchmarks/bench_store.py                 # SQLite in a temp folder
    .venv/bin/python benchmarks/bench_store.py --postgres      # a private PostgreSQL, started here
    .venv/bin/python benchmarks/bench_store.py --db URL        # an existing, empty database
    .venv/bin/python benchmarks/bench_store.py --peppers 2     # two peppers (one digest each)

The table is filled with ``--tokens`` rows in one bulk insert (executemany on
SQLite, COPY on PostgreSQL); all but a sample are random digests, which cost
a lookup exactly as real tokens do (the index is on the digest). Build times
depend mostly on the disk. Then, single
threaded, without the middleware's cache, it times:

- hit: a known token already used this minute (read only);
- first use: a known token seen for the first time (read + last_used_at write);
- unknown: a well-formed token that is not in the store;
- malformed: a string that fails the format/checksum check (no database).

Prints p50 / p99 / mean per case in microseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from authmw import InvalidToken  # noqa: E402
from authmw.store import LocalTokenStore  # noqa: E402
from authmw.store._tokens import new_token  # noqa: E402


def _rows(store: LocalTokenStore, count: int, known: list[str]) -> Iterator[tuple[Any, ...]]:
    """``count`` rows in table order: the ``known`` tokens plus random digests.

    Rows go in digest order (and users in name order), so the indexes grow at
    their end: the build is about twice as fast as in random order, and
    lookups cost the same.
    """
    now = time.time()
    expires = now + 30 * 86400
    digests = [store._ring.digests(token)[-1] for token in known]
    pepper = store._ring.newest
    digests += [os.urandom(32) for _ in range(count - len(known))]
    digests.sort()
    for n, digest in enumerate(digests):
        user = f"user-{n * 50_000 // count:05d}"  # 50,000 users, 20 tokens each
        project = f"project-{n % 1000}"
        yield (
            f"{n:016x}",
            digest,
            user,
            user,
            "default",
            "Default",
            project,
            project,
            "default",
            "Default",
            None,
            None,
            None,
            "member,reader",
            "",
            now,
            expires,
            None,
            None,
            "",  # schema 4: no scopes,
            0,  # not read-only,
            "",  # no networks,
            None,  # no idle time,
            None,  # never rotated,
            pepper,  # the newest pepper (None: plain SHA-256)
        )


def _time(func: Callable[[str], object], tokens: list[str]) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for token in tokens:
        start = clock()
        with contextlib.suppress(InvalidToken):
            func(token)
        samples.append((clock() - start) / 1000)
    return samples


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {name:<40} n={len(samples):>6}  p50 {p50:8.1f} us  p99 {p99:8.1f} us"
        f"  mean {statistics.fmean(samples):8.1f} us"
    )


def run(url: str, count: int, samples: int, peppers: int = 0) -> None:
    known = [new_token() for _ in range(2 * samples)]
    ring = {f"p{n}": f"pepper number {n} of this benchmark" for n in range(peppers)} or None
    store = LocalTokenStore(url, max_ttl=None, require_expiry=False, pepper=ring)
    print(f"store: {store.url} ({store.dialect}), {count:,} tokens, {peppers} peppers")

    start = time.perf_counter()
    inserted = store._insert_rows(_rows(store, count, known))
    print(f"  built in {time.perf_counter() - start:.1f} s ({inserted:,} rows)")
    if store.dialect == "sqlite":  # start from a checkpointed WAL, as a long-running store is
        store._backend.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    else:  # fresh planner statistics, as autovacuum would have made them
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE authmw_tokens")

    tokens = list(known)
    random.shuffle(tokens)
    first_use, warm = tokens[:samples], tokens[samples:]
    for token in warm:  # first use of these: last_used_at written now
        store.validate(token)
    order = [random.choice(warm) for _ in range(samples)]

    assert store.validate(warm[0]).roles == ("member", "reader")
    _report("validate: hit (read only)", _time(store.validate, order))
    _report("validate: first use (+ last_used write)", _time(store.validate, first_use))
    _report("validate: unknown token", _time(store.validate, [new_token() for _ in range(samples)]))
    malformed = ["amw_" + secrets.token_hex(24) + "x" for _ in range(samples)]
    _report("validate: malformed (no database)", _time(store.validate, malformed))
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="URL", help="an existing, empty database")
    where.add_argument(
        "--postgres", action="store_true", help="start a private PostgreSQL (tests/_services.py)"
    )
    parser.add_argument("--tokens", type=int, default=1_000_000, help="rows in the store")
    parser.add_argument("--samples", type=int, default=5000, help="timed calls per case")
    parser.add_argument(
        "--peppers", type=int, default=0, help="peppers (0: plain SHA-256; 2: two digests)"
    )
    args = parser.parse_args()

    if args.db:
        run(args.db, args.tokens, args.samples, args.peppers)
    elif args.postgres:
        sys.path.insert(0, str(REPO / "tests"))
        from _services import PostgresServer

        server = PostgresServer()
        server.start()
        try:
            run(server.create_database(), args.tokens, args.samples, args.peppers)
        finally:
            server.destroy()
    else:
        folder = tempfile.mkdtemp(prefix="authmw-bench-")
        try:
            run(f"sqlite:///{folder}/tokens.db", args.tokens, args.samples, args.peppers)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
