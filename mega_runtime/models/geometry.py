"""Rotations and cameras of MEGA's outputs.

Frames: the canonical mesh is in the body model's frame (metres, y up, mean-centred).
The rotation R maps it into the camera-aligned frame of the training data
(OpenCV axes: x right, y down, z forward). Posed vertices are v' = R·v.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) → (..., 3, 3) rotation matrices whose rows are b1, b2, b3.

    b1 = normalise(a1), b2 = normalise(a2 − (b1·a2) b1), b3 = b1 × b2 with
    a1 = d6[..., :3], a2 = d6[..., 3:] (the pytorch3d convention used by MEGA).
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def rotate_vertices(rotation: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """v' = R·v for every vertex: rotation (B, 3, 3), vertices (B, ..., V, 3) → same shape as vertices."""
    extra = vertices.dim() - 3
    r = rotation.reshape(rotation.shape[0], *([1] * extra), 3, 3)
    return vertices @ r.transpose(-1, -2)


def cam_crop_to_full(
    cam: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor, img_size: torch.Tensor, focal_px: torch.Tensor
) -> torch.Tensor:
    """Full-image camera translation from the crop's weak-perspective camera (the official formula).

    cam: (B, 3) (s, tx, ty); box_center: (B, 2) px; box_size: (B,) px; img_size: (B, 2) (W, H) px;
    focal_px: (B,) px. Returns (B, 3) translation (tx', ty', tz) in metres in the camera frame
    (x right, y down, z forward) with the principal point at the image centre:
    bs = box_size·s + 1e-9, tz = 2f / bs, tx' = 2(cx − W/2)/bs + tx, ty' = 2(cy − H/2)/bs + ty.
    A negative s (possible with untrained weights) gives a negative depth; no clamping is applied.
    """
    bs = box_size * cam[:, 0] + 1e-9
    tz = 2 * focal_px / bs
    tx = 2 * (box_center[:, 0] - img_size[:, 0] / 2.0) / bs + cam[:, 1]
    ty = 2 * (box_center[:, 1] - img_size[:, 1] / 2.0) / bs + cam[:, 2]
    return torch.stack([tx, ty, tz], dim=-1)
