"""``authmw serve`` settings: a file (TOML, YAML or JSON), the environment, the command line.

Later sources win: defaults, the file, ``AUTHMW_*`` variables, command-line
options. Everything is checked at start-up; a mistake raises
:class:`~authmw.ConfigurationError` naming the setting as it was given
(``serve.port``, ``middleware.cache_tme`` with a "did you mean", or the
environment variable, ``AUTHMW_PORT``).

Sections (docs/gateway.md has the reference):

- ``serve``: ``gateway`` (nginx, traefik, envoy), ``host``, ``port``,
  ``workers``, ``path_prefix`` (envoy), ``log_level``, ``access_log``;
- ``validator``: ``type`` and the validator's settings (:mod:`._validators`);
- ``middleware``: the pipeline's options, as for the middleware
  (``public_routes``, ``fiware_service_scope``, ``cache_time``, ...), and
  the server's forms of the options that take objects: ``trusted_proxies``,
  ``throttle`` (``{failures, window}``), ``audit_log`` and ``audit_format``
  (a JSON-lines file for ``on_decision``), ``tracing``;
- ``routes``: ``rules`` (``[{match = "DELETE /v2/*", rule = "role:admin"}]``),
  ``default`` and ``policy_file`` (named rules for ``rule:...``);
- ``cache``: ``redis_url``, ``redis_secret``, ``encrypt``: a shared cache.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _checks
from .._clients import ClientAddresses
from ..errors import ConfigurationError
from ..options import _MIDDLEWARE, _bool, _choice, _float, _int, _list, _str
from ..throttle import Throttle
from ._validators import KINDS, build_validator, check_kind, env_name, infer_kind

if TYPE_CHECKING:
    from ..audit import JSONLinesAudit

__all__ = ["CONFIG_ENV", "Settings", "load_settings"]

CONFIG_ENV = "AUTHMW_CONFIG"
"""The variable naming the settings file (``authmw serve --config`` sets it for workers)."""

# Middleware options a file cannot express (objects): the server builds them.
_OBJECT_OPTIONS = frozenset({"shared_cache", "timer"})
# Middleware settings of the server's own: the middleware takes objects for these.
_SERVER_OPTIONS = ("trusted_proxies", "throttle", "audit_log", "audit_format", "tracing")
_THROTTLE = {"failures": _int, "window": _float}
_TRACING = {"identities": _bool}
_AUDIT_FORMATS = ("record", "cadf")
_SECTIONS = ("serve", "validator", "middleware", "routes", "cache")
_SERVE: dict[str, Any] = {
    "gateway": None,
    "host": "127.0.0.1",
    "port": 9180,
    "workers": 1,
    "path_prefix": "",
    "log_level": "warning",
    "access_log": False,
}
_ROUTES = ("rules", "default", "policy_file")
_CACHE = ("redis_url", "redis_secret", "encrypt")
_ENV = {
    **{f"serve.{name}": f"AUTHMW_{name.upper()}" for name in _SERVE},
    "routes.default": "AUTHMW_DEFAULT_RULE",
    "routes.policy_file": "AUTHMW_POLICY_FILE",
    "cache.redis_url": "AUTHMW_REDIS_URL",
    "cache.redis_secret": "AUTHMW_REDIS_SECRET",
    "cache.encrypt": "AUTHMW_REDIS_ENCRYPT",
}
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass
class Settings:
    """Checked settings; :meth:`~authmw.gateway.ForwardAuth.from_settings` builds the server."""

    gateway: str
    host: str = "127.0.0.1"
    port: int = 9180
    workers: int = 1
    path_prefix: str = ""
    log_level: str = "warning"
    access_log: bool = False
    validator_kind: str = "keystone"
    validator: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """Validator settings: name -> (where it was set, value)."""
    middleware: dict[str, Any] = field(default_factory=dict)
    """Middleware options (``trusted_proxies`` among them), parsed."""
    throttle: tuple[int, float] | None = None
    """(failures, window) of each client's budget of failed authentications, or None."""
    audit_log: str | None = None
    """The JSON-lines audit file (``-``: standard output), or None."""
    audit_format: str = "record"
    """``record`` (the :class:`~authmw.audit.AuditRecord` fields) or ``cadf``."""
    tracing: bool = False
    tracing_identities: bool = False
    given: dict[str, str] = field(default_factory=dict)
    """Where each ``middleware`` setting was given (a file's key or a variable)."""
    routes: list[tuple[str, str]] = field(default_factory=list)
    default_rule: str | None = None
    policy_file: str | None = None
    redis_url: str | None = None
    redis_secret: str | None = field(default=None, repr=False)
    redis_encrypt: bool = False
    source: str | None = None
    """The settings file, if any."""


def read_file(path: str) -> dict[str, Any]:
    """The mapping in a TOML (``.toml``), YAML (``.yaml``, ``.yml``) or JSON file."""
    suffix = Path(path).suffix.lower()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError("config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if suffix == ".toml":
            data: Any = _toml().loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigurationError(
                    "config", "YAML settings need PyYAML: pip install 'authmw[serve]'"
                ) from None
            data = yaml.safe_load(raw) or {}
        elif suffix == ".json":
            data = json.loads(raw)
        else:
            raise ConfigurationError("config", f"{path}: use a .toml, .yaml or .json file")
    except ConfigurationError:
        raise
    except Exception as exc:  # each parser has its own error type
        detail = " ".join(str(exc).split())[:300]
        raise ConfigurationError("config", f"{path} cannot be parsed: {detail}") from None
    if not isinstance(data, dict):
        raise ConfigurationError("config", f"{path} must hold a mapping of sections")
    return data


def _toml() -> Any:
    """tomllib (Python 3.11+), else tomli."""
    try:
        return importlib.import_module("tomllib")
    except ImportError:  # Python 3.10
        try:
            return importlib.import_module("tomli")
        except ImportError:
            raise ConfigurationError(
                "config", "TOML settings need Python 3.11 or tomli: pip install 'authmw[serve]'"
            ) from None


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigurationError(name, "must be a section (a mapping of settings)")
    return value


def _known(section: str, values: Mapping[str, Any], names: Any) -> None:
    for key in values:
        if key not in names:
            raise _checks.unknown_option(f"{section}.{key}", [f"{section}.{n}" for n in names])


def load_settings(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``path`` (default: ``$AUTHMW_CONFIG``), ``environ`` and ``overrides``
    (``serve`` settings from the command line, already typed)."""
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV) or None
    data = read_file(path) if path else {}
    for name in data:
        if name not in _SECTIONS:
            raise _checks.unknown_option(name, _SECTIONS)
    serve, validator = _section(data, "serve"), _section(data, "validator")
    middleware, routes, cache = (
        _section(data, "middleware"),
        _section(data, "routes"),
        _section(data, "cache"),
    )
    _known("serve", serve, _SERVE)
    _known("routes", routes, _ROUTES)
    _known("cache", cache, _CACHE)
    settings = Settings(gateway="", source=path)
    _serve_settings(settings, serve, env, overrides or {})
    _validator_settings(settings, validator, env)
    _middleware_settings(settings, middleware, env)
    _route_settings(settings, routes, env)
    _cache_settings(settings, cache, env)
    return settings


def _pick(section: str, name: str, values: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """(where, value) of one setting: the environment's, else the file's, else None."""
    variable = _ENV.get(f"{section}.{name}")
    if variable is not None and env.get(variable):
        return variable, env[variable]
    if name in values:
        return f"{section}.{name}", values[name]
    return None


def _serve_settings(
    settings: Settings, values: Mapping[str, Any], env: Mapping[str, str], cli: Mapping[str, Any]
) -> None:
    parsers = {
        "gateway": _str,
        "host": _str,
        "port": _int,
        "workers": _int,
        "path_prefix": _text,
        "log_level": _str,
        "access_log": _bool,
    }
    sources = {"gateway": "serve.gateway", "path_prefix": "serve.path_prefix"}
    for name, parse in parsers.items():
        if cli.get(name) is not None:
            where, value = f"--{name.replace('_', '-')}", cli[name]
        else:
            picked = _pick("serve", name, values, env)
            if picked is None:
                continue
            where, value = picked
        sources[name] = where
        setattr(settings, name, parse(where, value))
        if name == "port" and not 0 <= settings.port <= 65535:
            raise ConfigurationError(where, f"must be a port number, got {value!r}")
        if name == "workers":
            _checks.integer(where, settings.workers, 1, 64)
        if name == "log_level" and settings.log_level.lower() not in _LOG_LEVELS:
            raise ConfigurationError(where, f"must be one of {', '.join(_LOG_LEVELS)}")
    if not settings.gateway:
        raise ConfigurationError(
            "serve.gateway", "is required: nginx, traefik or envoy (or AUTHMW_GATEWAY, --gateway)"
        )
    from ._modes import gateway_mode

    try:
        gateway_mode(settings.gateway, settings.path_prefix)  # checks both
    except ConfigurationError as exc:
        raise ConfigurationError(sources[exc.option], str(exc).split(": ", 1)[1]) from None
    settings.gateway = settings.gateway.strip().lower()
    settings.log_level = settings.log_level.lower()


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(name, f"must be a string, got {value!r}")
    return value.strip()


def _validator_settings(
    settings: Settings, values: Mapping[str, Any], env: Mapping[str, str]
) -> None:
    values = dict(values)
    if "type" in values:
        kind = check_kind("validator.type", values.pop("type"))
    elif values:
        raise ConfigurationError("validator.type", f"is required: one of {', '.join(KINDS)}")
    else:
        kind = infer_kind(env)
    chosen: dict[str, tuple[str, Any]] = {
        name: (f"validator.{name}", value) for name, value in values.items()
    }
    for name in KINDS[kind]:
        variable = env_name(kind, name)
        if env.get(variable):
            chosen[name] = (variable, env[variable])
    settings.validator_kind = kind
    settings.validator = chosen


def _middleware_settings(
    settings: Settings, values: Mapping[str, Any], env: Mapping[str, str]
) -> None:
    known = sorted((set(_MIDDLEWARE) - _OBJECT_OPTIONS) | set(_SERVER_OPTIONS))
    options: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in values.items():
        if name not in known:
            if name == "on_decision":
                raise ConfigurationError(
                    "middleware.on_decision",
                    "takes a Python hook: set middleware.audit_log (a JSON-lines file, "
                    "or - for standard output)",
                )
            raise _checks.unknown_option(f"middleware.{name}", [f"middleware.{n}" for n in known])
        sources[name] = f"middleware.{name}"
        options[name] = value
    for name in known:
        variable = f"AUTHMW_{name.upper()}"
        if env.get(variable):
            sources[name], options[name] = variable, env[variable]
    parsed: dict[str, Any] = {}
    for name, value in options.items():
        if name in _SERVER_OPTIONS:
            continue
        keyword, parse = _MIDDLEWARE[name]
        if keyword in parsed:
            raise ConfigurationError(sources[name], f"sets {keyword} a second time")
        parsed[keyword] = parse(sources[name], value)
    settings.middleware = parsed
    settings.given = sources
    _server_options(settings, {n: (sources[n], v) for n, v in options.items()})


def _server_options(settings: Settings, given: Mapping[str, tuple[str, Any]]) -> None:
    """``trusted_proxies``, ``throttle``, ``audit_log``, ``audit_format``, ``tracing``."""
    if "trusted_proxies" in given:
        where, value = given["trusted_proxies"]
        proxies = _list(where, value)
        try:
            ClientAddresses(proxies)
        except ConfigurationError as exc:
            raise ConfigurationError(where, _message(exc)) from None
        settings.middleware["trusted_proxies"] = proxies
    if "throttle" in given:
        where, value = given["throttle"]
        fields = _table(where, value, _THROTTLE)
        if fields is not None:
            try:
                throttle = Throttle(**fields)
            except ConfigurationError as exc:
                raise _field_error(where, exc.option, _message(exc)) from None
            if not settings.middleware.get("trusted_proxies"):
                raise ConfigurationError(
                    where,
                    "needs middleware.trusted_proxies (AUTHMW_TRUSTED_PROXIES): every check "
                    "comes from the gateway, so without the gateway's address there every "
                    "client would share one budget",
                )
            settings.throttle = (throttle.failures, throttle.window)
    if "audit_log" in given:
        settings.audit_log = _str(*given["audit_log"])
    if "audit_format" in given:
        where, value = given["audit_format"]
        if settings.audit_log is None:
            raise ConfigurationError(where, "needs middleware.audit_log (AUTHMW_AUDIT_LOG)")
        settings.audit_format = _choice(*_AUDIT_FORMATS)(where, value)
    if "tracing" in given:
        fields = _table(*given["tracing"], _TRACING)
        settings.tracing = fields is not None
        settings.tracing_identities = bool(fields and fields.get("identities"))


def _message(exc: ConfigurationError) -> str:
    """The message of ``exc`` without the option name in front."""
    return str(exc).split(": ", 1)[-1]


def _field_error(where: str, name: str, message: str) -> ConfigurationError:
    """The error for field ``name`` of a table setting: ``middleware.throttle.failures``,
    or (a variable) ``AUTHMW_THROTTLE: failures ...``."""
    if where.startswith("AUTHMW_"):
        return ConfigurationError(where, f"{name}: {message}")
    return ConfigurationError(f"{where}.{name}", message)


def _table(where: str, value: Any, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """A setting that is off (``false``), on with defaults (``true``) or on with some of
    ``fields`` (a table; from a variable, ``name=value,name=value``): None when off."""
    if isinstance(value, str) and "=" in value:
        pairs: dict[str, str] = {}
        for part in value.split(","):
            name, equals, text = part.partition("=")
            if part.strip() and not equals:
                raise ConfigurationError(where, f"expected name=value, got {part.strip()!r}")
            if equals:
                pairs[name.strip()] = text.strip()
        value = pairs
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for name, item in value.items():
            if name not in fields:
                unknown = _checks.unknown_option(name, fields)
                raise _field_error(where, name, _message(unknown))
            try:
                out[name] = fields[name](name, item)
            except ConfigurationError as exc:
                raise _field_error(where, name, _message(exc)) from None
        return out
    try:
        return {} if _bool(where, value) else None
    except ConfigurationError:
        example = ", ".join(f"{name} = ..." for name in fields)
        raise ConfigurationError(
            where, f"must be true, false or a table {{{example}}}, got {value!r}"
        ) from None


def _route_settings(settings: Settings, values: Mapping[str, Any], env: Mapping[str, str]) -> None:
    rules = values.get("rules", [])
    if not isinstance(rules, list):
        raise ConfigurationError("routes.rules", "must be a list of {match, rule} entries")
    for index, entry in enumerate(rules):
        where = f"routes.rules[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"match", "rule"}:
            raise ConfigurationError(where, f"must have 'match' and 'rule' only, got {entry!r}")
        settings.routes.append((entry["match"], entry["rule"]))
    for name in ("default", "policy_file"):
        picked = _pick("routes", name, values, env)
        if picked is not None:
            where, value = picked
            setattr(settings, "default_rule" if name == "default" else name, _str(where, value))


def _cache_settings(settings: Settings, values: Mapping[str, Any], env: Mapping[str, str]) -> None:
    picked = _pick("cache", "redis_url", values, env)
    secret = _pick("cache", "redis_secret", values, env)
    encrypt = _pick("cache", "encrypt", values, env)
    if picked is None:
        for other in (secret, encrypt):
            if other is not None:
                raise ConfigurationError(other[0], "needs cache.redis_url (AUTHMW_REDIS_URL)")
        return
    settings.redis_url = _str(*picked)
    if secret is None:
        raise ConfigurationError(
            "cache.redis_secret", "is required with a Redis cache (AUTHMW_REDIS_SECRET)"
        )
    settings.redis_secret = _str(*secret)
    settings.redis_encrypt = _bool(*encrypt) if encrypt is not None else False


def build_parts(settings: Settings) -> tuple[Any, dict[str, Any], Any]:
    """(validator, core options, route policy or None) for ``settings``; checks all."""
    from ..policy import Policy, PolicyError
    from ._routes import RoutePolicy

    built = build_validator(settings.validator_kind, settings.validator)
    options = {**built.middleware, **settings.middleware}
    if settings.redis_url is not None:
        if built.shared_cache is not None:
            raise ConfigurationError("cache.redis_url", "conflicts with memcached_servers")
        from ..redis import RedisCache

        assert settings.redis_secret is not None
        options["shared_cache"] = RedisCache.from_url(
            settings.redis_url, secret=settings.redis_secret, encrypt=settings.redis_encrypt
        )
    elif built.shared_cache is not None:
        options["shared_cache"] = built.shared_cache
    if settings.throttle is not None:
        options["throttle"] = Throttle(*settings.throttle)
    if settings.tracing:
        options["tracing"] = _tracing(settings)
    policy = None
    if settings.policy_file is not None:
        try:
            policy = Policy.from_file(settings.policy_file)
        except (OSError, PolicyError) as exc:
            raise ConfigurationError("routes.policy_file", str(exc)) from None
    routes = None
    if settings.routes or settings.default_rule is not None:
        routes = RoutePolicy(settings.routes, settings.default_rule, policy=policy)
    if settings.audit_log is not None:  # last: nothing after it can fail and leave it open
        options["on_decision"] = audit_hook(settings)
    return built.validator, options, routes


def audit_hook(settings: Settings) -> JSONLinesAudit:
    """The ``on_decision`` hook writing ``settings.audit_log``."""
    from ..audit import AuditRecord, JSONLinesAudit, cadf

    assert settings.audit_log is not None
    render = cadf if settings.audit_format == "cadf" else AuditRecord.as_dict
    if settings.audit_log == "-":
        return JSONLinesAudit(stream=sys.stdout, format=render)
    try:
        return JSONLinesAudit(settings.audit_log, format=render)
    except OSError as exc:
        where = settings.given.get("audit_log", "middleware.audit_log")
        raise ConfigurationError(
            where, f"cannot open {settings.audit_log}: {exc.strerror}"
        ) from None


def _tracing(settings: Settings) -> Any:
    """The :class:`~authmw.tracing.Tracing` of ``settings``, on the global tracer provider."""
    where = settings.given.get("tracing", "middleware.tracing")
    try:
        from ..tracing import Tracing

        return Tracing(identities=settings.tracing_identities)
    except ImportError:
        raise ConfigurationError(where, "needs OpenTelemetry: pip install 'authmw[otel]'") from None
