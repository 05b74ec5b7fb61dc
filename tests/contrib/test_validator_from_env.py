from __future__ import annotations

from pathlib import Path

import pytest

from authmw import ConfigurationError, InMemoryValidator
from authmw.contrib import validator_from_env
from authmw.store import LocalTokenStore
from authmw.validators.keystone import KeystoneValidator


def test_default_when_nothing_is_set() -> None:
    fallback = InMemoryValidator()
    assert validator_from_env({}, default=lambda: fallback) is fallback
    with pytest.raises(ConfigurationError) as info:
        validator_from_env({})
    assert info.value.option == "AUTHMW_AUTH_URL"


def test_local_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    validator = validator_from_env({"AUTHMW_DB": url, "AUTHMW_PEPPER": "p" * 32})
    assert isinstance(validator, LocalTokenStore)
    with validator:
        token = validator.issue(user_name="u", roles=["member"], ttl=60).token
        assert validator.validate(token).roles == ("member",)
    # The pepper is part of the configuration: opening without it is refused.
    with pytest.raises(ConfigurationError):
        validator_from_env({"AUTHMW_DB": url})


def test_keystone_options_come_from_the_cli_variable_names() -> None:
    validator = validator_from_env(
        {
            "AUTHMW_AUTH_URL": "http://127.0.0.1:1/v3",
            "AUTHMW_USERNAME": "svc",
            "AUTHMW_PASSWORD": "secret",
            "AUTHMW_USER_DOMAIN_NAME": "Default",
            "AUTHMW_PROJECT_NAME": "service",
            "AUTHMW_PROJECT_DOMAIN_NAME": "Default",
            "AUTHMW_INCLUDE_SERVICE_CATALOG": "true",
        }
    )
    assert isinstance(validator, KeystoneValidator)
    assert validator.include_service_catalog is True
    validator.close()


def test_both_backends_is_a_mistake() -> None:
    with pytest.raises(ConfigurationError) as info:
        validator_from_env({"AUTHMW_AUTH_URL": "http://127.0.0.1:1/v3", "AUTHMW_DB": "x.db"})
    assert info.value.option == "AUTHMW_DB"


def test_several_peppers_from_the_environment(tmp_path: Path) -> None:
    import json

    db = f"sqlite:///{tmp_path}/peppered.db"
    peppers = {"a": "first pepper, 32 bytes long....", "b": "x" * 32}
    store = validator_from_env({"AUTHMW_DB": db, "AUTHMW_PEPPERS": json.dumps(peppers)})
    assert isinstance(store, LocalTokenStore)
    issued = store.issue(user_name="alice", ttl=60)
    assert issued.record.pepper_id == "b"
    store.close()
    with pytest.raises(ConfigurationError) as info:
        validator_from_env({"AUTHMW_DB": db, "AUTHMW_PEPPERS": "[1]"})
    assert info.value.option == "AUTHMW_PEPPERS"
