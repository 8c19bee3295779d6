"""Synthetic video meshes that move like bodies, for the compact-format tests and benchmark (numpy only).

A rest body (the SMPL template when ``template`` is given, else a procedural cloud of 6890 points on capsules) is
bent by smooth, blended rotations about J "joints" — linear blend skinning with Gaussian weights. The joint angles
follow slow sinusoids over the frames (the motion); each hypothesis h ≥ 1 adds random bends of a few joints (the
uncertain limbs, ~10°). Every frame has a global rotation and translation, as MEGA's results do.
"""

from __future__ import annotations

import numpy as np

NUM_VERTICES = 6890
NUM_JOINTS = 12


def procedural_body(rng: np.random.Generator) -> np.ndarray:
    """(6890, 3) float32 metres: points on a torso, head and four limbs, roughly 1.7 m tall (y up)."""
    parts = [  # (centre start, centre end, radius)
        ((0.0, 0.0, 0.0), (0.0, 0.55, 0.0), 0.15),
        ((0.0, 0.6, 0.0), (0.0, 0.8, 0.0), 0.1),
        ((-0.2, 0.5, 0.0), (-0.75, 0.5, 0.0), 0.05),
        ((0.2, 0.5, 0.0), (0.75, 0.5, 0.0), 0.05),
        ((-0.1, 0.0, 0.0), (-0.12, -0.9, 0.0), 0.07),
        ((0.1, 0.0, 0.0), (0.12, -0.9, 0.0), 0.07),
    ]
    counts = np.full(len(parts), NUM_VERTICES // len(parts))
    counts[0] += NUM_VERTICES - counts.sum()
    points = []
    for (a, b, r), n in zip(parts, counts, strict=True):
        t = np.sort(rng.random(n))
        angle = rng.random(n) * 2 * np.pi
        axis = np.asarray(b) - np.asarray(a)
        ortho = np.cross(axis, [0.0, 0.0, 1.0])
        ortho = ortho / (np.linalg.norm(ortho) + 1e-9)
        third = np.cross(axis / np.linalg.norm(axis), ortho)
        ring = r * (np.cos(angle)[:, None] * ortho + np.sin(angle)[:, None] * third)
        points.append(np.asarray(a) + t[:, None] * axis + ring)
    return np.concatenate(points).astype(np.float32)


def _rotations(angles: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3) rotation matrices (Rodrigues)."""
    theta = np.linalg.norm(angles, axis=-1, keepdims=True)
    axis = angles / np.maximum(theta, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*angles.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def make_video(
    frames: int, people: int, hypotheses: int, seed: int = 0, template: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``vertices`` (F, P, H, V, 3), ``rotation`` (F, P, 3, 3), ``cam_t`` (F, P, H, 3) float32 metres, and
    ``smoothed_vertices`` (F, P, V, 3) / ``smoothed_cam_t`` (F, P, 3): hypothesis 0 averaged over 3 frames."""
    rng = np.random.default_rng(seed)
    vertices = np.zeros((frames, people, hypotheses, NUM_VERTICES, 3), np.float32)
    rotation = np.zeros((frames, people, 3, 3), np.float32)
    cam_t = np.zeros((frames, people, hypotheses, 3), np.float32)
    time = np.arange(frames)[:, None, None] / 30.0
    for p in range(people):
        rest = (template if template is not None else procedural_body(rng)).astype(np.float64)
        rest = rest * rng.uniform(0.9, 1.1)
        centres = rest[rng.choice(NUM_VERTICES, NUM_JOINTS, replace=False)]
        dist2 = ((rest[:, None, :] - centres[None]) ** 2).sum(-1)
        weights = np.exp(-dist2 / (2 * 0.12**2))
        weights = weights / (weights.sum(1, keepdims=True) + 0.3)  # (V, J); the rest stays with the root
        amplitude = rng.uniform(0.1, 0.6, (1, NUM_JOINTS, 3))
        freq = rng.uniform(0.2, 1.5, (1, NUM_JOINTS, 3))
        phase = rng.uniform(0, 2 * np.pi, (1, NUM_JOINTS, 3))
        motion = amplitude * np.sin(2 * np.pi * freq * time + phase)  # (F, J, 3)
        for h in range(hypotheses):
            angles = motion.copy()
            if h:
                uncertain = rng.choice(NUM_JOINTS, 3, replace=False)
                angles[:, uncertain] += rng.normal(0, 0.17, (frames, 3, 3))
            rots = _rotations(angles)  # (F, J, 3, 3)
            posed = np.repeat(rest[None], frames, axis=0)
            for j in range(NUM_JOINTS):  # blend of the rest body turned about each joint
                turned = (rest - centres[j]) @ np.swapaxes(rots[:, j], 1, 2) + centres[j]  # (F, V, 3)
                posed += weights[None, :, j, None] * (turned - rest[None])
            vertices[:, p, h] = posed
        global_angles = np.stack([np.full(frames, np.pi), 0.3 * np.sin(time[:, 0, 0] * 0.7 + p), np.zeros(frames)], -1)
        rotation[:, p] = _rotations(global_angles)
        trans = np.stack([0.4 * p - 0.2 + 0.1 * np.sin(time[:, 0, 0]), 0.2 + 0 * time[:, 0, 0], 5.0 + 0.5 * p + 0.2
                          * np.cos(time[:, 0, 0])], -1)  # fmt: skip
        cam_t[:, p] = trans[:, None, :]
    vertices = (np.einsum("fpab,fphvb->fphva", rotation, vertices) + cam_t[:, :, :, None, :]).astype(np.float32)
    canonical = vertices[:, :, 0] - cam_t[:, :, 0, None, :]
    padded = np.concatenate([canonical[:1], canonical, canonical[-1:]])
    smoothed_cam_t = cam_t[:, :, 0].copy()
    smoothed = ((padded[:-2] + padded[1:-1] + padded[2:]) / 3 + smoothed_cam_t[:, :, None, :]).astype(np.float32)
    return {
        "vertices": vertices,
        "rotation": rotation,
        "cam_t": cam_t,
        "smoothed_vertices": smoothed,
        "smoothed_cam_t": smoothed_cam_t,
    }
