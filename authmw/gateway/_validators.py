"""The forward-auth server's validator, from its settings: Keystone, store, introspection, JWT.

Each kind has its setting names; each name can also come from the
environment (which wins), so secrets need not be in the file:

- ``keystone``: keystonemiddleware's ``[keystone_authtoken]`` names
  (``auth_url``, ``auth_type``, ``username``, ``password``, ...,
  ``memcached_servers``), checked by :func:`authmw.options.keystone_options`;
  environment ``AUTHMW_<NAME>`` (``AUTHMW_AUTH_URL``, ``AUTHMW_PASSWORD``, as
  :func:`authmw.contrib.validator_from_env` and ``authmw check`` read them);
- ``store``: ``url`` (``AUTHMW_DB``), ``pepper`` (``AUTHMW_PEPPER``);
- ``introspection``: ``url``, ``style``, ``client_id``, ``client_secret``, ...
  (``AUTHMW_INTROSPECTION_<NAME>``);
- ``jwt``: ``issuer``, ``audiences``, ``jwks_uri``, ``algorithms``, ...
  (``AUTHMW_JWT_<NAME>``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .. import _checks
from ..errors import ConfigurationError
from ..options import (
    _MEMCACHE_OPTIONS,
    _MIDDLEWARE,
    _VALIDATOR,
    UnknownOptionWarning,
    _bool,
    _float,
    _list,
    _str,
    keystone_options,
)
from ..validators.base import Validator

__all__ = ["KINDS", "Built", "build_validator", "env_name", "infer_kind"]

Parser = Callable[[str, Any], Any]


def _secret(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(name, "must be a non-empty string")
    return value


_KEYSTONE_EXTRA = ("auth_type", "auth_plugin", "token", "admin_token")
_KEYSTONE_NAMES = frozenset(
    [*_VALIDATOR, *_MEMCACHE_OPTIONS, *_KEYSTONE_EXTRA, "default_domain_id", "default_domain_name"]
)
_INTROSPECTION: dict[str, Parser] = {
    "url": _str,
    "style": _str,
    "client_id": _str,
    "client_secret": _secret,
    "token_type_hint": _str,
    "token_header": _str,
    "token_scheme": _str,
    "method": _str,
    "roles": _str,
    "expiry_leeway": _float,
    "timeout": _float,
    "cafile": _str,
    "insecure": _bool,
}
_JWT: dict[str, Parser] = {
    "issuer": _str,
    "audiences": _list,
    "jwks_uri": _str,
    "algorithms": _list,
    "token_type": _str,
    "leeway": _float,
    "roles": _str,
    "timeout": _float,
    "cafile": _str,
    "insecure": _bool,
}
_STORE: dict[str, Parser] = {"url": _str, "pepper": _secret}

KINDS: dict[str, frozenset[str]] = {
    "keystone": _KEYSTONE_NAMES,
    "store": frozenset(_STORE),
    "introspection": frozenset(_INTROSPECTION),
    "jwt": frozenset(_JWT),
}
"""Every validator kind and its setting names."""

_STORE_ENV = {"url": "AUTHMW_DB", "pepper": "AUTHMW_PEPPER"}
# The variable that, alone, picks a kind when no file names one.
_MARKERS = {
    "AUTHMW_AUTH_URL": "keystone",
    "AUTHMW_DB": "store",
    "AUTHMW_INTROSPECTION_URL": "introspection",
    "AUTHMW_JWT_ISSUER": "jwt",
}


def env_name(kind: str, name: str) -> str:
    """The environment variable of a validator setting."""
    if kind == "store":
        return _STORE_ENV[name]
    prefix = {"introspection": "AUTHMW_INTROSPECTION_", "jwt": "AUTHMW_JWT_"}.get(kind, "AUTHMW_")
    return prefix + name.upper()


def infer_kind(environ: Mapping[str, str]) -> str:
    """The kind ``AUTHMW_VALIDATOR`` names, else the one the environment's variables imply."""
    named = environ.get("AUTHMW_VALIDATOR")
    if named:
        return check_kind("AUTHMW_VALIDATOR", named)
    present = [variable for variable in _MARKERS if environ.get(variable)]
    if len(present) > 1:
        raise ConfigurationError(present[1], f"conflicts with {present[0]}: set one validator")
    if not present:
        raise ConfigurationError(
            "validator.type",
            "no validator: set [validator] type in the file, or AUTHMW_AUTH_URL (Keystone), "
            "AUTHMW_DB (local store), AUTHMW_INTROSPECTION_URL or AUTHMW_JWT_ISSUER",
        )
    return _MARKERS[present[0]]


def check_kind(setting: str, kind: Any) -> str:
    """``kind`` if it is one of :data:`KINDS`."""
    if not isinstance(kind, str) or kind.strip().lower() not in KINDS:
        raise ConfigurationError(setting, f"must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind.strip().lower()


class Built:
    """A validator and what its settings add: middleware options, a shared cache."""

    def __init__(
        self, validator: Validator, middleware: Mapping[str, Any], shared_cache: Any = None
    ) -> None:
        self.validator = validator
        self.middleware = dict(middleware)
        self.shared_cache = shared_cache


def build_validator(kind: str, values: Mapping[str, tuple[str, Any]]) -> Built:
    """The validator of ``kind`` from ``{name: (where it was set, value)}``."""
    known = KINDS[kind]
    for name, (where, _) in values.items():
        if name not in known:
            if kind == "keystone" and name in _MIDDLEWARE:
                raise ConfigurationError(where, f"{name} is a middleware setting: put it there")
            raise _checks.unknown_option(where, [f"validator.{n}" for n in sorted(known)])
    if kind == "keystone":
        return _keystone(values)
    table = {"store": _STORE, "introspection": _INTROSPECTION, "jwt": _JWT}[kind]
    parsed = {name: table[name](where, value) for name, (where, value) in values.items()}
    required = "issuer" if kind == "jwt" else "url"
    if required not in parsed:
        raise ConfigurationError(
            f"validator.{required}", f"is required (or {env_name(kind, required)})"
        )
    if kind == "store":
        from ..store import LocalTokenStore

        return Built(LocalTokenStore(parsed["url"], pepper=parsed.get("pepper")), {})
    if kind == "introspection":
        return Built(_introspection(parsed), {})
    return Built(_jwt(parsed), {})


def _keystone(values: Mapping[str, tuple[str, Any]]) -> Built:
    conf = {name: value for name, (_, value) in values.items()}
    # A catalog in a header through a gateway is rarely wanted, and a large one
    # overflows the gateway's header buffer: off unless asked for.
    conf.setdefault("include_service_catalog", False)
    where = {name: setting for name, (setting, _) in values.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnknownOptionWarning)
            warnings.simplefilter("ignore")  # ignored keystonemiddleware options: as paste
            options = keystone_options(conf)
            validator = options.build_validator()
            shared = options.build_shared_cache()
    except ConfigurationError as exc:
        setting = where.get(exc.option, f"validator.{exc.option}")
        message = str(exc).split(": ", 1)[-1]
        raise ConfigurationError(setting, message) from None
    return Built(validator, options.middleware, shared)


def _introspection(parsed: dict[str, Any]) -> Validator:
    from ..validators.introspection import HTTPIntrospectionValidator, IntrospectionMapping

    roles = parsed.pop("roles", None)
    url = parsed.pop("url")
    if roles is not None:
        style = parsed.get("style", "rfc7662")
        mapping = (
            IntrospectionMapping.rfc7662(roles=roles)
            if style == "rfc7662"
            else IntrospectionMapping.current_user(roles=roles)
        )
        parsed["mapping"] = mapping
    return HTTPIntrospectionValidator(url, **parsed)


def _jwt(parsed: dict[str, Any]) -> Validator:
    from ..validators.jwt import ClaimMapping, Issuer, JWTValidator

    client = {k: parsed.pop(k) for k in ("timeout", "cafile", "insecure") if k in parsed}
    roles = parsed.pop("roles", None)
    if roles is not None:
        parsed["claims"] = ClaimMapping(roles=roles)
    if "algorithms" in parsed:
        parsed["algorithms"] = tuple(parsed["algorithms"])
    return JWTValidator(Issuer(**parsed), **client)
