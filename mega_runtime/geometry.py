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
