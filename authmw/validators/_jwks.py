"""An issuer's signing keys: parsed once, found by ``kid``, refreshed within limits.

:class:`RemoteKeys` holds the last good key set of one issuer (from its JWKS
URL, found by OpenID discovery or given) and decides, without I/O, when to
fetch it again:

- a key set older than ``max_age`` is fetched again by the next validation
  that uses it (the others go on with the current set meanwhile);
- a ``kid`` the set does not have triggers a fetch, but at most one fetch
  (of any kind) starts per ``min_refresh_interval``, however many such tokens
  arrive: threads and tasks that need its result wait for the one in flight,
  the others get their answer from the current set at once;
- a failed fetch keeps the last good set working until it is ``max_stale``
  old; from then on every token is answered
  :class:`~authmw.IdentityServiceUnavailable` (it may be valid, nobody can
  tell), until a fetch succeeds;
- a ``kid`` still unknown once the allowed fetch is done is
  :class:`~authmw.InvalidToken`, never an outage: anonymous clients cannot
  cause 503s or open the circuit breaker with made-up ``kid``\\ s;
- a key missing from a successfully fetched set no longer validates, and its
  marker is reported so that cached identities of its tokens are dropped.

The fetch itself is a generator of steps (:class:`httpx.Request` to send, or
:class:`Wait` for a fetch in flight) run by the validator's blocking or async
driver, so threads and tasks share one flight (a
:class:`concurrent.futures.Future`).

joserfc is imported only when keys are parsed, never when authmw is imported.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .. import _fork
from ..client._base import http_url
from ..errors import ConfigurationError, IdentityServiceUnavailable, InvalidToken

__all__ = [
    "ALGORITHM_FAMILIES",
    "KeySnapshot",
    "RemoteKeys",
    "StaticKeys",
    "Step",
    "VerificationKey",
    "Wait",
    "hmac_key",
    "parse_jwk_set",
    "static_keys",
]

log = logging.getLogger("authmw.jwt")

#: Most keys read from one JWKS; the rest are ignored (logged).
MAX_KEYS = 100
#: Smallest RSA modulus accepted, in bits.
MIN_RSA_BITS = 2048

# Algorithm -> (key type, curve or None).
ALGORITHM_FAMILIES: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    "Ed25519": ("OKP", "Ed25519"),
    "HS256": ("oct", None),
    "HS384": ("oct", None),
    "HS512": ("oct", None),
}


@dataclass(frozen=True)
class VerificationKey:
    """One public key (or the configured HMAC secret) and the algorithms it may verify."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any  # a joserfc key
    marker: str
    """``jwk:`` + a digest of the issuer and the key's thumbprint: the audit id of its tokens."""


class KeySnapshot:
    """An immutable key set, as fetched (or configured) at ``fetched_at``."""

    __slots__ = ("by_kid", "fetched_at", "keys", "markers")

    def __init__(self, keys: Sequence[VerificationKey], fetched_at: float) -> None:
        self.keys = tuple(keys)
        self.fetched_at = fetched_at
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self.by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self.markers = frozenset(key.marker for key in self.keys)

    def find(self, kid: str | None, alg: str) -> tuple[VerificationKey | None, bool]:
        """(the key for ``kid`` and ``alg`` or None, whether the set knows ``kid`` at all).

        A token without ``kid`` matches only when exactly one key of the set
        may verify ``alg``: trying several keys per token would multiply the
        cost of every forged one.
        """
        if kid is None:
            matches = [key for key in self.keys if alg in key.algorithms]
            return (matches[0] if len(matches) == 1 else None), bool(matches)
        candidates = self.by_kid.get(kid, ())
        for key in candidates:
            if alg in key.algorithms:
                return key, True
        return None, bool(candidates)


# -- parsing keys ---------------------------------------------------------------------


def _marker(issuer: str, thumbprint: str) -> str:
    digest = hashlib.sha256(f"{issuer}\x00{thumbprint}".encode()).hexdigest()
    return f"jwk:{digest[:24]}"


def _key_algorithms(jwk: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    """The allowed algorithms a public JWK can verify (its ``alg`` if it names one)."""
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    fits = {
        alg
        for alg, (family, curve) in ALGORITHM_FAMILIES.items()
        if family == kty and family != "oct" and (curve is None or curve == crv)
    }
    if kty == "OKP" and crv not in ("Ed25519", "Ed448"):
        fits = set()
    named = jwk.get("alg")
    if named is not None:
        fits &= {named}
    return frozenset(fits & allowed)


def _problem(jwk: Any) -> str | None:
    """Why a JWKS entry is not a usable public signature key, or None."""
    if not isinstance(jwk, Mapping):
        return "not a JSON object"
    if jwk.get("use", "sig") != "sig":
        return f"use {jwk.get('use')!r}"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops without 'verify'"
    kty = jwk.get("kty")
    if kty == "oct":
        return "a symmetric key (HMAC secrets are never taken from a JWKS)"
    if kty not in ("RSA", "EC", "OKP"):
        return f"key type {kty!r}"
    if "d" in jwk or "p" in jwk:
        return "it holds PRIVATE key material: the provider's JWKS is misconfigured"
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "a kid that is not a string"
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        return "an alg that is not a string"
    if kty == "RSA":
        bits = _rsa_bits(jwk.get("n"))
        if bits < MIN_RSA_BITS:
            return f"an RSA key of {bits} bits (at least {MIN_RSA_BITS} are needed)"
    return None


def _rsa_bits(n: Any) -> int:
    if not isinstance(n, str) or len(n) > 4096:
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def parse_jwk_set(
    data: Any, issuer: str, allowed: frozenset[str], *, source: str
) -> tuple[VerificationKey, ...]:
    """The usable public signature keys of a JWKS document.

    Entries that are not (encryption keys, symmetric or private keys, small
    RSA keys, keys for no allowed algorithm, malformed ones) are left out and
    logged; a document that is not a JWKS raises ``ValueError``.
    """
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK set (no 'keys' list)")
    entries: list[Any] = data["keys"]
    if len(entries) > MAX_KEYS:
        log.warning("%s lists %d keys; only the first %d are read", source, len(entries), MAX_KEYS)
        entries = entries[:MAX_KEYS]
    keys: list[VerificationKey] = []
    for index, jwk in enumerate(entries):
        problem = _problem(jwk)
        algorithms = frozenset() if problem else _key_algorithms(jwk, allowed)
        if problem is None and not algorithms:
            log.debug("%s key %d (kid %r) fits no allowed algorithm", source, index, jwk.get("kid"))
            continue
        if problem is None:
            try:
                key = import_key(dict(jwk))
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                problem = f"malformed ({type(exc).__name__})"
        if problem is not None:
            kid = jwk.get("kid") if isinstance(jwk, Mapping) else None
            level = logging.WARNING if "PRIVATE" in problem else logging.DEBUG
            log.log(level, "%s key %d (kid %r) left out: %s", source, index, kid, problem)
            continue
        keys.append(
            VerificationKey(jwk.get("kid"), algorithms, key, _marker(issuer, key.thumbprint()))
        )
    return tuple(keys)


def static_keys(
    option: str, keys: Any, issuer: str, allowed: frozenset[str]
) -> tuple[VerificationKey, ...]:
    """Keys given in the configuration: a JWKS, a list of JWKs, or PEM public keys."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(keys, (str, bytes)) or (isinstance(keys, Mapping) and "keys" not in keys):
        keys = [keys]
    if isinstance(keys, Mapping):
        entries = list(keys["keys"]) if isinstance(keys["keys"], list) else None
    elif isinstance(keys, Sequence):
        entries = list(keys)
    else:
        entries = None
    if not entries:
        raise ConfigurationError(option, "must be a JWKS, a list of JWKs or PEM public keys")
    found: list[VerificationKey] = []
    jwks: list[Any] = []
    for entry in entries:
        if isinstance(entry, (str, bytes)):
            text = entry.encode() if isinstance(entry, str) else entry
            try:
                public = load_pem_public_key(text)
            except (ValueError, TypeError):
                raise ConfigurationError(
                    option, "a string must be a PEM public key (-----BEGIN PUBLIC KEY-----)"
                ) from None
            jwks.append(_jwk_of(public))
        elif isinstance(entry, Mapping):
            problem = _problem(entry)
            if problem is not None:
                raise ConfigurationError(option, f"key {entry.get('kid')!r}: {problem}")
            jwks.append(dict(entry))
        else:
            raise ConfigurationError(option, f"not a JWK or a PEM public key: {entry!r}")
    for jwk in jwks:
        parsed = parse_jwk_set({"keys": [jwk]}, issuer, allowed, source=option)
        if not parsed:
            raise ConfigurationError(
                option,
                f"key {jwk.get('kid')!r} cannot verify any of the algorithms {sorted(allowed)} "
                f"(or is malformed, or an RSA key under {MIN_RSA_BITS} bits)",
            )
        found.extend(parsed)
    return tuple(found)


def _jwk_of(public: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from joserfc.jwk import import_key

    kty: Any
    if isinstance(public, rsa.RSAPublicKey):
        kty = "RSA"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        kty = "EC"
    elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        kty = "OKP"
    else:
        raise ConfigurationError("keys", f"unsupported public key type {type(public).__name__}")
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    jwk: dict[str, Any] = import_key(pem, kty).as_dict(private=False)
    return jwk


def hmac_key(
    option: str, secret: Any, issuer: str, allowed: frozenset[str]
) -> tuple[VerificationKey, ...]:
    """The configured HMAC secret as a key (at least 16 bytes, never a public key)."""
    from joserfc.jwk import OctKey

    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise ConfigurationError(option, "must be a string or bytes")
    if len(secret) < 16:
        raise ConfigurationError(option, "must be at least 16 bytes")
    if secret.lstrip().startswith((b"-----BEGIN", b"ssh-", b"ecdsa-", b"{")):
        raise ConfigurationError(
            option, "looks like a public key: HMAC with a public key as the secret is refused"
        )
    key = OctKey.import_key(secret)
    thumb = hashlib.sha256(b"hmac\x00" + secret).hexdigest()
    return (VerificationKey(None, allowed, key, _marker(issuer, thumb)),)


# -- where the keys come from ---------------------------------------------------------------


class Wait:
    """A step: wait for a key fetch in flight (another thread's or task's)."""

    __slots__ = ("flight", "timeout")

    def __init__(self, flight: concurrent.futures.Future[None], timeout: float) -> None:
        self.flight = flight
        self.timeout = timeout


Step = httpx.Request | Wait


class StaticKeys:
    """Keys given in the configuration: never fetched, never stale."""

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        self.snapshot = KeySnapshot(keys, math.inf)

    def key_for(self, kid: str | None, alg: str) -> Generator[Step, Any, VerificationKey]:
        key, known = self.snapshot.find(kid, alg)
        if key is None:
            raise InvalidToken(_unknown(kid, known, alg))
        return key
        yield  # pragma: no cover  (makes this a generator)


def _unknown(kid: str | None, known: bool, alg: str) -> str:
    if known:
        return f"key {kid!r} does not verify {alg}" if kid else f"several keys verify {alg}: no kid"
    return f"unknown key {kid!r}" if kid else f"no key verifies {alg}"


class RemoteKeys:
    """The keys of one issuer from its JWKS URL (given, or found by OpenID discovery).

    See the module docstring for when it fetches. ``on_retired(markers)`` is
    called (outside any lock) with the markers of keys a successful fetch no
    longer lists.
    """

    def __init__(
        self,
        issuer: str | None,
        *,
        jwks_uri: str | None,
        allowed: frozenset[str],
        max_age: float,
        min_refresh_interval: float,
        max_stale: float,
        wait_timeout: float,
        clock: Callable[[], float],
        on_retired: Callable[[frozenset[str]], None],
    ) -> None:
        if jwks_uri is None and issuer is None:
            raise ConfigurationError("jwks_uri", "is needed when there is no issuer to discover")
        self.issuer = issuer
        self.name = issuer or str(jwks_uri)
        self._configured_uri = jwks_uri
        self._jwks_uri = jwks_uri
        self._allowed = allowed
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self.max_stale = max_stale
        self._wait_timeout = wait_timeout
        self._clock = clock
        self._on_retired = on_retired
        self._lock = threading.Lock()
        self.snapshot: KeySnapshot | None = None
        self._last_attempt = -math.inf
        self._flight: concurrent.futures.Future[None] | None = None
        self.fetches = 0  # attempts started (discovery + JWKS count as one)
        _fork.reset_after_fork(self)

    def _after_fork(self) -> None:
        # See authmw._fork: a fetch the parent had in flight would never end here.
        self._lock = threading.Lock()
        self._flight = None
        self._last_attempt = -math.inf

    # -- the decision -------------------------------------------------------------------
    def key_for(self, kid: str | None, alg: str) -> Generator[Step, Any, VerificationKey]:
        """The key for a token's ``kid`` and ``alg``, fetching the key set if allowed."""
        now = self._clock()
        snapshot = self.snapshot
        key: VerificationKey | None = None
        if snapshot is not None:
            key, known = snapshot.find(kid, alg)
            if key is not None and now - snapshot.fetched_at < self.max_age:
                return key  # the hot path: no lock
            if key is None and known:
                raise InvalidToken(_unknown(kid, known, alg))
        usable = snapshot is not None and now - snapshot.fetched_at <= self.max_stale
        with self._lock:
            flight = self._flight
            lead = flight is None and now - self._last_attempt >= self.min_refresh_interval
            if lead:
                flight = self._flight = concurrent.futures.Future()
                self._last_attempt = now
                self.fetches += 1
        if lead:
            assert flight is not None
            yield from self._refresh(flight)
        elif flight is not None and not (key is not None and usable):
            yield Wait(flight, self._wait_timeout)
        return self._decide(kid, alg)

    def _decide(self, kid: str | None, alg: str) -> VerificationKey:
        """The answer from the key set as it is now (no more fetching)."""
        snapshot = self.snapshot
        now = self._clock()
        if snapshot is None:
            raise IdentityServiceUnavailable(f"no keys of {self.name} yet: the fetch failed")
        age = now - snapshot.fetched_at
        if age > self.max_stale:
            raise IdentityServiceUnavailable(
                f"the keys of {self.name} are {age:.0f}s old (max_stale {self.max_stale:g}s) "
                "and cannot be fetched"
            )
        key, known = snapshot.find(kid, alg)
        if key is None:
            raise InvalidToken(_unknown(kid, known, alg))
        return key

    # -- the fetch ------------------------------------------------------------------------
    def _refresh(self, flight: concurrent.futures.Future[None]) -> Generator[Step, Any, None]:
        """Fetch the key set once; always ends the flight, never raises a fetch failure."""
        retired: frozenset[str] = frozenset()
        try:
            try:
                if self._jwks_uri is None:
                    assert self.issuer is not None
                    status, body = yield _get(_discovery_url(self.issuer))
                    self._jwks_uri = self._discovered(status, body)
                status, body = yield _get(self._jwks_uri, "application/jwk-set+json")
                keys = self._keys(status, body)
            except (IdentityServiceUnavailable, ValueError) as exc:
                self._failed(exc)
            else:
                retired = self._install(keys)
        finally:
            with self._lock:
                self._flight = None
            flight.set_result(None)
        if retired:
            log.info("%s no longer lists %d key(s): they stop validating", self.name, len(retired))
            self._on_retired(retired)

    def _discovered(self, status: int, body: bytes) -> str:
        assert self.issuer is not None
        if status != 200:
            raise ValueError(f"OpenID discovery answered {status}")
        document = _json(body)
        if not isinstance(document, Mapping):
            raise ValueError("the OpenID discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise ValueError(
                f"the discovery document names another issuer ({document.get('issuer')!r})"
            )
        uri = document.get("jwks_uri")
        try:
            url = http_url(uri, "jwks_uri", "the discovery document has no jwks_uri", query=True)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        if httpx.URL(self.issuer).scheme == "https" and url.scheme != "https":
            raise ValueError("the discovery document's jwks_uri is not https")
        return str(url)

    def _keys(self, status: int, body: bytes) -> tuple[VerificationKey, ...]:
        if status != 200:
            raise ValueError(f"the JWKS URL answered {status}")
        keys = parse_jwk_set(_json(body), self.name, self._allowed, source=f"{self.name} JWKS")
        if not keys:
            raise ValueError("the JWKS has no usable signature key")
        return keys

    def _failed(self, exc: BaseException) -> None:
        if self._configured_uri is None:
            self._jwks_uri = None  # discover again next time: the jwks_uri may have moved
        snapshot = self.snapshot
        held = (
            f"keeping the keys fetched {self._clock() - snapshot.fetched_at:.0f}s ago "
            f"(usable up to max_stale {self.max_stale:g}s)"
            if snapshot is not None
            else "no keys yet"
        )
        log.warning("cannot fetch the keys of %s: %s; %s", self.name, exc, held)

    def _install(self, keys: tuple[VerificationKey, ...]) -> frozenset[str]:
        snapshot = KeySnapshot(keys, self._clock())
        with self._lock:
            previous, self.snapshot = self.snapshot, snapshot
        log.debug(
            "keys of %s fetched: %s",
            self.name,
            ", ".join(str(key.kid) for key in snapshot.keys),
        )
        if previous is None:
            return frozenset()
        return previous.markers - snapshot.markers


def _get(url: str, accept: str = "application/json") -> httpx.Request:
    return httpx.Request("GET", url, headers={"Accept": f"{accept}, application/json;q=0.9"})


def _discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the answer nests too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("the answer is not UTF-8") from None
