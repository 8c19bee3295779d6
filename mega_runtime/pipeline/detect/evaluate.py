"""Scoring person detections against hand-annotated boxes: matches, precision/recall per person size, group boxes.

The rules (also in docs/detection.md, "Evaluation"):

* **Counted people** are ground-truth boxes at least ``min_height`` pixels tall (default 60). Shorter ones, and
  the annotation's ``ignore`` regions (people mostly hidden, blurred far background), are *ignored*.
* **Matching** (as COCO): detections in order of score, highest first; each takes the still unmatched counted
  person it overlaps most, if that IoU is ≥ ``iou`` (0.5). A detection left over that overlaps an ignored box
  by IoU ≥ ``iou``, or lies at least half inside one, or is shorter than ``min_height / 1.25`` (48 px; the
  Caltech pedestrian benchmark's convention for detections outside the evaluated heights), is ignored
  (neither a hit nor a false positive).
* **Precision** = matched detections / (detections − ignored ones); **recall** = matched people / counted people.
* **Size buckets** by person height in pixels (``SIZE_BUCKETS``): a person falls in the bucket of its box's
  height; a detection in that of the person it matched, else of its own height.
* **Group box**: a detection that holds at least two counted people — at least ``GROUP_COVER`` (70 %) of each
  one's box area lies inside it — and matches none of them at IoU ≥ ``iou``. The **group rate** is group boxes /
  detections that are not ignored. A box that matches one person and also overlaps a neighbour is no group box.

All boxes are ``(x1, y1, x2, y2)`` in pixels (floats); numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GROUP_COVER = 0.7
"""Fraction of a person's box area that must lie inside a detection for the detection to *hold* that person."""

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("60-100 px", 60.0, 100.0),
    ("100-200 px", 100.0, 200.0),
    ("200-600 px", 200.0, 600.0),
    (">=600 px", 600.0, float("inf")),
)
"""(name, lowest height, highest height) of the person-height buckets; heights below the first are ignored."""

SHORT_DETECTION_SLACK = 1.25
"""An unmatched detection shorter than ``min_height / SHORT_DETECTION_SLACK`` is ignored (out of range)."""

Box = Sequence[float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of the boxes ``a`` (N, 4) and ``b`` (M, 4), xyxy pixels."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter = intersection_matrix(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas (pixels²) of the boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def bucket_of(height: float) -> str | None:
    """Name of the size bucket of a box ``height`` pixels tall, ``None`` below the smallest bucket."""
    for name, low, high in SIZE_BUCKETS:
        if low <= height < high:
            return name
    return None


@dataclass
class Counts:
    """Tallies of one image or one bucket: matched detections, detections scored, people matched, people."""

    true_positives: int = 0
    detections: int = 0
    found: int = 0
    people: int = 0
    group_boxes: int = 0

    def add(self, other: Counts) -> None:
        self.true_positives += other.true_positives
        self.detections += other.detections
        self.found += other.found
        self.people += other.people
        self.group_boxes += other.group_boxes

    @property
    def precision(self) -> float:
        """Matched / scored detections; 1.0 when nothing was detected."""
        return self.true_positives / self.detections if self.detections else 1.0

    @property
    def recall(self) -> float:
        """Matched / counted people; 1.0 when there is nobody to find."""
        return self.found / self.people if self.people else 1.0

    @property
    def group_rate(self) -> float:
        return self.group_boxes / self.detections if self.detections else 0.0


@dataclass
class ImageScore:
    """The result of :func:`score_image`: overall counts, counts per size bucket, and per-detection verdicts
    (``"hit"``, ``"miss"`` = false positive, ``"ignored"``), each detection's ``group`` flag, and for each
    person the index of the detection that matched it (``-1`` when missed or ignored)."""

    total: Counts
    buckets: dict[str, Counts] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    group: list[bool] = field(default_factory=list)
    person_match: list[int] = field(default_factory=list)


def score_image(
    detections: Sequence[Box],
    scores: Sequence[float] | None,
    people: Sequence[Box],
    ignore: Sequence[Box] = (),
    iou: float = 0.5,
    min_height: float = 60.0,
) -> ImageScore:
    """Score one image's ``detections`` (boxes, and their ``scores``; ``None`` = the given order) against the
    annotated ``people`` and ``ignore`` regions (rules in the module docstring)."""
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(people, dtype=np.float64).reshape(-1, 4)
    ign = np.asarray(ignore, dtype=np.float64).reshape(-1, 4)
    heights = gt[:, 3] - gt[:, 1]
    counted = heights >= min_height
    # Short people join the ignore regions.
    ign = np.concatenate([ign, gt[~counted]], axis=0)
    gt, heights = gt[counted], heights[counted]
    counted_index = np.flatnonzero(counted)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable") if scores is not None else None
    order = np.arange(len(det)) if order is None else order

    ious = iou_matrix(det, gt)
    taken = np.zeros(len(gt), dtype=bool)
    matched_to = np.full(len(det), -1)
    for d in order:
        if len(gt) == 0:
            break
        candidates = np.where(taken, -1.0, ious[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            taken[best] = True
            matched_to[d] = best

    inside_ignore = intersection_matrix(det, ign)
    det_area = np.maximum((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]), 1e-12)
    ignored = (iou_matrix(det, ign) >= iou).any(axis=1) | (inside_ignore / det_area[:, None] >= 0.5).any(axis=1)
    # As in the Caltech pedestrian benchmark: a detection left over that is well below the counted heights
    # (under min_height / 1.25) is out of the evaluated range, not a false positive.
    ignored |= (det[:, 3] - det[:, 1]) < min_height / SHORT_DETECTION_SLACK
    ignored &= matched_to < 0

    gt_area = np.maximum((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]), 1e-12)
    held = intersection_matrix(det, gt) / gt_area[None, :] >= GROUP_COVER
    group = (held.sum(axis=1) >= 2) & ~((ious >= iou) & held).any(axis=1) & ~ignored

    result = ImageScore(total=Counts(), buckets={name: Counts() for name, _, _ in SIZE_BUCKETS})
    for i, h in enumerate(heights):
        name = bucket_of(float(h))
        if name is not None:
            result.buckets[name].people += 1
            result.buckets[name].found += int(taken[i])
    for d in range(len(det)):
        if ignored[d]:
            result.verdicts.append("ignored")
            result.group.append(False)
            continue
        hit = matched_to[d] >= 0
        result.verdicts.append("hit" if hit else "miss")
        result.group.append(bool(group[d]))
        height = heights[matched_to[d]] if hit else det[d, 3] - det[d, 1]
        name = bucket_of(float(height))
        if name is not None:
            result.buckets[name].detections += 1
            result.buckets[name].true_positives += int(hit)
            result.buckets[name].group_boxes += int(group[d])
    result.total = Counts(
        true_positives=int((matched_to >= 0).sum()),
        detections=int((~ignored).sum()),
        found=int(taken.sum()),
        people=len(gt),
        group_boxes=int(group.sum()),
    )
    person_match = np.full(len(counted), -1)
    for d in range(len(det)):
        if matched_to[d] >= 0:
            person_match[counted_index[matched_to[d]]] = d
    result.person_match = [int(v) for v in person_match]
    return result


def summarise(scores: Sequence[ImageScore]) -> tuple[Counts, dict[str, Counts]]:
    """Counts over many images: the total and each size bucket."""
    total = Counts()
    buckets = {name: Counts() for name, _, _ in SIZE_BUCKETS}
    for score in scores:
        total.add(score.total)
        for name, counts in score.buckets.items():
            buckets[name].add(counts)
    return total, buckets


def synthetic_scene(
    cutouts: Sequence[tuple[np.ndarray, Box] | tuple[np.ndarray, Box, Sequence[Box]]],
    size: tuple[int, int],
    heights: Sequence[float],
    seed: int,
) -> tuple[np.ndarray, list[tuple[float, float, float, float]], list[tuple[float, float, float, float]]]:
    """A ``size`` = (width, height) BGR uint8 image with people pasted at known places, and their boxes.

    ``cutouts``: (image, person box) or (image, person box, other people's boxes) — an image holding a person,
    that person's whole-person box in it, and optionally the boxes of other people in that image (neighbours
    whose parts come along in the margin: they are returned, clipped to the pasted crop, as ignore regions).
    Each person ``i`` is cut out with a margin of 15 % of its box (clipped to its image), scaled so that its box
    is ``heights[i]`` pixels tall, and pasted at a random free place (no two pasted crops overlap; a person that
    finds no place after 200 tries is left out). The background is a smooth random gradient with noise. Returns
    the image, the exact person boxes (continuous pixels) in it and the ignore regions. Deterministic for a
    ``seed``.
    """
    import cv2

    width, height = size
    rng = np.random.default_rng(seed)
    corners = rng.uniform(60, 200, size=(2, 2, 3)).astype(np.float32)
    smooth = np.asarray(cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    canvas = smooth + rng.normal(0.0, 6.0, size=smooth.shape).astype(np.float32)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    placed: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float]] = []
    ignore: list[tuple[float, float, float, float]] = []
    for i, target in enumerate(heights):
        cutout: tuple[Any, ...] = tuple(cutouts[i % len(cutouts)])
        source: np.ndarray = cutout[0]
        box: Box = cutout[1]
        others: Sequence[Box] = cutout[2] if len(cutout) > 2 else ()
        x1, y1, x2, y2 = (float(v) for v in box)
        margin = 0.15 * max(x2 - x1, y2 - y1)
        cx1, cy1 = max(0, int(x1 - margin)), max(0, int(y1 - margin))
        cx2, cy2 = min(source.shape[1], math.ceil(x2 + margin)), min(source.shape[0], math.ceil(y2 + margin))
        scale = float(target) / (y2 - y1)
        out_w, out_h = max(1, round((cx2 - cx1) * scale)), max(1, round((cy2 - cy1) * scale))
        if out_w >= width or out_h >= height:
            continue
        crop = cv2.resize(source[cy1:cy2, cx1:cx2], (out_w, out_h), interpolation=cv2.INTER_AREA)
        sx, sy = out_w / (cx2 - cx1), out_h / (cy2 - cy1)
        for _ in range(200):
            px, py = int(rng.integers(0, width - out_w + 1)), int(rng.integers(0, height - out_h + 1))
            rect = np.array([px, py, px + out_w, py + out_h], dtype=np.float64)
            if all(intersection_matrix(rect, other)[0, 0] == 0 for other in placed):
                break
        else:
            continue
        image[py : py + out_h, px : px + out_w] = crop
        placed.append(rect)
        boxes.append((px + (x1 - cx1) * sx, py + (y1 - cy1) * sy, px + (x2 - cx1) * sx, py + (y2 - cy1) * sy))
        for ox1, oy1, ox2, oy2 in others:
            clipped = (max(ox1, cx1), max(oy1, cy1), min(ox2, cx2), min(oy2, cy2))
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                ignore.append((px + (clipped[0] - cx1) * sx, py + (clipped[1] - cy1) * sy,
                               px + (clipped[2] - cx1) * sx, py + (clipped[3] - cy1) * sy))  # fmt: skip
    return image, boxes, ignore
