"""Build (and check) the Blender extension zip: ``python build_addon.py [--validate] [--out DIR]``.

Writes ``dist/mega_blender-<version>.zip`` (version from ``blender_manifest.toml``) laid out the way Blender's
extension installer expects — the manifest and the add-on package's *contents* at the zip root:

    blender_manifest.toml, LICENSE, __init__.py, … (everything in mega_blender/)
    runtime/pyproject.toml, runtime/README.md, runtime/LICENSE, runtime/mega_runtime/…

``runtime/`` is the runtime's source of the same version, so the add-on can later start (or install) a runtime
that matches it exactly. ``__pycache__``, ``*.pyc``, ``tests`` folders and hidden files are left out; symbolic
links are refused. The zip is deterministic: sorted entries, fixed timestamps and permissions.

``docs/blender-addon.md`` is packed too, as ``docs/blender-addon.md``: the panel's *Help* opens it (the manifest
has no ``website`` while the project has no public URL).

Why not ``blender --command extension build``: Blender's builder packs its ``--source-dir`` as it is and wants
the manifest beside the package's ``__init__.py``. This repository keeps the manifest at its root and the
add-on in ``mega_blender/`` (with the runtime beside it), so on the repository it stops with ``Not a Python
package: missing "__init__.*" file``. ``--stage DIR`` writes the zip's layout as a folder instead; Blender's
builder run on that folder (``blender --command extension build --source-dir DIR``, or ``blender_ext.py build``
from the bpy module) makes a zip with exactly the same entries and bytes (only timestamps and compression
differ); tests/test_build_addon.py checks this.

``--validate`` then checks the zip with Blender's own extension validator — ``blender_ext.py validate`` with
Blender's tag list, found inside the installed ``bpy`` module (or given with ``--blender-ext``) — and with this
project's rules (:func:`check_zip`). Exits non-zero with a one-line reason on any failure.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("build_addon")

ROOT = Path(__file__).resolve().parent
MANIFEST_NAME = "blender_manifest.toml"
ADDON_PACKAGE = "mega_blender"
EXTENSION_ID = "mega_blender"
LICENSE_SPDX = "SPDX:GPL-3.0-or-later"
MIN_BLENDER = (4, 2, 0)
RUNTIME_DIR = "runtime"
#: Files of the repository root bundled beside the runtime package (pyproject.toml's readme needs README.md).
RUNTIME_ROOT_FILES = ("pyproject.toml", "README.md", "LICENSE")
RUNTIME_PACKAGE = "mega_runtime"
#: The add-on's documentation page, packed at the same path (the panel's Help button opens it).
HELP_DOC = "docs/blender-addon.md"

#: 1980-01-01 00:00:00, the earliest time a zip can hold; with fixed permissions it makes builds byte-identical.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644
EXCLUDED_DIR_NAMES = {"__pycache__", "tests", "test", "dist", "build"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp", ".blend1"}
#: Weights, data and media never belong in the add-on (users' models and footage stay outside it).
FORBIDDEN_SUFFIXES = {
    ".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".onnx", ".tflite", ".npz", ".npy", ".pkl", ".h5",
    ".ply", ".obj", ".fbx", ".glb", ".blend", ".jpg", ".jpeg", ".mp4", ".mov", ".avi", ".zip", ".whl",
}  # fmt: skip
MAX_FILE_BYTES = 1 << 20
MAX_ZIP_BYTES = 8 << 20
#: Permissions Blender knows, and source patterns that show the add-on needs each (a heuristic, see check_zip).
PERMISSION_EVIDENCE = {
    "files": re.compile(r"\bopen\(|\bread_result\(|filepath|\.read_bytes\(|\.write_text\(|images\.load\("),
    "network": re.compile(
        r"^\s*(import|from)\s+(urllib|http|socket|requests|ssl)\b|[\"']pip[\"'],\s*[\"']install", re.M
    ),
    "clipboard": re.compile(r"\bclipboard\b"),
    "camera": re.compile(r"\bVideoCapture\(\s*\d"),
    "microphone": re.compile(r"\bmicrophone\b", re.I),
}


class BuildError(Exception):
    """The zip could not be built or failed a check; the message is the one-line reason."""


# --- building ------------------------------------------------------------------------------------------------


def read_manifest(root: Path = ROOT) -> dict[str, Any]:
    """The parsed ``blender_manifest.toml`` of the repository at ``root``."""
    path = root / MANIFEST_NAME
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BuildError(f"{path} is missing") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path} is not valid TOML: {exc}") from exc


def zip_name(manifest: dict[str, Any]) -> str:
    """``<id>-<version>.zip`` for a manifest."""
    return f"{manifest.get('id', EXTENSION_ID)}-{manifest.get('version', '0')}.zip"


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` (sorted), without excluded folders, hidden entries and excluded suffixes."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink():
            raise BuildError(f"{path} is a symbolic link; the add-on bundles only real files from the repository")
        if path.is_dir():
            if path.name not in EXCLUDED_DIR_NAMES and not path.name.endswith(".egg-info"):
                yield from _walk(path)
        elif path.is_file() and path.suffix not in EXCLUDED_SUFFIXES:
            yield path


def collect_files(root: Path = ROOT) -> list[tuple[str, Path]]:
    """(name in the zip, file) pairs of the extension, sorted by name."""
    addon_dir = root / ADDON_PACKAGE
    if not (addon_dir / "__init__.py").is_file():
        raise BuildError(f"{addon_dir / '__init__.py'} is missing: the add-on package needs register()/unregister()")
    entries: dict[str, Path] = {
        MANIFEST_NAME: root / MANIFEST_NAME,
        "LICENSE": root / "LICENSE",
        HELP_DOC: root / HELP_DOC,
    }
    for path in _walk(addon_dir):
        entries[path.relative_to(addon_dir).as_posix()] = path
    for name in RUNTIME_ROOT_FILES:
        entries[f"{RUNTIME_DIR}/{name}"] = root / name
    runtime_dir = root / RUNTIME_PACKAGE
    if not (runtime_dir / "__init__.py").is_file():
        raise BuildError(f"{runtime_dir / '__init__.py'} is missing: the runtime source is bundled with the add-on")
    for path in _walk(runtime_dir):
        entries[f"{RUNTIME_DIR}/{path.relative_to(root).as_posix()}"] = path
    for name, path in entries.items():
        if path.is_symlink() or not path.is_file():
            raise BuildError(f"{path} (zip entry {name}) is missing or not a regular file")
        if root.resolve() not in path.resolve().parents:
            raise BuildError(f"{path} lies outside the repository {root}")
    return sorted(entries.items())


def build_zip(out_dir: Path, root: Path = ROOT) -> Path:
    """Write ``<out_dir>/mega_blender-<version>.zip`` atomically; returns its path."""
    manifest = read_manifest(root)
    files = collect_files(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / zip_name(manifest)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, path in files:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                info.create_system = 3  # unix, so the permission bits mean the same on every build machine
                info.external_attr = ZIP_FILE_MODE << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes(), compresslevel=9)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d files, %.0f KiB)", target, len(files), target.stat().st_size / 1024)
    return target


def stage(out_dir: Path, root: Path = ROOT) -> Path:
    """Write the zip's layout as a folder ``out_dir`` (which must not exist or be empty), for Blender's own
    ``extension build --source-dir``; returns ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BuildError(f"{out_dir} is not empty: stage into a new folder")
    for name, path in collect_files(root):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    log.info(
        "staged the extension in %s (build it with: blender --command extension build --source-dir %s)",
        out_dir,
        out_dir,
    )
    return out_dir


# --- checking ------------------------------------------------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(g) for g in match.groups()) if match else None


def _runtime_version(init_source: str) -> str | None:
    """``__version__`` assigned in ``mega_runtime/__init__.py`` (read without importing it)."""
    for node in ast.parse(init_source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            value = node.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    return None


def _defines(source: str, names: Iterable[str]) -> set[str]:
    """Which of ``names`` a module defines at top level (functions, assignments or imports)."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
    return found & set(names)


def shared_dir() -> Path:
    """The shared reference data folder (``MEGA_SHARED_DIR``, default ``../shared``); never bundled."""
    return Path(os.environ.get("MEGA_SHARED_DIR", ROOT.parent / "shared"))


def _shared_files_by_size(folder: Path, sizes: set[int]) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    if not folder.is_dir():
        return found
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size in sizes:
                found.setdefault(size, []).append(path)
    return found


def check_zip(zip_path: Path) -> list[str]:
    """This project's rules for the extension zip; returns the problems found (empty when it passes).

    Manifest at the root with id ``mega_blender``, a semantic version equal to the zip's name, the bundled
    runtime's pyproject version and ``mega_runtime.__version__``; GPL-3.0-or-later; Blender ≥ 4.2.0; every
    permission known, with a reason, and backed by the add-on's source (and network use declared); a root
    ``__init__.py`` defining ``register``/``unregister``; the runtime source present; no ``__pycache__``,
    ``.pyc``, tests, links, absolute or ``..`` names, weights or media, nothing from ``../shared``; deterministic
    entries; file and zip sizes within limits.
    """
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        return [f"{zip_path} is not a readable zip: {exc}"]
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if names != sorted(names) or len(set(names)) != len(names):
            problems.append("zip entries are not sorted and unique (the build is not deterministic)")
        if any(i.date_time != ZIP_DATE_TIME for i in infos):
            problems.append("zip entries carry real timestamps (the build is not deterministic)")
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name:
                problems.append(f"unsafe entry name {name!r}")
            if "__pycache__" in parts or name.endswith((".pyc", ".pyo")):
                problems.append(f"compiled Python in the zip: {name}")
            if any(p in ("tests", "test") for p in parts[:-1]):
                problems.append(f"test file in the zip: {name}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                problems.append(f"symbolic link in the zip: {name}")
            if Path(name).suffix.lower() in FORBIDDEN_SUFFIXES:
                problems.append(f"data, weights or media do not belong in the add-on: {name}")
            if info.file_size > MAX_FILE_BYTES:
                problems.append(f"{name} is {info.file_size} bytes, over the {MAX_FILE_BYTES}-byte limit per file")
        if zip_path.stat().st_size > MAX_ZIP_BYTES:
            problems.append(f"the zip is {zip_path.stat().st_size} bytes, over the {MAX_ZIP_BYTES}-byte limit")
        problems += _check_manifest_and_sources(zf, set(names), zip_path)
        problems += _check_not_from_shared(zf, infos)
    return problems


def _check_manifest_and_sources(zf: zipfile.ZipFile, names: set[str], zip_path: Path) -> list[str]:
    problems: list[str] = []
    if MANIFEST_NAME not in names:
        return [f"{MANIFEST_NAME} is not at the zip root"]
    try:
        manifest = tomllib.loads(zf.read(MANIFEST_NAME).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return [f"{MANIFEST_NAME} is not valid TOML: {exc}"]
    if manifest.get("id") != EXTENSION_ID:
        problems.append(f"manifest id is {manifest.get('id')!r}, expected {EXTENSION_ID!r}")
    version = str(manifest.get("version", ""))
    if _version_tuple(version) is None:
        problems.append(f"manifest version {version!r} is not MAJOR.MINOR.PATCH")
    if zip_path.name != zip_name(manifest):
        problems.append(f"zip is named {zip_path.name}, expected {zip_name(manifest)} from the manifest")
    if manifest.get("type") != "add-on":
        problems.append(f"manifest type is {manifest.get('type')!r}, expected 'add-on'")
    if manifest.get("license") != [LICENSE_SPDX]:
        problems.append(f"manifest license is {manifest.get('license')!r}, expected [{LICENSE_SPDX!r}]")
    minimum = _version_tuple(str(manifest.get("blender_version_min", "")))
    if minimum is None or minimum < MIN_BLENDER:
        problems.append(f"blender_version_min {manifest.get('blender_version_min')!r} must be 4.2.0 or later")

    addon_sources = {
        name: zf.read(name).decode("utf-8", errors="replace")
        for name in sorted(names)
        if name.endswith(".py") and not name.startswith(f"{RUNTIME_DIR}/")
    }
    if "__init__.py" not in addon_sources:
        problems.append("__init__.py is not at the zip root (the add-on package's contents belong there)")
    else:
        missing = {"register", "unregister"} - _defines(addon_sources["__init__.py"], ("register", "unregister"))
        if missing:
            problems.append(f"__init__.py does not define {', '.join(sorted(missing))}()")
    problems += _check_permissions(manifest.get("permissions"), "\n".join(addon_sources.values()))

    pyproject_name = f"{RUNTIME_DIR}/pyproject.toml"
    init_name = f"{RUNTIME_DIR}/{RUNTIME_PACKAGE}/__init__.py"
    for required in (pyproject_name, init_name, f"{RUNTIME_DIR}/{RUNTIME_PACKAGE}/__main__.py"):
        if required not in names:
            problems.append(f"the bundled runtime lacks {required}")
    if pyproject_name in names and init_name in names:
        project_version = tomllib.loads(zf.read(pyproject_name).decode()).get("project", {}).get("version")
        runtime_version = _runtime_version(zf.read(init_name).decode())
        if not version == project_version == runtime_version:
            problems.append(
                f"versions differ: manifest {version}, pyproject {project_version}, mega_runtime {runtime_version}"
            )
    return problems


def _check_permissions(permissions: Any, addon_source: str) -> list[str]:
    problems: list[str] = []
    if permissions is None:
        permissions = {}
    if not isinstance(permissions, dict):
        return ["manifest permissions must be a table of name = reason"]
    for key, reason in permissions.items():
        if key not in PERMISSION_EVIDENCE:
            problems.append(f"unknown permission {key!r}")
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(f"permission {key!r} has no reason")
        elif not PERMISSION_EVIDENCE[key].search(addon_source):
            problems.append(f"permission {key!r} is declared but the add-on's code shows no use of it")
    if "network" not in permissions and PERMISSION_EVIDENCE["network"].search(addon_source):
        problems.append("the add-on's code uses the network but the manifest does not declare permissions.network")
    return problems


def _check_not_from_shared(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> list[str]:
    """Entries byte-identical to a file of the shared reference data (compared by size, then SHA-256)."""
    by_size = _shared_files_by_size(shared_dir(), {i.file_size for i in infos if i.file_size > 0})
    problems: list[str] = []
    for info in infos:
        candidates = by_size.get(info.file_size)
        if not candidates:
            continue
        digest = hashlib.sha256(zf.read(info)).hexdigest()
        for path in candidates:
            if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                problems.append(f"{info.filename} is a copy of {path}; nothing from ../shared is bundled")
                break
    return problems


def find_blender_ext() -> Path:
    """``blender_ext.py`` (Blender's extension tool) inside the installed ``bpy`` module, found without importing it."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise BuildError(
            "Blender's extension validator ships inside the bpy module, which this Python lacks: "
            f"run `{Path(sys.executable).name} -m pip install 'bpy==4.5.*'` (Python 3.11) "
            "or pass --blender-ext <blender>/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py"
        )
    candidates = sorted(
        Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"),
        key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.parents[4].name)),
    )
    if not candidates:
        raise BuildError(f"no scripts/addons_core/bl_pkg/cli/blender_ext.py under {Path(spec.origin).parent}")
    return candidates[-1]


def blender_validate(zip_path: Path, blender_ext: Path | None = None) -> list[str]:
    """Blender's own ``blender_ext.py validate`` with Blender's tag list; returns its error messages."""
    tool = blender_ext or find_blender_ext()
    if not tool.is_file():
        raise BuildError(f"Blender's extension tool {tool} does not exist")
    tags = tool.parents[3] / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    command = [sys.executable, str(tool), "validate", "--output-type", "JSON"]
    command += ["--valid-tags", str(tags)] if tags.is_file() else []
    proc = subprocess.run([*command, str(zip_path)], capture_output=True, text=True, check=False)
    errors: list[str] = []
    for line in proc.stdout.splitlines():
        try:
            kind, message = json.loads(line)
        except (json.JSONDecodeError, ValueError):
            continue
        if kind in ("ERROR", "FATAL_ERROR"):
            errors.append(" ".join(str(message).split()))
    specific = [e for e in errors if not re.fullmatch(r'Error parsing TOML in ".*"', e)]
    errors = specific or errors  # the header line names only the file; the lines after it say what is wrong
    if proc.returncode != 0 and not errors:
        errors.append(f"blender_ext.py validate exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return errors


def validate(zip_path: Path, blender_ext: Path | None = None) -> None:
    """Blender's validator, then this project's rules; raises :class:`BuildError` with the first problem."""
    started = time.perf_counter()
    errors = blender_validate(zip_path, blender_ext)
    if errors:
        raise BuildError(f"Blender's validator rejects {zip_path.name}: {errors[0]}")
    log.info("Blender's extension validator accepts %s (%.2f s)", zip_path.name, time.perf_counter() - started)
    problems = check_zip(zip_path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BuildError(f"{zip_path.name}: {problems[0]}{more}")
    log.info("%s passes the project's rules", zip_path.name)


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit status (0 ok, 1 failed with a one-line reason on stderr)."""
    parser = argparse.ArgumentParser(description="Build dist/mega_blender-<version>.zip, the Blender extension.")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--validate", action="store_true", help="check the zip with Blender's validator and ours")
    parser.add_argument("--blender-ext", type=Path, help="path to Blender's blender_ext.py (default: inside bpy)")
    parser.add_argument(
        "--stage", type=Path, metavar="DIR", help="only write the zip's layout into DIR, for Blender's extension build"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.stage is not None:
            stage(args.stage)
            return 0
        started = time.perf_counter()
        zip_path = build_zip(args.out)
        log.info("built in %.2f s", time.perf_counter() - started)
        if args.validate:
            validate(zip_path, args.blender_ext)
    except BuildError as exc:
        sys.stderr.write(f"build_addon: error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
