"""``[keystone_authtoken]`` from oslo.config, read where keystonemiddleware reads it.

The reference is keystonemiddleware 13.0.1 itself: its ``Config`` object is
built from the same ``conf`` and asked for every option; authmw must find the
same values (what a deployment sets) and leave the rest to the defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from keystonemiddleware._common import config as ksm_config
from keystonemiddleware.auth_token import _base, list_opts
from oslo_config import cfg
from webob import Request

from authmw.errors import ConfigurationError
from authmw.options import IgnoredOptionWarning, keystone_options
from authmw.paste import AuthProtocol, filter_factory

REPO = Path(__file__).resolve().parent.parent

CONF_FILE = """
[DEFAULT]
debug = true

[keystone_authtoken]
www_authenticate_uri = http://keystone.example:5000/v3
auth_type = password
auth_url = http://keystone.example:5000/v3
username = placement
password = file-secret
user_domain_name = Default
project_name = service
project_domain_name = Default
service_type = placement
delay_auth_decision = true
token_cache_time = 120
service_token_roles = service, admin
http_request_max_retries = 2
include_service_catalog = false
"""


def write(tmp_path: Path, text: str, name: str = "svc.conf") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def read_by_ksm(conf: dict[str, Any], names: list[str]) -> dict[str, Any]:
    config = ksm_config.Config("auth_token", _base.AUTHTOKEN_GROUP, list_opts(), dict(conf))
    from keystoneauth1 import loading

    section = config.get("auth_section") or _base.AUTHTOKEN_GROUP
    plugin = config.get("auth_type", group=section)
    plugin_names: set[str] = set()
    if plugin:
        opts = loading.get_auth_plugin_conf_options(loading.get_plugin_loader(plugin))
        config.oslo_conf_obj.register_opts(opts, group=section)
        plugin_names = {o.dest for o in opts}
    return {n: config.get(n, group=section) if n in plugin_names else config.get(n) for n in names}


def translated(conf: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredOptionWarning)
        return keystone_options(conf)


def test_project_file_is_read_as_keystonemiddleware_reads_it(tmp_path: Path) -> None:
    path = write(tmp_path, CONF_FILE)
    conf = {"oslo_config_project": "svc", "oslo_config_file": path}
    ksm = read_by_ksm(
        conf,
        [
            "auth_url",
            "username",
            "password",
            "project_name",
            "service_type",
            "delay_auth_decision",
            "token_cache_time",
            "service_token_roles",
            "http_request_max_retries",
            "include_service_catalog",
            "www_authenticate_uri",
        ],
    )
    options = translated(conf)
    assert options.validator["auth_url"] == ksm["auth_url"]
    assert options.validator["username"] == ksm["username"] == "placement"
    assert options.validator["password"] == ksm["password"] == "file-secret"
    assert options.validator["project_name"] == ksm["project_name"]
    assert options.validator["service_type"] == ksm["service_type"] == "placement"
    assert options.validator["http_request_max_retries"] == ksm["http_request_max_retries"] == 2
    assert options.validator["include_service_catalog"] is ksm["include_service_catalog"] is False
    assert options.middleware["delay_auth_decision"] is ksm["delay_auth_decision"] is True
    assert options.middleware["cache_time"] == ksm["token_cache_time"] == 120
    assert options.middleware["service_token_roles"] == ksm["service_token_roles"]
    assert options.middleware["www_authenticate_uri"] == ksm["www_authenticate_uri"]


def test_paste_options_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, CONF_FILE)
    conf = {
        "oslo_config_project": "svc",
        "oslo_config_file": path,
        "username": "from-paste",
        "delay_auth_decision": "false",
        "token_cache_time": "-1",
    }
    ksm = read_by_ksm(conf, ["username", "delay_auth_decision", "token_cache_time"])
    options = translated(conf)
    assert options.validator["username"] == ksm["username"] == "from-paste"
    assert options.middleware["delay_auth_decision"] is ksm["delay_auth_decision"] is False
    assert ksm["token_cache_time"] == -1 and options.middleware["cache_time"] == 0


def test_defaults_are_keystonemiddlewares(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [keystone_authtoken]
        auth_type = password
        auth_url = http://ks/v3
        username = u
        password = p
        project_name = service
        """,
    )
    options = translated({"oslo_config_project": "svc", "oslo_config_file": path})
    assert options.validator["include_service_catalog"] is True
    assert options.validator["http_request_max_retries"] == 3
    assert options.middleware["service_token_roles_required"] is True
    assert "delay_auth_decision" not in options.middleware  # False, authmw's default too
    assert "service_type" not in options.validator
    assert options.ignored == ()  # defaults of ignored options are not "given"


def test_a_services_own_config_object(tmp_path: Path) -> None:
    """What Placement does: filter_factory({}, oslo_config_config=conf)."""
    path = write(tmp_path, CONF_FILE)
    conf = cfg.ConfigOpts()
    conf([], project="placement", default_config_files=[path])
    for group, opts in list_opts():  # as keystonemiddleware registers them
        conf.register_opts(opts, group=group)
    conf.set_override("service_type", "overridden", group="keystone_authtoken")
    ksm = read_by_ksm({"oslo_config_config": conf}, ["service_type", "username"])
    options = translated({"oslo_config_config": conf})
    assert options.validator["service_type"] == ksm["service_type"] == "overridden"
    assert options.validator["username"] == ksm["username"] == "placement"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unknown, nothing ignored
        factory = filter_factory({}, oslo_config_config=conf)
    assert callable(factory)


def test_auth_section_holds_the_plugin_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [keystone_authtoken]
        auth_section = service_auth
        service_type = placement

        [service_auth]
        auth_type = v3applicationcredential
        auth_url = http://ks/v3
        application_credential_id = cred-id
        application_credential_secret = cred-secret
        """,
    )
    from keystoneauth1 import loading

    oslo_conf = cfg.ConfigOpts()
    oslo_conf([], project="svc", default_config_files=[path])
    # keystonemiddleware needs the service to have registered the section's auth_type
    loading.register_auth_conf_options(oslo_conf, "service_auth")
    conf = {"oslo_config_config": oslo_conf}
    ksm = read_by_ksm(conf, ["application_credential_id", "application_credential_secret"])
    options = translated(conf)
    assert options.validator["application_credential_id"] == ksm["application_credential_id"]
    assert options.validator["application_credential_secret"] == "cred-secret"
    assert options.validator["service_type"] == "placement"


def test_a_wrong_value_in_the_file_names_the_option(tmp_path: Path) -> None:
    text = CONF_FILE.replace("delay_auth_decision = true", "delay_auth_decision = maybe")
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        translated({"oslo_config_project": "svc", "oslo_config_file": path})
    assert caught.value.option == "delay_auth_decision"


def test_a_missing_file_names_the_option(tmp_path: Path) -> None:
    conf = {"oslo_config_project": "svc", "oslo_config_file": str(tmp_path / "nope.conf")}
    with pytest.raises(ConfigurationError) as caught:
        translated(conf)
    assert caught.value.option == "oslo_config_file"


def test_not_a_config_object() -> None:
    with pytest.raises(ConfigurationError) as caught:
        translated({"oslo_config_config": {"auth_url": "x"}})
    assert caught.value.option == "oslo_config_config"


def test_an_unknown_auth_plugin_names_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "[keystone_authtoken]\nauth_type = no-such-plugin\n")
    with pytest.raises(ConfigurationError) as caught:
        translated({"oslo_config_project": "svc", "oslo_config_file": path})
    assert caught.value.option == "auth_type"


def test_real_token_through_a_project_file(keystone: Any, tmp_path: Path) -> None:
    c = keystone.service_credentials
    path = write(
        tmp_path,
        f"""
        [keystone_authtoken]
        auth_type = password
        auth_url = {keystone.url}
        www_authenticate_uri = {keystone.url}
        username = {c["username"]}
        password = {c["password"]}
        user_domain_name = {c["user_domain_name"]}
        project_name = {c["project_name"]}
        project_domain_name = {c["project_domain_name"]}
        """,
    )

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"user": environ["HTTP_X_USER_NAME"]}).encode()]

    protected = AuthProtocol(app, {"oslo_config_project": "svc", "oslo_config_file": path})
    token = keystone.issue_token("demo-user", project="demo-project")
    request = Request.blank("/v1/x", headers={"X-Auth-Token": token})
    response = request.get_response(protected)
    assert response.status_int == 200 and response.json == {"user": "demo-user"}
    unauthenticated = Request.blank("/v1/x").get_response(protected)
    assert unauthenticated.status_int == 401
    assert unauthenticated.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'


def run(code: str, tmp_path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_no_oslo_import_without_oslo_options(tmp_path: Path) -> None:
    result = run(
        """
        import json, sys
        from authmw.options import keystone_options
        keystone_options({"auth_url": "http://ks/v3", "username": "u", "password": "p",
                          "project_name": "service"})
        print(json.dumps({"oslo": "oslo_config" in sys.modules,
                          "keystoneauth": "keystoneauth1" in sys.modules}))
        """,
        tmp_path,
    )
    assert result == {"oslo": False, "keystoneauth": False}


def test_process_wide_conf_then_keystonemiddleware(tmp_path: Path) -> None:
    """A service that parsed cfg.CONF: its [keystone_authtoken] counts with no oslo_config_*
    key (as in keystonemiddleware); keystonemiddleware imported afterwards still loads."""
    path = write(tmp_path, CONF_FILE)
    result = run(
        f"""
        import json, warnings
        from oslo_config import cfg
        cfg.CONF([], project="svc", default_config_files=[{path!r}])
        from authmw.options import keystone_options
        warnings.simplefilter("ignore")
        options = keystone_options({{"password": "from-paste"}})
        from keystonemiddleware import auth_token  # registers the same options again
        print(json.dumps({{"username": options.validator["username"],
                          "password": options.validator["password"],
                          "delay": options.middleware["delay_auth_decision"],
                          "service_type": cfg.CONF.keystone_authtoken.service_type}}))
        """,
        tmp_path,
    )
    assert result == {
        "username": "placement",
        "password": "from-paste",
        "delay": True,
        "service_type": "placement",
    }


def test_file_without_project_means_the_process_wide_conf(tmp_path: Path) -> None:
    """keystonemiddleware reads oslo_config_file only with oslo_config_project."""
    path = write(tmp_path, CONF_FILE)
    with pytest.raises(ConfigurationError) as caught:
        translated({"oslo_config_file": path})  # cfg.CONF holds nothing here: no auth_url
    assert caught.value.option == "auth_url"
