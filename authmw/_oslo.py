"""``[keystone_authtoken]`` from oslo.config, read where keystonemiddleware reads it.

keystonemiddleware's ``AuthProtocol(app, conf)`` takes its options from two
places: ``conf`` (paste options: each wins) and an oslo.config object:

- ``oslo_config_config``: a ``ConfigOpts`` the service passes (Placement,
  Nova... pass their own);
- else, with ``oslo_config_project``: a new ``ConfigOpts`` that parses that
  project's configuration file (``oslo_config_file``, or oslo.config's
  default search: ``/etc/<project>/<project>.conf``...);
- else the process-wide ``cfg.CONF``.

The ``[keystone_authtoken]`` group (or the one ``auth_section`` names, for
the auth plugin's options) is read with keystonemiddleware's option
definitions: same names, deprecated names, types and defaults. Only values
set somewhere (file, command line, environment, ``set_override``,
``set_default``) count as given; defaults are left to
:func:`authmw.options.keystone_options`, which applies keystonemiddleware's.

oslo.config (and keystoneauth1, for the auth plugins' option sets) are
imported only here, when one of these sources is used: a ``conf`` without
``oslo_config_*`` keys in a process that never imported ``oslo_config``
reads nothing from it (``cfg.CONF`` cannot hold anything then).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["GROUP", "SOURCE_KEYS", "with_oslo_options"]

GROUP = "keystone_authtoken"
SOURCE_KEYS = ("oslo_config_config", "oslo_config_project", "oslo_config_file")
_INSTALL = "needs oslo.config and keystoneauth1: pip install 'authmw[openstack]'"


def _ksm_opts(cfg: Any) -> list[Any]:
    """keystonemiddleware 13.0.1's own options, verbatim (oslo.config compares
    options by value: equal ones may be registered by both, in any order)."""
    return [
        cfg.StrOpt(
            "www_authenticate_uri",
            help='Complete "public" Identity API endpoint. This endpoint'
            ' should not be an "admin" endpoint, as it should be accessible'
            " by all end users. Unauthenticated clients are redirected to"
            " this endpoint to authenticate. Although this endpoint should"
            " ideally be unversioned, client support in the wild varies.",
        ),
        cfg.StrOpt("auth_version", help="API version of the Identity API endpoint."),
        cfg.StrOpt(
            "interface",
            default="internal",
            help="Interface to use for the Identity API endpoint. Valid"
            ' values are "public", "internal" (default) or "admin".',
        ),
        cfg.BoolOpt(
            "delay_auth_decision",
            default=False,
            help="Do not handle authorization requests within the"
            " middleware, but delegate the authorization decision to"
            " downstream WSGI components.",
        ),
        cfg.IntOpt(
            "http_connect_timeout",
            help="Request timeout value for communicating with Identity API server.",
        ),
        cfg.IntOpt(
            "http_request_max_retries",
            default=3,
            help="How many times are we trying to reconnect when"
            " communicating with Identity API Server.",
        ),
        cfg.StrOpt(
            "cache",
            help="Request environment key where the Swift cache object is"
            " stored. When auth_token middleware is deployed with a Swift"
            " cache, use this option to have the middleware share a caching"
            " backend with swift. Otherwise, use the ``memcached_servers``"
            " option instead.",
        ),
        cfg.StrOpt("certfile", help="Required if identity server requires client certificate"),
        cfg.StrOpt("keyfile", help="Required if identity server requires client certificate"),
        cfg.StrOpt(
            "cafile",
            help="A PEM encoded Certificate Authority to use when "
            "verifying HTTPs connections. Defaults to system CAs.",
        ),
        cfg.BoolOpt("insecure", default=False, help="Verify HTTPS connections."),
        cfg.StrOpt("region_name", help="The region in which the identity server can be found."),
        cfg.ListOpt(
            "memcached_servers",
            deprecated_name="memcache_servers",
            help="Optionally specify a list of memcached server(s) to"
            " use for caching. If left undefined, tokens will instead be"
            " cached in-process.",
        ),
        cfg.IntOpt(
            "token_cache_time",
            default=300,
            help="In order to prevent excessive effort spent validating"
            " tokens, the middleware caches previously-seen tokens for a"
            " configurable duration (in seconds). Set to -1 to disable"
            " caching completely.",
        ),
        cfg.StrOpt(
            "memcache_security_strategy",
            default="None",
            choices=("None", "MAC", "ENCRYPT"),
            ignore_case=True,
            help="(Optional) If defined, indicate whether token data"
            " should be authenticated or authenticated and encrypted."
            " If MAC, token data is authenticated (with HMAC) in the cache."
            " If ENCRYPT, token data is encrypted and authenticated in the"
            " cache. If the value is not one of these options or empty,"
            " auth_token will raise an exception on initialization.",
        ),
        cfg.StrOpt(
            "memcache_secret_key",
            secret=True,
            help="(Optional, mandatory if memcache_security_strategy is"
            " defined) This string is used for key derivation.",
        ),
        cfg.BoolOpt(
            "memcache_tls_enabled",
            default=False,
            help="(Optional) Global toggle for TLS usage when comunicating"
            " with the caching servers.",
        ),
        cfg.StrOpt(
            "memcache_tls_cafile",
            help="(Optional) Path to a file of concatenated CA certificates"
            " in PEM format necessary to establish the caching server's"
            " authenticity. If tls_enabled is False, this option is"
            " ignored.",
        ),
        cfg.StrOpt(
            "memcache_tls_certfile",
            help="(Optional) Path to a single file in PEM format containing"
            " the client's certificate as well as any number of CA"
            " certificates needed to establish the certificate's"
            " authenticity. This file is only required when client side"
            " authentication is necessary. If tls_enabled is False, this"
            " option is ignored.",
        ),
        cfg.StrOpt(
            "memcache_tls_keyfile",
            help="(Optional) Path to a single file containing the client's"
            " private key in. Otherwhise the private key will be taken from"
            " the file specified in tls_certfile. If tls_enabled is False,"
            " this option is ignored.",
        ),
        cfg.StrOpt(
            "memcache_tls_allowed_ciphers",
            help="(Optional) Set the available ciphers for sockets created"
            " with the TLS context. It should be a string in the OpenSSL"
            " cipher list format. If not specified, all OpenSSL enabled"
            " ciphers will be available.",
        ),
        cfg.IntOpt(
            "memcache_pool_dead_retry",
            default=5 * 60,
            help="(Optional) Number of seconds memcached server is"
            " considered dead before it is tried again.",
        ),
        cfg.IntOpt(
            "memcache_pool_maxsize",
            default=10,
            help="(Optional) Maximum total number of open connections to every memcached server.",
        ),
        cfg.IntOpt(
            "memcache_pool_socket_timeout",
            default=3,
            help="(Optional) Socket timeout in seconds for communicating with a memcached server.",
        ),
        cfg.IntOpt(
            "memcache_pool_unused_timeout",
            default=60,
            help="(Optional) Number of seconds a connection to memcached"
            " is held unused in the pool before it is closed.",
        ),
        cfg.IntOpt(
            "memcache_pool_conn_get_timeout",
            default=10,
            help="(Optional) Number of seconds that an operation will wait "
            "to get a memcached client connection from the pool.",
        ),
        cfg.BoolOpt(
            "memcache_use_advanced_pool",
            default=True,
            help="(Optional) Use the advanced (eventlet safe) memcached client pool.",
        ),
        cfg.BoolOpt(
            "include_service_catalog",
            default=True,
            help="(Optional) Indicate whether to set the X-Service-Catalog"
            " header. If False, middleware will not ask for service"
            " catalog on token validation and will not set the"
            " X-Service-Catalog header.",
        ),
        cfg.StrOpt(
            "enforce_token_bind",
            default="permissive",
            help="Used to control the use and type of token binding. Can"
            ' be set to: "disabled" to not check token binding.'
            ' "permissive" (default) to validate binding information if the'
            " bind type is of a form known to the server and ignore it if"
            ' not. "strict" like "permissive" but if the bind type is'
            ' unknown the token will be rejected. "required" any form of'
            " token binding is needed to be allowed. Finally the name of a"
            " binding method that must be present in tokens.",
        ),
        cfg.ListOpt(
            "service_token_roles",
            default=["service"],
            help="A choice of roles that must be present in a service"
            " token. Service tokens are allowed to request that an expired"
            " token can be used and so this check should tightly control"
            " that only actual services should be sending this token."
            " Roles here are applied as an ANY check so any role in this"
            " list must be present. For backwards compatibility reasons"
            " this currently only affects the allow_expired check.",
        ),
        cfg.BoolOpt(
            "service_token_roles_required",
            default=True,
            help="When set to True, service tokens must contain a role"
            " from the service_token_roles list to be considered valid."
            " This prevents end-user tokens from being used as service"
            " tokens and ensures proper service-to-service authentication."
            " Setting this to False is NOT RECOMMENDED as it allows any"
            " valid token to be used as a service token, which can bypass"
            " access-rule checks and weaken composite-auth protections.",
        ),
        cfg.StrOpt(
            "service_type",
            help="The name or type of the service as it appears in the"
            " service catalog. This is used to validate tokens that have"
            " restricted access rules.",
        ),
        cfg.BoolOpt(
            "memcache_sasl_enabled",
            default=False,
            help="Enable the SASL(Simple Authentication and Security"
            " Layer) if the SASL_enable is true, else disable.",
        ),
        cfg.StrOpt("memcache_username", help="the user name for the SASL"),
        cfg.StrOpt("memcache_password", secret=True, help="the username password for SASL"),
    ]


def _import() -> tuple[Any, Any]:
    try:
        from keystoneauth1 import loading
        from oslo_config import cfg
    except ImportError as exc:
        raise ConfigurationError("oslo_config_config", f"{_INSTALL} ({exc})") from None
    return cfg, loading


def _register(cfg: Any, conf: Any, opts: list[Any], group: str) -> None:
    """Register ``opts`` unless an option of that name is there (then its value is read)."""
    for opt in opts:
        with contextlib.suppress(cfg.DuplicateOptError):
            conf.register_opt(opt, group=group)


def _given(cfg: Any, conf: Any, name: str, group: str) -> tuple[bool, Any]:
    """(set somewhere, value) of one registered option."""
    try:
        value = conf[group][name]
        where = conf.get_location(name, group)
    except cfg.Error as exc:
        raise ConfigurationError(name, f"[{group}] {exc}") from None
    return where is not None and where.location is not cfg.Locations.opt_default, value


def with_oslo_options(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` without its ``oslo_config_*`` keys, over the oslo.config values it points at.

    Raises :class:`~authmw.ConfigurationError` naming the option when the
    configuration cannot be read.
    """
    paste = {k: v for k, v in conf.items() if k not in SOURCE_KEYS}
    given = conf.get("oslo_config_config")
    project = conf.get("oslo_config_project")
    config_file = conf.get("oslo_config_file")
    if given is None and project is None:
        if "oslo_config" not in sys.modules:
            return paste  # nothing can have filled cfg.CONF
        try:
            cfg, loading = _import()
        except ConfigurationError:
            return paste  # oslo.config is used, but not for us (no keystoneauth1)
    else:
        cfg, loading = _import()
    if given is not None:
        if not isinstance(given, cfg.ConfigOpts):
            raise ConfigurationError(
                "oslo_config_config", f"must be an oslo.config ConfigOpts, got {given!r}"
            )
        target = given
    elif project is not None:
        if not isinstance(project, str) or not project.strip():
            raise ConfigurationError(
                "oslo_config_project", f"must be a project name, got {project!r}"
            )
        files = [config_file] if config_file else None
        target = cfg.ConfigOpts()
        try:
            target(
                [],
                project=project.strip(),
                default_config_files=files,
                validate_default_values=True,
            )
        except cfg.Error as exc:
            option = "oslo_config_file" if config_file else "oslo_config_project"
            raise ConfigurationError(option, str(exc)) from None
    else:
        target = cfg.CONF
    _register(cfg, target, _ksm_opts(cfg) + loading.get_auth_common_conf_options(), GROUP)

    values: dict[str, Any] = {}
    for opt in _ksm_opts(cfg) + loading.get_auth_common_conf_options():
        is_given, value = _given(cfg, target, opt.dest, GROUP)
        if is_given:
            values[opt.dest] = value
    # The auth plugin's options: in auth_section if set, else [keystone_authtoken].
    section = paste.get("auth_section") or values.get("auth_section") or GROUP
    if section != GROUP:
        _register(cfg, target, loading.get_auth_common_conf_options(), section)
    plugin = paste.get("auth_type") or paste.get("auth_plugin")
    if plugin is None:
        is_given, plugin = _given(cfg, target, "auth_type", section)
        if not is_given:
            plugin = None
    if plugin is not None:
        try:
            loader = loading.get_plugin_loader(str(plugin))
        except Exception as exc:  # keystoneauth's NoMatchingPlugin
            raise ConfigurationError("auth_type", f"{plugin!r}: {exc}") from None
        plugin_opts = loading.get_auth_plugin_conf_options(loader)
        _register(cfg, target, plugin_opts, section)
        for opt in plugin_opts:
            is_given, value = _given(cfg, target, opt.dest, section)
            if is_given and value is not None:
                values[opt.dest] = value
        values["auth_type"] = plugin
    values.pop("auth_section", None)
    values.pop("auth_plugin", None)
    values.update(paste)  # paste options win, as in keystonemiddleware
    return values
