"""Person detection: the offline default on real photos, caller boxes, the YOLO adapter and the errors."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.errors import ConfigError, DetectionInputError, DetectorError, WeightsError
from mega_runtime.pipeline import detect
from mega_runtime.pipeline.detect import (
    Detection,
    GivenBoxes,
    PersonDetector,
    YoloDetector,
    detections_from_ultralytics,
    make_detector,
)
from mega_runtime.pipeline.detect import blazepose as blazepose_module

ROOT = Path(__file__).resolve().parents[2]

# Whole-person boxes (x1, y1, x2, y2) read by eye from zoomed crops of the photos in shared/assets/images:
# top of the hair, outermost hand / arm / foot, bottom of the feet or the image edge where the frame cuts the legs.
GROUP = "pexels-labonheure-13020855.jpg"  # 4000×2670, four people in the front row, legs cut by the frame
GROUP_FRONT_ROW = [
    (330, 665, 1125, 2670),  # young man, Coca-Cola T-shirt (left arm to his watch hand)
    (1135, 870, 1815, 2670),  # woman in the floral top (her hand holding his, to her right arm)
    (2095, 905, 2700, 2670),  # woman in white, sunglasses (sleeve to sleeve)
    (2680, 860, 3505, 2670),  # woman in the cardigan (left hand to right elbow)
]
GROUP_WALKING_BEHIND = (3458, 890, 3735, 1852)  # the man in green with a backpack, behind the cardigan woman
SINGLE = {
    "pexels-polina-tankilevitch-6739044.jpg": (284, 1475, 1595, 2627),  # 2000×3000, warrior pose: fingertips, toes
    "pexels-marcus-aurelius-6787357.jpg": (342, 2345, 3740, 6367),  # 4480×6720, lunge: heel of the back foot, toes
}
#: A detected box must reach each side of the reference up to this fraction of the reference's width / height.
TOLERANCE = 0.03
MIN_IOU = 0.5


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _contains(box, ref, tolerance: float = TOLERANCE) -> bool:
    dx, dy = tolerance * (ref[2] - ref[0]), tolerance * (ref[3] - ref[1])
    return box[0] <= ref[0] + dx and box[1] <= ref[1] + dy and box[2] >= ref[2] - dx and box[3] >= ref[3] - dy


def _assert_covers(detections: list[Detection], references: list[tuple[int, int, int, int]]) -> None:
    """Each reference person is covered by its own detection: whole person inside, box not absurdly larger."""
    used: set[int] = set()
    for ref in references:
        ious = [_iou(d.box_xyxy, ref) for d in detections]
        best = int(np.argmax(ious))
        box = tuple(round(v) for v in detections[best].box_xyxy)
        assert best not in used, f"person {ref} matched the same box {box} as another person"
        assert _contains(detections[best].box_xyxy, ref), f"box {box} cuts off part of person {ref}"
        assert ious[best] >= MIN_IOU, f"box {box} is much larger than person {ref} (IoU {ious[best]:.2f})"
        used.add(best)


@pytest.fixture(scope="module")
def blazepose() -> detect.BlazePoseDetector:
    try:
        return detect.BlazePoseDetector(num_threads=2)
    except DetectorError as exc:
        pytest.skip(f"the default detector's packages are not installed: {exc.message} (fix: {exc.hint})")


def _read(assets_dir: Path, name: str) -> np.ndarray:
    from mega_runtime.pipeline.media import read_image

    return read_image(assets_dir / "images" / name)


# -- the offline default on real photos --------------------------------------------------------------------


def test_default_detector_finds_each_person_of_the_group_front_row_whole(assets_dir, blazepose):
    detections = blazepose.detect(_read(assets_dir, GROUP))
    assert len(detections) >= len(GROUP_FRONT_ROW)
    _assert_covers(detections, GROUP_FRONT_ROW)
    # and, with the fine tiles, the man in green walking behind them in profile (benchmarks/data/…json)
    assert max(_iou(d.box_xyxy, GROUP_WALKING_BEHIND) for d in detections) >= MIN_IOU
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_default_detector_finds_exactly_the_one_person_whole(assets_dir, blazepose, name):
    image = _read(assets_dir, name)
    detections = blazepose.detect(image)
    assert len(detections) == 1, [d.box_xyxy for d in detections]
    _assert_covers(detections, [SINGLE[name]])
    x1, y1, x2, y2 = detections[0].box_xyxy
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
    assert 0.5 <= detections[0].score <= 1.0


def test_default_detector_options_cut_and_filter(assets_dir, blazepose):
    image = _read(assets_dir, GROUP)
    # The filtering options are checked on the cheapest view (the letterboxed one alone finds two of the front
    # row): the tiles and the HOG proposals would add ~1.5 s per run here and nothing to what is tested.
    cheap = {"num_threads": 2, "tiles": False, "hog": False}
    two = make_detector("blazepose", max_people=2, **cheap).detect(image)
    assert len(two) == 2
    assert all(_iou(a.box_xyxy, b.box_xyxy) < 0.5 for a in two for b in two if a is not b)
    assert make_detector("blazepose", min_size=10_000, **cheap).detect(image) == []
    assert make_detector("blazepose", conf=0.99, **cheap).detect(image) == []


def test_default_detector_finds_nobody_in_a_blank_image(blazepose):
    assert blazepose.detect(np.full((480, 640, 3), 200, dtype=np.uint8)) == []
    assert isinstance(blazepose, PersonDetector)
    assert blazepose.name == "blazepose"


def test_default_detector_reads_model_files_from_a_folder(tmp_path, blazepose):
    for path in blazepose.model_files.values():
        (tmp_path / path.name).symlink_to(path)
    assert detect.find_blazepose_models(tmp_path) == {k: tmp_path / p.name for k, p in blazepose.model_files.items()}


# -- the default detector's errors -------------------------------------------------------------------------


def test_default_detector_without_a_tflite_runtime_says_what_to_install(monkeypatch):
    for module in ("tflite_runtime", "tflite_runtime.interpreter", "ai_edge_litert", "ai_edge_litert.interpreter",
                   "tensorflow"):  # fmt: skip
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(DetectorError) as info:
        make_detector("default")
    assert info.value.code == "detector_unavailable"
    assert "TensorFlow Lite interpreter" in info.value.message
    assert "pip install ai-edge-litert==2.3.0" in info.value.hint


def test_default_detector_without_mediapipe_models_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv(detect.ENV_MODEL_DIR, raising=False)
    monkeypatch.setenv("MEGA_HOME", str(tmp_path))  # an empty download cache
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # find_spec("mediapipe") -> None
    with pytest.raises(DetectorError) as info:
        detect.find_blazepose_models()
    assert "neither the mediapipe package nor the download cache" in info.value.message
    assert "mega-runtime weights fetch --detector" in info.value.hint
    assert "pip install --no-deps mediapipe==0.10.14" in info.value.hint


def test_models_fetched_into_the_cache_are_found_without_mediapipe(blazepose, tmp_path, monkeypatch):
    # fetch_detector_models from a mirror (a file:// URL here): checked by SHA-256 and size, then found by the
    # detector without mediapipe (as on Python 3.13, where no mediapipe wheel bundles the models)
    from mega_runtime.weights import DETECTOR_FILES, cache_detector_dir, fetch_detector_models

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for path in blazepose.model_files.values():
        shutil.copyfile(path, mirror / path.name)
    assert sorted(f.name for f in DETECTOR_FILES) == sorted(p.name for p in blazepose.model_files.values())
    monkeypatch.delenv(detect.ENV_MODEL_DIR, raising=False)
    monkeypatch.setenv("MEGA_HOME", str(tmp_path / "home"))
    folder = fetch_detector_models(base_url=mirror.as_uri())
    assert folder == cache_detector_dir() == tmp_path / "home" / "detector"
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    assert detect.find_blazepose_models() == {k: folder / p.name for k, p in blazepose.model_files.items()}
    (mirror / "pose_detection.tflite").write_bytes(b"a different file")
    (folder / "pose_detection.tflite").unlink()
    with pytest.raises(WeightsError):
        fetch_detector_models(base_url=mirror.as_uri())
    assert not (folder / "pose_detection.tflite").exists()


def test_model_folder_with_missing_or_foreign_files_is_refused(tmp_path, monkeypatch):
    with pytest.raises(DetectorError, match=r"pose_detection\.tflite not found"):
        detect.find_blazepose_models(tmp_path)
    (tmp_path / "pose_detection.tflite").write_bytes(b"not a model")
    (tmp_path / "pose_landmark_full.tflite").write_bytes(b"not a model")
    monkeypatch.setenv(detect.ENV_MODEL_DIR, str(tmp_path))
    with pytest.raises(DetectorError, match="SHA-256 differs") as info:
        detect.find_blazepose_models()
    assert info.value.code == "detector_unavailable"


def test_detector_anchors_follow_mediapipe_layout():
    anchors = blazepose_module.ssd_anchor_centres()
    assert anchors.shape == (2254, 2)
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    assert np.allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # after 28×28×2 stride-8 anchors
    assert np.allclose(anchors[1960:1966], [0.5 / 7, 0.5 / 7])  # stride 32: three layers, six per cell
    assert np.allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_weighted_nms_averages_overlapping_detections():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=float)
    keypoints = np.zeros((3, 4, 2))
    keypoints[1] += 3.0
    kept = blazepose_module.weighted_nms(np.array([0.6, 0.9, 0.8]), boxes, keypoints, 0.3)
    assert [k[0] for k in kept] == [0.9, 0.8]
    assert np.allclose(kept[0][1], [0.6, 0, 10.6, 10])  # (0.9·[1,0,11,10] + 0.6·[0,0,10,10]) / 1.5
    assert np.allclose(kept[0][2], 1.8)
    assert np.allclose(kept[1][1], boxes[2])


def test_mask_growth_stops_at_a_gap_and_at_the_cap():
    box = np.array([100.0, 100.0, 200.0, 300.0])
    ys = np.arange(100.0, 300.0, 1.0)
    left = np.concatenate([np.stack([np.full_like(ys, x), ys], 1) for x in (95.0, 96.0, 97.0, 98.0, 99.0)])
    right = np.stack([np.full_like(ys, 240.0), ys], 1)  # 40 px away on the right: a gap
    above = np.stack([np.full(50, 150.0), np.arange(50.0, 100.0)], 1)  # contiguous 50 px up, cap 20
    caps = np.array([30.0, 20.0, 30.0, 30.0])
    grown = blazepose_module.grow_with_mask(box, np.vstack([left, right, above]), 1.0, caps)
    assert grown[0] == pytest.approx(94.0, abs=1.5)
    assert grown[2] == 200.0
    assert grown[1] == pytest.approx(80.0)
    assert grown[3] == 300.0


# -- boxes given by the caller -----------------------------------------------------------------------------


def _image(height: int = 100, width: int = 200) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def test_given_boxes_are_returned_in_pixels_sorted_by_score():
    detector = make_detector("boxes", boxes=[(10, 20, 50, 90), (60, 5, 100, 95)], scores=[0.4, 0.9])
    out = detector.detect(_image())
    assert out == [Detection((60.0, 5.0, 100.0, 95.0), 0.9), Detection((10.0, 20.0, 50.0, 90.0), 0.4)]
    assert all(isinstance(v, float) for d in out for v in d.box_xyxy)
    assert isinstance(detector, PersonDetector) and detector.name == "boxes"


def test_given_boxes_without_scores_keep_the_callers_order():
    boxes = np.array([[120, 0, 150, 50], [0, 0, 30, 50]], dtype=np.float32)
    out = make_detector("boxes", boxes=boxes).detect(_image())
    assert [d.box_xyxy[0] for d in out] == [120.0, 0.0] and all(d.score == 1.0 for d in out)


def test_given_boxes_reaching_past_the_image_are_clipped():
    out = make_detector("boxes", boxes=[(-20, -5, 80, 130), (150, 10, 260, 60)]).detect(_image())
    assert [d.box_xyxy for d in out] == [(0.0, 0.0, 80.0, 100.0), (150.0, 10.0, 200.0, 60.0)]


def test_given_boxes_entirely_outside_the_image_are_rejected():
    detector = make_detector("boxes", boxes=[(10, 10, 20, 20), (300, 10, 400, 50)])
    with pytest.raises(DetectionInputError, match=r"box 1 .* lies outside the 200×100 image") as info:
        detector.detect(_image())
    assert info.value.code == "detection_input_invalid" and info.value.hint


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(10, 10, 5, 20)], "box 0 .* empty or reversed"),
        ([(10, 10, 20, 10)], "box 0 .* empty or reversed"),
        ([(0, 0, 10, 10), (0, float("nan"), 10, 10)], "box 1 .* not finite"),
        ([(0, 0, float("inf"), 10)], "box 0 .* not finite"),
        ([(0, 0, 10)], r"shape \(N, 4\)"),
        ([[0, 0, 10, 10], [1, 2]], "not a list of 4 numbers"),
        ([("a", 0, 10, 10)], "not a list of 4 numbers"),
    ],
)
def test_malformed_given_boxes_are_refused(boxes, message):
    with pytest.raises(DetectionInputError, match=message):
        make_detector("boxes", boxes=boxes)


def test_given_boxes_options_filter_and_cut():
    boxes = [(0, 0, 10, 10), (0, 0, 100, 90), (50, 0, 150, 95)]
    image = _image()
    assert make_detector("boxes", boxes=boxes, min_size=50).detect(image)[0].box_xyxy == (0.0, 0.0, 100.0, 90.0)
    assert len(make_detector("boxes", boxes=boxes, max_people=2).detect(image)) == 2
    assert len(make_detector("boxes", boxes=boxes, scores=[0.2, 0.5, 0.9], conf=0.5).detect(image)) == 2
    assert make_detector("boxes", boxes=[]).detect(image) == []
    with pytest.raises(DetectionInputError, match="one per box"):
        make_detector("boxes", boxes=boxes, scores=[1.0])


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32), [[0]]],
)
def test_images_that_are_not_hw3_uint8_are_refused(image):
    with pytest.raises(DetectionInputError, match="image"):
        GivenBoxes(boxes=[(0, 0, 1, 1)]).detect(image)


# -- make_detector -----------------------------------------------------------------------------------------


def test_make_detector_refuses_unknown_names_and_options():
    with pytest.raises(ConfigError, match="unknown person detector 'ssd'") as info:
        make_detector("ssd")
    assert "'default'" in info.value.hint and "'yolo'" in info.value.hint
    with pytest.raises(ConfigError, match="has no option"):
        make_detector("boxes", boxes=[(0, 0, 1, 1)], treshold=0.3)
    with pytest.raises(ConfigError, match="needs boxes"):
        make_detector("boxes")
    with pytest.raises(ConfigError, match="conf"):
        make_detector("boxes", boxes=[(0, 0, 1, 1)], conf=1.5)
    with pytest.raises(ConfigError, match="max_people"):
        make_detector("boxes", boxes=[(0, 0, 1, 1)], max_people=0)


# -- YOLO through ultralytics (the official demo's detector) -------------------------------------------------


class _FakeTensor:
    """Enough of a (GPU) torch tensor: detach().cpu().numpy()."""

    def __init__(self, values) -> None:
        self.values = np.asarray(values, dtype=np.float32)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.values


def _fake_result(xyxy, conf, cls, tensor: bool = True):
    wrap = _FakeTensor if tensor else np.asarray
    return types.SimpleNamespace(boxes=types.SimpleNamespace(xyxy=wrap(xyxy), conf=wrap(conf), cls=wrap(cls)))


def test_ultralytics_results_become_person_detections():
    results = [
        _fake_result([[10, 20, 110, 220], [5, 5, 50, 50], [300, 40, 380, 260]], [0.91, 0.95, 0.62], [0, 2, 0]),
        types.SimpleNamespace(boxes=None),
        _fake_result(np.zeros((0, 4)), [], [], tensor=False),
    ]
    out = detections_from_ultralytics(results)
    assert [d.box_xyxy for d in out] == [(10.0, 20.0, 110.0, 220.0), (300.0, 40.0, 380.0, 260.0)]
    assert [d.score for d in out] == pytest.approx([0.91, 0.62])


def test_yolo_detector_predicts_class_0_with_the_demo_confidence(tmp_path, monkeypatch):
    calls = []

    class FakeYOLO:
        def __init__(self, weights: str) -> None:
            calls.append(("init", weights))

        def predict(self, image, **kwargs):
            calls.append(("predict", image.shape, kwargs))
            return [_fake_result([[0, 0, 40, 90], [50, 0, 100, 95]], [0.7, 0.8], [0, 0])]

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=FakeYOLO))
    weights = tmp_path / "yolov8x.pt"
    weights.write_bytes(b"weights")
    detector = make_detector("yolo", weights=weights)
    out = detector.detect(_image())
    assert calls == [
        ("init", str(weights)),
        ("predict", (100, 200, 3), {"classes": [0], "conf": 0.5, "verbose": False}),
    ]
    assert [d.score for d in out] == pytest.approx([0.8, 0.7])
    assert isinstance(detector, YoloDetector) and detector.name == "yolo"
    make_detector("yolo", weights=weights, conf=0.25, device="cpu").detect(_image())
    assert calls[-1][2] == {"classes": [0], "conf": 0.25, "verbose": False, "device": "cpu"}


def test_yolo_detector_without_ultralytics_or_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    weights = tmp_path / "yolov8x.pt"
    with pytest.raises(DetectorError, match="YOLO weights not found") as info:
        make_detector("yolo", weights=weights)
    assert "pip install ultralytics" in info.value.hint and "yolov8x.pt" in info.value.hint
    with pytest.raises(DetectorError, match="needs weights"):
        make_detector("yolo")
    weights.write_bytes(b"weights")
    with pytest.raises(DetectorError, match="needs the ultralytics package") as info:
        make_detector("yolo", weights=weights)
    assert info.value.code == "detector_unavailable" and "pip install ultralytics" in info.value.hint


# -- imports -----------------------------------------------------------------------------------------------


def test_detect_module_imports_nothing_heavy():
    top: set[str] = set()
    for path in sorted((ROOT / "mega_runtime" / "detect").glob("*.py")):
        body = ast.parse(path.read_text()).body
        top |= {a.name.split(".")[0] for n in body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in body if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert top <= {
        "__future__",
        "hashlib",
        "importlib",
        "math",
        "numbers",
        "os",
        "collections",
        "dataclasses",
        "pathlib",
    } | {
        "typing",
        "numpy",
        "mega_runtime",
    }
    code = (
        "import sys, mega_runtime.pipeline.detect; "
        "heavy = {'torch', 'cv2', 'tflite_runtime', 'ai_edge_litert', 'ultralytics', 'mediapipe'}; "
        "sys.exit(sorted(heavy & set(sys.modules)) or 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
