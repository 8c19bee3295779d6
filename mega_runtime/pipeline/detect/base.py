"""What every person detector shares: :class:`Detection`, the :class:`PersonDetector` interface, and the
checks and filtering applied to every image and every result."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mega_runtime.errors import ConfigError, DetectionInputError


@dataclass(frozen=True)
class Detection:
    """One person: ``box_xyxy`` = (x1, y1, x2, y2) in pixels of the original image, ``score`` in [0, 1]."""

    box_xyxy: tuple[float, float, float, float]
    score: float

    @property
    def width(self) -> float:
        return self.box_xyxy[2] - self.box_xyxy[0]

    @property
    def height(self) -> float:
        return self.box_xyxy[3] - self.box_xyxy[1]


@runtime_checkable
class PersonDetector(Protocol):
    """Finds people in a ``(H, W, 3)`` uint8 BGR image; returns detections sorted by score, highest first."""

    name: str

    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


# -- shared checks and filtering ---------------------------------------------------------------------------


def check_image(image_bgr: Any) -> tuple[int, int]:
    if not isinstance(image_bgr, np.ndarray):
        raise DetectionInputError(
            f"the image must be a numpy array, not {type(image_bgr).__name__}", hint="pass a (H, W, 3) uint8 BGR array"
        )
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8 or 0 in image_bgr.shape:
        raise DetectionInputError(
            f"the image must be (H, W, 3) uint8 BGR, got shape {image_bgr.shape} and dtype {image_bgr.dtype}",
            hint="convert it first, e.g. cv2.imread(path) or rgb[..., ::-1].astype(np.uint8)",
        )
    return int(image_bgr.shape[0]), int(image_bgr.shape[1])


def check_common_options(conf: float, max_people: int | None, min_size: float) -> tuple[float, int | None, float]:
    if not (isinstance(conf, numbers.Real) and 0.0 <= conf <= 1.0):
        raise ConfigError(f"conf must be a number in [0, 1], got {conf!r}", hint="e.g. conf=0.5")
    if max_people is not None and not (isinstance(max_people, numbers.Integral) and max_people >= 1):
        raise ConfigError(f"max_people must be a positive integer or None, got {max_people!r}", hint="e.g. 4")
    if not (isinstance(min_size, numbers.Real) and math.isfinite(min_size) and min_size >= 0):
        raise ConfigError(f"min_size must be a number of pixels ≥ 0, got {min_size!r}", hint="e.g. min_size=32")
    return float(conf), None if max_people is None else int(max_people), float(min_size)


def finish_detections(
    detections: Sequence[Detection], conf: float, max_people: int | None, min_size: float
) -> list[Detection]:
    """Keep score ≥ conf and longer side ≥ min_size, sort by score (stable), keep at most max_people."""
    kept = [d for d in detections if d.score >= conf and max(d.width, d.height) >= min_size]
    kept.sort(key=lambda d: -d.score)
    return kept if max_people is None else kept[:max_people]


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of ``boxes`` (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)
