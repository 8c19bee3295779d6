"""Temporal consistency for video results: jitter, One-Euro smoothing, the coherent hypothesis path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mega_runtime.io.result import Result, read_result, write_result
from mega_runtime.pipeline.temporal import (
    OneEuroConfig,
    TemporalConfig,
    apply_temporal,
    coherent_path,
    jitter,
    one_euro,
    path_arrays,
    result_fps,
    smooth_result_arrays,
)

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
    clean = np.stack([1.4 * t, np.zeros_like(t), np.zeros_like(t)], axis=1)[:, None, :]  # walking 1.4 m/s
    noisy = clean + rng.normal(scale=0.01, size=clean.shape)
    valid = np.ones(120, bool)
    for two_sided in (True, False):
        config = OneEuroConfig(min_cutoff=1.0, beta=0.5, two_sided=two_sided)
        assert jitter(one_euro(noisy, valid, FPS, config), valid, FPS) < 0.25 * jitter(noisy, valid, FPS)
    lag = np.abs(one_euro(clean, valid, FPS, OneEuroConfig()) - clean)
    assert lag[30:-30].max() < 1e-4 and lag.max() < 0.05  # two-sided: none inside the clip, some at its ends
    causal_lag = np.abs(one_euro(clean, valid, FPS, OneEuroConfig(two_sided=False)) - clean)[30:]
    assert 0.05 < causal_lag.max() < 0.1  # the classic filter trails by ~speed / (2π · cut-off)


def test_ok_one_euro_restarts_after_a_gap():
    values = np.concatenate([np.zeros(5), np.ones(5)])[:, None]
    valid = np.array([True] * 4 + [False] + [True] * 5)
    for two_sided in (True, False):
        smoothed = one_euro(values, valid, FPS, OneEuroConfig(two_sided=two_sided))
        assert (smoothed[:4] == 0).all() and (smoothed[5:] == 1).all()  # nothing leaks across the gap
        assert smoothed[4, 0] == 0.0  # the unseen frame is left as it was


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


def _brute_force_path(vertices, ll, fps, smoothness_weight, likelihood_weight=1.0):
    best, best_cost = None, np.inf
    for path in itertools.product(range(ll.shape[1]), repeat=ll.shape[0]):
        cost = -likelihood_weight * sum(ll[f, h] for f, h in enumerate(path))
        for f in range(1, len(path)):
            step = vertices[f, path[f]] - vertices[f - 1, path[f - 1]]
            cost += smoothness_weight * (np.linalg.norm(step, axis=-1).mean() * fps) ** 2
        if cost < best_cost - 1e-12:
            best, best_cost = path, cost
    return np.array(best)


@pytest.mark.parametrize("seed", range(5))
def test_ok_coherent_path_is_the_exact_optimum_found_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    vertices = rng.normal(scale=0.05, size=(6, 3, 5, 3))
    ll = rng.normal(scale=2.0, size=(6, 3))
    valid = np.ones(6, bool)
    weight = float(rng.choice([0.1, 1.0, 10.0]))
    expected = _brute_force_path(vertices, ll, FPS, weight)
    assert coherent_path(vertices, ll, valid, FPS, smoothness_weight=weight).tolist() == expected.tolist()
    valid[2] = False  # a gap: each side is its own optimum
    path = coherent_path(vertices, ll, valid, FPS, smoothness_weight=weight)
    assert path[2] == 0
    assert path[:2].tolist() == _brute_force_path(vertices[:2], ll[:2], FPS, weight).tolist()
    assert path[3:].tolist() == _brute_force_path(vertices[3:], ll[3:], FPS, weight).tolist()


def test_ok_path_arrays_and_smoothing_of_the_chosen_bodies():
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(8, 2, 3, 4, 3)).astype(np.float32)
    cam_t = rng.normal(size=(8, 2, 3, 3)).astype(np.float32)
    path = rng.integers(0, 3, size=(8, 2))
    chosen, chosen_t = path_arrays(vertices, cam_t, path)
    assert chosen.shape == (8, 2, 4, 3) and chosen_t.shape == (8, 2, 3)
    np.testing.assert_array_equal(chosen[5, 1], vertices[5, 1, path[5, 1]])
    np.testing.assert_array_equal(chosen_t[2, 0], cam_t[2, 0, path[2, 0]])
    valid = np.ones((8, 2), bool)
    valid[3, 1] = False
    config = OneEuroConfig(min_cutoff=2.0, beta=0.0)
    smoothed, smoothed_t = smooth_result_arrays(chosen, chosen_t, valid, FPS, config)
    assert smoothed.dtype == np.float32 and smoothed_t.dtype == np.float32
    assert not smoothed[3, 1].any() and not smoothed_t[3, 1].any()  # unseen: zeros, as in the result format
    np.testing.assert_allclose(smoothed_t[:, 0], one_euro(chosen_t[:, 0], valid[:, 0], FPS, config), atol=1e-6)
    body = one_euro(chosen[:, 1] - chosen_t[:, 1, None], valid[:, 1], FPS, config)
    expected = body + one_euro(chosen_t[:, 1], valid[:, 1], FPS, config)[:, None]
    np.testing.assert_allclose(smoothed[valid[:, 1], 1], expected[valid[:, 1]], atol=1e-5)


def test_ok_the_frame_rate_of_a_result_counts_the_frame_step():
    assert result_fps({"source": {"fps": 30.0, "frame_step": 3}}) == 10.0
    assert result_fps({"source": {"fps": 25.0}}) == 25.0
    assert result_fps({"source": {"kind": "image"}}) is None
    result = _video_result(frames=12, people=1)
    result.meta["source"]["frame_step"] = 2
    done = apply_temporal(result, TemporalConfig(smooth=True))
    assert done.meta["temporal"]["fps"] == FPS / 2
    vertices = result.arrays["vertices"][:, 0, 0]
    assert done.meta["temporal"]["people"][0]["jitter_hypothesis0_m_s2"] == pytest.approx(
        jitter(vertices, np.ones(12, bool), FPS / 2), rel=1e-5
    )


def test_ok_a_walking_person_jitters_less_on_the_coherent_path_and_far_less_smoothed():
    """A body walking 1.4 m/s with swinging limbs; hypothesis 0 off by ~1 cm per frame, the samples by ~2.5 cm,
    their log-likelihoods telling the two apart only roughly. Figures: docs/video.md."""
    result, truth = _walking_result()
    zero = apply_temporal(result, TemporalConfig(path="zero", smooth=True))
    coherent = apply_temporal(result, TemporalConfig(path="coherent", smooth=True))
    person = coherent.meta["temporal"]["people"][0]
    assert person["jitter_path_m_s2"] < 0.9 * person["jitter_hypothesis0_m_s2"]
    assert person["jitter_smoothed_m_s2"] < 0.3 * person["jitter_hypothesis0_m_s2"]
    error = {  # mean vertex error against the truth, metres, away from the clip's ends
        name: np.linalg.norm(r.arrays["smoothed_vertices"][:, 0] - truth, axis=-1)[10:-10].mean()
        for name, r in (("zero", zero), ("coherent", coherent))
    }
    raw_error = np.linalg.norm(result.arrays["vertices"][:, 0, 0] - truth, axis=-1)[10:-10].mean()
    assert error["zero"] < 2.0 * raw_error and error["coherent"] < 2.0 * raw_error  # smoothing adds little lag
    causal = apply_temporal(result, TemporalConfig(smooth=True, one_euro=OneEuroConfig(two_sided=False)))
    causal_error = np.linalg.norm(causal.arrays["smoothed_vertices"][:, 0] - truth, axis=-1)[10:-10].mean()
    assert causal_error > 2.0 * error["zero"]  # the forward-only filter trails the walking body


def test_ok_a_result_with_no_frames_passes_through():
    result = _video_result(frames=0, people=0)
    done = apply_temporal(result, TemporalConfig(path="coherent", smooth=True))
    assert done.arrays["path"].shape == (0, 0) and done.arrays["smoothed_vertices"].shape == (0, 0, 6890, 3)
    assert done.meta["temporal"]["people"] == []


def test_ng_shapes_that_do_not_fit_are_refused_with_the_shapes_named():
    with pytest.raises(ValueError, match=r"vertices must be \(F, H, V, 3\)"):
        coherent_path(np.zeros((4, 2, 5, 3)), np.zeros((4, 3)), np.ones(4, bool), FPS)
    with pytest.raises(ValueError, match=r"valid must be \(4,\)"):
        coherent_path(np.zeros((4, 2, 5, 3)), np.zeros((4, 2)), np.ones(5, bool), FPS)
    with pytest.raises(ValueError, match=r"\(F, V, 3\)"):
        jitter(np.zeros((4, 3)), np.ones(4, bool), FPS)
    with pytest.raises(ValueError, match="fps"):
        one_euro(np.zeros((4, 3)), np.ones(4, bool), 0.0, OneEuroConfig())
    with pytest.raises(ValueError, match="outside 0…2"):
        path_arrays(np.zeros((2, 1, 3, 4, 3)), np.zeros((2, 1, 3, 3)), np.full((2, 1), 3))
    with pytest.raises(ValueError, match="weights"):
        TemporalConfig(smoothness_weight=-1.0)


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


def _walking_result(frames=60, hyps=8, seed=0):
    """(Result, truth (F, V, 3)): one person walking 1.4 m/s at 5 m, limbs swinging at 1 Hz; hypothesis 0 off by a
    random mix of a few error modes of ~1 cm per frame, the samples by ~2.5 cm; log-likelihoods follow the errors
    loosely (with 1 nat of noise), hypothesis 0 the likeliest on average."""
    rng = np.random.default_rng(seed)
    num_vertices, t = 6890, np.arange(frames) / FPS
    body = rng.normal(scale=0.3, size=(num_vertices, 3))[None] + np.sin(2 * np.pi * t)[:, None, None] * rng.normal(
        scale=0.15, size=(num_vertices, 3)
    )
    cam = np.stack([1.4 * t, np.zeros_like(t), np.full_like(t, 5.0)], axis=1)
    modes = rng.normal(size=(6, num_vertices, 3)) / np.sqrt(3)
    coefficients = rng.normal(size=(frames, hyps, 6)) * np.array([0.01] + [0.025] * (hyps - 1))[None, :, None]
    errors = np.einsum("fhk,kvc->fhvc", coefficients, modes)
    log_likelihood = -(coefficients**2).sum(-1) / (2 * 0.02**2) * 0.2 + rng.normal(size=(frames, hyps))
    log_likelihood[:, 0] += 2.0
    result = _video_result(frames=frames, people=1, hyps=hyps, seed=seed)
    result.arrays["vertices"] = (body[:, None] + errors + cam[:, None, None])[:, None].astype(np.float32)
    result.arrays["cam_t"] = np.broadcast_to(cam[:, None, None], (frames, 1, hyps, 3)).astype(np.float32)
    result.arrays["log_likelihood"] = log_likelihood[:, None].astype(np.float32)
    return result, (body + cam[:, None]).astype(np.float32)


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

    from mega_runtime.commands.cli import main

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
    from mega_runtime.commands.cli import main

    argv = ["infer", str(tmp_path), "--checkpoint-dir", str(small_checkpoints), "--out", str(tmp_path / "o")]
    (tmp_path / "a.avi").write_bytes(b"")
    with pytest.raises(SystemExit) as stopped:  # refused while the arguments are parsed, before any work
        main([*argv, "--smooth", "--one-euro-min-cutoff", "0"])
    assert stopped.value.code == 2
    assert "--one-euro-min-cutoff: 0 is out of range; use a finite number more than 0" in capsys.readouterr().err


def test_ok_lag_is_the_shift_that_best_aligns_the_estimate_with_the_truth():
    from mega_runtime.pipeline.clip_eval import lag_frames

    t = np.arange(60, dtype=np.float64)
    truth = np.stack([np.sin(t / 5), np.cos(t / 7), t / 10], axis=-1)[:, None]  # (F, 1, 3)
    assert lag_frames(truth, truth) == pytest.approx(0.0, abs=0.01)
    behind = np.concatenate([truth[:2], truth[:-2]])  # two frames late
    assert lag_frames(behind, truth) == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize(
    "scenario",
    [
        {"fps": 30.0, "num_frames": 90},  # near the camera
        {"fps": 10.0, "num_frames": 40, "depth_noise": 0.25, "lateral_noise": 0.02, "limb_noise": 0.03},  # far, ::3
    ],
    ids=["near-30fps", "far-10fps"],
)
def test_ok_the_default_smoothing_cuts_jitter_three_times_on_a_noisy_walk_without_lag(scenario):
    """The defaults (defaults.py, chosen with benchmarks/bench_temporal_defaults.py; docs/video.md) on a seeded
    noisy walking clip: jitter (mean vertex acceleration) at least 3× lower than hypothesis 0's, lag (the best
    aligning shift against the truth) at most 2 frames — also forward-only — and closer to the truth."""
    from mega_runtime.pipeline.clip_eval import evaluate_temporal, noisy_walk

    clip = noisy_walk(seed=0, **scenario)
    metrics = evaluate_temporal(clip, TemporalConfig())
    assert TemporalConfig().smooth  # smoothing is on by default
    assert metrics.reduction >= 3.0
    assert abs(metrics.lag) <= 2.0
    assert metrics.error_mm < metrics.error_raw_mm
    forward = evaluate_temporal(clip, TemporalConfig(one_euro=OneEuroConfig(two_sided=False)))
    assert forward.reduction >= 3.0 and forward.lag <= 2.0
