# mypy: disable-error-code="valid-type"
"""Operators (``mega.*``): import a result, pick hypotheses, toggle uncertainty colours and the camera view.

Error handling: each operator catches the pure half's one exception type (``ResultFormatError``, plus ``OSError``
for files) in one place, reports it with ``self.report({'ERROR'}, …)`` and returns ``{'CANCELLED'}``; scene
building removes whatever it made when it fails, so nothing half-built is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import animation, scene_build
from .result_reader import ResultFormatError, read_result

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, OperatorTypeFlagItems

#: ``bl_options`` of the operators that change data (one undo step each) and of those that do not.
UNDOABLE: set[OperatorTypeFlagItems] = {"REGISTER", "UNDO"}
NOT_UNDOABLE: set[OperatorTypeFlagItems] = {"REGISTER"}
#: Solid-view colour types the uncertainty toggle may restore ('VERTEX', shown as "Attribute", is its own).
SOLID_COLOR_TYPES = ("MATERIAL", "OBJECT", "RANDOM", "TEXTURE", "SINGLE")


class MEGA_OT_import_result(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import a MEGA result (.json + .npz): one object per person over the photo, hypotheses as shape keys"""

    bl_idname = "mega.import_result"
    bl_label = "Import MEGA Result"
    bl_options = UNDOABLE

    filename_ext = ".json"
    filepath: StringProperty(name="File Path", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"}, maxlen=255)
    frame: IntProperty(
        name="Frame",
        description="Result frame to build when not animating (photos have only frame 0)",
        default=0,
        min=0,
    )
    animate: BoolProperty(
        name="Animate Videos",
        description="Build a video result as animated people over all its frames (else only the frame above)",
        default=True,
    )
    uncertainty_range_mm: FloatProperty(
        name="Uncertainty Range (mm)",
        description="Spread shown as full red; 0 = the largest spread among the imported people",
        default=0.0,
        min=0.0,
        soft_max=200.0,
    )
    sensor_mm: FloatProperty(
        name="Sensor (mm)",
        description="Camera sensor size along the image's longer side (the lens follows from it)",
        default=36.0,
        min=1.0,
        soft_max=100.0,
    )

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        range_m = self.uncertainty_range_mm / 1000.0 if self.uncertainty_range_mm > 0 else None
        before = context.scene  # a photo that needs its own scene switches the window to it
        try:
            result = read_result(self.filepath)
            built = animation.build(
                context,
                result,
                frame=None if self.animate else self.frame,
                uncertainty_range_m=range_m,
                sensor_mm=self.sensor_mm,
            )
        except (ResultFormatError, OSError) as exc:
            self.report({"ERROR"}, f"MEGA import failed: {exc}")
            return {"CANCELLED"}
        for message in built.warnings:
            self.report({"WARNING"}, message)
        where = f" in the new scene '{built.scene.name}'" if built.scene not in (None, before) else ""
        self.report(
            {"INFO"},
            f"Imported {len(built.people)} people from {result.source_name} into '{built.collection.name}'{where}",
        )
        return {"FINISHED"}


def _active_person(context: bpy.types.Context) -> bpy.types.Object | None:
    obj = context.active_object
    return obj if scene_build.is_person(obj) else None


class _PersonOperator(bpy.types.Operator):
    """Base of the operators that act on the active MEGA person."""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _active_person(context) is not None


def _set_hypothesis(obj: bpy.types.Object, value: int) -> None:
    obj[scene_build.HYPOTHESIS_PROP] = max(0, min(value, scene_build.num_hypotheses(obj) - 1))
    obj.update_tag()  # re-evaluate the key drivers


class MEGA_OT_set_hypothesis(_PersonOperator):
    """Show this hypothesis of the active person"""

    bl_idname = "mega.set_hypothesis"
    bl_label = "Set Hypothesis"
    bl_options = UNDOABLE

    index: IntProperty(name="Hypothesis", description="0 = Basis, k = shape key 'Hypothesis k'", default=0, min=0)

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = _active_person(context)
        if obj is None:
            return {"CANCELLED"}
        _set_hypothesis(obj, self.index)
        return {"FINISHED"}


class MEGA_OT_step_hypothesis(_PersonOperator):
    """Show the previous or next hypothesis of the active person (wraps around)"""

    bl_idname = "mega.step_hypothesis"
    bl_label = "Step Hypothesis"
    bl_options = UNDOABLE

    step: IntProperty(name="Step", description="-1 = previous, +1 = next", default=1)

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = _active_person(context)
        if obj is None:
            return {"CANCELLED"}
        count = scene_build.num_hypotheses(obj)
        _set_hypothesis(obj, (int(obj[scene_build.HYPOTHESIS_PROP]) + self.step) % count)
        return {"FINISHED"}


class MEGA_OT_most_likely_hypothesis(_PersonOperator):
    """Show the Basis of the active person: hypothesis 0, the deterministic (most likely) decode"""

    bl_idname = "mega.most_likely_hypothesis"
    bl_label = "Most Likely"
    bl_options = UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = _active_person(context)
        if obj is None:
            return {"CANCELLED"}
        _set_hypothesis(obj, 0)
        return {"FINISHED"}


def _fcurves(obj: bpy.types.Object) -> list[bpy.types.FCurve]:
    """The object's F-curves, in Blender 4.2–4.5 (``Action.fcurves``) and 5.0 (channel bags)."""
    animation = obj.animation_data
    action = animation.action if animation is not None else None
    if animation is None or action is None:
        return []
    from bpy_extras import anim_utils

    get_channelbag = getattr(anim_utils, "action_get_channelbag_for_slot", None)  # Blender 4.4+
    slot = getattr(animation, "action_slot", None)
    if get_channelbag is not None and slot is not None:
        channelbag = get_channelbag(action, slot)
        return list(channelbag.fcurves) if channelbag is not None else []
    return list(getattr(action, "fcurves", []))


class MEGA_OT_keyframe_hypothesis(_PersonOperator):
    """Keyframe the active person's hypothesis at the current frame (constant interpolation: the choice jumps)"""

    bl_idname = "mega.keyframe_hypothesis"
    bl_label = "Keyframe Hypothesis"
    bl_options = UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = _active_person(context)
        scene = context.scene
        if obj is None or scene is None:
            return {"CANCELLED"}
        data_path = f'["{scene_build.HYPOTHESIS_PROP}"]'
        obj.keyframe_insert(data_path, frame=scene.frame_current)
        for fcurve in _fcurves(obj):
            if fcurve.data_path == data_path:
                for point in fcurve.keyframe_points:
                    point.interpolation = "CONSTANT"
        return {"FINISHED"}


def _view3d_shadings(context: bpy.types.Context) -> list[bpy.types.View3DShading]:
    """The shading settings of the 3D views in the current screen (none in background mode)."""
    screen = context.screen
    if screen is None:
        return []
    spaces = [space for area in screen.areas if area.type == "VIEW_3D" for space in area.spaces]
    return [space.shading for space in spaces if isinstance(space, bpy.types.SpaceView3D)]


def uncertainty_shown(context: bpy.types.Context) -> bool:
    """Whether the uncertainty colours are on (Solid views colour by attribute)."""
    shadings = _view3d_shadings(context)
    return bool(shadings) and all(s.color_type == "VERTEX" for s in shadings)


def _uncertainty_materials(scene: bpy.types.Scene) -> list[bpy.types.Material]:
    found: dict[str, bpy.types.Material] = {}
    for obj in scene_build.iter_people(scene):
        for slot in obj.material_slots:
            material = slot.material
            if material is not None and material.get(scene_build.MATERIAL_FLAG_PROP):
                found[material.name] = material
    return list(found.values())


def set_material_uncertainty(material: bpy.types.Material, show: bool) -> None:
    """Link (show) or unlink (hide) the colour attribute to the base colour of an uncertainty material."""
    tree = material.node_tree
    if tree is None:
        return
    attribute = tree.nodes.get(scene_build.UNCERTAINTY_COLOR_ATTRIBUTE)
    bsdf = next((n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"), None)
    if attribute is None or bsdf is None:
        return
    base = bsdf.inputs["Base Color"]
    for link in list(base.links or ()):
        tree.links.remove(link)
    if show:
        tree.links.new(attribute.outputs["Color"], base)


class MEGA_OT_toggle_uncertainty(bpy.types.Operator):
    """Show or hide the uncertainty colours (Solid view colours by attribute; MEGA materials use the colours)"""

    bl_idname = "mega.toggle_uncertainty"
    bl_label = "Uncertainty Colours"
    bl_options = UNDOABLE

    show: BoolProperty(name="Show", description="Show (on) or hide (off) the colours", default=True)

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        scene = context.scene
        if scene is None:
            return {"CANCELLED"}
        state = getattr(scene, "mega", None)
        for shading in _view3d_shadings(context):
            if self.show and shading.color_type != "VERTEX":
                if state is not None:
                    state.previous_color_type = shading.color_type
                shading.color_type = "VERTEX"
            elif not self.show and shading.color_type == "VERTEX":
                previous = state.previous_color_type if state is not None else "MATERIAL"
                shading.color_type = cast(Any, previous if previous in SOLID_COLOR_TYPES else "MATERIAL")
        for material in _uncertainty_materials(scene):
            set_material_uncertainty(material, self.show)
        return {"FINISHED"}


class MEGA_OT_view_camera(bpy.types.Operator):
    """Look through the MEGA camera of the active person (again: back to the free view)"""

    bl_idname = "mega.view_camera"
    bl_label = "Camera View"
    bl_options = NOT_UNDOABLE

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and scene_build.camera_of(obj) is not None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = context.active_object
        scene = context.scene
        camera = scene_build.camera_of(obj) if obj is not None else None
        if camera is None or scene is None:
            return {"CANCELLED"}
        space = context.space_data
        region = space.region_3d if isinstance(space, bpy.types.SpaceView3D) else None
        looking = region is not None and region.view_perspective == "CAMERA" and scene.camera == camera
        scene.camera = camera
        if region is not None:
            region.view_perspective = "PERSP" if looking else "CAMERA"
        return {"FINISHED"}


def menu_import(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    """File › Import entry."""
    if self.layout is not None:
        self.layout.operator(MEGA_OT_import_result.bl_idname, text="MEGA result (.json)")


CLASSES = (
    MEGA_OT_import_result,
    MEGA_OT_set_hypothesis,
    MEGA_OT_step_hypothesis,
    MEGA_OT_most_likely_hypothesis,
    MEGA_OT_keyframe_hypothesis,
    MEGA_OT_toggle_uncertainty,
    MEGA_OT_view_camera,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
