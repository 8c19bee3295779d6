"""The add-on's torch-free result reader, on hand-made result pairs."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module

rr = load_pure_module("result_reader")

V, NF = 6890, 13776


def make_arrays(frames: int = 1, people: int = 2, hypotheses: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of format 1.0 with distinct values (F, P, H as given)."""
    rng = np.random.default_rng(seed)
    f, p, h = frames, people, hypotheses
    vertices = rng.normal(0.0, 0.3, (f, p, h, V, 3)).astype(np.float32)
    vertices[..., 2] += 5.0
    return {
        "faces": rng.integers(0, V, (NF, 3), dtype=np.int32),
        "vertices": vertices,
        "cam_t": rng.normal(size=(f, p, h, 3)).astype(np.float32),
        "tokens": rng.integers(0, 512, (f, p, h, 54)).astype(np.int16),
        "log_likelihood": -rng.uniform(1, 50, (f, p, h)).astype(np.float32),
        "vertex_std": rng.uniform(0, 0.05, (f, p, V)).astype(np.float32),
        "rotation": np.broadcast_to(np.eye(3, dtype=np.float32), (f, p, 3, 3)).copy(),
        "cam_crop": rng.normal(size=(f, p, 3)).astype(np.float32),
        "boxes_xyxy": rng.uniform(0, 600, (f, p, 4)).astype(np.float32),
        "track_ids": np.arange(p, dtype=np.int32),
        "valid": np.ones((f, p), bool),
        "frame_indices": np.arange(f, dtype=np.int32),
    }


def make_meta(width: int = 640, height: int = 480, **source: Any) -> dict[str, Any]:
    return {
        "schema": "mega-result",
        "version": "1.0",
        "runtime_version": "0.1.0",
        "source": {"kind": "image", "path": "/photos/people.jpg", "width": width, "height": height, **source},
        "camera": {
            "focal_px": 1000 / 224 * max(width, height),
            "principal_point_px": [width / 2, height / 2],
            "convention": "opencv",
            "axes": "x right, y down, z forward",
            "units": "metres",
        },
        "warnings": [],
    }


def write_pair(
    folder: Path,
    name: str = "people",
    arrays: dict[str, np.ndarray] | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` + ``<name>.npz`` the way the format describes; returns both paths."""
    arrays = make_arrays() if arrays is None else arrays
    meta = make_meta() if meta is None else meta
    json_path, npz_path = folder / f"{name}.json", folder / f"{name}.npz"
    np.savez(npz_path, **arrays)
    json_path.write_text(json.dumps({**meta, "arrays_file": npz_path.name}))
    return json_path, npz_path


def test_ok_reads_a_hand_made_result(tmp_path):
    arrays = make_arrays(frames=1, people=2, hypotheses=3)
    json_path, _ = write_pair(tmp_path, arrays=arrays)
    result = rr.read_result(json_path)
    assert result.path == json_path
    assert (result.num_frames, result.num_people, result.num_hypotheses) == (1, 2, 3)
    for name in rr.REQUIRED_ARRAYS:
        assert np.array_equal(getattr(result, name), arrays[name]), name
        assert getattr(result, name).dtype == arrays[name].dtype
    assert set(result.extra_arrays) == {"rotation", "cam_crop"}
    assert result.image_size == (640, 480)
    assert result.focal_px == pytest.approx(1000 / 224 * 640)
    assert result.principal_point_px == (320.0, 240.0)
    assert result.source_path == Path("/photos/people.jpg")
    assert result.source_name == "people.jpg"
    assert result.fps is None
    assert result.meta["runtime_version"] == "0.1.0"


@pytest.mark.parametrize("given", ["people.json", "people.npz", "people"])
def test_ok_accepts_the_json_the_npz_or_the_stem(tmp_path, given):
    write_pair(tmp_path)
    assert rr.read_result(tmp_path / given).path == tmp_path / "people.json"
    assert rr.read_result(str(tmp_path / given)).num_people == 2


def test_ok_reads_a_runtime_style_double_suffix_name(tmp_path):
    write_pair(tmp_path, name="photo.mega")
    result = rr.read_result(tmp_path / "photo.mega")
    assert result.path.name == "photo.mega.json"


def test_ok_reads_a_newer_minor_version_with_unknown_fields(tmp_path):
    arrays = {**make_arrays(), "joints": np.zeros((1, 2, 24, 3), np.float32)}
    meta = {**make_meta(), "version": "1.7", "something_new": {"a": 1}}
    json_path, _ = write_pair(tmp_path, arrays=arrays, meta=meta)
    result = rr.read_result(json_path)
    assert result.extra_arrays["joints"].shape == (1, 2, 24, 3)


def test_ok_reads_a_video_result_with_fps_and_frame_numbers(tmp_path):
    arrays = make_arrays(frames=4, people=1, hypotheses=2)
    arrays["valid"][2, 0] = False
    arrays["frame_indices"] = np.array([10, 12, 14, 16], np.int32)
    meta = make_meta(kind="video", fps=29.97, frame_start=10, frame_stop=18, frame_step=2)
    result = rr.read_result(write_pair(tmp_path, arrays=arrays, meta=meta)[0])
    assert result.fps == pytest.approx(29.97)
    assert result.frame_indices.tolist() == [10, 12, 14, 16]
    assert result.valid[:, 0].tolist() == [True, True, False, True]


def test_ok_reads_a_photo_without_people(tmp_path):
    json_path, _ = write_pair(tmp_path, arrays=make_arrays(frames=1, people=0, hypotheses=4))
    result = rr.read_result(json_path)
    assert result.num_people == 0 and result.vertices.shape == (1, 0, 4, V, 3)


def test_ok_names_a_generated_result_after_its_file(tmp_path):
    meta = make_meta()
    meta["source"] = {"kind": "generated", "width": 224, "height": 224}
    result = rr.read_result(write_pair(tmp_path, name="dream.mega", meta=meta)[0])
    assert result.source_path is None and result.source_name == "dream.mega"


def _set(mapping_name: str, key: str, value: Any) -> Callable[[dict, dict], None]:
    def change(arrays: dict, meta: dict) -> None:
        target = arrays if mapping_name == "arrays" else meta
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value

    return change


_DELETE = object()


def _nan_vertices(arrays: dict, meta: dict) -> None:
    arrays["vertices"][0, 1, 2, 17, 1] = np.nan


def _inf_vertices(arrays: dict, meta: dict) -> None:
    arrays["vertices"][0, 0, 0, 0, 0] = np.inf


def _face_out_of_range(arrays: dict, meta: dict) -> None:
    arrays["faces"][5, 1] = V


def _no_camera_focal(arrays: dict, meta: dict) -> None:
    del meta["camera"]["focal_px"]


NG_CASES = {
    "unknown_major_version": (_set("meta", "version", "3.0"), r"version 3\.0.*reads version 1\.\d"),
    "older_major_version": (_set("meta", "version", "0.9"), r"version 0\.9.*reads version 1\.\d"),
    "garbled_version": (_set("meta", "version", "one"), r"no valid format version"),
    "not_a_mega_result": (_set("meta", "schema", "something-else"), r"not a MEGA result"),
    "missing_faces": (_set("arrays", "faces", _DELETE), r"lacks the array\(s\) faces"),
    "wrong_array_shape": (
        _set("arrays", "cam_t", np.zeros((1, 2, 4, 3), np.float32)),
        r"cam_t has shape \(1, 2, 4, 3\), expected \(1, 2, 3, 3\).*H=3",
    ),
    "wrong_vertex_count": (_set("arrays", "vertex_std", np.zeros((1, 2, 6889), np.float32)), r"vertex_std has shape"),
    "wrong_faces_shape": (_set("arrays", "faces", np.zeros((13775, 3), np.int32)), r"faces has shape \(13775, 3\)"),
    "wrong_dtype": (_set("arrays", "faces", np.zeros((NF, 3), np.int64)), r"faces has dtype int64, expected int32"),
    "wrong_vertices_rank": (_set("arrays", "vertices", np.zeros((1, 2, V, 3), np.float32)), r"vertices has shape"),
    "optional_array_wrong_shape": (_set("arrays", "rotation", np.zeros((1, 2, 3), np.float32)), r"rotation has shape"),
    "face_index_out_of_range": (_face_out_of_range, r"faces index vertices 0…6890"),
    "nan_vertices": (_nan_vertices, r"vertices has 1 non-finite value\(s\), first at index \(0, 1, 2, 17, 1\)"),
    "inf_vertices": (_inf_vertices, r"vertices has 1 non-finite"),
    "negative_spread": (_set("arrays", "vertex_std", -np.ones((1, 2, V), np.float32)), r"negative spreads"),
    "no_focal": (_no_camera_focal, r"camera\.focal_px is None"),
    "no_image_size": (_set("meta", "source", {"kind": "image"}), r"source\.width is None"),
    "other_convention": (_set("meta", "camera", {**make_meta()["camera"], "convention": "opengl"}), r"'opengl'"),
    "arrays_file_outside_the_folder": (_set("meta", "arrays_file", "../people.npz"), r"not a file name beside"),
}


@pytest.mark.parametrize("case", sorted(NG_CASES))
def test_ng_rejects_malformed_results_naming_problem_and_fix(tmp_path, case):
    change, pattern = NG_CASES[case]
    arrays, meta = make_arrays(), make_meta()
    change(arrays, meta)
    json_path, npz_path = tmp_path / "people.json", tmp_path / "people.npz"
    np.savez(npz_path, **arrays)
    json_path.write_text(json.dumps({"arrays_file": npz_path.name, **meta}))
    with pytest.raises(rr.ResultFormatError, match=pattern) as info:
        rr.read_result(json_path)
    assert info.value.hint and info.value.hint in str(info.value)
    assert "\n" not in str(info.value)


def test_ng_unknown_major_version_names_both_versions_and_the_fix(tmp_path):
    json_path, _ = write_pair(tmp_path, meta={**make_meta(), "version": "3.1"})  # 2.x is the compact format
    with pytest.raises(rr.ResultFormatError) as info:
        rr.read_result(json_path)
    assert "3.1" in info.value.problem and rr.SUPPORTED_VERSION in info.value.problem
    assert "update the MEGA add-on" in info.value.hint


def write_pair_1_1(folder: Path, name: str = "people", seed: int = 0) -> tuple[Path, Path]:
    """A format 1.1 pair: the JSON records its npz's size and SHA-256."""
    json_path, npz_path = write_pair(folder, name, arrays=make_arrays(seed=seed))
    data = npz_path.read_bytes()
    meta = {**make_meta(), "version": "1.1", "arrays_file": npz_path.name, "arrays_file_size": len(data)}
    json_path.write_text(json.dumps({**meta, "arrays_file_sha256": hashlib.sha256(data).hexdigest()}))
    return json_path, npz_path


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.9"])
def test_ok_every_1_x_version_is_read(tmp_path, version):
    json_path, _ = write_pair(tmp_path, meta={**make_meta(), "version": version})
    assert rr.read_result(json_path).num_people == 2


def test_ok_a_1_1_pair_whose_npz_matches_reads(tmp_path):
    json_path, _ = write_pair_1_1(tmp_path)
    assert rr.read_result(json_path).meta["version"] == "1.1"


def test_ng_a_1_1_json_beside_another_results_npz_of_the_same_size(tmp_path):
    json_path, npz_path = write_pair_1_1(tmp_path, "a", seed=1)
    _, other_npz = write_pair_1_1(tmp_path, "b", seed=2)
    assert other_npz.stat().st_size == npz_path.stat().st_size
    other_npz.replace(npz_path)
    with pytest.raises(rr.ResultFormatError, match=r"does not match the SHA-256.*not one pair") as info:
        rr.read_result(json_path)
    assert "side by side" in info.value.hint


def test_ng_a_1_1_json_beside_a_truncated_npz(tmp_path):
    json_path, npz_path = write_pair_1_1(tmp_path)
    npz_path.write_bytes(npz_path.read_bytes()[:-10])
    with pytest.raises(rr.ResultFormatError, match=r"bytes: the two files are not one pair"):
        rr.read_result(json_path)


def test_ng_missing_npz(tmp_path):
    json_path, npz_path = write_pair(tmp_path)
    npz_path.unlink()
    with pytest.raises(rr.ResultFormatError, match=r"arrays file .*people\.npz.* is missing"):
        rr.read_result(json_path)


def test_ng_missing_json_beside_the_npz(tmp_path):
    json_path, npz_path = write_pair(tmp_path)
    json_path.unlink()
    with pytest.raises(rr.ResultFormatError, match=r"metadata file .*people\.json.* is missing"):
        rr.read_result(npz_path)


def test_ng_missing_result(tmp_path):
    with pytest.raises(rr.ResultFormatError, match=r"does not exist"):
        rr.read_result(tmp_path / "nothing.json")


def test_ng_invalid_json(tmp_path):
    json_path, _ = write_pair(tmp_path)
    json_path.write_text('{"schema": "mega-result", ')
    with pytest.raises(rr.ResultFormatError, match=r"not a readable JSON file"):
        rr.read_result(json_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "single_array", "pickled_objects", "empty"])
def test_ng_corrupt_npz(tmp_path, damage):
    json_path, npz_path = write_pair(tmp_path)
    if damage == "garbage":
        npz_path.write_bytes(b"this is not an archive" * 100)
    elif damage == "truncated":
        npz_path.write_bytes(npz_path.read_bytes()[: npz_path.stat().st_size // 2])
    elif damage == "single_array":
        with npz_path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    elif damage == "pickled_objects":
        np.savez(npz_path, **{**make_arrays(), "faces": np.array([{"evil": 1}], dtype=object)})
    else:
        npz_path.write_bytes(b"")
    with pytest.raises(rr.ResultFormatError, match=r"npz") as info:
        rr.read_result(json_path)
    assert "re-export" in str(info.value)


def test_hypothesis_order_sorts_the_samples_by_likelihood_and_keeps_the_basis_out():
    assert rr.hypothesis_order(np.array([-1.0, -3.0, -0.5, -2.0], np.float32)) == [2, 3, 1]
    assert rr.hypothesis_order(np.array([0.0, -2.0, -2.0, -1.0])) == [3, 1, 2]  # ties keep index order
    assert rr.hypothesis_order(np.array([-1.0, np.nan, -np.inf, -5.0])) == [3, 2, 1]  # NaN last
    assert rr.hypothesis_order(np.array([-4.0])) == []
    assert rr.hypothesis_order([-1.0, -0.1]) == [1]


@pytest.mark.parametrize("row", [np.zeros((2, 3)), np.zeros(0), np.float32(1.0)])
def test_ng_hypothesis_order_needs_a_row(row):
    with pytest.raises(ValueError, match=r"\(H,\) row"):
        rr.hypothesis_order(row)


def test_most_likely_hypothesis_includes_the_basis():
    assert rr.most_likely_hypothesis(np.array([-1.0, -3.0, -0.5])) == 2
    assert rr.most_likely_hypothesis(np.array([-0.5, -3.0, -0.5])) == 0
    assert rr.most_likely_hypothesis(np.array([np.nan, -3.0])) == 1
    assert rr.most_likely_hypothesis(np.array([np.nan, np.nan])) == 0


def test_reader_of_a_real_result_order_matches_its_log_likelihoods(tmp_path):
    arrays = make_arrays(frames=1, people=1, hypotheses=6, seed=3)
    result = rr.read_result(write_pair(tmp_path, arrays=arrays)[0])
    order = rr.hypothesis_order(result.log_likelihood[0, 0])
    assert sorted(order) == [1, 2, 3, 4, 5]
    ll = result.log_likelihood[0, 0]
    assert all(ll[a] >= ll[b] for a, b in itertools.pairwise(order))
