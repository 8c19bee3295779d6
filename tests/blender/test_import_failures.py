"""Imports that fail in real Blender: a bad result, a missing file, a frame out of range or a failure half-way
ends ``{'CANCELLED'}`` with one error report, and nothing is created."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import operators, scene_build  # noqa: E402
from tests.blender.helpers import counts, execute_import  # noqa: E402
from tests.blender.import_helpers import import_result as _import  # noqa: E402

# --- failures: CANCELLED, a message, nothing created --------------------------------------------------------


def _corrupt_npz(path: Path) -> None:
    npz = path.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:1000])


def _corrupt_json(path: Path) -> None:
    path.write_text(path.read_text()[:-20])


def _future_version(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["version"] = "3.0"  # 2.0 is the compact format
    path.write_text(json.dumps(meta))


def _bad_camera(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["source"]["width"] = 2  # Blender needs at least 4 pixels
    path.write_text(json.dumps(meta))


def _rewrite_arrays(change):
    def rewrite(path: Path) -> None:
        npz = path.with_suffix(".npz")
        with np.load(npz) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        change(arrays)
        np.savez(npz, **arrays)

    return rewrite


BAD_RESULTS = {
    "corrupt_npz": (_corrupt_npz, "not a readable .npz"),
    "corrupt_json": (_corrupt_json, "not a readable JSON"),
    "unknown_schema_version": (_future_version, "version 3.0"),
    "wrong_array_shape": (
        _rewrite_arrays(lambda a: a.__setitem__("vertex_std", a["vertex_std"][:, :, :100])),
        "vertex_std has shape",
    ),
    "missing_faces": (_rewrite_arrays(lambda a: a.pop("faces")), "faces"),
    "missing_arrays_file": (lambda p: p.with_suffix(".npz").unlink(), "is missing"),
    "unrepresentable_camera": (_bad_camera, "width"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_ng_bad_result_is_cancelled_with_a_message_and_creates_nothing(blender, result_path, case):
    spoil, message = BAD_RESULTS[case]
    spoil(result_path)
    before = counts(bpy)
    with pytest.raises(RuntimeError, match="MEGA import failed") as error:
        _import(result_path)
    assert message in str(error.value)
    assert counts(bpy) == before
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(result_path))
    assert result == {"CANCELLED"}
    assert [kind for kind, _ in reports] == [{"ERROR"}]
    assert message in reports[0][1]
    assert counts(bpy) == before


def test_ng_missing_file_is_cancelled(blender, tmp_path):
    before = counts(bpy)
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(tmp_path / "nope.json"))
    assert result == {"CANCELLED"}
    assert "does not exist" in reports[0][1]
    assert counts(bpy) == before


def test_ng_frame_out_of_range_is_cancelled(blender, result_path):
    before = counts(bpy)
    result, reports = execute_import(
        operators.MEGA_OT_import_result, bpy.context, str(result_path), frame=3, animate=False
    )
    assert result == {"CANCELLED"}
    assert "frame 3 does not exist" in reports[0][1]
    assert counts(bpy) == before


def test_ng_failure_midway_removes_everything_this_import_made(blender, result_path, monkeypatch):
    real = scene_build._build_person
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise scene_build.ResultFormatError("simulated failure while building", "nothing to fix")
        return real(*args, **kwargs)

    user_material = bpy.data.materials.new("MEGA Uncertainty")
    before = counts(bpy)
    monkeypatch.setattr(scene_build, "_build_person", fail_on_second)
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(result_path))
    assert result == {"CANCELLED"}
    assert "simulated failure" in reports[0][1]
    assert counts(bpy) == before
    assert bpy.data.materials["MEGA Uncertainty"] == user_material
    assert bpy.context.scene.camera is None
