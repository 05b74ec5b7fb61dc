from __future__ import annotations

import ast
import subprocess
import sys

OPTIONAL = ("flask", "werkzeug", "django", "rest_framework", "starlette", "fastapi", "yaml")


def test_core_packages_import_no_framework_or_extra() -> None:
    code = (
        "import sys, authmw, authmw.policy, authmw.contrib\n"
        "from authmw.policy import Policy\n"
        "Policy({'a': 'role:x'})\n"
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_integration_imports_only_its_framework() -> None:
    expected = {
        "authmw.contrib.flask": {"flask", "werkzeug"},
        "authmw.contrib.starlette": {"starlette"},
        "authmw.contrib.fastapi": {"fastapi", "starlette"},
    }
    for module, allowed in expected.items():
        code = f"import sys, {module}\nprint(sorted(m for m in {OPTIONAL!r} if m in sys.modules))\n"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert set(ast.literal_eval(out.stdout)) <= allowed, module


def test_drf_can_load_the_classes_named_in_its_settings() -> None:
    # DRF imports the REST_FRAMEWORK classes while rest_framework.views is loading.
    code = (
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['rest_framework'], REST_FRAMEWORK={\n"
        "  'DEFAULT_AUTHENTICATION_CLASSES': ['authmw.contrib.drf.IdentityAuthentication'],\n"
        "  'DEFAULT_PERMISSION_CLASSES': ['authmw.contrib.drf.PolicyPermission'],\n"
        "  'EXCEPTION_HANDLER': 'authmw.contrib.drf.exception_handler',\n"
        "  'UNAUTHENTICATED_USER': None})\n"
        "django.setup()\n"
        "from rest_framework.views import APIView\n"
        "print([c.__name__ for c in APIView.authentication_classes])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['IdentityAuthentication']"
