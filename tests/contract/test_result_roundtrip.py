"""The runtime's result writer → the add-on's torch-free reader: the only thing the two sides share is the format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mega_runtime.io import result as runtime_result
from mega_runtime.pipeline.preprocess import focal_length_px
from tests.addon_pure.helpers import load_pure_module

rr = load_pure_module("result_reader")


def make_runtime_result(frames: int = 2, people: int = 3, hypotheses: int = 4, seed: int = 0):
    """A runtime ``Result`` built like ``tests/runtime/test_result_tracking.py::make_result``, with distinct values
    in every array and the metadata the pipeline writes."""
    shape = {"F": frames, "P": people, "H": hypotheses}
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, (dtype, dims) in runtime_result.ARRAYS.items():
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
    assert addon == runtime_result.ARRAYS
    assert rr.SCHEMA == runtime_result.SCHEMA
    assert rr.SUPPORTED_VERSION.split(".")[0] == runtime_result.VERSION.split(".")[0]


def test_ng_addon_refuses_what_the_runtime_refuses_a_future_major_version(tmp_path):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=1, hypotheses=2), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    meta["version"] = "2.0"
    json_path.write_text(json.dumps(meta))
    with pytest.raises(runtime_result.ResultFormatError):
        runtime_result.read_result(json_path)
    with pytest.raises(rr.ResultFormatError, match=r"version 2\.0.*reads version 1\.0"):
        rr.read_result(json_path)


def test_ok_empty_runtime_result_reads(tmp_path):
    json_path, _ = runtime_result.write_result(make_runtime_result(frames=1, people=0, hypotheses=3), tmp_path / "e")
    assert rr.read_result(json_path).num_people == 0
