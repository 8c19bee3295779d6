"""Video results as animated people in real Blender: point cache + Mesh Cache modifier, the hypothesis picker
per frame, hidden gaps, colours that follow the frame, the clip behind the camera, batch exports."""

from __future__ import annotations

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON
from tests.blender.helpers import counts, world_vertices
from tests.blender.make_result import make_arrays, make_meta, write_result

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)
cv2 = pytest.importorskip("cv2", reason="the clip is written with opencv (installed with the runtime)")

from mega_blender import animation, batch, coords, scene_build  # noqa: E402


def _world(points):
    return coords.opencv_to_blender_world(np.asarray(points, np.float64))


def _people():
    return sorted((o for o in bpy.data.objects if scene_build.is_person(o)), key=lambda o: o["mega_person"])


def _video_result(tmp_path, frames=(10, 11, 12, 13, 14, 15), num_people=2, num_hypotheses=3, fps=25.0, clip=True):
    arrays = make_arrays(num_people=num_people, num_hypotheses=num_hypotheses, num_frames=len(frames), seed=3)
    arrays["frame_indices"] = np.asarray(frames, np.int32)
    drift = np.linspace(0, 0.5, len(frames), dtype=np.float32)[:, None, None, None, None]
    arrays["vertices"] = arrays["vertices"] + drift * np.array([1, 0, 0], np.float32)  # they walk right
    meta = make_meta(width_px=160, height_px=120, source_path=None)
    meta["source"].update(kind="video", fps=fps, frame_start=frames[0], frame_step=1)
    if clip:
        video = tmp_path / "clip.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
        for i in range(frames[-1] + 1):
            writer.write(np.full((120, 160, 3), i * 10 % 255, np.uint8))
        writer.release()
        meta["source"]["path"] = str(video)
    return arrays, meta


def _import(path, **options):
    return bpy.ops.mega.import_result(filepath=str(path), **options)


def test_ok_video_imports_as_one_animated_object_per_person_that_follows_the_frames(blender, tmp_path):
    arrays, meta = _video_result(tmp_path)
    path = write_result(tmp_path, "clip", arrays, meta)
    assert _import(path) == {"FINISHED"}
    people = _people()
    assert [p.name for p in people] == ["MEGA Person 1", "MEGA Person 2"]
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1, 6, 25)
    for frame in (1, 4, 6):
        scene.frame_set(frame)
        for p, obj in enumerate(people):
            expected = _world(arrays["vertices"][frame - 1, p, 0])
            np.testing.assert_allclose(world_vertices(obj), expected, atol=1e-5)
    modifier = people[0].modifiers[animation.MODIFIER_NAME]
    assert modifier.type == "MESH_CACHE" and modifier.cache_format == "PC2"
    driver = people[0].animation_data.drivers[0].driver
    assert driver.is_simple_expression  # works with Python auto-run off


def test_ok_picker_shows_the_hypothesis_of_the_current_frame_and_can_be_keyframed(blender, tmp_path):
    arrays, meta = _video_result(tmp_path)
    _import(write_result(tmp_path, "clip", arrays, meta))
    obj = _people()[0]
    scene = bpy.context.scene
    obj[scene_build.HYPOTHESIS_PROP] = 2
    obj.keyframe_insert(f'["{scene_build.HYPOTHESIS_PROP}"]', frame=3)
    obj[scene_build.HYPOTHESIS_PROP] = 0
    obj.keyframe_insert(f'["{scene_build.HYPOTHESIS_PROP}"]', frame=5)
    scene.frame_set(3)
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][2, 0, 2]), atol=1e-5)
    scene.frame_set(5)
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][4, 0, 0]), atol=1e-5)


def test_ok_gaps_are_hidden_and_hold_the_nearest_seen_shape(blender, tmp_path):
    arrays, meta = _video_result(tmp_path)
    arrays["valid"][2:4, 1] = False
    arrays["vertices"][2:4, 1] = 0.0  # what the runtime stores for unseen frames
    _import(write_result(tmp_path, "clip", arrays, meta))
    obj = _people()[1]
    scene = bpy.context.scene
    hidden = {}
    for frame in range(1, 7):
        scene.frame_set(frame)
        hidden[frame] = obj.hide_render
    assert hidden == {1: False, 2: False, 3: True, 4: True, 5: False, 6: False}
    # hidden objects are not evaluated: read the cache sample of scene frame 3 (S = 3 samples per frame)
    from mega_blender.pointcache import read_pc2

    cache = read_pc2(tmp_path / "clip cache" / "clip_MEGA_Person_2.pc2")
    held = np.asarray(cache[2 * 3]) + np.asarray(obj.location, np.float32)
    np.testing.assert_allclose(held, _world(arrays["vertices"][1, 1, 0]), atol=1e-5)


def test_ok_uncertainty_colours_follow_the_frame(blender, tmp_path):
    arrays, meta = _video_result(tmp_path)
    _import(write_result(tmp_path, "clip", arrays, meta))
    obj = _people()[0]
    for frame in (2, 5):
        bpy.context.scene.frame_set(frame)
        values = np.empty(6890, np.float32)
        obj.data.attributes[scene_build.UNCERTAINTY_ATTRIBUTE].data.foreach_get("value", values)
        np.testing.assert_array_equal(values, arrays["vertex_std"][frame - 1, 0])


def test_ok_coherent_path_and_smoothed_vertices_are_what_plays(blender, tmp_path):
    arrays, meta = _video_result(tmp_path, num_people=1)
    arrays["path"] = np.array([[0], [2], [1], [1], [2], [0]], np.int16)
    _import(write_result(tmp_path, "clip", arrays, meta))
    obj = _people()[0]
    bpy.context.scene.frame_set(2)
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][1, 0, 2]), atol=1e-5)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    import addon_utils

    addon_utils.enable("mega_blender", default_set=True)
    arrays["smoothed_vertices"] = arrays["vertices"][:, :, 0] + np.float32(0.01)
    _import(write_result(tmp_path, "smooth", arrays, meta))
    bpy.context.scene.frame_set(4)
    np.testing.assert_allclose(world_vertices(_people()[0]), _world(arrays["smoothed_vertices"][3, 0]), atol=1e-5)


def test_ok_frame_step_holds_the_last_processed_frame_and_the_clip_is_in_sync(blender, tmp_path):
    arrays, meta = _video_result(tmp_path, frames=(4, 6, 8), num_people=1)
    _import(write_result(tmp_path, "clip", arrays, meta))
    scene, obj = bpy.context.scene, _people()[0]
    assert (scene.frame_start, scene.frame_end) == (1, 5)
    scene.frame_set(2)  # source frame 5: not processed, holds frame 4
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][0, 0, 0]), atol=1e-5)
    camera = next(o for o in bpy.data.objects if o.type == "CAMERA")
    background = camera.data.background_images[0]
    assert background.source == "MOVIE_CLIP"
    assert background.clip.frame_start == 1 - 4  # scene frame 1 shows source frame 4


def test_ok_caches_never_replace_existing_files(blender, tmp_path):
    arrays, meta = _video_result(tmp_path, num_people=1)
    path = write_result(tmp_path, "clip", arrays, meta)
    cache_dir = animation.default_cache_dir(__import__("mega_blender.result_reader").result_reader.read_result(path))
    cache_dir.mkdir()
    mine = cache_dir / "clip_MEGA_Person_1.pc2"
    mine.write_bytes(b"the user's file")
    _import(path)
    assert mine.read_bytes() == b"the user's file"
    assert _people()[0].modifiers[animation.MODIFIER_NAME].filepath.endswith("clip_MEGA_Person_1-2.pc2")


def test_ok_photo_results_are_unchanged_by_animation(blender, tmp_path):
    arrays = make_arrays(num_people=1, num_hypotheses=3)
    before = counts(bpy)
    _import(write_result(tmp_path, "photo", arrays))
    assert not _people()[0].modifiers and counts(bpy)["shape_keys"] == before["shape_keys"] + 1


@pytest.mark.parametrize("suffix", [".glb", ".abc", ".blend"])
def test_ok_batch_exports_an_animated_video(blender, tmp_path, suffix):
    arrays, meta = _video_result(tmp_path, num_people=1)
    path = write_result(tmp_path, "clip", arrays, meta)
    out = tmp_path / f"anim{suffix}"
    assert batch.main(["import", str(path), "--export", str(out), "--report", str(tmp_path / "r.json")]) == 0
    report = __import__("json").loads((tmp_path / "r.json").read_text())
    assert any(f.endswith(".pc2") for f in report["files"])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(out))
        (obj,) = [o for o in bpy.data.objects if o.type == "MESH"]
        keys = obj.data.shape_keys
        assert len(keys.key_blocks) == 1 + 6  # Basis + a morph target per frame
        assert keys.animation_data is not None and keys.animation_data.action is not None
    elif suffix == ".abc":
        scene = bpy.context.scene
        scene.render.fps = 25  # Alembic stores times: read them back at the clip's rate
        bpy.ops.wm.alembic_import(filepath=str(out))
        (obj,) = [o for o in bpy.data.objects if o.type == "MESH"]
        positions = []
        for frame in (1, 6):
            scene.frame_set(frame)
            positions.append(world_vertices(obj).mean(axis=0))
        assert positions[1][0] - positions[0][0] == pytest.approx(0.5, abs=1e-3)  # walked 0.5 m right
    else:
        bpy.ops.wm.open_mainfile(filepath=str(out))
        import addon_utils

        addon_utils.enable("mega_blender", default_set=True)
        obj = _people()[0]
        bpy.context.scene.frame_set(6)
        np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][5, 0, 0]), atol=1e-5)
