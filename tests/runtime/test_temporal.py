"""Temporal consistency for video results: jitter, One-Euro smoothing, the coherent hypothesis path."""

from __future__ import annotations

import numpy as np
import pytest

from mega_runtime.result import Result, read_result, write_result
from mega_runtime.temporal import OneEuroConfig, TemporalConfig, apply_temporal, coherent_path, jitter, one_euro

FPS = 30.0


def test_ok_jitter_of_a_parabola_is_its_acceleration():
    t = np.arange(20) / FPS
    x = 0.5 * 4.0 * t**2  # 4 m/s² along x
    vertices = np.zeros((20, 2, 3))
    vertices[:, :, 0] = x[:, None]
    assert jitter(vertices, np.ones(20, bool), FPS) == pytest.approx(4.0, rel=1e-6)


def test_ok_jitter_skips_triplets_across_gaps_and_is_nan_without_any():
    vertices = np.zeros((6, 1, 3))
    vertices[3, 0, 0] = 1.0  # a spike only inside a gap's neighbourhood
    valid = np.array([True, True, True, False, True, True])
    assert jitter(vertices, valid, FPS) == 0.0
    assert np.isnan(jitter(vertices[:2], np.ones(2, bool), FPS))


def test_ok_one_euro_removes_noise_and_lags_little_on_clean_motion():
    rng = np.random.default_rng(0)
    t = np.arange(120) / FPS
    clean = np.stack([0.5 * t, np.zeros_like(t), np.zeros_like(t)], axis=1)[:, None, :]  # walking 0.5 m/s
    noisy = clean + rng.normal(scale=0.01, size=clean.shape)
    valid = np.ones(120, bool)
    config = OneEuroConfig(min_cutoff=1.0, beta=0.5)
    smoothed = one_euro(noisy, valid, FPS, config)
    assert jitter(smoothed, valid, FPS) < 0.25 * jitter(noisy, valid, FPS)
    lag = np.abs(one_euro(clean, valid, FPS, config) - clean)[30:].max()
    assert lag < 0.08  # metres, at 0.5 m/s


def test_ok_one_euro_restarts_after_a_gap():
    values = np.concatenate([np.zeros(5), np.ones(5)])[:, None]
    valid = np.array([True] * 4 + [False] + [True] * 5)
    smoothed = one_euro(values, valid, FPS, OneEuroConfig())
    assert smoothed[5, 0] == 1.0  # the first frame after the gap is taken as it is


def test_ok_coherent_path_prefers_the_smooth_hypothesis_over_a_jumping_argmax():
    frames, hyps = 12, 3
    vertices = np.zeros((frames, hyps, 4, 3))
    vertices[:, 0, :, 0] = np.where(np.arange(frames) % 2 == 0, 0.1, -0.1)[:, None]  # likeliest, but jumps
    vertices[:, 1, :, 0] = np.linspace(0, 0.1, frames)[:, None]  # smooth
    vertices[:, 2, :, 0] = 0.3 * np.sin(np.arange(frames))[:, None]
    ll = np.tile(np.array([-1.0, -1.5, -3.0]), (frames, 1))
    path = coherent_path(vertices, ll, np.ones(frames, bool), FPS)
    assert (path == 1).all()
    assert (ll.argmax(axis=1) == 0).all()  # the per-frame argmax would have jumped
    likelihood_only = coherent_path(vertices, ll, np.ones(frames, bool), FPS, smoothness_weight=0.0)
    assert (likelihood_only == 0).all()


def test_ok_coherent_path_restarts_across_gaps_and_leaves_unseen_frames_at_zero():
    vertices = np.zeros((5, 2, 1, 3))
    ll = np.array([[-2.0, -1.0]] * 5)
    valid = np.array([True, True, False, True, True])
    assert coherent_path(vertices, ll, valid, FPS).tolist() == [1, 1, 0, 1, 1]


def _video_result(frames=20, people=2, hyps=3, seed=0):
    rng = np.random.default_rng(seed)
    f, p, h, v = frames, people, hyps, 6890
    base = rng.normal(scale=0.3, size=(v, 3)).astype(np.float32)
    t = (np.arange(f) / FPS).astype(np.float32)
    cam_t = np.zeros((f, p, h, 3), np.float32)
    cam_t[..., 0] = (0.5 * t)[:, None, None]
    cam_t[..., 2] = 5.0
    noise = rng.normal(scale=0.01, size=(f, p, h, v, 3)).astype(np.float32)
    vertices = base + noise + cam_t[:, :, :, None, :]
    arrays = {
        "faces": np.zeros((13776, 3), np.int32),
        "vertices": vertices.astype(np.float32),
        "cam_t": cam_t,
        "tokens": np.zeros((f, p, h, 54), np.int16),
        "log_likelihood": rng.normal(-50, 1, size=(f, p, h)).astype(np.float32),
        "vertex_std": np.zeros((f, p, v), np.float32),
        "rotation": np.zeros((f, p, 3, 3), np.float32),
        "cam_crop": np.zeros((f, p, 3), np.float32),
        "boxes_xyxy": np.zeros((f, p, 4), np.float32),
        "track_ids": np.arange(p, dtype=np.int32),
        "valid": np.ones((f, p), bool),
        "frame_indices": np.arange(f, dtype=np.int32),
    }
    meta = {"source": {"kind": "video", "fps": FPS, "width": 640, "height": 480}, "warnings": []}
    return Result(meta=meta, arrays=arrays)


def test_ok_apply_temporal_adds_path_smoothed_bodies_and_jitter_report_that_round_trips(tmp_path):
    result = _video_result()
    config = TemporalConfig(path="coherent", smooth=True)
    done = apply_temporal(result, config)
    assert done.arrays["path"].shape == (20, 2) and done.arrays["path"].dtype == np.int16
    assert done.arrays["smoothed_vertices"].shape == (20, 2, 6890, 3)
    report = done.meta["temporal"]
    assert report["path"] == "coherent" and report["one_euro"]["beta"] == 0.5
    for person in report["people"]:
        assert person["jitter_smoothed_m_s2"] < 0.5 * person["jitter_path_m_s2"]
    json_path, _ = write_result(done, tmp_path / "clip")
    back = read_result(json_path)
    np.testing.assert_array_equal(back.arrays["path"], done.arrays["path"])
    assert back.meta["temporal"]["people"][0]["track_id"] == 0
    assert result.arrays.get("path") is None  # the input is left as it was


def test_ng_bad_settings_and_missing_frame_rate_are_refused():
    with pytest.raises(ValueError, match="'zero' or 'coherent'"):
        TemporalConfig(path="best")
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroConfig(min_cutoff=0.0)
    result = _video_result(frames=4, people=1)
    result.meta["source"]["fps"] = None
    with pytest.raises(Exception, match="frame rate"):
        apply_temporal(result, TemporalConfig(smooth=True))


def test_ok_infer_smooths_a_clip_and_records_the_path_and_jitter(small_checkpoints, assets_dir, tmp_path, monkeypatch):
    import cv2

    from mega_runtime.cli import main

    monkeypatch.setenv("MEGA_ASSETS_DIR", str(assets_dir))
    photo = cv2.imread(str(assets_dir / "images" / "pexels-polina-tankilevitch-6739044.jpg"))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 24, (small.shape[1], small.shape[0]))
    for i in range(8):
        writer.write(np.roll(small, 2 * i, axis=1))
    writer.release()
    argv = ["infer", str(video), "--checkpoint-dir", str(small_checkpoints), "--model", "resnet", "--hypotheses", "3"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--path", "coherent", "--smooth", "--device", "cpu"]) == 0
    result = read_result(tmp_path / "out" / "walk.json")
    assert result.arrays["path"].shape == (8, 1) and result.arrays["smoothed_vertices"].shape == (8, 1, 6890, 3)
    assert result.meta["temporal"]["people"][0]["jitter_smoothed_m_s2"] is not None


def test_ng_infer_rejects_bad_smoothing_parameters(small_checkpoints, tmp_path, capsys):
    from mega_runtime.cli import main

    argv = ["infer", str(tmp_path), "--checkpoint-dir", str(small_checkpoints), "--out", str(tmp_path / "o")]
    (tmp_path / "a.avi").write_bytes(b"")
    assert main([*argv, "--smooth", "--one-euro-min-cutoff", "0"]) == 2
    assert "min_cutoff > 0" in capsys.readouterr().err
