"""Importing results in real Blender: one scene per photo (never touching the user's scene), and the camera:
intrinsics, projection, the background photo and where it is found, runtime warnings, the camera-view toggle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import coords, operators, scene_build  # noqa: E402
from mega_blender.result_reader import read_result  # noqa: E402
from tests.blender.helpers import execute_import, world_vertices  # noqa: E402
from tests.blender.import_helpers import NUM_PEOPLE  # noqa: E402
from tests.blender.import_helpers import import_result as _import  # noqa: E402
from tests.blender.import_helpers import people as _people  # noqa: E402
from tests.blender.make_result import make_arrays, make_meta, write_photo, write_result  # noqa: E402

# --- one scene per photo -------------------------------------------------------------------------------------


def _photo_result(folder: Path, name: str, width: int, height: int, seed: int) -> Path:
    photo = write_photo(folder / f"{name}.png", width, height)
    arrays = make_arrays(num_people=NUM_PEOPLE, num_hypotheses=2, seed=seed)
    return write_result(folder, name, arrays, make_meta(width, height, source_path=str(photo)))


def _scene_of(obj) -> list[str]:
    return [scene.name for scene in bpy.data.scenes if obj.name in scene.objects]


def test_ok_two_photos_get_two_scenes_each_with_its_own_camera(blender, tmp_path):
    first = _photo_result(tmp_path, "first", 640, 480, seed=1)
    second = _photo_result(tmp_path, "second", 480, 720, seed=2)
    start = bpy.context.scene
    assert _import(first) == {"FINISHED"}
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(second))
    assert result == {"FINISHED"}
    assert any("new scene 'second.png'" in message for _, message in reports)
    assert len(bpy.data.scenes) == 2
    other = bpy.data.scenes["second.png"]
    assert start.camera.name == "first.png Camera"
    assert other.camera.name == "second.png Camera"
    assert (other.render.resolution_x, other.render.resolution_y) == (480, 720)
    assert (start.render.resolution_x, start.render.resolution_y) == (640, 480)
    people = {p.name: _scene_of(p) for p in _people()}
    assert people == {
        "first.png Person 1": [start.name],
        "first.png Person 2": [start.name],
        "second.png Person 1": ["second.png"],
        "second.png Person 2": ["second.png"],
    }
    assert [o for o in other.objects if o.select_get(view_layer=other.view_layers[0])] == [
        o for o in other.objects if scene_build.is_person(o)
    ]
    if bpy.context.window is not None:  # the UI shows the new scene
        assert bpy.context.window.scene == other


def test_ok_same_photo_again_stays_in_its_scene(blender, result_path):
    assert _import(result_path) == {"FINISHED"}
    assert _import(result_path) == {"FINISHED"}
    assert len(bpy.data.scenes) == 1
    assert len(_people()) == 2 * NUM_PEOPLE


def test_ok_new_scene_never_touches_the_users_scene_objects(blender, tmp_path):
    start = bpy.context.scene
    user_camera = bpy.data.objects.new("My Camera", bpy.data.cameras.new("My Camera"))
    start.collection.objects.link(user_camera)
    start.camera = user_camera
    assert _import(_photo_result(tmp_path, "a", 640, 480, seed=1)) == {"FINISHED"}
    assert start.camera.name == "a.png Camera"  # the first photo's import makes its camera the scene's
    assert _import(_photo_result(tmp_path, "b", 640, 480, seed=2)) == {"FINISHED"}
    assert start.camera.name == "a.png Camera"
    assert bpy.data.objects["My Camera"] == user_camera and user_camera.name in start.objects
    assert user_camera.name not in bpy.data.scenes["b.png"].objects


def test_ok_failed_import_into_a_new_scene_removes_the_scene(blender, tmp_path, monkeypatch):
    assert _import(_photo_result(tmp_path, "a", 640, 480, seed=1)) == {"FINISHED"}

    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(scene_build, "link_into_scene", broken)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        scene_build.build_result(bpy.context, read_result(_photo_result(tmp_path, "b", 640, 480, seed=2)))
    assert [s.name for s in bpy.data.scenes] == [bpy.context.scene.name]


# --- camera ------------------------------------------------------------------------------------------------


def test_ok_camera_matches_the_result(blender, tmp_path, arrays):
    width, height, focal, principal = 480, 720, 1234.5, (250.0, 340.0)  # portrait, off-centre principal point
    photo = write_photo(tmp_path / "portrait.png", width, height)
    path = write_result(tmp_path, "portrait", arrays, make_meta(width, height, focal, principal, str(photo)))
    _import(path)
    scene = bpy.context.scene
    camera = scene.camera
    assert camera.name == "portrait.png Camera"
    expected = coords.camera_intrinsics(width, height, focal, principal)
    data = camera.data
    assert data.lens == pytest.approx(expected.lens_mm, rel=1e-6)
    assert data.sensor_width == pytest.approx(expected.sensor_width_mm, rel=1e-6)
    assert data.sensor_height == pytest.approx(expected.sensor_height_mm, rel=1e-6)
    assert data.sensor_fit == expected.sensor_fit == "VERTICAL"
    assert data.shift_x == pytest.approx(expected.shift_x, abs=1e-7)
    assert data.shift_y == pytest.approx(expected.shift_y, abs=1e-7)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
    assert scene.render.resolution_percentage == 100
    assert tuple(camera.location) == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(tuple(camera.rotation_euler), coords.camera_rotation_euler(), atol=1e-7)
    assert data.show_background_images
    (background,) = data.background_images
    assert Path(bpy.path.abspath(background.image.filepath)) == photo
    assert tuple(background.image.size) == (width, height)


def test_ok_meshes_project_onto_the_people_in_camera_view(blender, tmp_path, arrays):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    width, height, focal, principal = 800, 600, 900.0, (410.0, 290.0)
    path = write_result(tmp_path, "photo", arrays, make_meta(width, height, focal, principal, None))
    _import(path)
    scene = bpy.context.scene
    obj = _people()[1]
    world = world_vertices(obj)[:200]
    pinhole = coords.project_pinhole(arrays["vertices"][0, 1, 0, :200], focal, principal)
    for point, expected in zip(world, pinhole, strict=True):
        ndc = world_to_camera_view(scene, scene.camera, Vector(point))
        pixel = (ndc.x * width, (1.0 - ndc.y) * height)
        np.testing.assert_allclose(pixel, expected, atol=5e-3)


def test_ok_result_path_is_stored_absolute_when_imported_by_a_relative_path(blender, tmp_path, arrays, monkeypatch):
    write_result(tmp_path, "photo", arrays, make_meta(source_path=None))
    monkeypatch.chdir(tmp_path)
    assert _import(Path("photo.json")) == {"FINISHED"}
    stored = [obj["mega_result_path"] for obj in [bpy.context.scene.camera, *_people()]]
    assert stored and all(Path(s).is_absolute() and Path(s) == tmp_path / "photo.json" for s in stored)


def test_ok_runtime_warnings_are_reported_on_import(blender, tmp_path, arrays):
    meta = make_meta(source_path=None)
    meta["warnings"] = ["person 1 is behind the camera: its box or crop is probably wrong"]
    path = write_result(tmp_path, "photo", arrays, meta)
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(path))
    assert result == {"FINISHED"}
    warnings = [message for kind, message in reports if kind == {"WARNING"}]
    assert any("person 1 is behind the camera" in m for m in warnings), reports


def test_ok_missing_photo_warns_and_imports(blender, tmp_path, arrays):
    path = write_result(tmp_path, "photo", arrays, make_meta(source_path=str(tmp_path / "gone.jpg")))
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(path))
    assert result == {"FINISHED"}
    warnings = [message for kind, message in reports if kind == {"WARNING"}]
    assert any("was not found" in m and "gone.jpg" in m for m in warnings)
    assert len(bpy.context.scene.camera.data.background_images) == 0


def test_ok_photo_beside_the_result_is_found_by_name(blender, tmp_path, arrays):
    write_photo(tmp_path / "shot.png")
    path = write_result(tmp_path, "photo", arrays, make_meta(source_path="/elsewhere/shot.png"))
    _import(path)
    assert bpy.context.scene.camera.data.background_images[0].image is not None


def test_ok_relative_photo_path_is_found_from_the_folder_above_the_result(blender, tmp_path, arrays):
    (tmp_path / "photos").mkdir()
    write_photo(tmp_path / "photos" / "shot.png")
    path = write_result(tmp_path / "out", "shot", arrays, make_meta(source_path="photos/shot.png"))
    _import(path)
    image = bpy.context.scene.camera.data.background_images[0].image
    assert Path(bpy.path.abspath(image.filepath)) == tmp_path / "photos" / "shot.png"


def test_ok_camera_view_toggle_looks_through_the_mega_camera(blender, result_path):
    _import(result_path)
    area = next(a for a in bpy.context.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    space = area.spaces.active
    bpy.context.scene.camera = None
    with bpy.context.temp_override(area=area, region=region, space_data=space):
        assert bpy.ops.mega.view_camera() == {"FINISHED"}
        assert space.region_3d.view_perspective == "CAMERA"
        assert bpy.context.scene.camera.name == "photo.png Camera"
        assert bpy.ops.mega.view_camera() == {"FINISHED"}
        assert space.region_3d.view_perspective == "PERSP"


def test_ok_rotation_is_a_quarter_turn_about_x():
    assert coords.camera_rotation_euler() == (math.pi / 2, 0.0, 0.0)
