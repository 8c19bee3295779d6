"""The loss terms of the three MEGA trainers (formulas of the official code, written anew).

All take and return torch tensors; scalars are 0-dim float tensors in the inputs' dtype. Meshes are (B, V, 3)
in metres; 2D keypoints use the official crop normalisation (see :mod:`mega_runtime.train.batch`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
"""Order of the 17 H36M-regressed joints that matches the 17 COCO/H36M ground-truth keypoints (official)."""

COMMITMENT_COST = 0.25
"""Weight of the Mesh-VQ-VAE commitment term (official ``commitment_cost``)."""


def mean_vertex_distance(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Mesh-VQ-VAE reconstruction term: mean Euclidean distance per vertex after centring ``pred``.

    target, pred: (B, V, 3). Only the prediction is centred (official ``v2v``), so the data should be centred.
    """
    centred = pred - torch.mean(pred, dim=1, keepdim=True)
    return torch.norm(target - centred, dim=-1).mean()


def commitment_loss(latent: torch.Tensor, quantized: torch.Tensor, cost: float = COMMITMENT_COST) -> torch.Tensor:
    """``cost · mse(quantized.detach(), latent)``: pulls the encoder towards its codes (the codebook moves by EMA)."""
    return cost * F.mse_loss(quantized.detach(), latent)


def perplexity(one_hot: torch.Tensor) -> torch.Tensor:
    """Codebook usage ``exp(−Σ p log(p + 1e-10))`` of a (N, K) one-hot code matrix (p: mean over N)."""
    avg = torch.mean(one_hot, dim=0)
    return torch.exp(-torch.sum(avg * torch.log(avg + 1e-10)))


def masked_token_ce(logits: torch.Tensor, targets: torch.Tensor, in_loss: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the selected positions.

    logits: (B, S, K); targets: (B, S) int64; in_loss: (B, S) bool. NaN when nothing is selected (as officially).
    """
    keep = in_loss.flatten()
    return F.cross_entropy(logits.flatten(0, 1)[keep], targets.flatten()[keep].long())


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle (radians) → (..., 3, 3) rotation matrices, through the unit quaternion.

    q = (cos(θ/2), sin(θ/2)/θ · v) with the series ½ − θ²/48 for sin(θ/2)/θ when θ < 1e-6 (pytorch3d's
    formulation, which the official trainer uses).
    """
    angle = torch.norm(axis_angle, p=2, dim=-1, keepdim=True)
    half = angle * 0.5
    small = angle.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    sin_half_over = torch.where(small, 0.5 - (angle * angle) / 48, torch.sin(half) / safe)
    quat = torch.cat([torch.cos(half), axis_angle * sin_half_over], dim=-1)
    r, i, j, k = torch.unbind(quat, -1)
    two_s = 2.0 / (quat * quat).sum(-1)
    rows = (
        1 - two_s * (j * j + k * k),
        two_s * (i * j - k * r),
        two_s * (i * k + j * r),
        two_s * (i * j + k * r),
        1 - two_s * (i * i + k * k),
        two_s * (j * k - i * r),
        two_s * (i * k - j * r),
        two_s * (j * k + i * r),
        1 - two_s * (i * i + j * j),
    )
    return torch.stack(rows, -1).reshape((*quat.shape[:-1], 3, 3))


def rotation_loss(pred_rotmat: torch.Tensor, target_axis_angle: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted (B, 3, 3) rotation matrices and the ground truth's (B, 3) axis-angle."""
    return F.mse_loss(pred_rotmat, axis_angle_to_matrix(target_axis_angle))


def weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) points and (B, 3) cameras (s, tx, ty) → (B, N, 2) ``s · (xy + t)``."""
    cam = cam.view(-1, 1, 3)
    return cam[:, :, :1] * (points[:, :, :2] + cam[:, :, 1:])


def _regress(regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    return torch.matmul(regressor[None].expand(vertices.shape[0], -1, -1).to(vertices), vertices)


def reprojection_loss_3dpw(
    keypoints: torch.Tensor, vertices: torch.Tensor, cam: torch.Tensor, regressor: torch.Tensor
) -> torch.Tensor:
    """3DPW branch: mean L1 between the projected (24, 6890)-regressed joints and the (B, 24, ≥2) keypoints'
    x, y (confidence ignored, official)."""
    return F.l1_loss(weak_perspective(_regress(regressor, vertices), cam), keypoints[:, :, :2])


def reprojection_loss_confidence(
    keypoints: torch.Tensor, vertices: torch.Tensor, cam: torch.Tensor, regressor: torch.Tensor
) -> torch.Tensor:
    """COCO/H36M branch: the (17, 6890) H36M regressor's joints in :data:`H36M_TO_J17` order, projected; per joint
    the mean L1 over x, y times the keypoint confidence (column 2 of (B, 17, 3)), then the mean over B × 17."""
    joints = _regress(regressor, vertices)[:, list(H36M_TO_J17)]
    per_joint = F.l1_loss(weak_perspective(joints, cam), keypoints[:, :, :2], reduction="none").mean(dim=-1)
    return (per_joint * keypoints[:, :, -1]).mean()
