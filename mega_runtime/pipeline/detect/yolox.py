"""YOLOX through onnxruntime (detector ``"yolox"``): the downloadable multi-person detector.

The model is YOLOX-S (Megvii, Apache-2.0) as exported to ONNX and published in opencv_zoo
(``weights.registry.YOLOX_FILE``, downloaded on first use, pinned by SHA-256 and size). Any YOLOX export with the
same interface works (``model_path=``): one input ``(1, 3, H, W)`` float32, the letterboxed image in BGR order with
values in 0…255 (no normalisation), and one output ``(1, N, 5 + C)``, the raw head (``decode_in_inference=False``)
with, per grid cell of the strides 8, 16 and 32 (``N = Σ (H/s)·(W/s)``, 8400 at 640×640), the box offsets
``(dx, dy, log w, log h)``, the objectness and the ``C`` class scores, all after their sigmoid (C = 80, COCO;
class 0 is person).

Processing (:meth:`YoloxDetector.detect`):

1. letterbox: resize by ``r = min(H / h, W / w)`` to ``(round-down(w·r), round-down(h·r))`` with bilinear
   interpolation, paste at the top-left corner of an ``H × W`` canvas of grey 114;
2. decode (:func:`decode_yolox`): cell ``(gx, gy)`` of stride ``s`` gives centre ``((dx + gx)·s, (dy + gy)·s)`` and
   size ``(exp(log w)·s, exp(log h)·s)`` in canvas pixels; person score = objectness × person-class score;
3. keep scores ≥ ``conf``, map boxes back to the original image (divide x by the actual horizontal scale
   ``round-down(w·r) / w`` and y by the vertical one), clip them to ``[0, w] × [0, h]``;
4. greedy non-maximum suppression (:func:`nms`, IoU > ``nms_iou`` removes the lower score), then the common
   filtering (:func:`~mega_runtime.pipeline.detect.base.finish_detections`).

onnxruntime and OpenCV are imported when a detector is built; nothing here touches the network unless the model
is resolved through :func:`~mega_runtime.weights.resolve.resolve_yolox_model` (which honours ``$MEGA_OFFLINE``).
"""

from __future__ import annotations

import importlib
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import defaults
from mega_runtime.errors import ConfigError, DetectorError
from mega_runtime.pipeline.detect.base import Detection, box_iou, check_common_options, check_image, finish_detections
from mega_runtime.weights.registry import ProgressCallback

#: Strides of the three YOLOX output levels (P3, P4, P5).
STRIDES: tuple[int, ...] = (8, 16, 32)
#: Grey level of the letterbox padding (YOLOX's own preprocessing).
PAD_VALUE = 114
#: COCO class index of "person".
PERSON_CLASS = 0
#: IoU above which the lower-scored of two person boxes is suppressed (YOLOX's demo value).
NMS_IOU = 0.45
_INSTALL_HINT = "pip install onnxruntime (the runtime's own dependency; wheels for Windows, macOS and Linux)"


def letterbox(image_bgr: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """``image_bgr`` (h, w, 3) uint8 resized into the top-left of a grey (H, W) canvas.

    Returns the network input ``(1, 3, H, W)`` float32 (BGR, 0…255) and the actual scales ``(sx, sy)`` from original
    to canvas pixels (continuous coordinates: a canvas x is ``sx ×`` the original x).
    """
    import cv2

    height, width = image_bgr.shape[:2]
    ratio = min(size_hw[0] / height, size_hw[1] / width)
    new_w, new_h = max(1, int(width * ratio)), max(1, int(height * ratio))
    canvas = np.full((size_hw[0], size_hw[1], 3), PAD_VALUE, dtype=np.float32)
    resized = image_bgr if (new_w, new_h) == (width, height) else cv2.resize(image_bgr, (new_w, new_h))
    canvas[:new_h, :new_w] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), (new_w / width, new_h / height)


def grid_cells(size_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates ``(N, 2)`` (gx, gy) and strides ``(N, 1)`` of the YOLOX outputs, row-major per level."""
    cells, steps = [], []
    for stride in strides:
        rows, cols = size_hw[0] // stride, size_hw[1] // stride
        gy, gx = np.mgrid[0:rows, 0:cols]
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        steps.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode_yolox(
    raw: np.ndarray, size_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES, class_index: int = PERSON_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` xyxy in canvas pixels and scores ``(N,)`` (objectness × class score) from the raw head.

    ``raw`` is ``(N, 5 + C)`` for one image. Raises :class:`DetectorError` when ``N`` does not match the grid of
    ``size_hw`` or the class does not exist.
    """
    cells, steps = grid_cells(size_hw, strides)
    if raw.ndim != 2 or raw.shape[0] != cells.shape[0] or raw.shape[1] <= 5 + class_index:
        raise DetectorError(
            f"the YOLOX model's output has shape {raw.shape}, expected ({cells.shape[0]}, 5 + classes) for a "
            f"{size_hw[1]}×{size_hw[0]} input",
            hint="use a YOLOX ONNX export without built-in decoding (decode_in_inference=False), such as the "
            "registered YOLOX-S",
        )
    raw = raw.astype(np.float64)
    centre = (raw[:, 0:2] + cells) * steps
    half = np.exp(np.minimum(raw[:, 2:4], 30.0)) * steps / 2.0  # exp(30)·32 px is already absurd: no overflow
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return boxes, raw[:, 4] * raw[:, 5 + class_index]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first (equal scores keep their order)."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        best, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        keep.append(int(best))
        if rest.size == 0:
            break
        order = [int(i) for i in rest[box_iou(boxes[best], boxes[rest]) <= iou]]
    return keep


class YoloxDetector:
    """YOLOX person boxes (COCO class 0) from an ONNX model run by onnxruntime on the CPU.

    Options: ``model_path`` (an ``.onnx`` file; default: the registered YOLOX-S, resolved by
    :func:`~mega_runtime.weights.resolve.resolve_yolox_model`: ``$MEGA_YOLOX_DIR``, else the cache, else
    downloaded when ``download`` is true and ``$MEGA_OFFLINE`` is not set), ``conf`` (minimum objectness × person
    score), ``max_people``, ``min_size``, ``nms_iou`` (default 0.45), ``num_threads`` (onnxruntime intra-op
    threads, default ``min(4, cpu_count)``), ``progress`` (download progress callback).

    Raises :class:`DetectorError` when onnxruntime is missing or the model does not have the YOLOX interface,
    :class:`~mega_runtime.errors.WeightsError` when the model file is missing and cannot be downloaded.
    """

    OPTIONS = ("model_path", "conf", "max_people", "min_size", "nms_iou", "num_threads", "progress", "download")
    name = "yolox"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        conf: float = defaults.DETECTOR_CONF,
        max_people: int | None = defaults.DETECTOR_MAX_PEOPLE,
        min_size: float = defaults.DETECTOR_MIN_SIZE_PX,
        nms_iou: float = NMS_IOU,
        num_threads: int | None = None,
        progress: ProgressCallback | None = None,
        download: bool = True,
    ) -> None:
        self.conf, self.max_people, self.min_size = check_common_options(conf, max_people, min_size)
        if not (isinstance(nms_iou, numbers.Real) and 0.0 < nms_iou <= 1.0):
            raise ConfigError(f"nms_iou must be a number in (0, 1], got {nms_iou!r}", hint="e.g. nms_iou=0.45")
        if num_threads is not None and not (isinstance(num_threads, numbers.Integral) and num_threads >= 1):
            raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}", hint="e.g. 2")
        self.nms_iou: float = float(nms_iou)
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError as exc:
            raise DetectorError(f"the 'yolox' detector needs onnxruntime ({exc})", hint=_INSTALL_HINT) from exc
        if model_path is None:
            from mega_runtime.weights.resolve import resolve_yolox_model

            path = resolve_yolox_model(download=download, progress=progress)
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise DetectorError(f"YOLOX model not found: {path}", hint="pass the path of a YOLOX .onnx file")
        self.model_path: Path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid models
            raise DetectorError(
                f"onnxruntime cannot load {path}: {type(exc).__name__}: {exc}",
                hint="delete the file and run `mega-runtime weights fetch --yolox` again, or pass another model",
            ) from exc
        self.input_hw: tuple[int, int] = self._check_interface()

    def _check_interface(self) -> tuple[int, int]:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        static = len(shape) == 4 and all(isinstance(d, int) for d in shape[2:])
        if len(outputs) != 1 or not static or shape[1] not in (3, "3") or shape[2] % 32 or shape[3] % 32:
            raise DetectorError(
                f"{self.model_path} does not look like a YOLOX export: inputs "
                f"{[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}",
                hint="expected one (1, 3, H, W) input with H and W multiples of 32 and one (1, N, 85) output",
            )
        self._input_name = inputs[0].name
        return int(shape[2]), int(shape[3])

    def run_network(self, blob: np.ndarray) -> np.ndarray:
        """The raw head output ``(N, 5 + C)`` for one letterboxed input ``(1, 3, H, W)`` float32."""
        raw = np.asarray(self._session.run(None, {self._input_name: blob})[0])
        if raw.ndim != 3 or raw.shape[0] != 1:
            raise DetectorError(
                f"the YOLOX model's output has shape {raw.shape}, expected (1, N, 5 + classes)",
                hint="use a YOLOX ONNX export without built-in decoding, such as the registered YOLOX-S",
            )
        return raw[0]

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        height, width = check_image(image_bgr)
        blob, (sx, sy) = letterbox(image_bgr, self.input_hw)
        boxes, scores = decode_yolox(self.run_network(blob), self.input_hw)
        kept = np.flatnonzero(np.isfinite(scores) & (scores >= self.conf))
        boxes = boxes[kept] / np.array([sx, sy, sx, sy])
        boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], dtype=np.float64))
        scores = np.clip(scores[kept], 0.0, 1.0)
        finite = np.isfinite(boxes).all(axis=1)
        valid = np.flatnonzero(finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        boxes, scores = boxes[valid], scores[valid]
        detections = [
            Detection(tuple(float(v) for v in boxes[i]), float(scores[i]))  # type: ignore[arg-type]
            for i in nms(boxes, scores, self.nms_iou)
        ]
        return finish_detections(detections, self.conf, self.max_people, self.min_size)
