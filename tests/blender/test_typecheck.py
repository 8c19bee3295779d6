"""Type-check the add-on with mypy against the ``fake-bpy-module`` stubs (they sit beside the real bpy).

Uses whichever stubs are installed (``fake-bpy-module-4.5`` with the main test set-up, ``fake-bpy-module-5.0`` in
``.ci/run-bpy5``): the add-on supports both. Needs only mypy and the stubs (not bpy itself); skips, naming the
install command, when either is missing. The flags here match the ``[tool.mypy]`` section proposed for
pyproject.toml, so the test does not depend on it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blender.conftest import REPO_ROOT

MYPY_FLAGS = [
    "--python-version",
    "3.11",
    "--warn-unused-ignores",
    "--warn-redundant-casts",
    "--check-untyped-defs",
    "--no-error-summary",
    "--hide-error-context",
]


@pytest.mark.slow
def test_ok_addon_type_checks_against_the_bpy_stubs():
    missing = [name for name, ok in (("mypy", _has_mypy()), ("fake-bpy-module-4.5", _has_stubs())) if not ok]
    # any fake-bpy-module version provides ``bpy-stubs``; 4.5 is named because it matches the main test set-up
    if missing:
        pytest.skip(f"type checking needs {' and '.join(missing)}: pip install mypy fake-bpy-module-4.5")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", *MYPY_FLAGS, "mega_blender"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _has_mypy() -> bool:
    return importlib.util.find_spec("mypy") is not None


def _has_stubs() -> bool:
    """Whether fake-bpy-module stubs (any Blender version) are installed: a ``bpy-stubs`` folder in a site-packages."""
    return any((Path(p) / "bpy-stubs" / "__init__.pyi").is_file() for p in sys.path if p)
