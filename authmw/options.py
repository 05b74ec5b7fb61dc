"""keystonemiddleware's option names, translated for authmw.

A ``[filter:authtoken]`` section or an ``AuthProtocol(app, conf)`` mapping
carries strings (paste) or Python values, over the ``[keystone_authtoken]``
section of an oslo.config configuration when one is in use (see
:mod:`authmw._oslo`: ``oslo_config_config``, ``oslo_config_project``,
``oslo_config_file``, or the process-wide ``cfg.CONF``); :func:`keystone_options` checks
every value at start-up and splits them into :class:`~authmw.KeystoneValidator`
keyword arguments and middleware options. Unknown names give an
:class:`UnknownOptionWarning`; known keystonemiddleware options that authmw
does not use (memcache, ``region_name``...) give an :class:`IgnoredOptionWarning`;
wrong values raise :class:`~authmw.ConfigurationError` naming the option.

authmw's own option names (``public_routes``, ``cache_time``, ``expiry_leeway``...)
are accepted in the same mapping.

Defaults follow keystonemiddleware 13 where it sets them:
``include_service_catalog=true``, ``service_token_roles_required=true``,
``http_request_max_retries=3``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .memcache import MemcacheCache
    from .validators.keystone import KeystoneValidator

__all__ = [
    "IgnoredOptionWarning",
    "KeystoneOptions",
    "UnknownOptionWarning",
    "keystone_options",
]


class UnknownOptionWarning(UserWarning):
    """An option name neither keystonemiddleware nor authmw knows (a typo?)."""


class IgnoredOptionWarning(UserWarning):
    """A keystonemiddleware option authmw accepts but does not act on."""


# -- value parsers -------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(name, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _secret(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(name, "must be a non-empty string")
    return value


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    raise ConfigurationError(name, f"must be true or false, got {value!r}")


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(name, f"must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(name, f"must be an integer, got {value!r}")


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(name, f"must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(name, f"must be a number, got {value!r}")


def _list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.replace("\n", ",").split(",")]
        return [v for v in items if v]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ConfigurationError(name, f"must be a comma-separated list, got {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = _str(name, value)
        if text.lower() not in choices:
            raise ConfigurationError(name, f"must be one of {', '.join(choices)}, got {text!r}")
        return text.lower()

    return parse


def _cache_time(name: str, value: Any) -> float:
    seconds = _float(name, value)
    if seconds == -1:
        return 0.0  # keystonemiddleware: -1 turns the cache off
    if seconds < 0:
        raise ConfigurationError(name, f"must be >= 0 (or -1 for no cache), got {value!r}")
    return seconds


Parser = Callable[[str, Any], Any]

# name -> (validator keyword, parser)
_VALIDATOR: dict[str, tuple[str, Parser]] = {
    "auth_url": ("auth_url", _str),
    "username": ("username", _str),
    "user_id": ("user_id", _str),
    "password": ("password", _secret),
    "user_domain_name": ("user_domain_name", _str),
    "user_domain_id": ("user_domain_id", _str),
    "project_id": ("project_id", _str),
    "project_name": ("project_name", _str),
    "project_domain_name": ("project_domain_name", _str),
    "project_domain_id": ("project_domain_id", _str),
    "domain_id": ("domain_id", _str),
    "domain_name": ("domain_name", _str),
    "system_scope": ("system_scope", _choice("all")),
    "application_credential_id": ("application_credential_id", _str),
    "application_credential_name": ("application_credential_name", _str),
    "application_credential_secret": ("application_credential_secret", _secret),
    "static_token": ("static_token", _secret),
    "include_service_catalog": ("include_service_catalog", _bool),
    "service_type": ("service_type", _str),
    "http_connect_timeout": ("http_connect_timeout", _float),
    "http_request_max_retries": ("http_request_max_retries", _int),
    "cafile": ("cafile", _str),
    "certfile": ("certfile", _str),
    "keyfile": ("keyfile", _str),
    "insecure": ("insecure", _bool),
    "expiry_leeway": ("expiry_leeway", _float),
    "timeout": ("timeout", _float),
    "renew_margin": ("renew_margin", _float),
    "max_connections": ("max_connections", _int),
    "revocation_poll_interval": ("revocation_poll_interval", _float),
}

# name -> (middleware keyword, parser)
_MIDDLEWARE: dict[str, tuple[str, Parser]] = {
    "www_authenticate_uri": ("www_authenticate_uri", _str),
    "auth_uri": ("www_authenticate_uri", _str),  # keystonemiddleware's deprecated name
    "delay_auth_decision": ("delay_auth_decision", _bool),
    "token_cache_time": ("cache_time", _cache_time),
    "service_token_roles": ("service_token_roles", _list),
    "service_token_roles_required": ("service_token_roles_required", _bool),
    # authmw's own
    "token_header": ("token_header", _str),
    "service_token_header": ("service_token_header", _str),
    "realm": ("realm", _str),
    "public_routes": ("public_routes", _list),
    "max_token_size": ("max_token_size", _int),
    "cache_time": ("cache_time", _cache_time),
    "negative_cache_time": ("negative_cache_time", _float),
    "cache_size": ("cache_size", _int),
    "fiware_service_scope": ("fiware_service_scope", _bool),
    "retry_after": ("retry_after", _float),
    "failure_threshold": ("failure_threshold", _int),
    "circuit_cooldown": ("circuit_cooldown", _float),
    "max_concurrency": ("max_concurrency", _int),
    "acquire_timeout": ("acquire_timeout", _float),
    "refresh_after": ("refresh_after", _float),
    "stale_if_error": ("stale_if_error", _float),
    "token_sources": ("token_sources", _list),
    "hide_credentials": ("hide_credentials", _bool),
}


def _strategy(name: str, value: Any) -> str:
    text = _str(name, value).upper() if isinstance(value, str) and value.strip() else "NONE"
    if text not in ("NONE", "MAC", "ENCRYPT"):
        raise ConfigurationError(name, f"must be None, MAC or ENCRYPT, got {value!r}")
    return text


_MEMCACHE_OPTIONS: dict[str, Parser] = {
    "memcached_servers": _list,
    "memcache_servers": _list,  # keystonemiddleware's deprecated name
    "memcache_security_strategy": _strategy,
    "memcache_secret_key": _secret,
    "memcache_pool_socket_timeout": _float,
    "memcache_pool_dead_retry": _float,
    "memcache_pool_maxsize": _int,
    "memcache_tls_enabled": _bool,
    "memcache_tls_cafile": _str,
    "memcache_tls_certfile": _str,
    "memcache_tls_keyfile": _str,
    "memcache_tls_allowed_ciphers": _str,
    "memcache_sasl_enabled": _bool,
}


# keystonemiddleware/keystoneauth options that only steer things authmw does not
# have (memcache, catalog lookup of the identity endpoint, oslo.config).
_IGNORED: dict[str, str] = {
    "region_name": "authmw validates at auth_url, not at an endpoint from the catalog",
    "interface": "authmw validates at auth_url, not at an endpoint from the catalog",
    "auth_version": "authmw's KeystoneValidator speaks v3",
    "log_name": "authmw logs to the 'authmw' loggers",
    "auth_section": "it names an oslo.config section, and no oslo.config source is in use "
    "(oslo_config_config, oslo_config_project, or a process that uses oslo.config)",
    "cache": "authmw has its own cache (see shared_cache)",
    "enforce_token_bind": "token binding is not supported",
    "trust_id": "trust-scoped service identities are not supported",
}
_IGNORED_PREFIXES = ("memcache_",)

_INTERFACES = ("public", "internal", "admin")
_CHECKED_IGNORED: dict[str, Parser] = {
    "interface": _choice(*_INTERFACES, "publicurl", "internalurl", "adminurl"),
}
# paste.deploy puts these in global_conf; they are not options.
_PASTE_KEYS = frozenset({"here", "__file__"})

_AUTH_TYPES = {
    "password": "password",
    "v3password": "password",
    "applicationcredential": "application_credential",
    "v3applicationcredential": "application_credential",
    "application_credential": "application_credential",
    "v3_application_credential": "application_credential",
    "token": "token",
    "v3token": "token",
    "admin_token": "static",
}
_PASSWORD_KEYS = (
    "username",
    "user_id",
    "password",
    "user_domain_name",
    "user_domain_id",
    "project_id",
    "project_name",
    "project_domain_name",
    "project_domain_id",
    "domain_id",
    "domain_name",
    "system_scope",
)
_SCOPE_KEYS = _PASSWORD_KEYS[5:]
_APP_CRED_KEYS = (
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
    "username",
    "user_id",
    "user_domain_name",
    "user_domain_id",
)
_SECRETS = frozenset(
    {"password", "application_credential_secret", "static_token", "exchange_token"}
)
_CREDENTIAL_KEYS = frozenset(_PASSWORD_KEYS + _APP_CRED_KEYS + ("static_token", "token"))


@dataclass(frozen=True)
class KeystoneOptions:
    """Translated options: ``validator`` for :class:`~authmw.KeystoneValidator`,
    ``middleware`` for :class:`~authmw.WSGIAuthMiddleware` / ``ASGIAuthMiddleware``."""

    validator: Mapping[str, Any]
    middleware: Mapping[str, Any]
    ignored: tuple[str, ...] = field(default=())
    #: keyword arguments of :class:`authmw.memcache.MemcacheCache` (None: no shared cache)
    memcache: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRETS else v) for k, v in self.validator.items()}
        # (memcache holds the secret key: never shown)
        return f"KeystoneOptions(validator={shown!r}, middleware={dict(self.middleware)!r})"

    def build_shared_cache(self) -> MemcacheCache | None:
        """The memcached shared cache these options ask for, or None."""
        if self.memcache is None:
            return None
        from .memcache import MemcacheCache

        return MemcacheCache(**self.memcache)

    def build_validator(self) -> KeystoneValidator:
        """A :class:`~authmw.KeystoneValidator` from these options (checks them all)."""
        from .validators.keystone import KeystoneValidator

        kwargs = dict(self.validator)
        exchange = kwargs.pop("exchange_token", None)
        if exchange is not None:
            from .client.keystone_v3 import KeystoneV3Token

            scope = {k: kwargs.pop(k) for k in _SCOPE_KEYS if k in kwargs}
            kwargs["auth"] = KeystoneV3Token(
                kwargs["auth_url"],
                token=exchange,
                renew_margin=kwargs.get("renew_margin", 60.0),
                **scope,
            )
        return KeystoneValidator(**kwargs)


def _warn(message: str, category: type[Warning]) -> None:
    warnings.warn(message, category, stacklevel=3)


def keystone_options(conf: Mapping[str, Any]) -> KeystoneOptions:
    """Check and split a keystonemiddleware-style option mapping.

    ``oslo_config_config`` / ``oslo_config_project`` / ``oslo_config_file``
    (or a process-wide ``cfg.CONF`` in a process using oslo.config) add the
    ``[keystone_authtoken]`` options of that configuration, under those of
    ``conf``, as keystonemiddleware does (:mod:`authmw._oslo`).

    Raises :class:`~authmw.ConfigurationError` for a wrong value (naming the
    option); warns for unknown and ignored names. No network I/O.
    """
    from ._oslo import with_oslo_options

    conf = with_oslo_options(conf)
    validator: dict[str, Any] = {}
    middleware: dict[str, Any] = {}
    ignored: list[str] = []
    raw: dict[str, Any] = {}
    memcache_raw: dict[str, Any] = {}
    for name, value in conf.items():
        if name in _PASTE_KEYS:
            continue
        if name in _MEMCACHE_OPTIONS:
            if value is not None:
                memcache_raw[name] = _MEMCACHE_OPTIONS[name](name, value)
            continue
        if name in _IGNORED or name.startswith(_IGNORED_PREFIXES):
            if name in _CHECKED_IGNORED and value is not None:
                _CHECKED_IGNORED[name](name, value)
            reason = _IGNORED.get(name, "authmw has its own cache (see shared_cache)")
            if name == "enforce_token_bind" and str(value).strip().lower() not in (
                "disabled",
                "permissive",
            ):
                raise ConfigurationError(
                    name, f"{value!r} cannot be honoured: authmw does not check token binding"
                )
            if name == "auth_version" and str(value).strip().lower() in ("v2.0", "2", "2.0"):
                raise ConfigurationError(name, "v2.0: use authmw.KeystoneV2Validator")
            _warn(f"option {name!r} is ignored: {reason}", IgnoredOptionWarning)
            ignored.append(name)
            continue
        if value is None:
            continue
        if name in _VALIDATOR:
            key, parse = _VALIDATOR[name]
            raw[key] = parse(name, value)
        elif name in _MIDDLEWARE:
            key, parse = _MIDDLEWARE[name]
            middleware[key] = parse(name, value)
        elif name in ("auth_type", "auth_plugin"):
            raw["auth_type"] = _str(name, value).lower()
        elif name in ("token", "admin_token"):
            raw[name] = _secret(name, value)
        elif name in ("default_domain_id", "default_domain_name"):
            raw[name] = _str(name, value)
        elif name == "endpoint":
            _str(name, value)
        else:
            _warn(
                f"unknown option {name!r} (not a keystonemiddleware or authmw option)",
                UnknownOptionWarning,
            )

    if "auth_url" not in raw:
        raise ConfigurationError(
            "auth_url", "is required (the Keystone URL, e.g. http://keystone:5000/v3)"
        )
    validator.update(
        {
            k: v
            for k, v in raw.items()
            if k not in _CREDENTIAL_KEYS
            and k not in ("auth_type", "admin_token", "default_domain_id", "default_domain_name")
        }
    )
    validator.update(_credentials(raw))
    validator.setdefault("include_service_catalog", True)
    validator.setdefault("http_request_max_retries", 3)
    middleware.setdefault("service_token_roles_required", True)
    memcache = _memcache(memcache_raw, validator.get("service_type"), ignored)
    return KeystoneOptions(validator, middleware, tuple(ignored), memcache)


def _memcache(
    raw: dict[str, Any], service_type: str | None, ignored: list[str]
) -> dict[str, Any] | None:
    """MemcacheCache keywords from keystonemiddleware's memcache options, or None."""
    servers = raw.get("memcached_servers") or raw.get("memcache_servers")
    if not servers:
        for name in raw:
            _warn(f"option {name!r} is ignored: memcached_servers is not set", IgnoredOptionWarning)
            ignored.append(name)
        return None
    if raw.get("memcache_sasl_enabled"):
        raise ConfigurationError(
            "memcache_sasl_enabled", "SASL is not supported by authmw's memcached client"
        )
    strategy = raw.get("memcache_security_strategy", "NONE")
    if strategy == "NONE":
        # authmw shares only signed entries: without a key, no shared cache at all.
        _warn(
            "memcached_servers is not used: authmw shares only signed entries; set "
            "memcache_security_strategy = MAC or ENCRYPT and memcache_secret_key "
            "(tokens are cached in each process meanwhile)",
            IgnoredOptionWarning,
        )
        ignored.append("memcached_servers")
        return None
    secret = raw.get("memcache_secret_key")
    if secret is None:
        raise ConfigurationError(
            "memcache_secret_key", "must be set when memcache_security_strategy is MAC or ENCRYPT"
        )
    if len(secret.encode("utf-8")) < 32:
        raise ConfigurationError(
            "memcache_secret_key",
            "must be at least 32 bytes long for authmw (e.g. the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
        )
    out: dict[str, Any] = {
        "servers": servers,
        "secret": secret,
        "encrypt": strategy == "ENCRYPT",
        # Services sharing memcached (and a key) must not read each other's
        # access-rule decisions: one namespace per service type.
        "namespace": f"authmw-{service_type}" if service_type else "authmw",
    }
    if "memcache_pool_socket_timeout" in raw:
        seconds = raw["memcache_pool_socket_timeout"]
        out["socket_timeout"] = out["connect_timeout"] = seconds
    if "memcache_pool_dead_retry" in raw:
        out["max_retry_interval"] = raw["memcache_pool_dead_retry"]
    if "memcache_pool_maxsize" in raw:
        out["max_pool_size"] = raw["memcache_pool_maxsize"]
    if raw.get("memcache_tls_enabled"):
        import ssl

        try:
            context = ssl.create_default_context(cafile=raw.get("memcache_tls_cafile"))
            if "memcache_tls_certfile" in raw:
                context.load_cert_chain(
                    raw["memcache_tls_certfile"], raw.get("memcache_tls_keyfile")
                )
            if "memcache_tls_allowed_ciphers" in raw:
                context.set_ciphers(raw["memcache_tls_allowed_ciphers"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError("memcache_tls_cafile", f"TLS set-up failed: {exc}") from None
        out["tls_context"] = context
    return out


def _credentials(raw: dict[str, Any]) -> dict[str, Any]:
    """The service-identity keywords for the validator, following ``auth_type``."""
    auth_type = raw.get("auth_type")
    if auth_type is not None:
        kind = _AUTH_TYPES.get(auth_type)
        if kind is None:
            supported = ", ".join(sorted(_AUTH_TYPES))
            raise ConfigurationError(
                "auth_type", f"{auth_type!r} is not supported; use one of {supported}"
            )
    elif "admin_token" in raw or "static_token" in raw:
        kind = "static"
    elif "application_credential_secret" in raw or "application_credential_id" in raw:
        kind = "application_credential"
    elif "token" in raw and "password" not in raw:
        kind = "token"
    else:
        kind = "password"

    def domain_default(key: str) -> None:
        id_key, name_key = f"{key}_id", f"{key}_name"
        if id_key not in out and name_key not in out:
            if "default_domain_id" in raw:
                out[id_key] = raw["default_domain_id"]
            elif "default_domain_name" in raw:
                out[name_key] = raw["default_domain_name"]

    out: dict[str, Any] = {}
    if kind == "password":
        out = {k: raw[k] for k in _PASSWORD_KEYS if k in raw}
        if "password" not in out:
            raise ConfigurationError("password", "is required for auth_type password")
        if "user_id" not in out:
            domain_default("user_domain")
        if "project_name" in out:
            domain_default("project_domain")
        used = set(_PASSWORD_KEYS)
    elif kind == "application_credential":
        out = {k: raw[k] for k in _APP_CRED_KEYS if k in raw}
        if "application_credential_secret" not in out:
            raise ConfigurationError(
                "application_credential_secret", "is required for an application credential"
            )
        if "application_credential_name" in out and "user_id" not in out:
            domain_default("user_domain")
        used = set(_APP_CRED_KEYS)
    elif kind == "token":
        if "token" not in raw:
            raise ConfigurationError("token", f"is required for auth_type {auth_type or 'token'}")
        out = {k: raw[k] for k in _SCOPE_KEYS if k in raw}
        if "project_name" in out:
            domain_default("project_domain")
        out["exchange_token"] = raw["token"]
        used = {*_SCOPE_KEYS, "token"}
    else:
        token = raw.get("static_token") or raw.get("admin_token") or raw.get("token")
        if token is None:
            raise ConfigurationError("token", "is required for auth_type admin_token")
        out = {"static_token": token}
        used = {"static_token", "admin_token", "token"}
    unused = sorted(k for k in raw if k in _CREDENTIAL_KEYS and k not in used)
    for name in unused:
        _warn(
            f"option {name!r} is ignored with auth_type {auth_type or kind}", IgnoredOptionWarning
        )
    return out
