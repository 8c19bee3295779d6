# mypy: disable-error-code="valid-type"
"""Shape bodies: *Complete* (lock a region of a person, resample the rest) and *Generate* (bodies with no image).

Both run in the runtime as jobs of the live link (protocol ops ``complete`` and ``generate``, docs/protocol.md)
and are built on Blender's main thread when they end (:mod:`mega_blender.jobs`), in one undo step:

* **Complete** (``mega.complete``) on the active person of a photo import: the vertices selected in Edit Mode (or,
  with nothing selected, a named region from ``token_regions.json``) of the hypothesis it shows are locked and
  ``count`` new hypotheses of the rest are added as shape keys ``Completion NN`` after the existing keys, which are
  not touched. The new keys join the hypothesis picker: ``mega_hypothesis`` = H … H + M − 1, their
  log-likelihoods appended to ``mega_log_likelihood`` and ``-1`` (no hypothesis of the source result) to
  ``mega_source_hypothesis``. The runtime conditions on the photo when it is still on disk.
* **Generate** (``mega.generate``): ``count`` bodies from MEGA's pre-trained model, imported as one new object
  whose Basis and shape keys are the bodies (most likely first).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty

from . import jobs, regions, scene_build
from . import runtime_defaults as defaults
from .coords import opencv_to_blender_world
from .preferences import get_preferences
from .reconstruct import results_dir
from .result_reader import ResultFormatError, read_result
from .runtime_client import JobDone, LinkError

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, OperatorTypeFlagItems

log = logging.getLogger(__name__)

NOT_UNDOABLE: set[OperatorTypeFlagItems] = {"REGISTER"}  # the keys come later, in their own undo step
SELECTED = regions.SELECTED
#: Object property: the completion result pairs whose hypotheses were added as keys (one path per job).
COMPLETIONS_PROP = "mega_completions"
#: ``mega_source_hypothesis`` entry of a key that is no hypothesis of the source result.
NOT_IN_SOURCE = -1


class ShapeError(ValueError):
    """The active person cannot be completed as asked; the message says what to do instead."""


def completion_key_name(index: int) -> str:
    """``Completion 01`` … (1-based over the object's completion keys)."""
    return f"Completion {index:02d}"


def selected_vertices(obj: bpy.types.Object) -> np.ndarray:
    """Indices (int64) of the mesh's selected vertices, also while the object is in Edit Mode."""
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh):
        return np.zeros(0, np.int64)
    flags = np.zeros(len(mesh.vertices), dtype=bool)
    mesh.vertices.foreach_get("select", flags)
    return np.flatnonzero(flags).astype(np.int64)


def completion_request(obj: bpy.types.Object, region: str) -> tuple[dict[str, Any], str]:
    """The ``complete`` fields for ``obj`` (person, hypothesis shown, kept vertices) and the source result path.

    Raises :class:`ShapeError` naming the fix when ``obj`` cannot be completed.
    """
    if obj.get(scene_build.ROLE_PROP) != scene_build.ROLE_PERSON:
        raise ShapeError(f"'{obj.name}' is not a MEGA person; select one made by Reconstruct or Import")
    if obj.get("mega_frame") is None:
        raise ShapeError(f"'{obj.name}' comes from a video; Complete works on photo (and generated) people")
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh) or len(mesh.vertices) != regions.NUM_VERTICES:
        raise ShapeError(f"'{obj.name}' no longer has the 6890 SMPL vertices; complete an unedited person")
    path = Path(str(obj.get("mega_result_path", "")))
    if not path.is_file():
        raise ShapeError(f"the result of '{obj.name}' ({path}) is gone; import it again to complete this person")
    picker = list(obj.get(scene_build.SOURCE_HYPOTHESIS_PROP) or [0])
    shown = int(obj.get(scene_build.HYPOTHESIS_PROP, 0))
    source_hypothesis = int(picker[shown]) if 0 <= shown < len(picker) else NOT_IN_SOURCE
    if source_hypothesis == NOT_IN_SOURCE:
        raise ShapeError("the shown key is itself a completion; show the Basis or a 'Hypothesis' key to complete it")
    keep: str | list[int]
    if region == SELECTED:
        chosen = selected_vertices(obj)
        if chosen.size == 0:
            raise ShapeError("no vertex is selected: select the part to keep in Edit Mode, or pick a region")
        keep = [int(v) for v in chosen]
    else:
        regions.region_vertices(region)  # names the choices when the region is unknown
        keep = region
    fields = {"result": str(path.resolve()), "person": int(obj["mega_person"]) - 1, "hypothesis": source_hypothesis}
    fields["keep"] = keep
    return fields, str(path)


def add_completion_keys(obj: bpy.types.Object, source_json: Path, completed_json: Path) -> list[str]:
    """Append the hypotheses of ``completed_json`` to ``obj`` as driven keys; returns the new keys' names.

    Key coordinates are in the object's space as at import: the source result's person translation (``cam_t`` of
    hypothesis 0) is the origin, exactly as :mod:`mega_blender.scene_build` placed the Basis.
    """
    source = read_result(source_json)
    completed = read_result(completed_json)
    person = int(obj["mega_person"]) - 1
    frame = 0
    origin = opencv_to_blender_world(source.cam_t[frame, person, 0]).astype(np.float32)  # (3,)
    shapes = opencv_to_blender_world(completed.vertices[0, 0]) - origin  # (M, 6890, 3) float32 metres
    log_likelihood = [float(v) for v in completed.log_likelihood[0, 0]]
    mesh = cast(bpy.types.Mesh, obj.data)
    if mesh.shape_keys is None:  # one hypothesis so far: the keys need a Basis (the shape as it is)
        obj.shape_key_add(name="Basis", from_mix=False)
    keys = cast(bpy.types.Key, mesh.shape_keys).key_blocks
    picker = list(obj.get(scene_build.SOURCE_HYPOTHESIS_PROP) or [0])
    likelihoods = list(obj.get(scene_build.LOG_LIKELIHOOD_PROP) or [0.0])
    earlier = sum(1 for key in keys if key.name.startswith("Completion "))
    names: list[str] = []
    for i, shape in enumerate(shapes):
        rank = len(picker) + i
        key = scene_build.add_driven_key(obj, completion_key_name(earlier + i + 1), rank, shape)
        names.append(key.name)
    obj[scene_build.SOURCE_HYPOTHESIS_PROP] = picker + [NOT_IN_SOURCE] * len(names)
    obj[scene_build.LOG_LIKELIHOOD_PROP] = likelihoods + log_likelihood
    obj[COMPLETIONS_PROP] = [*list(obj.get(COMPLETIONS_PROP) or []), str(completed_json)]
    scene_build.set_picker_range(obj, len(picker) + len(names))
    return names


def _completion_builder(object_name: str, source_json: Path):
    def build(event: JobDone, label: str) -> tuple[str, str, list[str]]:
        obj = bpy.data.objects.get(object_name)
        if obj is None or Path(str(obj.get("mega_result_path", ""))) != source_json:
            raise LinkError(
                f"'{object_name}' was deleted or renamed while it was being completed; the new hypotheses are "
                f"kept in {event.json_path} (File › Import › MEGA result)"
            )
        try:
            names = add_completion_keys(obj, source_json, event.json_path)
        except (ResultFormatError, OSError) as exc:
            raise LinkError(f"the completion of {label} could not be added: {exc}") from exc
        return f"{label}: added {len(names)} completion key(s)", f"MEGA Complete {label}", [obj.name]

    return build


def _generate_builder(count: int):
    def build(event: JobDone, label: str) -> tuple[str, str, list[str]]:
        message, _, names = jobs.import_result(event, label)
        return message, f"MEGA Generate {count} bodies", names

    return build


def _device(context: bpy.types.Context) -> dict[str, Any]:
    preferences = get_preferences(context)
    return {"device": preferences.device.lower()} if preferences is not None else {}


class MEGA_OT_complete(bpy.types.Operator):
    """Lock the selected vertices (or a region) of the shown hypothesis and add new hypotheses of the rest as
    shape keys"""

    bl_idname = "mega.complete"
    bl_label = "Complete"
    bl_options = NOT_UNDOABLE

    region: EnumProperty(name="Keep", description="What stays as it is", items=regions.enum_items)
    count: IntProperty(
        name="Count",
        description="New hypotheses",
        default=defaults.COMPLETION_COUNT,
        min=1,
        max=defaults.MAX_HYPOTHESES,
    )
    seed: IntProperty(name="Seed", description="Seeds the sampler", default=defaults.SEED, min=0)
    pin: BoolProperty(
        name="Pin",
        description="Keep the locked vertices exactly where they are (else as the kept tokens make them)",
        default=defaults.COMPLETION_PIN,
    )
    falloff: FloatProperty(
        name="Falloff",
        description="Band over which the locked region blends into the new body",
        default=defaults.COMPLETION_FALLOFF_M,
        min=0.0,
        max=1.0,
        subtype="DISTANCE",
        unit="LENGTH",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return scene_build.is_person(context.active_object)

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = context.active_object
        if obj is None:
            return {"CANCELLED"}
        try:
            fields, source = completion_request(obj, self.region)
        except (ShapeError, regions.RegionDataError) as exc:
            self.report({"ERROR"}, f"MEGA Complete: {exc}")
            return {"CANCELLED"}
        fields.update(count=self.count, seed=self.seed, pin=self.pin, falloff_m=round(float(self.falloff), 6))
        fields.update(_device(context))
        label = f"Complete {obj.name}"
        name = f"{Path(source).name.removesuffix('.json')}.completed"
        try:
            jobs.submit_model_job(
                context, "complete", fields, results_dir(context), name=name, label=label,
                builder=_completion_builder(obj.name, Path(source)),
            )  # fmt: skip
        except (LinkError, ValueError) as exc:
            self.report({"ERROR"}, f"MEGA Complete: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"MEGA: completing {obj.name} ({self.count} new hypotheses)")
        return {"FINISHED"}


class MEGA_OT_generate(bpy.types.Operator):
    """Make bodies with no image (MEGA's pre-trained model) as one new object whose shape keys are the bodies"""

    bl_idname = "mega.generate"
    bl_label = "Generate"
    bl_options = NOT_UNDOABLE

    count: IntProperty(
        name="Count", description="Bodies", default=defaults.GENERATE_COUNT, min=1, max=defaults.MAX_HYPOTHESES
    )
    seed: IntProperty(name="Seed", description="Seeds the sampler", default=defaults.SEED, min=0)
    steps: IntProperty(
        name="Steps",
        description="Sampling steps",
        default=defaults.GENERATE_STEPS,
        min=1,
        max=defaults.MAX_SAMPLING_STEPS,
    )
    temperature: FloatProperty(
        name="Temperature", description="Sampling temperature", default=defaults.GENERATE_TEMPERATURE, min=0.0, max=10.0
    )

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        fields: dict[str, Any] = {"count": self.count, "seed": self.seed, "steps": self.steps, "stack": True}
        fields["temperature"] = round(float(self.temperature), 6)
        fields.update(_device(context))
        label = f"Generate {self.count}"
        try:
            jobs.submit_model_job(
                context, "generate", fields, results_dir(context), name="generated", label=label,
                builder=_generate_builder(self.count),
            )  # fmt: skip
        except (LinkError, ValueError) as exc:
            self.report({"ERROR"}, f"MEGA Generate: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"MEGA: generating {self.count} bodies")
        return {"FINISHED"}


CLASSES = (MEGA_OT_complete, MEGA_OT_generate)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
