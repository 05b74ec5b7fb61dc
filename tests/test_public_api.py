from __future__ import annotations
import __future__

import importlib.metadata
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import authmw

ROOT = Path(__file__).resolve().parent.parent

# Named by issue 2; more are welcome, these may never go.
REQUIRED = {
    "Identity",
    "WSGIAuthMiddleware",
    "ASGIAuthMiddleware",
    "InMemoryValidator",
    "InvalidToken",
    "IdentityServiceUnavailable",
}

EXTRAS = [
    "flask",
    "django",
    "starlette",
    "fastapi",
    "redis",
    "psycopg",
    "yaml",
    "prometheus_client",
]
EXTRAS += ["webob", "rest_framework", "uvicorn", "gunicorn", "paste", "pastedeploy"]
EXTRAS += ["joserfc"]  # the JOSE library: imported when a JWTValidator is built

# Modules on the request path of every user: none may pull in a framework or extra.
CORE_MODULES = [
    "authmw",
    "authmw.identity",
    "authmw.errors",
    "authmw.headers",
    "authmw.core",
    "authmw.cache",
    "authmw.resilience",
    "authmw.wsgi",
    "authmw.asgi",
    "authmw.validators.base",
    "authmw.validators.memory",
    "authmw.validators.jwt",
]


def test_all_names_the_required_public_names() -> None:
    assert set(authmw.__all__) >= REQUIRED


def test_all_has_no_duplicates_and_every_name_resolves() -> None:
    assert len(authmw.__all__) == len(set(authmw.__all__))
    for name in authmw.__all__:
        assert getattr(authmw, name) is not None, name


def test_all_matches_exactly_what_the_package_exports() -> None:
    exported = {
        name
        for name, value in vars(authmw).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    exported.add("__version__")
    assert set(authmw.__all__) == exported


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from authmw import *", namespace)  # noqa: S102
    namespace.pop("__builtins__")
    assert set(namespace) == set(authmw.__all__)


def test_exported_classes_come_from_their_modules() -> None:
    assert authmw.Identity.__module__ == "authmw.identity"
    assert authmw.WSGIAuthMiddleware.__module__ == "authmw.wsgi"
    assert authmw.ASGIAuthMiddleware.__module__ == "authmw.asgi"
    assert authmw.InMemoryValidator.__module__ == "authmw.validators.memory"
    assert issubclass(authmw.InvalidToken, authmw.AuthError)
    assert issubclass(authmw.IdentityServiceUnavailable, authmw.AuthError)
    assert not issubclass(authmw.IdentityServiceUnavailable, authmw.InvalidToken)


def test_public_names_have_docstrings() -> None:
    for name in authmw.__all__:
        value = getattr(authmw, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_version_matches_the_distribution() -> None:
    assert authmw.__version__ == importlib.metadata.version("authmw")


def test_package_is_typed() -> None:
    assert (ROOT / "authmw" / "py.typed").is_file()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_importing_authmw_imports_no_framework_or_extra(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"  # .pth files may load namespace packages (paste)
        f"importlib.import_module({module!r})\n"
        f"extras = {EXTRAS!r}\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps(sorted(m for m in new if m.split('.')[0] in extras)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == []
