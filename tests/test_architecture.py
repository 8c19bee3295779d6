"""The runtime's folders are its layers (docs/architecture.md): imports run downwards only, the top level stays
small, and no module reaches into another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mega_runtime"
ADDON = ROOT / "mega_blender"

#: Layer of each part of mega_runtime (docs/architecture.md): a module may import its own part and lower layers.
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "constants": 0,
    "defaults": 0,
    "models": 1,
    "weights": 2,
    "decoding": 2,
    "io": 2,
    "mega": 3,
    "smpl": 3,
    "pipeline": 4,
    "train": 4,
    "verify": 5,
    "commands": 6,
    "__main__": 7,
}
MAX_TOP_LEVEL_FILES = 8


def _part(module: str) -> str:
    """'mega_runtime.pipeline.chain' → 'pipeline'; 'mega_runtime' → '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported mega_runtime module) for every import in the file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mega_runtime"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mega_runtime"):
            found.append((node.lineno, str(node.module)))
    return found


def test_runtime_top_level_holds_at_most_eight_modules():
    top = sorted(p.name for p in RUNTIME.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_FILES, f"{len(top)} files at the top of mega_runtime/: {top}"


def test_every_runtime_part_has_a_layer():
    parts = {p.stem for p in RUNTIME.glob("*.py")} | {p.name for p in RUNTIME.iterdir() if (p / "__init__.py").exists()}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS and docs/architecture.md: {sorted(parts - set(LAYERS))}"


def test_runtime_imports_run_downwards_only():
    upward = []
    for path in sorted(RUNTIME.rglob("*.py")):
        here = _part(_module_name(path))
        for line, imported in _runtime_imports(path):
            there = _part(imported)
            if there != here and LAYERS[there] >= LAYERS[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}, layer {LAYERS[here]}) imports {imported} "
                              f"({there}, layer {LAYERS[there]})")  # fmt: skip
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def _project_modules(tree: ast.Module, package: str) -> dict[str, str]:
    """Local names bound to project modules: ``import a.b as x``, ``from a import b`` where b is a module."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package and alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != package:
                continue
            for alias in node.names:
                target = ROOT.joinpath(*node.module.split("."), alias.name)
                if target.with_suffix(".py").is_file() or (target / "__init__.py").is_file():
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("package", ["mega_runtime", "mega_blender"])
def test_no_module_uses_another_modules_private_names(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(package):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                              for a in node.names if _is_private(a.name)]  # fmt: skip
        modules = _project_modules(tree, package)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and _is_private(node.attr)
                and node.value.id in modules
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {modules[node.value.id]}.{node.attr}")
    assert not offenders, "give these a public entry point:\n" + "\n".join(offenders)


def test_architecture_doc_names_every_runtime_part():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    parts = [p.name + "/" for p in RUNTIME.iterdir() if (p / "__init__.py").exists()]
    missing = [p for p in parts if p not in doc]
    assert not missing, f"docs/architecture.md does not describe {missing}"
