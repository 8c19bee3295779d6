"""Result format 2 (compact meshes): written by the runtime, read by the runtime and by the torch-free add-on
reader within 1 mm of the float32 meshes; format 1 is still written by default and still read by both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.io import compact
from mega_runtime.io.result import COMPACT_VERSION, Result, ResultFormatError, read_result, write_result
from tests.addon_pure.helpers import load_pure_module
from tests.runtime.synthetic_bodies import make_video

rr = load_pure_module("result_reader")
cr = load_pure_module("compact_reader")

F, P, H = 6, 2, 4
ONE_MM = 1e-3


@pytest.fixture(scope="module")
def video_result() -> Result:
    """A 6-frame, 2-person, 4-hypothesis video result with a smoothed path; person 1 unseen in frame 2."""
    meshes = make_video(F, P, H, seed=3)
    rng = np.random.default_rng(0)
    valid = np.ones((F, P), bool)
    valid[2, 1] = False
    for name in ("vertices", "cam_t", "smoothed_vertices", "smoothed_cam_t", "rotation"):
        meshes[name][2, 1] = 0.0
    arrays = {
        "faces": rng.integers(0, 6890, (13776, 3), dtype=np.int32),
        "vertices": meshes["vertices"],
        "cam_t": meshes["cam_t"],
        "tokens": rng.integers(0, 512, (F, P, H, 54)).astype(np.int16),
        "log_likelihood": -rng.uniform(1, 50, (F, P, H)).astype(np.float32),
        "vertex_std": rng.uniform(0, 0.05, (F, P, 6890)).astype(np.float32),
        "rotation": meshes["rotation"],
        "cam_crop": rng.normal(size=(F, P, 3)).astype(np.float32),
        "boxes_xyxy": rng.uniform(0, 600, (F, P, 4)).astype(np.float32),
        "track_ids": np.arange(P, dtype=np.int32),
        "valid": valid,
        "frame_indices": np.arange(F, dtype=np.int32) * 2,
        "path": rng.integers(0, H, (F, P)).astype(np.int16),
        "smoothed_vertices": meshes["smoothed_vertices"],
        "smoothed_cam_t": meshes["smoothed_cam_t"],
    }
    meta = {
        "source": {"kind": "video", "path": "/clips/walk.mp4", "width": 640, "height": 480, "fps": 30.0},
        "camera": {"focal_px": 2857.0, "principal_point_px": [320.0, 240.0], "convention": "opencv"},
    }
    return Result(meta=meta, arrays=arrays)


@pytest.fixture(scope="module")
def compact_pair(video_result: Result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    json_path, _ = write_result(video_result, tmp_path_factory.mktemp("compact") / "clip", compact=True)
    return json_path


def _max_vertex_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1).max())


def test_compact_result_is_format_2_without_float32_vertices(compact_pair: Path) -> None:
    meta = json.loads(compact_pair.read_text())
    assert meta["version"] == COMPACT_VERSION
    assert "vertices" not in meta["arrays"] and "smoothed_vertices" not in meta["arrays"]
    assert meta["compact"]["quantum_m"] == compact.QUANTUM_M
    assert meta["compact"]["max_error_m"] <= compact.QUANTUM_M / 2 + 1e-7


def test_runtime_reads_compact_result_within_1_mm_and_other_arrays_unchanged(
    compact_pair: Path, video_result: Result
) -> None:
    read = read_result(compact_pair)
    spread = read.arrays["vertex_std"]
    assert spread.dtype == np.float32 and np.abs(spread - video_result.arrays["vertex_std"]).max() <= 0.5e-3 + 1e-7
    for name in ("vertices", "smoothed_vertices"):
        assert read.arrays[name].dtype == np.float32
        assert read.arrays[name].shape == video_result.arrays[name].shape
        assert _max_vertex_error(read.arrays[name], video_result.arrays[name]) <= ONE_MM
    assert not read.arrays["vertices"][2, 1].any()  # the unseen person stays zeros
    for name, array in video_result.arrays.items():
        if name not in ("vertices", "smoothed_vertices", "vertex_std"):
            assert read.arrays[name].tobytes() == array.tobytes(), name


def test_addon_reader_decodes_any_hypothesis_of_any_frame_within_1_mm(compact_pair: Path, video_result: Result) -> None:
    result = rr.read_result(compact_pair)
    original = video_result.arrays["vertices"]
    assert result.vertices.shape == original.shape and result.num_hypotheses == H
    assert _max_vertex_error(np.asarray(result.vertices), original) <= ONE_MM
    frames, chosen = np.array([5, 0, 3]), np.array([1, 3, 0])
    assert _max_vertex_error(result.vertices[frames, 1, chosen], original[frames, 1, chosen]) <= ONE_MM
    assert _max_vertex_error(result.vertices[frames, 0, 1:3], original[frames, 0, 1:3]) <= ONE_MM
    assert _max_vertex_error(result.vertices[-1, 1], original[-1, 1]) <= ONE_MM
    assert result.vertices[4, 0, 2].shape == (6890, 3)
    smoothed = result.extra_arrays["smoothed_vertices"]
    assert smoothed.shape[:2] == result.vertices.shape[:2]
    assert _max_vertex_error(smoothed[frames, 1], video_result.arrays["smoothed_vertices"][frames, 1]) <= ONE_MM
    assert not any(name.startswith(("mesh_", "vertices_")) for name in result.extra_arrays)


def test_format_1_is_still_written_by_default_and_read_by_both_readers(video_result: Result, tmp_path: Path) -> None:
    json_path, _ = write_result(video_result, tmp_path / "clip")
    assert json.loads(json_path.read_text())["version"].startswith("1.")
    assert read_result(json_path).arrays["vertices"].tobytes() == video_result.arrays["vertices"].tobytes()
    assert np.asarray(rr.read_result(json_path).vertices).tobytes() == video_result.arrays["vertices"].tobytes()


def test_compact_result_with_fixes_that_disagree_with_their_counts_is_refused(
    video_result: Result, tmp_path: Path
) -> None:
    arrays, block = compact.compact_arrays(video_result.arrays)
    arrays["vertices_fix_count"] = arrays["vertices_fix_count"] + 1
    meta = {**video_result.meta, "schema": "mega-result", "version": COMPACT_VERSION, "compact": block}
    np.savez(tmp_path / "bad.npz", **arrays)
    (tmp_path / "bad.json").write_text(json.dumps({**meta, "arrays_file": "bad.npz"}))
    with pytest.raises(ResultFormatError, match="fix_count"):
        read_result(tmp_path / "bad.json")
    with pytest.raises(rr.ResultFormatError, match="fix_count"):
        rr.read_result(tmp_path / "bad.json")


def test_a_newer_major_version_names_both_readable_versions(compact_pair: Path, tmp_path: Path) -> None:
    meta = json.loads(compact_pair.read_text())
    (tmp_path / "new.json").write_text(json.dumps({**meta, "version": "3.0"}))
    with pytest.raises(ResultFormatError, match=r"1\.\d .*compact version 2\.0"):
        read_result(tmp_path / "new.json")
    with pytest.raises(rr.ResultFormatError, match=r"1\.\d .*compact version 2\.0"):
        rr.read_result(tmp_path / "new.json")


def test_a_photo_with_one_hypothesis_needs_no_basis_and_still_reads_within_1_mm(tmp_path: Path) -> None:
    meshes = make_video(1, 1, 1, seed=4)
    arrays = {name: meshes[name] for name in ("vertices", "rotation", "cam_t")}
    packed, block = compact.compact_arrays(arrays)
    assert block["basis_sizes"] == [0] and packed["mesh_basis"].shape == (1, 0, 6890, 3)
    assert _max_vertex_error(compact.expand_arrays(packed)["vertices"], arrays["vertices"]) <= ONE_MM


def test_no_frames_and_no_people_encode_to_empty_arrays() -> None:
    for f, p in ((0, 1), (1, 0)):
        arrays = {
            "vertices": np.zeros((f, p, 2, 6890, 3), np.float32),
            "rotation": np.zeros((f, p, 3, 3), np.float32),
            "cam_t": np.zeros((f, p, 2, 3), np.float32),
        }
        packed, _ = compact.compact_arrays(arrays)
        assert compact.expand_arrays(packed)["vertices"].shape == (f, p, 2, 6890, 3)


def test_the_addon_reader_knows_the_compact_arrays_the_runtime_writes() -> None:
    assert rr.COMPACT_VERSION == COMPACT_VERSION and cr.COMPACT_QUANTUM_M == compact.QUANTUM_M
    assert cr.COMPACT_ARRAYS == compact.COMPACT_ARRAYS
    assert cr.COMPACT_SMOOTHED_ARRAYS == compact.COMPACT_SMOOTHED_ARRAYS


def test_addon_compact_meshes_index_like_a_numpy_array(compact_pair: Path) -> None:
    result = rr.read_result(compact_pair)
    dense = np.asarray(result.vertices)
    smoothed = result.extra_arrays["smoothed_vertices"]
    dense_smoothed = np.asarray(smoothed)
    frames, chosen = np.array([5, 0, 3, 3]), np.array([1, 3, 0, 2])
    keys = [
        (frames, 1, chosen), (frames, 0, slice(1, 3)), (-1, 1), (4, 0, 2), slice(2, 5), ([0, 5], slice(None), 1),
        (np.array([True, False, True, False, False, True]), 0), (2, 1, 1, slice(0, 10), 2),
    ]  # fmt: skip
    for key in keys:
        np.testing.assert_allclose(result.vertices[key], dense[key], atol=1e-6, err_msg=str(key))
    for key in [(frames, 1), 3, (slice(None), 0, 7)]:
        np.testing.assert_allclose(smoothed[key], dense_smoothed[key], atol=1e-6, err_msg=str(key))
    with pytest.raises(IndexError):
        result.vertices[F, 0]
