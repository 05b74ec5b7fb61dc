"""keystonemiddleware option names -> authmw keyword arguments (no network needed)."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest

from authmw.client import (
    KeystoneV3ApplicationCredential,
    KeystoneV3Password,
    KeystoneV3Token,
    StaticToken,
)
from authmw.errors import ConfigurationError
from authmw.options import IgnoredOptionWarning, UnknownOptionWarning, keystone_options

# The configuration keystonemiddleware users write for the Keystone the suite runs.
KSM_CONF = {
    "auth_type": "password",
    "auth_url": "http://127.0.0.1:5000/v3",
    "www_authenticate_uri": "http://127.0.0.1:5000/v3",
    "username": "service-user",
    "password": "service-secret",
    "project_name": "service",
    "user_domain_id": "default",
    "project_domain_id": "default",
    "service_token_roles_required": "true",
}


def translate(conf: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a clean configuration
        return keystone_options(conf)


def test_keystonemiddleware_configuration_translates() -> None:
    options = translate(KSM_CONF)
    assert options.validator == {
        "auth_url": "http://127.0.0.1:5000/v3",
        "username": "service-user",
        "password": "service-secret",
        "project_name": "service",
        "user_domain_id": "default",
        "project_domain_id": "default",
        "include_service_catalog": True,
        "http_request_max_retries": 3,
    }
    assert options.middleware == {
        "www_authenticate_uri": "http://127.0.0.1:5000/v3",
        "service_token_roles_required": True,
    }
    validator = options.build_validator()
    assert isinstance(validator.auth, KeystoneV3Password)
    assert validator.auth.scope == {"project": {"name": "service", "domain": {"id": "default"}}}
    assert validator.include_service_catalog is True
    assert validator.max_retries == 3


def test_string_values_are_parsed() -> None:
    options = translate(
        {
            **KSM_CONF,
            "delay_auth_decision": "True",
            "include_service_catalog": "false",
            "service_token_roles": "service, admin ,",
            "service_token_roles_required": "0",
            "http_connect_timeout": "2",
            "http_request_max_retries": "1",
            "token_cache_time": "60",
            "insecure": "no",
        }
    )
    assert options.middleware == {
        "www_authenticate_uri": "http://127.0.0.1:5000/v3",
        "delay_auth_decision": True,
        "service_token_roles": ["service", "admin"],
        "service_token_roles_required": False,
        "cache_time": 60.0,
    }
    assert options.validator["include_service_catalog"] is False
    assert options.validator["http_connect_timeout"] == 2.0
    assert options.validator["http_request_max_retries"] == 1
    assert options.validator["insecure"] is False
    assert options.build_validator().timeout.connect == 2.0


def test_python_values_are_accepted() -> None:
    options = translate(
        {**KSM_CONF, "delay_auth_decision": True, "service_token_roles": ["service"]}
    )
    assert options.middleware["delay_auth_decision"] is True
    assert options.middleware["service_token_roles"] == ["service"]


def test_cache_time_minus_one_turns_the_cache_off() -> None:
    assert translate({**KSM_CONF, "token_cache_time": "-1"}).middleware["cache_time"] == 0.0


def test_deprecated_auth_uri_alias() -> None:
    conf = {k: v for k, v in KSM_CONF.items() if k != "www_authenticate_uri"}
    options = translate({**conf, "auth_uri": "https://keystone.example/v3"})
    assert options.middleware["www_authenticate_uri"] == "https://keystone.example/v3"


def test_authmw_own_options_pass_through() -> None:
    options = translate(
        {
            **KSM_CONF,
            "public_routes": "GET /healthz, /static/*",
            "fiware_service_scope": "yes",
            "expiry_leeway": "5",
            "negative_cache_time": "3",
        }
    )
    assert options.middleware["public_routes"] == ["GET /healthz", "/static/*"]
    assert options.middleware["fiware_service_scope"] is True
    assert options.middleware["negative_cache_time"] == 3.0
    assert options.validator["expiry_leeway"] == 5.0


def test_application_credential() -> None:
    options = translate(
        {
            "auth_type": "v3applicationcredential",
            "auth_url": "http://ks/v3",
            "application_credential_id": "abc",
            "application_credential_secret": "s3cret",
        }
    )
    validator = options.build_validator()
    assert isinstance(validator.auth, KeystoneV3ApplicationCredential)
    payload = validator.auth.identity_payload()
    assert payload["application_credential"] == {"id": "abc", "secret": "s3cret"}


def test_application_credential_inferred_without_auth_type() -> None:
    options = translate(
        {
            "auth_url": "http://ks/v3",
            "application_credential_name": "mw",
            "application_credential_secret": "s3cret",
            "username": "svc",
            "default_domain_name": "Default",
        }
    )
    auth = options.build_validator().auth
    assert isinstance(auth, KeystoneV3ApplicationCredential)
    assert auth.identity_payload()["application_credential"]["user"] == {
        "name": "svc",
        "domain": {"name": "Default"},
    }


def test_admin_token_is_a_static_service_token() -> None:
    options = translate({"auth_type": "admin_token", "auth_url": "http://ks/v3", "token": "t0k"})
    auth = options.build_validator().auth
    assert isinstance(auth, StaticToken)
    with httpx.Client() as client:  # a static token needs no request
        assert auth.get_token(client) == "t0k"


def test_v3token_exchanges_a_token() -> None:
    options = translate(
        {
            "auth_type": "v3token",
            "auth_url": "http://ks/v3",
            "token": "t0k",
            "project_id": "p1",
        }
    )
    auth = options.build_validator().auth
    assert isinstance(auth, KeystoneV3Token)
    assert auth.scope == {"project": {"id": "p1"}}
    assert auth.identity_payload() == {"methods": ["token"], "token": {"id": "t0k"}}


def test_default_domain_fills_user_and_project_domains() -> None:
    options = translate(
        {
            "auth_url": "http://ks/v3",
            "username": "svc",
            "password": "pw",
            "project_name": "service",
            "default_domain_id": "default",
        }
    )
    assert options.validator["user_domain_id"] == "default"
    assert options.validator["project_domain_id"] == "default"


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"delay_auth_decision": "maybe"}, "delay_auth_decision"),
        ({"include_service_catalog": "2"}, "include_service_catalog"),
        ({"http_request_max_retries": "three"}, "http_request_max_retries"),
        ({"http_connect_timeout": "soon"}, "http_connect_timeout"),
        ({"token_cache_time": "-5"}, "token_cache_time"),
        ({"service_token_roles": 5}, "service_token_roles"),
        ({"auth_type": "v3oidcpassword"}, "auth_type"),
        ({"auth_url": ""}, "auth_url"),
        ({"password": ""}, "password"),
        ({"interface": "sideways"}, "interface"),
        ({"enforce_token_bind": "required"}, "enforce_token_bind"),
        ({"auth_version": "v2.0"}, "auth_version"),
        ({"system_scope": "project"}, "system_scope"),
    ],
)
def test_wrong_values_raise_naming_the_option(changes: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keystone_options({**KSM_CONF, **changes})
    assert info.value.option == option


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"http_request_max_retries": "50"}, "http_request_max_retries"),
        ({"http_connect_timeout": "0"}, "http_connect_timeout"),
        ({"cafile": "/nonexistent/ca.pem"}, "cafile"),
        ({"project_domain_id": None}, "project_domain_name"),
        ({"auth_url": "http://ks:5000/v2.0"}, "auth_url"),
    ],
)
def test_values_checked_when_the_validator_is_built(changes: dict[str, Any], option: str) -> None:
    options = keystone_options({**KSM_CONF, **changes})
    with pytest.raises(ConfigurationError) as info:
        options.build_validator()
    assert info.value.option == option


def test_missing_essentials() -> None:
    with pytest.raises(ConfigurationError) as info:
        keystone_options({"username": "u", "password": "p"})
    assert info.value.option == "auth_url"
    with pytest.raises(ConfigurationError) as info:
        keystone_options({"auth_url": "http://ks/v3", "username": "u"})
    assert info.value.option == "password"
    with pytest.raises(ConfigurationError) as info:
        keystone_options({"auth_url": "http://ks/v3", "auth_type": "v3token"})
    assert info.value.option == "token"


def test_unknown_option_warns_with_its_name() -> None:
    with pytest.warns(UnknownOptionWarning, match="'delay_auth_decison'"):
        options = keystone_options({**KSM_CONF, "delay_auth_decison": "true"})
    assert "delay_auth_decision" not in options.middleware


@pytest.mark.parametrize(
    "name", ["memcached_servers", "memcache_secret_key", "region_name", "interface", "cache"]
)
def test_known_but_unused_options_warn(name: str) -> None:
    with pytest.warns(IgnoredOptionWarning, match=name):
        options = keystone_options({**KSM_CONF, name: "internal"})
    assert name in options.ignored


def test_credentials_of_another_auth_type_warn() -> None:
    with pytest.warns(IgnoredOptionWarning, match="application_credential_secret"):
        keystone_options({**KSM_CONF, "application_credential_secret": "s"})


def test_paste_bookkeeping_keys_are_silent() -> None:
    options = translate({**KSM_CONF, "here": "/etc/app", "__file__": "/etc/app/paste.ini"})
    assert "here" not in options.validator and "here" not in options.middleware


def test_repr_hides_secrets() -> None:
    text = repr(translate(KSM_CONF))
    assert "service-secret" not in text
    assert "service-user" in text
