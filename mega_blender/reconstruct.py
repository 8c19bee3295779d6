# mypy: disable-error-code="valid-type"
"""Reconstruct: send the active image, a Movie Clip or a file to the runtime; cancel; restart the runtime.

The source comes from ``Scene.mega`` (panel): an Image datablock (default: the image of the active Image
Editor; packed, generated, painted or unsaved images are written to a temporary PNG first), a Movie Clip
(default: the scene's active clip) over the scene's or a chosen frame range, or an image / video file. Options
(model, hypotheses, steps, seed, device) default to the preferences and can be overridden per call.

``bpy.ops.mega.reconstruct()`` from a script or in background mode submits the job and returns at once; the job
runs in the runtime and :func:`mega_blender.jobs.pump` (a ``bpy.app.timers`` function) builds the scene when it
ends. Invoked from the panel, the operator also stays modal until the job ends, so Esc cancels it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bpy
import numpy as np
from bpy.props import IntProperty, StringProperty

from . import jobs
from . import runtime_defaults as defaults
from .preferences import addon_user_dir, get_preferences
from .runtime_client import LinkError
from .sources import clip_file_frames, write_png

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, OperatorTypeFlagItems

log = logging.getLogger(__name__)

NOT_UNDOABLE: set[OperatorTypeFlagItems] = {"REGISTER"}
VIDEO_SUFFIXES = defaults.VIDEO_SUFFIXES
#: Seconds between two checks of the modal Reconstruct operator.
MODAL_POLL_S = 0.2


class SourceError(ValueError):
    """The chosen source cannot be sent; the message says what to choose instead."""


@dataclass(frozen=True)
class Source:
    """A file on this machine to reconstruct, and what it came from."""

    path: Path
    label: str
    is_video: bool
    frames: dict[str, int] | None = None
    cleanup: list[Path] = field(default_factory=list)


def active_editor_image(context: bpy.types.Context) -> bpy.types.Image | None:
    """The image shown in the context's Image Editor, else in the first Image Editor of the screen."""
    space = context.space_data
    if isinstance(space, bpy.types.SpaceImageEditor) and space.image is not None:
        return space.image
    screen = context.screen
    for area in screen.areas if screen is not None else ():
        for candidate in area.spaces:
            if isinstance(candidate, bpy.types.SpaceImageEditor) and candidate.image is not None:
                return candidate.image
    return None


def _image_file(image: bpy.types.Image) -> Path | None:
    """The image's own file when it holds exactly what Blender shows (not packed, generated or edited)."""
    if image.packed_file is not None or image.source not in {"FILE", "MOVIE"} or image.is_dirty:
        return None
    path = Path(bpy.path.abspath(image.filepath, library=image.library))
    return path if path.is_file() else None


def image_source(image: bpy.types.Image) -> Source:
    """An Image datablock as a file: its own file, or its pixels written to a temporary PNG."""
    own = _image_file(image)
    if own is not None:
        return Source(own, image.name, image.source == "MOVIE")
    width, height = int(image.size[0]), int(image.size[1])
    if width < 1 or height < 1 or (not image.has_data and image.source == "FILE"):
        raise SourceError(
            f"the image '{image.name}' has no pixels (its file {image.filepath or '(none)'} is missing); "
            "reload or replace it"
        )
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    cast(Any, image.pixels).foreach_get(pixels)  # typed as a float sequence in the stubs
    folder = Path(tempfile.mkdtemp(prefix="mega-image-"))
    stem = bpy.path.clean_name(Path(image.name).stem) or "image"
    path = write_png(folder / f"{stem}.png", pixels, width, height, linear=bool(image.is_float))
    return Source(path, image.name, False, cleanup=[folder])


def clip_source(scene: bpy.types.Scene, clip: bpy.types.MovieClip, settings: Any) -> Source:
    """A Movie Clip's video file with the file frames of the scene's (or the chosen) frame range."""
    if clip.source != "MOVIE":
        raise SourceError(f"the clip '{clip.name}' is an image sequence; reconstruct a video file, or its frames")
    path = Path(bpy.path.abspath(clip.filepath, library=clip.library))
    if not path.is_file():
        raise SourceError(f"the clip '{clip.name}' points at {path}, which does not exist; relocate the clip")
    first, last = (
        (scene.frame_start, scene.frame_end)
        if settings.use_scene_frames
        else (settings.frame_start, settings.frame_end)
    )
    try:
        start, stop = clip_file_frames(first, last, clip.frame_start, clip.frame_offset, clip.frame_duration)
    except ValueError as exc:
        raise SourceError(str(exc)) from exc
    return Source(path, clip.name, True, {"start": start, "stop": stop, "step": int(settings.frame_step)})


def resolve_source(context: bpy.types.Context) -> Source:
    """What the panel's source settings point at, as a file; raises SourceError saying what to pick."""
    scene = context.scene
    if scene is None:
        raise SourceError("there is no active scene")
    settings = scene.mega  # type: ignore[attr-defined]
    if settings.source_kind == "IMAGE":
        image = settings.image or active_editor_image(context)
        if image is None:
            raise SourceError("no image: open one in an Image Editor or pick one in the MEGA panel")
        return image_source(image)
    if settings.source_kind == "CLIP":
        clip = settings.clip or scene.active_clip
        if clip is None:
            raise SourceError("no movie clip: open one in the Movie Clip Editor or pick one in the MEGA panel")
        return clip_source(scene, clip, settings)
    if not settings.filepath:
        raise SourceError("no file: choose an image or video file in the MEGA panel")
    path = Path(bpy.path.abspath(settings.filepath))
    if not path.is_file():
        raise SourceError(f"the file {path} does not exist; choose another")
    return Source(path, path.name, path.suffix.lower() in VIDEO_SUFFIXES)


def temporal_options(settings: Any) -> dict[str, Any]:
    """The protocol's ``temporal`` object (docs/protocol.md) from the panel's settings (``Scene.mega``)."""
    return {
        "path": str(settings.temporal_path),
        "smooth": bool(settings.smooth),
        "min_cutoff": float(settings.one_euro_min_cutoff),
        "beta": float(settings.one_euro_beta),
        "d_cutoff": float(settings.one_euro_d_cutoff),
        "causal": bool(settings.one_euro_causal),
    }


def detection_options(settings: Any) -> dict[str, Any]:
    """The protocol's ``detection`` object (docs/protocol.md) from the panel's settings (``Scene.mega``)."""
    return {
        "detector": str(settings.detector),
        "conf": round(float(settings.detect_threshold), 6),
        "min_height_px": float(settings.min_height_px),
        "max_people": int(settings.max_people) or None,
    }


def track_options(clip: bpy.types.MovieClip, settings: Any, frames: dict[str, int] | None) -> dict[str, Any]:
    """``boxes_per_frame`` and ``boxes_mode`` from the clip's person tracks (``{}`` when off or none)."""
    if not settings.use_tracks:
        return {}
    from .overlay import clip_frame_boxes

    span = (int(frames["start"]), int(frames["stop"])) if frames else None
    boxes = clip_frame_boxes(clip, settings.track_prefix, span)
    return {"boxes_per_frame": boxes, "boxes_mode": str(settings.boxes_mode)} if boxes else {}


def results_dir(context: bpy.types.Context) -> Path:
    """Where result pairs go: the preference, else ``MEGA results`` beside the saved .blend, else the add-on's
    user folder."""
    preferences = get_preferences(context)
    if preferences is not None and preferences.results_dir:
        return Path(bpy.path.abspath(preferences.results_dir))
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent / "MEGA results"
    return addon_user_dir("results")


class MEGA_OT_reconstruct(bpy.types.Operator):
    """Send the chosen image, clip or file to the MEGA runtime and build the people it finds"""

    bl_idname = "mega.reconstruct"
    bl_label = "Reconstruct"
    bl_options = NOT_UNDOABLE  # the scene is built later, with its own undo step

    model: StringProperty(
        name="Model", description=f"{', '.join(defaults.MODEL_SHORT_NAMES)}; empty = preferences", default=""
    )
    hypotheses: IntProperty(name="Hypotheses", description="0 = preferences", default=0, min=0, max=256)
    steps: IntProperty(name="Steps", description="0 = preferences", default=0, min=0, max=64)
    seed: IntProperty(name="Seed", description="-1 = preferences", default=-1, min=-1)
    device: StringProperty(name="Device", description="auto, cpu, cuda, mps; empty = preferences", default="")

    _timer: Any = None
    _job_id: str = ""

    def _options(self, context: bpy.types.Context) -> dict[str, Any]:
        preferences = get_preferences(context)
        options: dict[str, Any] = {}
        if preferences is not None:
            options = {
                "model": preferences.model,
                "hypotheses": preferences.num_hypotheses,
                "steps": preferences.num_steps,
                "seed": preferences.seed,
                "device": preferences.device.lower(),
                "precision": preferences.precision,
                "score_steps": preferences.score_steps,
            }
        overrides = {
            "model": self.model or None,
            "hypotheses": self.hypotheses or None,
            "steps": self.steps or None,
            "seed": self.seed if self.seed >= 0 else None,
            "device": self.device or None,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return options

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        try:
            source = resolve_source(context)
        except SourceError as exc:
            self.report({"ERROR"}, f"MEGA Reconstruct: {exc}")
            return {"CANCELLED"}
        options = self._options(context)
        if source.frames is not None:
            options["frames"] = source.frames
        preferences = get_preferences(context)
        if preferences is not None and preferences.smpl_model_path:
            options["smpl_model"] = bpy.path.abspath(preferences.smpl_model_path)
        if context.scene is not None:
            settings = context.scene.mega  # type: ignore[attr-defined]
            options["detection"] = detection_options(settings)
            if source.is_video:
                options["temporal"] = temporal_options(settings)
                options["detect_every"] = int(settings.detect_every)
            if settings.source_kind == "CLIP":
                clip = settings.clip or context.scene.active_clip
                if clip is not None:
                    options.update(track_options(clip, settings, source.frames))
        try:
            self._job_id = jobs.submit(
                context, source.path, results_dir(context), options, label=source.label, cleanup=source.cleanup
            )
        except (LinkError, ValueError) as exc:
            for path in source.cleanup:
                jobs.remove_path(path)
            self.report({"ERROR"}, f"MEGA Reconstruct: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"MEGA: reconstructing {source.label}")
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        outcome = self.execute(context)
        wm = context.window_manager
        if outcome != {"FINISHED"} or bpy.app.background or wm is None or context.window is None:
            return outcome
        self._timer = wm.event_timer_add(MODAL_POLL_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        if event.type == "ESC" and event.value == "PRESS":
            jobs.cancel(self._job_id)
            return {"RUNNING_MODAL"}
        if event.type == "TIMER" and not jobs.is_running(self._job_id):
            if context.window_manager is not None and self._timer is not None:
                context.window_manager.event_timer_remove(self._timer)
            ended = jobs.outcome(self._job_id)
            if ended is not None and ended[0] == "failed":
                self.report({"ERROR"}, f"MEGA Reconstruct: {ended[1]}")
            return {"FINISHED"}
        return {"PASS_THROUGH"}


class MEGA_OT_cancel_reconstruct(bpy.types.Operator):
    """Cancel the running reconstruction (a video keeps the frames already done)"""

    bl_idname = "mega.cancel_reconstruct"
    bl_label = "Cancel Reconstruction"
    bl_options = NOT_UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        if not jobs.cancel():
            self.report({"INFO"}, "No reconstruction is running")
            return {"CANCELLED"}
        return {"FINISHED"}


class MEGA_OT_restart_runtime(bpy.types.Operator):
    """Stop the MEGA runtime (cancelling its jobs) and start it again with the current preferences"""

    bl_idname = "mega.restart_runtime"
    bl_label = "Restart Runtime"
    bl_options = NOT_UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        try:
            jobs.restart(context)
        except (LinkError, ValueError) as exc:
            jobs.record_failure(str(exc))
            self.report({"ERROR"}, f"MEGA runtime: {exc}")
            return {"CANCELLED"}
        return {"FINISHED"}


class MEGA_OT_stop_runtime(bpy.types.Operator):
    """Stop the MEGA runtime (it frees its memory; the next Reconstruct starts it again)"""

    bl_idname = "mega.stop_runtime"
    bl_label = "Stop Runtime"
    bl_options = NOT_UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        jobs.stop()
        return {"FINISHED"}


CLASSES = (MEGA_OT_reconstruct, MEGA_OT_cancel_reconstruct, MEGA_OT_restart_runtime, MEGA_OT_stop_runtime)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    jobs.stop()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
