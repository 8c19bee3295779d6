"""Time for per-frame MEGA: One-Euro smoothing, a coherent hypothesis path, jitter (numpy only, no torch).

MEGA reconstructs every frame on its own. For a video result this module adds, per tracked person:

* a **coherent hypothesis path** — per frame, the hypothesis that keeps the motion smooth and likely: Viterbi over
  frames × hypotheses minimising ``Σ −w_ll·log L(f, h_f) + w_s·v(f−1→f)²``, where ``v`` is the mean speed (m/s) of
  a fixed subsample of vertices between the chosen shapes of consecutive seen frames. Gaps (frames where the
  person is not seen) cut the chain; unseen frames get hypothesis 0;
* **One-Euro smoothing** (Casiez et al., CHI 2012) of the chosen path — of the translation ``cam_t`` and of the
  body relative to it, each with its own filter — restarted after every gap (nothing is invented across gaps);
* **jitter**: the mean vertex acceleration magnitude ``‖v[f+1] − 2 v[f] + v[f−1]‖ · fps²`` in m/s² over every
  run of three consecutive seen frames, before and after.

:func:`apply_temporal` turns a :class:`~mega_runtime.result.Result` into one with the optional arrays ``path``
(int16 (F, P)), ``smoothed_vertices`` (float32 (F, P, 6890, 3)) and ``smoothed_cam_t`` (float32 (F, P, 3)) and a
``temporal`` block in its metadata (settings and jitter per person); docs/result-format.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from mega_runtime.errors import MegaError

#: Vertices used for the path's smoothness cost (every n-th of the 6890): enough to see the body move.
PATH_VERTEX_STRIDE = 23


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter parameters: ``min_cutoff`` (Hz) — lower smooths more at rest; ``beta`` (1/m) — higher
    follows fast motion with less lag; ``d_cutoff`` (Hz) — cut-off of the speed estimate."""

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(
                f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta ≥ 0; got {self.min_cutoff}, {self.d_cutoff}, "
                f"{self.beta}"
            )


@dataclass(frozen=True)
class TemporalConfig:
    """What :func:`apply_temporal` does: ``path`` is ``"zero"`` (hypothesis 0) or ``"coherent"``; ``smooth``
    switches the One-Euro filter on; ``smoothness_weight`` (nats per (m/s)²) and ``likelihood_weight`` weigh the
    path's two costs."""

    path: str = "zero"
    smooth: bool = False
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    smoothness_weight: float = 10.0
    likelihood_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.path not in ("zero", "coherent"):
            raise ValueError(f"path must be 'zero' or 'coherent', got {self.path!r}")
        if self.smoothness_weight < 0 or self.likelihood_weight < 0:
            raise ValueError("the path's weights must not be negative")


def _segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """Runs [start, stop) of consecutive True in ``valid`` (F,)."""
    padded = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def one_euro(values: np.ndarray, valid: np.ndarray, fps: float, config: OneEuroConfig) -> np.ndarray:
    """Filter ``values`` (F, …) float over frames at ``fps``; each run of seen frames is filtered on its own.

    Returns float32 of the same shape; unseen frames are copied unchanged.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    x = np.asarray(values, dtype=np.float64)
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
    return out.astype(np.float32)


def jitter(vertices: np.ndarray, valid: np.ndarray, fps: float) -> float:
    """Mean vertex acceleration magnitude (m/s²) of ``vertices`` (F, V, 3) metres over seen triplets; NaN if none."""
    v = np.asarray(vertices, dtype=np.float64)
    ok = np.asarray(valid, bool)
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
    """Viterbi over frames × hypotheses: (F, H, V', 3) metres (any vertex subsample), (F, H) log-likelihoods,
    (F,) seen → (F,) int64 hypothesis per frame (0 on unseen frames). Deterministic (ties go to the lower index).
    """
    num_frames, num_hyp = log_likelihood.shape
    path = np.zeros(num_frames, dtype=np.int64)
    unary = -likelihood_weight * np.nan_to_num(np.asarray(log_likelihood, np.float64), nan=-1e9)
    v = np.asarray(vertices, dtype=np.float64)
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


def apply_temporal(result, config: TemporalConfig, fps: float | None = None):
    """A copy of ``result`` (a video :class:`~mega_runtime.result.Result`) with the path, the smoothed chosen
    bodies (when ``config.smooth``) and a ``temporal`` metadata block. ``fps`` defaults to the source's."""
    from mega_runtime.result import Result

    fps = fps or float(result.meta.get("source", {}).get("fps") or 0.0)
    if fps <= 0:
        raise MegaError("smoothing and the coherent path need the clip's frame rate", hint="pass fps explicitly")
    arrays = dict(result.arrays)
    vertices, cam_t = arrays["vertices"], arrays["cam_t"]
    valid, log_likelihood = arrays["valid"], arrays["log_likelihood"]
    num_frames, num_people = valid.shape
    path = np.zeros((num_frames, num_people), dtype=np.int16)
    smoothed = np.zeros((num_frames, num_people, *vertices.shape[3:]), np.float32) if config.smooth else None
    smoothed_t = np.zeros((num_frames, num_people, 3), np.float32) if config.smooth else None
    people = []
    frames = np.arange(num_frames)
    for p in range(num_people):
        seen = valid[:, p]
        if config.path == "coherent":
            sub = vertices[:, p, :, ::PATH_VERTEX_STRIDE]
            path[:, p] = coherent_path(
                sub, log_likelihood[:, p], seen, fps, config.smoothness_weight, config.likelihood_weight
            )
        chosen = vertices[frames, p, path[:, p]]  # (F, V, 3)
        chosen_t = cam_t[frames, p, path[:, p]]  # (F, 3)
        entry = {
            "track_id": int(arrays["track_ids"][p]),
            "jitter_hypothesis0_m_s2": _rounded(jitter(vertices[:, p, 0], seen, fps)),
            "jitter_path_m_s2": _rounded(jitter(chosen, seen, fps)),
        }
        if config.smooth and smoothed is not None and smoothed_t is not None:
            body = chosen - chosen_t[:, None, :]
            smooth_t = one_euro(chosen_t, seen, fps, config.one_euro)
            smooth_body = one_euro(body, seen, fps, config.one_euro)
            smoothed[:, p] = np.where(seen[:, None, None], smooth_body + smooth_t[:, None, :], 0.0)
            smoothed_t[:, p] = np.where(seen[:, None], smooth_t, 0.0)
            entry["jitter_smoothed_m_s2"] = _rounded(jitter(smoothed[:, p], seen, fps))
        people.append(entry)
    arrays["path"] = path
    if smoothed is not None and smoothed_t is not None:
        arrays["smoothed_vertices"] = smoothed
        arrays["smoothed_cam_t"] = smoothed_t
    settings = asdict(config)
    meta = {**result.meta, "temporal": {**settings, "fps": fps, "people": people}}
    return Result(meta=meta, arrays=arrays)


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
