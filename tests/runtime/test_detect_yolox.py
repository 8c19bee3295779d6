"""The downloadable YOLOX detector: loading, pre/post-processing against an independent reference, the download,
and the "auto" choice with its offline fallback.

The real YOLOX-S file cannot be downloaded here, so a network of the same topology, input and output with seeded
weights is exported to ONNX once per module (tests/runtime/yolox_seeded.py) and pinned like the real one.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.errors import ConfigError, DetectorError, WeightsError
from mega_runtime.pipeline import detect
from mega_runtime.pipeline.detect import YoloxDetector, make_detector
from mega_runtime.pipeline.detect.yolox import decode_yolox, nms
from mega_runtime.weights import AssetFile
from mega_runtime.weights.registry import YOLOX_FILE
from mega_runtime.weights.resolve import resolve_yolox_model

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def seeded_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")
    import torch

    from tests.runtime.yolox_seeded import export_seeded_yolox

    torch.set_num_threads(1)
    return export_seeded_yolox(tmp_path_factory.mktemp("yolox") / YOLOX_FILE.name)


def _entry(path: Path) -> AssetFile:
    """A registry entry pinning ``path`` as the real one pins the official file."""
    body = path.read_bytes()
    return AssetFile(path.name, path.name, hashlib.sha256(body).hexdigest(), len(body))


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty download cache, no local YOLOX folder, no mirror."""
    for name in ("MEGA_YOLOX_DIR", "MEGA_YOLOX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEGA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class _StandIn:
    """Stands in for BlazePose in the fallback tests (its own tests are in test_detect.py)."""

    OPTIONS = ("conf", "max_people", "min_size", "model_dir", "num_threads", "tiles")
    name = "blazepose"

    def __init__(self, **options):
        self.options = options


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for h, w in ((480, 854), (1000, 300), (640, 640), (90, 151)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for _ in range(6):  # some structure on top of the noise: flat rectangles
            x, y = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            image[y : y + int(rng.integers(5, h // 2)), x : x + int(rng.integers(5, w // 3))] = rng.integers(0, 256, 3)
        out.append(image)
    return out


def _raw_rows(session, image: np.ndarray) -> np.ndarray:
    """The network's raw output for ``image``, letterboxed as YOLOX's preprocessing does (top-left, grey 114)."""
    h, w = image.shape[:2]
    scale = min(640 / h, 640 / w)
    nw, nh = int(w * scale), int(h * scale)
    canvas = np.full((640, 640, 3), 114.0, dtype=np.float32)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh)) if (nw, nh) != (w, h) else image
    return session.run(None, {"images": canvas.transpose(2, 0, 1)[None].copy()})[0][0].astype(np.float64)


def _reference(rows: np.ndarray, image_hw, conf: float, iou_limit: float) -> list[tuple[tuple[float, ...], float]]:
    """YOLOX post-processing written out cell by cell, independently of the product's vectorised code."""
    h, w = image_hw
    scale = min(640 / h, 640 / w)
    nw, nh = int(w * scale), int(h * scale)
    candidates = []
    index = 0
    for stride in (8, 16, 32):
        for gy in range(640 // stride):
            for gx in range(640 // stride):
                row = rows[index]
                index += 1
                score = row[4] * row[5]
                if score < conf:
                    continue
                cx, cy = (row[0] + gx) * stride, (row[1] + gy) * stride
                bw, bh = math.exp(row[2]) * stride, math.exp(row[3]) * stride
                box = (
                    min(max((cx - bw / 2) * w / nw, 0.0), w),
                    min(max((cy - bh / 2) * h / nh, 0.0), h),
                    min(max((cx + bw / 2) * w / nw, 0.0), w),
                    min(max((cy + bh / 2) * h / nh, 0.0), h),
                )
                if box[2] > box[0] and box[3] > box[1]:
                    candidates.append((box, min(score, 1.0)))
    candidates.sort(key=lambda c: -c[1])
    kept: list[tuple[tuple[float, ...], float]] = []
    for box, score in candidates:
        if all(_iou(box, other) <= iou_limit for other, _ in kept):
            kept.append((box, score))
    return kept


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- loading and processing -------------------------------------------------------------------------------------


def test_yolox_boxes_match_an_independent_reference_on_a_seeded_model(seeded_onnx: Path, isolated: Path):
    # loaded through the product's code: the file pinned by SHA-256 and size in a local folder, then the session
    path = resolve_yolox_model(seeded_onnx.parent, entry=_entry(seeded_onnx))
    assert path == seeded_onnx
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    detectors = {conf: YoloxDetector(model_path=path, conf=conf, num_threads=1) for conf in (0.3, 0.5)}
    assert detectors[0.3].input_hw == (640, 640)
    total = 0
    for image in _images():
        rows = _raw_rows(session, image)
        for conf, detector in detectors.items():
            got = detector.detect(image)
            want = _reference(rows, image.shape[:2], conf, 0.45)
            assert len(got) == len(want), (image.shape, len(got), len(want))
            total += len(got)
            if got:
                np.testing.assert_allclose([d.box_xyxy for d in got], [b for b, _ in want], rtol=0, atol=1e-3)
                np.testing.assert_allclose([d.score for d in got], [s for _, s in want], rtol=0, atol=1e-6)
                h, w = image.shape[:2]
                for x1, y1, x2, y2 in (d.box_xyxy for d in got):
                    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert total >= 20  # the seeded scores cross both thresholds: the comparison is not vacuous


def test_yolox_options_cut_and_filter(seeded_onnx: Path):
    image = _images()[0]
    every = YoloxDetector(model_path=seeded_onnx, conf=0.3).detect(image)
    assert len(every) > 3
    assert [d.score for d in every] == sorted((d.score for d in every), reverse=True)
    assert YoloxDetector(model_path=seeded_onnx, conf=0.3, max_people=2).detect(image) == every[:2]
    longest = sorted(max(d.width, d.height) for d in every)[len(every) // 2]
    big = YoloxDetector(model_path=seeded_onnx, conf=0.3, min_size=longest).detect(image)
    assert big == [d for d in every if max(d.width, d.height) >= longest] and 0 < len(big) < len(every)
    loose = YoloxDetector(model_path=seeded_onnx, conf=0.3, nms_iou=1.0).detect(image)
    assert len(loose) > len(every)  # overlapping neighbours survive when nothing is suppressed
    with pytest.raises(ConfigError, match="nms_iou"):
        YoloxDetector(model_path=seeded_onnx, nms_iou=0.0)


def test_yolox_decode_places_cells_on_the_stride_grid():
    raw = np.zeros((8400, 85))
    raw[:, 4] = 0.5
    raw[:, 5] = 0.8
    # row 81: stride 8, cell (1, 1); row 6400: first cell of stride 16; row 8399: last cell of stride 32
    raw[81, :4] = (0.5, 0.25, 0.0, math.log(2.0))
    raw[6400, :4] = (0.0, 0.0, math.log(3.0), 0.0)
    boxes, scores = decode_yolox(raw, (640, 640))
    np.testing.assert_allclose(boxes[81], (8.0, 2.0, 16.0, 18.0))  # centre (12, 10), 8 × 16
    np.testing.assert_allclose(boxes[6400], (-24.0, -8.0, 24.0, 8.0))
    np.testing.assert_allclose(boxes[8399], (608.0 - 16, 608.0 - 16, 608.0 + 16, 608.0 + 16))  # cell (19, 19)
    np.testing.assert_allclose(scores, 0.4)
    with pytest.raises(DetectorError, match="expected"):
        decode_yolox(raw[:8000], (640, 640))


def test_nms_keeps_the_best_of_overlapping_boxes_in_score_order():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.6, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5) == [1, 2]
    assert nms(boxes, scores, 1.0) == [1, 2, 0, 3]


def test_a_model_without_the_yolox_interface_is_refused(tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "not-yolox",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(DetectorError, match="does not look like a YOLOX export"):
        YoloxDetector(model_path=path)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="onnxruntime cannot load"):
        YoloxDetector(model_path=tmp_path / "broken.onnx")


# -- resolving and downloading the model -------------------------------------------------------------------------


def test_the_registered_model_is_pinned_to_the_opencv_zoo_lfs_object():
    assert YOLOX_FILE.sha256 == "c5c2d13e59ae883e6af3b45daea64af4833a4951c92d116ec270d9ddbe998063"
    assert YOLOX_FILE.size == 35858002
    from mega_runtime.weights.registry import yolox_url

    assert yolox_url().startswith("https://media.githubusercontent.com/media/opencv/opencv_zoo/")
    assert yolox_url().endswith("/models/object_detection_yolox/object_detection_yolox_2022nov.onnx")


def test_the_model_downloads_from_a_mirror_once_with_progress_and_is_verified(
    seeded_onnx: Path, isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    entry = _entry(seeded_onnx)
    monkeypatch.setattr("mega_runtime.weights.resolve.YOLOX_FILE", entry)
    monkeypatch.delenv("MEGA_OFFLINE")
    calls: list[tuple[str, int, int | None]] = []
    path = resolve_yolox_model(url=seeded_onnx.as_uri(), progress=lambda *a: calls.append(a))
    assert path == isolated / "detector" / entry.name
    assert path.read_bytes() == seeded_onnx.read_bytes()
    assert calls[0] == (entry.name, 0, entry.size) and calls[-1] == (entry.name, entry.size, entry.size)
    calls.clear()
    assert resolve_yolox_model(url="file:///nowhere/at/all.onnx", progress=lambda *a: calls.append(a)) == path
    assert calls == []  # cached and verified: nothing downloaded
    # a changed upstream file is refused, and nothing is left in the cache
    path.unlink()
    other = tmp_path / "other.onnx"
    other.write_bytes(seeded_onnx.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="corrupted") as info:
        resolve_yolox_model(url=other.as_uri())
    assert "weights fetch --yolox" in info.value.hint and "MEGA_YOLOX_DIR" in info.value.hint
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_offline_the_missing_model_is_not_downloaded_and_the_error_names_the_fix(isolated: Path):
    with pytest.raises(WeightsError, match=r"not in the cache .*MEGA_OFFLINE") as info:
        resolve_yolox_model(url="http://127.0.0.1:9/never-contacted.onnx")
    assert "mega-runtime weights fetch --yolox" in info.value.hint
    assert "curl -L" in info.value.hint and "MEGA_YOLOX_DIR" in info.value.hint
    with pytest.raises(WeightsError):
        make_detector("yolox")


def test_a_local_folder_must_hold_the_pinned_file(seeded_onnx: Path, isolated: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MEGA_YOLOX_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=r"\(named by \$MEGA_YOLOX_DIR\) lacks") as info:
        resolve_yolox_model(entry=_entry(seeded_onnx))
    assert "unset MEGA_YOLOX_DIR" in info.value.hint
    (tmp_path / seeded_onnx.name).write_bytes(b"something else")
    with pytest.raises(WeightsError, match="holds a different file"):
        resolve_yolox_model(entry=_entry(seeded_onnx))


def test_weights_fetch_yolox_downloads_even_when_offline(
    seeded_onnx: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from mega_runtime.commands.cli import main

    monkeypatch.setattr("mega_runtime.weights.resolve.YOLOX_FILE", _entry(seeded_onnx))
    monkeypatch.setattr("mega_runtime.commands.weights.YOLOX_FILE", _entry(seeded_onnx))
    monkeypatch.setattr("mega_runtime.commands.weights.resolve_assets_dir", lambda *a, **k: isolated / "assets")
    monkeypatch.setattr("mega_runtime.commands.weights.resolve_checkpoint_dir", lambda *a, **k: isolated / "ckpt")
    monkeypatch.setenv("MEGA_YOLOX_URL", seeded_onnx.as_uri())
    assert main(["weights", "fetch", "--yolox"]) == 0
    assert f"YOLOX person detector: {isolated / 'detector' / seeded_onnx.name}" in capsys.readouterr().out
    assert (isolated / "detector" / seeded_onnx.name).read_bytes() == seeded_onnx.read_bytes()
    assert main(["weights", "list"]) == 0
    assert f"ok       {seeded_onnx.name}" in capsys.readouterr().out


def test_weights_list_shows_the_missing_yolox_model_and_its_fix(isolated: Path, capsys: pytest.CaptureFixture[str]):
    from mega_runtime.commands.cli import main

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"absent   {YOLOX_FILE.name}" in out and "fix: mega-runtime weights fetch --yolox" in out


# -- the "auto" (default) choice ---------------------------------------------------------------------------------


def test_auto_uses_yolox_when_its_model_is_on_disk(seeded_onnx: Path, isolated: Path, monkeypatch):
    monkeypatch.setattr("mega_runtime.weights.resolve.YOLOX_FILE", _entry(seeded_onnx))
    monkeypatch.setenv("MEGA_YOLOX_DIR", str(seeded_onnx.parent))
    detector = make_detector("default", conf=0.3, num_threads=1, max_people=3)
    assert isinstance(detector, YoloxDetector) and detector.model_path == seeded_onnx
    assert (detector.conf, detector.max_people) == (0.3, 3)
    assert len(detector.detect(_images()[0])) == 3


def test_auto_downloads_the_model_when_allowed(seeded_onnx: Path, isolated: Path, monkeypatch):
    monkeypatch.setattr("mega_runtime.weights.resolve.YOLOX_FILE", _entry(seeded_onnx))
    monkeypatch.setenv("MEGA_YOLOX_URL", seeded_onnx.as_uri())
    monkeypatch.delenv("MEGA_OFFLINE")
    detector = make_detector("auto")
    assert isinstance(detector, YoloxDetector)
    assert detector.model_path == isolated / "detector" / seeded_onnx.name


def test_auto_falls_back_to_blazepose_offline_with_one_warning(isolated: Path, monkeypatch, caplog):
    monkeypatch.setattr(detect, "BlazePoseDetector", _StandIn)
    monkeypatch.setattr(detect, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="mega_runtime.pipeline.detect"):
        first = make_detector("default", conf=0.4, tiles=False, nms_iou=0.5)
        second = make_detector("auto")
    assert isinstance(first, _StandIn) and isinstance(second, _StandIn)
    assert first.options == {"conf": 0.4, "tiles": False}  # each detector gets the options it knows
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "using the offline BlazePose detector, not the better YOLOX-S" in warnings[0]
    assert "MEGA_OFFLINE" in warnings[0] and "mega-runtime weights fetch --yolox" in warnings[0]


def test_auto_falls_back_when_onnxruntime_is_missing_or_the_download_fails(isolated, monkeypatch, caplog, tmp_path):
    import sys

    monkeypatch.setattr(detect, "BlazePoseDetector", _StandIn)
    monkeypatch.setattr(detect, "_warned", set())
    monkeypatch.delenv("MEGA_OFFLINE")
    monkeypatch.setenv("MEGA_YOLOX_URL", (tmp_path / "missing.onnx").as_uri())
    with caplog.at_level(logging.WARNING, logger="mega_runtime.pipeline.detect"):
        assert isinstance(make_detector("auto"), _StandIn)
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        assert isinstance(make_detector("auto"), _StandIn)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "cannot reach" in messages[0] or "failed" in messages[0]
    assert "pip install onnxruntime" in messages[1]
    assert not (isolated / "detector" / YOLOX_FILE.name).exists()


def test_auto_refuses_options_neither_detector_has():
    with pytest.raises(ConfigError, match="no option"):
        make_detector("auto", treshold=0.3)


def test_yolox_is_offered_wherever_a_detector_is_chosen():
    from mega_runtime import defaults

    assert {"auto", "yolox", "blazepose"} <= set(defaults.DETECTOR_CHOICES)
    assert {"auto", "yolox", "blazepose"} <= set(detect.DETECTOR_NAMES)


def test_the_add_on_install_survives_a_failed_yolox_fetch(tmp_path: Path):
    import os
    import subprocess
    import sys

    from mega_blender.installer import DETECTOR_FETCH

    # the install runs this script in the new environment; here a mirror serves another file: it is refused (size,
    # SHA-256) and the install goes on with the offline detector
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the model")
    env = {**os.environ, "MEGA_HOME": str(tmp_path / "home"), "MEGA_YOLOX_URL": other.as_uri()}
    env.pop("MEGA_YOLOX_DIR", None)
    done = subprocess.run([sys.executable, "-c", DETECTOR_FETCH], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "YOLOX person detector not downloaded (the offline detector will be used)" in done.stdout
    assert "corrupted" in done.stdout or "bytes, expected" in done.stdout
    assert not (tmp_path / "home" / "detector" / YOLOX_FILE.name).exists()
