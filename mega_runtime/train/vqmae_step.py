"""VQMAE pre-training: masked-token cross-entropy on token rows, AdamW (0.9, 0.95) with weight decay 0.05."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mega_runtime.models.masked_transformer import VQMAE
from mega_runtime.train.batch import TokenBatch
from mega_runtime.train.losses import masked_token_ce
from mega_runtime.train.masking import MaskDraw, draw_mask
from mega_runtime.train.optim import OptimConfig, StepResult, fill_missing_grads, global_grad_norm, plain_backward
from mega_runtime.train.schedule import make_scheduler, scaled_lr


class VQMAETrainer:
    """Trains a :class:`VQMAE` (the module inference uses) one step at a time.

    Args:
        model: the VQMAE, e.g. from ``weights.loaders.load_vqmae``; it is put in training mode.
        config: optimiser settings (official: lr 1e-3 scaled by batch/256, wd 0.05, warm-up 20 of 500 epochs).
        generator: source of the masking decisions when a step is not given them.
    """

    def __init__(self, model: VQMAE, config: OptimConfig, generator: torch.Generator | None = None) -> None:
        self.model = model
        self.config = config
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=scaled_lr(config.lr, config.batch),
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
        self.scheduler = make_scheduler(self.optimizer, config.warmup_epoch, config.total_epoch)
        self.loss_backward: Callable[[torch.Tensor], None] = plain_backward
        """How the step back-propagates its loss (default ``loss.backward()``)."""

    def step(self, batch: TokenBatch, draw: MaskDraw | None = None) -> StepResult:
        """One update on ``batch``; ``draw`` injects the masking decisions (else drawn from the generator).

        A batch whose loss mask is empty gives a NaN loss and is skipped, as in the official loop.
        """
        model = self.model
        model.train()
        self.optimizer.zero_grad()
        tokens = batch.tokens.to(next(model.parameters()).device)
        if draw is None:
            draw = draw_mask(batch.size, model.seq_length, self.generator)
        in_loss = draw.loss_mask(self.config.mode).to(tokens.device)
        logits = model.logits(tokens, draw.visible_order().to(tokens.device), None)
        loss = masked_token_ce(logits, tokens, in_loss)
        outputs = {"logits": logits.detach(), "loss_mask": in_loss}
        if torch.isnan(loss):
            return StepResult({"loss_ce": float("nan"), "loss_total": float("nan")}, float("nan"), True, outputs)
        self.loss_backward(loss)
        fill_missing_grads(model.parameters())
        norm = global_grad_norm(model.parameters())
        self.optimizer.step()
        value = float(loss.detach())
        return StepResult({"loss_ce": value, "loss_total": value}, norm, False, outputs)

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule (once per epoch, as officially)."""
        self.scheduler.step()
