"""The sidebar panels (3D View › Sidebar › tab "MEGA") and the hypothesis list.

* **MEGA** — import a result file; a boxed place for *Reconstruct* (the live link to a running runtime comes
  with the next issue).
* **Person** — for the active MEGA person: the hypothesis slider (``mega_hypothesis``), previous / next,
  *Most likely*, *Keyframe*, and the list of hypotheses with their log-likelihoods (click one to show it).
* **View** — uncertainty colours on/off, look through the MEGA camera, the photo behind it on/off.
"""

from __future__ import annotations

import bpy

from . import scene_build
from .operators import uncertainty_shown

CATEGORY = "MEGA"


class _SidebarPanel(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class MEGA_PT_main(_SidebarPanel):
    """Import results; reconstruct (coming with the live link)."""

    bl_idname = "MEGA_PT_main"
    bl_label = "MEGA"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        layout.operator("mega.import_result", text="Import Result…", icon="IMPORT")
        box = layout.box()
        box.label(text="Reconstruct (live link: coming next)", icon="TIME")
        column = box.column()
        column.enabled = False
        column.label(text="Send the active image to a running MEGA runtime.")
        column.label(text="Set up the runtime in the add-on's preferences.")


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


CLASSES = (MEGA_UL_hypotheses, MEGA_PT_main, MEGA_PT_person, MEGA_PT_view)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
