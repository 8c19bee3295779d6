"""Importing results in real Blender: objects, shape keys, the hypothesis picker, colours, camera, failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON, REPO_ROOT

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import coords, operators, scene_build  # noqa: E402
from mega_blender.result_reader import hypothesis_order, read_result  # noqa: E402
from tests.blender.helpers import (  # noqa: E402
    counts,
    execute_import,
    key_vertices,
    local_vertices,
    world_vertices,
)
from tests.blender.make_result import (  # noqa: E402
    make_arrays,
    make_meta,
    write_photo,
    write_result,
)

NUM_PEOPLE = 2
NUM_HYPOTHESES = 5


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    return make_arrays(num_people=NUM_PEOPLE, num_hypotheses=NUM_HYPOTHESES, seed=1)


@pytest.fixture
def result_path(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    photo = write_photo(tmp_path / "photo.png", 640, 480)
    return write_result(tmp_path, "photo", arrays, make_meta(640, 480, source_path=str(photo)))


def _import(path: Path, **options) -> set[str]:
    return bpy.ops.mega.import_result(filepath=str(path), **options)


def _people() -> list:
    return sorted((o for o in bpy.data.objects if scene_build.is_person(o)), key=lambda o: o["mega_person"])


def _world(points: np.ndarray) -> np.ndarray:
    return coords.opencv_to_blender_world(points.astype(np.float64))


def _show(obj, value: int) -> None:
    obj[scene_build.HYPOTHESIS_PROP] = value
    obj.update_tag()  # setting an ID property from Python does not tag the depsgraph by itself
    bpy.context.view_layer.update()


def _node_names(material) -> list[str] | None:
    """The material's shader node names, or None without a node tree (what a new material has before 5.0)."""
    tree = material.node_tree
    return None if tree is None else sorted(n.name for n in tree.nodes)


# --- what an import makes ---------------------------------------------------------------------------------


def test_ok_import_builds_one_object_per_person(blender, result_path):
    before = counts(bpy)
    assert _import(result_path) == {"FINISHED"}
    after = counts(bpy)
    assert after["objects"] - before["objects"] == NUM_PEOPLE + 1  # people + camera
    assert after["collections"] - before["collections"] == 1
    assert after["materials"] - before["materials"] == 1
    people = _people()
    assert [o.name for o in people] == ["photo.png Person 1", "photo.png Person 2"]
    collection = people[0].users_collection[0]
    assert collection.name == "MEGA photo.png"
    assert collection.name in bpy.context.scene.collection.children
    assert {o.name for o in collection.objects} == {"photo.png Person 1", "photo.png Person 2", "photo.png Camera"}
    for obj in people:
        mesh = obj.data
        assert len(mesh.vertices) == 6890
        assert len(mesh.polygons) == 13776
        assert all(p.loop_total == 3 for p in mesh.polygons[:10])
        assert mesh.polygons[0].use_smooth
        keys = mesh.shape_keys.key_blocks
        assert len(keys) == NUM_HYPOTHESES  # Basis + H−1
        assert [k.name for k in keys] == ["Basis"] + [f"Hypothesis {k:02d}" for k in range(1, NUM_HYPOTHESES)]
        assert obj.material_slots[0].material.name.startswith("MEGA Uncertainty")
    assert bpy.context.view_layer.objects.active == people[0]
    assert all(o.select_get() for o in people)


def test_ok_faces_are_the_results_triangles(blender, result_path, arrays):
    _import(result_path)
    mesh = _people()[0].data
    corners = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", corners)
    np.testing.assert_array_equal(corners.reshape(-1, 3), arrays["faces"])


def test_ok_basis_and_keys_hold_the_hypotheses_by_log_likelihood(blender, result_path, arrays):
    _import(result_path)
    for p, obj in enumerate(_people()):
        order = hypothesis_order(arrays["log_likelihood"][0, p])
        location = np.array(obj.location)
        np.testing.assert_allclose(location, _world(arrays["cam_t"][0, p, 0]), atol=1e-6)
        keys = obj.data.shape_keys.key_blocks
        expected = _world(arrays["vertices"][0, p, 0])
        np.testing.assert_allclose(local_vertices(obj.data) + location, expected, atol=1e-5)
        np.testing.assert_allclose(key_vertices(keys[0]) + location, expected, atol=1e-5)
        for rank, hypothesis in enumerate(order, start=1):
            np.testing.assert_allclose(
                key_vertices(keys[rank]) + location, _world(arrays["vertices"][0, p, hypothesis]), atol=1e-5
            )
        picker = [0, *order]
        assert list(obj[scene_build.SOURCE_HYPOTHESIS_PROP]) == picker
        np.testing.assert_allclose(
            list(obj[scene_build.LOG_LIKELIHOOD_PROP]), arrays["log_likelihood"][0, p, picker], rtol=1e-6
        )
        ranked = list(obj[scene_build.LOG_LIKELIHOOD_PROP])[1:]
        assert ranked == sorted(ranked, reverse=True)
        assert obj["mega_track_id"] == p
        assert obj[scene_build.HYPOTHESIS_PROP] == 0


@pytest.mark.parametrize("value", range(NUM_HYPOTHESES))
def test_ok_picker_drives_exactly_one_key(blender, result_path, arrays, value):
    _import(result_path)
    obj = _people()[1]
    _show(obj, value)
    values = [k.value for k in obj.data.shape_keys.key_blocks[1:]]
    assert values == [1.0 if k == value else 0.0 for k in range(1, NUM_HYPOTHESES)]
    hypothesis = list(obj[scene_build.SOURCE_HYPOTHESIS_PROP])[value]
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][0, 1, hypothesis]), atol=1e-5)


def test_ok_drivers_are_simple_expressions_that_need_no_python(blender, result_path):
    _import(result_path)
    obj = _people()[0]
    drivers = obj.data.shape_keys.animation_data.drivers
    assert len(drivers) == NUM_HYPOTHESES - 1
    for fcurve in drivers:
        driver = fcurve.driver
        rank = int(fcurve.data_path.split('"')[1].split()[-1])
        assert driver.expression == f"h == {rank}"
        assert driver.is_simple_expression and driver.is_valid
        (variable,) = driver.variables
        assert variable.type == "SINGLE_PROP"
        assert variable.targets[0].id == obj
        assert variable.targets[0].data_path == '["mega_hypothesis"]'
    assert not bpy.context.preferences.filepaths.use_scripts_auto_execute  # Python drivers would be off here


def test_ok_keyframed_hypothesis_animates_the_choice(blender, result_path):
    _import(result_path)
    obj = _people()[0]
    scene = bpy.context.scene
    for frame, value in ((1, 2), (10, 4), (20, 0)):
        scene.frame_set(frame)
        obj[scene_build.HYPOTHESIS_PROP] = value
        assert bpy.ops.mega.keyframe_hypothesis() == {"FINISHED"}
    fcurves = [fc for fc in operators._fcurves(obj) if fc.data_path == '["mega_hypothesis"]']
    assert len(fcurves) == 1
    assert {p.interpolation for p in fcurves[0].keyframe_points} == {"CONSTANT"}
    for frame, shown in ((1, 2), (5, 2), (10, 4), (15, 4), (25, 0)):
        scene.frame_set(frame)
        values = [k.value for k in obj.data.shape_keys.key_blocks[1:]]
        assert values == [1.0 if k == shown else 0.0 for k in range(1, NUM_HYPOTHESES)], frame


def test_ok_picker_operators_step_and_reset(blender, result_path):
    _import(result_path)
    obj = _people()[0]
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.mega.step_hypothesis(step=-1) == {"FINISHED"}
    assert obj[scene_build.HYPOTHESIS_PROP] == NUM_HYPOTHESES - 1  # wraps around
    assert bpy.ops.mega.step_hypothesis(step=1) == {"FINISHED"}
    assert obj[scene_build.HYPOTHESIS_PROP] == 0
    assert bpy.ops.mega.set_hypothesis(index=3) == {"FINISHED"}
    bpy.context.view_layer.update()
    assert obj.data.shape_keys.key_blocks[3].value == 1.0
    assert bpy.ops.mega.most_likely_hypothesis() == {"FINISHED"}
    assert obj[scene_build.HYPOTHESIS_PROP] == 0
    bpy.context.view_layer.objects.active = bpy.context.scene.camera
    assert not bpy.ops.mega.step_hypothesis.poll()


def test_ok_uncertainty_attributes_equal_the_stored_std(blender, result_path, arrays):
    _import(result_path)
    people = _people()
    range_m = float(arrays["vertex_std"][0].max())
    for p, obj in enumerate(people):
        mesh = obj.data
        std = arrays["vertex_std"][0, p]
        attribute = mesh.attributes[scene_build.UNCERTAINTY_ATTRIBUTE]
        assert (attribute.domain, attribute.data_type) == ("POINT", "FLOAT")
        values = np.empty(len(mesh.vertices), dtype=np.float32)
        attribute.data.foreach_get("value", values)
        np.testing.assert_array_equal(values, std)
        colors = mesh.color_attributes[scene_build.UNCERTAINTY_COLOR_ATTRIBUTE]
        assert (colors.domain, colors.data_type) == ("POINT", "FLOAT_COLOR")
        assert mesh.color_attributes.active_color_name == colors.name
        assert mesh.color_attributes[mesh.color_attributes.render_color_index].name == colors.name
        rgba = np.empty(len(mesh.vertices) * 4, dtype=np.float32)
        colors.data.foreach_get("color", rgba)
        np.testing.assert_allclose(rgba.reshape(-1, 4), scene_build.uncertainty_colors(std, range_m), atol=1e-6)
        assert obj[scene_build.UNCERTAINTY_RANGE_PROP] == pytest.approx(range_m)
    material = people[0].material_slots[0].material
    assert people[1].material_slots[0].material == material
    base = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled").inputs["Base Color"]
    (link,) = base.links
    assert link.from_node.bl_idname == "ShaderNodeVertexColor"
    assert link.from_node.layer_name == "MEGA Uncertainty"


def test_ok_uncertainty_colours_go_from_blue_to_red():
    colors = scene_build.uncertainty_colors(np.array([0.0, 0.05, 0.1, 0.5], np.float32), 0.1)
    assert colors[0, 2] > colors[0, 0]  # certain: blue
    assert colors[2, 0] > colors[2, 2] and colors[2, 0] > colors[2, 1]  # at the range: red
    np.testing.assert_array_equal(colors[2], colors[3])  # clipped above the range
    assert colors.dtype == np.float32 and colors.shape == (4, 4)


def test_ok_fixed_uncertainty_range_is_used(blender, result_path):
    _import(result_path, uncertainty_range_mm=250.0)
    assert _people()[0][scene_build.UNCERTAINTY_RANGE_PROP] == pytest.approx(0.25)


def test_ok_uncertainty_toggle_switches_solid_view_and_materials(blender, result_path):
    _import(result_path)
    shadings = operators._view3d_shadings(bpy.context)
    assert shadings, "the factory screen has a 3D view"
    for shading in shadings:
        shading.color_type = "OBJECT"
    assert bpy.ops.mega.toggle_uncertainty(show=True) == {"FINISHED"}
    assert operators.uncertainty_shown(bpy.context)
    assert bpy.context.scene.mega.previous_color_type == "OBJECT"
    material = _people()[0].material_slots[0].material
    bsdf = next(n for n in material.node_tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    assert bsdf.inputs["Base Color"].is_linked
    assert bpy.ops.mega.toggle_uncertainty(show=False) == {"FINISHED"}
    assert {s.color_type for s in shadings} == {"OBJECT"}
    assert not bsdf.inputs["Base Color"].is_linked
    assert bpy.ops.mega.toggle_uncertainty(show=True) == {"FINISHED"}
    assert bsdf.inputs["Base Color"].is_linked


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


# --- variants of results ---------------------------------------------------------------------------------


def test_ok_runtime_written_result_imports(blender, tmp_path, arrays):
    result_module = pytest.importorskip("mega_runtime.io.result")
    meta = make_meta()
    for key in ("schema", "version"):
        meta.pop(key)
    json_path, _ = result_module.write_result(result_module.Result(meta=meta, arrays=arrays), tmp_path / "rt")
    assert _import(json_path) == {"FINISHED"}
    assert len(_people()) == NUM_PEOPLE
    assert len(_people()[0].data.shape_keys.key_blocks) == NUM_HYPOTHESES


def test_ok_result_without_people_makes_only_the_camera(blender, tmp_path):
    path = write_result(tmp_path, "empty", make_arrays(num_people=0, num_hypotheses=3))
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(path))
    assert result == {"FINISHED"}
    assert any("no person was found" in message for _, message in reports)
    assert [o.type for o in bpy.data.objects] == ["CAMERA"]
    assert len(bpy.data.materials) == 0


def test_ok_person_not_seen_is_skipped(blender, tmp_path):
    arrays = make_arrays(num_people=3, num_hypotheses=2)
    arrays["valid"][0, 1] = False
    path = write_result(tmp_path, "photo", arrays)
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(path))
    assert result == {"FINISHED"}
    assert [o.name for o in _people()] == ["photo.jpg Person 1", "photo.jpg Person 3"]
    assert any("photo.jpg Person 2 is not seen" in message for _, message in reports)


def test_ok_video_result_builds_the_chosen_frame_and_warns(blender, tmp_path):
    arrays = make_arrays(num_people=1, num_hypotheses=3, num_frames=4)
    arrays["frame_indices"] = np.array([10, 12, 14, 16], np.int32)
    path = write_result(tmp_path, "clip", arrays)
    result, reports = execute_import(operators.MEGA_OT_import_result, bpy.context, str(path), frame=2, animate=False)
    assert result == {"FINISHED"}
    assert any("4 frames" in message and "frame 2" in message for _, message in reports)
    (obj,) = _people()
    assert obj["mega_frame"] == 14
    np.testing.assert_allclose(world_vertices(obj), _world(arrays["vertices"][2, 0, 0]), atol=1e-5)


def test_ok_single_hypothesis_has_no_shape_keys(blender, tmp_path):
    path = write_result(tmp_path, "one", make_arrays(num_people=1, num_hypotheses=1))
    assert _import(path) == {"FINISHED"}
    (obj,) = _people()
    assert obj.data.shape_keys is None
    assert obj[scene_build.HYPOTHESIS_PROP] == 0
    assert scene_build.num_hypotheses(obj) == 1


def test_ok_existing_user_data_is_never_renamed_replaced_or_deleted(blender, result_path):
    scene = bpy.context.scene
    user_mesh = bpy.data.meshes.new("photo.png Person 1")
    user_obj = bpy.data.objects.new("photo.png Person 1", user_mesh)
    user_collection = bpy.data.collections.new("MEGA photo.png")
    scene.collection.children.link(user_collection)
    user_collection.objects.link(user_obj)
    user_material = bpy.data.materials.new("MEGA Uncertainty")
    user_nodes = _node_names(user_material)  # Blender 5.0 gives every new material a node tree, 4.x none
    user_camera = bpy.data.objects.new("photo.png Camera", bpy.data.cameras.new("photo.png Camera"))
    scene.collection.objects.link(user_camera)
    mine = {"objects": user_obj, "meshes": user_mesh, "collections": user_collection, "materials": user_material}
    pointers = {kind: (d.as_pointer(), d.name) for kind, d in mine.items()}
    for _ in range(2):
        assert _import(result_path) == {"FINISHED"}
    for kind, (pointer, name) in pointers.items():
        still = getattr(bpy.data, kind)[name]
        assert still.as_pointer() == pointer, kind
    assert user_obj.data == user_mesh and len(user_mesh.vertices) == 0
    assert list(user_collection.objects) == [user_obj]
    assert _node_names(user_material) == user_nodes and scene_build.MATERIAL_FLAG_PROP not in user_material
    assert bpy.data.objects["photo.png Camera"] == user_camera
    assert len(_people()) == 2 * NUM_PEOPLE
    assert all(o.name != "photo.png Person 1" for o in _people())


# --- undo ---------------------------------------------------------------------------------------------------


def test_ok_import_operator_is_one_undo_step():
    assert operators.MEGA_OT_import_result.bl_options == {"REGISTER", "UNDO"}
    source = (REPO_ROOT / "mega_blender" / "scene_build.py").read_text()
    assert "bpy.ops" not in source  # no nested operator could push undo steps of its own


def test_ok_one_undo_removes_the_import(blender, result_path):
    if not bpy.ops.ed.undo.poll():
        pytest.skip("Blender keeps no undo stack in background mode (bpy module): undo needs the interactive app")
    before = counts(bpy)
    _import(result_path)
    bpy.ops.ed.undo()
    assert counts(bpy) == before


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


def test_ok_rotation_is_a_quarter_turn_about_x():
    assert coords.camera_rotation_euler() == (math.pi / 2, 0.0, 0.0)


@pytest.mark.slow
def test_ok_shared_photo_result_from_the_runtime_imports(blender, tmp_path, assets_dir, small_checkpoints):
    """The issue's 'done when': a result made by `mega-runtime infer` on a shared photo (small test weights,
    written once per session by the ``small_checkpoints`` fixture)."""
    import subprocess
    import sys

    image = assets_dir / "images" / "pexels-labonheure-13020855.jpg"
    assets, weights = assets_dir, small_checkpoints
    command = [sys.executable, "-m", "mega_runtime", "infer", str(image), "--out", str(tmp_path)]
    command += ["--checkpoint-dir", str(weights), "--assets-dir", str(assets), "--model", "resnet"]
    command += ["--hypotheses", "8", "--device", "cpu"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    path = tmp_path / (image.stem + ".json")
    meta = json.loads(path.read_text())
    assert _import(path) == {"FINISHED"}
    people = _people()
    assert len(people) == int(np.load(path.with_suffix(".npz"))["valid"][0].sum()) > 0
    for obj in people:
        assert len(obj.data.shape_keys.key_blocks) == 8
    camera = bpy.context.scene.camera
    assert camera.data.background_images[0].image is not None
    expected = coords.camera_intrinsics(
        meta["source"]["width"], meta["source"]["height"], meta["camera"]["focal_px"],
        tuple(meta["camera"]["principal_point_px"]),
    )  # fmt: skip
    assert camera.data.lens == pytest.approx(expected.lens_mm, rel=1e-6)
