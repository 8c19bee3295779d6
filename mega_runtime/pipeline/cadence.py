"""Person boxes for video frames without running the detector on every one (OpenCV + numpy, no torch).

:class:`CadencedDetector` runs the detector on every ``every``-th frame and, in between, moves each person's last
box along with the person by sparse optical flow (pyramidal Lucas–Kanade on corners inside the box, checked
forwards and backwards). A box holds background as well as its person (pavement between the legs, a wall beside
the arm), so the box is moved by the median motion of its *foreground* points: those that move differently from the
background, whose own motion (the camera's) is measured on corners outside every box. A person standing still
moves with the background, and then all of the box's points decide. The box keeps its size until the next
detection: scale estimated from frame to frame compounds its noise (measured: docs/video.md). When the points of a
box can no longer be followed — the person turned, was hidden, left the image — the detector runs again at once on
that frame ("re-detects early"), and the count starts over.

``every=1`` is exact: the detector runs on every frame and nothing else is computed. People who enter between two
detections are found at the next one (at most ``every − 1`` frames late). Recall against hand-annotated frames
and the speed gained: docs/video.md ("Detection cadence").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Most corners followed per box, and the least that must survive the forward-backward check to keep the box.
MAX_POINTS = 40
MIN_POINTS = 6
#: A point is kept when following it forwards then backwards lands within this many pixels of where it started.
MAX_ROUND_TRIP_PX = 1.0
#: Lucas–Kanade window (pixels) and pyramid levels above the image.
FLOW_WINDOW = 15
FLOW_LEVELS = 2
#: A propagated box keeping less than this share of its area inside the image counts as lost.
MIN_INSIDE = 0.3
#: Most corners followed outside every box to measure the background's (the camera's) motion, and the fewest that
#: must survive the forward-backward check for it to count (else the background is taken as still).
BACKGROUND_POINTS = 60
MIN_BACKGROUND_POINTS = 8
#: A point whose motion differs from the background's by more than this many pixels per frame is the person's, and
#: this many such points decide the box's motion (fewer: the person stands still, and all the box's points decide).
FOREGROUND_PX = 1.0
MIN_FOREGROUND = 3


def _corners(prev_gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """(K, 1, 2) float32 corners to follow inside an xyxy box of ``prev_gray`` (found on the box's window only),
    or None when the box is too small or too flat to follow."""
    import cv2

    h, w = prev_gray.shape
    x1, y1, x2, y2 = np.clip(np.round(box), 0, [w, h, w, h]).astype(int)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    spacing = max(2, min(x2 - x1, y2 - y1) // 12)
    points = cv2.goodFeaturesToTrack(np.ascontiguousarray(prev_gray[y1:y2, x1:x2]), MAX_POINTS, 0.01, spacing)
    if points is None or len(points) < MIN_POINTS:
        return None
    return (points + np.array([x1, y1], np.float32)).astype(np.float32)


def _background_corners(prev_gray: np.ndarray, boxes: np.ndarray) -> np.ndarray | None:
    """(K, 1, 2) float32 corners of ``prev_gray`` outside every xyxy box of (N, 4) ``boxes``, at most
    :data:`BACKGROUND_POINTS` spread over the image; None when fewer than :data:`MIN_BACKGROUND_POINTS` are found
    (a flat background: it is taken as still). Found on the image halved (8× cheaper than at full size; the
    Lucas–Kanade pass that follows them works at full size)."""
    import cv2

    h, w = prev_gray.shape
    half = cv2.resize(prev_gray, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    mask = np.full(half.shape, 255, np.uint8)
    for box in boxes:
        x1, y1 = np.floor(np.asarray(box[:2]) / 2).astype(int)
        x2, y2 = np.ceil(np.asarray(box[2:]) / 2).astype(int)
        mask[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = 0
    spacing = max(4, min(half.shape) // 20)
    points = cv2.goodFeaturesToTrack(half, BACKGROUND_POINTS, 0.01, spacing, mask=mask)
    if points is None or len(points) < MIN_BACKGROUND_POINTS:
        return None
    return (points * 2.0 + 0.5).astype(np.float32)  # centre of half-size pixel j: full-size pixel 2j + 0.5


def _moved_box(box: np.ndarray, motion: np.ndarray, background: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """``box`` moved by the median of its followed points' ``motion`` ((K, 2) pixels), counting only the points
    that move differently from the ``background``'s (2,) motion when enough do → (4,) float64, same size, clipped
    to the image ``size`` (width, height); None when too few points were followed or the box left the image."""
    if len(motion) < MIN_POINTS:
        return None
    foreground = np.linalg.norm(motion - background, axis=1) > FOREGROUND_PX
    if foreground.sum() >= MIN_FOREGROUND:
        motion = motion[foreground]
    out = np.asarray(box, dtype=np.float64) + np.tile(np.median(motion, axis=0), 2)
    w, h = size
    clipped = np.clip(out, 0, [w, h, w, h])
    area = np.prod(out[2:] - out[:2])
    if area <= 0 or np.prod(np.clip(clipped[2:] - clipped[:2], 0, None)) < MIN_INSIDE * area:
        return None
    return clipped


def propagate_boxes(prev_gray: np.ndarray, gray: np.ndarray, boxes: np.ndarray) -> list[np.ndarray | None]:
    """Move (N, 4) xyxy pixel boxes from ``prev_gray`` to ``gray`` ((H, W) uint8 frames) → per box its (4,) float64
    new place, or None when too few of its points can be followed (the person is taken as lost). One forward and
    one backward Lucas–Kanade pass for all the boxes' points and the background's together."""
    import cv2

    corners = [_corners(prev_gray, box) for box in boxes]
    found = [c for c in corners if c is not None]
    if not found:
        return [None] * len(corners)
    background_points = _background_corners(prev_gray, np.asarray(boxes).reshape(-1, 4))
    points = np.concatenate(found + ([background_points] if background_points is not None else []))
    lk = {"winSize": (FLOW_WINDOW, FLOW_WINDOW), "maxLevel": FLOW_LEVELS}
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, points, points.copy(), **lk)  # type: ignore[call-overload]
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, moved, moved.copy(), **lk)  # type: ignore[call-overload]
    good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm(back - points, axis=-1)[:, 0] < MAX_ROUND_TRIP_PX)
    motion = (moved - points)[:, 0].astype(np.float64)
    on_background = slice(sum(len(c) for c in found), None)  # the background's points come after the boxes'
    background = np.zeros(2)
    if background_points is not None and good[on_background].sum() >= MIN_BACKGROUND_POINTS:
        background = np.median(motion[on_background][good[on_background]], axis=0)
    size = (gray.shape[1], gray.shape[0])
    out: list[np.ndarray | None] = []
    start = 0
    for box, own in zip(boxes, corners, strict=True):
        if own is None:
            out.append(None)
            continue
        part = slice(start, start + len(own))
        start += len(own)
        out.append(_moved_box(box, motion[part][good[part]], background, size))
    return out


def propagate_box(prev_gray: np.ndarray, gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """One box of :func:`propagate_boxes`."""
    return propagate_boxes(prev_gray, gray, np.asarray(box, dtype=np.float64).reshape(1, 4))[0]


class CadencedDetector:
    """Person boxes per video frame, with the detector run on every ``every``-th frame (1: every frame, exact).

    ``detect`` maps an (H, W, 3) uint8 BGR frame to (N, 4) float32 xyxy pixel boxes, or to (boxes, (N,) scores).
    Call :meth:`boxes` once per processed frame, in order; :attr:`scores` then holds the scores of its boxes (a
    moved box keeps its detection's score; 1.0 when ``detect`` gives none). ``last_detected`` says whether the
    last call ran the detector, ``detector_runs``
    counts the runs and ``early_runs`` those forced by a lost box.
    """

    def __init__(self, detect: Callable[[np.ndarray], Any], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 frame, got {every}")
        self.detect = detect
        self.every = every
        self.detector_runs = 0
        self.early_runs = 0
        self.last_detected = False
        self._prev_gray: np.ndarray | None = None
        self._boxes = np.zeros((0, 4), np.float32)
        self.scores = np.zeros(0, np.float32)
        self._since = 0  # frames since the detector last ran

    def _run(self, image: np.ndarray) -> np.ndarray:
        found = self.detect(image)
        boxes, scores = found if isinstance(found, tuple) else (found, None)
        self._boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ones = np.ones(len(self._boxes), np.float32)
        self.scores = ones if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
        self._since = 0
        self.detector_runs += 1
        self.last_detected = True
        return self._boxes

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame → (N, 4) float32 xyxy boxes of the people in it."""
        if self.every == 1:
            return self._run(image)
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        prev, self._prev_gray = self._prev_gray, gray
        if prev is None or prev.shape != gray.shape or self._since + 1 >= self.every:
            return self._run(image)
        moved = propagate_boxes(prev, gray, self._boxes) if len(self._boxes) else []
        if any(m is None for m in moved):
            self.early_runs += 1
            return self._run(image)
        self._since += 1
        self.last_detected = False
        self._boxes = np.asarray(moved, dtype=np.float32).reshape(-1, 4)
        return self._boxes
