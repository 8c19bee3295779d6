"""Architecture rules of the add-on: never torch or mega_runtime; the pure modules never Blender."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.addon_pure.helpers import ADDON_DIR, REPO_ROOT

#: Top-level modules the add-on must never import: the two sides share only the documented format and protocol.
FORBIDDEN_EVERYWHERE = {"torch", "mega_runtime", "torchvision", "timm"}
#: Modules that exist only inside Blender.
BLENDER_MODULES = {"bpy", "bpy_extras", "bpy_types", "mathutils", "bmesh", "gpu", "gpu_extras", "addon_utils", "bl_ui"}
#: Add-on modules that import in plain CPython (unit-tested without Blender), present or planned.
PURE_MODULES = (
    "result_reader",
    "compact_reader",
    "coords",
    "runtime_client",
    "runtime_transport",
    "sources",
    "pointcache",
    "runtime_defaults",
    "installer",
    "torch_builds",
    "pip_progress",
    "clip_boxes",
)


def addon_files() -> list[Path]:
    return sorted(p for p in ADDON_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> tuple[set[str], set[str]]:
    """(absolute top-level modules, sibling modules imported relatively) anywhere in a file, functions included.

    ``importlib.import_module("x")`` and ``__import__("x")`` with a constant name count as imports too.
    """
    absolute: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                absolute.add(node.module.split(".")[0])
            elif node.level == 1:
                if node.module:
                    relative.add(node.module.split(".")[0])
                else:
                    relative.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                absolute.add(node.args[0].value.split(".")[0])
    return absolute, relative


def test_addon_package_exists_with_its_pure_modules():
    assert (ADDON_DIR / "result_reader.py").is_file() and (ADDON_DIR / "coords.py").is_file()


@pytest.mark.parametrize("path", addon_files(), ids=lambda p: p.relative_to(ADDON_DIR).as_posix())
def test_addon_never_imports_torch_or_the_runtime(path):
    absolute, _ = imported_modules(path)
    assert not absolute & FORBIDDEN_EVERYWHERE, f"{path} imports {sorted(absolute & FORBIDDEN_EVERYWHERE)}"


@pytest.mark.parametrize("name", [n for n in PURE_MODULES if (ADDON_DIR / f"{n}.py").is_file()])
def test_pure_modules_never_import_blender(name):
    absolute, relative = imported_modules(ADDON_DIR / f"{name}.py")
    assert not absolute & BLENDER_MODULES, f"{name}.py imports {sorted(absolute & BLENDER_MODULES)}"
    impure = relative - set(PURE_MODULES)
    assert not impure, f"{name}.py imports add-on modules that may need bpy: {sorted(impure)}"


def test_pure_modules_load_in_plain_python_without_bpy_torch_or_the_runtime():
    names = [n for n in PURE_MODULES if (ADDON_DIR / f"{n}.py").is_file()]
    code = (
        "import importlib, sys, types\n"
        "package = types.ModuleType('pure'); package.__path__ = [" + repr(str(ADDON_DIR)) + "]\n"
        "sys.modules['pure'] = package\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('pure.' + name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(FORBIDDEN_EVERYWHERE | BLENDER_MODULES)!r})\n"
        "sys.exit('leaked: ' + ', '.join(leaked) if leaked else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_import_scanner_sees_nested_and_dynamic_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "def f():\n"
        "    import torch.nn\n"
        "    from mega_runtime.io.result import read_result\n"
        "    import importlib; importlib.import_module('bpy')\n"
        "from . import coords\n"
        "from .scene_build import build\n"
    )
    absolute, relative = imported_modules(sample)
    assert {"os", "torch", "mega_runtime", "bpy"} <= absolute
    assert relative == {"coords", "scene_build"}
