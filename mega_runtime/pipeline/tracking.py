"""Stable person IDs across video frames by box association, checked by appearance (numpy + scipy, no torch).

Identities rest on motion; when the caller passes each box's colour descriptor
(:func:`mega_runtime.pipeline.reid.appearance_descriptors`), a detection must also look like the track it continues
(:data:`APPEARANCE_VETO`) and the assignment weighs box fit and colour similarity (:data:`APPEARANCE_WEIGHT`).
Fragments left after a long absence are merged offline by :func:`mega_runtime.pipeline.reid.stitch_tracklets`.

* every track filters its box centre with an alpha-beta filter (position and velocity in pixels per processed
  frame; gains :data:`POSITION_GAIN`, :data:`VELOCITY_GAIN`) and smooths its size (:data:`SIZE_SMOOTHING`). Its
  box in the next frame is *predicted*: the centre moved on by the velocity — also while the person is not seen,
  for at most :data:`MAX_EXTRAPOLATION` frames — with the smoothed size (the size last seen for a lost person);
  noisy box edges never extrapolate into a collapsing box. With the image size known, the predicted centre stays
  inside the image and the box is clipped to it, as a detector clips a person at the border: someone who walked
  out is expected back where they left;
* a detection and a prediction match on the larger of their IoU and :func:`box_proximity` (closeness of the
  centres relative to the box diagonal, times the similarity of the sizes — this keeps a fast-moving person,
  whose boxes barely overlap from one frame to the next); pairs below ``iou_threshold`` are *gated out before*
  the assignment (Hungarian algorithm, maximum total affinity), so a weak pair never pushes a good one aside;
  a lost track's proximity gate widens by :data:`GATE_GROWTH` diagonals per missed frame, as its prediction
  grows less certain;
* a person lost for up to ``max_gap`` processed frames keeps their ID (the frames in between stay not-valid in
  the result: nothing is invented); after that the track ends and a person who reappears, like one who
  enters late, gets a new ID (0, 1, 2, … in order of first appearance).

Deterministic: the same boxes give the same IDs. Identity switches measured on synthetic clips with known
identities (people crossing, hidden, leaving and returning, entering late): docs/video.md,
tests/runtime/test_tracking_clips.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mega_runtime.pipeline.reid import APPEARANCE_DIM, appearance_similarity, mean_appearance

#: Frames an unseen person's box centre is moved on by their velocity before it stays put.
MAX_EXTRAPOLATION = 15
#: How much a lost track's proximity gate widens per missed frame, in box diagonals.
GATE_GROWTH = 0.1
#: Alpha-beta filter gains of the box centre: share of the surprise (measured − predicted centre) taken into the
#: position, and into the velocity (per frame). Lower: steadier under detector noise, slower to follow a turn.
POSITION_GAIN = 0.8
VELOCITY_GAIN = 0.3
#: Weight of the newest box size in the track's smoothed size.
SIZE_SMOOTHING = 0.3
#: With appearance given: a detection whose colours are less alike than this (Bhattacharyya similarity, see
#: :func:`mega_runtime.pipeline.reid.appearance_similarity`) never continues a track, however well the boxes fit.
APPEARANCE_VETO = 0.3
#: With appearance given: share of the affinity that is the appearance similarity (the rest is box geometry).
APPEARANCE_WEIGHT = 0.5
#: Weight of the newest appearance in the track's running appearance (histograms, not their square roots).
APPEARANCE_SMOOTHING = 0.1


def box_proximity(a: np.ndarray, b: np.ndarray, gate: float | np.ndarray = 1.0) -> np.ndarray:
    """Pairwise closeness of (N, 4) and (M, 4) xyxy pixel boxes → (N, M) float64 in [0, 0.5].

    ``0.5 · (1 − centre distance / (gate · diagonal of a)) · size similarity``, 0 beyond the gate; the size
    similarity is ``min(wa/wb, wb/wa) · min(ha/hb, hb/ha)`` (1 for equal sizes). ``gate`` is a scalar or one
    value per row of ``a`` (N,). It lets a fast-moving person, whose boxes barely overlap from one frame to the
    next, keep their track.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    gate = np.broadcast_to(np.asarray(gate, dtype=np.float64), (len(a),))[:, None]
    centre_a, centre_b = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    size_a, size_b = (a[:, 2:] - a[:, :2]).clip(1e-6), (b[:, 2:] - b[:, :2]).clip(1e-6)
    diagonal = np.linalg.norm(size_a, axis=1)[:, None]
    distance = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=-1)
    ratio = size_a[:, None] / size_b[None]
    similarity = np.minimum(ratio, 1 / ratio).prod(-1)  # 1 for equal sizes
    return 0.5 * np.clip(1 - distance / (gate * diagonal), 0, None) * similarity


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes → (N, M) float64 in [0, 1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class _Track:
    """One person's track: an alpha-beta filter of the box centre (pixels) and its velocity (pixels per processed
    frame), a smoothed half-size and the last seen half-size (pixels)."""

    track_id: int
    centre: np.ndarray  # (2,) x, y
    half: np.ndarray  # (2,) half width, half height, smoothed
    last_half: np.ndarray  # (2,) as last seen
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    missed: int = 0  # processed frames since last seen
    hits: int = 1  # frames seen
    appearance: np.ndarray | None = None  # (D,) running histogram (squared descriptor), or None

    def similarity(self, descriptors: np.ndarray) -> np.ndarray:
        """Appearance similarity of the track to (M, D) descriptors → (M,); 1 where the track has none."""
        if self.appearance is None:
            return np.ones(len(descriptors))
        return appearance_similarity(mean_appearance(self.appearance[None] ** 0.5)[None], descriptors)

    def remember(self, descriptor: np.ndarray | None) -> None:
        """Blend a seen descriptor (square-root histograms) into the running appearance."""
        if descriptor is None or not np.any(descriptor):
            return
        squared = np.asarray(descriptor, dtype=np.float64) ** 2
        if self.appearance is None:
            self.appearance = squared
        else:
            self.appearance = (1 - APPEARANCE_SMOOTHING) * self.appearance + APPEARANCE_SMOOTHING * squared

    @classmethod
    def start(cls, track_id: int, box: np.ndarray) -> _Track:
        half = (box[2:] - box[:2]) / 2
        return cls(track_id, (box[:2] + box[2:]) / 2, half, half)

    def predicted(self, image_size: tuple[float, float] | None = None) -> np.ndarray:
        """(4,) xyxy box expected in the next processed frame: the centre moved on with its velocity (for at most
        :data:`MAX_EXTRAPOLATION` frames); the smoothed size, or for a person not seen last frame the size they
        were last seen at (someone who left through the image border is expected back as the sliver they left as).
        With ``image_size`` (width, height) in pixels the centre is kept inside the image and the box clipped to
        it."""
        centre = self.centre + self.velocity * min(self.missed + 1, MAX_EXTRAPOLATION)
        half = self.half if self.missed == 0 else self.last_half
        box = np.concatenate([centre - half, centre + half])
        if image_size is not None:
            limit = np.asarray(image_size, dtype=np.float64)
            centre = np.clip(centre, 0, limit)
            box = np.concatenate([np.clip(centre - self.half, 0, limit), np.clip(centre + self.half, 0, limit)])
        return box

    def observe(self, box: np.ndarray) -> None:
        """Move the track to a matched ``box``; ``missed`` becomes −1 (the update's +1 makes it 0)."""
        steps = self.missed + 1
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        if self.hits == 1:  # the second sighting: the step is all there is
            self.velocity = (centre - self.centre) / steps
            self.centre = centre
        else:
            expected = self.centre + self.velocity * steps
            residual = centre - expected
            self.centre = expected + POSITION_GAIN * residual
            self.velocity = self.velocity + VELOCITY_GAIN * residual / steps
        self.half = (1 - SIZE_SMOOTHING) * self.half + SIZE_SMOOTHING * half
        self.last_half = half
        self.missed, self.hits = -1, self.hits + 1


class BoxTracker:
    """Assigns track IDs (0, 1, 2, … in order of first appearance) to per-frame boxes.

    ``iou_threshold``: the least affinity (IoU or :func:`box_proximity`, both in [0, 1]) a detection needs to
    continue a track; ``max_gap``: processed frames a lost person keeps their ID.
    """

    def __init__(self, iou_threshold: float = 0.3, max_gap: int = 15) -> None:
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_gap < 0:
            raise ValueError(f"max_gap must be 0 or more processed frames, got {max_gap}")
        self.iou_threshold = iou_threshold
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self.next_id = 0

    def _affinity(
        self,
        tracks: list[_Track],
        boxes: np.ndarray,
        image_size: tuple[float, float] | None,
        appearance: np.ndarray | None = None,
    ) -> np.ndarray:
        """(len(tracks), len(boxes)) affinity, zero where gated out. With ``appearance`` (len(boxes), D), pairs
        whose colours differ (below :data:`APPEARANCE_VETO`) are gated out too, and the rest weigh box fit and
        colour similarity (:data:`APPEARANCE_WEIGHT`)."""
        predicted = np.stack([t.predicted(image_size) for t in tracks])
        gate = 1.0 + GATE_GROWTH * np.array([t.missed for t in tracks], dtype=np.float64)
        affinity = np.maximum(box_iou(predicted, boxes), box_proximity(predicted, boxes, gate))
        gated = affinity >= self.iou_threshold
        if appearance is not None:
            similarity = np.stack([t.similarity(appearance) for t in tracks])
            gated &= similarity >= APPEARANCE_VETO
            affinity = (1 - APPEARANCE_WEIGHT) * affinity + APPEARANCE_WEIGHT * similarity
        return np.where(gated, affinity, 0.0)

    def update(
        self,
        boxes: np.ndarray,
        image_size: tuple[float, float] | None = None,
        appearance: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, 4) xyxy pixel boxes of one processed frame → (N,) int64 track IDs.

        ``image_size``: (width, height) of the frame in pixels, optional; when given, people who walked out of
        the image are expected back at its border rather than beyond it. ``appearance``: optional (N, D)
        descriptors of the boxes (:func:`mega_runtime.pipeline.reid.appearance_descriptor`); when given, a
        detection must also look like the track it continues.
        """
        from scipy.optimize import linear_sum_assignment

        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        free = np.arange(len(boxes))
        if appearance is not None:
            appearance = np.asarray(appearance, dtype=np.float64).reshape(len(boxes), APPEARANCE_DIM)
        if self.tracks and len(boxes):
            affinity = self._affinity(self.tracks, boxes, image_size, appearance)
            rows, cols = linear_sum_assignment(affinity, maximize=True)
            for r, c in zip(rows, cols, strict=True):
                if affinity[r, c] > 0:
                    self.tracks[r].observe(boxes[c])
                    self.tracks[r].remember(None if appearance is None else appearance[c])
                    ids[c] = self.tracks[r].track_id
            free = np.flatnonzero(ids < 0)
        for track in self.tracks:
            track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_gap]
        for c in free:
            self.tracks.append(_Track.start(self.next_id, boxes[c]))
            self.tracks[-1].remember(None if appearance is None else appearance[c])
            ids[c] = self.next_id
            self.next_id += 1
        return ids
