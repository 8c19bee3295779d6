"""A synthetic, licence-free data source (``--synthetic N``): every training stage can run end to end without
motion-capture or image datasets.

Item ``i`` of a source with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])`` alone, so it is the
same whatever the batch size, the order or the process that reads it; the order of an epoch comes from the
generator the caller passes. Per item:

* a **canonical mesh** (6890, 3) metres: MEGA's template (``template.ply`` from the assets folder, found as the
  rest of the runtime finds it) bent at the waist (forward/back and sideways, up to ±0.35 rad) and twisted about
  the vertical axis (±0.5 rad), both blended smoothly over 20 cm, plus smooth random offsets (a sum of 6 random
  sinusoidal fields, about 1 cm), centred on its vertex mean — the same kind of meshes as the training fixtures;
* a **root rotation** (3,) axis-angle in the camera frame (x right, y down, z forward): the body stood upright
  (half a turn about x), then turned about the vertical axis (±π) and tilted (±0.3 rad); the posed mesh is
  ``R · canonical``;
* a **weak-perspective camera** (s ∈ [0.7, 1.0], t ∈ ±0.1) and a 224×224 **image** in which the posed mesh's
  vertices are drawn (a body-shaped, depth-shaded point silhouette on seeded noise): images a model can learn
  something from, unlike pure noise;
* **2D keypoints**: the 17 joints of :func:`synthetic_joint_regressor` in the official ``H36M_TO_J17`` order
  (as the 2D loss orders the regressed joints), projected with that camera, confidence 1 (normalised crop
  coordinates, as the official loader makes them);
* **tokens** (54,) from the tokenizer the caller passes (the frozen Mesh-VQ-VAE's ``encode``), else drawn
  uniformly from the item's generator (documented, so pre-training can run without a tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mega_runtime.constants import CODEBOOK_SIZE, NUM_TOKENS, NUM_VERTICES
from mega_runtime.errors import MegaError
from mega_runtime.train.data import CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD

H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
"""The official reorder of 17 H36M-regressed joints to the 17 COCO/H36M keypoints (the 2D loss applies it to the
regressed joints, so synthetic keypoint k is regressor row ``H36M_TO_J17[k]``)."""
SYNTHETIC_JOINTS = 17
"""Joints of the synthetic regressor: as many as the COCO/H36M branch of the 2D loss expects."""
Tokenize = Callable[[np.ndarray], np.ndarray]


class SyntheticDataError(MegaError):
    """A synthetic source was asked for something it cannot make (no items, a bad index)."""

    code = "synthetic_data_invalid"


def load_template(assets_dir: Path | str | None = None, download: bool = False) -> np.ndarray:
    """MEGA's template vertices (6890, 3) float64, centred on their mean; the folder as ``--assets-dir`` finds it
    (explicit, else ``$MEGA_ASSETS_DIR``, else the download cache)."""
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.weights.resolve import resolve_assets_dir

    folder = resolve_assets_dir(assets_dir, download=download)
    v = read_template_ply(folder / "template.ply").vertices.astype(np.float64)
    return v - v.mean(axis=0)


def synthetic_joint_regressor(template: np.ndarray, joints: int = SYNTHETIC_JOINTS) -> np.ndarray:
    """A fixed (joints, 6890) regressor for synthetic data: each joint the mean of the 12 vertices nearest an
    anchor spread over the body (farthest-point sampling from the top of the body), rows summing to 1.
    A stand-in for ``J_regressor_h36m.npy`` (licensed) so the 2D loss and the joint metrics have joints."""
    anchors = [int(np.argmax(template[:, 1]))]
    distance = np.linalg.norm(template - template[anchors[0]], axis=1)
    while len(anchors) < joints:
        anchors.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(template - template[anchors[-1]], axis=1))
    regressor = np.zeros((joints, template.shape[0]))
    for j, a in enumerate(anchors):
        near = np.argsort(np.linalg.norm(template - template[a], axis=1))[:12]
        regressor[j, near] = 1.0 / len(near)
    return regressor


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(3,) axis-angle, radians → (3, 3) rotation (Rodrigues)."""
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) rotation → (3,) axis-angle, radians, through the unit quaternion (stable near 0 and π)."""
    m = matrix
    trace = float(np.trace(m))
    candidates = [1.0 + trace, 1.0 + 2 * m[0, 0] - trace, 1.0 + 2 * m[1, 1] - trace, 1.0 + 2 * m[2, 2] - trace]
    k = int(np.argmax(candidates))
    r = np.sqrt(max(candidates[k], 1e-12))
    if k == 0:
        q = np.array([r, (m[2, 1] - m[1, 2]) / r, (m[0, 2] - m[2, 0]) / r, (m[1, 0] - m[0, 1]) / r]) / 2
    elif k == 1:
        q = np.array([(m[2, 1] - m[1, 2]) / r, r, (m[0, 1] + m[1, 0]) / r, (m[0, 2] + m[2, 0]) / r]) / 2
    elif k == 2:
        q = np.array([(m[0, 2] - m[2, 0]) / r, (m[0, 1] + m[1, 0]) / r, r, (m[1, 2] + m[2, 1]) / r]) / 2
    else:
        q = np.array([(m[1, 0] - m[0, 1]) / r, (m[0, 2] + m[2, 0]) / r, (m[1, 2] + m[2, 1]) / r, r]) / 2
    q = q if q[0] >= 0 else -q
    sin_half = float(np.linalg.norm(q[1:]))
    if sin_half < 1e-12:
        return np.zeros(3)
    return 2.0 * np.arctan2(sin_half, q[0]) * q[1:] / sin_half


UPRIGHT = np.diag([1.0, -1.0, -1.0])
"""Half a turn about x: the body model's y-up frame → the camera's y-down frame (a person standing upright)."""


def _blend(y: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip((y - centre) / width + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class SyntheticItem:
    """One synthetic sample (units and frames as in the module docstring)."""

    canonical: np.ndarray = field(repr=False)
    rotation: np.ndarray
    posed: np.ndarray = field(repr=False)
    cam: np.ndarray
    image_u8: np.ndarray = field(repr=False)
    keypoints: np.ndarray = field(repr=False)


class SyntheticSource:
    """``count`` synthetic items from ``seed`` (see the module docstring); ``template`` (6890, 3) centred metres
    (:func:`load_template`), ``tokenize`` optional (B, 6890, 3) → (B, 54) tokens."""

    def __init__(self, count: int, seed: int, template: np.ndarray, tokenize: Tokenize | None = None) -> None:
        if count < 1:
            raise SyntheticDataError(f"--synthetic needs at least 1 item, got {count}", hint="e.g. --synthetic 64")
        if template.shape != (NUM_VERTICES, 3):
            raise SyntheticDataError(f"template has shape {template.shape}, expected ({NUM_VERTICES}, 3)")
        self.count, self.seed, self.tokenize = count, seed, tokenize
        self.template = template - template.mean(axis=0)
        self.regressor = synthetic_joint_regressor(self.template)

    def __len__(self) -> int:
        return self.count

    def canonical_mesh(self, rng: np.random.Generator) -> np.ndarray:
        v = self.template.copy()
        waist = float(np.percentile(v[:, 1], 45))
        up = _blend(v[:, 1], waist, 0.2)[:, None]
        pivot = np.array([0.0, waist, 0.0])
        bend = axis_angle_to_matrix(np.array([rng.uniform(-0.35, 0.35), 0.0, rng.uniform(-0.2, 0.2)]))
        twist = axis_angle_to_matrix(np.array([0.0, rng.uniform(-0.5, 0.5), 0.0]))
        moved = (v - pivot) @ (twist @ bend).T + pivot
        v = (1.0 - up) * v + up * moved
        for _ in range(6):
            frequency = rng.normal(scale=4.0, size=3)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            v += 0.01 * np.sin(v @ frequency + rng.uniform(0.0, 2 * np.pi))[:, None] * direction
        return v - v.mean(axis=0)

    def item(self, index: int) -> SyntheticItem:
        """Item ``index`` (0 ≤ index < count), the same on every call."""
        if not 0 <= index < self.count:
            raise SyntheticDataError(f"synthetic item {index} is outside 0..{self.count - 1}")
        rng = np.random.default_rng([self.seed, index])
        canonical = self.canonical_mesh(rng)
        turn = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-np.pi, np.pi), rng.uniform(-0.3, 0.3)])
        matrix = axis_angle_to_matrix(turn) @ UPRIGHT
        rotation = matrix_to_axis_angle(matrix)
        posed = canonical @ matrix.T
        cam = np.array([rng.uniform(0.7, 1.0), rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)])
        image = rng.integers(0, 64, size=(CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
        xy = cam[0] * (posed[:, :2] + cam[1:])  # [-1, 1] crop units, y down as the camera frame
        px = np.clip(np.round((xy + 1.0) * CROP_SIZE / 2).astype(np.int64), 0, CROP_SIZE - 1)
        depth = (posed[:, 2] - posed[:, 2].min()) / max(float(np.ptp(posed[:, 2])), 1e-9)
        shade = (255 - 120 * depth).astype(np.uint8)
        order = np.argsort(-posed[:, 2])  # far first, near last (drawn on top)
        image[px[order, 1], px[order, 0]] = np.stack([shade[order], shade[order] // 2 + 60, 200 - shade[order] // 2], 1)
        joints = (self.regressor @ posed)[list(H36M_TO_J17)]
        keypoints = np.concatenate([cam[0] * (joints[:, :2] + cam[1:]), np.ones((len(joints), 1))], axis=1)
        return SyntheticItem(
            canonical=canonical.astype(np.float32),
            rotation=rotation.astype(np.float32),
            posed=posed.astype(np.float32),
            cam=cam.astype(np.float32),
            image_u8=image,
            keypoints=keypoints.astype(np.float32),
        )

    def tokens(self, indices: list[int], canonical: np.ndarray) -> np.ndarray:
        """(B, 54) int64 tokens of the items: the tokenizer's, else uniform draws from each item's generator."""
        if self.tokenize is not None:
            return np.asarray(self.tokenize(canonical), dtype=np.int64)
        return np.stack(
            [np.random.default_rng([self.seed, i, 1]).integers(0, CODEBOOK_SIZE, NUM_TOKENS) for i in indices]
        ).astype(np.int64)

    def order(self, generator: np.random.Generator) -> np.ndarray:
        """One epoch's item order, drawn from the caller's generator."""
        return generator.permutation(self.count)

    def _chunks(self, batch_size: int, generator: np.random.Generator, drop_last: bool) -> Iterator[list[int]]:
        if batch_size < 1:
            raise SyntheticDataError(f"batch size {batch_size} must be at least 1")
        order = self.order(generator)
        for start in range(0, self.count, batch_size):
            chunk = [int(i) for i in order[start : start + batch_size]]
            if drop_last and len(chunk) < batch_size:
                return
            yield chunk

    def mesh_batches(self, batch_size: int, generator: np.random.Generator, drop_last: bool = True) -> Iterator:
        """One epoch of :class:`~mega_runtime.train.batch.MeshBatch` (canonical meshes)."""
        import torch

        from mega_runtime.train.batch import MeshBatch

        for chunk in self._chunks(batch_size, generator, drop_last):
            yield MeshBatch(meshes=torch.from_numpy(np.stack([self.item(i).canonical for i in chunk])))

    def token_batches(self, batch_size: int, generator: np.random.Generator, drop_last: bool = True) -> Iterator:
        """One epoch of :class:`~mega_runtime.train.batch.TokenBatch`."""
        import torch

        from mega_runtime.train.batch import TokenBatch

        for chunk in self._chunks(batch_size, generator, drop_last):
            canonical = np.stack([self.item(i).canonical for i in chunk]) if self.tokenize else np.empty(0)
            yield TokenBatch(tokens=torch.from_numpy(self.tokens(chunk, canonical)))

    def image_batches(self, batch_size: int, generator: np.random.Generator, drop_last: bool = True) -> Iterator:
        """One epoch of :class:`~mega_runtime.train.batch.ImageBatch` (COCO/H36M format: 17 keypoints)."""
        import torch

        from mega_runtime.train.batch import ImageBatch

        mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.array(IMAGENET_STD, np.float32)[:, None, None]
        for chunk in self._chunks(batch_size, generator, drop_last):
            items = [self.item(i) for i in chunk]
            canonical = np.stack([it.canonical for it in items])
            images = np.stack(
                [(it.image_u8.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std for it in items]
            )
            yield ImageBatch(
                images=torch.from_numpy(images),
                gt_tokens=torch.from_numpy(self.tokens(chunk, canonical)),
                rotation=torch.from_numpy(np.stack([it.rotation for it in items])),
                keypoints=torch.from_numpy(np.stack([it.keypoints for it in items])),
                is_3dpw=torch.zeros(len(items), dtype=torch.bool),
                meshes=torch.from_numpy(np.stack([it.posed for it in items])),
            )

    def ground_truth(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """Every item's posed mesh (count, 6890, 3), centred, and names ``synthetic/000000.png``…, for evaluation."""
        return np.stack([self.item(i).posed for i in range(self.count)]), tuple(
            f"synthetic/{i:06d}.png" for i in range(self.count)
        )
