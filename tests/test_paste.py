"""authmw in a paste.deploy pipeline, validating real tokens with the real Keystone."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from paste.deploy import loadapp, loadfilter
from webob import Request

from authmw import WSGIAuthMiddleware
from authmw.errors import ConfigurationError
from authmw.paste import AuthProtocol, filter_factory

DEMO = {"user": "demo-user", "password": "demo-secret", "user_domain": "demo"}
DEMO_PROJECT = {"project": "demo-project", "project_domain": "demo"}

APP_MODULE = """
import json

def factory(global_conf, **local_conf):
    def app(environ, start_response):
        seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return app
"""


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def service_lines(keystone: Any) -> str:
    c = keystone.service_credentials
    lines = [f"auth_url = {keystone.url}", f"www_authenticate_uri = {keystone.url}"]
    lines += [f"{name} = {value}" for name, value in c.items()]
    return "\n".join(lines)


def write_ini(tmp_path: Path, text: str, extra: str = "") -> str:
    path = tmp_path / "api-paste.ini"
    path.write_text(textwrap.dedent(text).lstrip() + extra + "\n")
    return f"config:{path}"


def get(app: Any, token: str | None = None, **headers: str) -> Any:
    request = Request.blank("/v1/things", headers=headers)
    if token is not None:
        request.headers["X-Auth-Token"] = token
    return request.get_response(app)


def test_pipeline_from_ini(keystone: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "echo_app_for_paste.py").write_text(APP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    uri = write_ini(
        tmp_path,
        """
        [pipeline:main]
        pipeline = authtoken echo

        [app:echo]
        paste.app_factory = echo_app_for_paste:factory

        [filter:authtoken]
        paste.filter_factory = authmw.paste:filter_factory
        include_service_catalog = false
        """,
        service_lines(keystone),
    )
    app = loadapp(uri)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    response = get(app, token, **{"X-Roles": "admin", "OpenStack-System-Scope": "all"})
    assert response.status_int == 200
    seen = response.json
    assert seen["HTTP_X_IDENTITY_STATUS"] == "Confirmed"
    assert seen["HTTP_X_USER_NAME"] == "demo-user"
    assert seen["HTTP_X_PROJECT_NAME"] == "demo-project"
    assert set(seen["HTTP_X_ROLES"].split(",")) == {"member", "reader"}  # forged admin gone
    assert "HTTP_OPENSTACK_SYSTEM_SCOPE" not in seen
    assert "HTTP_X_SERVICE_CATALOG" not in seen

    missing = get(app)
    assert missing.status_int == 401
    assert missing.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
    assert get(app, "gAAAAABnot-a-token").status_int == 401


@pytest.mark.parametrize("use", ["egg:authmw", "egg:authmw#main"])
def test_entry_point(keystone: Any, tmp_path: Path, use: str) -> None:
    uri = write_ini(
        tmp_path,
        f"""
        [filter:authtoken]
        use = {use}
        """,
        service_lines(keystone),
    )
    app = loadfilter(uri, name="authtoken")(echo)
    assert isinstance(app, WSGIAuthMiddleware)
    token = keystone.issue_token(**DEMO, domain="demo")
    seen = get(app, token).json
    assert seen["HTTP_X_DOMAIN_NAME"] == "demo"
    assert "HTTP_X_PROJECT_ID" not in seen  # absent values are omitted, not "None"


def test_global_conf_supplies_known_options_only(keystone: Any, tmp_path: Path) -> None:
    c = keystone.service_credentials
    uri = write_ini(
        tmp_path,
        f"""
        [DEFAULT]
        auth_url = {keystone.url}
        debug = true
        log_dir = /var/log/app

        [filter:authtoken]
        paste.filter_factory = authmw.paste:filter_factory
        """,
        "\n".join(f"{k} = {v}" for k, v in c.items()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "debug" and "log_dir" are not ours: no warning
        app = loadfilter(uri, name="authtoken")(echo)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    assert get(app, token).json["HTTP_X_USER_NAME"] == "demo-user"


def test_global_conf_supplies_the_service_identity_shortcuts(keystone: Any) -> None:
    # keystonemiddleware reads auth_type / admin_token from [DEFAULT] too.
    make = filter_factory(
        {"auth_type": "admin_token", "admin_token": keystone.service_token()},
        auth_url=keystone.url,
    )
    app = make(echo)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    assert get(app, token).json["HTTP_X_USER_NAME"] == "demo-user"


def test_delayed_decision(keystone: Any, tmp_path: Path) -> None:
    uri = write_ini(
        tmp_path,
        """
        [filter:authtoken]
        paste.filter_factory = authmw.paste:filter_factory
        delay_auth_decision = true
        """,
        service_lines(keystone),
    )
    app = loadfilter(uri, name="authtoken")(echo)
    response = get(app, "gAAAAABnot-a-token")
    assert response.status_int == 200
    assert response.json["HTTP_X_IDENTITY_STATUS"] == "Invalid"
    assert "HTTP_X_USER_ID" not in response.json


def test_wrong_value_fails_when_the_pipeline_loads(keystone: Any, tmp_path: Path) -> None:
    uri = write_ini(
        tmp_path,
        """
        [filter:authtoken]
        paste.filter_factory = authmw.paste:filter_factory
        http_request_max_retries = lots
        """,
        service_lines(keystone),
    )
    with pytest.raises(ConfigurationError) as info:
        loadfilter(uri, name="authtoken")
    assert info.value.option == "http_request_max_retries"


def test_filter_factory_called_directly(keystone: Any) -> None:
    make = filter_factory({"here": "/srv"}, auth_url=keystone.url, **keystone.service_credentials)
    app = make(echo)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    assert get(app, token).json["HTTP_X_PROJECT_DOMAIN_NAME"] == "demo"


def test_auth_protocol_drop_in(keystone: Any) -> None:
    # keystonemiddleware: auth_token.AuthProtocol(app, conf) -> authmw.paste.AuthProtocol
    conf = {
        "auth_type": "password",
        "auth_url": keystone.url,
        "www_authenticate_uri": keystone.url,
        **keystone.service_credentials,
        "service_token_roles_required": "true",
    }
    app = AuthProtocol(echo, conf)
    token = keystone.issue_token(**DEMO, **DEMO_PROJECT)
    seen = get(app, token).json
    assert seen["HTTP_X_USER_NAME"] == "demo-user"
    assert json.loads(seen["HTTP_X_SERVICE_CATALOG"])  # keystonemiddleware's default: included
    assert get(app).status_int == 401
