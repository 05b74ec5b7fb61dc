"""``authmw serve`` settings: file formats, the environment, mistakes named at start-up, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authmw.audit import JSONLinesAudit
from authmw.cli import main
from authmw.errors import ConfigurationError
from authmw.gateway import ForwardAuth, from_settings, load_settings
from authmw.store import LocalTokenStore

from ._servers import REPO, write_toml

KEYSTONE = {"type": "keystone", "auth_url": "http://127.0.0.1:9/v3", "username": "svc"}
KEYSTONE_MORE = {"user_domain_name": "Default", "project_name": "service"}
KEYSTONE_MORE["project_domain_name"] = "Default"


def settings_file(tmp_path: Path, sections: dict[str, Any], suffix: str = ".toml") -> str:
    path = tmp_path / f"authmw{suffix}"
    if suffix == ".toml":
        write_toml(path, sections)
    elif suffix == ".json":
        path.write_text(json.dumps(sections))
    else:
        import yaml

        path.write_text(yaml.safe_dump(sections))
    return str(path)


def full(**overrides: Any) -> dict[str, Any]:
    sections: dict[str, Any] = {
        "serve": {"gateway": "nginx", "port": 9300, "workers": 2},
        "validator": {**KEYSTONE, **KEYSTONE_MORE, "password": "file-secret"},
        "middleware": {"public_routes": ["GET /healthz"], "cache_time": 60},
        "routes": {"rules": [{"match": "/admin/*", "rule": "role:admin"}], "default": "@"},
    }
    sections.update(overrides)
    return sections


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_each_file_format_gives_the_same_server(tmp_path: Path, suffix: str) -> None:
    settings = load_settings(settings_file(tmp_path, full(), suffix), environ={})
    assert (settings.gateway, settings.port, settings.workers) == ("nginx", 9300, 2)
    assert settings.middleware == {"public_routes": ["GET /healthz"], "cache_time": 60.0}
    app = from_settings(ForwardAuth, settings)
    assert app.core.public_routes.enabled and app.pipeline.access is not None
    validator: Any = app.core.validator
    assert type(validator).__name__ == "KeystoneValidator"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {
        "AUTHMW_PORT": "9400",
        "AUTHMW_GATEWAY": "traefik",
        "AUTHMW_PASSWORD": "env-secret",
        "AUTHMW_CACHE_TIME": "5",
        "AUTHMW_FIWARE_SERVICE_SCOPE": "true",
    }
    settings = load_settings(settings_file(tmp_path, full()), environ=env)
    assert (settings.port, settings.gateway) == (9400, "traefik")
    assert settings.validator["password"] == ("AUTHMW_PASSWORD", "env-secret")
    assert settings.middleware["cache_time"] == 5.0
    assert settings.middleware["fiware_service_scope"] is True
    overridden = load_settings(settings_file(tmp_path, full()), env, {"port": 9500})
    assert overridden.port == 9500


def test_environment_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    LocalTokenStore(url).close()
    settings = load_settings(environ={"AUTHMW_GATEWAY": "envoy", "AUTHMW_DB": url})
    assert settings.validator_kind == "store"
    assert type(from_settings(ForwardAuth, settings).core.validator).__name__ == "LocalTokenStore"


@pytest.mark.parametrize(
    ("sections", "env", "setting", "words"),
    [
        ({"serve": {"gateway": "nginx", "prot": 1}}, {}, "serve.prot", "did you mean 'serve.port'"),
        ({"serv": {}}, {}, "serv", "did you mean 'serve'"),
        ({"serve": {"gateway": "haproxy"}}, {}, "serve.gateway", "nginx, traefik, envoy"),
        ({"serve": {}}, {}, "serve.gateway", "is required"),
        ({"serve": {"gateway": "nginx", "port": "x"}}, {}, "serve.port", "integer"),
        ({"serve": {"gateway": "nginx"}}, {"AUTHMW_PORT": "eighty"}, "AUTHMW_PORT", "integer"),
        ({"serve": {"gateway": "nginx", "workers": 0}}, {}, "serve.workers", "from 1 to 64"),
        (
            {"serve": {"gateway": "nginx", "path_prefix": "/authz"}},
            {},
            "serve.path_prefix",
            "envoy",
        ),
        ({"serve": {"gateway": "nginx"}}, {}, "validator.type", "no validator"),
        (
            {"serve": {"gateway": "nginx"}, "middleware": {"cache_tme": 1}},
            {"AUTHMW_DB": "sqlite:///x.db"},
            "middleware.cache_tme",
            "did you mean 'middleware.cache_time'",
        ),
        (
            {"serve": {"gateway": "nginx"}, "middleware": {"fiware_service_scope": "maybe"}},
            {"AUTHMW_DB": "sqlite:///x.db"},
            "middleware.fiware_service_scope",
            "true or false",
        ),
        (
            {"serve": {"gateway": "nginx"}, "routes": {"rules": [{"match": "/x"}]}},
            {"AUTHMW_DB": "sqlite:///x.db"},
            "routes.rules[0]",
            "'match' and 'rule'",
        ),
        (
            {"serve": {"gateway": "nginx"}, "cache": {"redis_url": "redis://127.0.0.1:9/0"}},
            {"AUTHMW_DB": "sqlite:///x.db"},
            "cache.redis_secret",
            "required",
        ),
        (
            {"serve": {"gateway": "nginx"}},
            {"AUTHMW_DB": "sqlite:///x.db", "AUTHMW_AUTH_URL": "http://ks/v3"},
            "AUTHMW_DB",
            "one validator",
        ),
    ],
)
def test_mistakes_are_named_at_start_up(
    tmp_path: Path, sections: dict[str, Any], env: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(settings_file(tmp_path, sections), environ=env)
    assert error.value.option == setting, error.value
    assert words in str(error.value)


@pytest.mark.parametrize(
    ("validator", "env", "setting", "words"),
    [
        ({**KEYSTONE, "auth_ur": "x"}, {}, "validator.auth_ur", "did you mean"),
        ({**KEYSTONE, "cache_time": 5}, {}, "validator.cache_time", "middleware setting"),
        ({**KEYSTONE, **KEYSTONE_MORE}, {}, "validator.password", "required"),
        ({**KEYSTONE, **KEYSTONE_MORE}, {"AUTHMW_INSECURE": "perhaps"}, "AUTHMW_INSECURE", "true"),
        ({"type": "jwt", "audiences": ["x"]}, {}, "validator.issuer", "AUTHMW_JWT_ISSUER"),
        ({"type": "ldap"}, {}, "validator.type", "keystone, store, introspection, jwt"),
        ({"type": "store", "url": "sqlite:///x.db", "pepper": "short"}, {}, "pepper", "16 bytes"),
    ],
)
def test_validator_mistakes_are_named_at_start_up(
    tmp_path: Path, validator: dict[str, Any], env: dict[str, str], setting: str, words: str
) -> None:
    path = settings_file(tmp_path, {"serve": {"gateway": "nginx"}, "validator": validator})
    with pytest.raises(ConfigurationError) as error:
        from_settings(ForwardAuth, load_settings(path, environ=env))
    assert error.value.option == setting, error.value
    assert words in str(error.value)


def test_cli_check_and_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(tmp_path, full())
    assert main(["serve", "--config", path, "--check", "--gateway", "envoy"]) == 0
    out = capsys.readouterr().out
    assert "gateway envoy, validator keystone, 1 route rule" in out and "2 workers" in out
    broken = settings_file(tmp_path, full(serve={"gateway": "nginx", "prot": 1}))
    assert main(["serve", "--config", broken, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "serve.prot" in err and "did you mean" in err
    assert main(["serve", "--gateway", "haproxy"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_serve_command_exits_2_with_one_line(tmp_path: Path) -> None:
    broken = settings_file(
        tmp_path, {"serve": {"gateway": "nginx"}, "validator": KEYSTONE, "middleware": {"x": 1}}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "authmw", "serve", "--config", broken],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "middleware.x: unknown option" in proc.stderr


# -- trusted proxies, throttling, audit, tracing ---------------------------------------------


def observed(**middleware: Any) -> dict[str, Any]:
    return full(middleware={"public_routes": ["GET /healthz"], **middleware})


def test_throttle_audit_tracing_from_the_file(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    path = settings_file(
        tmp_path,
        observed(
            trusted_proxies=["127.0.0.1", "10.0.0.0/8"],
            throttle={"failures": 7, "window": 30},
            audit_log=str(audit),
            audit_format="cadf",
            tracing={"identities": True},
        ),
    )
    settings = load_settings(path, environ={})
    assert settings.middleware["trusted_proxies"] == ["127.0.0.1", "10.0.0.0/8"]
    assert settings.throttle == (7, 30.0)
    assert (settings.audit_log, settings.audit_format) == (str(audit), "cadf")
    assert settings.tracing and settings.tracing_identities
    app = from_settings(ForwardAuth, settings)
    core = app.core
    assert core.throttle is not None and (core.throttle.failures, core.throttle.window) == (7, 30)
    assert core.clients.client("10.0.0.5", "198.51.100.1") == "198.51.100.1"
    assert isinstance(core.on_decision, JSONLinesAudit) and audit.exists()
    assert core.tracing is not None and core.tracing.identities
    app.close()
    assert main(["serve", "--config", path, "--check"]) == 0


def test_throttle_audit_tracing_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "AUTHMW_TRUSTED_PROXIES": "127.0.0.1, ::1",
        "AUTHMW_THROTTLE": "failures=3, window=10",
        "AUTHMW_AUDIT_LOG": "-",
        "AUTHMW_TRACING": "true",
    }
    settings = load_settings(settings_file(tmp_path, full()), environ=env)
    assert settings.middleware["trusted_proxies"] == ["127.0.0.1", "::1"]
    assert settings.throttle == (3, 10.0)
    assert (settings.audit_log, settings.audit_format) == ("-", "record")
    assert settings.tracing and not settings.tracing_identities
    assert load_settings(
        settings_file(tmp_path, observed(throttle=True, trusted_proxies="::1")), environ={}
    ).throttle == (20, 60.0)  # Throttle's defaults
    assert (
        load_settings(
            settings_file(tmp_path, full()), environ={"AUTHMW_THROTTLE": "false"}
        ).throttle
        is None
    )
    app = from_settings(ForwardAuth, settings)
    app.close()  # standard output stays open
    print("still open")
    assert capsys.readouterr().out == "still open\n"


def test_check_summary_names_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(
        tmp_path,
        observed(
            trusted_proxies="127.0.0.1", throttle={"failures": 5}, audit_log="-", tracing=True
        ),
    )
    assert main(["serve", "--config", path, "--check"]) == 0
    out = capsys.readouterr().out
    assert "trusting X-Forwarded-For from 127.0.0.1" in out
    assert "throttling at 5 failures per client per 60 s" in out
    assert "audit (record) to standard output" in out and "tracing" in out


@pytest.mark.parametrize(
    ("middleware", "env", "setting", "words"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, {}, "middleware.trusted_proxies", "not an address"),
        (
            {"trusted_proxy": "10.0.0.1"},
            {},
            "middleware.trusted_proxy",
            "'middleware.trusted_proxies'",
        ),
        ({}, {"AUTHMW_TRUSTED_PROXIES": "gateway"}, "AUTHMW_TRUSTED_PROXIES", "not an address"),
        (
            {"throttle": {"failures": 5}},
            {},
            "middleware.throttle",
            "needs middleware.trusted_proxies",
        ),
        ({"throttle": True, "trusted_proxies": []}, {}, "middleware.throttle", "trusted_proxies"),
        (
            {"throttle": {"failres": 5}, "trusted_proxies": "127.0.0.1"},
            {},
            "middleware.throttle.failres",
            "did you mean 'failures'",
        ),
        (
            {"throttle": {"failures": 0}, "trusted_proxies": "127.0.0.1"},
            {},
            "middleware.throttle.failures",
            "integer >= 1",
        ),
        (
            {"throttle": {"window": "soon"}, "trusted_proxies": "127.0.0.1"},
            {},
            "middleware.throttle.window",
            "number",
        ),
        ({"throttle": "maybe"}, {}, "middleware.throttle", "true, false or a table"),
        (
            {"trusted_proxies": "127.0.0.1"},
            {"AUTHMW_THROTTLE": "failures=3,windw=9"},
            "AUTHMW_THROTTLE",
            "windw: unknown option; did you mean 'window'",
        ),
        (
            {"trusted_proxies": "127.0.0.1"},
            {"AUTHMW_THROTTLE": "failures"},
            "AUTHMW_THROTTLE",
            "true, false",
        ),
        ({"audit_format": "cadf"}, {}, "middleware.audit_format", "needs middleware.audit_log"),
        ({"audit_log": "-", "audit_format": "xml"}, {}, "middleware.audit_format", "record, cadf"),
        ({"audit_log": ""}, {}, "middleware.audit_log", "non-empty"),
        ({"on_decision": "audit.jsonl"}, {}, "middleware.on_decision", "middleware.audit_log"),
        ({"tracing": "sometimes"}, {}, "middleware.tracing", "true, false or a table"),
        ({"tracing": {"identity": True}}, {}, "middleware.tracing.identity", "'identities'"),
    ],
)
def test_observation_mistakes_are_named_at_start_up(
    tmp_path: Path, middleware: dict[str, Any], env: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(settings_file(tmp_path, observed(**middleware)), environ=env)
    assert error.value.option == setting, error.value
    assert words in str(error.value)


def test_an_audit_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    settings = load_settings(
        settings_file(tmp_path, observed()), {"AUTHMW_AUDIT_LOG": str(missing)}
    )
    with pytest.raises(ConfigurationError) as error:
        from_settings(ForwardAuth, settings)
    assert error.value.option == "AUTHMW_AUDIT_LOG"
    assert "cannot open" in str(error.value) and "No such file" in str(error.value)


def test_tracing_without_opentelemetry_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = settings_file(tmp_path, observed(tracing=True))
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # not installed\n"
        "from authmw.cli import main\n"
        f"sys.exit(main(['serve', '--config', {path!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "authmw: error: middleware.tracing: needs OpenTelemetry: pip install 'authmw[otel]'\n"
    )
