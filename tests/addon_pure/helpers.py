"""Helpers for add-on tests: load the pure modules without bpy, run code in a separate bpy process.

The pure modules (``result_reader``, ``coords``, …) are loaded from their files as members of a stand-in
package, so the add-on package's ``__init__`` (which registers Blender classes and imports bpy) is never run and
the tests prove that the modules work in plain CPython. Code that needs Blender runs in a child Python with its own
``BLENDER_USER_RESOURCES`` folder, so nothing leaks into the user's Blender configuration or into other tests' bpy
state.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDON_DIR = REPO_ROOT / "mega_blender"
#: Exit status of a child that could not import bpy.
NO_BPY_EXIT = 77


#: A stand-in package over the add-on folder: its ``__init__`` (which registers Blender classes) never runs, and
#: the pure modules' relative imports (``from . import runtime_defaults``) resolve inside it.
PURE_PACKAGE = "mega_blender_pure"


def load_pure_module(name: str) -> ModuleType:
    """``mega_blender/<name>.py`` in plain CPython (cached), without running the package ``__init__``."""
    if PURE_PACKAGE not in sys.modules:
        package = ModuleType(PURE_PACKAGE)
        package.__path__ = [str(ADDON_DIR)]
        sys.modules[PURE_PACKAGE] = package
    return importlib.import_module(f"{PURE_PACKAGE}.{name}")


def run_in_bpy(code: str, user_resources: Path, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``code`` in a fresh Python that imports bpy; returns the dict it leaves in ``result``.

    ``BLENDER_USER_RESOURCES`` is set to ``user_resources`` before bpy is imported. Skips the calling test when
    bpy cannot be imported; fails it when the child fails.
    """
    script = (
        "import json, sys\n"
        "try:\n"
        "    import bpy\n"
        "except ImportError as exc:\n"
        f"    print(exc, file=sys.stderr); sys.exit({NO_BPY_EXIT})\n"
        "result = {}\n" + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(result))\n"
    )
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_resources)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )
    if proc.returncode == NO_BPY_EXIT:
        pytest.skip(f"import bpy fails ({proc.stderr.strip()}); install it: pip install 'bpy==4.5.*' 'numpy<2'")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"bpy child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))
