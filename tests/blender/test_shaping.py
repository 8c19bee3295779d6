"""Complete and Generate through the live link, in real Blender with the real runtime and the small seeded
checkpoints: Generate makes one object whose shape keys are the bodies; Complete locks the selected left leg of the
shown hypothesis and adds new hypotheses of the rest as keys, leaving the existing keys as they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON
from tests.blender.helpers import key_vertices, run_jobs

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)
from mega_blender import regions, scene_build, shaping  # noqa: E402

BODIES = 3
NEW = 3


def people() -> list:
    return sorted((o for o in bpy.data.objects if scene_build.is_person(o)), key=lambda o: o.name)


def generate(live) -> object:
    assert bpy.ops.mega.generate(count=BODIES, seed=4, steps=4) == {"FINISHED"}
    run_jobs(live)
    (person,) = people()
    return person


def select_only(obj, vertices: list[int]) -> None:
    flags = np.zeros(len(obj.data.vertices), dtype=bool)
    flags[vertices] = True
    obj.data.vertices.foreach_set("select", flags)


@pytest.mark.slow
def test_ok_generate_then_complete_the_selected_left_leg(live, tmp_path):
    person = generate(live)
    keys = person.data.shape_keys.key_blocks
    assert len(keys) == BODIES  # Basis + 2 keys: the three bodies, one picker entry each
    assert person["mega_hypothesis"] == 0 and len(person["mega_log_likelihood"]) == BODIES
    before = {key.name: key_vertices(key).copy() for key in keys}

    person["mega_hypothesis"] = 2  # complete the third body
    source = key_vertices(keys[2]).copy()
    leg = regions.region_vertices("left_leg")
    select_only(person, leg)
    bpy.context.view_layer.objects.active = person
    assert bpy.ops.mega.complete(region="SELECTED", count=NEW, seed=1) == {"FINISHED"}
    run_jobs(live)
    assert "added 3 completion key(s)" in bpy.context.window_manager.mega.job_status

    keys = person.data.shape_keys.key_blocks
    assert [k.name for k in keys][BODIES:] == ["Completion 01", "Completion 02", "Completion 03"]
    for name, coords in before.items():  # the existing keys are untouched
        np.testing.assert_array_equal(key_vertices(keys[name]), coords)
    mask = np.zeros(6890, bool)
    mask[leg] = True
    moved = np.stack([np.linalg.norm(key_vertices(keys[BODIES + i]) - source, axis=1) for i in range(NEW)])
    ratio = moved[:, mask].mean() / moved[:, ~mask].mean()
    assert ratio < 0.1, ratio  # the bound; pinned, the left leg stays (up to float32 rounding)
    assert moved[:, mask].max() < 1e-5 and moved[:, ~mask].mean() > 1e-3

    # the new keys join the picker and are driven by it
    assert list(person[scene_build.SOURCE_HYPOTHESIS_PROP])[BODIES:] == [shaping.NOT_IN_SOURCE] * NEW
    assert len(person[scene_build.LOG_LIKELIHOOD_PROP]) == BODIES + NEW
    person["mega_hypothesis"] = BODIES + 1
    person.update_tag()
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = person.evaluated_get(depsgraph).to_mesh()
    shown = np.empty(6890 * 3, np.float32)
    evaluated.vertices.foreach_get("co", shown)
    person.evaluated_get(depsgraph).to_mesh_clear()
    np.testing.assert_allclose(shown.reshape(-1, 3), key_vertices(keys[BODIES + 1]), atol=1e-6)
    (completion,) = person[shaping.COMPLETIONS_PROP]
    meta = json.loads(Path(completion).read_text(encoding="utf-8"))
    assert meta["completion"]["hypothesis"] == 2 and meta["completion"]["pinned"] is True


@pytest.mark.slow
def test_ok_complete_a_named_region_then_refuse_a_completion_key(live):
    person = generate(live)
    select_only(person, [])
    bpy.context.view_layer.objects.active = person
    assert bpy.ops.mega.complete(region="head", count=1, seed=0) == {"FINISHED"}
    run_jobs(live)
    assert len(person.data.shape_keys.key_blocks) == BODIES + 1
    person["mega_hypothesis"] = BODIES  # the completion key is shown: it is not a hypothesis of the result
    with pytest.raises(RuntimeError, match="itself a completion"):
        bpy.ops.mega.complete(region="head", count=1)


def test_ng_complete_without_selection_or_result_names_the_fix(blender, tmp_path):
    mesh = bpy.data.meshes.new("m")
    mesh.vertices.add(6890)
    obj = bpy.data.objects.new("Someone", mesh)
    bpy.context.scene.collection.objects.link(obj)
    with pytest.raises(shaping.ShapeError, match="not a MEGA person"):
        shaping.completion_request(obj, "head")
    obj[scene_build.ROLE_PROP] = scene_build.ROLE_PERSON
    obj[scene_build.HYPOTHESIS_PROP] = 0
    obj["mega_frame"] = 0
    obj["mega_person"] = 1
    obj["mega_result_path"] = str(tmp_path / "gone.json")
    with pytest.raises(shaping.ShapeError, match="is gone; import it again"):
        shaping.completion_request(obj, "head")
    (tmp_path / "gone.json").write_text("{}")
    select_only(obj, [])
    with pytest.raises(shaping.ShapeError, match="no vertex is selected"):
        shaping.completion_request(obj, shaping.SELECTED)
    with pytest.raises(regions.RegionDataError, match="no body region is called 'elbow'"):
        shaping.completion_request(obj, "elbow")
    del obj["mega_frame"]
    with pytest.raises(shaping.ShapeError, match="from a video"):
        shaping.completion_request(obj, "head")
    bpy.context.view_layer.objects.active = obj
    obj["mega_frame"] = 0
    with pytest.raises(RuntimeError, match="no vertex is selected"):  # the operator reports it as an error
        bpy.ops.mega.complete(region="SELECTED")


def test_ok_region_menu_lists_the_selection_and_every_region():
    items = regions.enum_items()
    assert items[0][0] == regions.SELECTED
    names = [item[0] for item in items[1:]]
    assert names == sorted(names) and {"left_leg", "head", "hands", "feet"} <= set(names)
    assert len(regions.region_vertices("left_leg")) > 100
