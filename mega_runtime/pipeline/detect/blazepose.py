"""The offline default detector: MediaPipe's BlazePose models run with a TensorFlow Lite interpreter.

The model files (:data:`BLAZEPOSE_MODEL_FILES`) are found by :func:`find_blazepose_models`; OpenCV and the
interpreter are imported when a :class:`BlazePoseDetector` is built. How the two stages work is described in
the package docstring (:mod:`mega_runtime.pipeline.detect`) and in docs/detection.md.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import defaults
from mega_runtime.errors import ConfigError, DetectorError
from mega_runtime.pipeline.detect.base import Detection, box_iou, check_common_options, check_image, finish_detections

ENV_MODEL_DIR = "MEGA_DETECTOR_DIR"
"""Environment variable naming a folder with the two BlazePose ``.tflite`` files (overrides the other places)."""

BLAZEPOSE_MODEL_FILES: dict[str, tuple[str, str]] = {
    "detector": (
        "modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    ),
    "landmarks": (
        "modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
}
"""Path inside the ``mediapipe`` package and SHA-256 of each model (identical in mediapipe 0.10.9 – 0.10.21)."""

# ai-edge-litert is the project's dependency (wheels for every supported platform and Python); the other two are
# accepted where a user's own environment has them instead.
_TFLITE_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow")
_INTERPRETER_HINT = "pip install ai-edge-litert==2.3.0 (or install the runtime with its dependencies)"
_MODELS_HINT = (
    "run `mega-runtime weights fetch --detector` (downloads the two models, 9.4 MB, SHA-256 checked), or "
    "pip install --no-deps mediapipe==0.10.14 on Python 3.11/3.12 (only its bundled model files are read)"
)
_ALTERNATIVES_HINT = "or pass your own boxes (detector 'boxes') or use detector 'yolo'"

# BlazePose detector (MediaPipe pose_detection_cpu graph): input, anchors and decoding.
_DET_SIZE = 224
_DET_STRIDES = (8, 16, 32, 32, 32)
_DET_NMS_IOU = 0.3
# BlazePose landmark model (pose_landmark_full): input and the detector-keypoint ROI rule.
_LMK_SIZE = 256
_ROI_SCALE = 1.25
_NUM_BODY_LANDMARKS = 33
_PRESENCE_MIN = 0.5
# Whole-person box rules (see the module docstring and docs/detection.md).
_HEAD_TOP = 0.7  # top of the head ≈ mid-ears + 0.7 × (mid-ears − mid-shoulders)
_FINGERTIPS = 2.0  # fingertip ≈ wrist + 2 × (mean of the index and pinky knuckles − wrist)
_MASK_GROWTH = (0.05, 0.12, 0.05, 0.05)  # most the mask may grow the left, top, right, bottom side (× longer side)
_BOX_MARGIN = 0.02  # final margin, fraction of the box's longer side
_MAX_PEOPLE_TRIED = 24  # people (groups of detector candidates) given to the landmark model, best first
_TRIES_PER_PERSON = 3  # detector candidates of one person tried until the landmark model accepts one
_ALTERNATE_MIN = 0.3  # detector score that makes a candidate an alternate view of a person found with ≥ conf
_FINE_TILE_DIVISORS = (2, 4)  # finer tile levels: short side / 2 and / 4 ...
_FINE_TILE_MIN = 160  # ... but tiles of at least 160 px (a 60 px person is then 84 px in the 224 px view)
_FINE_TILE_OVERLAP = 0.25  # neighbouring fine tiles overlap by a quarter of their side
_MIN_BOX_TO_CIRCLE = 0.4  # a box's longer side must be ≥ 0.4 × the detector's body-circle diameter
_PART_INSIDE = 0.6  # a box this much inside a larger one is a part of that person (drop_parts)
_HOG_SHORT_SIDE = 864  # HOG runs on the image scaled to this short side (a 768×576 frame: × 1.5)
_HOG_MARGIN = 0.1  # the HOG window holds the person with this fraction of its height above and below
_MAX_DRIFT = 0.5  # landmark centre farther than this × body-circle radius from the detector's: another person
_REFINE_STEPS = 2  # landmark runs on the region the previous run's landmarks give


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mediapipe_dir() -> Path | None:
    """The installed ``mediapipe`` package folder, found without importing mediapipe."""
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_blazepose_models(model_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Paths of the two BlazePose model files, checked against their SHA-256.

    Looked up in ``model_dir`` (if given), else ``$MEGA_DETECTOR_DIR`` (if set), else the installed ``mediapipe``
    package, else the download cache (``<cache>/detector``, filled by ``mega-runtime weights fetch --detector``).
    A folder may hold the files flat (``pose_detection.tflite``, ``pose_landmark_full.tflite``) or in mediapipe's
    layout (``modules/pose_detection/…``).
    """
    from mega_runtime.weights import cache_detector_dir

    explicit = model_dir if model_dir is not None else os.environ.get(ENV_MODEL_DIR) or None
    if explicit is not None:
        roots, where = [Path(explicit).expanduser()], f"{explicit}"
    else:
        package = _mediapipe_dir()
        cache = cache_detector_dir()
        roots = [root for root in (package, cache) if root is not None and root.is_dir()]
        where = f"the mediapipe package or {cache}"
        if not roots:
            raise DetectorError(
                "the default person detector needs the BlazePose model files, and neither the mediapipe package "
                f"nor the download cache ({cache}) holds them",
                hint=f"{_MODELS_HINT}; or set {ENV_MODEL_DIR} to a folder holding pose_detection.tflite and "
                f"pose_landmark_full.tflite; {_ALTERNATIVES_HINT}",
            )
    found: dict[str, Path] = {}
    for key, (relative, sha256) in BLAZEPOSE_MODEL_FILES.items():
        options = [root / relative for root in roots] + [root / Path(relative).name for root in roots]
        path = next((p for p in options if p.is_file()), None)
        if path is None:
            raise DetectorError(
                f"{Path(relative).name} not found in {where}",
                hint=f"{_MODELS_HINT}; mediapipe 0.10.9 – 0.10.21 bundle it (0.10.30 and later do not)",
            )
        if _sha256(path) != sha256:
            raise DetectorError(
                f"{path} is not the BlazePose model this detector decodes (SHA-256 differs)",
                hint=f"{_MODELS_HINT}; or point model_dir at the right files",
            )
        found[key] = path
    return found


def _tflite_interpreter_class() -> Any:
    """The TFLite ``Interpreter`` class of the first runtime in :data:`_TFLITE_MODULES` that imports.

    The one place that chooses the interpreter (docs/detection.md, "Interpreters"); :class:`DetectorError` if none.
    """
    errors = []
    for module_name in _TFLITE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        return module.lite.Interpreter if module_name == "tensorflow" else module.Interpreter
    raise DetectorError(
        f"the default person detector needs a TensorFlow Lite interpreter, and none is installed ({'; '.join(errors)})",
        hint=f"{_INTERPRETER_HINT}; {_ALTERNATIVES_HINT}",
    )


def ssd_anchor_centres() -> np.ndarray:
    """(2254, 2) anchor centres of the BlazePose detector, in input fractions (MediaPipe's SsdAnchorsCalculator
    with fixed anchor size, aspect ratio 1 and the interpolated scale: two anchors per layer and cell; layers of
    equal stride share one grid)."""
    centres = []
    layer = 0
    while layer < len(_DET_STRIDES):
        stride = _DET_STRIDES[layer]
        same = 0
        while layer + same < len(_DET_STRIDES) and _DET_STRIDES[layer + same] == stride:
            same += 1
        cells = math.ceil(_DET_SIZE / stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, 2 * same, axis=0))
        layer += same
    return np.concatenate(centres, axis=0)


class _Pyramid:
    """An image and its area-averaged reductions by powers of two (built on demand), sampled with OpenCV."""

    def __init__(self, image: np.ndarray, cv2: Any) -> None:
        self.cv2 = cv2
        self.levels = {1: image}

    def level(self, factor: int) -> np.ndarray:
        if factor not in self.levels:
            image = self.levels[1]
            size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
            self.levels[factor] = self.cv2.resize(image, size, interpolation=self.cv2.INTER_AREA)
        return self.levels[factor]

    def sample(self, affine: np.ndarray, size: int, replicate: bool) -> np.ndarray:
        """(size, size, 3) float32 BGR in [0, 255]: the output point (u, v) (continuous, pixel centres at
        +0.5) shows the image at ``affine @ (u, v, 1)`` (continuous image pixels). Bilinear on the reduction
        whose pixel is at most one output pixel; outside the image: zero, or the nearest edge (``replicate``)."""
        scale = math.sqrt(abs(float(np.linalg.det(affine[:, :2]))))
        factor = 1 << max(0, math.floor(math.log2(max(scale, 1.0))))
        image = self.level(factor)
        full = self.levels[1]
        shrink = np.array([[image.shape[1] / full.shape[1]], [image.shape[0] / full.shape[0]]])
        # output pixel index (j, i) -> level pixel index: centre of (j, i) is (j + 0.5, i + 0.5).
        inverse = affine * shrink
        inverse[:, 2] += inverse[:, :2] @ np.array([0.5, 0.5]) - 0.5
        cv2 = self.cv2
        border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
        out = cv2.warpAffine(
            image, inverse, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border
        )
        return out.astype(np.float32)


@dataclass
class _Candidate:
    score: float
    box: np.ndarray  # detector box (x1, y1, x2, y2) in image pixels
    keypoints: np.ndarray  # (4, 2): mid-hip, body-circle point, mid-shoulder, upper-body point

    @property
    def radius(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    def same_person(self, other: _Candidate) -> bool:
        reach = 0.3 * min(self.radius, other.radius)
        face = np.linalg.norm((self.box[:2] + self.box[2:]) / 2 - (other.box[:2] + other.box[2:]) / 2)
        shoulders = np.linalg.norm(self.keypoints[2] - other.keypoints[2])
        return bool(face < reach and shoulders < reach)


class BlazePoseDetector:
    """The offline default: MediaPipe BlazePose detector + landmark model, several people per image.

    Options: ``conf`` (minimum detector score, 0.5 as in MediaPipe), ``max_people``, ``min_size`` (pixels,
    longer box side), ``model_dir`` (folder with the two ``.tflite`` files; default: ``$MEGA_DETECTOR_DIR``,
    else the installed ``mediapipe`` package), ``num_threads`` (TFLite threads, default
    ``min(4, cpu_count)``), ``tiles`` (also run the detector on square tiles along the long side of wide/tall
    images and on the finer tiles of :func:`fine_tiles`; default on, it finds people that are small in a
    letterboxed 224×224 view), ``hog`` (also take OpenCV's HOG people detections as candidates for the
    landmark model; default on, it finds people seen from the back or the side).
    """

    OPTIONS = ("conf", "max_people", "min_size", "model_dir", "num_threads", "tiles", "hog")
    name = "blazepose"

    # Set in __init__ (where OpenCV and the models are loaded); declared here so that mypy knows their types.
    tiles: bool
    hog: bool
    _hog: Any
    model_files: dict[str, Path]
    _cv2: Any
    _detector: Any  # a TFLite Interpreter (tflite_runtime / ai_edge_litert / tensorflow: no type information)
    _landmarks: Any
    _det_input: int
    _det_coords: int
    _det_scores: int
    _lmk_input: int
    _lmk_points: int
    _lmk_presence: int
    _lmk_mask: int
    _anchors: np.ndarray

    def __init__(
        self,
        conf: float = defaults.DETECTOR_CONF,
        max_people: int | None = defaults.DETECTOR_MAX_PEOPLE,
        min_size: float = defaults.DETECTOR_MIN_SIZE_PX,
        model_dir: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        tiles: bool = True,
        hog: bool = True,
    ) -> None:
        self.conf, self.max_people, self.min_size = check_common_options(conf, max_people, min_size)
        if num_threads is None:
            num_threads = min(4, os.cpu_count() or 1)
        if not (isinstance(num_threads, numbers.Integral) and num_threads >= 1):
            raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}", hint="e.g. 2")
        num_threads = int(num_threads)
        self.tiles = bool(tiles)
        self.hog = bool(hog)
        import cv2

        self._cv2 = cv2
        interpreter_class = _tflite_interpreter_class()
        self.model_files = find_blazepose_models(model_dir)
        try:
            self._detector = interpreter_class(model_path=str(self.model_files["detector"]), num_threads=num_threads)
            self._landmarks = interpreter_class(model_path=str(self.model_files["landmarks"]), num_threads=num_threads)
            self._detector.allocate_tensors()
            self._landmarks.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise DetectorError(
                f"the TFLite interpreter could not load the BlazePose models: {exc}",
                hint=f"{_INTERPRETER_HINT}; {_ALTERNATIVES_HINT}",
            ) from exc
        self._det_input = self._detector.get_input_details()[0]["index"]
        det_outputs = {int(d["shape"][-1]): d["index"] for d in self._detector.get_output_details()}
        self._det_coords, self._det_scores = det_outputs[12], det_outputs[1]
        self._lmk_input = self._landmarks.get_input_details()[0]["index"]
        lmk_outputs = {tuple(int(s) for s in d["shape"]): d["index"] for d in self._landmarks.get_output_details()}
        self._lmk_points = lmk_outputs[(1, 195)]
        self._lmk_presence = lmk_outputs[(1, 1)]
        self._lmk_mask = lmk_outputs[(1, _LMK_SIZE, _LMK_SIZE, 1)]
        self._anchors = ssd_anchor_centres()
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    # stage 1: the pose detector ---------------------------------------------------------------------------
    def _squares(self, height: int, width: int) -> list[tuple[float, float, float]]:
        """(x0, y0, side) of the square views the detector sees: the letterboxed image, square tiles of the short
        side along the long side, then the finer tile levels of :func:`fine_tiles` (small people)."""
        side = float(max(height, width))
        views = [((width - side) / 2, (height - side) / 2, side)]
        short, long_ = min(height, width), max(height, width)
        if self.tiles and long_ > 1.15 * short:
            count = math.ceil((long_ - short) / (short / 3)) + 1
            for i in range(count):
                offset = (long_ - short) * i / (count - 1)
                views.append((offset, 0.0, float(short)) if width > height else (0.0, offset, float(short)))
        if self.tiles:
            views += fine_tiles(height, width)
        return views

    def _detect_view(self, pyramid: _Pyramid, x0: float, y0: float, side: float, thresh: float) -> list[_Candidate]:
        step = side / _DET_SIZE
        affine = np.array([[step, 0.0, x0], [0.0, step, y0]])
        bgr = pyramid.sample(affine, _DET_SIZE, replicate=False)
        tensor = (bgr[..., ::-1] / 127.5 - 1.0).astype(np.float32)[None]
        self._detector.set_tensor(self._det_input, np.ascontiguousarray(tensor))
        self._detector.invoke()
        raw = self._detector.get_tensor(self._det_coords)[0]
        logits = np.clip(self._detector.get_tensor(self._det_scores)[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= thresh
        if not keep.any():
            return []
        values = raw[keep] / _DET_SIZE
        anchors = self._anchors[keep]
        centre = values[:, :2] + anchors
        half = values[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = values[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :]
        candidates = []
        for score, box, kps in weighted_nms(scores[keep], boxes, keypoints, _DET_NMS_IOU):
            origin = np.array([x0, y0])
            candidates.append(_Candidate(score, box * side + np.tile(origin, 2), kps * side + origin))
        return candidates

    def _hog_candidates(self, image_bgr: np.ndarray) -> list[_Candidate]:
        """Candidates from OpenCV's HOG people detector (Dalal–Triggs linear SVM, 64×128 window), run on the image
        scaled to a short side of :data:`_HOG_SHORT_SIDE` pixels. It finds upright people from any side (backs,
        profiles) that the face-keyed BlazePose detector misses; each becomes a candidate whose keypoints are
        placed where an upright person's would be, and the landmark model decides (presence ≥ 0.5) as for any
        other. Score: sigmoid(2 × SVM margin)."""
        cv2 = self._cv2
        height, width = image_bgr.shape[:2]
        scale = _HOG_SHORT_SIDE / min(height, width)
        size = (max(64, round(width * scale)), max(128, round(height * scale)))
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        small = cv2.resize(image_bgr, size, interpolation=interpolation)
        rects, weights = self._hog.detectMultiScale(
            small, hitThreshold=0.0, winStride=(8, 8), padding=(16, 16), scale=1.05
        )
        out = []
        for (x, y, w, h), margin in zip(
            np.asarray(rects, dtype=np.float64).reshape(-1, 4), np.ravel(weights), strict=True
        ):
            cx = (x + w / 2) / scale
            top, tall = (y + _HOG_MARGIN * h) / scale, (1.0 - 2.0 * _HOG_MARGIN) * h / scale
            hip = np.array([cx, top + 0.53 * tall])
            shoulders = np.array([cx, top + 0.2 * tall])
            face = np.array([cx - 0.07 * tall, top, cx + 0.07 * tall, top + 0.15 * tall])
            keypoints = np.stack([hip, hip - np.array([0.0, 0.6 * tall]), shoulders, top + np.array([cx - top, 0.0])])
            out.append(_Candidate(float(1.0 / (1.0 + math.exp(-2.0 * float(margin)))), face, keypoints))
        return out

    # stage 2: the landmark model on each candidate's region -------------------------------------------------
    def _landmarks_for(
        self, pyramid: _Pyramid, centre: np.ndarray, circle_point: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray, float]:
        """Run the landmark model on MediaPipe's region for a body centred at ``centre`` whose enclosing circle
        passes through ``circle_point`` (square of side 2.5 × radius, rotated so that the body is upright).

        Returns (39, 2) landmarks in image pixels (33 body + 6 auxiliary), the pose-presence score, (N, 2)
        image positions of the mask pixels, and the size of one region pixel in image pixels.
        """
        vec = circle_point - centre
        size = 2.0 * float(np.linalg.norm(vec)) * _ROI_SCALE
        angle = math.pi / 2 - math.atan2(-vec[1], vec[0])
        cos, sin = math.cos(angle), math.sin(angle)
        step = max(size, 1.0) / _LMK_SIZE
        linear = np.array([[cos, -sin], [sin, cos]]) * step
        affine = np.concatenate([linear, (centre - linear @ np.array([_LMK_SIZE / 2, _LMK_SIZE / 2]))[:, None]], 1)
        bgr = pyramid.sample(affine, _LMK_SIZE, replicate=True)
        tensor = (bgr[..., ::-1] / 255.0).astype(np.float32)[None]
        self._landmarks.set_tensor(self._lmk_input, np.ascontiguousarray(tensor))
        self._landmarks.invoke()
        raw = self._landmarks.get_tensor(self._lmk_points)[0].reshape(39, 5)
        presence = float(self._landmarks.get_tensor(self._lmk_presence)[0, 0])
        mask = self._landmarks.get_tensor(self._lmk_mask)[0, :, :, 0] > 0.0  # sigmoid(logit) > 0.5
        points = raw[:, :2] @ affine[:, :2].T + affine[:, 2]
        rows, cols = np.nonzero(mask)
        mask_points = np.stack([cols + 0.5, rows + 0.5], axis=1) @ affine[:, :2].T + affine[:, 2]
        return points, presence, mask_points, step

    def _person_box(
        self, landmarks: np.ndarray, mask_points: np.ndarray, step: float, height: int, width: int
    ) -> np.ndarray:
        """Whole-person box from the 33 body landmarks, the extrapolated top of the head and fingertips, and
        the segmentation mask; clipped to the image (what lies outside the frame is not part of the box)."""
        body = landmarks[:_NUM_BODY_LANDMARKS]
        head = (body[7] + body[8]) / 2  # between the ears
        head_top = head + _HEAD_TOP * (head - (body[11] + body[12]) / 2)
        tips = [body[w] + _FINGERTIPS * ((body[i] + body[p]) / 2 - body[w]) for w, i, p in ((15, 19, 17), (16, 20, 18))]
        points = np.vstack([body, head_top[None], np.stack(tips)])
        box = np.concatenate([points.min(0), points.max(0)])
        size = float(max(box[2] - box[0], box[3] - box[1]))
        box = grow_with_mask(box, mask_points, step, np.array(_MASK_GROWTH) * size)
        margin = _BOX_MARGIN * float(max(box[2] - box[0], box[3] - box[1]))
        box = box + np.array([-margin, -margin, margin, margin])
        return np.clip(box, 0.0, [width, height, width, height])

    def _person(
        self, pyramid: _Pyramid, group: list[_Candidate]
    ) -> tuple[np.ndarray, float, np.ndarray, _Candidate] | None:
        """Landmarks for the first detector candidate of one person whose region the landmark model accepts:
        a run on the detector's region, then ``_REFINE_STEPS`` runs on the region the landmarks themselves
        give (auxiliary landmarks 33 = centre, 34 = circle point), as MediaPipe does from frame to frame."""
        for cand in group[:_TRIES_PER_PERSON]:
            centre, circle_point = cand.keypoints[0], cand.keypoints[1]
            runs = []
            for _ in range(1 + _REFINE_STEPS):
                landmarks, presence, mask_points, step = self._landmarks_for(pyramid, centre, circle_point)
                runs.append((landmarks, presence, mask_points, step))
                centre, circle_point = landmarks[33], landmarks[34]
                if np.linalg.norm(centre - cand.keypoints[0]) > _MAX_DRIFT * cand.radius:
                    break  # the landmarks moved onto someone else (a neighbour in the region): keep what came before
            # the last run that stayed on the detector's person and that the model accepts
            for landmarks, presence, mask_points, step in reversed(runs):
                if presence >= _PRESENCE_MIN and np.linalg.norm(landmarks[33] - cand.keypoints[0]) <= (
                    _MAX_DRIFT * cand.radius
                ):
                    return landmarks, step, mask_points, cand
        return None

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        height, width = check_image(image_bgr)
        pyramid = _Pyramid(image_bgr, self._cv2)
        candidates: list[_Candidate] = []
        for x0, y0, side in self._squares(height, width):
            candidates += self._detect_view(pyramid, x0, y0, side, min(self.conf, _ALTERNATE_MIN))
        if self.hog:
            candidates += self._hog_candidates(image_bgr)
        candidates.sort(key=lambda c: -c.score)
        groups: list[list[_Candidate]] = []  # one per person, best detector score first
        for cand in candidates:
            group = next((g for g in groups if cand.same_person(g[0])), None)
            if group is not None:
                group.append(cand)  # another view of a person: an alternate region for the landmark model
            elif cand.score >= self.conf:
                groups.append([cand])
        people: list[tuple[float, np.ndarray, np.ndarray]] = []  # score, box, nose
        for group in groups[:_MAX_PEOPLE_TRIED]:
            if self.max_people is not None and len(people) >= self.max_people:
                break  # groups come best first: the rest would be cut
            found = self._person(pyramid, group)
            if found is None:
                continue
            landmarks, step, mask_points, cand = found
            box = self._person_box(landmarks, mask_points, step, height, width)
            longer = max(box[2] - box[0], box[3] - box[1])
            if box[2] <= box[0] or box[3] <= box[1] or longer < self.min_size:
                continue
            if longer < _MIN_BOX_TO_CIRCLE * 2.0 * cand.radius and not _cut_by_frame(box, height, width):
                continue  # the landmarks shrank onto a part of what the detector saw as a whole body
            nose = landmarks[0]
            duplicate = any(
                box_iou(box, other[None])[0] > 0.6 and np.linalg.norm(nose - other_nose) < 0.15 * (box[3] - box[1])
                for _, other, other_nose in people
            )
            if not duplicate:
                people.append((group[0].score, box, nose))
        people = drop_parts(people)
        out = [Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(score)) for score, b, _ in people]
        return finish_detections(out, self.conf, self.max_people, self.min_size)


def _cut_by_frame(box: np.ndarray, height: int, width: int) -> bool:
    return bool(box[0] <= 0.5 or box[1] <= 0.5 or box[2] >= width - 0.5 or box[3] >= height - 0.5)


def drop_parts(people: list[tuple[float, np.ndarray, np.ndarray]]) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Remove each person whose box holds two or more smaller people's boxes (each at least :data:`_PART_INSIDE`
    inside it, and either at least 0.6 × as tall and at most 0.7 × as wide — people side by side — or with a
    higher score than the large box: people the landmarks spread over), then each person whose box lies for at least
    :data:`_PART_INSIDE` of its area inside a larger person's box: a tile that saw only part of a large person
    (a torso, a leg) gives such a box. The larger box keeps the better of the two scores.
    ``people``: (score, box xyxy, nose) tuples; their order is kept."""
    areas = [float((b[2] - b[0]) * (b[3] - b[1])) for _, b, _ in people]
    keep = [True] * len(people)
    for j, (other_score, other, _) in enumerate(people):  # a box holding two or more people is a group: drop it
        held = 0
        for i, (score, box, _) in enumerate(people):
            w = min(box[2], other[2]) - max(box[0], other[0])
            h = min(box[3], other[3]) - max(box[1], other[1])
            inside = i != j and areas[i] < areas[j] and w > 0 and h > 0 and w * h >= _PART_INSIDE * areas[i]
            tall = box[3] - box[1] >= 0.6 * (other[3] - other[1])  # a whole person beside others, not a limb
            narrow = box[2] - box[0] <= 0.7 * (other[2] - other[0])
            held += int(inside and ((tall and narrow) or score > other_score))
        keep[j] = held < 2
    scores = [score for score, _, _ in people]
    for i, (_, box, _) in enumerate(people):
        for j, (_, other, _) in enumerate(people):
            if i == j or areas[j] <= areas[i] or not keep[j]:
                continue
            w = min(box[2], other[2]) - max(box[0], other[0])
            h = min(box[3], other[3]) - max(box[1], other[1])
            if w > 0 and h > 0 and w * h >= _PART_INSIDE * areas[i]:
                keep[i] = False
                scores[j] = max(scores[j], scores[i])
                break
    return [(scores[i], box, nose) for i, (_, box, nose) in enumerate(people) if keep[i]]


def fine_tiles(height: int, width: int) -> list[tuple[float, float, float]]:
    """(x0, y0, side) of the finer square tiles: sides of 1/2 and 1/4 of the image's short side, but at least
    :data:`_FINE_TILE_MIN` pixels (a person ~60 px tall then fills about a third of a 224×224 detector view),
    each level covering the image with tiles that overlap by a quarter of their side (the last row and
    column end at the image's edge)."""
    short = min(height, width)
    sides: list[float] = []
    for divisor in _FINE_TILE_DIVISORS:
        side = max(float(_FINE_TILE_MIN), short / divisor)
        if side < 0.8 * short and all(abs(side - other) > 0.2 * other for other in sides):
            sides.append(side)
    views = []
    for side in sides:
        stride = side * (1.0 - _FINE_TILE_OVERLAP)
        nx = max(1, math.ceil((width - side) / stride) + 1)
        ny = max(1, math.ceil((height - side) / stride) + 1)
        for j in range(ny):
            for i in range(nx):
                x0 = (width - side) * i / (nx - 1) if nx > 1 else (width - side) / 2
                y0 = (height - side) * j / (ny - 1) if ny > 1 else (height - side) / 2
                views.append((x0, y0, side))
    return views


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, threshold: float
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-maximum suppression: each kept detection is the score-weighted mean of the
    boxes and keypoints that overlap the best remaining one by more than ``threshold`` IoU; it keeps the best
    score."""
    order = np.argsort(-scores, kind="stable")
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (box_iou(boxes[i], boxes) > threshold)
        group[i] = True
        weights = scores[group]
        total = float(weights.sum())
        box = (boxes[group] * weights[:, None]).sum(0) / total
        kps = (keypoints[group] * weights[:, None, None]).sum(0) / total
        out.append((float(scores[i]), box, kps))
        alive &= ~group
    return out


def grow_with_mask(box: np.ndarray, points: np.ndarray, step: float, caps: np.ndarray) -> np.ndarray:
    """Grow each side of ``box`` (x1, y1, x2, y2) outwards while the mask points continue without a gap (bins
    of 1.5 mask pixels), by at most ``caps`` = (left, top, right, bottom) pixels."""
    if len(points) == 0:
        return box
    x1, y1, x2, y2 = (float(v) for v in box)
    bin_size = 1.5 * step
    xs, ys = points[:, 0], points[:, 1]

    def reach(distance: np.ndarray, cap: float) -> float:
        distance = distance[(distance > 0) & (distance <= cap)]
        if len(distance) == 0:
            return 0.0
        occupied = np.zeros(int(cap // bin_size) + 2, dtype=bool)
        occupied[(distance // bin_size).astype(np.int64)] = True
        gaps = np.flatnonzero(~occupied)
        return min(float(gaps[0] * bin_size), cap) if len(gaps) else cap

    in_rows = (ys >= y1) & (ys <= y2)
    in_cols = (xs >= x1) & (xs <= x2)
    left, right = reach(x1 - xs[in_rows], caps[0]), reach(xs[in_rows] - x2, caps[2])
    top, bottom = reach(y1 - ys[in_cols], caps[1]), reach(ys[in_cols] - y2, caps[3])
    return np.array([x1 - left, y1 - top, x2 + right, y2 + bottom])
