"""The headless batch command and what each export format keeps (re-imported in real Blender)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON, REPO_ROOT

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

import mega_blender  # noqa: E402
from mega_blender import batch, coords, exports, scene_build  # noqa: E402
from mega_blender.result_reader import hypothesis_order  # noqa: E402
from tests.blender.helpers import world_vertices  # noqa: E402
from tests.blender.make_result import make_arrays, make_meta, write_photo, write_result  # noqa: E402

NUM_HYPOTHESES = 4
SHOWN = 2  # the hypothesis the batch selects (key "Hypothesis 02")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, object]:
    """One result exported to every format once (the batch resets the scene itself)."""
    folder = tmp_path_factory.mktemp("batch")
    arrays = make_arrays(num_people=2, num_hypotheses=NUM_HYPOTHESES, seed=3)
    photo = write_photo(folder / "photo.png")
    path = write_result(folder, "photo", arrays, make_meta(source_path=str(photo)))
    outputs: dict[str, object] = {"arrays": arrays, "result": path}
    for suffix in ("blend", "fbx", "glb", "usd", "abc"):
        out, report = folder / f"scene.{suffix}", folder / f"report_{suffix}.json"
        code = batch.main(["import", str(path), "--export", str(out), "--report", str(report), "--hypothesis", "2"])
        outputs[suffix] = (code, out, report)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return outputs


def _reimport(path: Path) -> list:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    suffix = path.suffix
    if suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    elif suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif suffix == ".usd":
        bpy.ops.wm.usd_import(filepath=str(path))
    elif suffix == ".abc":
        bpy.ops.wm.alembic_import(filepath=str(path))
    else:
        bpy.ops.wm.open_mainfile(filepath=str(path))
    return sorted((o for o in bpy.data.objects if o.type == "MESH"), key=lambda o: o.name)


def _shown_world(arrays: dict, person: int) -> np.ndarray:
    hypothesis = [0, *hypothesis_order(arrays["log_likelihood"][0, person])][SHOWN]
    return coords.opencv_to_blender_world(arrays["vertices"][0, person, hypothesis].astype(np.float64))


@pytest.mark.parametrize("suffix", ["blend", "fbx", "glb", "usd", "abc"])
def test_ok_batch_exports_and_reports(exported, suffix):
    code, out, report_path = exported[suffix]
    assert code == 0
    assert out.is_file() and out.stat().st_size > 0
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["error"] is None
    assert report["files"] == [str(out)]
    assert report["objects"] == ["photo.png Camera", "photo.png Person 1", "photo.png Person 2"]
    assert report["results"] == [str(exported["result"])]
    assert report["warnings"] == []


@pytest.mark.parametrize("suffix", ["fbx", "glb", "usd", "blend"])
def test_ok_export_keeps_shape_keys_and_colours(exported, suffix):
    people = _reimport(exported[suffix][1])
    assert len(people) == 2
    for obj in people:
        mesh = obj.data
        assert len(mesh.vertices) == 6890 and len(mesh.polygons) == 13776
        names = [k.name.replace("_", " ") for k in mesh.shape_keys.key_blocks]
        assert names == ["Basis"] + [f"Hypothesis {k:02d}" for k in range(1, NUM_HYPOTHESES)]
        # USD: the exporter's named primvar and the displayColor the batch adds (docs: What each format keeps)
        assert len(mesh.color_attributes) == (2 if suffix == "usd" else 1)
        colors = mesh.color_attributes[0]
        values = np.empty(len(colors.data) * 4, dtype=np.float32)
        colors.data.foreach_get("color", values)
        rgba = values.reshape(-1, 4)
        assert rgba[:, :3].std() > 0.01  # real colours, not a constant fill
        assert np.all((rgba >= 0.0) & (rgba <= 1.0))


def test_ok_glb_keeps_names_colours_and_the_shown_hypothesis(exported):
    people = _reimport(exported["glb"][1])
    for obj in people:
        assert obj.data.color_attributes[0].name == "Color"  # glTF's COLOR_0
        values = [k.value for k in obj.data.shape_keys.key_blocks[1:]]
        assert values == [1.0 if k == SHOWN else 0.0 for k in range(1, NUM_HYPOTHESES)]
        assert "mega_log_likelihood" in obj  # custom properties travel as extras


def test_ok_usd_keeps_the_float_attribute(exported):
    arrays = exported["arrays"]
    people = _reimport(exported["usd"][1])
    for person, obj in enumerate(people):
        attribute = obj.data.attributes["mega_uncertainty_m"]
        values = np.empty(6890, dtype=np.float32)
        attribute.data.foreach_get("value", values)
        np.testing.assert_allclose(values, arrays["vertex_std"][0, person], rtol=1e-6)


def test_ok_alembic_bakes_the_shown_hypothesis(exported):
    arrays = exported["arrays"]
    people = _reimport(exported["abc"][1])
    bpy.context.view_layer.update()
    for person, obj in enumerate(people):
        assert obj.data.shape_keys is None
        assert len(obj.data.color_attributes) == 0  # Alembic drops the colours
        np.testing.assert_allclose(world_vertices(obj), _shown_world(arrays, person), atol=1e-4)


def test_ok_blend_keeps_drivers_and_the_picker(exported):
    people = _reimport(exported["blend"][1])
    arrays = exported["arrays"]
    for person, obj in enumerate(people):
        assert obj["mega_hypothesis"] == SHOWN
        assert len(obj.data.shape_keys.animation_data.drivers) == NUM_HYPOTHESES - 1
        np.testing.assert_allclose(world_vertices(obj), _shown_world(arrays, person), atol=1e-5)
    camera = bpy.context.scene.camera
    assert camera is not None and camera.data.background_images[0].image is not None


# --- the command line -------------------------------------------------------------------------------------


@pytest.fixture
def result_path(tmp_path) -> Path:
    return write_result(tmp_path, "photo", make_arrays(num_people=1, num_hypotheses=3), make_meta(source_path=None))


def test_ok_batch_builds_several_results_into_one_file(tmp_path, result_path):
    other = write_result(tmp_path / "b", "other", make_arrays(num_people=2, num_hypotheses=2, seed=5))
    out, report = tmp_path / "both.blend", tmp_path / "report.json"
    assert batch.main(["import", str(result_path), str(other), "--export", str(out), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert len(data["results"]) == 2
    assert sum(" Person " in name for name in data["objects"]) == 3
    assert any("photo was not found" in w or "the photo" in w for w in data["warnings"])


def test_ok_batch_gives_each_photo_its_own_scene(tmp_path):
    paths = []
    for name, size in (("first", (640, 480)), ("second", (480, 720))):
        photo = write_photo(tmp_path / f"{name}.png", *size)
        arrays = make_arrays(num_people=2, num_hypotheses=2, seed=len(paths))
        paths.append(write_result(tmp_path, name, arrays, make_meta(*size, source_path=str(photo))))
    out, report = tmp_path / "people.blend", tmp_path / "report.json"
    assert batch.main(["import", *map(str, paths), "--export", str(out), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["objects"] == [
        "first.png Camera",
        "first.png Person 1",
        "first.png Person 2",
        "second.png Camera",
        "second.png Person 1",
        "second.png Person 2",
    ]
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert len(bpy.data.scenes) == 2
    for scene in bpy.data.scenes:
        (camera,) = [o for o in scene.objects if o.type == "CAMERA"]
        photo = camera.name.removesuffix(" Camera")
        assert scene.camera == camera
        assert sorted(o.name for o in scene.objects if scene_build.is_person(o)) == [
            f"{photo} Person 1",
            f"{photo} Person 2",
        ]
    second = bpy.data.scenes["second.png"]
    assert (second.render.resolution_x, second.render.resolution_y) == (480, 720)


def test_bad_batch_refuses_several_photos_into_a_one_scene_format(tmp_path, result_path):
    other = write_result(tmp_path / "b", "other", make_arrays(num_people=1, num_hypotheses=2, seed=5))
    out = tmp_path / "both.glb"
    assert batch.main(["import", str(result_path), str(other), "--export", str(out)]) == 1
    assert not out.exists()


def test_ok_batch_warns_when_the_hypothesis_is_out_of_range(tmp_path, result_path):
    out, report = tmp_path / "x.abc", tmp_path / "r.json"
    assert (
        batch.main(["import", str(result_path), "--export", str(out), "--report", str(report), "--hypothesis", "9"])
        == 0
    )
    assert any("showing 2 instead of 9" in w for w in json.loads(report.read_text())["warnings"])


def test_ng_batch_never_overwrites_without_overwrite(tmp_path, result_path, capsys):
    out = tmp_path / "scene.glb"
    out.write_bytes(b"precious")
    assert batch.main(["import", str(result_path), "--export", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mega import: error: {out} already exists; choose another name or pass --overwrite"]
    assert out.read_bytes() == b"precious"
    assert batch.main(["import", str(result_path), "--export", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"glTF"


def test_ng_batch_refuses_an_existing_report(tmp_path, result_path):
    report = tmp_path / "report.json"
    report.write_text("keep")
    assert batch.main(["import", str(result_path), "--export", str(tmp_path / "s.blend"), "--report", str(report)]) == 1
    assert report.read_text() == "keep"
    assert not (tmp_path / "s.blend").exists()


def test_ng_batch_refuses_an_unknown_format(tmp_path, result_path, capsys):
    assert batch.main(["import", str(result_path), "--export", str(tmp_path / "scene.obj")]) == 1
    assert "cannot export to '.obj'" in capsys.readouterr().err


def test_ng_batch_bad_result_fails_with_one_line_and_a_report(tmp_path, result_path, capsys):
    meta = json.loads(result_path.read_text())
    meta["version"] = "7.1"
    result_path.write_text(json.dumps(meta))
    out, report = tmp_path / "scene.fbx", tmp_path / "report.json"
    assert batch.main(["import", str(result_path), "--export", str(out), "--report", str(report)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mega import: error: ") and "version 7.1" in err[0]
    data = json.loads(report.read_text())
    assert data["ok"] is False and "version 7.1" in data["error"] and data["files"] == []
    assert not out.exists()


def test_ng_batch_usage_errors_exit_2(capsys):
    assert batch.main([]) == 2
    assert batch.main(["import", "x.json"]) == 2  # --export is required
    assert batch.main(["--help"]) == 0
    assert "import" in capsys.readouterr().out


def test_ok_add_on_registers_the_blender_command(blender):
    assert mega_blender._cli_handle is not None
    assert batch.cli_command(["--help"]) == 0


def test_ok_python_dash_m_runs_the_batch(tmp_path, result_path):
    out, report = tmp_path / "scene.glb", tmp_path / "report.json"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user"), "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "mega_blender.batch", "import", str(result_path), "--export", str(out)]
    run = subprocess.run(
        [*command, "--report", str(report)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.is_file() and json.loads(report.read_text())["ok"] is True
    failed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("mega import: error: ")


@pytest.mark.parametrize("suffix", ["fbx", "glb"])
def test_ok_keyframed_hypothesis_is_baked_into_the_export(blender, tmp_path, result_path, suffix):
    bpy.ops.mega.import_result(filepath=str(result_path))
    obj = next(o for o in bpy.data.objects if scene_build.is_person(o) and o["mega_person"] == 1)
    bpy.context.view_layer.objects.active = obj
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 8
    for frame, value in ((1, 1), (5, 2)):
        scene.frame_set(frame)
        obj["mega_hypothesis"] = value
        bpy.ops.mega.keyframe_hypothesis()
    scene.frame_set(1)
    out = tmp_path / f"animated.{suffix}"
    exports.EXPORTERS[f".{suffix}"](out, 1)
    people = _reimport(out)
    keys = people[0].data.shape_keys
    assert keys.animation_data is not None and keys.animation_data.action is not None
    for frame, shown in ((1, 1), (4, 1), (5, 2), (8, 2)):
        bpy.context.scene.frame_set(frame)
        assert [round(k.value, 3) for k in keys.key_blocks[1:]] == [float(k == shown) for k in (1, 2)], frame


@pytest.mark.parametrize("num_hypotheses", [1, 3])
@pytest.mark.parametrize("suffix", ["blend", "fbx", "glb", "usd", "abc"])
def test_ok_every_format_takes_few_hypotheses(tmp_path, suffix, num_hypotheses):
    path = write_result(tmp_path, "few", make_arrays(num_people=1, num_hypotheses=num_hypotheses), make_meta())
    out = tmp_path / f"few.{suffix}"
    assert batch.main(["import", str(path), "--export", str(out)]) == 0
    assert out.is_file()
