"""``mega reconstruct``: photo or clip → runtime → animated scene → export, in one command (real runtime)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)
cv2 = pytest.importorskip("cv2", reason="the clip is written with opencv (installed with the runtime)")

from mega_blender import animation, batch, scene_build  # noqa: E402

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


def _clip(assets_dir, tmp_path, frames=8):
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 24, (small.shape[1], small.shape[0]))
    for i in range(frames):
        writer.write(np.roll(small, 2 * i, axis=1))  # the person moves right
    writer.release()
    return video


def _args(small_checkpoints, *extra):
    runtime = shlex.join([sys.executable, "-m", "mega_runtime"])
    return [
        "--runtime",
        runtime,
        "--checkpoint-dir",
        str(small_checkpoints),
        "--model",
        "resnet",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_ok_clip_to_animated_blend_in_one_command(blender, small_checkpoints, assets_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEGA_ASSETS_DIR", str(assets_dir))
    video = _clip(assets_dir, tmp_path)
    out = tmp_path / "walk.blend"
    report_path = tmp_path / "report.json"
    argv = ["reconstruct", str(video), "--export", str(out), "--report", str(report_path), "--hypotheses", "2"]
    argv += ["--path", "coherent", "--smooth"]
    assert batch.main([*argv, *_args(small_checkpoints)]) == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] and str(out) in report["files"]
    assert any(f.endswith(".pc2") for f in report["files"]) and any(f.endswith(".json") for f in report["files"])
    bpy.ops.wm.open_mainfile(filepath=str(out))
    people = [o for o in bpy.data.objects if scene_build.is_person(o)]
    assert len(people) == 1 and animation.is_animated(people[0])
    assert (bpy.context.scene.frame_start, bpy.context.scene.frame_end, bpy.context.scene.render.fps) == (1, 8, 24)
    result_json = next(f for f in report["files"] if f.endswith(".json"))
    temporal = json.loads(Path(result_json).read_text())["temporal"]
    assert temporal["path"] == "coherent" and temporal["smooth"]
    person = temporal["people"][0]
    assert person["jitter_smoothed_m_s2"] <= person["jitter_path_m_s2"]


def test_ng_runtime_that_cannot_run_fails_with_one_line(blender, small_checkpoints, assets_dir, tmp_path, capsys):
    photo = assets_dir / "images" / PHOTO
    out = tmp_path / "x.glb"
    code = batch.main(["reconstruct", str(photo), "--export", str(out), "--runtime", "/nonexistent/python -m x"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot start the runtime '/nonexistent/python'" in err
    assert not out.exists()


def test_ng_missing_media_is_refused_before_starting_anything(blender, tmp_path, capsys):
    code = batch.main(["reconstruct", str(tmp_path / "nope.mp4"), "--export", str(tmp_path / "o.blend")])
    assert code == 1 and "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_ok_clip_with_an_smpl_model_gets_an_armature_per_person(
    blender, small_checkpoints, assets_dir, tmp_path, monkeypatch
):
    pytest.importorskip("smplx", reason="SMPL fitting needs smplx (pip install -e '.[smpl]')")
    from mega_blender import armature
    from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl

    monkeypatch.setenv("MEGA_ASSETS_DIR", str(assets_dir))
    model = write_synthetic_smpl(tmp_path / "SMPL_SYNTHETIC.npz", synthetic_smpl_arrays())
    video = _clip(assets_dir, tmp_path, frames=6)
    out = tmp_path / "rig.blend"
    argv = ["reconstruct", str(video), "--export", str(out), "--hypotheses", "1", "--smpl-model", str(model)]
    assert batch.main([*argv, *_args(small_checkpoints)]) == 0
    bpy.ops.wm.open_mainfile(filepath=str(out))
    rigs = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(rigs) == 1 and {b.name for b in rigs[0].data.bones} == set(armature.JOINT_NAMES)
    body = next(o for o in bpy.data.objects if o.name.startswith("MEGA SMPL Body"))
    assert len(body.vertex_groups) == 24 and body.modifiers["SMPL"].object == rigs[0]
