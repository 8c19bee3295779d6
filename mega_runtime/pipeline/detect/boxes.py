"""Boxes given by the caller (detector ``"boxes"``), validated and clipped to the image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mega_runtime.errors import ConfigError, DetectionInputError
from mega_runtime.pipeline.detect.base import Detection, check_common_options, check_image, finish_detections


class GivenBoxes:
    """Boxes given by the caller, validated.

    Each box is ``(x1, y1, x2, y2)`` in pixels of the image: four finite numbers with ``x2 > x1`` and
    ``y2 > y1`` (else :class:`DetectionInputError` at construction). At :meth:`detect` time, a box that
    reaches past the image is **clipped** to ``[0, W] × [0, H]`` (people cut by the frame are normal); a box
    that lies entirely outside the image (nothing left after clipping) is **rejected** with
    :class:`DetectionInputError`, since it can only be a mistake (e.g. boxes for another image size).
    ``scores`` (default 1.0 each) order the result; equal scores keep the caller's order.
    """

    OPTIONS = ("boxes", "scores", "conf", "max_people", "min_size")
    name = "boxes"

    def __init__(
        self,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        scores: Sequence[float] | None = None,
        conf: float = 0.0,
        max_people: int | None = None,
        min_size: float = 0.0,
    ) -> None:
        self.conf, self.max_people, self.min_size = check_common_options(conf, max_people, min_size)
        if boxes is None:
            raise ConfigError("detector 'boxes' needs boxes=[(x1, y1, x2, y2), ...]", hint="pass the boxes in pixels")
        rows = self._parse(boxes)
        hint = "give one score in [0, 1] per box, or leave scores out (every box then scores 1.0)"
        if scores is None:
            values = [1.0] * len(rows)
        else:
            try:
                values = [float(s) for s in scores]
            except (TypeError, ValueError) as exc:
                raise DetectionInputError(f"scores are not numbers: {exc}", hint=hint) from exc
            if len(values) != len(rows) or not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in values):
                raise DetectionInputError(
                    f"scores must be {len(rows)} numbers in [0, 1], one per box, got {values!r}", hint=hint
                )
        self.boxes: tuple[tuple[float, float, float, float], ...] = tuple(rows)
        self.scores: tuple[float, ...] = tuple(values)

    @staticmethod
    def _parse(boxes: Any) -> list[tuple[float, float, float, float]]:
        hint = "give boxes as [(x1, y1, x2, y2), ...] in pixels with x2 > x1 and y2 > y1"
        try:
            array = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DetectionInputError(f"boxes are not a list of 4 numbers each: {exc}", hint=hint) from exc
        if array.size == 0:
            return []
        if array.ndim != 2 or array.shape[1] != 4:
            raise DetectionInputError(f"boxes must have shape (N, 4), got {array.shape}", hint=hint)
        rows = []
        for i, (x1, y1, x2, y2) in enumerate(array.tolist()):
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise DetectionInputError(f"box {i} {(x1, y1, x2, y2)} is not finite", hint=hint)
            if not (x2 > x1 and y2 > y1):
                raise DetectionInputError(f"box {i} {(x1, y1, x2, y2)} is empty or reversed", hint=hint)
            rows.append((x1, y1, x2, y2))
        return rows

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        height, width = check_image(image_bgr)
        out = []
        for i, ((x1, y1, x2, y2), score) in enumerate(zip(self.boxes, self.scores, strict=True)):
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
            if not (cx2 > cx1 and cy2 > cy1):
                raise DetectionInputError(
                    f"box {i} {(x1, y1, x2, y2)} lies outside the {width}×{height} image",
                    hint="give boxes in pixels of this image (x in [0, width], y in [0, height])",
                )
            out.append(Detection((cx1, cy1, cx2, cy2), score))
        return finish_detections(out, self.conf, self.max_people, self.min_size)
