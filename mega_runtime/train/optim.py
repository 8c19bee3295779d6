"""What every trainer shares: the optimiser settings, the global gradient norm and the result of one step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from mega_runtime.errors import TrainingError
from mega_runtime.train.masking import check_mode


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule settings of one trainer (official values of the MEGA transformers by default).

    ``lr`` is the base rate for a batch of 256 (scaled by ``batch / 256`` for AdamW trainers); ``mode`` is
    ``official`` or ``default`` (see docs/training.md).
    """

    lr: float = 1e-3
    batch: int = 16
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_epoch: int = 20
    total_epoch: int = 500
    mode: str = "official"

    def __post_init__(self) -> None:
        check_mode(self.mode)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.lr <= 0 or self.batch < 1 or self.total_epoch < 1 or self.warmup_epoch < 0:
            raise TrainingError(
                f"bad optimiser settings: lr {self.lr}, batch {self.batch}, warmup {self.warmup_epoch}, "
                f"total {self.total_epoch}",
                hint="lr > 0, batch >= 1, total_epoch >= 1, warmup_epoch >= 0",
            )


@dataclass(frozen=True)
class StepResult:
    """What one optimisation step reports.

    ``losses``: name → float (the logged terms, e.g. ``loss_ce``, ``loss_total``).
    ``grad_norm``: global L2 norm of all gradients before the update (float64 accumulation); NaN if skipped.
    ``skipped``: True when the loss was NaN and no update was made (nothing to learn in the batch).
    ``outputs``: detached tensors of the forward pass (logits, predictions, codes) for inspection and verification.
    """

    losses: dict[str, float]
    grad_norm: float
    skipped: bool = False
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


def global_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> float:
    """sqrt(Σ g²) over every parameter that has a gradient, accumulated in float64."""
    total = 0.0
    for p in parameters:
        if p.grad is not None:
            total += float(torch.sum(p.grad.detach().double() ** 2))
    return math.sqrt(total)


def plain_backward(loss: torch.Tensor) -> None:
    """``loss.backward()``: every trainer's default ``loss_backward`` (the training loop swaps in a gradient
    scaler's for fp16)."""
    loss.backward()


def fill_missing_grads(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Give a zero gradient to every trainable parameter the backward pass did not reach.

    The official transformer trainers embed all 54 tokens before dropping the hidden ones, so every parameter
    has a gradient every step (zero where unused, e.g. the token embedding when no token is visible) and
    AdamW decays and advances its moments; here unused parameters are skipped by autograd, so this restores
    that behaviour.
    """
    for p in parameters:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
