"""JWTValidator: cost of a first verification, of the async forms, and of a cached token.

    .venv/bin/python benchmarks/bench_jwt.py            # about 30 s
    .venv/bin/python benchmarks/bench_jwt.py --count 5000

Every token is new (signed here with ``cryptography``, a fresh ``jti`` each),
so each call is a first verification: parse, key lookup (keys already
loaded), signature, claims, identity. Prints p50/p99 in microseconds:

1. ``validate()`` per algorithm (RS256-2048, ES256, PS256-2048, EdDSA);
2. async: ``await avalidate()`` (verification on the event loop) against
   the same call moved to authmw's worker threads (``run_blocking``), one at
   a time and 200 at once (wall time per token), with the longest the event
   loop was kept from running a 1 ms ticker;
3. a cached token through ``WSGIAuthMiddleware``: JWTValidator against
   InMemoryValidator with the same token and identity (the cache answers
   both: the cost must be the same), and with a short token.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from jwt_tokens import AUDIENCE, ISSUER, SigningKey, claims, token  # noqa: E402

from authmw import InMemoryValidator, Issuer, JWTValidator, WSGIAuthMiddleware  # noqa: E402
from authmw.validators.base import run_blocking  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def tokens(key: SigningKey, count: int) -> list[str]:
    return [token(key, claims(jti=uuid.uuid4().hex)) for _ in range(count)]


def timed(call: Callable[[str], Any], texts: list[str]) -> list[float]:
    samples = []
    for text in texts:
        started = time.perf_counter()
        call(text)
        samples.append(time.perf_counter() - started)
    return samples


async def loop_lag(work: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds of ``await work()``, longest gap of a 1 ms ticker meanwhile)."""
    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await work()
    wall = time.perf_counter() - started
    running = False
    await tick
    return wall, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="tokens per measurement")
    args = parser.parse_args()
    count = args.count
    keys = {
        "RS256-2048": SigningKey.rsa("rs"),
        "ES256": SigningKey.ec("es"),
        "PS256-2048": SigningKey.rsa("ps", alg="PS256"),
        "EdDSA (Ed25519)": SigningKey.ed25519("ed"),
    }
    validator = JWTValidator(
        Issuer(ISSUER, audiences=AUDIENCE, keys=[k.jwk() for k in keys.values()])
    )

    print("\n1. First verification, validate() (new token each call)\n")
    print("| algorithm | p50, us | p99, us |")
    print("| --- | --- | --- |")
    for name, key in keys.items():
        texts = tokens(key, count)
        for text in texts[:50]:
            validator.validate(text)  # warm-up (imports, caches of the crypto library)
        p50, p99 = percentiles(timed(validator.validate, texts[50:]))
        print(f"| {name} | {p50:.1f} | {p99:.1f} |")

    print("\n2. Async: verification on the event loop vs in a worker thread\n")
    print(
        "| algorithm | form | one at a time p50, us | 200 at once, us per token "
        "| longest loop stall, ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in ("RS256-2048", "ES256"):
        key = keys[name]
        forms: dict[str, Callable[[str], Any]] = {
            "inline (avalidate)": validator.avalidate,
            "thread hop (run_blocking)": lambda t: run_blocking(
                functools.partial(validator.validate, t)
            ),
        }
        for form, call in forms.items():
            texts = tokens(key, count)

            async def one_by_one(
                call: Callable[[str], Any] = call, texts: list[str] = texts
            ) -> list[float]:
                samples = []
                for text in texts:
                    started = time.perf_counter()
                    await call(text)
                    samples.append(time.perf_counter() - started)
                return samples

            p50, _ = percentiles(asyncio.run(one_by_one()))
            batch = tokens(key, 200 * 5)

            async def concurrent(
                call: Callable[[str], Any] = call, batch: list[str] = batch
            ) -> tuple[float, float]:
                walls, stalls = [], []
                for n in range(5):
                    chunk = batch[n * 200 : (n + 1) * 200]

                    async def gather(chunk: list[str] = chunk) -> None:
                        await asyncio.gather(*(call(t) for t in chunk))

                    wall, stall = await loop_lag(gather)
                    walls.append(wall / 200)
                    stalls.append(stall)
                return statistics.median(walls), statistics.median(stalls)

            per_token, stall = asyncio.run(concurrent())
            print(f"| {name} | {form} | {p50:.1f} | {per_token * 1e6:.1f} | {stall * 1e3:.2f} |")

    print("\n3. Cached token through WSGIAuthMiddleware (p50 per request)\n")
    print("| validator | us per request |")
    print("| --- | --- |")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    jwt_text = tokens(keys["RS256-2048"], 1)[0]
    identity = validator.validate(jwt_text)
    short = "static-token-0123456789"
    stacks = {
        "JWTValidator, RS256 token": (validator, jwt_text),
        "InMemoryValidator, the same token and identity": (
            InMemoryValidator({jwt_text: identity}),
            jwt_text,
        ),
        "InMemoryValidator, a 23-character token": (InMemoryValidator({short: identity}), short),
    }
    for label, (v, text) in stacks.items():
        mw = WSGIAuthMiddleware(app, v, token_sources=["Authorization: Bearer"])
        base = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "x",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "HTTP_AUTHORIZATION": f"Bearer {text}",
        }

        def request(_: str, mw: Any = mw, base: dict[str, Any] = base) -> None:
            list(mw(dict(base), lambda status, headers, exc=None: None))

        request("")  # validates once; cached from now on
        samples = timed(request, [""] * (count * 10))
        print(f"| {label} | {percentiles(samples)[0]:.2f} |")


if __name__ == "__main__":
    main()
