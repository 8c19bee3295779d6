"""Stable person IDs across video frames by box association (torch-free).

Each frame's boxes are matched to the live tracks with the Hungarian algorithm on the larger of IoU and a
centre-distance closeness (:func:`box_proximity`, for fast motion); a track's box is predicted forward with its
last velocity (for at most :data:`MAX_EXTRAPOLATION` frames while it is unseen). A person
lost for up to ``max_gap`` processed frames keeps their ID; after that the track ends and a
person who reappears gets a new ID.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Frames a lost track's box is moved on by its velocity before it stays put.
MAX_EXTRAPOLATION = 5


def box_proximity(a: np.ndarray, b: np.ndarray, gate: float = 1.0) -> np.ndarray:
    """Pairwise closeness of (N, 4) and (M, 4) xyxy boxes → (N, M) in [0, 0.5]: half of
    ``(1 − centre distance / (gate · diagonal of a)) · size similarity`` (0 beyond the gate). Lets a fast-moving
    person, whose boxes barely overlap from one frame to the next, keep their track."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    centre_a, centre_b = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    size_a, size_b = (a[:, 2:] - a[:, :2]).clip(1e-6), (b[:, 2:] - b[:, :2]).clip(1e-6)
    diagonal = np.linalg.norm(size_a, axis=1)[:, None]
    distance = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=-1)
    ratio = size_a[:, None] / size_b[None]
    similarity = np.minimum(ratio, 1 / ratio).prod(-1)  # 1 for equal sizes
    return 0.5 * np.clip(1 - distance / (gate * diagonal), 0, None) * similarity


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes → (N, M)."""
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
    track_id: int
    box: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    missed: int = 0

    def predicted(self) -> np.ndarray:
        """The box expected in the next frame: constant velocity, extrapolated at most ``MAX_EXTRAPOLATION``
        frames (an unseen person is not assumed to keep walking forever)."""
        return self.box + self.velocity * min(self.missed + 1, MAX_EXTRAPOLATION)


class BoxTracker:
    """Assigns track IDs (0, 1, 2, … in order of first appearance) to per-frame boxes."""

    def __init__(self, iou_threshold: float = 0.3, max_gap: int = 15) -> None:
        self.iou_threshold = iou_threshold
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self.next_id = 0

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes of one processed frame → (N,) int track IDs."""
        from scipy.optimize import linear_sum_assignment

        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        if self.tracks and len(boxes):
            predicted = np.stack([t.predicted() for t in self.tracks])
            iou = np.maximum(box_iou(predicted, boxes), box_proximity(predicted, boxes))
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.iou_threshold:
                    track = self.tracks[r]
                    track.velocity = 0.5 * track.velocity + 0.5 * (boxes[c] - track.box) / (track.missed + 1)
                    track.box, track.missed = boxes[c], -1
                    ids[c] = track.track_id
        for track in self.tracks:
            track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_gap]
        for c in np.flatnonzero(ids < 0):
            self.tracks.append(_Track(self.next_id, boxes[c]))
            ids[c] = self.next_id
            self.next_id += 1
        return ids
