"""PyJWT against joserfc on one token: the comparison docs/jwt.md gives for the choice.

    .venv/bin/python benchmarks/compare_jose.py   # PyJWT: installed with keystonemiddleware

Decodes one RS256-2048 and one ES256 token with each library, with the same
checks (signature, algorithm allow-list, iss, aud, exp with a leeway), and the
bare ``cryptography`` verification for reference. Five interleaved rounds of
2000 calls; prints the best and the median of the rounds' p50, in microseconds.
"""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry


def p50(call: Callable[[], Any], n: int = 2000) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    now = int(time.time())
    claims = {"iss": "https://idp.test", "aud": "api", "sub": "u1", "exp": now + 3600, "iat": now}
    results: dict[tuple[str, str], list[float]] = {}
    for alg, private in (
        ("RS256", rsa.generate_private_key(65537, 2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ):
        text = pyjwt.encode(claims, private, algorithm=alg, headers={"kid": "k1"})
        public = private.public_key()
        key = (RSAKey if alg == "RS256" else ECKey).import_key(public)
        registry = JWTClaimsRegistry(
            leeway=30,
            iss={"essential": True, "value": "https://idp.test"},
            aud={"essential": True, "values": ["api"]},
            exp={"essential": True},
        )

        def with_pyjwt(text: str = text, public: Any = public, alg: str = alg) -> None:
            pyjwt.decode(
                text,
                public,
                algorithms=[alg],
                audience=["api"],
                issuer="https://idp.test",
                leeway=30,
                options={"require": ["exp", "iss", "aud"]},
            )

        def with_joserfc(
            text: str = text, key: Any = key, alg: str = alg, registry: Any = registry
        ) -> None:
            registry.validate(jose_jwt.decode(text, key, algorithms=[alg]).claims)

        head, body, sig = text.split(".")
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        message = f"{head}.{body}".encode()
        if alg == "RS256":

            def bare(public: Any = public, sig: bytes = signature, msg: bytes = message) -> None:
                public.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        else:
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )

            def bare(public: Any = public, der: bytes = der, msg: bytes = message) -> None:
                public.verify(der, msg, ec.ECDSA(hashes.SHA256()))

        for _ in range(5):
            for name, call in (
                ("PyJWT", with_pyjwt),
                ("joserfc", with_joserfc),
                ("cryptography", bare),
            ):
                results.setdefault((alg, name), []).append(p50(call))
    print(f"PyJWT {pyjwt.__version__}\n")
    print("| token | library | best p50, us | median p50, us |")
    print("| --- | --- | --- | --- |")
    for (alg, name), values in results.items():
        print(f"| {alg} | {name} | {min(values):.1f} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
