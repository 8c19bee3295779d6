"""ultralytics YOLO (detector ``"yolo"``, the official demo's): ultralytics is imported when it is built."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import defaults
from mega_runtime.errors import DetectorError
from mega_runtime.pipeline.detect.base import Detection, check_common_options, check_image, finish_detections


class YoloDetector:
    """ultralytics YOLO boxes for class 0 (person), as the official demo (``yolov8x.pt``, conf 0.5).

    ``weights`` must be an existing file: a bare model name would make ultralytics download it, which this
    runtime never does. ``device`` is passed to ultralytics (``None`` lets it choose).
    """

    OPTIONS = ("weights", "conf", "max_people", "min_size", "device")
    name = "yolo"
    PERSON_CLASS = 0

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        conf: float = defaults.DETECTOR_CONF,
        max_people: int | None = defaults.DETECTOR_MAX_PEOPLE,
        min_size: float = defaults.DETECTOR_MIN_SIZE_PX,
        device: str | None = None,
    ) -> None:
        self.conf, self.max_people, self.min_size = check_common_options(conf, max_people, min_size)
        self.device = device
        hint = "pip install ultralytics, download yolov8x.pt yourself and pass weights='path/to/yolov8x.pt'"
        if weights is None:
            raise DetectorError("the 'yolo' detector needs weights=<path to a YOLOv8 .pt file>", hint=hint)
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DetectorError(f"YOLO weights not found: {path}", hint=hint)
        try:
            ultralytics = importlib.import_module("ultralytics")
        except ImportError as exc:
            raise DetectorError(f"the 'yolo' detector needs the ultralytics package ({exc})", hint=hint) from exc
        self.weights = path
        self._model = ultralytics.YOLO(str(path))

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        check_image(image_bgr)
        kwargs: dict[str, Any] = {"classes": [self.PERSON_CLASS], "conf": self.conf, "verbose": False}
        if self.device is not None:
            kwargs["device"] = self.device
        results = self._model.predict(image_bgr, **kwargs)
        return finish_detections(detections_from_ultralytics(results), self.conf, self.max_people, self.min_size)


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def detections_from_ultralytics(results: Any, person_class: int = YoloDetector.PERSON_CLASS) -> list[Detection]:
    """Person detections from ultralytics ``Results`` (``r.boxes.xyxy``, ``.conf``, ``.cls`` per result)."""
    out = []
    for result in results:
        boxes = result.boxes
        if boxes is None:
            continue
        xyxy = _to_numpy(boxes.xyxy).reshape(-1, 4)
        conf = _to_numpy(boxes.conf).reshape(-1)
        cls = _to_numpy(boxes.cls).reshape(-1)
        for box, score, label in zip(xyxy, conf, cls, strict=True):
            if int(label) == person_class and np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1]:
                out.append(Detection((float(box[0]), float(box[1]), float(box[2]), float(box[3])), float(score)))
    return out
