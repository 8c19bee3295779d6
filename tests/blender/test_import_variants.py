"""Importing variants of results in real Blender: written by the runtime (also from a shared photo), without
people, a person not seen, a video, a single hypothesis; the user's data untouched; the import as one undo step."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON, REPO_ROOT

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import coords, operators, scene_build  # noqa: E402
from tests.blender.helpers import counts, execute_import, world_vertices  # noqa: E402
from tests.blender.import_helpers import NUM_HYPOTHESES, NUM_PEOPLE  # noqa: E402
from tests.blender.import_helpers import import_result as _import  # noqa: E402
from tests.blender.import_helpers import people as _people  # noqa: E402
from tests.blender.import_helpers import world as _world  # noqa: E402
from tests.blender.make_result import make_arrays, make_meta, write_result  # noqa: E402


def _node_names(material) -> list[str] | None:
    """The material's shader node names, or None without a node tree (what a new material has before 5.0)."""
    tree = material.node_tree
    return None if tree is None else sorted(n.name for n in tree.nodes)


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
