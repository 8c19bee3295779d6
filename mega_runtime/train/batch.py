"""The three kinds of training batch, as frozen dataclasses of tensors.

* :class:`MeshBatch` — Mesh-VQ-VAE training: canonical body meshes.
* :class:`TokenBatch` — VQMAE pre-training: rows of mesh tokens.
* :class:`ImageBatch` — CVQMAE fine-tuning: image crops with their ground truth.

Every batch checks shapes and dtypes when it is made (a :class:`~mega_runtime.errors.TrainingError` names the
field), so a data reader fails at the reader, not deep inside a loss. Units: metres for meshes, radians for
axis-angle; 2D keypoints in normalised crop coordinates, about [-1, 1], as the official ``DatasetHMRSquare``
makes them: ``2·(trunc(t·kp) + 1)/224 − 1`` (``data.crop_keypoints``; the weak-perspective projection
``s·(xy + t)`` they are compared with lives in the same frame, and the training fixture's keypoints reach ±0.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mega_runtime.constants import CODEBOOK_SIZE, NUM_JOINTS, NUM_TOKENS, NUM_VERTICES
from mega_runtime.errors import TrainingError

COCO_H36M_KEYPOINTS = 17
"""2D keypoints per person in the COCO/H36M format (``is_3dpw`` False): regressed with the 17-joint H36M regressor."""

PW3D_KEYPOINTS = NUM_JOINTS
"""2D keypoints per person in the 3DPW format (``is_3dpw`` True): regressed with the 24-joint SMPL regressor."""


def check_tensor(name: str, value: torch.Tensor, shape: tuple[int | None, ...], dtype: torch.dtype) -> None:
    """Raise :class:`TrainingError` unless ``value`` is a tensor of ``dtype`` whose shape matches ``shape``.

    ``None`` in ``shape`` accepts any size on that axis.
    """
    if not isinstance(value, torch.Tensor):
        raise TrainingError(
            f"batch field {name!r} is a {type(value).__name__}, not a torch.Tensor",
            hint="build batches with torch tensors (torch.from_numpy for arrays)",
        )
    ok = value.dim() == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape, strict=False))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise TrainingError(
            f"batch field {name!r} has shape {tuple(value.shape)}, expected {want}",
            hint="check the data reader that produced this batch",
        )
    if value.dtype != dtype:
        raise TrainingError(
            f"batch field {name!r} is {value.dtype}, expected {dtype}", hint=f"convert it with .to({dtype})"
        )


def _check_tokens(name: str, tokens: torch.Tensor, batch: int | None) -> None:
    check_tensor(name, tokens, (batch, NUM_TOKENS), torch.int64)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= CODEBOOK_SIZE):
        raise TrainingError(
            f"batch field {name!r} holds token ids outside 0..{CODEBOOK_SIZE - 1}",
            hint="tokens are Mesh-VQ-VAE codebook indices",
        )


@dataclass(frozen=True)
class MeshBatch:
    """Meshes for one Mesh-VQ-VAE step.

    ``meshes``: (B, 6890, 3) float32, metres, SMPL topology, canonical (root rotation removed) as the official
    ``local_mesh``; the official data is centred, the loss itself is translation-free (see losses.py).
    """

    meshes: torch.Tensor

    def __post_init__(self) -> None:
        check_tensor("meshes", self.meshes, (None, NUM_VERTICES, 3), torch.float32)

    @property
    def size(self) -> int:
        """B, the number of meshes."""
        return int(self.meshes.shape[0])


@dataclass(frozen=True)
class TokenBatch:
    """Token rows for one VQMAE pre-training step.

    ``tokens``: (B, 54) int64 Mesh-VQ-VAE codebook indices in 0..511 (the official trainer makes them with the
    frozen tokenizer from canonical meshes; readers may also store them directly).
    """

    tokens: torch.Tensor

    def __post_init__(self) -> None:
        _check_tokens("tokens", self.tokens, None)

    @property
    def size(self) -> int:
        """B, the number of rows."""
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class ImageBatch:
    """Everything one CVQMAE fine-tuning step reads (the official dataset's ``img``, ``local_mesh`` tokens,
    ``rotation``, ``j2d``, ``is_3dpw``, ``mesh``).

    * ``images``: (B, 3, H, W) float32 crops, ImageNet-normalised (``(u8/255 - mean)/std``); 224×224 for the
      ResNet/HRNet models, 256×256 for ViT (its 32-column side bands are cut inside the step, as official).
    * ``gt_tokens``: (B, 54) int64 tokens of the canonical ground-truth mesh (from the frozen Mesh-VQ-VAE).
    * ``rotation``: (B, 3) float32 root (global orientation) axis-angle, radians.
    * ``keypoints``: (B, J, 3) float32 2D keypoints (normalised crop coordinates ``2·px/224 − 1``, official)
      plus a confidence column; J = 17 (COCO/H36M) when no row is 3DPW, J = 24 (SMPL joints) when every row
      is. The 3DPW branch ignores the confidence column (official).
    * ``is_3dpw``: (B,) bool, which reprojection branch each row uses. A batch is all one or all the other.
    * ``meshes``: optional (B, 6890, 3) float32 posed ground-truth meshes in metres, only for training metrics.
    """

    images: torch.Tensor
    gt_tokens: torch.Tensor
    rotation: torch.Tensor
    keypoints: torch.Tensor
    is_3dpw: torch.Tensor
    meshes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_tensor("images", self.images, (None, 3, None, None), torch.float32)
        b = int(self.images.shape[0])
        _check_tokens("gt_tokens", self.gt_tokens, b)
        check_tensor("rotation", self.rotation, (b, 3), torch.float32)
        check_tensor("is_3dpw", self.is_3dpw, (b,), torch.bool)
        n_3dpw = int(self.is_3dpw.sum())
        if 0 < n_3dpw < b:
            raise TrainingError(
                "an image batch mixes 3DPW and COCO/H36M rows",
                hint="batch 3DPW rows (24 keypoints) separately from the others (17 keypoints)",
            )
        joints = PW3D_KEYPOINTS if n_3dpw else COCO_H36M_KEYPOINTS
        check_tensor("keypoints", self.keypoints, (b, joints, 3), torch.float32)
        if self.meshes is not None:
            check_tensor("meshes", self.meshes, (b, NUM_VERTICES, 3), torch.float32)

    @property
    def size(self) -> int:
        """B, the number of crops."""
        return int(self.images.shape[0])

    @property
    def all_3dpw(self) -> bool:
        """True when the rows use the 3DPW 24-joint branch (then every row does)."""
        return bool(self.is_3dpw.any())
