"""Scheduled random masking of token rows (VQMAE pre-training and CVQMAE fine-tuning).

One draw per step: a time ``t`` ~ U[0, 1) shared by the batch, the masked fraction ``cos(π t / 2)``, and one
random permutation per row. The encoder keeps ``remain = int(S · (1 − ratio))`` tokens: positions
``perm[:remain]``, in that order. The cross-entropy is taken on the hidden positions.

Official quirk (``official`` mode): the decoder's loss mask counts the cls token, so a position is in the loss
only when its rank in ``perm`` is ``≥ remain + 1``; the first hidden token never contributes, and with
``remain = S − 1`` no position does (the CE is NaN and the official loop skips the step). ``default`` mode uses
every hidden position (rank ``≥ remain``).

The random decisions are a :class:`MaskDraw`, so they can be drawn from a ``torch.Generator`` or injected (the
verify command replays the recorded official ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mega_runtime.errors import TrainingError

MODES = ("official", "default")
"""``official`` reproduces every quirk of the released trainers; ``default`` fixes the clear bugs (docs/training.md)."""


def check_mode(mode: str) -> str:
    """Return ``mode`` or raise :class:`TrainingError` if it is not one of :data:`MODES`."""
    if mode not in MODES:
        raise TrainingError(f"unknown training mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class MaskDraw:
    """The random decisions of one masking step.

    ``t``: the float32 time draw in [0, 1) (official ``torch.rand(1)``).
    ``perm``: (B, S) int64, row b's permutation of 0..S−1; the encoder sees ``perm[b, :remain]`` in that order.
    """

    t: float
    perm: torch.Tensor

    def __post_init__(self) -> None:
        if not 0.0 <= self.t <= 1.0:
            raise TrainingError(f"mask time t must lie in [0, 1], got {self.t}")
        if self.perm.dim() != 2 or self.perm.dtype != torch.int64:
            raise TrainingError(f"mask permutations must be a (B, S) int64 tensor, got {tuple(self.perm.shape)}")
        expected = torch.arange(self.perm.shape[1], device=self.perm.device).expand_as(self.perm)
        if not torch.equal(self.perm.sort(dim=1).values, expected):
            raise TrainingError("every mask permutation row must hold each position 0..S-1 exactly once")

    @property
    def ratio(self) -> float:
        """The masked fraction ``cos(π t / 2)``, computed in float32 as the official code does."""
        return float(mask_ratio(self.t))

    @property
    def remain(self) -> int:
        """Tokens the encoder keeps: ``int(S · (1 − ratio))`` in float32 arithmetic."""
        return remain_count(self.t, int(self.perm.shape[1]))

    def visible_order(self) -> torch.Tensor:
        """(B, remain) int64 positions the encoder sees, in encoder order."""
        return self.perm[:, : self.remain]

    def loss_mask(self, mode: str) -> torch.Tensor:
        """(B, S) bool: the positions in the cross-entropy (see the module docstring for the official quirk)."""
        rank = torch.argsort(self.perm, dim=1)
        return rank >= self.remain + (1 if check_mode(mode) == "official" else 0)


def mask_ratio(t: float) -> torch.Tensor:
    """(1,) float32 ``cos(t · π · 0.5)`` with ``t`` as a float32 tensor (the official expression)."""
    return torch.cos(torch.tensor([t], dtype=torch.float32) * math.pi * 0.5)


def remain_count(t: float, seq_length: int) -> int:
    """``int(S · (1 − ratio))`` evaluated on the float32 tensor, as officially (so rounding matches)."""
    return int(seq_length * (1 - mask_ratio(t)))


def draw_mask(batch: int, seq_length: int, generator: torch.Generator) -> MaskDraw:
    """Fresh decisions from ``generator``: ``t`` uniform in [0, 1) (float32) and one permutation per row."""
    t = float(torch.rand(1, generator=generator, dtype=torch.float32))
    perm = torch.stack([torch.randperm(seq_length, generator=generator) for _ in range(batch)])
    return MaskDraw(t=t, perm=perm)
