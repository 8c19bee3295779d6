"""Time for per-frame MEGA: One-Euro smoothing, a coherent hypothesis path, jitter (numpy only, no torch).

MEGA reconstructs every frame on its own. For a video result this module adds, per tracked person:

* a **coherent hypothesis path** — per frame, the hypothesis that keeps the motion smooth and likely: Viterbi over
  frames × hypotheses minimising ``Σ −w_ll·log L(f, h_f) + w_s·v(f−1→f)²``, where ``v`` is the mean speed (m/s) of
  a fixed subsample of vertices between the chosen shapes of consecutive seen frames. Gaps (frames where the
  person is not seen) cut the chain; unseen frames get hypothesis 0;
* **One-Euro smoothing** (Casiez et al., CHI 2012) of the chosen path — of the translation ``cam_t`` and of the
  body relative to it, each with its own filter — restarted after every gap (nothing is invented across gaps).
  The whole clip is known, so by default the filter runs forwards and backwards and the two are averaged: zero
  phase, no lag behind a moving person (the classic causal filter is one setting away);
* **jitter**: the mean vertex acceleration magnitude ``‖v[f+1] − 2 v[f] + v[f−1]‖ · fps²`` in m/s² over every
  run of three consecutive seen frames, before and after.

Time: ``fps`` is always the rate of the *result's* frames — the clip's frame rate divided by the ``--frames``
step (``source.frame_step``); :func:`result_fps` works it out.

:func:`apply_temporal` turns a :class:`~mega_runtime.io.result.Result` into one with the optional arrays ``path``
(int16 (F, P)), ``smoothed_vertices`` (float32 (F, P, 6890, 3)) and ``smoothed_cam_t`` (float32 (F, P, 3)) and a
``temporal`` block in its metadata (settings and jitter per person); docs/result-format.md, docs/video.md.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mega_runtime import defaults
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

#: Vertices used for the path's smoothness cost (every n-th of the 6890, 300 of them): enough to see the body move,
#: small enough that the (H, H, 300, 3) step of one frame pair stays a few MB even for 32 hypotheses.
PATH_VERTEX_STRIDE = 23


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter parameters: ``min_cutoff`` (Hz) — lower smooths more at rest; ``beta`` (Hz per unit/s of
    speed; 1/m for positions in metres) — higher follows fast motion more closely; ``d_cutoff`` (Hz) — cut-off of
    the speed estimate; ``two_sided`` — run the filter forwards and backwards over each run of seen frames and
    average the two (offline, zero phase: a body moving at constant velocity is not lagged), or, False, only
    forwards (the classic causal filter, what a live view would use: it trails a moving body by about
    speed / (2π · cut-off), e.g. 13 cm for a person walking 1.4 m/s with the default settings)."""

    min_cutoff: float = defaults.ONE_EURO_MIN_CUTOFF_HZ
    beta: float = defaults.ONE_EURO_BETA
    d_cutoff: float = defaults.ONE_EURO_D_CUTOFF_HZ
    two_sided: bool = not defaults.ONE_EURO_CAUSAL

    def __post_init__(self) -> None:
        values = (self.min_cutoff, self.beta, self.d_cutoff)
        if not all(math.isfinite(v) for v in values) or self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(
                f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta ≥ 0; got {self.min_cutoff}, {self.d_cutoff}, "
                f"{self.beta}"
            )


@dataclass(frozen=True)
class TemporalConfig:
    """What :func:`apply_temporal` does: ``path`` is ``"zero"`` (hypothesis 0) or ``"coherent"``; ``smooth``
    switches the One-Euro filter on; ``smoothness_weight`` (nats per (m/s)²) and ``likelihood_weight`` weigh the
    path's two costs."""

    path: str = defaults.TEMPORAL_PATH
    smooth: bool = defaults.SMOOTH
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    smoothness_weight: float = defaults.PATH_SMOOTHNESS_WEIGHT
    likelihood_weight: float = defaults.PATH_LIKELIHOOD_WEIGHT

    def __post_init__(self) -> None:
        if self.path not in defaults.TEMPORAL_PATHS:
            raise ValueError(f"path must be {' or '.join(map(repr, defaults.TEMPORAL_PATHS))}, got {self.path!r}")
        weights = (self.smoothness_weight, self.likelihood_weight)
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"the path's weights must be finite and not negative, got {weights}")


def _segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """Runs [start, stop) of consecutive True in ``valid`` (F,)."""
    padded = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _check_fps(fps: float) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps}")


def _check_valid(valid: np.ndarray, num_frames: int, what: str) -> np.ndarray:
    valid = np.asarray(valid)
    if valid.shape != (num_frames,):
        raise ValueError(f"valid must be ({num_frames},) — one flag per frame of {what}; got shape {valid.shape}")
    return valid.astype(bool)


def _one_euro_forward(x: np.ndarray, valid: np.ndarray, fps: float, config: OneEuroConfig) -> np.ndarray:
    """The causal One-Euro pass over ``x`` (F, …) float64; each run of seen frames on its own; float64 out."""
    out = x.copy()
    period = 1.0 / fps

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / period)

    a_d = alpha(config.d_cutoff)
    for start, stop in _segments(valid):
        previous = x[start]
        speed = np.zeros_like(previous)
        for f in range(start + 1, stop):
            raw_speed = (x[f] - previous) * fps
            speed = speed + a_d * (raw_speed - speed)
            a = alpha(config.min_cutoff + config.beta * np.abs(speed))
            previous = previous + a * (x[f] - previous)
            out[f] = previous
    return out


def one_euro(values: np.ndarray, valid: np.ndarray, fps: float, config: OneEuroConfig) -> np.ndarray:
    """One-Euro filter of ``values`` (F, …) float over frames at ``fps`` (frames per second); ``valid`` (F,) bool.

    Every element is filtered on its own (its own speed and cut-off); each run of seen frames is filtered on its
    own — nothing crosses a gap. Causal (``config.two_sided`` False): the first frame of a run is taken as it is.
    Two-sided (default): the mean of the forward pass and of the same filter run backwards in time. Returns
    float32 of the same shape; unseen frames are copied unchanged. Units are those of ``values``.
    """
    _check_fps(fps)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("one_euro needs values shaped (F, ...) with frames first")
    valid = _check_valid(valid, x.shape[0], "values")
    out = _one_euro_forward(x, valid, fps, config)
    if config.two_sided:
        out += _one_euro_forward(x[::-1], valid[::-1], fps, config)[::-1]
        out /= 2.0
    return out.astype(np.float32)


def jitter(vertices: np.ndarray, valid: np.ndarray, fps: float) -> float:
    """Mean vertex acceleration magnitude in **m/s²** of ``vertices`` (F, V, 3) metres at ``fps`` frames per second.

    The second difference ``‖v[f+1] − 2 v[f] + v[f−1]‖ · fps²`` averaged over every vertex and every frame ``f``
    whose neighbours ``f − 1`` and ``f + 1`` are seen too (``valid`` (F,) bool); NaN when there is no such triplet.
    A body moving with constant velocity has jitter 0; one falling freely, 9.81.
    """
    _check_fps(fps)
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 3 or v.shape[-1] != 3:
        raise ValueError(f"jitter needs vertices shaped (F, V, 3), got {v.shape}")
    ok = _check_valid(valid, v.shape[0], "vertices")
    triplets = ok[:-2] & ok[1:-1] & ok[2:] if ok.size >= 3 else np.zeros(0, bool)
    if not triplets.any():
        return float("nan")
    accel = v[2:][triplets] - 2.0 * v[1:-1][triplets] + v[:-2][triplets]
    return float(np.linalg.norm(accel, axis=-1).mean() * fps * fps)


def coherent_path(
    vertices: np.ndarray,
    log_likelihood: np.ndarray,
    valid: np.ndarray,
    fps: float,
    smoothness_weight: float = 10.0,
    likelihood_weight: float = 1.0,
) -> np.ndarray:
    """The hypothesis per frame that keeps one person's motion smooth and likely (Viterbi).

    ``vertices`` (F, H, V', 3) metres — the hypotheses' vertices or any fixed subsample of them (e.g. every
    :data:`PATH_VERTEX_STRIDE`-th, or joints); ``log_likelihood`` (F, H) nats (NaN counts as impossible);
    ``valid`` (F,) bool. Minimises, over each run of seen frames,
    ``Σ_f −likelihood_weight · log_likelihood[f, h_f] + smoothness_weight · speed(f−1 → f)²`` where ``speed`` is the
    mean over the V' vertices of ``‖vertices[f, h_f] − vertices[f−1, h_{f−1}]‖ · fps`` (m/s), so
    ``smoothness_weight`` is in nats per (m/s)². With ``smoothness_weight = 0`` it is the per-frame argmax.

    Returns (F,) int64; 0 on unseen frames. Deterministic (ties go to the lower index). Cost: F · H² · V' work and
    an (H, H, V', 3) float64 array per frame pair; nothing of size F · H² · V' is held.
    """
    _check_fps(fps)
    ll = np.asarray(log_likelihood, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    if ll.ndim != 2:
        raise ValueError(f"log_likelihood must be (F, H), got shape {ll.shape}")
    num_frames, num_hyp = ll.shape
    if v.ndim != 4 or v.shape[:2] != (num_frames, num_hyp) or v.shape[-1] != 3:
        raise ValueError(f"vertices must be (F, H, V, 3) = ({num_frames}, {num_hyp}, V, 3), got shape {v.shape}")
    valid = _check_valid(valid, num_frames, "log_likelihood")
    path = np.zeros(num_frames, dtype=np.int64)
    unary = -likelihood_weight * np.nan_to_num(ll, nan=-1e9, neginf=-1e9)
    for start, stop in _segments(valid):
        cost = unary[start].copy()
        back = np.zeros((stop - start, num_hyp), dtype=np.int64)
        for f in range(start + 1, stop):
            step = v[f][None, :, :, :] - v[f - 1][:, None, :, :]  # (H_prev, H, V', 3)
            speed = np.linalg.norm(step, axis=-1).mean(axis=-1) * fps  # (H_prev, H) m/s
            total = cost[:, None] + smoothness_weight * speed**2
            back[f - start] = np.argmin(total, axis=0)
            cost = total[back[f - start], np.arange(num_hyp)] + unary[f]
        best = int(np.argmin(cost))
        for f in range(stop - 1, start - 1, -1):
            path[f] = best
            best = int(back[f - start, best])
    return path


def path_arrays(vertices: np.ndarray, cam_t: np.ndarray, path: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bodies a path chooses: ``vertices`` (F, P, H, V, 3), ``cam_t`` (F, P, H, 3), ``path`` (F, P) int →
    (chosen vertices (F, P, V, 3), chosen translation (F, P, 3)), in the inputs' dtype and units."""
    path = np.asarray(path)
    if vertices.ndim != 5 or cam_t.ndim != 4 or path.shape != vertices.shape[:2]:
        raise ValueError(
            f"expected vertices (F, P, H, V, 3), cam_t (F, P, H, 3) and path (F, P); got {vertices.shape}, "
            f"{cam_t.shape}, {path.shape}"
        )
    if path.size and (path.min() < 0 or path.max() >= vertices.shape[2]):
        raise ValueError(f"path names hypotheses outside 0…{vertices.shape[2] - 1}")
    frames, people = np.indices(path.shape)
    return vertices[frames, people, path], cam_t[frames, people, path]


def smooth_result_arrays(
    vertices: np.ndarray, cam_t: np.ndarray, valid: np.ndarray, fps: float, config: OneEuroConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One-Euro smoothing of chosen bodies: ``vertices`` (F, P, V, 3) metres (translation included), ``cam_t``
    (F, P, 3) metres, ``valid`` (F, P) bool, ``fps`` of the result's frames.

    The translation and the body relative to it (``vertices − cam_t``) are filtered separately, per person, each
    run of seen frames on its own. Returns (smoothed vertices float32 (F, P, V, 3) — translation included —,
    smoothed cam_t float32 (F, P, 3)), both zero on unseen frames.
    """
    vertices = np.asarray(vertices)
    cam_t = np.asarray(cam_t)
    valid = np.asarray(valid, dtype=bool)
    if vertices.ndim != 4 or vertices.shape[-1] != 3 or cam_t.shape != (*vertices.shape[:2], 3):
        raise ValueError(f"expected vertices (F, P, V, 3) and cam_t (F, P, 3), got {vertices.shape}, {cam_t.shape}")
    if valid.shape != vertices.shape[:2]:
        raise ValueError(f"valid must be (F, P) = {vertices.shape[:2]}, got {valid.shape}")
    smoothed = np.zeros(vertices.shape, np.float32)
    smoothed_t = np.zeros(cam_t.shape, np.float32)
    for p in range(vertices.shape[1]):
        seen = valid[:, p]
        if not seen.any():
            continue
        translation = one_euro(cam_t[:, p], seen, fps, config)
        body = one_euro(vertices[:, p] - cam_t[:, p, None, :], seen, fps, config)
        smoothed[:, p] = np.where(seen[:, None, None], body + translation[:, None, :], 0.0)
        smoothed_t[:, p] = np.where(seen[:, None], translation, 0.0)
    return smoothed, smoothed_t


def result_fps(meta: dict[str, Any]) -> float | None:
    """Frames per second of a result's frames: the source's ``fps`` over its ``frame_step`` (None if unknown)."""
    source = meta.get("source") or {}
    fps = source.get("fps")
    if not fps or not math.isfinite(float(fps)) or float(fps) <= 0:
        return None
    return float(fps) / max(int(source.get("frame_step") or 1), 1)


def apply_temporal(result, config: TemporalConfig, fps: float | None = None):
    """A copy of a video :class:`~mega_runtime.io.result.Result` with ``path`` (int16 (F, P)), when ``config.smooth``
    ``smoothed_vertices`` (float32 (F, P, 6890, 3)) and ``smoothed_cam_t`` (float32 (F, P, 3)), and a ``temporal``
    metadata block: the settings, ``fps`` and per person ``track_id`` and the jitter (m/s²) of hypothesis 0, of the
    path and (smoothing on) of the smoothed bodies. ``fps``: of the result's frames, default :func:`result_fps`.
    The input is left unchanged.
    """
    from mega_runtime.io.result import Result

    fps = fps or result_fps(result.meta)
    if fps is None or fps <= 0:
        raise MegaError(
            "smoothing and the coherent path need the clip's frame rate, and this result has none",
            hint="pass fps explicitly (a photo result has no time to smooth over)",
        )
    started = time.perf_counter()
    arrays = dict(result.arrays)
    vertices, cam_t = arrays["vertices"], arrays["cam_t"]
    valid, log_likelihood = arrays["valid"].astype(bool), arrays["log_likelihood"]
    num_frames, num_people = valid.shape
    path = np.zeros((num_frames, num_people), dtype=np.int16)
    if config.path == "coherent":
        for p in range(num_people):
            sub = vertices[:, p, :, ::PATH_VERTEX_STRIDE]
            path[:, p] = coherent_path(
                sub, log_likelihood[:, p], valid[:, p], fps, config.smoothness_weight, config.likelihood_weight
            )
    chosen, chosen_t = path_arrays(vertices, cam_t, path)
    people = []
    for p in range(num_people):
        people.append(
            {
                "track_id": int(arrays["track_ids"][p]),
                "jitter_hypothesis0_m_s2": _rounded(jitter(vertices[:, p, 0], valid[:, p], fps)),
                "jitter_path_m_s2": _rounded(jitter(chosen[:, p], valid[:, p], fps)),
            }
        )
    arrays["path"] = path
    if config.smooth:
        smoothed, smoothed_t = smooth_result_arrays(chosen, chosen_t, valid, fps, config.one_euro)
        arrays["smoothed_vertices"], arrays["smoothed_cam_t"] = smoothed, smoothed_t
        for p, entry in enumerate(people):
            entry["jitter_smoothed_m_s2"] = _rounded(jitter(smoothed[:, p], valid[:, p], fps))
    log.info(
        "temporal: path %s, smoothing %s, %d frames × %d people in %.2f s",
        config.path,
        "on" if config.smooth else "off",
        num_frames,
        num_people,
        time.perf_counter() - started,
    )
    meta = {**result.meta, "temporal": {**asdict(config), "fps": fps, "people": people}}
    return Result(meta=meta, arrays=arrays)


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
