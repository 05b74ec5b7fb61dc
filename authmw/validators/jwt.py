"""Verify JWT access tokens offline, with the issuer's published keys.

::

    JWTValidator([
        Issuer.keycloak("https://sso.example.com/realms/acme", audiences="items-api"),
        Issuer("https://login.example.org", audiences=["https://api.example.org"],
               token_type="at+jwt"),
        Issuer.keyrock(application_id="7a3c...", secret=os.environ["KEYROCK_JWT_SECRET"]),
    ])

Each :class:`Issuer` says where its keys come from (OpenID discovery from
the issuer URL, a JWKS URL, static keys, or an HMAC secret), which
algorithms it signs with, which audiences are ours, and how its claims map
to an :class:`~authmw.Identity` (:class:`ClaimMapping`). A token is routed to
its issuer by ``iss`` (tokens without ``iss``, as Keyrock's, by their
audience claim); nothing the token says chooses a key source or an
algorithm outside its issuer's configuration.

Checks, in order, each failure :class:`~authmw.InvalidToken`: a JWS compact
token (no JWE, no ``crit`` extensions), a configured issuer, an allowed
``alg`` (``none`` never; HMAC only with a configured secret), ``typ`` when the
issuer sets ``token_type``, the key (see :mod:`authmw.validators._jwks` for
when keys are fetched, and when a missing key is an outage instead), the
signature (joserfc), then ``iss``, ``aud``, ``exp`` (required unless
``require_expiry=False``), ``nbf``, ``iat`` with the issuer's ``leeway``,
and ``required_claims``.

The identity carries the verified claims in ``identity.extra["claims"]``
(policy rules read them as ``claims.<path>``), and the key's marker in
``audit_ids``: when a fetched key set no longer lists a key, identities of
its tokens are dropped from the cache and their websockets closed.

joserfc (``pip install 'authmw[jwt]'``) is imported when a
:class:`JWTValidator` is built, not when authmw is imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

import httpx

from .. import _checks
from .._hashing import fingerprint
from ..client._base import http_url
from ..errors import ConfigurationError, InvalidToken
from ..identity import TEXT_FIELDS, Identity
from . import _jwks
from ._jwks import ALGORITHM_FAMILIES, RemoteKeys, StaticKeys, Step, VerificationKey, Wait
from ._paths import MISSING, Compiled, Paths, compile_paths, lookup
from ._remote import RemoteService, http_options
from ._roles import usable_roles
from .base import RevocationListener

__all__ = ["DEFAULT_ALGORITHMS", "ClaimMapping", "Issuer", "JWTValidator"]

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
"""Algorithms an issuer may use unless its ``algorithms`` say otherwise."""

_HMAC = frozenset({"HS256", "HS384", "HS512"})
# The user id is required and mapped on its own; no claim maps a system scope.
_STRING_FIELDS = tuple(name for name in TEXT_FIELDS if name not in ("user_id", "system_scope"))


# -- claim mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimMapping:
    """Where each :class:`~authmw.Identity` field is found in a token's claims.

    Fields are :data:`~authmw.validators._paths.Paths`: a dotted path
    (``"realm_access.roles"``), or a list of paths tried in order (the first
    present, non-empty value wins); a path whose keys hold dots is a tuple
    inside the list (``[("resource_access", "items.api", "roles")]``);
    ``None`` maps nothing.

    - ``user_id`` (a value is required), ``user_name``, ``user_domain_*``,
      ``project_*``, ``domain_*``: strings (integers are accepted).
    - ``roles``: *every* listed path contributes (not the first only): a
      list of strings, a list of objects (their ``role_key`` member), or a
      string split on white space (``scope``, ``scp``). Names ``X-Roles``
      cannot carry (commas, white space around them) are left out, with one
      WARNING per distinct name.
    - ``extra``: ``Identity.extra`` key -> path, copied when present. The
      whole verified claim set is always in ``extra["claims"]``.
    - ``expires_at``/``issued_at`` come from ``exp``/``iat``.
    """

    user_id: Paths = ("sub",)
    user_name: Paths | None = ("preferred_username", "username")
    user_domain_id: Paths | None = None
    user_domain_name: Paths | None = None
    project_id: Paths | None = None
    project_name: Paths | None = None
    project_domain_id: Paths | None = None
    project_domain_name: Paths | None = None
    domain_id: Paths | None = None
    domain_name: Paths | None = None
    roles: Paths | None = ("roles", "scope", "scp")
    role_key: str | None = "name"
    extra: Mapping[str, Paths] = field(
        default_factory=lambda: {"client_id": ("client_id", "azp"), "scope": "scope"}
    )
    _compiled: _CompiledMapping = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", _CompiledMapping(self))

    @classmethod
    def keycloak(cls, client_id: str | None = None, **overrides: Any) -> ClaimMapping:
        """Keycloak: realm roles, plus the client roles of ``client_id`` if given."""
        roles: list[str | tuple[str, ...]] = ["realm_access.roles"]
        if client_id is not None:
            roles.append(("resource_access", _checks.text("client_id", client_id), "roles"))
        values: dict[str, Any] = {
            "user_name": ("preferred_username",),
            "roles": roles,
            "extra": {"client_id": ("azp", "client_id"), "scope": "scope", "email": "email"},
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def keyrock(cls, **overrides: Any) -> ClaimMapping:
        """FIWARE Keyrock: ``id``/``username``, roles as ``[{"id", "name"}]`` objects."""
        values: dict[str, Any] = {
            "user_id": ("id", "sub", "app_id"),
            "user_name": ("username", "displayName"),
            "roles": ("roles",),
            "role_key": "name",
            "extra": {
                "app_id": "app_id",
                "email": "email",
                "type": "type",
                "organizations": "organizations",
            },
        }
        values.update(overrides)
        return cls(**values)


class _CompiledMapping:
    """A :class:`ClaimMapping` with its paths split once, at start-up."""

    def __init__(self, mapping: ClaimMapping) -> None:
        self.user_id = compile_paths("ClaimMapping.user_id", mapping.user_id, required=True)
        self.strings: dict[str, Compiled] = {
            name: compile_paths(f"ClaimMapping.{name}", getattr(mapping, name))
            for name in _STRING_FIELDS
        }
        self.roles = compile_paths("ClaimMapping.roles", mapping.roles)
        if mapping.role_key is not None:
            _checks.text("ClaimMapping.role_key", mapping.role_key)
        self.role_key = mapping.role_key
        if not isinstance(mapping.extra, Mapping):
            raise ConfigurationError("ClaimMapping.extra", "must be a mapping of name -> path")
        self.extra = {
            str(name): compile_paths(f"ClaimMapping.extra[{name!r}]", paths)
            for name, paths in mapping.extra.items()
        }
        if "claims" in self.extra:
            raise ConfigurationError("ClaimMapping.extra", "'claims' is reserved for the claims")


ClaimMapping.__init__ = _checks.checked_keywords(ClaimMapping.__init__)  # type: ignore[method-assign]


# -- issuers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """One token issuer: where its keys are, what it may sign with, what is ours.

    - ``issuer``: the exact ``iss`` of its tokens; ``None`` for tokens without
      ``iss`` (Keyrock), routed by ``audience_claim`` instead.
    - Keys, one of: nothing (OpenID discovery: ``<issuer>/.well-known/openid-configuration``
      -> ``jwks_uri``), ``jwks_uri``, ``keys`` (a JWKS, a list of JWKs, or PEM
      public keys: never fetched), ``secret`` (an HMAC secret, only with HS*
      ``algorithms``: the Keyrock case).
    - ``audiences``: the values of ``audience_claim`` (``aud``) that mean this
      API; at least one matches or the token is refused. Required unless
      ``check_audience=False``.
    - ``algorithms``: the allow-list (default RS256, ES256, PS256, EdDSA);
      ``none`` is refused here, HMAC needs ``secret``.
    - ``token_type``: the JOSE ``typ`` every token must have (``"at+jwt"``:
      RFC 9068 access tokens; refuses ID tokens and other JWTs of the issuer).
    - ``required_claims``: claim -> value each token must carry (Keycloak:
      ``{"typ": "Bearer"}``).
    - ``require_expiry``: refuse tokens without ``exp``; ``leeway``: seconds
      of clock skew allowed on ``exp``, ``nbf``, ``iat`` (0 to 300).
    - ``claims``: the :class:`ClaimMapping`.
    """

    issuer: str | None
    audiences: str | Sequence[str] = ()
    check_audience: bool = True
    audience_claim: str = "aud"
    jwks_uri: str | None = None
    keys: Any = None
    secret: str | bytes | None = field(default=None, repr=False)
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS
    token_type: str | None = None
    required_claims: Mapping[str, str | int | bool] = field(default_factory=dict)
    require_expiry: bool = True
    leeway: float = 30.0
    claims: ClaimMapping = field(default_factory=ClaimMapping)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.issuer is not None and not (isinstance(self.issuer, str) and self.issuer.strip()):
            raise ConfigurationError(
                "Issuer.issuer", "must be the iss of its tokens (a string) or None"
            )
        audiences = (self.audiences,) if isinstance(self.audiences, str) else self.audiences
        if not isinstance(audiences, Sequence) or not all(
            isinstance(a, str) and a for a in audiences
        ):
            raise ConfigurationError("Issuer.audiences", f"must be strings, got {self.audiences!r}")
        set_(self, "audiences", tuple(audiences))
        _checks.flag("Issuer.check_audience", self.check_audience)
        if self.check_audience and not audiences:
            raise ConfigurationError(
                "Issuer.audiences",
                "required: the audience value(s) that name this API; "
                "check_audience=False accepts tokens meant for any audience",
            )
        if not self.check_audience and self.issuer is None:
            raise ConfigurationError(
                "Issuer.check_audience", "an issuer without iss is found by its audience"
            )
        _checks.text("Issuer.audience_claim", self.audience_claim)
        self._check_algorithms()
        sources = [
            name for name in ("jwks_uri", "keys", "secret") if getattr(self, name) is not None
        ]
        if len(sources) > 1:
            raise ConfigurationError(f"Issuer.{sources[1]}", f"conflicts with {sources[0]}")
        if self.jwks_uri is not None:
            set_(
                self,
                "jwks_uri",
                str(http_url(self.jwks_uri, "Issuer.jwks_uri", "must be a URL", query=True)),
            )
        if not sources:
            if self.issuer is None:
                raise ConfigurationError(
                    "Issuer.keys", "give jwks_uri, keys or secret: there is no issuer to discover"
                )
            http_url(self.issuer, "Issuer.issuer", "must be a URL", query=True)
        hmac = set(self.algorithms) & _HMAC
        if self.secret is not None and not hmac:
            raise ConfigurationError("Issuer.secret", "goes only with HS256/HS384/HS512 algorithms")
        if hmac and self.secret is None:
            raise ConfigurationError(
                "Issuer.algorithms",
                f"{sorted(hmac)[0]} needs an explicit secret "
                "(HMAC is never verified with a public key)",
            )
        if self.token_type is not None:
            set_(self, "token_type", _checks.text("Issuer.token_type", self.token_type))
        if not isinstance(self.required_claims, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, bool))
            for k, v in self.required_claims.items()
        ):
            raise ConfigurationError(
                "Issuer.required_claims", "must map claim names to strings, numbers or booleans"
            )
        _checks.flag("Issuer.require_expiry", self.require_expiry)
        _checks.number("Issuer.leeway", self.leeway, maximum=300)
        if not isinstance(self.claims, ClaimMapping):
            raise ConfigurationError("Issuer.claims", "must be a ClaimMapping")

    def _check_algorithms(self) -> None:
        algorithms = self.algorithms
        if isinstance(algorithms, str):
            algorithms = (algorithms,)
        if not isinstance(algorithms, Sequence) or not algorithms:
            raise ConfigurationError("Issuer.algorithms", "must list at least one algorithm")
        for alg in algorithms:
            if isinstance(alg, str) and alg.lower() == "none":
                raise ConfigurationError("Issuer.algorithms", "'none' is never allowed")
            if alg not in ALGORITHM_FAMILIES:
                raise ConfigurationError(
                    "Issuer.algorithms",
                    f"unknown algorithm {alg!r} (known: {', '.join(ALGORITHM_FAMILIES)})",
                )
        if set(algorithms) & _HMAC and not set(algorithms) <= _HMAC:
            raise ConfigurationError(
                "Issuer.algorithms", "HMAC and public-key algorithms cannot share an issuer"
            )
        object.__setattr__(self, "algorithms", tuple(dict.fromkeys(algorithms)))

    @property
    def name(self) -> str:
        """How logs and errors name it."""
        if self.issuer is not None:
            return self.issuer
        return f"{self.audience_claim}={','.join(self.audiences)}"

    @classmethod
    def keycloak(
        cls,
        realm_url: str,
        audiences: str | Sequence[str],
        *,
        client_id: str | None = None,
        **options: Any,
    ) -> Issuer:
        """A Keycloak realm (``https://sso.example.com/realms/acme``), found by discovery.

        Access tokens only (``typ: Bearer`` in the payload: ID and refresh
        tokens are refused); roles from ``realm_access.roles`` and, with
        ``client_id``, ``resource_access.<client_id>.roles``. Keycloak puts
        the API in ``aud`` through an audience mapper (or a client role).
        """
        values: dict[str, Any] = {
            "audiences": audiences,
            "required_claims": {"typ": "Bearer"},
            "claims": ClaimMapping.keycloak(client_id),
        }
        values.update(options)
        return cls(_checks.text("realm_url", realm_url).rstrip("/"), **values)

    @classmethod
    def keyrock(cls, application_id: str, secret: str | bytes, **options: Any) -> Issuer:
        """FIWARE Keyrock's JWT access tokens of one application (``token_types: ["jwt"]``).

        Keyrock signs them with HS256 and the application's own secret, puts
        no ``iss`` and no ``aud`` in them, and names the application in
        ``app_id``: that is the audience checked. Roles are the user's roles
        in the application (``roles[].name``).
        """
        values: dict[str, Any] = {
            "audiences": (_checks.text("application_id", application_id),),
            "audience_claim": "app_id",
            "secret": secret,
            "algorithms": ("HS256",),
            "claims": ClaimMapping.keyrock(),
        }
        values.update(options)
        return cls(None, **values)


Issuer.__init__ = _checks.checked_keywords(Issuer.__init__)  # type: ignore[method-assign]


# -- the validator --------------------------------------------------------------------------


class _Token:
    """A token taken apart, before any of it is trusted."""

    __slots__ = ("alg", "claims", "header", "kid", "obj")

    def __init__(self, obj: Any, header: dict[str, Any], claims: dict[str, Any]) -> None:
        self.obj = obj
        self.header = header
        self.claims = claims
        self.alg: str = header["alg"]
        self.kid: str | None = header.get("kid")


class _Entry:
    """An :class:`Issuer` ready for use: its keys, registries and compiled mapping."""

    def __init__(
        self, config: Issuer, keys: StaticKeys | RemoteKeys, clock: Callable[[], float]
    ) -> None:
        from joserfc.jwt import JWTClaimsRegistry

        self.config = config
        self.keys = keys
        self.allowed = frozenset(config.algorithms)
        self.audiences = frozenset(config.audiences)
        self.mapping: _CompiledMapping = config.claims._compiled
        self.token_type = _media_type(config.token_type) if config.token_type else None
        self.jws = _registry(config.algorithms)

        options: dict[str, Any] = {}
        if config.issuer is not None:
            options["iss"] = {"essential": True, "value": config.issuer}
        if config.check_audience:
            options[config.audience_claim] = {"essential": True, "values": list(config.audiences)}
        if config.require_expiry:
            options["exp"] = {"essential": True}
        for claim, value in config.required_claims.items():
            options[claim] = {"essential": True, "value": value}

        def now() -> int:
            return int(clock())

        leeway = int(config.leeway)
        self.registry = JWTClaimsRegistry(now=now, leeway=leeway, **options)

        class _AllowExpired(JWTClaimsRegistry):
            def validate_exp(self, value: object) -> None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    super().validate_exp(value)  # the type error

        self.registry_allow_expired = _AllowExpired(now=now, leeway=leeway, **options)


def _registry(algorithms: Sequence[str]) -> Any:
    """A joserfc JWS registry that allows exactly ``algorithms``, and says nothing more.

    joserfc warns (SecurityWarning) on every token signed with "EdDSA", a
    name RFC 9864 deprecates in favour of "Ed25519"; providers (Keycloak,
    oidc-provider) still sign with it, and the allow-list is the issuer's
    decision, so the lookup is joserfc's without the warning.
    """
    from joserfc.errors import UnsupportedAlgorithmError
    from joserfc.jws import JWSRegistry

    class Registry(JWSRegistry):
        max_header_length = 1024

        def get_alg(self, name: str) -> Any:
            if name not in self.algorithms or name not in (self.allowed or ()):
                raise UnsupportedAlgorithmError(f"Algorithm of {name!r} is not allowed")
            return self.algorithms[name]

    return Registry(algorithms=list(algorithms), strict_check_header=False)


def _media_type(typ: str) -> str:
    typ = typ.strip().lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


class JWTValidator(RemoteService):
    """Verifies JWT access tokens offline with the keys of configured :class:`Issuer`\\ s.

    ``issuers``: one :class:`Issuer` or a list (one per ``iss``). Keys are
    cached: ``keys_max_age`` seconds before they are fetched again,
    ``min_refresh_interval`` seconds at least between two fetches of one
    issuer's keys (however many tokens with unknown ``kid``\\ s arrive),
    ``max_stale`` seconds a key set keeps working while fetches fail (then
    tokens get :class:`~authmw.IdentityServiceUnavailable`). HTTP options as
    :class:`~authmw.KeystoneValidator` (``timeout``, ``cafile``..., no
    redirects, answers at most 1 MiB). Call :meth:`close`/:meth:`aclose` at
    shutdown; the middleware does.
    """

    service: ClassVar[str] = "the token issuer"
    _log: ClassVar[logging.Logger] = logging.getLogger("authmw.jwt")
    max_answer_bytes: ClassVar[int] = 1024 * 1024

    @_checks.checked_keywords
    def __init__(
        self,
        issuers: Issuer | Sequence[Issuer],
        *,
        keys_max_age: float = 600.0,
        min_refresh_interval: float = 30.0,
        max_stale: float = 6 * 3600.0,
        timeout: float | httpx.Timeout | None = None,
        http_connect_timeout: float | None = None,
        http_request_max_retries: int = 1,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        max_connections: int = 8,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            from joserfc import jws
            from joserfc.errors import JoseError
        except ImportError:  # pragma: no cover  (the extra is missing)
            raise ConfigurationError(
                "issuers", "JWTValidator needs joserfc: pip install 'authmw[jwt]'"
            ) from None
        self._jws = jws
        self._jose_error: type[Exception] = JoseError
        super().__init__(**http_options(locals()))
        self.keys_max_age = _checks.positive("keys_max_age", keys_max_age)
        self.min_refresh_interval = _checks.positive("min_refresh_interval", min_refresh_interval)
        self.max_stale = _checks.positive("max_stale", max_stale)
        if self.min_refresh_interval > self.keys_max_age:
            raise ConfigurationError("min_refresh_interval", "must not exceed keys_max_age")
        if self.max_stale < self.keys_max_age:
            raise ConfigurationError("max_stale", "must be at least keys_max_age")
        self._clock = _checks.function("clock", clock)
        self._listeners: list[RevocationListener] = []
        configs = [issuers] if isinstance(issuers, Issuer) else issuers
        if not isinstance(configs, Sequence) or not configs:
            raise ConfigurationError("issuers", "must be an Issuer or a non-empty list of them")
        self._by_iss: dict[str, _Entry] = {}
        self._without_iss: list[_Entry] = []
        for index, config in enumerate(configs):
            if not isinstance(config, Issuer):
                raise ConfigurationError(f"issuers[{index}]", f"must be an Issuer, got {config!r}")
            entry = _Entry(config, self._key_source(index, config), self._clock)
            if config.issuer is None:
                taken = {a for other in self._without_iss for a in other.audiences}
                if taken & entry.audiences:
                    raise ConfigurationError(
                        f"issuers[{index}]", "another issuer without iss has the same audience"
                    )
                self._without_iss.append(entry)
            elif config.issuer in self._by_iss:
                raise ConfigurationError(
                    f"issuers[{index}]",
                    f"{config.issuer!r} is configured twice: list its audiences in one Issuer",
                )
            else:
                self._by_iss[config.issuer] = entry
        self._extract = jws.JWSRegistry(strict_check_header=False)
        self._extract.max_header_length = 1024

    def _key_source(self, index: int, config: Issuer) -> StaticKeys | RemoteKeys:
        allowed = frozenset(config.algorithms)
        name = config.name
        if config.secret is not None:
            return StaticKeys(
                _jwks.hmac_key(f"issuers[{index}].secret", config.secret, name, allowed)
            )
        if config.keys is not None:
            return StaticKeys(
                _jwks.static_keys(f"issuers[{index}].keys", config.keys, name, allowed)
            )
        fetch = (self._answer_seconds + 1.0) * (self.max_retries + 1)
        return RemoteKeys(
            config.issuer,
            jwks_uri=config.jwks_uri,
            allowed=allowed,
            max_age=self.keys_max_age,
            min_refresh_interval=self.min_refresh_interval,
            max_stale=self.max_stale,
            wait_timeout=2 * fetch + 1.0,
            clock=self._clock,
            on_retired=self._retired,
        )

    def __repr__(self) -> str:
        names = [e.config.name for e in (*self._by_iss.values(), *self._without_iss)]
        return f"JWTValidator({names!r})"

    # -- revocations: keys retired by their issuer -----------------------------------------
    def add_revocation_listener(self, listener: RevocationListener) -> None:
        """``listener(marker)`` runs for each key a fetched key set no longer lists."""
        self._listeners.append(listener)

    def _retired(self, markers: frozenset[str]) -> None:
        for marker in markers:
            for listener in list(self._listeners):
                try:
                    listener(marker)
                except Exception:
                    self._log.exception("revocation listener %r failed", listener)

    # -- validation -------------------------------------------------------------------------
    def validate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """The identity of a valid token, else InvalidToken or IdentityServiceUnavailable."""
        return self._drive(self._flow(token, allow_expired))

    async def avalidate(self, token: str, *, allow_expired: bool = False) -> Identity:
        """Async form of :meth:`validate`: key fetches through httpx.AsyncClient."""
        return await self._adrive(self._flow(token, allow_expired))

    def _perform(self, step: object) -> Any:
        if isinstance(step, Wait):  # another caller is fetching the keys: wait for it
            with contextlib.suppress(concurrent.futures.TimeoutError):
                step.flight.result(step.timeout)
            return None
        return super()._perform(step)

    async def _aperform(self, step: object) -> Any:
        if isinstance(step, Wait):
            waiting = asyncio.shield(asyncio.wrap_future(step.flight))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiting, step.timeout)
            return None
        return await super()._aperform(step)

    def _flow(self, token: str, allow_expired: bool) -> Generator[Step, Any, Identity]:
        try:
            parsed = self._parse(token)
            entry = self._route(parsed)
            self._check_header(parsed, entry)
            key = yield from entry.keys.key_for(parsed.kid, parsed.alg)
            claims = self._verified_claims(parsed, entry, key, allow_expired)
            return self._identity(claims, entry, key)
        except InvalidToken as exc:
            self._log.debug("token %s rejected: %s", fingerprint(token), exc)
            raise

    # -- the steps, without I/O ----------------------------------------------------------------
    def _parse(self, token: str) -> _Token:
        if not isinstance(token, str) or not token.isascii() or token.count(".") != 2:
            raise InvalidToken("not a signed JWT (JWS compact serialization)")
        try:
            obj = self._jws.extract_compact(token.encode("ascii"), registry=self._extract)
            header = obj.headers()
            claims = json.loads(obj.payload)
        except (self._jose_error, ValueError, TypeError, RecursionError) as exc:
            raise InvalidToken(f"malformed JWT ({type(exc).__name__})") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("malformed JWT (header or claims not an object)")
        if not isinstance(header.get("alg"), str):
            raise InvalidToken("malformed JWT (alg)")
        if header.get("kid") is not None and not isinstance(header["kid"], str):
            raise InvalidToken("malformed JWT (kid)")
        if "crit" in header or "b64" in header:
            raise InvalidToken("critical header extensions are not supported")
        return _Token(obj, header, claims)

    def _route(self, token: _Token) -> _Entry:
        iss = token.claims.get("iss")
        if iss is None:
            for entry in self._without_iss:
                if _matches(token.claims.get(entry.config.audience_claim), entry.audiences):
                    return entry
            raise InvalidToken("token has no iss, and no issuer without iss has its audience")
        if not isinstance(iss, str):
            raise InvalidToken("iss is not a string")
        found = self._by_iss.get(iss)
        if found is None:
            raise InvalidToken(f"issuer {iss[:120]!r} is not configured")
        return found

    def _check_header(self, token: _Token, entry: _Entry) -> None:
        if token.alg not in entry.allowed:
            raise InvalidToken(f"algorithm {token.alg[:20]!r} is not allowed for this issuer")
        if entry.token_type is not None:
            typ = token.header.get("typ")
            if not isinstance(typ, str) or _media_type(typ) != entry.token_type:
                raise InvalidToken(f"typ is not {entry.config.token_type!r}")

    def _verified_claims(
        self, token: _Token, entry: _Entry, key: VerificationKey, allow_expired: bool
    ) -> dict[str, Any]:
        from joserfc.errors import ClaimError, ExpiredTokenError

        try:
            good = self._jws.validate_compact(token.obj, key.key, [token.alg], entry.jws)
        except (self._jose_error, ValueError, TypeError) as exc:
            raise InvalidToken(f"signature not verified ({type(exc).__name__})") from None
        if not good:
            raise InvalidToken("bad signature")
        registry = entry.registry_allow_expired if allow_expired else entry.registry
        try:
            registry.validate(token.claims)
        except ExpiredTokenError:
            raise InvalidToken("token expired") from None
        except ClaimError as exc:
            raise InvalidToken(f"claim {exc.claim!r} refused: {exc.description}") from None
        except (self._jose_error, ValueError, TypeError, OverflowError) as exc:
            raise InvalidToken(f"claims refused ({type(exc).__name__})") from None
        return token.claims

    def _identity(self, claims: dict[str, Any], entry: _Entry, key: VerificationKey) -> Identity:
        mapping = entry.mapping
        try:
            user_id = _text(lookup(claims, mapping.user_id), "user id")
            if not user_id:
                raise InvalidToken("the token has no user id claim")
            strings: dict[str, Any] = {
                name: _text(lookup(claims, paths), name) for name, paths in mapping.strings.items()
            }
            extra: dict[str, Any] = {"claims": claims}
            for name, paths in mapping.extra.items():
                value = lookup(claims, paths)
                if value is not MISSING:
                    extra[name] = value
            return Identity(
                user_id=user_id,
                roles=usable_roles(_roles(claims, mapping)),
                expires_at=_time(claims.get("exp")),
                issued_at=_time(claims.get("iat")),
                audit_ids=(key.marker,),
                extra=extra,
                **strings,
            )
        # OSError: datetime.fromtimestamp of an epoch the platform's time functions refuse.
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise InvalidToken(f"the claims do not map to an identity: {exc}") from None


def _matches(value: Any, audiences: frozenset[str]) -> bool:
    if isinstance(value, str):
        return value in audiences
    if isinstance(value, list):
        return any(isinstance(v, str) and v in audiences for v in value)
    return False


def _text(value: Any, what: str) -> str | None:
    if value is MISSING:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{what} must be a string")


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc)


def _roles(claims: Mapping[str, Any], mapping: _CompiledMapping) -> list[str]:
    names: list[str] = []
    for path in mapping.roles:
        value = lookup(claims, (path,))
        if isinstance(value, str):
            items: list[Any] = value.split()
        elif isinstance(value, list):
            items = value
        else:
            continue
        for item in items:
            if isinstance(item, Mapping) and mapping.role_key is not None:
                item = item.get(mapping.role_key)
            if isinstance(item, str) and item not in names:
                names.append(item)
    return names
