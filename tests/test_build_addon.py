"""build_addon.py: the extension zip's layout and rules, Blender's own validator, and Blender's own installer."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import build_addon
from tests.addon_pure.helpers import REPO_ROOT, run_in_bpy

MANIFEST = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())
VERSION = MANIFEST["version"]
HAS_BPY = importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(not HAS_BPY, reason="bpy is not installed (pip install 'bpy==4.5.*' 'numpy<2')")


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    return build_addon.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def fake_root(tmp_path) -> Path:
    """A copy of the parts of the repository the build reads, to doctor freely."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("blender_manifest.toml", "LICENSE", "README.md", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, root / name)
    (root / "docs").mkdir()
    shutil.copy2(REPO_ROOT / build_addon.HELP_DOC, root / build_addon.HELP_DOC)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mega_blender", "mega_runtime"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=ignore)
    init = root / "mega_blender" / "__init__.py"
    if not init.exists():
        init.write_text("def register():\n    pass\n\n\ndef unregister():\n    pass\n")
    return root


def zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def rewrite_zip(src: Path, dst: Path, *, add=None, drop=(), edit=None) -> Path:
    """Copy a zip entry by entry (deterministically), adding, dropping or editing entries (name → bytes)."""
    add, edit = add or {}, edit or {}
    with zipfile.ZipFile(src) as zin:
        entries = {name: zin.read(name) for name in zin.namelist() if name not in drop}
    entries.update({name: fn(entries[name]) for name, fn in edit.items()})
    entries.update(add)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, "w") as zout:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=build_addon.ZIP_DATE_TIME)
            info.external_attr = build_addon.ZIP_FILE_MODE << 16
            zout.writestr(info, entries[name])
    return dst


def test_ok_zip_holds_the_package_contents_at_the_root_and_the_runtime_under_runtime(built_zip):
    assert built_zip.name == f"mega_blender-{VERSION}.zip"
    names = set(zip_names(built_zip))
    assert {"blender_manifest.toml", "__init__.py", "LICENSE", "result_reader.py", "coords.py"} <= names
    addon = {
        p.relative_to(REPO_ROOT / "mega_blender").as_posix()
        for p in (REPO_ROOT / "mega_blender").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert addon <= names
    runtime = {
        f"runtime/{p.relative_to(REPO_ROOT).as_posix()}"
        for p in (REPO_ROOT / "mega_runtime").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert runtime <= names
    assert {"runtime/pyproject.toml", "runtime/README.md", "runtime/LICENSE"} <= names
    assert not any(n.startswith("mega_blender/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or "tests/" in n for n in names)
    with zipfile.ZipFile(built_zip) as zf:
        assert zf.read("blender_manifest.toml") == (REPO_ROOT / "blender_manifest.toml").read_bytes()
        assert zf.read("runtime/pyproject.toml") == (REPO_ROOT / "pyproject.toml").read_bytes()


def test_ok_build_is_byte_for_byte_reproducible(built_zip, tmp_path):
    again = build_addon.build_zip(tmp_path / "again")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(built_zip.read_bytes()).digest()
    with zipfile.ZipFile(again) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {build_addon.ZIP_DATE_TIME}


def test_ok_build_leaves_out_caches_tests_and_hidden_files(fake_root, tmp_path):
    for package in ("mega_blender", "mega_runtime"):
        (fake_root / package / "__pycache__").mkdir(exist_ok=True)
        (fake_root / package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
        (fake_root / package / "stale.pyc").write_bytes(b"\0")
        (fake_root / package / "tests").mkdir()
        (fake_root / package / "tests" / "test_x.py").write_text("")
        (fake_root / package / ".DS_Store").write_bytes(b"\0")
    names = zip_names(build_addon.build_zip(tmp_path / "dist", root=fake_root))
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "tests/" in n or "/." in n]
    assert "runtime/mega_runtime/io/result.py" in names


def test_ng_build_refuses_symbolic_links(fake_root, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n")
    (fake_root / "mega_blender" / "linked.py").symlink_to(outside)
    with pytest.raises(build_addon.BuildError, match="symbolic link"):
        build_addon.build_zip(tmp_path / "dist", root=fake_root)


def test_ng_build_needs_the_package_init(fake_root, tmp_path):
    (fake_root / "mega_blender" / "__init__.py").unlink()
    with pytest.raises(build_addon.BuildError, match=r"__init__\.py is missing"):
        build_addon.build_zip(tmp_path / "dist", root=fake_root)


def test_ok_built_zip_passes_the_projects_rules(built_zip):
    assert build_addon.check_zip(built_zip) == []


def _manifest_edit(old: str, new: str):
    def edit(data: bytes) -> bytes:
        text = data.decode()
        if old not in text:
            raise AssertionError(f"{old!r} not in the manifest")
        return text.replace(old, new, 1).encode()

    return edit


CHECK_CASES = {
    "pycache": ({"add": {"__pycache__/coords.cpython-311.pyc": b"\0"}}, "compiled Python"),
    "tests": ({"add": {"tests/test_x.py": b""}}, "test file in the zip"),
    "weights": ({"add": {"runtime/model.pth": b"\0"}}, "data, weights or media"),
    "huge_file": ({"add": {"big.py": b"#" * (build_addon.MAX_FILE_BYTES + 1)}}, "limit per file"),
    "no_manifest": ({"drop": ["blender_manifest.toml"]}, "not at the zip root"),
    "no_init": ({"drop": ["__init__.py"]}, "__init__.py is not at the zip root"),
    "no_runtime": ({"drop": ["runtime/pyproject.toml"]}, "bundled runtime lacks runtime/pyproject.toml"),
    "wrong_id": ({"edit": {"blender_manifest.toml": _manifest_edit('id = "mega_blender"', 'id = "mega"')}}, "id"),
    "version_drift": (
        {"edit": {"blender_manifest.toml": _manifest_edit(f'version = "{VERSION}"', 'version = "9.9.9"')}},
        "versions differ",
    ),
    "licence": (
        {"edit": {"blender_manifest.toml": _manifest_edit("GPL-3.0-or-later", "MIT")}},
        "manifest license",
    ),
    "old_blender": (
        {"edit": {"blender_manifest.toml": _manifest_edit('"4.2.0"', '"4.1.0"')}},
        "must be 4.2.0 or later",
    ),
    "unused_permission": (
        {"edit": {"blender_manifest.toml": lambda d: d + b'clipboard = "Copies things"\n'}},
        "'clipboard' is declared but",
    ),
    "undeclared_network": (
        {
            "edit": {
                "blender_manifest.toml": lambda d: b"".join(
                    line for line in d.splitlines(True) if b"network" not in line
                )
            }
        },
        "does not declare permissions.network",
    ),
    "no_unregister": ({"edit": {"__init__.py": lambda d: b"def register():\n    pass\n"}}, "define unregister"),
}


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_ng_project_rules_catch_a_doctored_zip(built_zip, tmp_path, case):
    change, expected = CHECK_CASES[case]
    doctored = rewrite_zip(built_zip, tmp_path / built_zip.name, **change)
    problems = build_addon.check_zip(doctored)
    assert any(expected in p for p in problems), problems


def test_ng_project_rules_find_copies_of_shared_files(built_zip, tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "fixtures"
    shared.mkdir(parents=True)
    with zipfile.ZipFile(built_zip) as zf:
        (shared / "renamed.py").write_bytes(zf.read("coords.py"))
    monkeypatch.setenv("MEGA_SHARED_DIR", str(tmp_path / "shared"))
    problems = build_addon.check_zip(built_zip)
    assert any("coords.py is a copy of" in p for p in problems), problems


def test_ng_missing_validator_names_the_fix(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bpy" else real_find_spec(name))
    with pytest.raises(build_addon.BuildError, match=r"pip install 'bpy==4\.5\.\*'.*--blender-ext"):
        build_addon.find_blender_ext()


@needs_bpy
def test_ok_blenders_own_validator_accepts_the_zip(built_zip):
    tool = build_addon.find_blender_ext()
    assert tool.name == "blender_ext.py" and "bl_pkg" in tool.parts
    assert build_addon.blender_validate(built_zip) == []


@needs_bpy
def test_ng_blenders_own_validator_rejects_an_unknown_tag_and_a_long_tagline(fake_root, tmp_path):
    manifest = fake_root / "blender_manifest.toml"
    manifest.write_text(manifest.read_text().replace('"Mesh"]', '"Meshes"]'))
    errors = build_addon.blender_validate(build_addon.build_zip(tmp_path / "a", root=fake_root))
    assert errors and "Meshes" in errors[0]
    text = manifest.read_text().replace('"Meshes"]', '"Mesh"]')
    manifest.write_text(text.replace('tagline = "', 'tagline = "' + "Very " * 12))
    errors = build_addon.blender_validate(build_addon.build_zip(tmp_path / "b", root=fake_root))
    assert errors and "64" in errors[0]


@needs_bpy
def test_ok_command_line_builds_and_validates(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_addon.py"), "--out", str(tmp_path), "--validate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"mega_blender-{VERSION}.zip").is_file()
    assert "Blender's extension validator accepts" in proc.stderr


def test_ng_command_line_fails_with_one_line(tmp_path):
    missing_tool = tmp_path / "nowhere" / "blender_ext.py"
    command = [sys.executable, str(REPO_ROOT / "build_addon.py"), "--out", str(tmp_path), "--validate"]
    proc = subprocess.run(
        [*command, "--blender-ext", str(missing_tool)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("build_addon: error:")]
    assert len(error_lines) == 1 and "does not exist" in error_lines[0]


@pytest.mark.blender
def test_ok_zip_installs_and_enables_through_blenders_installer(built_zip, tmp_path):
    code = f"""
    import os, sys, time, addon_utils
    started = time.perf_counter()
    status = bpy.ops.extensions.package_install_files(
        filepath={str(built_zip)!r}, repo="user_default", enable_on_install=True
    )
    result["install_s"] = time.perf_counter() - started
    result["status"] = sorted(status)
    result["check"] = list(addon_utils.check("bl_ext.user_default.mega_blender"))
    result["imported"] = "bl_ext.user_default.mega_blender" in sys.modules
    result["in_preferences"] = "bl_ext.user_default.mega_blender" in bpy.context.preferences.addons
    folder = os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "mega_blender")
    result["files"] = sorted(
        os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/") for d, _, fs in os.walk(folder) for f in fs
    )
    addon_utils.disable("bl_ext.user_default.mega_blender")
    result["after_disable"] = list(addon_utils.check("bl_ext.user_default.mega_blender"))
    """
    out = run_in_bpy(code, tmp_path / "blender_user")
    assert out["status"] == ["FINISHED"]
    assert out["check"] == [True, True] and out["imported"] and out["in_preferences"]
    assert {"blender_manifest.toml", "__init__.py", "runtime/mega_runtime/__init__.py"} <= set(out["files"])
    assert out["after_disable"][1] is False


def test_ok_bundled_runtime_runs_from_the_unpacked_zip(built_zip, tmp_path):
    with zipfile.ZipFile(built_zip) as zf:
        zf.extractall(tmp_path / "unpacked")
    runtime_dir = tmp_path / "unpacked" / "runtime"
    env = {**os.environ, "PYTHONPATH": str(runtime_dir)}
    code = "import mega_runtime; print(mega_runtime.__file__)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(runtime_dir), where.stderr
    version = subprocess.run(
        [sys.executable, "-m", "mega_runtime", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert version.returncode == 0 and version.stdout.strip() == f"mega-runtime {VERSION}", version.stderr


def _setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


@pytest.mark.skipif(
    _setuptools_version() < (68,),
    reason="an offline build (no build isolation) needs setuptools>=68 here, as pyproject.toml's build-system says",
)
def test_ok_bundled_runtime_builds_into_a_wheel_of_the_same_version(built_zip, tmp_path):
    with zipfile.ZipFile(built_zip) as zf:
        zf.extractall(tmp_path / "unpacked")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    command += [str(tmp_path / "unpacked" / "runtime"), "-w", str(tmp_path / "wheels")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.endswith(f"-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "mega_runtime/io/result.py" in zf.namelist()


@needs_bpy
def test_ok_blenders_extension_build_of_the_staged_folder_makes_the_same_zip(built_zip, tmp_path):
    """``extension build`` cannot run on the repository layout; on ``--stage``'s folder it packs the same bytes."""
    tool = build_addon.find_blender_ext()
    assert build_addon.main(["--stage", str(tmp_path / "stage")]) == 0
    out = tmp_path / "blender"
    out.mkdir()
    command = [sys.executable, str(tool), "build", "--source-dir", str(tmp_path / "stage"), "--output-dir", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (made,) = out.glob("*.zip")
    assert made.name == built_zip.name
    with zipfile.ZipFile(made) as theirs, zipfile.ZipFile(built_zip) as ours:
        assert sorted(theirs.namelist()) == sorted(ours.namelist())
        assert all(theirs.read(name) == ours.read(name) for name in ours.namelist())
    on_repo = [sys.executable, str(tool), "build", "--source-dir", str(REPO_ROOT), "--output-dir", str(out)]
    refused = subprocess.run(on_repo, capture_output=True, text=True, timeout=120, check=False)
    assert "missing" in refused.stdout + refused.stderr and len(list(out.glob("*.zip"))) == 1


def test_ok_zip_packs_the_help_page(built_zip):
    assert build_addon.HELP_DOC in zip_names(built_zip)
