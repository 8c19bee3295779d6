"""Warnings for people the camera cannot show (behind it, or under 10 % of the mesh inside the image)."""

from __future__ import annotations

import numpy as np

from mega_runtime.pipeline.visibility import MIN_VISIBLE_FRACTION, visibility_warnings, visible_fraction

FOCAL, PP, W, H = 1000.0, (320.0, 240.0), 640, 480


def _body(centre, num=6890, seed=0) -> np.ndarray:
    """A 1.7 m × 0.5 m × 0.3 m box of points around ``centre`` (metres, camera frame)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.5, 0.5, (num, 3)) * [0.5, 1.7, 0.3] + centre).astype(np.float32)


def _arrays(centres, num_hypotheses=2):
    verts = np.stack([np.stack([np.stack([_body(c)] * num_hypotheses) for c in frame]) for frame in centres])
    valid = np.ones(verts.shape[:2], bool)
    return verts, valid, np.arange(verts.shape[0], dtype=np.int32)


def test_ok_person_in_front_and_inside_gets_no_warning():
    verts, valid, frames = _arrays([[(0.0, 0.0, 5.0)]])
    assert visible_fraction(verts[0, 0, 0], FOCAL, PP, W, H) > 0.99
    assert visibility_warnings(verts, valid, frames, FOCAL, PP, W, H) == []


def test_ng_person_behind_the_camera_is_named():
    verts, valid, frames = _arrays([[(0.0, 0.0, 5.0), (0.0, 0.0, -4.0)]])
    warnings = visibility_warnings(verts, valid, frames, FOCAL, PP, W, H)
    assert warnings == ["person 2 is behind the camera: its box or crop is probably wrong"]


def test_ng_person_mostly_outside_the_image_is_named():
    verts, valid, frames = _arrays([[(3.0, 0.0, 5.0)]])  # 600 px right of the centre: off a 640 px image
    assert visible_fraction(verts[0, 0, 0], FOCAL, PP, W, H) < MIN_VISIBLE_FRACTION
    assert visibility_warnings(verts, valid, frames, FOCAL, PP, W, H) == [
        "person 1 has under 10% of its mesh inside the image: its box or crop is probably wrong"
    ]


def test_ok_person_cut_by_the_border_is_not_flagged():
    verts, valid, frames = _arrays([[(1.5, 0.0, 5.0)]])  # about half inside
    assert 0.3 < visible_fraction(verts[0, 0, 0], FOCAL, PP, W, H) < 0.7
    assert visibility_warnings(verts, valid, frames, FOCAL, PP, W, H) == []


def test_ng_video_warning_counts_frames_and_names_the_first_and_skips_unseen_frames():
    verts, valid, frames = _arrays([[(0.0, 0.0, 5.0)], [(0.0, 0.0, -3.0)], [(0.0, 0.0, -3.0)], [(0.0, 0.0, 5.0)]])
    frames = np.array([10, 12, 14, 16], np.int32)
    valid[2, 0] = False  # not seen: never counted
    warnings = visibility_warnings(verts, valid, frames, FOCAL, PP, W, H)
    assert warnings == ["person 1 is behind the camera in 1 of its 3 frames (first: frame 12)"]
