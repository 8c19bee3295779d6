# mypy: disable-error-code="valid-type"
"""See what the detector did, and give it boxes: the Movie Clip editor's side of person boxes.

* **Overlay** — a draw handler of the Movie Clip editor (``SpaceClipEditor``, main region, ``POST_PIXEL``) draws,
  over the clip at the current frame, the person boxes of every MEGA result built in the scene from that clip:
  each in its track ID's colour, labelled ``id N``, dashed-looking double line for boxes the user gave. A person
  with no box is one the detector missed: draw a track for them (below) and reconstruct again. Toggle:
  ``Scene.mega.show_boxes``. The boxes come from :func:`mega_blender.clip_boxes.read_boxes` (only the box arrays
  are read; cached per result file and its modification time).
* **Tracks as boxes** — tracks of the clip's active tracking object whose name starts with
  ``Scene.mega.track_prefix`` (default ``MEGA``) are people: each keyed marker's pattern area (size it around the
  person) becomes that frame's box (:func:`clip_frame_boxes`), sent as the job's ``boxes_per_frame``.

In background mode (``blender -b``) nothing is drawn, but the handler registers and :func:`overlay_rects_for`
computes what would be drawn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bpy

from .clip_boxes import OverlayRect, ResultBoxes, TrackMarker, clip_file_frame, frame_boxes, overlay_rects, read_boxes

log = logging.getLogger(__name__)

_handle: Any = None
#: result .json path → (its modification time, its boxes); re-read when the file changes.
_cache: dict[str, tuple[float, ResultBoxes | None]] = {}


def person_tracks(clip: bpy.types.MovieClip, prefix: str) -> list[Any]:
    """The tracks of ``clip``'s active tracking object named ``prefix…`` (case-insensitive)."""
    tracking = clip.tracking
    if tracking is None:
        return []
    tracking_object = tracking.objects.active
    tracks = tracking_object.tracks if tracking_object is not None else tracking.tracks
    wanted = prefix.strip().lower()
    return [t for t in tracks if t.name.lower().startswith(wanted)]


def track_markers(track: Any) -> list[TrackMarker]:
    """The enabled markers of a track, as plain data."""
    return [
        TrackMarker(
            int(m.frame), (float(m.co[0]), float(m.co[1])), tuple((float(c[0]), float(c[1])) for c in m.pattern_corners)
        )
        for m in track.markers
        if not m.mute
    ]


def clip_frame_boxes(
    clip: bpy.types.MovieClip, prefix: str, file_frames: tuple[int, int] | None = None
) -> dict[str, list[list[float]]]:
    """The protocol's ``boxes_per_frame`` from the person tracks of ``clip`` (``{}`` when it has none)."""
    width, height = (int(v) for v in clip.size)
    if width < 1 or height < 1:
        return {}
    return frame_boxes((track_markers(t) for t in person_tracks(clip, prefix)), width, height, file_frames)


def _result_boxes(path: str) -> ResultBoxes | None:
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return None
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        boxes: ResultBoxes | None = read_boxes(path)
    except (OSError, ValueError, KeyError) as exc:
        log.debug("no overlay boxes from %s: %s", path, exc)
        boxes = None
    _cache[path] = (mtime, boxes)
    return boxes


def _same_file(a: str, b: Path) -> bool:
    try:
        return bool(a) and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def overlay_rects_for(scene: bpy.types.Scene, clip: bpy.types.MovieClip) -> list[OverlayRect]:
    """The boxes to draw over ``clip`` at the scene's current frame: those of every result built in ``scene``
    (objects with ``mega_result_path``) whose source is the clip's file."""
    clip_path = Path(bpy.path.abspath(clip.filepath, library=clip.library))
    paths = sorted({str(o["mega_result_path"]) for o in scene.objects if o.get("mega_result_path") is not None})
    file_frame = clip_file_frame(scene.frame_current, clip.frame_start, clip.frame_offset)
    rects: list[OverlayRect] = []
    for path in paths:
        boxes = _result_boxes(path)
        if boxes is not None and _same_file(boxes.source_path, clip_path):
            rects.extend(overlay_rects(boxes, file_frame))
    return rects


def _draw() -> None:  # pragma: no cover - needs a window (not in background mode)
    context = bpy.context
    scene, space, region = context.scene, context.space_data, context.region
    settings = getattr(scene, "mega", None)
    if scene is None or settings is None or not settings.show_boxes or space is None or region is None:
        return
    clip = getattr(space, "clip", None)
    if clip is None:
        return
    rects = overlay_rects_for(scene, clip)
    if not rects:
        return
    import blf
    import gpu
    from gpu_extras.batch import batch_for_shader

    from .clip_boxes import track_colour

    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    view = region.view2d
    gpu.state.blend_set("ALPHA")
    gpu.state.line_width_set(2.0)
    for rect in rects:
        (ax, ay), (bx, by) = (
            view.view_to_region(rect.x1, rect.y1, clip=False),
            view.view_to_region(rect.x2, rect.y2, clip=False),
        )
        lines = [(ax, ay), (bx, ay), (bx, ay), (bx, by), (bx, by), (ax, by), (ax, by), (ax, ay)]
        if rect.given:  # a second, inner outline marks a box the user gave
            lines += [(ax + 3, ay + 3), (bx - 3, ay + 3), (bx - 3, ay + 3), (bx - 3, by - 3)]
            lines += [(bx - 3, by - 3), (ax + 3, by - 3), (ax + 3, by - 3), (ax + 3, ay + 3)]
        colour = track_colour(rect.track_id)
        shader.uniform_float("color", colour)
        batch_for_shader(shader, "LINES", {"pos": lines}).draw(shader)
        blf.position(0, ax + 4, by + 4, 0)
        blf.size(0, 13)
        blf.color(0, *colour)
        blf.draw(0, f"id {rect.track_id}" + (" given" if rect.given else ""))
    gpu.state.line_width_set(1.0)
    gpu.state.blend_set("NONE")


def is_registered() -> bool:
    """Whether the overlay's draw handler is installed."""
    return _handle is not None


def register() -> None:
    global _handle
    if _handle is None:
        _handle = bpy.types.SpaceClipEditor.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceClipEditor.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    _cache.clear()
