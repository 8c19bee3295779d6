"""The runtime's result writer → the add-on's torch-free reader: the only thing the two sides share is the format."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from mega_runtime.io import result as runtime_result
from mega_runtime.io import result_schema
from mega_runtime.pipeline.preprocess import focal_length_px
from tests.addon_pure.helpers import load_pure_module

rr = load_pure_module("result_reader")


def make_runtime_result(frames: int = 2, people: int = 3, hypotheses: int = 4, seed: int = 0):
    """A runtime ``Result`` built like ``tests/runtime/test_result_tracking.py::make_result``, with distinct values
    in every array and the metadata the pipeline writes."""
    shape = {"F": frames, "P": people, "H": hypotheses}
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, (dtype, dims) in result_schema.ARRAYS.items():
        size = [shape.get(d, d) for d in dims]
        if np.dtype(dtype) == np.bool_:
            arrays[name] = rng.random(size) > 0.3
        elif np.issubdtype(np.dtype(dtype), np.integer):
            arrays[name] = rng.integers(0, 512, size).astype(dtype)
        else:
            arrays[name] = rng.normal(size=size).astype(dtype)
    arrays["faces"] = rng.integers(0, 6890, arrays["faces"].shape).astype(np.int32)
    arrays["vertex_std"] = np.abs(arrays["vertex_std"])
    arrays["track_ids"] = np.arange(people, dtype=np.int32)
    width, height = 1280, 853
    meta = {
        "runtime_version": "0.1.0",
        "model": {"name": "mega_hrnet", "backbone": "hrnet_w48", "input_size": [256, 192]},
        "source": {"kind": "video", "path": "/footage/walk.mp4", "width": width, "height": height, "fps": 25.0},
        "camera": {
            "focal_px": float(focal_length_px(width, height)),
            "principal_point_px": [width / 2.0, height / 2.0],
            "convention": "opencv",
            "axes": "x right, y down, z forward",
            "units": "metres",
        },
        "sampling": {"sampler": "full", "num_hypotheses": hypotheses, "seed": seed},
        "warnings": [],
        "timings_ms": {"detect": 1.0},
    }
    return runtime_result.Result(meta=meta, arrays=arrays)


def test_ok_runtime_written_result_reads_identically_in_the_addon(tmp_path):
    written = make_runtime_result()
    json_path, npz_path = runtime_result.write_result(written, tmp_path / "walk.mega")
    read = rr.read_result(json_path)
    for name, original in written.arrays.items():
        got = getattr(read, name) if name in rr.REQUIRED_ARRAYS else read.extra_arrays[name]
        assert got.dtype == original.dtype and np.array_equal(got, original), name
    assert (read.num_frames, read.num_people, read.num_hypotheses) == (2, 3, 4)
    runtime_read = runtime_result.read_result(json_path)
    assert (read.num_frames, read.num_people, read.num_hypotheses) == (
        runtime_read.num_frames,
        runtime_read.num_people,
        runtime_read.num_hypotheses,
    )
    assert read.image_size == (1280, 853)
    assert read.focal_px == pytest.approx(1000 / 224 * 1280)
    assert read.principal_point_px == (640.0, 426.5)
    assert read.fps == 25.0 and read.source_name == "walk.mp4"
    assert read.meta["version"] == runtime_result.VERSION
    assert rr.read_result(npz_path).path == json_path == rr.read_result(tmp_path / "walk.mega").path


def test_ok_addon_knows_every_array_the_runtime_writes_with_the_same_dtype_and_shape():
    addon = {**rr.REQUIRED_ARRAYS, **rr.OPTIONAL_ARRAYS}
    assert addon == result_schema.ARRAYS
    assert rr.SCHEMA == runtime_result.SCHEMA
    assert rr.SUPPORTED_VERSION == runtime_result.VERSION
    assert rr.DETECTION_ARRAYS == result_schema.DETECTION_ARRAYS


def test_ng_addon_refuses_what_the_runtime_refuses_a_future_major_version(tmp_path):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=1, hypotheses=2), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    meta["version"] = "3.0"  # 2.0 is the compact format
    json_path.write_text(json.dumps(meta))
    with pytest.raises(runtime_result.ResultFormatError, match=r"version 3\.0.*reads version 1\.\d") as runtime_info:
        runtime_result.read_result(json_path)
    assert "update mega-runtime" in str(runtime_info.value.hint)
    with pytest.raises(rr.ResultFormatError, match=r"version 3\.0.*reads version 1\.\d") as addon_info:
        rr.read_result(json_path)
    assert "update the MEGA add-on" in addon_info.value.hint


def as_version_1_0(json_path) -> None:
    """Rewrite a result's JSON the way format 1.0 wrote it: version "1.0", no size and hash of the npz."""
    meta = json.loads(json_path.read_text())
    meta["version"] = "1.0"
    del meta["arrays_file_size"], meta["arrays_file_sha256"]
    json_path.write_text(json.dumps(meta, indent=2))


def test_ok_both_readers_read_a_version_1_0_result(tmp_path):
    written = make_runtime_result(frames=2, people=1, hypotheses=3)
    json_path, _ = runtime_result.write_result(written, tmp_path / "old")
    as_version_1_0(json_path)
    addon_read, runtime_read = rr.read_result(json_path), runtime_result.read_result(json_path)
    assert addon_read.meta["version"] == runtime_read.meta["version"] == "1.0"
    assert np.array_equal(addon_read.vertices, written.arrays["vertices"])
    assert np.array_equal(runtime_read.arrays["vertices"], written.arrays["vertices"])


def test_ok_a_newer_minor_version_is_read_with_its_new_fields_kept(tmp_path):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=1, hypotheses=2), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**meta, "version": "1.7", "added_later": {"x": 1}}))
    assert rr.read_result(json_path).meta["added_later"] == {"x": 1}
    assert runtime_result.read_result(json_path).meta["added_later"] == {"x": 1}


def test_ok_the_json_records_the_size_and_sha256_of_its_npz(tmp_path):
    json_path, npz_path = runtime_result.write_result(make_runtime_result(), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    assert meta["version"] == runtime_result.VERSION and meta["arrays_file"] == npz_path.name
    assert meta["arrays_file_size"] == npz_path.stat().st_size
    assert meta["arrays_file_sha256"] == hashlib.sha256(npz_path.read_bytes()).hexdigest()


@pytest.mark.parametrize("same_size", [True, False], ids=["same_size", "other_size"])
def test_ng_both_readers_refuse_a_json_beside_another_results_npz(tmp_path, same_size):
    # Same shapes give npz files of identical size: only the hash tells them apart.
    first, _ = runtime_result.write_result(
        make_runtime_result(frames=2, people=1, hypotheses=3, seed=1), tmp_path / "a"
    )
    other = make_runtime_result(frames=2, people=1 if same_size else 2, hypotheses=3, seed=2)
    _, other_npz = runtime_result.write_result(other, tmp_path / "b")
    os.replace(other_npz, tmp_path / "a.npz")
    with pytest.raises(runtime_result.ResultFormatError, match="not one pair") as runtime_info:
        runtime_result.read_result(first)
    assert "side by side" in str(runtime_info.value.hint)
    with pytest.raises(rr.ResultFormatError, match="not one pair") as addon_info:
        rr.read_result(first)
    assert "side by side" in addon_info.value.hint


def test_ng_both_readers_refuse_a_damaged_npz_of_the_same_size(tmp_path):
    json_path, npz_path = runtime_result.write_result(
        make_runtime_result(frames=1, people=1, hypotheses=2), tmp_path / "r"
    )
    data = bytearray(npz_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(data))
    with pytest.raises(runtime_result.ResultFormatError, match="SHA-256"):
        runtime_result.read_result(json_path)
    with pytest.raises(rr.ResultFormatError, match="SHA-256"):
        rr.read_result(json_path)


@pytest.mark.parametrize(
    "field,value", [("arrays_file_size", "12"), ("arrays_file_sha256", 5), ("arrays_file_size", -1)]
)
def test_ng_both_readers_refuse_a_malformed_pair_check(tmp_path, field, value):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=1, hypotheses=2), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**meta, field: value}))
    with pytest.raises(runtime_result.ResultFormatError, match="malformed"):
        runtime_result.read_result(json_path)
    with pytest.raises(rr.ResultFormatError, match="malformed"):
        rr.read_result(json_path)


def test_ok_empty_runtime_result_reads(tmp_path):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=0, hypotheses=3), tmp_path / "e")
    assert rr.read_result(json_path).num_people == 0
