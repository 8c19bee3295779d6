"""Importing a result in real Blender: one object per person, the faces, Basis and shape keys in log-likelihood
order, the hypothesis picker and its drivers, keyframed choices, uncertainty attributes, colours and toggle.

The ``arrays`` and ``result_path`` fixtures are in ``conftest.py``; the other import tests are ``test_import_*.py``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import operators, scene_build  # noqa: E402
from mega_blender.result_reader import hypothesis_order  # noqa: E402
from tests.blender.helpers import counts, key_vertices, local_vertices, world_vertices  # noqa: E402
from tests.blender.import_helpers import NUM_HYPOTHESES, NUM_PEOPLE  # noqa: E402
from tests.blender.import_helpers import import_result as _import  # noqa: E402
from tests.blender.import_helpers import people as _people  # noqa: E402
from tests.blender.import_helpers import world as _world  # noqa: E402


def _show(obj, value: int) -> None:
    obj[scene_build.HYPOTHESIS_PROP] = value
    obj.update_tag()  # setting an ID property from Python does not tag the depsgraph by itself
    bpy.context.view_layer.update()


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
