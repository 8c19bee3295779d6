"""Mesh-recovery metrics of the MEGA paper, in numpy (float64), per sample.

Every function takes ground-truth and predicted vertices as ``(B, V, 3)`` arrays in **metres** (any float dtype;
computed in float64) and returns ``(B,)`` errors in metres (multiply by 1000 for the millimetres the paper and
the official logs report). Joints are regressed from vertices with a ``(J, V)`` regressor — the official
evaluation uses ``J_regressor_h36m.npy`` (17 × 6890, H36M joint order, pelvis = joint 0).

Two alignments:

* ``official`` — what ``mega/utils/eval.py`` (and ``mesh_vq_vae/utils/eval.py``) compute: the prediction is
  translated so that its **vertex mean** is at the origin; the ground truth is used as given (the official
  datasets centre it on its vertex mean: ``normalize=True``). MPJPE is over all J regressed joints.
* ``pelvis`` — the usual convention of the HMR literature: both meshes are translated so that their regressed
  pelvis joint (``pelvis_index``, 0 for the H36M regressor) is at the origin; then PVE and MPJPE, the latter
  usually over the 14 LSP joints (``joints=H36M_TO_J14``, the 3DPW protocol of SPIN/BEDLAM).

PA (Procrustes-aligned) errors solve the similarity transform (scale, rotation with ``det = +1``, translation)
that best maps the prediction onto the ground truth in the least-squares sense, per sample; translation is
free, so it does not depend on the alignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mega_runtime.errors import MegaError

Alignment = Literal["official", "pelvis"]
ALIGNMENTS: tuple[Alignment, ...] = ("official", "pelvis")

PELVIS_INDEX_H36M = 0
"""Row of the pelvis in ``J_regressor_h36m.npy`` (H36M order; the official reorder to "J17" puts it at 14)."""
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
"""The 14 LSP joints among the 17 H36M-regressed ones (the first 14 of the official ``H36M_TO_J17``): the joints
of the usual 3DPW protocol (pelvis-aligned MPJPE and PA-MPJPE in SPIN, BEDLAM and most HMR papers)."""


class MetricInputError(MegaError):
    """Arrays handed to a metric have the wrong shape, do not match each other, or are not finite."""

    code = "metric_input_invalid"


def _points(name: str, value: np.ndarray, batch: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise MetricInputError(
            f"{name} has shape {array.shape}, expected (B, N, 3)", hint="pass one row of vertices per sample"
        )
    if batch is not None and array.shape[0] != batch:
        raise MetricInputError(
            f"{name} holds {array.shape[0]} samples, the ground truth {batch}",
            hint="predictions and ground truth must be row-aligned (same order, same count)",
        )
    if not np.isfinite(array).all():
        raise MetricInputError(f"{name} holds NaN or infinite values", hint="check the file that produced it")
    return array


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = _points("ground truth", gt)
    p = _points("prediction", pred, g.shape[0])
    if p.shape[1] != g.shape[1]:
        raise MetricInputError(
            f"prediction has {p.shape[1]} points per sample, ground truth {g.shape[1]}",
            hint="both must use the same mesh topology (SMPL: 6890 vertices)",
        )
    return g, p


def regress_joints(vertices: np.ndarray, regressor: np.ndarray) -> np.ndarray:
    """(B, V, 3) vertices, (J, V) regressor → (B, J, 3) joints (float64)."""
    v = _points("vertices", vertices)
    r = np.asarray(regressor, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != v.shape[1]:
        raise MetricInputError(
            f"joint regressor has shape {r.shape}, expected (J, {v.shape[1]})",
            hint="use J_regressor_h36m.npy (17 × 6890), as the official evaluation does",
        )
    return np.matmul(r, v)  # (J, V) @ (B, V, 3), through BLAS


def point_error(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance between corresponding points, per sample: (B, N, 3) × 2 → (B,)."""
    g, p = _pair(gt, pred)
    return np.linalg.norm(g - p, axis=-1).mean(axis=-1)


def similarity_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` moved by the per-sample similarity transform that best fits it to ``target`` (B, N, 3).

    Orthogonal Procrustes with scale (Umeyama): centre both point sets, take the SVD of their cross-covariance,
    flip the last singular direction when needed so the rotation is proper (det +1), scale = trace / variance.
    """
    t, s = _pair(target, source)
    mu_s, mu_t = s.mean(axis=1, keepdims=True), t.mean(axis=1, keepdims=True)
    xs, xt = s - mu_s, t - mu_t
    cov = np.matmul(xt.transpose(0, 2, 1), xs)  # (B, 3, 3): target × source
    u, sigma, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d[d == 0] = 1.0
    fix = np.ones_like(sigma)
    fix[:, -1] = d
    rotation = u @ (fix[:, :, None] * vt)  # maps centred source onto centred target
    variance = (xs**2).sum(axis=(1, 2))
    scale = (sigma * fix).sum(axis=1) / np.where(variance > 0, variance, 1.0)
    return scale[:, None, None] * np.matmul(xs, rotation.transpose(0, 2, 1)) + mu_t


def _aligned(
    gt: np.ndarray, pred: np.ndarray, alignment: Alignment, regressor: np.ndarray | None, pelvis_index: int
) -> tuple[np.ndarray, np.ndarray]:
    g, p = _pair(gt, pred)
    if alignment == "official":
        return g, p - p.mean(axis=1, keepdims=True)
    if alignment == "pelvis":
        if regressor is None:
            raise MetricInputError("pelvis alignment needs a joint regressor", hint="pass J_regressor_h36m.npy")
        r = np.asarray(regressor, dtype=np.float64)
        if not 0 <= pelvis_index < r.shape[0]:
            raise MetricInputError(f"pelvis index {pelvis_index} is not a row of the {r.shape[0]}-joint regressor")
        pelvis_g = regress_joints(g, r[pelvis_index : pelvis_index + 1])
        pelvis_p = regress_joints(p, r[pelvis_index : pelvis_index + 1])
        return g - pelvis_g, p - pelvis_p
    raise MetricInputError(f"unknown alignment {alignment!r}", hint=f"use one of {', '.join(ALIGNMENTS)}")


def pve(
    gt: np.ndarray,
    pred: np.ndarray,
    alignment: Alignment = "official",
    regressor: np.ndarray | None = None,
    pelvis_index: int = PELVIS_INDEX_H36M,
) -> np.ndarray:
    """Per-vertex error (PVE, the official "v2v"/MVE), metres, per sample (B,)."""
    g, p = _aligned(gt, pred, alignment, regressor, pelvis_index)
    return point_error(g, p)


def _subset(regressor: np.ndarray, joints: Sequence[int] | None) -> np.ndarray:
    r = np.asarray(regressor, dtype=np.float64)
    if joints is None:
        return r
    if not joints or min(joints) < 0 or max(joints) >= r.shape[0]:
        raise MetricInputError(f"joint subset {list(joints)} is not a set of rows of the {r.shape[0]}-joint regressor")
    return r[list(joints)]


def mpjpe(
    gt: np.ndarray,
    pred: np.ndarray,
    regressor: np.ndarray,
    alignment: Alignment = "official",
    pelvis_index: int = PELVIS_INDEX_H36M,
    joints: Sequence[int] | None = None,
) -> np.ndarray:
    """Mean per-joint position error, metres, per sample (B,): over all regressed joints (official), or over the
    rows ``joints`` of the regressor (e.g. :data:`H36M_TO_J14`) after aligning with the full regressor's pelvis."""
    g, p = _aligned(gt, pred, alignment, regressor, pelvis_index)
    r = _subset(regressor, joints)
    return point_error(regress_joints(g, r), regress_joints(p, r))


def pa_mpjpe(
    gt: np.ndarray, pred: np.ndarray, regressor: np.ndarray, joints: Sequence[int] | None = None
) -> np.ndarray:
    """MPJPE after the best similarity transform of the predicted joints onto the true ones, metres (B,); over all
    regressed joints (official) or the rows ``joints``."""
    g, p = _pair(gt, pred)
    r = _subset(regressor, joints)
    joints_g, joints_p = regress_joints(g, r), regress_joints(p, r)
    return point_error(joints_g, similarity_align(joints_p, joints_g))


def pa_pve(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """PVE after the best similarity transform of the predicted vertices (Mesh-VQ-VAE's PA-v2v), metres (B,)."""
    g, p = _pair(gt, pred)
    return point_error(g, similarity_align(p, g))


def min_over_hypotheses(errors: np.ndarray) -> np.ndarray:
    """(N, Q) errors of Q hypotheses per sample → (N,) the smallest, taken per metric (as the official
    ``eval_stochastic``: each metric picks its own best hypothesis)."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] == 0:
        raise MetricInputError(f"errors have shape {e.shape}, expected (N, Q) with Q ≥ 1")
    return e.min(axis=1)
