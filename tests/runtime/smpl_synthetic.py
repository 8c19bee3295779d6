"""A synthetic SMPL-format body model for tests and benchmarks (the real SMPL files are licensed, never bundled).

:func:`synthetic_smpl_arrays` builds, from a seed and nothing else, the arrays of an SMPL model file with the
official names and shapes — ``v_template`` (6890, 3), ``shapedirs`` (6890, 3, 10), ``posedirs`` (6890, 3, 207),
``J_regressor`` (24, 6890), ``weights`` (6890, 24), ``kintree_table`` (2, 24), ``f`` (13776, 3) — around a
simple but non-degenerate body: SMPL's 24-joint skeleton at roughly SMPL's rest positions (metres, y up, the body
facing +z, +x its left), one elliptic tube of vertices per bone, joints regressed from the vertex rings around
them, skinning weights from the distance to each joint's bones, smooth shape directions and local pose
corrective offsets. :func:`write_synthetic_smpl` stores them as an SMPL-style ``.pkl`` or as an ``.npz``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

NUM_VERTICES, NUM_FACES, NUM_JOINTS, NUM_BETAS = 6890, 13776, 24, 10
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
#: Approximate SMPL rest joints, metres (y up, +x the body's left, +z forward).
REST_JOINTS = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.06, -0.09, 0.0],
        [-0.06, -0.09, 0.0],
        [0.0, 0.11, -0.01],
        [0.10, -0.47, 0.0],
        [-0.10, -0.47, 0.0],
        [0.0, 0.25, 0.0],
        [0.09, -0.87, -0.03],
        [-0.09, -0.87, -0.03],
        [0.0, 0.31, 0.02],
        [0.11, -0.93, 0.09],
        [-0.11, -0.93, 0.09],
        [0.0, 0.52, -0.01],
        [0.08, 0.43, 0.0],
        [-0.08, 0.43, 0.0],
        [0.0, 0.60, 0.04],
        [0.18, 0.46, -0.01],
        [-0.18, 0.46, -0.01],
        [0.43, 0.44, -0.03],
        [-0.43, 0.44, -0.03],
        [0.68, 0.44, -0.03],
        [-0.68, 0.44, -0.03],
        [0.77, 0.43, -0.04],
        [-0.77, 0.43, -0.04],
    ]
)
#: Tube radius (metres) of the bones that leave each joint.
RADII = (0.13, 0.08, 0.08, 0.12, 0.055, 0.055, 0.13, 0.045, 0.045, 0.13, 0.035, 0.035, 0.055, 0.06, 0.06, 0.09,
         0.05, 0.05, 0.04, 0.04, 0.035, 0.035, 0.03, 0.03)  # fmt: skip
#: Leaf joints end in a short bone of their own (head top, finger tips, toes), this vector from the joint.
LEAF_ENDS = {10: (0.0, -0.02, 0.08), 11: (0.0, -0.02, 0.08), 15: (0.0, 0.18, 0.0), 22: (0.1, 0.0, 0.0),
             23: (-0.1, 0.0, 0.0)}  # fmt: skip
RING = 16  # vertices per ring


def _bones() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(owning joint, start, end) of every bone: joint → each child, leaves → their end."""
    bones = [(PARENTS[j], REST_JOINTS[PARENTS[j]], REST_JOINTS[j]) for j in range(1, NUM_JOINTS)]
    bones += [(j, REST_JOINTS[j], REST_JOINTS[j] + np.array(end)) for j, end in LEAF_ENDS.items()]
    return bones


def _tube(start: np.ndarray, end: np.ndarray, radius: float, rings: int, phase: float) -> np.ndarray:
    """(rings × RING, 3) points on an elliptic tube around the segment (flattened 0.75× along one side)."""
    axis = end - start
    length = float(np.linalg.norm(axis))
    d = axis / length
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    w = np.cross(d, u)
    t = (np.arange(rings) + 0.5) / rings
    a = 2 * np.pi * np.arange(RING) / RING + phase
    ring = radius * (np.cos(a)[:, None] * u + 0.75 * np.sin(a)[:, None] * w)
    taper = 1.0 - 0.15 * t  # a little thinner towards the child: no exact symmetry
    return (start + t[:, None, None] * axis + taper[:, None, None] * ring[None]).reshape(-1, 3)


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    axis = end - start
    t = np.clip((points - start) @ axis / (axis @ axis), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[:, None] * axis), axis=1)


def synthetic_smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of an SMPL model file (official names, shapes and dtypes: float64, kintree uint32, f uint32)."""
    rng = np.random.default_rng(seed)
    bones = _bones()
    lengths = np.array([np.linalg.norm(e - s) for _, s, e in bones])
    area = lengths * np.array([RADII[j] for j, _, _ in bones])
    rings = np.maximum(2, np.floor(area / area.sum() * NUM_VERTICES / RING)).astype(int)
    while rings.sum() * RING > NUM_VERTICES:
        rings[np.argmax(rings)] -= 1
    parts, faces, offset = [], [], 0
    for b, ((joint, start, end), n) in enumerate(zip(bones, rings, strict=True)):
        parts.append(_tube(start, end, RADII[joint], int(n), phase=0.37 * b))
        for r in range(n - 1):
            for k in range(RING):
                a, b2 = offset + r * RING + k, offset + r * RING + (k + 1) % RING
                faces += [(a, b2, a + RING), (b2, b2 + RING, a + RING)]
        offset += n * RING
    extra = NUM_VERTICES - offset  # the rest: jittered points near the pelvis and the chest
    centres = REST_JOINTS[rng.integers(0, 2, extra) * 9]
    parts.append(centres + rng.normal(scale=0.05, size=(extra, 3)))
    v = np.concatenate(parts)
    f = np.array(faces[:NUM_FACES] + [faces[i % len(faces)] for i in range(NUM_FACES - len(faces))])

    dist = np.full((NUM_VERTICES, NUM_JOINTS), np.inf)
    for joint, start, end in bones:
        dist[:, joint] = np.minimum(dist[:, joint], _segment_distance(v, start, end))
    dist -= dist.min(axis=1, keepdims=True)
    weights = np.exp(-((dist / 0.02) ** 2))
    weights[weights < 1e-3] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)

    regressor = np.zeros((NUM_JOINTS, NUM_VERTICES))
    for j in range(NUM_JOINTS):
        near = np.argsort(np.linalg.norm(v - REST_JOINTS[j], axis=1))[:24]
        regressor[j, near] = 1.0 / len(near)

    centre = v.mean(axis=0)
    shapedirs = np.zeros((NUM_VERTICES, 3, NUM_BETAS))
    shapedirs[:, :, 0] = 0.2 * (v - centre) * np.linalg.norm(v - centre, axis=1, keepdims=True)  # bulk
    shapedirs[:, 1, 1] = 0.05 * (v[:, 1] - centre[1])  # height
    shapedirs[:, 0, 2] = 0.05 * (v[:, 0] - centre[0])  # width
    shapedirs[:, 2, 3] = 0.08 * (v[:, 2] - centre[2])  # depth
    for k in range(4, NUM_BETAS):  # smooth bulges in random directions
        freq, direction = rng.normal(scale=4.0, size=3), rng.normal(size=3)
        shapedirs[:, :, k] = 0.012 * np.sin(v @ freq + rng.uniform(0, 2 * np.pi))[:, None] * direction

    posedirs = np.zeros((NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1)))
    for j in range(1, NUM_JOINTS):  # local correctives: the vertices a joint moves, its parent's too
        influence = weights[:, j] + weights[:, PARENTS[j]]
        posedirs[:, :, 9 * (j - 1) : 9 * j] = influence[:, None, None] * rng.normal(scale=0.01, size=(1, 3, 9))

    kintree = np.stack([np.array(PARENTS, dtype=np.int64) % (1 << 32), np.arange(NUM_JOINTS)]).astype(np.uint32)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": f.astype(np.uint32),
    }


def write_synthetic_smpl(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Store ``arrays`` as an SMPL-style pickle (``.pkl``, protocol 2 as the official files) or an ``.npz``."""
    path = Path(path)
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with path.open("wb") as handle:
            pickle.dump(dict(arrays), handle, protocol=2)
    return path
