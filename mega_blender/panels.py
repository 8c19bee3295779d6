"""The sidebar panels (3D View › Sidebar › tab "MEGA") and the hypothesis list.

* **MEGA** — *Reconstruct* (source: an image, a movie clip or a file; progress and Cancel while it runs; the
  runtime's state, with the reason and Restart when it failed) and *Import Result…*.
* **Person** — for the active MEGA person: the hypothesis slider (``mega_hypothesis``), previous / next,
  *Most likely*, *Keyframe*, and the list of hypotheses with their log-likelihoods (click one to show it);
  *Complete* (keep the Edit Mode selection or a region, add new hypotheses of the rest).
* **Generate** — bodies with no image, as one new object (:mod:`mega_blender.shaping`).
* **View** — uncertainty colours on/off and, while they are shown, their legend (a colour bar from 0 to the
  spread shown as full red); look through the MEGA camera, the photo behind it on/off.

The main panel ends with *Help*, which opens the add-on's documentation (:func:`help_url`).
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import bpy
from bpy.props import FloatVectorProperty, PointerProperty

from . import scene_build
from .operators import uncertainty_shown

log = logging.getLogger(__name__)

CATEGORY = "MEGA"
#: The documentation page the Help button opens when the manifest names no ``website``: packed beside the
#: add-on's files in the extension zip (build_addon.py), or in the repository's docs/ in a checkout.
DOC_PAGE = Path("docs") / "blender-addon.md"
#: Swatches in the legend's colour bar (evenly spaced over 0 … the range).
LEGEND_SWATCHES = 6


def help_url(package_dir: Path | None = None) -> str | None:
    """What Help opens: the manifest's ``website`` if it has one, else the packed (or checkout) docs page as a
    ``file:`` URL; None when neither is there."""
    here = package_dir or Path(__file__).resolve().parent
    for folder in (here, here.parent):  # the zip root, or the repository root of a checkout
        manifest = folder / "blender_manifest.toml"
        if manifest.is_file():
            try:
                website = tomllib.loads(manifest.read_text(encoding="utf-8")).get("website")
            except (OSError, tomllib.TOMLDecodeError) as exc:
                log.warning("could not read %s: %s", manifest, exc)
                website = None
            if isinstance(website, str) and website:
                return website
    for folder in (here, here.parent):
        page = folder / DOC_PAGE
        if page.is_file():
            return page.as_uri()
    return None


def legend_color(position: float) -> tuple[float, float, float]:
    """The uncertainty ramp's linear RGB at ``position`` (0 = certain … 1 = the full-red spread)."""
    import numpy as np

    rgba = scene_build.uncertainty_colors(np.array([position], dtype=np.float64), 1.0)[0]
    return float(rgba[0]), float(rgba[1]), float(rgba[2])


def legend_range_m(context: bpy.types.Context) -> float | None:
    """The spread (metres) shown as full red: the active person's, else the largest among the scene's people."""
    obj = context.active_object
    if scene_build.is_person(obj) and obj is not None and obj.get(scene_build.UNCERTAINTY_RANGE_PROP) is not None:
        return float(obj[scene_build.UNCERTAINTY_RANGE_PROP])
    scene = context.scene
    ranges = [
        float(p[scene_build.UNCERTAINTY_RANGE_PROP])
        for p in (scene_build.iter_people(scene) if scene is not None else ())
        if p.get(scene_build.UNCERTAINTY_RANGE_PROP) is not None
    ]
    return max(ranges) if ranges else None


def _swatch_getter(index: int):
    def get(_self: Any) -> tuple[float, float, float]:
        return legend_color(index / (LEGEND_SWATCHES - 1))

    return get


class MEGA_PG_legend(bpy.types.PropertyGroup):
    """Read-only colour swatches of the uncertainty legend (drawn as a colour bar)."""


for _i in range(LEGEND_SWATCHES):
    MEGA_PG_legend.__annotations__[f"swatch_{_i}"] = FloatVectorProperty(  # type: ignore[func-returns-value]
        name=f"Uncertainty {_i}",
        description="Uncertainty colour (blue = certain, red = the range's spread or more)",
        subtype="COLOR",
        size=3,
        get=_swatch_getter(_i),
    )


def draw_legend(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """The uncertainty colour bar with its metre range, under the View panel's toggle."""
    legend = getattr(context.window_manager, "mega_legend", None)
    range_m = legend_range_m(context)
    if legend is None or range_m is None:
        return
    column = layout.column(align=True)
    column.label(text="Vertex spread (std. dev.)")
    bar = column.row(align=True)
    for i in range(LEGEND_SWATCHES):
        bar.prop(legend, f"swatch_{i}", text="")
    ends = column.row(align=True)
    ends.label(text="0 mm")
    right = ends.row()
    right.alignment = "RIGHT"
    right.label(text=f"≥ {range_m * 1000.0:.0f} mm")


class _SidebarPanel(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class MEGA_PT_main(_SidebarPanel):
    """Reconstruct through the live link; import results."""

    bl_idname = "MEGA_PT_main"
    bl_label = "MEGA"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        scene = context.scene
        if layout is None or scene is None:
            return
        settings = scene.mega  # type: ignore[attr-defined]
        session = getattr(context.window_manager, "mega", None)
        box = layout.box()
        box.prop(settings, "source_kind", expand=True)
        if settings.source_kind == "IMAGE":
            box.template_ID(settings, "image", open="image.open")
            if settings.image is None:
                box.label(text="Empty: the Image Editor's image", icon="INFO")
        elif settings.source_kind == "CLIP":
            box.template_ID(settings, "clip", open="clip.open")
            box.prop(settings, "use_scene_frames")
            row = box.row(align=True)
            row.enabled = not settings.use_scene_frames
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
            box.prop(settings, "frame_step")
        else:
            box.prop(settings, "filepath", text="")
        if settings.source_kind != "IMAGE":
            box.prop(settings, "detect_every")
            column = box.column(align=True)
            column.prop(settings, "temporal_path")
            column.prop(settings, "smooth")
            row = column.row(align=True)
            row.enabled = settings.smooth
            row.prop(settings, "one_euro_min_cutoff")
            row.prop(settings, "one_euro_beta")
            row = column.row(align=True)
            row.enabled = settings.smooth
            row.prop(settings, "one_euro_d_cutoff")
            row.prop(settings, "one_euro_causal")
        column = box.column(align=True)
        column.label(text="Detection")
        column.prop(settings, "detector", text="")
        row = column.row(align=True)
        row.prop(settings, "detect_threshold")
        row.prop(settings, "min_height_px")
        column.prop(settings, "max_people")
        if settings.source_kind == "CLIP":
            column.prop(settings, "use_tracks")
            row = column.row(align=True)
            row.enabled = settings.use_tracks
            row.prop(settings, "track_prefix", text="")
            row.prop(settings, "boxes_mode", text="")
            column.prop(settings, "show_boxes")
        if session is not None and session.job_running:
            row = box.row(align=True)
            row.progress(factor=session.job_progress, text=session.job_status or "Working…")
            row.operator("mega.cancel_reconstruct", text="", icon="CANCEL")
        else:
            box.operator("mega.reconstruct", icon="PLAY")
            if session is not None and session.job_status:
                box.label(text=session.job_status)
        if session is not None:
            draw_runtime_state(box, session)
        layout.operator("mega.import_result", text="Import Result…", icon="IMPORT")
        url = help_url()
        if url is not None:
            layout.operator("wm.url_open", text="Help", icon="HELP").url = url


def draw_runtime_state(layout: bpy.types.UILayout, session: Any) -> None:
    """The live link's state: nothing when stopped; starting/ready with Stop; failed with why and Restart."""
    state = session.link_state
    if state == "FAILED":
        column = layout.column(align=True)
        column.alert = True
        column.label(text=session.link_message, icon="ERROR")
        for line in session.link_stderr.splitlines()[-4:]:
            column.label(text=line)
        layout.operator("mega.restart_runtime", icon="FILE_REFRESH")
    elif state != "STOPPED":
        row = layout.row(align=True)
        row.label(text=session.link_message or state.title(), icon="CHECKMARK" if state == "READY" else "TIME")
        row.operator("mega.stop_runtime", text="", icon="X")


class MEGA_UL_hypotheses(bpy.types.UIList):
    """The active person's hypotheses: Basis and shape keys, with log-likelihoods; click to show one."""

    bl_idname = "MEGA_UL_hypotheses"

    def draw_item(
        self,
        context: bpy.types.Context,
        layout: bpy.types.UILayout,
        data: bpy.types.AnyType | None,
        item: bpy.types.AnyType | None,
        icon: int | None,
        active_data: bpy.types.AnyType | None,
        active_property: str | None,
        index: int | None = 0,
        flt_flag: int | None = 0,
    ) -> None:
        obj = context.active_object
        if obj is None or not isinstance(item, bpy.types.ShapeKey) or index is None:
            return
        values = obj.get(scene_build.LOG_LIKELIHOOD_PROP) or []
        current = int(obj.get(scene_build.HYPOTHESIS_PROP, 0))
        row = layout.row(align=True)
        label = "Basis (deterministic)" if index == 0 else item.name
        op = row.operator(
            "mega.set_hypothesis",
            text=label,
            icon="RADIOBUT_ON" if index == current else "RADIOBUT_OFF",
            emboss=False,
        )
        op.index = index
        if index < len(values):
            row.label(text=f"log L {values[index]:.2f}")


class MEGA_PT_person(_SidebarPanel):
    """Hypothesis picker of the active person."""

    bl_idname = "MEGA_PT_person"
    bl_label = "Person"
    bl_parent_id = "MEGA_PT_main"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return scene_build.is_person(context.active_object)

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        obj = context.active_object
        if layout is None or obj is None:
            return
        layout.label(text=obj.name, icon="OUTLINER_OB_MESH")
        layout.prop(obj, f'["{scene_build.HYPOTHESIS_PROP}"]', text="Hypothesis", slider=True)
        row = layout.row(align=True)
        row.operator("mega.step_hypothesis", text="Previous", icon="TRIA_LEFT").step = -1
        row.operator("mega.most_likely_hypothesis", text="Most Likely")
        row.operator("mega.step_hypothesis", text="Next", icon="TRIA_RIGHT").step = 1
        layout.operator("mega.keyframe_hypothesis", icon="KEY_HLT")
        mesh = obj.data
        keys = mesh.shape_keys if isinstance(mesh, bpy.types.Mesh) else None
        if keys is not None:
            layout.template_list("MEGA_UL_hypotheses", "", keys, "key_blocks", obj, "active_shape_key_index", rows=4)
        else:
            layout.label(text="Only one hypothesis (no shape keys)")
        scene = context.scene
        if scene is not None and obj.get("mega_frame") is not None:
            settings = scene.mega  # type: ignore[attr-defined]
            box = layout.box()
            box.label(text="Complete the shown hypothesis", icon="MOD_MASK")
            row = box.row(align=True)
            row.prop(settings, "complete_region", text="")
            row.prop(settings, "complete_count")
            op = box.operator("mega.complete", icon="SHAPEKEY_DATA")
            op.region = settings.complete_region
            op.count = settings.complete_count


class MEGA_PT_generate(_SidebarPanel):
    """Bodies with no image."""

    bl_idname = "MEGA_PT_generate"
    bl_label = "Generate"
    bl_parent_id = "MEGA_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        scene = context.scene
        if layout is None or scene is None:
            return
        settings = scene.mega  # type: ignore[attr-defined]
        row = layout.row(align=True)
        row.prop(settings, "generate_count")
        row.prop(settings, "generate_seed")
        op = layout.operator("mega.generate", icon="OUTLINER_OB_ARMATURE")
        op.count = settings.generate_count
        op.seed = settings.generate_seed


class MEGA_PT_view(_SidebarPanel):
    """Uncertainty colours, camera and photo toggles."""

    bl_idname = "MEGA_PT_view"
    bl_label = "View"
    bl_parent_id = "MEGA_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        shown = uncertainty_shown(context)
        layout.operator(
            "mega.toggle_uncertainty",
            text="Hide Uncertainty" if shown else "Show Uncertainty",
            icon="HIDE_OFF" if shown else "HIDE_ON",
            depress=shown,
        ).show = not shown
        if shown:
            draw_legend(layout, context)
        obj = context.active_object
        camera = scene_build.camera_of(obj) if obj is not None else None
        if camera is None:
            layout.label(text="Select a MEGA person or camera")
            return
        space = context.space_data
        region = space.region_3d if isinstance(space, bpy.types.SpaceView3D) else None
        looking = region is not None and region.view_perspective == "CAMERA" and context.scene is not None
        looking = looking and context.scene is not None and context.scene.camera == camera
        layout.operator("mega.view_camera", text="Camera View", icon="VIEW_CAMERA", depress=looking)
        if isinstance(camera.data, bpy.types.Camera):
            layout.prop(camera.data, "show_background_images", text="Photo Behind", icon="IMAGE_DATA")


CLASSES = (MEGA_UL_hypotheses, MEGA_PT_main, MEGA_PT_person, MEGA_PT_view, MEGA_PT_generate)


def register() -> None:
    bpy.utils.register_class(MEGA_PG_legend)
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.mega_legend = PointerProperty(type=MEGA_PG_legend)  # type: ignore[attr-defined,func-returns-value]


def unregister() -> None:
    del bpy.types.WindowManager.mega_legend  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    bpy.utils.unregister_class(MEGA_PG_legend)
