"""Result files and person tracking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mega_runtime.io.result import OutputExistsError, Result, ResultFormatError, read_result, write_result
from mega_runtime.io.result_schema import ARRAYS
from mega_runtime.pipeline.tracking import BoxTracker, box_iou


def make_result(frames: int = 2, people: int = 1, hypotheses: int = 3) -> Result:
    shape = {"F": frames, "P": people, "H": hypotheses}
    arrays = {}
    for name, (dtype, dims) in ARRAYS.items():
        arrays[name] = np.zeros([shape.get(d, d) for d in dims], dtype=dtype)
    arrays["vertices"][:] = np.random.default_rng(0).normal(size=arrays["vertices"].shape)
    return Result(meta={"runtime_version": "test"}, arrays=arrays)


def test_result_round_trips_exactly(tmp_path):
    original = make_result()
    json_path, npz_path = write_result(original, tmp_path / "photo.mega")
    assert json_path.name == "photo.mega.json" and npz_path.name == "photo.mega.npz"
    back = read_result(json_path)
    assert back.meta["schema"] == "mega-result" and back.num_hypotheses == 3
    for name in ARRAYS:
        assert np.array_equal(back.arrays[name], original.arrays[name])


def test_writer_never_overwrites_without_permission(tmp_path):
    write_result(make_result(), tmp_path / "r")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_result(make_result(), tmp_path / "r")
    write_result(make_result(), tmp_path / "r", overwrite=True)


def test_writer_rejects_inconsistent_arrays(tmp_path):
    bad = make_result()
    bad.arrays["cam_t"] = np.zeros((2, 1, 4, 3), np.float32)
    with pytest.raises(ResultFormatError, match="H=4"):
        write_result(bad, tmp_path / "r")
    assert not list(tmp_path.iterdir())


def test_reader_rejects_future_major_version(tmp_path):
    json_path, _ = write_result(make_result(), tmp_path / "r")
    meta = json.loads(json_path.read_text())
    meta["version"] = "3.0"  # 2.0 is the compact format
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ResultFormatError, match=r"version 3\.0.*reads version 1\.\d"):
        read_result(json_path)


def test_reader_names_a_missing_arrays_file(tmp_path):
    json_path, npz_path = write_result(make_result(), tmp_path / "r")
    npz_path.unlink()
    with pytest.raises(ResultFormatError, match="arrays file"):
        read_result(json_path)


def test_iou_of_identical_and_disjoint_boxes():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]]))
    np.testing.assert_allclose(iou, [[1.0, 0.0, 1 / 3]])


def test_tracker_keeps_ids_for_moving_people_and_bridges_short_gaps():
    tracker = BoxTracker(max_gap=3)
    a, b = np.array([0, 0, 10, 20.0]), np.array([50, 0, 60, 20.0])
    assert tracker.update(np.stack([a, b])).tolist() == [0, 1]
    for step in range(1, 5):
        shift = np.array([2, 0, 2, 0.0]) * step
        assert tracker.update(np.stack([b + shift, a + shift])).tolist() == [1, 0]
    walk = np.array([2, 0, 2, 0.0])
    assert tracker.update(np.stack([a + 5 * walk])).tolist() == [0]  # b unseen
    assert tracker.update(np.zeros((0, 4))).tolist() == []
    assert tracker.update(np.stack([b + 7 * walk, a + 7 * walk])).tolist() == [1, 0]  # b back within the gap


def test_tracker_gives_a_new_id_after_a_long_absence_and_to_newcomers():
    tracker = BoxTracker(max_gap=1)
    a = np.array([0, 0, 10, 20.0])
    tracker.update(a[None])
    tracker.update(np.zeros((0, 4)))
    tracker.update(np.zeros((0, 4)))
    assert tracker.update(a[None]).tolist() == [1]
    assert tracker.update(np.stack([a, a + 100])).tolist() == [1, 2]


def test_preview_draws_a_mesh_where_it_projects(assets_dir):
    from mega_runtime.io.preview import draw_meshes
    from mega_runtime.models.assets import read_template_ply

    template = read_template_ply(assets_dir / "template.ply")
    body = template.vertices * np.array([1, -1, -1], np.float32) + np.array([0, 0, 4], np.float32)  # y down, 4 m away
    image = np.zeros((400, 400, 3), np.uint8)
    out = draw_meshes(image, [body], template.faces, focal_px=400.0, principal_px=(200.0, 200.0))
    painted = out.any(axis=2)
    assert painted[200, 200] and not painted[5, 5]
    ys = np.nonzero(painted)[0]
    assert 100 < ys.max() - ys.min() < 300  # a ~1.7 m body at 4 m with f = 400 px is ~170 px tall
    assert not draw_meshes(image, [body - np.array([0, 0, 10], np.float32)], template.faces, 400.0, (200, 200)).any()
