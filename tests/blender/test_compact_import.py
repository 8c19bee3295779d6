"""Compact results (format 2.0) in real Blender: a video imports animated with every hypothesis pickable and a
photo with every hypothesis as a shape key, each within 1 mm of the float32 meshes the runtime encoded."""

from __future__ import annotations

import numpy as np
import pytest

from mega_runtime.io.result import Result, write_result
from tests.blender.conftest import BPY_SKIP_REASON
from tests.blender.helpers import world_vertices
from tests.blender.make_result import make_arrays, make_meta
from tests.runtime.synthetic_bodies import make_video

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import coords, scene_build  # noqa: E402

ONE_MM = 1e-3


def _compact_result(tmp_path, frames: int, hypotheses: int):
    arrays = make_arrays(num_people=1, num_hypotheses=hypotheses, num_frames=frames, seed=5)
    video = make_video(frames, 1, hypotheses, seed=5)
    arrays.update(vertices=video["vertices"], rotation=video["rotation"], cam_t=video["cam_t"])
    meta = make_meta(width_px=160, height_px=120, source_path=None)
    if frames > 1:
        meta["source"].update(kind="video", fps=25.0, frame_start=0, frame_step=1)
    json_path, _ = write_result(Result(meta=meta, arrays=arrays), tmp_path / "compact", compact=True)
    return json_path, arrays["vertices"]


def _person():
    return next(o for o in bpy.data.objects if scene_build.is_person(o))


def _error(obj, expected) -> float:
    world = coords.opencv_to_blender_world(np.asarray(expected, np.float64))
    return float(np.linalg.norm(world_vertices(obj) - world, axis=-1).max())


def test_ok_compact_video_imports_with_every_hypothesis_pickable_within_1_mm(blender, tmp_path):
    path, vertices = _compact_result(tmp_path, frames=4, hypotheses=3)
    assert bpy.ops.mega.import_result(filepath=str(path)) == {"FINISHED"}
    obj, scene = _person(), bpy.context.scene
    for frame in (1, 4):
        for hypothesis in range(3):
            obj[scene_build.HYPOTHESIS_PROP] = hypothesis
            scene.frame_set(frame)
            assert _error(obj, vertices[frame - 1, 0, hypothesis]) <= ONE_MM, (frame, hypothesis)


def test_ok_compact_photo_imports_with_every_hypothesis_as_a_shape_key_within_1_mm(blender, tmp_path):
    path, vertices = _compact_result(tmp_path, frames=1, hypotheses=3)
    assert bpy.ops.mega.import_result(filepath=str(path)) == {"FINISHED"}
    obj = _person()
    assert _error(obj, vertices[0, 0, 0]) <= ONE_MM  # the Basis: hypothesis 0
    assert len(obj.data.shape_keys.key_blocks) == 3
