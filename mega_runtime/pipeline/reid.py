"""Who is who again: appearance and body-shape cues, and offline tracklet stitching (numpy + OpenCV, no torch).

Box geometry (:mod:`mega_runtime.pipeline.tracking`) cannot tell two people apart once one has been out of sight
for long, or has left the image and come back. Two cues can:

* **appearance** — :func:`appearance_descriptor`: an HSV colour histogram of the upper and of the lower half of
  the person's box (clothes), each L1-normalised, stored as square roots so that the dot product of two halves is
  their Bhattacharyya coefficient; :func:`appearance_similarity` (1 identical … 0 disjoint colours);
* **the body itself** — :func:`shape_descriptor`: the logarithms of 15 distances between landmark vertices of
  MEGA's recovered mesh (head width, shoulder and hip width, upper/lower arm, thigh, shin, foot, torso side). Limb
  segments keep their length when the pose changes, so the descriptor of one person changes little from frame to
  frame; :func:`shape_distance` is the root-mean-square difference of the logs (≈ relative length difference).

:func:`stitch_tracklets` is the offline pass after a video: it merges tracklets (fragments of one person's track)
that never overlap in time, whose appearance and shape agree and whose gap is plausible for a walking person
(:class:`StitchConfig`). Greedy by cost, cheapest first; a merge that would put two tracklets seen in one frame
into one identity is never made. Measured on synthetic clips: docs/video.md, :mod:`mega_runtime.pipeline.clip_eval`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: Histogram bins per HSV channel (hue, saturation, value) of each half of a person's box.
HIST_BINS = (12, 4, 4)
#: Fraction of the box cut from each side and from the top (the head, hair and background at the box's edges).
CROP_INSET = (0.2, 0.12)
#: Least share of a half of the box that must stay once the people in front are masked out; below it the whole half
#: is used.
MIN_VISIBLE = 0.15
#: Dimension of :func:`appearance_descriptor`: two halves of ``prod(HIST_BINS)`` bins each.
APPEARANCE_DIM = 2 * HIST_BINS[0] * HIST_BINS[1] * HIST_BINS[2]

#: Landmark vertices of the 6890-vertex template, picked once by rule from ``template.ply`` (extreme lateral vertex
#: of a thin horizontal slice of a region: ears, shoulders, elbows, wrists, hips, knees, ankles; heel and toe: the
#: back- and frontmost foot vertices). ``tests/runtime/test_reid.py`` checks the rule still gives them.
LANDMARKS: dict[str, int] = {
    "left_ear": 486, "right_ear": 3971,
    "left_shoulder": 1881, "right_shoulder": 6470,
    "left_elbow": 1620, "right_elbow": 5087,
    "left_wrist": 1963, "right_wrist": 5421,
    "left_hip": 1228, "right_hip": 4711,
    "left_knee": 1008, "right_knee": 4496,
    "left_ankle": 3187, "right_ankle": 6608,
    "left_heel": 3387, "right_heel": 6785,
    "left_toe": 3218, "right_toe": 6617,
}  # fmt: skip
#: Landmark pairs whose distance :func:`shape_descriptor` measures (segments that keep their length in any pose).
SHAPE_PAIRS: tuple[tuple[str, str], ...] = (
    ("left_ear", "right_ear"),
    ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"),
    *(
        (f"{side}_{a}", f"{side}_{b}")
        for side in ("left", "right")
        for a, b in (
            ("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"), ("heel", "toe"),
            ("shoulder", "hip"),
        )
    ),
)  # fmt: skip
SHAPE_DIM = len(SHAPE_PAIRS)


def appearance_descriptor(image_bgr: np.ndarray, box: np.ndarray, occluders: np.ndarray | None = None) -> np.ndarray:
    """(APPEARANCE_DIM,) float32 colour descriptor of the person in ``box`` (xyxy pixels) of ``image_bgr``
    ((H, W, 3) uint8 BGR): the square roots of the L1-normalised HSV histograms of the upper and the lower half of
    the box (inset by :data:`CROP_INSET`). ``occluders`` (K, 4) xyxy: boxes of people in front, whose pixels are
    left out (unless that leaves less than :data:`MIN_VISIBLE` of a half). All zeros when the box holds no pixel."""
    import cv2

    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    bw, bh = x1 - x0, y1 - y0
    x0, x1 = x0 + CROP_INSET[0] * bw, x1 - CROP_INSET[0] * bw
    y0 = y0 + CROP_INSET[1] * bh
    ys = [y0, (y0 + y1) / 2, y1]
    out = np.zeros(APPEARANCE_DIM, np.float32)
    half = APPEARANCE_DIM // 2
    ix0, ix1 = max(round(x0), 0), min(round(x1), width)
    front = np.zeros((0, 4)) if occluders is None else np.asarray(occluders, dtype=np.float64).reshape(-1, 4)
    for k in range(2):
        iy0, iy1 = max(round(ys[k]), 0), min(round(ys[k + 1]), height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        hsv = cv2.cvtColor(np.ascontiguousarray(image_bgr[iy0:iy1, ix0:ix1]), cv2.COLOR_BGR2HSV)
        mask = np.full(hsv.shape[:2], 255, np.uint8)
        for ox0, oy0, ox1, oy1 in front:
            mask[
                max(round(oy0) - iy0, 0) : max(round(oy1) - iy0, 0), max(round(ox0) - ix0, 0) : max(round(ox1) - ix0, 0)
            ] = 0
        if np.count_nonzero(mask) < MIN_VISIBLE * mask.size:
            mask[:] = 255
        hist = cv2.calcHist([hsv], [0, 1, 2], mask, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        total = float(hist.sum())
        if total > 0:
            out[k * half : (k + 1) * half] = np.sqrt(hist / total)
    return out


def appearance_descriptors(image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, APPEARANCE_DIM) descriptors of all the people of one frame: ``boxes`` (N, 4) xyxy pixels. Each person's
    occluders are the boxes whose bottom edge is lower in the image (nearer the camera, standing in front)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), APPEARANCE_DIM), np.float32)
    for i, box in enumerate(boxes):
        out[i] = appearance_descriptor(image_bgr, box, boxes[boxes[:, 3] > box[3]])
    return out


def appearance_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bhattacharyya coefficient of two appearance descriptors, averaged over the two halves: (..., D) and
    (..., D) broadcast → (...) float64 in [0, 1] (1: the same colours). A half missing in either counts 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    half = a.shape[-1] // 2
    upper = (a[..., :half] * b[..., :half]).sum(-1)
    lower = (a[..., half:] * b[..., half:]).sum(-1)
    return np.clip((upper + lower) / 2, 0.0, 1.0)


def mean_appearance(descriptors: np.ndarray) -> np.ndarray:
    """The appearance of a tracklet: (N, D) descriptors → (D,) float64, each half the renormalised mean histogram
    (in square-root form, like a single descriptor)."""
    d = np.asarray(descriptors, dtype=np.float64).reshape(-1, APPEARANCE_DIM) ** 2
    half = APPEARANCE_DIM // 2
    out = np.zeros(APPEARANCE_DIM)
    for k in range(2):
        part = d[:, k * half : (k + 1) * half].sum(0)
        total = part.sum()
        if total > 0:
            out[k * half : (k + 1) * half] = np.sqrt(part / total)
    return out


def shape_descriptor(vertices: np.ndarray) -> np.ndarray:
    """Log landmark distances of recovered bodies: ``vertices`` (..., 6890, 3) metres → (..., SHAPE_DIM) float32,
    ``log(distance in metres)`` for each of :data:`SHAPE_PAIRS`. Translation and rotation do not change it."""
    v = np.asarray(vertices, dtype=np.float64)
    a = v[..., [LANDMARKS[p] for p, _ in SHAPE_PAIRS], :]
    b = v[..., [LANDMARKS[q] for _, q in SHAPE_PAIRS], :]
    return np.log(np.linalg.norm(a - b, axis=-1).clip(1e-4)).astype(np.float32)


def shape_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference of two shape descriptors (..., SHAPE_DIM) → (...) float64: about the relative
    difference of the two bodies' segment lengths (0.05 ≈ 5 %)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt((diff**2).mean(-1))


@dataclass(frozen=True)
class StitchConfig:
    """When two tracklets are one person (:func:`stitch_tracklets`).

    ``min_appearance``: the least Bhattacharyya similarity of their mean appearances; ``max_shape``: the largest
    :func:`shape_distance` of their median shapes (only when both have shapes); ``max_gap``: most processed frames
    between the end of one and the start of the other; ``max_speed``: the fastest plausible move across the gap, in
    box heights per processed frame, on top of ``slack`` box heights (a person can re-enter anywhere at the
    border, so the gap must leave them time to walk there); ``shape_weight``: how much a unit of shape distance
    costs against a unit of appearance dissimilarity. A *near continuation* — the later tracklet starting at most
    ``near_gap`` frames after the earlier ends, within ``near_move`` box heights of where it ended — needs only
    ``near_min_appearance`` (a person coming out from behind someone is often seen half-covered at first).
    """

    min_appearance: float = 0.8
    max_shape: float = 0.06
    max_gap: int = 900
    max_speed: float = 0.12
    slack: float = 1.0
    shape_weight: float = 4.0
    near_gap: int = 8
    near_move: float = 0.5
    near_min_appearance: float = 0.3

    def __post_init__(self) -> None:
        values = (
            self.min_appearance, self.max_shape, self.max_speed, self.slack, self.shape_weight, self.near_move,
            self.near_min_appearance,
        )  # fmt: skip
        counts_ok = self.max_gap >= 1 and self.near_gap >= 0
        if not all(math.isfinite(v) and v >= 0 for v in values) or not counts_ok or self.min_appearance > 1:
            raise ValueError(f"stitching settings must be finite, not negative, min_appearance ≤ 1: {self}")


@dataclass(frozen=True)
class Tracklet:
    """One online track: ``frames`` (N,) int processed-frame positions, increasing; ``boxes`` (N, 4) xyxy pixels;
    ``appearance`` (N, APPEARANCE_DIM) or None; ``shape`` (N, SHAPE_DIM) log metres or None."""

    track_id: int
    frames: np.ndarray
    boxes: np.ndarray
    appearance: np.ndarray | None = None
    shape: np.ndarray | None = None


def _summary(t: Tracklet) -> tuple[np.ndarray | None, np.ndarray | None]:
    app = mean_appearance(t.appearance) if t.appearance is not None and len(t.appearance) else None
    if app is not None and not app.any():
        app = None
    shape = np.median(np.asarray(t.shape, np.float64), axis=0) if t.shape is not None and len(t.shape) else None
    return app, shape


def _centre_height(box: np.ndarray) -> tuple[np.ndarray, float]:
    box = np.asarray(box, dtype=np.float64)
    return (box[:2] + box[2:]) / 2, float(max(box[3] - box[1], 1.0))


def stitch_tracklets(tracklets: list[Tracklet], config: StitchConfig | None = None) -> dict[int, int]:
    """Merge fragments of one person: tracklets → {track id: identity}, identities 0, 1, 2, … in order of first
    appearance. Two tracklets (or groups of merged ones) are merged when neither is seen in a frame the other is
    seen in, their appearances are at least ``min_appearance`` alike, their shapes (when both have them) at most
    ``max_shape`` apart, and the later one starts at most ``max_gap`` frames after the earlier ends, no farther
    from where it ended than ``slack + max_speed · gap`` box heights. Cost: ``(1 − similarity) + shape_weight ·
    shape distance``; cheapest first (greedy), ties by track ids. Deterministic. A tracklet without appearance is
    never merged.
    """
    config = config or StitchConfig()
    items = sorted(tracklets, key=lambda t: (int(t.frames[0]) if len(t.frames) else 0, t.track_id))
    items = [t for t in items if len(t.frames)]
    summaries = [_summary(t) for t in items]
    candidates: list[tuple[float, int, int]] = []
    for i, a in enumerate(items):
        app_a, shape_a = summaries[i]
        if app_a is None:
            continue
        end_centre, end_height = _centre_height(a.boxes[-1])
        for j, b in enumerate(items):
            app_b, shape_b = summaries[j]
            if i == j or app_b is None:
                continue
            gap = int(b.frames[0]) - int(a.frames[-1])
            if gap < 1 or gap > config.max_gap:
                continue
            start_centre, start_height = _centre_height(b.boxes[0])
            height = max(end_height, start_height)
            distance = float(np.linalg.norm(start_centre - end_centre)) / height
            if distance > config.slack + config.max_speed * gap:
                continue
            similarity = float(appearance_similarity(app_a, app_b))
            near = gap <= config.near_gap and distance <= config.near_move
            if similarity < (config.near_min_appearance if near else config.min_appearance):
                continue
            cost = 1.0 - similarity
            if shape_a is not None and shape_b is not None:
                apart = float(shape_distance(shape_a, shape_b))
                if apart > config.max_shape:
                    continue
                cost += config.shape_weight * apart
            candidates.append((cost, i, j))
    candidates.sort()
    group = list(range(len(items)))
    frames = [set(map(int, t.frames)) for t in items]

    def root(k: int) -> int:
        while group[k] != k:
            group[k] = group[group[k]]
            k = group[k]
        return k

    merges = 0
    for _, i, j in candidates:
        ri, rj = root(i), root(j)
        if ri == rj or frames[ri] & frames[rj]:
            continue
        keep, drop = min(ri, rj), max(ri, rj)
        group[drop] = keep
        frames[keep] |= frames[drop]
        merges += 1
    identities: dict[int, int] = {}
    out: dict[int, int] = {}
    for k, t in enumerate(items):  # items are in order of first appearance
        out[t.track_id] = identities.setdefault(root(k), len(identities))
    log.info("stitching: %d tracklets → %d identities (%d merges)", len(items), len(identities), merges)
    return out


def tracklets_from_frames(
    ids: list[np.ndarray],
    boxes: list[np.ndarray],
    appearance: list[np.ndarray] | None = None,
    shapes: list[np.ndarray] | None = None,
) -> list[Tracklet]:
    """Per processed frame ``ids`` (N_f,) int, ``boxes`` (N_f, 4) and optionally ``appearance`` (N_f, D) and
    ``shapes`` (N_f, SHAPE_DIM) → one :class:`Tracklet` per track id."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for f, frame_ids in enumerate(ids):
        for k, tid in enumerate(np.asarray(frame_ids).reshape(-1).tolist()):
            rows.setdefault(int(tid), []).append((f, k))
    out = []
    for tid, where in sorted(rows.items()):
        out.append(
            Tracklet(
                track_id=tid,
                frames=np.array([f for f, _ in where], np.int64),
                boxes=np.array([np.asarray(boxes[f], np.float64).reshape(-1, 4)[k] for f, k in where]),
                appearance=None
                if appearance is None
                else np.array([np.asarray(appearance[f]).reshape(len(ids[f]), -1)[k] for f, k in where]),
                shape=None
                if shapes is None
                else np.array([np.asarray(shapes[f]).reshape(len(ids[f]), -1)[k] for f, k in where]),
            )
        )
    return out
