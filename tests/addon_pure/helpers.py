"""Helpers for add-on tests: load the pure modules without bpy, run code in a separate bpy process.

The pure modules (``result_reader``, ``coords``) are loaded straight from their files, so the package's
``__init__`` (which registers Blender classes and imports bpy) is never run and the tests prove that the modules
work in plain CPython. Code that needs Blender runs in a child Python with its own ``BLENDER_USER_RESOURCES``
folder, so nothing leaks into the user's Blender configuration or into other tests' bpy state.
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


def load_pure_module(name: str) -> ModuleType:
    """``mega_blender/<name>.py`` as a stand-alone module (cached), without running the package ``__init__``."""
    key = f"mega_blender_pure_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ADDON_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ADDON_DIR / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


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
