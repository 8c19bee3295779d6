"""Architecture rules: what may import what, and a lint-clean tree."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Modules the CLI start-up and error handling import: they must not pull torch at import time.
TORCH_FREE = [
    "mega_runtime/__init__.py",
    "mega_runtime/commands/cli.py",
    "mega_runtime/errors.py",
    "mega_runtime/models/config.py",
    "mega_runtime/weights/__init__.py",
    "mega_runtime/weights/registry.py",
    "mega_runtime/weights/downloads.py",
    "mega_runtime/weights/identify.py",
    "mega_runtime/weights/zenodo.py",
    "mega_runtime/weights/resolve.py",
    "mega_runtime/weights/state.py",
    "mega_runtime/commands/weights.py",
    "mega_runtime/commands/train.py",
    "mega_runtime/commands/options.py",
    "mega_runtime/commands/reconstruct.py",
    "mega_runtime/commands/shaping.py",
    "mega_runtime/commands/serve_jobs.py",
    "mega_runtime/train/settings.py",
    "mega_runtime/io/result.py",
    "mega_runtime/io/result_schema.py",
    "mega_runtime/io/atomic_files.py",
    "mega_runtime/pipeline/media.py",
    "mega_runtime/pipeline/preprocess.py",
    "mega_runtime/pipeline/detect/__init__.py",
    "mega_runtime/pipeline/detect/base.py",
    "mega_runtime/pipeline/detect/boxes.py",
    "mega_runtime/pipeline/detect/yolo.py",
    "mega_runtime/pipeline/detect/blazepose.py",
]


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_never_imports_bpy():
    offenders = [str(p) for p in (ROOT / "mega_runtime").rglob("*.py") if "bpy" in _imports(p, top_level_only=False)]
    assert not offenders, f"mega_runtime must stay free of bpy: {offenders}"


@pytest.mark.parametrize("module", TORCH_FREE)
def test_cli_start_up_modules_import_no_torch_at_module_level(module):
    assert "torch" not in _imports(ROOT / module, top_level_only=True)


def test_cli_help_runs_without_importing_torch():
    code = "import sys, mega_runtime.commands.cli as c; c.build_parser(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_tree_is_lint_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
