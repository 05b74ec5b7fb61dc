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
