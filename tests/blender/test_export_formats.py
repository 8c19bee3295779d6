"""The table "What each format keeps" in docs/blender-addon.md, checked cell by cell.

The cases are read from the table itself: every (format, column) cell is one case, and a ``yes`` is tested to hold
while a ``no`` is tested not to, so the table cannot claim more or less than the files hold. The batch exports a
photo result (one person — more would only repeat the checks —, H = 3, ``--hypothesis 2``), a video result (4 frames,
the body walks 0.5 m right) and that video with a synthetic SMPL fit to every format once; each file is then
re-imported into an empty scene with Blender's importers — except USD, which is read with ``pxr`` from the
``usd-core`` package in a child Python that never imports Blender.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON, REPO_ROOT
from tests.blender.helpers import world_vertices
from tests.blender.make_result import make_arrays, make_meta, write_result

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import batch, coords, scene_build  # noqa: E402
from mega_blender import exports as export_module  # noqa: E402
from mega_blender.result_reader import hypothesis_order  # noqa: E402

DOC = REPO_ROOT / "docs" / "blender-addon.md"
COLUMNS = ("shape keys", "chosen hypothesis", "animation", "colours", "camera", "armature")
NUM_HYPOTHESES = 3
SHOWN = 2  # --hypothesis 2: key "Hypothesis 02"
NUM_FRAMES = 4
WALK_M = 0.5
#: Vertices (metres) of re-imported and read-back files against the result.
POSITION_TOL_M = 1e-4
COLOUR_TOL = 1e-5
FOV_TOL_RAD = 1e-3
WIDTH_PX, HEIGHT_PX = 640, 480  # make_meta's image size


def table_rows(doc: Path = DOC) -> list[tuple[str, dict[str, bool]]]:
    """The format table of ``doc``: [(suffix, {column: yes?}), …], one entry per suffix named in a row."""
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("### What each format keeps") :]
    lines = [line for line in section.splitlines()[1:] if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["format", *COLUMNS], header
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        values = {}
        for column, cell in zip(COLUMNS, cells[1:], strict=True):
            word = cell.split()[0].lower() if cell else ""
            assert word in ("yes", "no"), f"{cells[0]} × {column}: {cell!r} is neither yes nor no"
            values[column] = word == "yes"
        for suffix in re.findall(r"`(\.[a-z]+)`", cells[0]):
            rows.append((suffix, values))
    return rows


CASES = [(suffix, column, keeps) for suffix, values in table_rows() for column, keeps in values.items()]


def test_ok_table_names_every_export_format():
    named = {suffix for suffix, _ in table_rows()}
    assert named == set(export_module.EXPORTERS) - {".bvh"}  # BVH holds only an armature: tested in test_armature.py


# --- the exports --------------------------------------------------------------------------------------------


def _photo(folder: Path) -> tuple[dict[str, np.ndarray], Path]:
    arrays = make_arrays(num_people=1, num_hypotheses=NUM_HYPOTHESES, seed=11)
    return arrays, write_result(folder, "photo", arrays, make_meta(source_path=None))


def _video(folder: Path) -> tuple[dict[str, np.ndarray], Path]:
    """4 frames, the body walking 0.5 m right; no SMPL fit (an armature's take would carry the shape keys' curves
    in FBX and hide a missing scene take: the bug this file was written for)."""
    arrays = make_arrays(num_people=1, num_hypotheses=NUM_HYPOTHESES, num_frames=NUM_FRAMES, seed=12)
    walk = np.linspace(0.0, WALK_M, NUM_FRAMES, dtype=np.float32)[:, None, None, None, None]
    arrays["vertices"] = arrays["vertices"] + walk * np.array([1, 0, 0], np.float32)
    meta = make_meta(source_path=None)
    meta["source"].update(kind="video", fps=25.0)
    return arrays, write_result(folder, "clip", arrays, meta)


def _fitted(folder: Path) -> tuple[dict[str, np.ndarray], Path]:
    """The video with a synthetic SMPL fit (24 joints; no SMPL model file is needed)."""
    rng = np.random.default_rng(5)
    arrays, _ = _video(folder / "unfitted")
    weights = rng.random((6890, 24)) ** 4
    weights /= weights.sum(1, keepdims=True)
    arrays["smpl_rest_vertices"] = rng.normal(scale=0.3, size=(1, 6890, 3)).astype(np.float32)
    arrays["smpl_rest_joints"] = rng.normal(scale=0.3, size=(1, 24, 3)).astype(np.float32)
    arrays["smpl_weights"] = weights.astype(np.float32)
    arrays["smpl_global_orient"] = rng.normal(scale=0.5, size=(NUM_FRAMES, 1, 3)).astype(np.float32)
    arrays["smpl_body_pose"] = rng.normal(scale=0.3, size=(NUM_FRAMES, 1, 23, 3)).astype(np.float32)
    arrays["smpl_transl"] = rng.normal(scale=0.1, size=(NUM_FRAMES, 1, 3)).astype(np.float32) + np.float32([0, 0, 4])
    meta = make_meta(source_path=None)
    meta["source"].update(kind="video", fps=25.0)
    return arrays, write_result(folder, "fitted", arrays, meta)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Any]:
    """Both results exported to every suffix of the table (in this process: content checks only)."""
    folder = tmp_path_factory.mktemp("formats")
    photo_arrays, photo = _photo(folder)
    video_arrays, video = _video(folder)
    _, fitted = _fitted(folder)
    files: dict[tuple[str, str], Path] = {}
    for suffix in sorted({s for s, _ in table_rows()}):
        for kind, path in (("photo", photo), ("video", video), ("fitted", fitted)):
            out = folder / f"{kind}{suffix}"
            shown = ["--hypothesis", str(SHOWN)] if kind == "photo" else []  # a video: the chosen path
            code = batch.main(["import", str(path), "--export", str(out), *shown])
            assert code == 0, (kind, suffix)
            files[kind, suffix] = out
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return {"photo": photo_arrays, "video": video_arrays, "files": files, "folder": folder}


# --- expected values ----------------------------------------------------------------------------------------


def _world(points: np.ndarray) -> np.ndarray:
    return coords.opencv_to_blender_world(np.asarray(points, np.float64))


def _shown_photo(arrays: dict[str, np.ndarray]) -> np.ndarray:
    hypothesis = [0, *hypothesis_order(arrays["log_likelihood"][0, 0])][SHOWN]
    return _world(arrays["vertices"][0, 0, hypothesis])


def _fov() -> float:
    """The horizontal field of view of make_meta's camera (the runtime's focal length for a 640 × 480 image)."""
    focal = 1000.0 / 224.0 * max(WIDTH_PX, HEIGHT_PX)
    return 2.0 * float(np.arctan(WIDTH_PX / 2.0 / focal))


def _colours(arrays: dict[str, np.ndarray], frame: int) -> np.ndarray:
    seen = arrays["vertex_std"][arrays["valid"]]
    range_m = max(scene_build.MIN_UNCERTAINTY_RANGE_M, float(seen.max()))
    return scene_build.uncertainty_colors(arrays["vertex_std"][frame, 0].astype(np.float32), range_m)[:, :3]


# --- re-importing with Blender ------------------------------------------------------------------------------


def _reimport(path: Path) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps = 25  # Alembic stores seconds: read them at the clip's rate
    if path.suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    elif path.suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif path.suffix == ".abc":
        bpy.ops.wm.alembic_import(filepath=str(path))
    else:
        bpy.ops.wm.open_mainfile(filepath=str(path))


def _person() -> Any:
    (obj,) = [
        o
        for o in bpy.data.objects
        if o.type == "MESH" and "Person" in o.name.replace("_", " ") and "SMPL" not in o.name
    ]
    return obj


def _glb_camera(path: Path) -> dict[str, float]:
    """The first camera's ``perspective`` of a .glb file, read from its JSON chunk."""
    data = path.read_bytes()
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    cameras = json.loads(data[20 : 20 + length])["cameras"]
    return cameras[0]["perspective"]


def _at(obj: Any, frame: int) -> np.ndarray:
    bpy.context.scene.frame_set(frame)
    return world_vertices(obj)


def _blender_keeps(exports: dict[str, Any], suffix: str, column: str) -> bool:
    """Whether the re-imported ``suffix`` file keeps ``column`` (asserting the values where it claims to)."""
    files = exports["files"]
    if column in ("shape keys", "chosen hypothesis", "colours", "camera"):
        _reimport(files["photo", suffix])
        obj = _person()
        if column == "shape keys":
            keys = obj.data.shape_keys
            names = [k.name.replace("_", " ") for k in keys.key_blocks] if keys else []
            return names == ["Basis"] + [f"Hypothesis {k:02d}" for k in range(1, NUM_HYPOTHESES)]
        if column == "chosen hypothesis":
            return bool(
                np.abs(_at(obj, bpy.context.scene.frame_current) - _shown_photo(exports["photo"])).max()
                < POSITION_TOL_M
            )
        if column == "colours":
            if not obj.data.color_attributes:
                return False
            values = np.empty(len(obj.data.color_attributes[0].data) * 4, dtype=np.float32)
            obj.data.color_attributes[0].data.foreach_get("color", values)
            return bool(values.reshape(-1, 4)[:, :3].std() > 0.01)
        if suffix == ".glb":  # Blender's glTF importer sets no render size: the file's field of view is checked
            perspective = _glb_camera(files["photo", suffix])
            vertical = 2.0 * np.arctan(np.tan(_fov() / 2.0) / perspective["aspectRatio"])
            square = abs(perspective["aspectRatio"] - WIDTH_PX / HEIGHT_PX) < 1e-6
            return square and abs(perspective["yfov"] - vertical) < FOV_TOL_RAD
        cameras = [o for o in bpy.data.objects if o.type == "CAMERA"]
        return bool(cameras) and abs(cameras[0].data.angle_x - _fov()) < FOV_TOL_RAD
    if column == "armature":
        _reimport(files["fitted", suffix])
        rigs = [o for o in bpy.data.objects if o.type == "ARMATURE" and len(o.data.bones) >= 24]
        return bool(rigs)
    _reimport(files["video", suffix])
    obj = _person()
    first = 1  # the formats keep absolute frame times: scene frame 1 shows result frame 0 …
    if suffix == ".fbx":  # … but Blender's FBX importer shifts its keys by anim_offset (1 frame by default)
        first = round(min(a.frame_range[0] for a in bpy.data.actions))
    arrays = exports["video"]
    for t in (0, NUM_FRAMES - 1):
        if np.abs(_at(obj, first + t) - _world(arrays["vertices"][t, 0, 0])).max() >= POSITION_TOL_M:
            return False
    return True


# --- reading USD with usd-core, without Blender -------------------------------------------------------------

USD_READER = r"""
import json, sys
import numpy as np
from pxr import Usd, UsdGeom, UsdShade, UsdSkel

stage = Usd.Stage.Open(sys.argv[1])
frames = [int(f) for f in sys.argv[3].split(",") if f]
out = {"meshes": {}, "cameras": [], "skeleton_joints": []}
for prim in stage.Traverse():
    if prim.IsA(UsdGeom.Camera):
        camera = UsdGeom.Camera(prim).GetCamera(Usd.TimeCode.Default())
        out["cameras"].append(2.0 * float(np.arctan(camera.horizontalAperture / 2.0 / camera.focalLength)))
    if prim.IsA(UsdSkel.Skeleton):
        out["skeleton_joints"].append(len(UsdSkel.Skeleton(prim).GetJointsAttr().Get() or []))
    if not prim.IsA(UsdGeom.Mesh):
        continue
    mesh = UsdGeom.Mesh(prim)
    binding = UsdSkel.BindingAPI(prim)
    shapes = list(binding.GetBlendShapesAttr().Get() or [])
    targets = binding.GetBlendShapeTargetsRel().GetTargets()
    offsets = {}
    for name, target in zip(shapes, targets):
        shape = UsdSkel.BlendShape(stage.GetPrimAtPath(target))
        indices = shape.GetPointIndicesAttr().Get()
        full = np.zeros((len(mesh.GetPointsAttr().Get()), 3))
        full[np.asarray(indices) if indices else slice(None)] = np.asarray(shape.GetOffsetsAttr().Get())
        offsets[name] = full
    anim = None
    skeletons = binding.GetSkeletonRel().GetTargets()
    if skeletons:
        sources = UsdSkel.BindingAPI(stage.GetPrimAtPath(skeletons[0])).GetAnimationSourceRel().GetTargets()
        anim = UsdSkel.Animation(stage.GetPrimAtPath(sources[0])) if sources else None
    entry = {"shapes": shapes, "world": {}, "colours": {}, "weights": {}}
    primvar = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
    entry["colour_interpolation"] = primvar.GetInterpolation() if primvar and primvar.HasValue() else None
    material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
    reads = False
    if material:
        for child in material.GetPrim().GetChildren():
            shader = UsdShade.Shader(child)
            if not shader or shader.GetIdAttr().Get() != "UsdPreviewSurface":
                continue
            diffuse = shader.GetInput("diffuseColor")
            for source in diffuse.GetConnectedSources()[0] if diffuse else []:
                reader = UsdShade.Shader(source.source.GetPrim())
                varname = reader.GetInput("varname")
                reads |= reader.GetIdAttr().Get() == "UsdPrimvarReader_float3" and bool(varname) and (
                    varname.Get() == "displayColor"
                )
    entry["material_reads_colours"] = reads
    for frame in frames or [None]:
        time = Usd.TimeCode(frame) if frame is not None else Usd.TimeCode.Default()
        points = np.asarray(mesh.GetPointsAttr().Get(time), np.float64)
        weights = []
        if anim:
            names = list(anim.GetBlendShapesAttr().Get() or [])
            weights = list(anim.GetBlendShapeWeightsAttr().Get(time) or [])
            for name, weight in zip(names, weights):
                points = points + weight * offsets[name]
        matrix = np.asarray(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time), np.float64)
        key = str(frame)
        entry["world"][key] = (points @ matrix[:3, :3] + matrix[3, :3]).tolist()
        entry["weights"][key] = [float(w) for w in weights]
        if entry["colour_interpolation"]:
            entry["colours"][key] = np.asarray(primvar.Get(time), np.float64).tolist()
        named = UsdGeom.PrimvarsAPI(prim).GetPrimvar("MEGA_Uncertainty")
        if named and named.HasValue():
            entry.setdefault("named_colours", {})[key] = np.asarray(named.Get(time), np.float64)[:, :3].tolist()
    name_attr = prim.GetParent().GetAttribute("userProperties:blender:object_name")
    out["meshes"][str(name_attr.Get()) if name_attr else prim.GetName()] = entry
json.dump(out, open(sys.argv[2], "w"))
"""


def _person_one(meshes: dict) -> dict:
    """The entry of person 1, whatever its source prefix (``photo.png Person 1``, ``MEGA Person 1`` for videos)."""
    found = [entry for name, entry in meshes.items() if name.replace("_", " ").endswith("Person 1")]
    if len(found) != 1:
        raise AssertionError(f"expected one mesh named '… Person 1', got {sorted(meshes)}")
    return found[0]


def _usd_read(path: Path, frames: list[int]) -> dict[str, Any]:
    """What ``pxr`` (usd-core, in a child Python without Blender) reads from ``path`` at ``frames``."""
    probe = subprocess.run(
        [sys.executable, "-c", "import pxr.Usd"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip("reading USD needs usd-core: pip install usd-core (in the test extra)")
    out = path.with_suffix(path.suffix + ".json")
    run = subprocess.run(
        [sys.executable, "-c", USD_READER, str(path), str(out), ",".join(map(str, frames))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text())


def _usd_keeps(exports: dict[str, Any], suffix: str, column: str) -> bool:
    files = exports["files"]
    if column == "armature":
        return 24 in _usd_read(files["fitted", suffix], [])["skeleton_joints"]
    if column == "animation":
        data = _usd_read(files["video", suffix], list(range(1, NUM_FRAMES + 1)))
        entry = _person_one(data["meshes"])
        arrays = exports["video"]
        for t in range(NUM_FRAMES):
            expected = _world(arrays["vertices"][t, 0, 0])
            if np.abs(np.asarray(entry["world"][str(t + 1)]) - expected).max() >= POSITION_TOL_M:
                return False
            colours = entry["colours"].get(str(t + 1))
            assert colours is not None, "a video's displayColor is written per frame"
            np.testing.assert_allclose(colours, _colours(arrays, t), atol=COLOUR_TOL)
            # the exporter's own colour primvar follows the frames too (it wrote only the first frame's)
            np.testing.assert_allclose(entry["named_colours"][str(t + 1)], _colours(arrays, t), atol=COLOUR_TOL)
        return True
    data = _usd_read(files["photo", suffix], [])
    entry = _person_one(data["meshes"])
    if column == "shape keys":
        return entry["shapes"] == [f"Hypothesis_{k:02d}" for k in range(1, NUM_HYPOTHESES)]
    if column == "chosen hypothesis":
        assert entry["weights"]["None"] == [float(k == SHOWN) for k in range(1, NUM_HYPOTHESES)]
        return bool(np.abs(np.asarray(entry["world"]["None"]) - _shown_photo(exports["photo"])).max() < POSITION_TOL_M)
    if column == "colours":
        if entry["colour_interpolation"] != "vertex" or not entry["material_reads_colours"]:
            return False
        np.testing.assert_allclose(entry["colours"]["None"], _colours(exports["photo"], 0), atol=COLOUR_TOL)
        return True
    return any(abs(fov - _fov()) < FOV_TOL_RAD for fov in data["cameras"])


@pytest.mark.slow
@pytest.mark.parametrize(("suffix", "column", "keeps"), CASES, ids=[f"{s}-{c}" for s, c, _ in CASES])
def test_ok_format_keeps_what_the_table_says(exports, suffix, column, keeps):
    if suffix.startswith(".usd"):
        found = _usd_keeps(exports, suffix, column)
    else:
        found = _blender_keeps(exports, suffix, column)
    assert found == keeps, f"docs/blender-addon.md says {suffix} × {column}: {'yes' if keeps else 'no'}"


# --- beyond the table ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".fbx", ".usda"])
def test_ok_video_export_bakes_the_hypothesis_the_picker_shows(exports, suffix):
    """``--hypothesis K`` on a video: the baked file shows hypothesis K of every frame, as the scene did."""
    arrays = exports["video"]
    folder: Path = exports["folder"]
    out = folder / f"picked{suffix}"
    video = folder / "clip.json"
    assert batch.main(["import", str(video), "--export", str(out), "--hypothesis", str(SHOWN), "--overwrite"]) == 0
    expected = [_world(arrays["vertices"][t, 0, SHOWN]) for t in range(NUM_FRAMES)]
    if suffix == ".usda":
        entry = _person_one(_usd_read(out, list(range(1, NUM_FRAMES + 1)))["meshes"])
        found = [np.asarray(entry["world"][str(t + 1)]) for t in range(NUM_FRAMES)]
    else:
        _reimport(out)
        obj = _person()
        first = round(min(a.frame_range[0] for a in bpy.data.actions))
        found = [_at(obj, first + t) for t in range(NUM_FRAMES)]
    for t in range(NUM_FRAMES):
        np.testing.assert_allclose(found[t], expected[t], atol=POSITION_TOL_M, err_msg=f"result frame {t}")


def test_ok_usd_is_finished_with_blenders_own_pxr(blender):
    """The batch imports the pxr that ships with Blender (the exporter's libraries), never a usd-core beside it."""
    pxr = export_module.blender_pxr()
    assert pxr is not None
    assert Path(pxr.__file__).resolve().is_relative_to(Path(bpy.utils.resource_path("LOCAL")).resolve())


def test_ok_usd_without_pxr_is_written_as_blender_writes_it(exports, monkeypatch, caplog):
    """A Blender without pxr: the file is still written (without the weights and displayColor), with a warning."""
    monkeypatch.setattr(export_module, "blender_pxr", lambda: None)
    folder: Path = exports["folder"]
    out = folder / "plain.usda"
    with caplog.at_level("WARNING", logger="mega_blender.exports"):
        assert batch.main(["import", str(folder / "photo.json"), "--export", str(out), "--overwrite"]) == 0
    assert out.is_file() and "primvars:displayColor" not in out.read_text()
    assert any("no pxr module" in r.getMessage() for r in caplog.records)
