"""Person detection: which people in an image MEGA reconstructs, as whole-person boxes.

Three detectors share one interface (:class:`PersonDetector`, built by :func:`make_detector`):

* ``"default"`` — offline, no download at run time: MediaPipe's BlazePose models run with a TensorFlow Lite
  interpreter (``ai-edge-litert``). The model files are the ones bundled inside the ``mediapipe`` wheel
  (``modules/pose_detection/pose_detection.tflite`` and ``modules/pose_landmark/pose_landmark_full.tflite``);
  only those two files are read, ``mediapipe`` itself is never imported (``pip install --no-deps
  mediapipe==0.10.14`` is enough), or the same two files fetched once by ``mega-runtime weights fetch
  --detector`` where no such wheel installs (Python 3.13). Two stages, several people per image:

  1. the pose *detector* (224×224, SSD with 2254 anchors, box + 4 keypoints per anchor: mid-hip, a point on the
     circle around the whole body, mid-shoulder, upper-body point) runs on the whole image letterboxed and,
     for wide or tall images, on overlapping square tiles along the long side (a person who is small in the
     letterboxed view is larger in a tile); candidates are merged by MediaPipe's weighted non-maximum
     suppression within a view and by their keypoints across views;
  2. for each person, the pose *landmark* model (256×256) runs on the rotated square region MediaPipe derives
     from the keypoints (centre mid-hip, side 2.5 × circle radius), then twice more on the region its own
     auxiliary landmarks give. A person whose pose-presence score stays below 0.5 is dropped. The box is the
     extent of the 33 body landmarks, the top of the head and the fingertips extrapolated from them, and the
     segmentation mask where it continues past them (at most 12 % upwards, 5 % on the other sides), plus a
     2 % margin, clipped to the image.

* ``"yolo"`` — what the official demo does: ultralytics YOLOv8 (``yolov8x.pt``), class 0 (person), confidence
  0.5. Optional: the user installs ``ultralytics`` and passes ``weights=<path>``; nothing is downloaded.
* ``"boxes"`` — boxes given by the caller (``xyxy`` pixels); see :class:`GivenBoxes` for the validation rules.

Every detector returns :class:`Detection` objects sorted by score, highest first (ties keep their order), in
pixels of the original image (continuous coordinates: pixel ``i`` spans ``[i, i + 1)``, so a box lies within
``[0, W] × [0, H]``). Common options: ``conf`` (minimum score), ``max_people`` (keep the best N) and
``min_size`` (minimum length in pixels of a box's longer side).

Modules: :mod:`~mega_runtime.pipeline.detect.base` (:class:`Detection`, :class:`PersonDetector`, the shared checks),
:mod:`~mega_runtime.pipeline.detect.boxes` (:class:`GivenBoxes`),
:mod:`~mega_runtime.pipeline.detect.yolo` (:class:`YoloDetector`),
:mod:`~mega_runtime.pipeline.detect.blazepose` (:class:`BlazePoseDetector` and its model files);
:func:`make_detector` is here.

At import, this package needs numpy only: OpenCV and the TFLite interpreter are imported when the default
detector is built, ultralytics (and with it torch) when the ``"yolo"`` one is.
"""

from __future__ import annotations

from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import ConfigError
from mega_runtime.pipeline.detect.base import Detection, PersonDetector
from mega_runtime.pipeline.detect.blazepose import BLAZEPOSE_MODEL_FILES, BlazePoseDetector, find_blazepose_models
from mega_runtime.pipeline.detect.blazepose import ENV_MODEL_DIR as ENV_MODEL_DIR
from mega_runtime.pipeline.detect.boxes import GivenBoxes
from mega_runtime.pipeline.detect.yolo import YoloDetector
from mega_runtime.pipeline.detect.yolo import detections_from_ultralytics as detections_from_ultralytics

__all__ = [
    "BLAZEPOSE_MODEL_FILES",
    "DETECTOR_NAMES",
    "BlazePoseDetector",
    "Detection",
    "GivenBoxes",
    "PersonDetector",
    "YoloDetector",
    "find_blazepose_models",
    "make_detector",
]

DETECTOR_NAMES: tuple[str, ...] = ("default", "blazepose", "yolo", "boxes")
"""Names :func:`make_detector` accepts; ``"default"`` is ``"blazepose"``."""


def make_detector(name: str = defaults.DETECTOR, **options: Any) -> PersonDetector:
    """Build a person detector by name.

    * ``"default"`` / ``"blazepose"``: :class:`BlazePoseDetector` (options ``conf=0.5``, ``max_people``,
      ``min_size``, ``model_dir``, ``num_threads``, ``tiles``).
    * ``"yolo"``: :class:`YoloDetector` (``weights=<path to yolov8x.pt>``, ``conf=0.5``, ``max_people``,
      ``min_size``, ``device``).
    * ``"boxes"``: :class:`GivenBoxes` (``boxes=[(x1, y1, x2, y2), …]``, optional ``scores``, ``conf``,
      ``max_people``, ``min_size``).

    Raises :class:`ConfigError` for an unknown name or option, :class:`DetectorError` when the detector's
    package or model files are missing.
    """
    key = str(name).strip().lower()
    factories = {"default": BlazePoseDetector, "blazepose": BlazePoseDetector, "yolo": YoloDetector}
    if key == "boxes":
        return GivenBoxes(**_known_options(GivenBoxes, key, options))
    if key not in factories:
        raise ConfigError(
            f"unknown person detector {name!r}", hint=f"use one of: {', '.join(repr(n) for n in DETECTOR_NAMES)}"
        )
    cls = factories[key]
    return cls(**_known_options(cls, key, options))


def _known_options(cls: type, name: str, options: dict[str, Any]) -> dict[str, Any]:
    accepted = cls.OPTIONS  # type: ignore[attr-defined]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"detector {name!r} has no option(s) {', '.join(unknown)}", hint=f"its options are: {', '.join(accepted)}"
        )
    return options


# The imports written `name as name` above re-export names the former detect.py module offered outside __all__
# (ENV_MODEL_DIR, detections_from_ultralytics, and the BlazePose helpers the tests exercise directly).
