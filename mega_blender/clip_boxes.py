"""Person boxes between Blender's Movie Clip editor and the runtime, in plain Python (no ``bpy``).

Two directions:

* **tracks → boxes**: a tracking marker's pattern area (its four corners, relative to the marker position, in
  units of the frame size, y up — what ``MovieTrackingMarker.pattern_corners`` and ``.co`` hold) becomes an image
  box ``[x1, y1, x2, y2]`` in pixels, y down (:func:`marker_box`); :func:`frame_boxes` gathers the markers of
  several tracks into the protocol's ``boxes_per_frame`` object, keyed by the clip file's 0-based frame number
  (a marker's ``frame`` is the clip's 1-based frame; docs/protocol.md).
* **result → overlay**: :func:`overlay_rects` gives, for one clip frame, each person's box of a result in the
  clip's pixel space (y up: what the Movie Clip editor's ``View2D`` maps to the screen), with its track ID and
  whether the detector found it or the user gave it (format 1.2 ``box_source``); :func:`read_boxes` reads only
  the arrays that needs from a result pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Arrays the overlay reads from a result's ``.npz`` (``box_source`` only when present: format 1.2).
OVERLAY_ARRAYS = ("boxes_xyxy", "valid", "track_ids", "frame_indices")
#: Box codes of format 1.2's ``box_source``.
SOURCE_DETECTED, SOURCE_GIVEN = 0, 1


def marker_box(
    co: Sequence[float], corners: Sequence[Sequence[float]], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """A marker's pattern area → ``(x1, y1, x2, y2)`` image pixels (y down), clipped to the frame.

    ``co``: marker position (0…1 of the frame, y up); ``corners``: four (x, y) offsets from it in the same units.
    None when nothing of the box lies inside the frame or it has no area.
    """
    xs = [(co[0] + c[0]) * width for c in corners]
    ys = [(1.0 - (co[1] + c[1])) * height for c in corners]
    x1, x2 = max(min(xs), 0.0), min(max(xs), float(width))
    y1, y2 = max(min(ys), 0.0), min(max(ys), float(height))
    if not (x2 > x1 and y2 > y1):
        return None
    return (round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))


@dataclass(frozen=True)
class TrackMarker:
    """One keyed, enabled marker of a track: ``frame`` is the clip's 1-based frame number."""

    frame: int
    co: tuple[float, float]
    corners: tuple[tuple[float, float], ...]


def frame_boxes(
    tracks: Iterable[Sequence[TrackMarker]],
    width: int,
    height: int,
    file_frames: tuple[int, int] | None = None,
) -> dict[str, list[list[float]]]:
    """The markers of ``tracks`` (each a person) → ``{"<file frame>": [[x1, y1, x2, y2], ...]}``.

    ``file_frames``: keep only file frames in ``[start, stop)``. A track contributes one box per frame it has an
    enabled marker on (Blender's tracker keys each tracked frame); frames are sorted.
    """
    out: dict[int, list[list[float]]] = {}
    for markers in tracks:
        for marker in markers:
            file_frame = int(marker.frame) - 1
            if file_frame < 0 or (file_frames is not None and not file_frames[0] <= file_frame < file_frames[1]):
                continue
            box = marker_box(marker.co, marker.corners, width, height)
            if box is not None:
                out.setdefault(file_frame, []).append(list(box))
    return {str(f): out[f] for f in sorted(out)}


@dataclass(frozen=True)
class ResultBoxes:
    """What the overlay draws from a result: ``boxes_xyxy`` (F, P, 4) pixels, ``valid`` (F, P), ``track_ids``
    (P,), ``frame_indices`` (F,) file frames, ``box_source`` (F, P) or None (results before 1.2), frame size."""

    boxes_xyxy: np.ndarray
    valid: np.ndarray
    track_ids: np.ndarray
    frame_indices: np.ndarray
    box_source: np.ndarray | None
    width: int
    height: int
    #: The result's ``source.path`` (the video it was made from), "" when absent.
    source_path: str = ""


def read_boxes(json_path: Path | str) -> ResultBoxes:
    """Read only the overlay's arrays of a result pair (the ``.npz`` is opened lazily; vertices are not loaded).

    Raises ``OSError``, ``ValueError`` or ``KeyError`` on a missing or malformed pair (the overlay then draws
    nothing for it; importing the result reports the problem in full).
    """
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(meta, Mapping):
        raise ValueError(f"{json_path} is not a result")
    npz_path = json_path.with_name(str(meta.get("arrays_file") or json_path.stem + ".npz"))
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {name: np.asarray(npz[name]) for name in OVERLAY_ARRAYS}
        source = np.asarray(npz["box_source"]) if "box_source" in npz.files else None
    frames, people = arrays["valid"].shape
    if arrays["boxes_xyxy"].shape != (frames, people, 4) or arrays["frame_indices"].shape != (frames,):
        raise ValueError(f"{npz_path}: boxes_xyxy, valid and frame_indices do not fit together")
    if source is not None and source.shape != (frames, people):
        raise ValueError(f"{npz_path}: box_source has shape {source.shape}, expected {(frames, people)}")
    size = meta.get("source", {})
    return ResultBoxes(
        arrays["boxes_xyxy"].astype(np.float32),
        arrays["valid"].astype(bool),
        arrays["track_ids"].astype(np.int64),
        arrays["frame_indices"].astype(np.int64),
        source,
        int(size.get("width", 0)),
        int(size.get("height", 0)),
        str(size.get("path", "")),
    )


@dataclass(frozen=True)
class OverlayRect:
    """One box to draw: ``x1, y1, x2, y2`` in the clip's pixels with y up (bottom-left origin), the person's
    ``track_id`` and whether the box was ``given`` by the user (else the detector found it)."""

    x1: float
    y1: float
    x2: float
    y2: float
    track_id: int
    given: bool


def overlay_rects(boxes: ResultBoxes, file_frame: int) -> list[OverlayRect]:
    """The boxes of file frame ``file_frame`` (0-based), y flipped for the clip editor; [] when the result does not
    hold that frame (not processed, or outside its range)."""
    hits = np.flatnonzero(boxes.frame_indices == int(file_frame))
    if len(hits) == 0:
        return []
    f = int(hits[0])
    out = []
    for p in np.flatnonzero(boxes.valid[f]):
        x1, y1, x2, y2 = (float(v) for v in boxes.boxes_xyxy[f, p])
        given = boxes.box_source is not None and int(boxes.box_source[f, p]) == SOURCE_GIVEN
        out.append(OverlayRect(x1, boxes.height - y2, x2, boxes.height - y1, int(boxes.track_ids[p]), given))
    return out


def clip_file_frame(scene_frame: int, clip_start: int, clip_offset: int) -> int:
    """The clip file's 0-based frame a Movie Clip shows at ``scene_frame`` (see ``sources.clip_file_frames``)."""
    return scene_frame - clip_start + clip_offset


#: Colours of track IDs (RGBA, 0…1), the same order as the runtime's previews.
TRACK_COLOURS = (
    (0.35, 0.59, 0.87, 1.0),
    (0.90, 0.71, 0.35, 1.0),
    (0.47, 0.78, 0.47, 1.0),
    (0.78, 0.47, 0.78, 1.0),
    (0.90, 0.47, 0.35, 1.0),
    (0.35, 0.78, 0.78, 1.0),
)


def track_colour(track_id: int) -> tuple[float, float, float, float]:
    """The overlay colour of a track ID."""
    return TRACK_COLOURS[int(track_id) % len(TRACK_COLOURS)]
