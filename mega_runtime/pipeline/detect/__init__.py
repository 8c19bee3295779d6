"""Person detection: which people in an image MEGA reconstructs, as whole-person boxes.

Four detectors share one interface (:class:`PersonDetector`, built by :func:`make_detector`):

* ``"auto"`` (also named ``"default"``) — ``"yolox"`` where it can be had, else ``"blazepose"`` with one warning
  saying why and how to get YOLOX: YOLOX is chosen when onnxruntime imports and its model file is in
  ``$MEGA_YOLOX_DIR`` or the cache, or can be downloaded now (not when ``$MEGA_OFFLINE`` is set, as in the tests).
* ``"yolox"`` — YOLOX-S (Apache-2.0) run by onnxruntime, downloaded on first use and pinned by SHA-256
  (:mod:`~mega_runtime.pipeline.detect.yolox`); 640×640 input, COCO person AP 54.1 (opencv_zoo's evaluation).
* ``"blazepose"`` — offline, no download at run time: MediaPipe's BlazePose models run with a TensorFlow Lite
  interpreter (``ai-edge-litert``). The model files are the ones bundled inside the ``mediapipe`` wheel
  (``modules/pose_detection/pose_detection.tflite`` and ``modules/pose_landmark/pose_landmark_full.tflite``);
  only those two files are read, ``mediapipe`` itself is never imported (``pip install --no-deps
  mediapipe==0.10.14`` is enough), or the same two files fetched once by ``mega-runtime weights fetch
  --detector`` where no such wheel installs (Python 3.13). Two stages, several people per image:

  1. the pose *detector* (224×224, SSD with 2254 anchors, box + 4 keypoints per anchor: mid-hip, a point on the
     circle around the whole body, mid-shoulder, upper-body point) runs on the whole image letterboxed and,
     for wide or tall images, on overlapping square tiles along the long side, and on two finer levels of
     tiles (a person who is small in the letterboxed view is larger in a tile); OpenCV's HOG people
     detector adds candidates (people seen from the back or the side); candidates are merged by MediaPipe's
     weighted non-maximum suppression within a view and by their keypoints across views;
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
:mod:`~mega_runtime.pipeline.detect.blazepose` (:class:`BlazePoseDetector` and its model files),
:mod:`~mega_runtime.pipeline.detect.yolox` (:class:`YoloxDetector`),
:mod:`~mega_runtime.pipeline.detect.evaluate` (scoring detections against labelled boxes: benchmarks/eval_detect.py);
:func:`make_detector` is here.

At import, this package needs numpy only: OpenCV and the TFLite interpreter are imported when the BlazePose
detector is built, onnxruntime when the YOLOX one is, ultralytics (and with it torch) when the ``"yolo"`` one is.
"""

from __future__ import annotations

import logging
from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import ConfigError, DetectorError, WeightsError
from mega_runtime.pipeline.detect.base import Detection, PersonDetector
from mega_runtime.pipeline.detect.blazepose import BLAZEPOSE_MODEL_FILES, BlazePoseDetector, find_blazepose_models
from mega_runtime.pipeline.detect.blazepose import ENV_MODEL_DIR as ENV_MODEL_DIR
from mega_runtime.pipeline.detect.boxes import GivenBoxes
from mega_runtime.pipeline.detect.yolo import YoloDetector
from mega_runtime.pipeline.detect.yolo import detections_from_ultralytics as detections_from_ultralytics
from mega_runtime.pipeline.detect.yolox import YoloxDetector

__all__ = [
    "BLAZEPOSE_MODEL_FILES",
    "DETECTOR_NAMES",
    "DOWNLOADING_DETECTORS",
    "BlazePoseDetector",
    "Detection",
    "GivenBoxes",
    "PersonDetector",
    "YoloDetector",
    "YoloxDetector",
    "find_blazepose_models",
    "make_detector",
]

DETECTOR_NAMES: tuple[str, ...] = ("default", "auto", "yolox", "blazepose", "yolo", "boxes")
"""Names :func:`make_detector` accepts; ``"default"`` is ``"auto"``."""

#: Detectors that may download their model when built, and so take a ``progress`` option.
DOWNLOADING_DETECTORS: tuple[str, ...] = ("default", "auto", "yolox")

log = logging.getLogger(__name__)
_warned: set[str] = set()


def make_detector(name: str = defaults.DETECTOR, **options: Any) -> PersonDetector:
    """Build a person detector by name.

    * ``"default"`` / ``"auto"``: :class:`YoloxDetector` where it can be had, else :class:`BlazePoseDetector`
      (see :func:`auto_detector`; options of either, each detector gets those it knows).
    * ``"yolox"``: :class:`YoloxDetector` (options ``model_path``, ``conf=0.5``, ``max_people``, ``min_size``,
      ``nms_iou``, ``num_threads``, ``progress``, ``download``).
    * ``"blazepose"``: :class:`BlazePoseDetector` (options ``conf=0.5``, ``max_people``,
      ``min_size``, ``model_dir``, ``num_threads``, ``tiles``, ``hog``).
    * ``"yolo"``: :class:`YoloDetector` (``weights=<path to yolov8x.pt>``, ``conf=0.5``, ``max_people``,
      ``min_size``, ``device``).
    * ``"boxes"``: :class:`GivenBoxes` (``boxes=[(x1, y1, x2, y2), …]``, optional ``scores``, ``conf``,
      ``max_people``, ``min_size``).

    Raises :class:`ConfigError` for an unknown name or option, :class:`DetectorError` when the detector's
    package or model files are missing (:class:`~mega_runtime.errors.WeightsError` when the YOLOX model is
    missing and cannot be downloaded).
    """
    key = str(name).strip().lower()
    factories = {"blazepose": BlazePoseDetector, "yolo": YoloDetector, "yolox": YoloxDetector}
    if key == "boxes":
        return GivenBoxes(**_known_options(GivenBoxes, key, options))
    if key in ("default", "auto"):
        return auto_detector(**options)
    if key not in factories:
        raise ConfigError(
            f"unknown person detector {name!r}", hint=f"use one of: {', '.join(repr(n) for n in DETECTOR_NAMES)}"
        )
    cls = factories[key]
    return cls(**_known_options(cls, key, options))


def auto_detector(**options: Any) -> PersonDetector:
    """:class:`YoloxDetector` when it can be built, else :class:`BlazePoseDetector` after one warning.

    YOLOX is built when onnxruntime imports and its model is in ``$MEGA_YOLOX_DIR`` or the cache, or downloads now
    (never when ``$MEGA_OFFLINE`` is set or ``download=False``). Otherwise the warning (logged once per reason and
    process) says why and how to get YOLOX, and BlazePose is built; its own errors propagate.
    ``options`` may be those of either detector: each gets the ones it accepts.
    """
    unknown = sorted(set(options) - set(YoloxDetector.OPTIONS) - set(BlazePoseDetector.OPTIONS))
    if unknown:
        accepted = sorted(set(YoloxDetector.OPTIONS) | set(BlazePoseDetector.OPTIONS))
        raise ConfigError(
            f"detector 'auto' has no option(s) {', '.join(unknown)}", hint=f"its options are: {', '.join(accepted)}"
        )
    try:
        return YoloxDetector(**{k: v for k, v in options.items() if k in YoloxDetector.OPTIONS})
    except (DetectorError, WeightsError) as exc:
        reason = f"{exc.message} (to get it: {exc.hint})" if exc.hint else exc.message
    if reason not in _warned:
        _warned.add(reason)
        log.warning(
            "person detector: using the offline BlazePose detector, not the better YOLOX-S: %s. "
            "Choose a detector explicitly with --detector to silence this.",
            reason,
        )
    return BlazePoseDetector(**{k: v for k, v in options.items() if k in BlazePoseDetector.OPTIONS})


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
