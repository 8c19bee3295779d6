"""CVQMAE fine-tuning: token cross-entropy + rotation-matrix MSE + weak-perspective 2D reprojection L1.

The step trains the :class:`~mega_runtime.models.masked_transformer.CVQMAE` inference uses, whole (backbone
included, BatchNorm in training mode: batch statistics, running statistics updated), with AdamW over all its
parameters. The Mesh-VQ-VAE tokenizer is frozen: ground-truth tokens come with the batch and it only decodes
the predicted tokens (without gradients) so the posed mesh can be projected. The 2D term reaches the network
through the rotation and camera only. The rotation/camera head's two dropouts (p = 0.5) draw their keep masks
from the trainer's generator, or take injected ones (the verify command replays the official masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from mega_runtime.errors import TrainingError
from mega_runtime.models.geometry import rotation_6d_to_matrix
from mega_runtime.models.masked_transformer import CVQMAE
from mega_runtime.models.mesh_vqvae import MeshVQVAE
from mega_runtime.train.batch import COCO_H36M_KEYPOINTS, PW3D_KEYPOINTS, ImageBatch
from mega_runtime.train.losses import (
    masked_token_ce,
    reprojection_loss_3dpw,
    reprojection_loss_confidence,
    rotation_loss,
)
from mega_runtime.train.masking import MaskDraw, draw_mask
from mega_runtime.train.optim import OptimConfig, StepResult, fill_missing_grads, global_grad_norm, plain_backward
from mega_runtime.train.schedule import make_scheduler, scaled_lr

VIT_SIDE_CROP = 32
"""Columns cut from each side of a 256×256 crop for the ViT backbone (official ``img[:, :, :, 32:-32]``)."""

ROTCAM_DROPOUTS = (1, 3)
"""Indices of the two ``nn.Dropout`` layers in ``decoder.rotcam_head``."""


@dataclass(frozen=True)
class DropoutKeep:
    """Keep masks of the rotation/camera head's two dropouts for one step: (B, E) bool each (True = kept).

    Kept values are scaled by 1 / (1 − p) as ``nn.Dropout`` does.
    """

    first: torch.Tensor
    second: torch.Tensor


class CVQMAETrainer:
    """Fine-tunes a :class:`CVQMAE` one step at a time.

    Args:
        model: the CVQMAE (e.g. from ``weights.loaders.load_cvqmae``); trained whole.
        tokenizer: the frozen Mesh-VQ-VAE that decodes tokens to canonical meshes.
        regressor_h36m: (17, 6890) float32 H36M joint regressor (COCO/H36M rows).
        regressor_smpl: (24, 6890) float32 SMPL joint regressor (3DPW rows).
        config: optimiser settings (official: lr 1e-3 scaled by batch/256, wd 0.05, warm-up 20 of 200 epochs).
        generator: source of the masking decisions and dropout keep masks when a step is not given them.
    """

    def __init__(
        self,
        model: CVQMAE,
        tokenizer: MeshVQVAE,
        regressor_h36m: torch.Tensor,
        regressor_smpl: torch.Tensor,
        config: OptimConfig,
        generator: torch.Generator | None = None,
    ) -> None:
        if regressor_h36m.shape[0] != COCO_H36M_KEYPOINTS or regressor_smpl.shape[0] != PW3D_KEYPOINTS:
            raise TrainingError(
                f"joint regressors must be (17, V) and (24, V), got {tuple(regressor_h36m.shape)} and "
                f"{tuple(regressor_smpl.shape)}",
                hint="pass J_regressor_h36m and J_regressor_24",
            )
        self.model = model
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.regressor_h36m = regressor_h36m
        self.regressor_smpl = regressor_smpl
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

    def draw_dropout(self, batch: int) -> DropoutKeep:
        """Fresh keep masks (B, E) from the generator, keep probability 1 − p."""
        e = self.model.decoder.rot_predictor.in_features
        first, second = (torch.rand(batch, e, generator=self.generator) >= p for p in self.dropout_rates())
        return DropoutKeep(first, second)

    def dropout_rates(self) -> tuple[float, float]:
        """The drop probabilities p of the rotation/camera head's two dropouts (official 0.5 each)."""
        head = self.model.decoder.rotcam_head
        first, second = (float(cast(nn.Dropout, head[i]).p) for i in ROTCAM_DROPOUTS)
        return first, second

    def _inject(self, keep: DropoutKeep) -> list[torch.utils.hooks.RemovableHandle]:
        head = self.model.decoder.rotcam_head
        handles = []
        for index, p, mask in zip(ROTCAM_DROPOUTS, self.dropout_rates(), (keep.first, keep.second), strict=True):
            layer = head[index]
            scale = 1.0 / (1.0 - p)

            def replay(module, args, output, mask=mask, scale=scale):
                x = args[0]
                return x * mask.reshape(x.shape).to(x.dtype) * scale

            handles.append(layer.register_forward_hook(replay))
        return handles

    def step(self, batch: ImageBatch, draw: MaskDraw | None = None, keep: DropoutKeep | None = None) -> StepResult:
        """One update on ``batch``: losses ``loss_ce``, ``loss_rot``, ``loss_2d``, ``loss_total``.

        ``draw`` and ``keep`` inject the masking decisions and the dropout keep masks (else drawn from the
        generator). A NaN cross-entropy (nothing in the loss mask) is left out of the total, as officially.
        """
        model, cfg = self.model, self.config
        device = next(model.parameters()).device
        model.train()
        self.optimizer.zero_grad()
        images = batch.images.to(device)
        if model.config.backbone.type == "vit":
            images = images[:, :, :, VIT_SIDE_CROP:-VIT_SIDE_CROP]
        tokens = batch.gt_tokens.to(device)
        draw = draw if draw is not None else draw_mask(batch.size, model.seq_length, self.generator)
        keep = keep if keep is not None else self.draw_dropout(batch.size)
        handles = self._inject(keep)
        try:
            cond = model.condition(images)
        finally:
            for handle in handles:
                handle.remove()
        in_loss = draw.loss_mask(cfg.mode).to(device)
        logits = model.logits(tokens, draw.visible_order().to(device), cond)
        with torch.no_grad():
            decoded_ids = torch.where(in_loss, logits.argmax(-1), tokens)
            canonical = self.tokenizer.decode(decoded_ids)
        rotmat = rotation_6d_to_matrix(cond.rot6d)
        pred_mesh = (rotmat @ canonical.transpose(2, 1)).transpose(2, 1)
        ce = masked_token_ce(logits, tokens, in_loss)
        rot = rotation_loss(rotmat, batch.rotation.to(device))
        keypoints = batch.keypoints.to(device)
        if batch.all_3dpw:
            reproj = reprojection_loss_3dpw(keypoints, pred_mesh, cond.cam, self.regressor_smpl.to(device))
        else:
            reproj = reprojection_loss_confidence(keypoints, pred_mesh, cond.cam, self.regressor_h36m.to(device))
        loss = rot + reproj if torch.isnan(ce) else ce + rot + reproj
        self.loss_backward(loss)
        fill_missing_grads(model.parameters())
        norm = global_grad_norm(model.parameters())
        self.optimizer.step()
        losses = {
            "loss_ce": float(ce.detach()),
            "loss_rot": float(rot.detach()),
            "loss_2d": float(reproj.detach()),
            "loss_total": float(loss.detach()),
        }
        outputs = {
            "logits": logits.detach(),
            "loss_mask": in_loss,
            "rot6d": cond.rot6d.detach(),
            "cam": cond.cam.detach(),
            "decoded_ids": decoded_ids,
            "pred_mesh": pred_mesh.detach(),
        }
        return StepResult(losses, norm, False, outputs)

    def end_epoch(self) -> None:
        """Advance the learning-rate schedule (once per epoch, as officially)."""
        self.scheduler.step()
