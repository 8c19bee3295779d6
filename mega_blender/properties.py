# mypy: disable-error-code="valid-type"
"""Add-on state that is not on the imported objects: two small property groups.

* ``Scene.mega`` (:class:`MEGA_PG_scene`, saved with the file): what the uncertainty toggle replaced, so hiding
  the colours gives back the viewport colouring the user had.
  It also holds what the Reconstruct button sends: the source (an Image, a Movie Clip or a file) and the frames,
  and the panel's Complete and Generate settings.
* ``WindowManager.mega`` (:class:`MEGA_PG_session`, never saved): progress of the private-environment install,
  the live link's state and the running job's progress.

Per-person data (hypothesis picker, log-likelihoods, …) lives on the objects themselves as custom properties
(see :mod:`mega_blender.scene_build`), so a file works — drivers included — even without the add-on.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import regions
from . import runtime_defaults as defaults


def detector_items() -> list[tuple[str, str, str]]:
    """The detectors the runtime offers (``DETECTOR_CHOICES`` of the runtime's defaults, never a list of its
    own), as enum items."""
    return [
        (name, name.capitalize(), f"The runtime's '{name}' person detector (docs/detection.md)")
        for name in defaults.DETECTOR_CHOICES
    ]


class MEGA_PG_scene(bpy.types.PropertyGroup):
    """Per-scene state of the MEGA panel."""

    previous_color_type: StringProperty(
        name="Previous Colour Type",
        description="Solid-view colour type before the uncertainty colours were shown",
        default="MATERIAL",
        options={"HIDDEN"},
    )
    source_kind: EnumProperty(
        name="Source",
        description="What Reconstruct sends to the runtime",
        items=(
            ("IMAGE", "Image", "An image datablock (default: the one in the active Image Editor)"),
            ("CLIP", "Movie Clip", "A movie clip (default: the scene's active clip), over a frame range"),
            ("FILE", "File", "An image or video file"),
        ),
        default="IMAGE",
    )
    image: PointerProperty(name="Image", type=bpy.types.Image, description="Image to reconstruct")
    clip: PointerProperty(name="Movie Clip", type=bpy.types.MovieClip, description="Clip to reconstruct")
    filepath: StringProperty(name="File", description="Image or video file", subtype="FILE_PATH", default="")
    use_scene_frames: BoolProperty(
        name="Scene Frame Range",
        description="Reconstruct the clip over the scene's frame range (else over the range below)",
        default=True,
    )
    frame_start: IntProperty(name="Start", description="First scene frame to reconstruct", default=1, min=0)
    frame_end: IntProperty(name="End", description="Last scene frame to reconstruct", default=250, min=0)
    frame_step: IntProperty(name="Step", description="Reconstruct every n-th frame", default=1, min=1)
    detect_every: IntProperty(
        name="Detect Every",
        description=(
            "Videos: run the person detector on every n-th reconstructed frame and follow the boxes by optical flow "
            "in between (1: every frame, exact; 3: about a third of the detection time, people who walk in found "
            "up to 2 frames late)"
        ),
        default=defaults.DETECT_EVERY,
        min=1,
        max=defaults.MAX_DETECT_EVERY,
    )
    temporal_path: EnumProperty(
        name="Path",
        description="Videos: which hypothesis plays in each frame",
        items=(
            ("zero", "Deterministic", "Hypothesis 0 of every frame"),
            ("coherent", "Coherent", "Per frame the hypothesis that keeps the motion smooth and likely"),
        ),
        default=defaults.PANEL_TEMPORAL_PATH,
    )
    smooth: BoolProperty(
        name="Smooth", description="Videos: One-Euro smoothing of the bodies", default=defaults.PANEL_SMOOTH
    )
    one_euro_min_cutoff: FloatProperty(
        name="Min Cut-off",
        description="One-Euro: lower smooths more at rest (Hz)",
        default=defaults.ONE_EURO_MIN_CUTOFF_HZ,
        min=0.01,
        max=30.0,
    )
    one_euro_beta: FloatProperty(
        name="Beta",
        description="One-Euro: higher follows fast motion with less lag (Hz per m/s)",
        default=defaults.ONE_EURO_BETA,
        min=0.0,
        max=100.0,
    )
    one_euro_d_cutoff: FloatProperty(
        name="Speed Cut-off",
        description="One-Euro: cut-off of the speed estimate (Hz)",
        default=defaults.ONE_EURO_D_CUTOFF_HZ,
        min=0.01,
        max=30.0,
    )
    complete_region: EnumProperty(
        name="Keep",
        description="Complete: what stays as it is (the Edit Mode selection or a body region)",
        items=regions.enum_items,
    )
    complete_count: IntProperty(
        name="Count",
        description="Complete: new hypotheses to add",
        default=defaults.COMPLETION_COUNT,
        min=1,
        max=defaults.MAX_HYPOTHESES,
    )
    generate_count: IntProperty(
        name="Bodies",
        description="Generate: bodies to make (one object, one shape key each)",
        default=defaults.GENERATE_COUNT,
        min=1,
        max=defaults.MAX_HYPOTHESES,
    )
    generate_seed: IntProperty(name="Seed", description="Generate: seeds the sampler", default=defaults.SEED, min=0)
    one_euro_causal: BoolProperty(
        name="Forward Only",
        description="One-Euro: filter forwards only, as a live view would (lags moving bodies); "
        "off: forwards and backwards averaged, no lag",
        default=defaults.ONE_EURO_CAUSAL,
    )
    # -- detection (sent with every job as the protocol's 'detection' object) --
    detector: EnumProperty(
        name="Detector",
        description="Person detector the runtime runs",
        items=detector_items(),
        default=defaults.DETECTOR,
    )
    detect_threshold: FloatProperty(
        name="Threshold",
        description="Minimum detector score of a person: lower finds more people, and more false ones",
        default=defaults.DETECTOR_CONF,
        min=0.0,
        max=1.0,
    )
    min_height_px: FloatProperty(
        name="Min Height",
        description="Ignore detected people whose box is less tall than this, pixels (0: any size)",
        default=defaults.DETECTOR_MIN_HEIGHT_PX,
        min=0.0,
        max=defaults.MAX_DETECTOR_MIN_HEIGHT_PX,
    )
    max_people: IntProperty(
        name="Max People",
        description="Keep at most this many detected people per frame, best scores first (0: all)",
        default=defaults.DETECTOR_MAX_PEOPLE or 0,
        min=0,
        max=defaults.MAX_DETECTOR_PEOPLE,
    )
    use_tracks: BoolProperty(
        name="Boxes from Tracks",
        description="Movie Clip: tracks named with the prefix below are people; their pattern areas are sent as "
        "boxes, frame by frame",
        default=True,
    )
    track_prefix: StringProperty(
        name="Track Prefix",
        description="Tracks whose name starts with this (any case) are people's boxes",
        default=defaults.PANEL_TRACK_PREFIX,
    )
    boxes_mode: EnumProperty(
        name="Boxes",
        description="What boxes from tracks do",
        items=(
            ("add", "Add", "The detector runs too; the tracks add the people it missed (or replace its box)"),
            ("replace", "Replace", "Frames with a track box reconstruct only the tracked people"),
        ),
        default=defaults.PANEL_BOXES_MODE,
    )
    show_boxes: BoolProperty(
        name="Show Boxes",
        description="Draw the person boxes of the results built from a clip over it in the Movie Clip editor",
        default=True,
    )


class MEGA_PG_session(bpy.types.PropertyGroup):
    """State of this Blender session (not saved): the private-environment install."""

    install_running: BoolProperty(name="Installing", description="A private environment is being set up", default=False)
    install_status: StringProperty(
        name="Install Status", description="Last message of the private-environment install", default=""
    )
    install_progress: FloatProperty(name="Install Progress", subtype="FACTOR", min=0.0, max=1.0, default=0.0)
    link_state: EnumProperty(
        name="Runtime",
        items=(
            ("STOPPED", "Stopped", "No runtime is running; Reconstruct starts one"),
            ("STARTING", "Starting", "The runtime is starting (it loads PyTorch)"),
            ("READY", "Ready", "The runtime is running"),
            ("FAILED", "Failed", "The runtime could not start or stopped; see the message"),
        ),
        default="STOPPED",
    )
    link_message: StringProperty(name="Runtime Message", description="Last word from the live link", default="")
    link_stderr: StringProperty(name="Runtime Log", description="Last lines the runtime wrote to stderr", default="")
    job_running: BoolProperty(name="Reconstructing", description="A reconstruction is running", default=False)
    job_progress: FloatProperty(name="Progress", subtype="FACTOR", min=0.0, max=1.0, default=0.0)
    job_status: StringProperty(name="Job Status", description="Progress or outcome of the last job", default="")


CLASSES = (MEGA_PG_scene, MEGA_PG_session)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.mega = bpy.props.PointerProperty(type=MEGA_PG_scene)  # type: ignore[attr-defined, func-returns-value]
    bpy.types.WindowManager.mega = bpy.props.PointerProperty(type=MEGA_PG_session)  # type: ignore[attr-defined, func-returns-value]


def unregister() -> None:
    del bpy.types.WindowManager.mega  # type: ignore[attr-defined]
    del bpy.types.Scene.mega  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
