"""Person boxes between the Movie Clip editor and the runtime (plain CPython): track markers → the protocol's
``boxes_per_frame``; a result's boxes → what the overlay draws at a clip frame."""

from __future__ import annotations

import json

import numpy as np

from tests.addon_pure.helpers import load_pure_module

clip_boxes = load_pure_module("clip_boxes")
SQUARE = ((-0.1, -0.2), (0.1, -0.2), (0.1, 0.2), (-0.1, 0.2))


def test_ok_marker_pattern_becomes_an_image_box_with_y_down_clipped_to_the_frame():
    # marker at the centre of a 200 × 100 frame, pattern ±0.1 wide and ±0.2 tall (units of the frame, y up)
    assert clip_boxes.marker_box((0.5, 0.5), SQUARE, 200, 100) == (80.0, 30.0, 120.0, 70.0)
    # near the top-left corner: y up 0.9 → y down 10 px from the top, clipped at the frame's edges
    assert clip_boxes.marker_box((0.05, 0.9), SQUARE, 200, 100) == (0.0, 0.0, 30.0, 30.0)
    assert clip_boxes.marker_box((2.0, 2.0), SQUARE, 200, 100) is None  # wholly outside


def test_ok_tracks_become_boxes_per_file_frame_within_the_range():
    marker = clip_boxes.TrackMarker
    person_a = [marker(1, (0.5, 0.5), SQUARE), marker(2, (0.55, 0.5), SQUARE), marker(9, (0.5, 0.5), SQUARE)]
    person_b = [marker(2, (0.2, 0.5), SQUARE)]
    boxes = clip_boxes.frame_boxes([person_a, person_b], 200, 100, file_frames=(0, 5))
    assert list(boxes) == ["0", "1"]  # clip frame 1 = file frame 0; clip frame 9 is outside [0, 5)
    assert boxes["0"] == [[80.0, 30.0, 120.0, 70.0]]
    assert boxes["1"] == [[90.0, 30.0, 130.0, 70.0], [20.0, 30.0, 60.0, 70.0]]
    json.dumps(boxes)  # what the protocol sends


def _write_result(folder, source=None):
    arrays = {
        "boxes_xyxy": np.array([[[10, 20, 50, 90], [0, 0, 0, 0]], [[12, 20, 52, 90], [60, 10, 90, 80]]], np.float32),
        "valid": np.array([[True, False], [True, True]]),
        "track_ids": np.array([0, 3], np.int32),
        "frame_indices": np.array([4, 6], np.int32),
        "vertices": np.zeros((2, 2, 1, 1, 3), np.float32),
    }
    if source is not None:
        arrays["box_source"] = np.asarray(source, np.int8)
    np.savez(folder / "r.npz", **arrays)
    meta = {"arrays_file": "r.npz", "source": {"path": "/clips/walk.mp4", "width": 100, "height": 100}}
    (folder / "r.json").write_text(json.dumps(meta))
    return folder / "r.json"


def test_ok_overlay_rects_of_a_frame_are_flipped_for_the_clip_editor_with_ids_and_provenance(tmp_path):
    boxes = clip_boxes.read_boxes(_write_result(tmp_path, source=[[0, -1], [0, 1]]))
    assert boxes.source_path == "/clips/walk.mp4" and (boxes.width, boxes.height) == (100, 100)
    first = clip_boxes.overlay_rects(boxes, 4)
    assert first == [clip_boxes.OverlayRect(10.0, 10.0, 50.0, 80.0, 0, False)]
    second = clip_boxes.overlay_rects(boxes, 6)
    assert [(r.track_id, r.given) for r in second] == [(0, False), (3, True)]
    assert clip_boxes.overlay_rects(boxes, 5) == []  # a frame the result does not hold


def test_ok_results_before_provenance_draw_every_box_as_detected(tmp_path):
    boxes = clip_boxes.read_boxes(_write_result(tmp_path))
    assert boxes.box_source is None
    assert not any(r.given for r in clip_boxes.overlay_rects(boxes, 6))


def test_ok_scene_frames_map_to_file_frames_as_the_clip_shows_them():
    assert clip_boxes.clip_file_frame(1, 1, 0) == 0
    assert clip_boxes.clip_file_frame(10, 5, 2) == 7
    assert clip_boxes.track_colour(7) == clip_boxes.track_colour(1)
