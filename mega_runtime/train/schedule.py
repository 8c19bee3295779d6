"""The official learning-rate rule of the two MEGA transformer trainers.

The base rate is scaled with the batch (``lr · batch / 256``) and multiplied by a per-epoch factor: linear
warm-up then a half cosine, ``min((e + 1) / (warmup + 1e-8), ½(1 + cos(π e / total)))``. The ``1e-8`` is the
official one (it makes the warm-up factor of the last warm-up epoch a hair above 1, which the cosine term caps).
The scheduler steps once per epoch, so every step of epoch ``e`` uses the factor of ``e``.
"""

from __future__ import annotations

import math

import torch

BATCH_REFERENCE = 256
"""The batch size the base learning rate is quoted for (official ``lr * batch / 256``)."""

WARMUP_EPSILON = 1e-8
"""Added to the warm-up length in the official lambda."""


def scaled_lr(base_lr: float, batch: int) -> float:
    """The optimiser's learning rate for ``batch`` rows: ``base_lr · batch / 256`` (official order of operations)."""
    return base_lr * batch / BATCH_REFERENCE


def lr_factor(epoch: int, warmup: int, total: int) -> float:
    """The LambdaLR factor of ``epoch`` (0-based): ``min((e+1)/(warmup+1e-8), ½(cos(e/total·π)+1))``."""
    return min((epoch + 1) / (warmup + WARMUP_EPSILON), 0.5 * (math.cos(epoch / total * math.pi) + 1))


def lr_at(epoch: int, base_lr: float, batch: int, warmup: int, total: int) -> float:
    """The learning rate used during ``epoch``: :func:`scaled_lr` × :func:`lr_factor` (as LambdaLR computes it)."""
    return scaled_lr(base_lr, batch) * lr_factor(epoch, warmup, total)


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` with :func:`lr_factor`; call ``step()`` once per epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda e: lr_factor(e, warmup, total))
