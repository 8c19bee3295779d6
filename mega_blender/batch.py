"""Headless batch: build result files into an empty scene and export or save it.

    blender -b --command mega import RESULT.json... --export OUT.(blend|fbx|glb|usd|usda|usdc|usdz|abc)
            [--report REPORT.json] [--frame N] [--hypothesis K] [--overwrite]
    python -m mega_blender.batch import RESULT.json... --export OUT.glb     (any Python that has ``bpy``)
    blender -b --command mega reconstruct PHOTO_OR_VIDEO... --export OUT.blend [--runtime CMD]
            [--checkpoint-dir DIR] [--model M] [--hypotheses H] [--frames START:STOP:STEP] [--results-dir DIR]

The first form is registered by the add-on with ``bpy.utils.register_cli_command("mega", …)``; the second is
the same :func:`main`. Every result is read and checked first; then the scene is reset to an empty factory
startup file (add-ons stay enabled), each result is built (:func:`mega_blender.scene_build.build_result`), the
hypothesis ``K`` is selected on every person (default 0, the Basis) and the scene is exported. Each photo gets its
own scene (named after it, with its own camera and render size; see docs/blender-addon.md), so several different
sources can only be saved to ``.blend``. Outputs (and the
report) are never overwritten unless ``--overwrite`` is given.

A video result (more than one frame) is animated (:mod:`mega_blender.animation`): point caches go to
``<OUT stem> cache/`` beside the output (listed in the report); for FBX, glTF and USD, whose exporters ignore the
Mesh Cache modifier, what each person shows (``--hypothesis K``; 0 = the chosen path) is first baked into a shape
key per frame (keyed), and Alembic exports the evaluated mesh over the scene's frame range. ``--frame N`` builds
one frame instead.

``reconstruct`` first runs each photo or video through the runtime (started as the live link starts it: the
``--runtime`` command, else the add-on's preferences, else ``<this Python> -m mega_runtime``), writing the result
pairs into ``--results-dir`` (default ``<OUT stem> results/``), then imports and exports them as ``import`` does.

Exit status 0 on success; 1 with one line ``mega import: error: <reason>`` on stderr on failure; 2 for usage
errors. ``--report`` writes JSON: ``ok``, ``error``, ``results``, ``objects`` (names), ``files`` (written),
``warnings`` — also when the command fails after the report's path was checked.

What each format keeps is the table in docs/blender-addon.md (checked cell by cell by
tests/blender/test_export_formats.py): ``.blend`` everything; FBX and glTF shape keys, the shown hypothesis,
animation (a video as one scene-wide FBX take), colours, camera and armature; USD the same, its blend-shape
weights and ``displayColor`` (with a material reading it) written by :func:`_finish_usd` with Blender's own
``pxr``; Alembic the shown hypothesis and animation as plain positions, and the camera.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import bpy

from . import animation
from . import runtime_defaults as defaults
from .result_reader import MegaResult, ResultFormatError, read_result, result_paths
from .scene_build import HYPOTHESIS_PROP, iter_people, num_hypotheses, source_key

log = logging.getLogger(__name__)

PROG_BLENDER = "blender -b --command mega"
#: Longest wait for the runtime to exit after the batch (its stop escalates to kill within ~6 s).
RUNTIME_EXIT_WAIT_S = 15.0
PROG_PYTHON = "python -m mega_blender.batch"


class BatchError(Exception):
    """A batch run failed; the message is the one-line reason."""


def _filtered(operator: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` limited to what this Blender's exporter knows (option names change between releases)."""
    known = {p.identifier for p in operator.get_rna_type().properties}
    dropped = sorted(set(options) - known)
    if dropped:
        log.debug("%s: this Blender lacks the options %s", operator.idname_py(), dropped)
    return {k: v for k, v in options.items() if k in known}


def _export_blend(path: Path, frame: int) -> None:
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, check_existing=False)


def _export_fbx(path: Path, frame: int) -> None:
    operator = bpy.ops.export_scene.fbx
    # A baked video keys only its shape keys. The exporter's default takes (one per action of each object, one per
    # NLA strip) exist only for objects with an action of their own, so those keys were dropped (0 curves): a video
    # gets one take of the whole scene, sampled every frame over its range, in absolute times (Blender's FBX
    # importer adds its anim_offset, 1 frame by default). Photos keep the per-action takes, which start at 0.
    scene_take = bool(_animated_people())
    operator(
        **_filtered(
            operator,
            {
                "filepath": str(path),
                "check_existing": False,
                "use_selection": False,
                "object_types": {"MESH", "CAMERA", "ARMATURE"},
                "use_mesh_modifiers": False,  # keeps the shape keys
                "colors_type": "SRGB",
                "prioritize_active_color": True,
                # off: the FBX exporter fails on 3-element integer lists (mega_source_hypothesis when H = 3)
                "use_custom_props": False,
                "add_leaf_bones": False,
                "bake_anim": True,  # a keyframed hypothesis or a baked video becomes shape-key animation
                "bake_anim_use_all_actions": not scene_take,
                "bake_anim_use_nla_strips": not scene_take,
                "bake_anim_force_startend_keying": True,
                "bake_anim_step": 1.0,
            },
        )
    )


def _hypothesis_animated() -> bool:
    """Whether any MEGA person in the scene has an animated (keyframed) hypothesis."""
    scene = bpy.context.scene
    if scene is None:
        return False
    return any(p.animation_data is not None and p.animation_data.action is not None for p in iter_people(scene))


def _export_gltf(path: Path, frame: int) -> None:
    operator = bpy.ops.export_scene.gltf
    animated = _hypothesis_animated()
    operator(
        **_filtered(
            operator,
            {
                "filepath": str(path),
                "check_existing": False,
                "export_format": "GLB",
                "use_selection": False,
                "export_cameras": True,
                "export_morph": True,
                "export_morph_normal": False,
                "export_vertex_color": "ACTIVE",  # 4.2+: the active colour attribute → COLOR_0
                "export_all_vertex_colors": False,
                "export_colors": True,  # older name of the same switch
                "export_attributes": True,
                "export_extras": True,  # custom properties (log-likelihoods, picker) as extras
                "export_apply": False,  # modifiers would drop the morph targets
                "export_yup": True,
                # a keyframed hypothesis drives the keys through drivers: only baking exports that as morph
                # weight animation (one scene-wide animation)
                "export_animations": True,
                "export_bake_animation": animated,
                "export_animation_mode": "SCENE" if animated else "ACTIONS",
            },
        )
    )


def _animated_people() -> list[bpy.types.Object]:
    """The people animated from a video result (Mesh Cache), in the current scene."""
    scene = bpy.context.scene
    return [p for p in iter_people(scene) if animation.is_animated(p)] if scene is not None else []


def _export_usd(path: Path, frame: int) -> None:
    """USD through Blender's exporter, then :func:`_finish_usd` writes what that exporter leaves out.

    A ``.usdz`` is a read-only package: the stage is written as ``.usdc`` into a temporary folder, finished there
    and packed with ``UsdUtils.CreateNewUsdzPackage``.
    """
    pxr = blender_pxr()
    if pxr is None:
        log.warning(
            "this Blender has no pxr module: the USD file lacks blendShapeWeights and displayColor; use Blender's "
            "own Python (blender -b --command mega) or the bpy module, which ship it"
        )
    if path.suffix.lower() == ".usdz" and pxr is not None:
        with tempfile.TemporaryDirectory(prefix="mega-usdz-") as folder:
            stage_path = Path(folder) / f"{path.stem}.usdc"
            _write_usd(stage_path)
            _finish_usd(pxr, stage_path)
            if not pxr.UsdUtils.CreateNewUsdzPackage(pxr.Sdf.AssetPath(str(stage_path)), str(path)):
                raise BatchError(f"packing {path} failed; export .usdc instead")
        return
    _write_usd(path)
    if pxr is not None:
        _finish_usd(pxr, path)


def _write_usd(path: Path) -> None:
    operator = bpy.ops.wm.usd_export
    operator(
        **_filtered(
            operator,
            {
                "filepath": str(path),
                "check_existing": False,
                "selected_objects_only": False,
                "visible_objects_only": False,
                "export_shapekeys": True,
                "export_mesh_colors": True,
                "export_custom_properties": True,
                "author_blender_name": True,  # userProperties:blender:object_name: how _finish_usd finds people
                "export_materials": True,
                "generate_preview_surface": True,
                "export_cameras": True,
                "export_animation": bool(_animated_people()) or _hypothesis_animated(),
            },
        )
    )


def blender_pxr() -> Any | None:
    """Blender's own USD Python bindings (``pxr``: Usd, UsdGeom, UsdShade, UsdSkel, UsdUtils, Sdf, Vt), or None.

    Blender and the PyPI ``bpy`` module ship them in ``<resources>/python/lib/…/site-packages``; inside Blender
    that folder is on ``sys.path``, beside the ``bpy`` module it is not, so it is put first for this import only
    (first, so a separately installed ``usd-core`` — other libraries than the exporter's — is not mixed in).
    """
    import importlib

    if "pxr" not in sys.modules:
        python = Path(bpy.utils.resource_path("LOCAL")) / "python"
        found = (*python.glob("lib/python3*/site-packages"), python / "lib" / "site-packages")
        folders = [str(p) for p in found if (p / "pxr").is_dir()]
        sys.path[:0] = folders
        try:
            importlib.import_module("pxr")
        except ImportError:
            return None
        finally:
            for folder in folders:
                sys.path.remove(folder)
    try:
        for name in ("Usd", "UsdGeom", "UsdShade", "UsdSkel", "UsdUtils", "Sdf", "Tf", "Vt"):
            importlib.import_module(f"pxr.{name}")
    except ImportError:
        return None
    return sys.modules["pxr"]


#: The primvar the USD file's people carry their uncertainty colours in, read by their material.
USD_COLOR_PRIMVAR = "displayColor"


def _finish_usd(pxr: Any, path: Path) -> None:
    """Write into the exported stage what Blender's USD exporter leaves out, for every MEGA person:

    * ``blendShapeWeights`` of its SkelAnimation — the exporter declares them but writes zeros or nothing (it
      reads the keys' values from its own depsgraph, which never evaluates the hypothesis drivers): the values
      the scene shows, per frame (time code = frame) where the export is animated, else once;
    * ``primvars:displayColor`` (vertex interpolation) = the uncertainty colours, per frame for a video;
    * a ``UsdPrimvarReader_float3`` reading that primvar into the ``diffuseColor`` of the bound material's
      UsdPreviewSurface, so viewers show the colours instead of a grey surface.
    """
    from . import scene_build

    usd, usd_geom, usd_shade, sdf, vt = pxr.Usd, pxr.UsdGeom, pxr.UsdShade, pxr.Sdf, pxr.Vt
    scene = bpy.context.scene
    if scene is None:
        return
    stage = usd.Stage.Open(str(path))
    if not stage:
        raise BatchError(f"the exported {path} cannot be opened again to finish it; export .blend or .fbx instead")
    people = {p.name: p for p in iter_people(scene) if isinstance(p.data, bpy.types.Mesh)}
    meshes: list[tuple[Any, bpy.types.Object]] = []
    for prim in stage.Traverse():
        if not prim.IsA(usd_geom.Mesh):
            continue
        owner = _blender_object_name(prim)
        if owner in people:
            meshes.append((prim, people[owner]))
    if not meshes:
        return
    animated = stage.HasAuthoredTimeCodeRange()
    frames = list(range(scene.frame_start, scene.frame_end + 1)) if animated else [scene.frame_current]
    back = scene.frame_current
    weights: dict[str, list[Any]] = {obj.name: [] for _, obj in meshes}
    colours: dict[str, list[Any]] = {obj.name: [] for _, obj in meshes}
    for frame in frames:
        scene.frame_set(frame)  # flushes driven and keyed key values and runs the colour handler
        animation.update_uncertainty_colours(scene)  # also where the handler is not registered
        for _, obj in meshes:
            mesh = cast(bpy.types.Mesh, obj.data)
            keys = mesh.shape_keys
            weights[obj.name].append(
                {pxr.Tf.MakeValidIdentifier(k.name): float(k.value) for k in keys.key_blocks[1:]} if keys else {}
            )
            colours[obj.name].append(_point_colours(mesh, scene_build.UNCERTAINTY_COLOR_ATTRIBUTE))
    scene.frame_set(back)
    materials_done: set[str] = set()
    for prim, obj in meshes:
        rgb = colours[obj.name]
        if rgb[0] is not None:
            primvar = usd_geom.PrimvarsAPI(prim).CreatePrimvar(
                USD_COLOR_PRIMVAR, sdf.ValueTypeNames.Color3fArray, usd_geom.Tokens.vertex
            )
            primvar.GetAttr().Clear()
            if animated:
                for frame, values in zip(frames, rgb, strict=True):
                    primvar.Set(vt.Vec3fArray.FromNumpy(values), frame)
            else:
                primvar.Set(vt.Vec3fArray.FromNumpy(rgb[0]))
            if animated:  # the exporter wrote its own colour primvar once: it follows the frames too
                _animate_exported_colours(pxr, prim, frames, rgb)
            material, _ = usd_shade.MaterialBindingAPI(prim).ComputeBoundMaterial()
            if material and str(material.GetPath()) not in materials_done:
                materials_done.add(str(material.GetPath()))
                _read_colour_primvar(pxr, material)
        _write_weights(pxr, prim, frames if animated else None, weights[obj.name])
    stage.GetRootLayer().Save()


def _animate_exported_colours(pxr: Any, prim: Any, frames: list[int], rgb: list[Any]) -> None:
    """Per-frame values for the exporter's ``primvars:MEGA_Uncertainty`` (RGBA, written once: the first frame's)."""
    import numpy as np

    from . import scene_build

    name = pxr.Tf.MakeValidIdentifier(scene_build.UNCERTAINTY_COLOR_ATTRIBUTE)
    primvar = pxr.UsdGeom.PrimvarsAPI(prim).GetPrimvar(name)
    if not primvar or primvar.GetTypeName() != pxr.Sdf.ValueTypeNames.Color4fArray:
        return
    if primvar.GetInterpolation() != pxr.UsdGeom.Tokens.vertex:
        return
    for frame, values in zip(frames, rgb, strict=True):
        rgba = np.concatenate([values, np.ones((len(values), 1), np.float32)], axis=1)
        primvar.Set(pxr.Vt.Vec4fArray.FromNumpy(np.ascontiguousarray(rgba, dtype=np.float32)), frame)


def _blender_object_name(prim: Any) -> str | None:
    """The Blender object a USD prim was exported from (``userProperties:blender:object_name`` on it or above)."""
    while prim and prim.GetPath().pathString != "/":
        attr = prim.GetAttribute("userProperties:blender:object_name")
        if attr and attr.HasAuthoredValue():
            return str(attr.Get())
        prim = prim.GetParent()
    return None


def _point_colours(mesh: bpy.types.Mesh, name: str) -> Any:
    """(V, 3) float32 linear RGB of the point colour attribute ``name``, or None where the mesh has none."""
    import numpy as np

    attribute = mesh.color_attributes.get(name)
    if attribute is None or attribute.domain != "POINT" or len(attribute.data) != len(mesh.vertices):
        return None
    rgba = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", rgba)
    return np.ascontiguousarray(rgba.reshape(-1, 4)[:, :3])


def _read_colour_primvar(pxr: Any, material: Any) -> None:
    """Feed ``primvars:displayColor`` into the diffuse colour of ``material``'s UsdPreviewSurface shaders."""
    usd_shade, sdf = pxr.UsdShade, pxr.Sdf
    surfaces = [
        usd_shade.Shader(p)
        for p in material.GetPrim().GetChildren()
        if p.IsA(usd_shade.Shader) and usd_shade.Shader(p).GetIdAttr().Get() == "UsdPreviewSurface"
    ]
    if not surfaces:
        return
    reader = usd_shade.Shader.Define(
        material.GetPrim().GetStage(), material.GetPath().AppendChild("displayColorReader")
    )
    reader.CreateIdAttr("UsdPrimvarReader_float3")
    reader.CreateInput("varname", sdf.ValueTypeNames.Token).Set(USD_COLOR_PRIMVAR)
    reader.CreateInput("fallback", sdf.ValueTypeNames.Float3).Set((0.8, 0.8, 0.8))
    result = reader.CreateOutput("result", sdf.ValueTypeNames.Float3)
    for surface in surfaces:
        surface.CreateInput("diffuseColor", sdf.ValueTypeNames.Color3f).ConnectToSource(result)


def _write_weights(pxr: Any, prim: Any, frames: list[int] | None, values: list[dict[str, float]]) -> None:
    """Author the blend-shape weights of the SkelAnimation bound to the mesh ``prim`` (per frame, or once)."""
    usd_skel, vt = pxr.UsdSkel, pxr.Vt
    binding = usd_skel.BindingAPI(prim)
    shapes = list(binding.GetBlendShapesAttr().Get() or [])
    skeletons = binding.GetSkeletonRel().GetTargets()
    if not shapes or not skeletons:
        return
    stage = prim.GetStage()
    sources = usd_skel.BindingAPI(stage.GetPrimAtPath(skeletons[0])).GetAnimationSourceRel().GetTargets()
    if not sources:
        return
    anim = usd_skel.Animation(stage.GetPrimAtPath(sources[0]))
    if not anim:
        return
    anim.CreateBlendShapesAttr().Set(shapes)
    attr = anim.CreateBlendShapeWeightsAttr()
    attr.Clear()
    if frames is None:
        attr.Set(vt.FloatArray([values[0].get(s, 0.0) for s in shapes]))
        return
    for frame, weights in zip(frames, values, strict=True):
        attr.Set(vt.FloatArray([weights.get(s, 0.0) for s in shapes]), frame)


def _export_alembic(path: Path, frame: int) -> None:
    operator = bpy.ops.wm.alembic_export
    scene = bpy.context.scene
    start, end = (scene.frame_start, scene.frame_end) if _animated_people() and scene is not None else (frame, frame)
    operator(
        **_filtered(
            operator,
            {
                "filepath": str(path),
                "check_existing": False,
                "start": start,
                "end": end,
                "selected": False,
                "visible_objects_only": False,
                "export_custom_properties": True,
                "evaluation_mode": "RENDER",  # the evaluated mesh: the shown hypothesis, baked
                "as_background_job": False,
            },
        )
    )


def _export_bvh(path: Path, frame: int) -> None:
    scene = bpy.context.scene
    rigs = [o for o in scene.objects if o.type == "ARMATURE"] if scene is not None else []
    if not rigs:
        raise BatchError("BVH holds an armature, and the scene has none: fit SMPL first (mega-runtime fit-smpl)")
    if len(rigs) > 1:
        log.warning("BVH holds one armature: exporting %s of %d", rigs[0].name, len(rigs))
    view_layer = bpy.context.view_layer
    if view_layer is not None:
        for obj in view_layer.objects:
            obj.select_set(obj == rigs[0])
        view_layer.objects.active = rigs[0]
    operator = bpy.ops.export_anim.bvh
    start, end = (scene.frame_start, scene.frame_end) if scene is not None else (frame, frame)
    operator(
        **_filtered(
            operator,
            {
                "filepath": str(path),
                "check_existing": False,
                "frame_start": start,
                "frame_end": end,
                "rotate_mode": "NATIVE",
                "root_transform_only": False,
            },
        )
    )


#: Formats whose exporters ignore modifiers: animated people are baked into a shape key per frame first.
BAKED_FORMATS = {".fbx", ".glb", ".usd", ".usda", ".usdc", ".usdz"}

EXPORTERS: dict[str, Callable[[Path, int], None]] = {
    ".blend": _export_blend,
    ".fbx": _export_fbx,
    ".glb": _export_gltf,
    ".usd": _export_usd,
    ".usda": _export_usd,
    ".usdc": _export_usd,
    ".usdz": _export_usd,
    ".abc": _export_alembic,
    ".bvh": _export_bvh,
}


def build_parser(prog: str = PROG_PYTHON) -> argparse.ArgumentParser:
    """The command line: ``import RESULT... --export OUT [--report FILE] [--frame N] [--hypothesis K]``."""
    parser = argparse.ArgumentParser(prog=prog, description="Build MEGA results into a scene and export it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("import", help="import result files and export or save the scene")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT", help="result .json files (with their .npz)")
    p.add_argument(
        "--export",
        required=True,
        type=Path,
        metavar="OUT",
        help=f"output file; the format follows the suffix: {', '.join(EXPORTERS)}",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report (objects, files, warnings)")
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        help="build only this result frame (default: photos their frame, videos animated over all frames)",
    )
    p.add_argument(
        "--hypothesis",
        type=int,
        default=0,
        metavar="K",
        help="hypothesis to show on every person: 0 = Basis, k = key 'Hypothesis k' (default 0)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output and report files")

    r = commands.add_parser(
        "reconstruct",
        help="reconstruct photos or videos with the MEGA runtime, then import and export like 'import'",
        description="Runs the MEGA runtime (as the live link does), writes one result pair per input into "
        "--results-dir, then builds and exports them like the 'import' command (videos animated).",
    )
    r.add_argument("media", nargs="+", type=Path, metavar="MEDIA", help="photos or video files")
    r.add_argument("--export", required=True, type=Path, metavar="OUT", help="output file (as for 'import')")
    r.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report (objects, files, warnings)")
    r.add_argument("--results-dir", type=Path, metavar="DIR", help="where result pairs go (default: '<OUT> results')")
    r.add_argument(
        "--runtime",
        metavar="COMMAND",
        help="command that starts the runtime (default: the add-on's preferences, else this Python: "
        "'python -m mega_runtime')",
    )
    r.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="the runtime's checkpoint folder")
    r.add_argument(
        "--model",
        default=defaults.DEFAULT_MODEL,
        help=f"{', '.join(defaults.MODEL_SHORT_NAMES)} (default %(default)s)",
    )
    r.add_argument(
        "--hypotheses",
        type=int,
        default=defaults.NUM_HYPOTHESES,
        help="hypotheses per person incl. the deterministic one (default %(default)s)",
    )
    r.add_argument("--steps", type=int, help=f"sampling steps (default {defaults.SAMPLING_STEPS})")
    r.add_argument("--seed", type=int, default=defaults.SEED)
    r.add_argument("--device", default=defaults.DEVICE, help="auto, cpu, cuda, mps (default %(default)s)")
    r.add_argument("--frames", metavar="START:STOP:STEP", help="video frame range (stop exclusive)")
    r.add_argument(
        "--path", choices=defaults.TEMPORAL_PATHS, default=defaults.TEMPORAL_PATH, help="videos: hypothesis path"
    )
    r.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        default=defaults.SMOOTH,
        help="videos: One-Euro smoothing of the bodies (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-min-cutoff",
        type=float,
        default=defaults.ONE_EURO_MIN_CUTOFF_HZ,
        help="One-Euro cut-off at rest, Hz (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-beta",
        type=float,
        default=defaults.ONE_EURO_BETA,
        help="One-Euro speed coefficient, Hz per m/s (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-d-cutoff",
        type=float,
        default=defaults.ONE_EURO_D_CUTOFF_HZ,
        help="One-Euro cut-off of the speed, Hz (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-causal",
        action=argparse.BooleanOptionalAction,
        default=defaults.ONE_EURO_CAUSAL,
        help="forward-only One-Euro (lags moving bodies); off: forwards and backwards averaged (default %(default)s)",
    )
    r.add_argument(
        "--smpl-model", type=Path, metavar="PATH", help="your SMPL model file: also fit SMPL and build armatures"
    )
    r.add_argument("--hypothesis", type=int, default=0, metavar="K", help="hypothesis to show (default 0)")
    r.add_argument("--frame", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument("--overwrite", action="store_true", help="replace existing output and report files")
    return parser


def _frames(text: str | None) -> dict[str, int | None] | None:
    if not text:
        return None
    parts = [*text.split(":"), "", ""][:3]
    try:
        start, stop, step = (int(v) if v.strip() else None for v in parts)
    except ValueError as exc:
        raise BatchError(f"--frames {text!r} is not START:STOP:STEP (e.g. 0:300:2)") from exc
    start = 0 if start is None else start
    step = 1 if step is None else step
    if start < 0 or step < 1 or (stop is not None and stop <= start):
        raise BatchError(f"--frames {text!r} selects no frame: use START:STOP:STEP with 0 <= START < STOP, STEP >= 1")
    return {"start": start, "stop": stop, "step": step}


def _runtime_command(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    import shlex

    serve_args = ["--checkpoint-dir", str(args.checkpoint_dir)] if args.checkpoint_dir else []
    if args.runtime:
        return shlex.split(args.runtime), serve_args
    from . import jobs

    try:
        command, preferred_args, _ = jobs.link_settings(bpy.context)
    except ValueError:
        return [sys.executable, "-m", "mega_runtime"], serve_args
    return command, serve_args or preferred_args


def run_reconstruct(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The ``reconstruct`` command: each input through the runtime (blocking), then :func:`run_import`."""
    from .runtime_client import JobDone, JobFailed, Link, LinkError, Progress, RuntimeFailed

    _check_outputs(args)
    missing = [str(p) for p in args.media if not p.is_file()]
    if missing:
        raise BatchError(f"no such file: {', '.join(missing)}")
    if args.hypotheses < 1:
        raise BatchError(f"--hypotheses must be at least 1, got {args.hypotheses}")
    results_dir = (args.results_dir or args.export.parent / f"{args.export.stem} results").resolve()
    options: dict[str, Any] = {"model": args.model, "hypotheses": args.hypotheses, "seed": args.seed}
    options["device"] = args.device
    if args.steps:
        options["steps"] = args.steps
    frames = _frames(args.frames)
    if frames:
        options["frames"] = frames
    if args.smpl_model:
        options["smpl_model"] = str(args.smpl_model.resolve())
    if args.path != "zero" or args.smooth:
        options["temporal"] = {
            "path": args.path,
            "smooth": args.smooth,
            "min_cutoff": args.one_euro_min_cutoff,
            "beta": args.one_euro_beta,
            "d_cutoff": args.one_euro_d_cutoff,
            "causal": args.one_euro_causal,
        }
    command, serve_args = _runtime_command(args)
    link = Link(command, serve_args)
    results: list[Path] = []
    try:
        link.start()
        for media in args.media:
            link.submit(media, results_dir, options=options)
            outcome: Any = None
            while outcome is None:
                for event in link.pump(wait_s=0.5):
                    if isinstance(event, Progress) and event.total:
                        log.info("%s: %s %d/%d", media.name, event.stage, event.done, event.total)
                    elif isinstance(event, JobDone | JobFailed | RuntimeFailed):
                        outcome = event
            if isinstance(outcome, RuntimeFailed):
                tail = f" (runtime stderr: {outcome.stderr.splitlines()[-1]})" if outcome.stderr else ""
                raise BatchError(f"{outcome.reason}{tail}")
            if isinstance(outcome, JobFailed):
                raise BatchError(f"{media}: {outcome.sentence}")
            results.append(outcome.json_path)
            report["files"].extend([str(outcome.json_path), str(outcome.npz_path)])
            report["warnings"].extend(outcome.warnings)
    except LinkError as exc:
        raise BatchError(str(exc)) from exc
    finally:
        link.stop()  # shutdown, then terminate and kill if need be (a few seconds at most) …
        link.wait_stopped(RUNTIME_EXIT_WAIT_S)  # … waited for here: a headless batch leaves no runtime behind
    args.results = results
    run_import(args, report)


def _check_outputs(args: argparse.Namespace) -> None:
    suffix = args.export.suffix.lower()
    if suffix not in EXPORTERS:
        raise BatchError(
            f"cannot export to '{args.export.suffix or args.export.name}': use one of {', '.join(EXPORTERS)}"
        )
    if args.hypothesis < 0:
        raise BatchError(f"--hypothesis must be 0 or more, got {args.hypothesis}")
    _check_collisions(args)
    if not args.overwrite:
        for path in (args.export, args.report):
            if path is not None and path.exists():
                raise BatchError(f"{path} already exists; choose another name or pass --overwrite")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same path, or two links to one existing file)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _report_collides(args: argparse.Namespace) -> bool:
    """Whether ``--report`` names the export or one of the inputs (then it is never written)."""
    try:
        _check_collisions(args)
    except BatchError:
        return True
    return False


def _check_collisions(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that would write over another output or over an input."""
    inputs: list[tuple[str, Path]] = []
    for result in getattr(args, "results", None) or []:
        json_path, npz_path = result_paths(result)
        inputs += [("the result", json_path), ("the result", npz_path)]
    for media in getattr(args, "media", None) or []:
        inputs.append(("the input", media))
    outputs = [("--export", args.export)] + ([("--report", args.report)] if args.report is not None else [])
    if args.report is not None and _same_file(args.report, args.export):
        raise BatchError(
            f"--report and --export name the same file {args.export}; give the report its own name, "
            "e.g. --report report.json"
        )
    for option, out in outputs:
        for what, source in inputs:
            if _same_file(out, source):
                raise BatchError(f"{option} {out} is {what} being read; choose another {option} path")


def _reset_scene() -> bpy.types.Context:
    """An empty factory-startup scene; enabled add-ons stay enabled (unlike ``read_factory_settings``)."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    return bpy.context


def run_import(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Do the ``import`` command, filling ``report``; raises :class:`BatchError` on failure."""
    _check_outputs(args)
    results: list[MegaResult] = []
    for path in args.results:
        try:
            results.append(read_result(path))
        except ResultFormatError as exc:
            raise BatchError(str(exc)) from exc
    sources = {source_key(r) for r in results}
    if len(sources) > 1 and args.export.suffix.lower() != ".blend":
        raise BatchError(
            f"{len(sources)} different photos or videos make one scene each, and {args.export.suffix} holds one "
            "scene: export to .blend, or run once per photo"
        )
    context = _reset_scene()
    cache_dir = args.export.parent / f"{args.export.stem} cache"
    for result in results:
        try:
            built = animation.build(context, result, frame=args.frame, cache_dir=cache_dir)
        except ResultFormatError as exc:
            raise BatchError(str(exc)) from exc
        report["results"].append(str(result.path))
        report["objects"].extend(obj.name for obj in built.objects)
        report["warnings"].extend(built.warnings)
        for person in built.people:
            count = num_hypotheses(person)
            if args.hypothesis >= count:
                report["warnings"].append(
                    f"{person.name} has {count} hypotheses; showing {count - 1} instead of {args.hypothesis}"
                )
            person[HYPOTHESIS_PROP] = min(args.hypothesis, count - 1)
    if context.view_layer is not None:
        context.view_layer.update()
    args.export.parent.mkdir(parents=True, exist_ok=True)
    if args.export.suffix.lower() in BAKED_FORMATS:
        for person in _animated_people():  # these exporters ignore the Mesh Cache modifier
            animation.bake_path_to_shape_keys(person)
    if any(animation.is_animated(p) for p in _animated_people()):
        report["files"].extend(str(p) for p in sorted(cache_dir.glob("*")) if p.is_file())
    scene = context.scene
    frame = scene.frame_current if scene is not None else 1
    try:
        EXPORTERS[args.export.suffix.lower()](args.export, frame)
    except RuntimeError as exc:
        raise BatchError(f"exporting {args.export} failed: {str(exc).strip().splitlines()[-1]}") from exc
    if not args.export.is_file():
        raise BatchError(f"the exporter wrote no file at {args.export}")
    report["files"].append(str(args.export))


def _write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None, prog: str = PROG_PYTHON) -> int:
    """Run the batch command line ``argv`` (without the program name); returns the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    except SystemExit as exc:  # --help (0) or a usage error (2); argparse printed the message
        return exc.code if isinstance(exc.code, int) else 2
    report: dict[str, Any] = {"ok": False, "error": None, "results": [], "objects": [], "files": [], "warnings": []}
    code = 0
    report_safe = (
        args.report is not None and not _report_collides(args) and (args.overwrite or not args.report.exists())
    )
    try:
        _check_outputs(args)  # before any work
        if args.command == "reconstruct":
            run_reconstruct(args, report)
        else:
            run_import(args, report)
        report["ok"] = True
    except (BatchError, OSError, MemoryError) as exc:
        report["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError):
            report["error"] = "out of memory; import fewer or shorter results at once"
        print(f"mega {args.command}: error: {report['error']}", file=sys.stderr)
        code = 1
    for message in report["warnings"]:
        print(f"mega {args.command}: warning: {message}", file=sys.stderr)
    if report_safe:  # never over the export or an input, never over a file that was there without --overwrite
        try:
            _write_report(args.report, report)
        except OSError as exc:
            print(f"mega {args.command}: error: cannot write the report {args.report}: {exc}", file=sys.stderr)
            return 1
        report["files"].append(str(args.report))
    if code == 0:
        print(f"mega {args.command}: wrote {', '.join(report['files'])} ({len(report['objects'])} objects)")
    return code


def cli_command(argv: list[str]) -> int:
    """Entry point for ``blender --command mega …`` (registered by the add-on)."""
    return main(argv, prog=PROG_BLENDER)


def run_as_script(argv: list[str] | None = None) -> NoReturn:
    """``python -m mega_blender.batch …``: run :func:`main`, then end the process at once with its status.

    The ``bpy`` module can deadlock at interpreter exit: after a video result, its movie reader's delayed-close
    thread waits on a condition variable that a static destructor then destroys, and ``exit()`` never returns
    (bpy 4.5; seen with every export format). Every file is written and closed by the time :func:`main` returns,
    so the streams are flushed and the process leaves through ``os._exit``, skipping those destructors. Inside
    Blender (``blender -b --command mega``) Blender's own shutdown stops that thread, and this is not used.
    """
    code = main(argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_as_script()
