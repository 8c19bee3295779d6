"""Writing the built scene to a file, one function per format, and the fix-ups some exporters need.

What each format keeps is the table in docs/blender-addon.md (checked cell by cell by
tests/blender/test_export_formats.py): ``.blend`` everything; FBX and glTF shape keys, the shown hypothesis,
animation (a video as one scene-wide FBX take), colours, camera and armature; USD the same, its blend-shape
weights and ``displayColor`` (with a material reading it) written by :func:`_finish_usd` with Blender's own
``pxr``; Alembic the shown hypothesis and animation as plain positions, and the camera; BVH the armature.
Used by the headless batch (:mod:`mega_blender.batch`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import bpy

from . import animation
from .scene_build import iter_people

log = logging.getLogger(__name__)


class ExportError(Exception):
    """An export failed; the message is the one-line reason."""


def exporter_options(operator: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` limited to what this Blender's exporter knows (option names change between releases)."""
    known = {p.identifier for p in operator.get_rna_type().properties}
    dropped = sorted(set(options) - known)
    if dropped:
        log.debug("%s: this Blender lacks the options %s", operator.idname_py(), dropped)
    return {k: v for k, v in options.items() if k in known}


def export_blend(path: Path, frame: int) -> None:
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, check_existing=False)


def export_fbx(path: Path, frame: int) -> None:
    operator = bpy.ops.export_scene.fbx
    # A baked video keys only its shape keys. The exporter's default takes (one per action of each object, one per
    # NLA strip) exist only for objects with an action of their own, so those keys were dropped (0 curves): a video
    # gets one take of the whole scene, sampled every frame over its range, in absolute times (Blender's FBX
    # importer adds its anim_offset, 1 frame by default). Photos keep the per-action takes, which start at 0.
    scene_take = bool(animated_people())
    operator(
        **exporter_options(
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


def hypothesis_animated() -> bool:
    """Whether any MEGA person in the scene has an animated (keyframed) hypothesis."""
    scene = bpy.context.scene
    if scene is None:
        return False
    return any(p.animation_data is not None and p.animation_data.action is not None for p in iter_people(scene))


def export_gltf(path: Path, frame: int) -> None:
    operator = bpy.ops.export_scene.gltf
    animated = hypothesis_animated()
    operator(
        **exporter_options(
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


def animated_people() -> list[bpy.types.Object]:
    """The people animated from a video result (Mesh Cache), in the current scene."""
    scene = bpy.context.scene
    return [p for p in iter_people(scene) if animation.is_animated(p)] if scene is not None else []


def export_usd(path: Path, frame: int) -> None:
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
                raise ExportError(f"packing {path} failed; export .usdc instead")
        return
    _write_usd(path)
    if pxr is not None:
        _finish_usd(pxr, path)


def _write_usd(path: Path) -> None:
    operator = bpy.ops.wm.usd_export
    operator(
        **exporter_options(
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
                "export_animation": bool(animated_people()) or hypothesis_animated(),
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
        raise ExportError(f"the exported {path} cannot be opened again to finish it; export .blend or .fbx instead")
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


def export_alembic(path: Path, frame: int) -> None:
    operator = bpy.ops.wm.alembic_export
    scene = bpy.context.scene
    start, end = (scene.frame_start, scene.frame_end) if animated_people() and scene is not None else (frame, frame)
    operator(
        **exporter_options(
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


def export_bvh(path: Path, frame: int) -> None:
    scene = bpy.context.scene
    rigs = [o for o in scene.objects if o.type == "ARMATURE"] if scene is not None else []
    if not rigs:
        raise ExportError("BVH holds an armature, and the scene has none: fit SMPL first (mega-runtime fit-smpl)")
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
        **exporter_options(
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
    ".blend": export_blend,
    ".fbx": export_fbx,
    ".glb": export_gltf,
    ".usd": export_usd,
    ".usda": export_usd,
    ".usdc": export_usd,
    ".usdz": export_usd,
    ".abc": export_alembic,
    ".bvh": export_bvh,
}
