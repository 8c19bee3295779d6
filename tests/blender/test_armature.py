"""SMPL armatures from fitted results: bones, hierarchy, keyed rotations, and a skinned body that poses exactly
like linear blend skinning computed here in numpy (synthetic fit: no SMPL model file is needed or bundled)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON
from tests.blender.helpers import counts, world_vertices
from tests.blender.make_result import make_arrays, make_meta, write_result

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import armature, coords  # noqa: E402
from mega_blender.result_reader import ResultFormatError, read_result  # noqa: E402


def _rotation(aa):
    angle = np.linalg.norm(aa)
    if angle < 1e-12:
        return np.eye(3)
    k = aa / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _lbs(rest, joints, weights, orient, body_pose, transl):
    """Camera-frame vertices of linear blend skinning along SMPL's tree (no pose correctives)."""
    local = [_rotation(orient)] + [_rotation(r) for r in body_pose]
    world_r, world_t = [None] * 24, [None] * 24
    for j, parent in enumerate(armature.PARENTS):
        if parent < 0:
            world_r[j], world_t[j] = local[j], joints[j] + transl
        else:
            world_r[j] = world_r[parent] @ local[j]
            world_t[j] = world_r[parent] @ (joints[j] - joints[parent]) + world_t[parent]
    out = np.zeros_like(rest)
    for j in range(24):
        out += weights[:, j : j + 1] * ((rest - joints[j]) @ world_r[j].T + world_t[j])
    return out


def _fitted_result(tmp_path, frames=3):
    rng = np.random.default_rng(5)
    arrays = make_arrays(num_people=1, num_hypotheses=2, num_frames=frames)
    arrays["frame_indices"] = np.arange(frames, dtype=np.int32)
    rest = rng.normal(scale=0.3, size=(6890, 3))
    joints = rng.normal(scale=0.3, size=(24, 3))
    weights = rng.random((6890, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    weights = np.round(weights, 4)
    weights /= weights.sum(1, keepdims=True)
    arrays["smpl_rest_vertices"] = rest[None].astype(np.float32)
    arrays["smpl_rest_joints"] = joints[None].astype(np.float32)
    arrays["smpl_weights"] = weights.astype(np.float32)
    arrays["smpl_global_orient"] = rng.normal(scale=0.5, size=(frames, 1, 3)).astype(np.float32)
    arrays["smpl_body_pose"] = rng.normal(scale=0.3, size=(frames, 1, 23, 3)).astype(np.float32)
    arrays["smpl_transl"] = rng.normal(scale=0.5, size=(frames, 1, 3)).astype(np.float32) + np.float32([0, 0, 4])
    meta = make_meta(source_path=None)
    meta["source"].update(kind="video", fps=25.0)
    return arrays, write_result(tmp_path, "fit", arrays, meta)


def test_ok_armature_has_smpls_bones_and_tree(blender, tmp_path):
    _, path = _fitted_result(tmp_path)
    (rig,) = armature.build_armatures(bpy.context, read_result(path))
    bones = rig.data.bones
    assert sorted(b.name for b in bones) == sorted(armature.JOINT_NAMES)
    for joint, parent in zip(armature.JOINT_NAMES, armature.PARENTS, strict=True):
        expected = None if parent < 0 else armature.JOINT_NAMES[parent]
        assert (bones[joint].parent.name if bones[joint].parent else None) == expected
        np.testing.assert_allclose(np.array(bones[joint].matrix_local)[:3, :3], np.eye(3), atol=1e-6)


@pytest.mark.parametrize("frame", [1, 2, 3])
def test_ok_skinned_body_poses_like_linear_blend_skinning(blender, tmp_path, frame):
    arrays, path = _fitted_result(tmp_path)
    armature.build_armatures(bpy.context, read_result(path))
    bpy.context.scene.frame_set(frame)
    body = next(o for o in bpy.data.objects if o.name.startswith("MEGA SMPL Body"))
    f = frame - 1
    expected = _lbs(
        arrays["smpl_rest_vertices"][0].astype(np.float64),
        arrays["smpl_rest_joints"][0].astype(np.float64),
        arrays["smpl_weights"].astype(np.float64),
        arrays["smpl_global_orient"][f, 0].astype(np.float64),
        arrays["smpl_body_pose"][f, 0].astype(np.float64),
        arrays["smpl_transl"][f, 0].astype(np.float64),
    )
    np.testing.assert_allclose(world_vertices(body), coords.opencv_to_blender_world(expected), atol=2e-4)


def test_ok_rotations_are_keyed_on_every_seen_frame(blender, tmp_path):
    _, path = _fitted_result(tmp_path, frames=4)
    (rig,) = armature.build_armatures(bpy.context, read_result(path))
    from mega_blender.operators import _fcurves

    curves = [c for c in _fcurves(rig) if c.data_path.endswith("rotation_quaternion")]
    assert len(curves) == 24 * 4 and all(len(c.keyframe_points) == 4 for c in curves)


def test_ng_result_without_a_fit_is_refused_and_creates_nothing(blender, tmp_path):
    path = write_result(tmp_path, "plain", make_arrays())
    before = counts(bpy)
    with pytest.raises(ResultFormatError, match="fit-smpl"):
        armature.build_armatures(bpy.context, read_result(path))
    assert counts(bpy) == before


@pytest.mark.parametrize("suffix", [".bvh", ".fbx"])
def test_ok_batch_exports_the_armature_animation(blender, tmp_path, suffix):
    from mega_blender import batch

    _, path = _fitted_result(tmp_path, frames=4)
    out = tmp_path / f"rig{suffix}"
    assert batch.main(["import", str(path), "--export", str(out)]) == 0
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if suffix == ".bvh":
        text = out.read_text()
        assert "ROOT pelvis" in text and "JOINT right_hand" in text and "Frames: 4" in text
    else:
        bpy.ops.import_scene.fbx(filepath=str(out))
        (rig,) = [o for o in bpy.data.objects if o.type == "ARMATURE"]
        assert {b.name for b in rig.data.bones} >= set(armature.JOINT_NAMES)
        assert rig.animation_data is not None and rig.animation_data.action is not None


def test_ng_bvh_without_an_armature_fails_with_the_fix(blender, tmp_path, capsys):
    from mega_blender import batch

    path = write_result(tmp_path, "plain", make_arrays())
    assert batch.main(["import", str(path), "--export", str(tmp_path / "x.bvh")]) == 1
    assert "fit SMPL first" in capsys.readouterr().err
