"""Hand-made JWTs for the tests, signed with ``cryptography`` directly (no JOSE library).

The hostile cases need tokens no well-behaved library would produce
(``alg=none``, HS256 keyed with an RSA public key, tampered payloads...), and
the good ones must not be signed by the library under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://issuer.test/realms/acme"
AUDIENCE = "https://api.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def _int(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


@dataclass
class SigningKey:
    """A private key, its kid and algorithm, and its public JWK."""

    alg: str
    kid: str
    private: Any

    @classmethod
    def rsa(cls, kid: str = "rsa-1", alg: str = "RS256", bits: int = 2048) -> SigningKey:
        return cls(alg, kid, rsa.generate_private_key(65537, bits))

    @classmethod
    def ec(cls, kid: str = "ec-1", curve: ec.EllipticCurve | None = None) -> SigningKey:
        curve = curve or ec.SECP256R1()
        alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[curve.name]
        return cls(alg, kid, ec.generate_private_key(curve))

    @classmethod
    def ed25519(cls, kid: str = "ed-1") -> SigningKey:
        return cls("EdDSA", kid, ed25519.Ed25519PrivateKey.generate())

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwk(self, *, with_alg: bool = True, **extra: Any) -> dict[str, Any]:
        public = self.public
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk: dict[str, Any] = {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
        elif isinstance(public, ec.EllipticCurvePublicKey):
            numbers_ec = public.public_numbers()
            size = (public.curve.key_size + 7) // 8
            crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
            jwk = {
                "kty": "EC",
                "crv": crv[public.curve.name],
                "x": b64(numbers_ec.x.to_bytes(size, "big")),
                "y": b64(numbers_ec.y.to_bytes(size, "big")),
            }
        else:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        jwk.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            jwk["alg"] = self.alg
        jwk.update(extra)
        return jwk

    def sign(self, signing_input: bytes, alg: str | None = None) -> bytes:
        alg = alg or self.alg
        digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
        if alg.startswith("RS"):
            return bytes(self.private.sign(signing_input, padding.PKCS1v15(), digest[alg[2:]]))
        if alg.startswith("PS"):
            pss = padding.PSS(padding.MGF1(digest[alg[2:]]), digest[alg[2:]].digest_size)
            return bytes(self.private.sign(signing_input, pss, digest[alg[2:]]))
        if alg.startswith("ES"):
            der = self.private.sign(signing_input, ec.ECDSA(digest[alg[2:]]))
            r, s = decode_dss_signature(der)
            size = (self.private.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return bytes(self.private.sign(signing_input))


def claims(**overrides: Any) -> dict[str, Any]:
    """Good claims for ISSUER/AUDIENCE, valid for an hour; ``None`` removes a claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "preferred_username": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "roles": ["reader"],
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def token(
    key: SigningKey | None,
    payload: dict[str, Any] | None = None,
    *,
    header: dict[str, Any] | None = None,
    alg: str | None = None,
) -> str:
    """A compact JWS of ``payload`` signed with ``key`` (header: alg, typ JWT, kid)."""
    alg = alg or (key.alg if key else "none")
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key is not None:
        head["kid"] = key.kid
    head.update(header or {})
    head = {k: v for k, v in head.items() if v is not None}
    signing_input = f"{b64json(head)}.{b64json(payload if payload is not None else claims())}"
    signature = b"" if key is None else key.sign(signing_input.encode(), alg)
    return f"{signing_input}.{b64(signature)}"


def raw_token(header: str, payload: str, signature: str = "") -> str:
    return f"{header}.{payload}.{signature}"


def hs256(secret: bytes, payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An HS256 token keyed with ``secret``."""
    head = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = f"{b64json(head)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def resign(token_text: str, key: SigningKey, **claim_changes: Any) -> str:
    """The token with changed claims, signed again by ``key`` (the issuer itself)."""
    header, payload, _ = token_text.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claim_changes)
    head = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return token(key, data, header=head)


def signed_text(key: SigningKey, payload_text: str, header: dict[str, Any] | None = None) -> str:
    """A token of ``payload_text`` as it is (JSON with NaN, say), signed by ``key``."""
    head = {"alg": key.alg, "typ": "JWT", "kid": key.kid, **(header or {})}
    signing_input = f"{b64json(head)}.{b64(payload_text.encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"
