"""Mesh-VQ-VAE training: mean per-vertex distance + 0.25 · commitment, codebook by EMA (decay 0.99), Adam 5e-5.

The step runs the same :class:`~mega_runtime.models.mesh_vqvae.MeshVQVAE` inference uses. Within one step the
codes, the commitment term and the decoded mesh use the codebook as it was *before* the step; the EMA update
(inside the official training forward) is applied right after the codes are found, before the backward pass.
The codebook and its EMA statistics never receive gradients (the quantised latent enters the loss only
detached, through the straight-through estimator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mega_runtime.errors import TrainingError
from mega_runtime.models.graph_conv import GRAPH_PATHS
from mega_runtime.models.mesh_vqvae import MeshVQVAE
from mega_runtime.train.batch import MeshBatch
from mega_runtime.train.losses import COMMITMENT_COST, commitment_loss, mean_vertex_distance, perplexity
from mega_runtime.train.masking import check_mode
from mega_runtime.train.optim import StepResult, global_grad_norm, plain_backward

EMA_STATE = ("vq_vae._embedding.weight", "vq_vae._ema_w")
"""Codebook tensors updated by the moving average, never by the optimiser."""


@dataclass(frozen=True)
class MeshVQVAEConfig:
    """Settings of the Mesh-VQ-VAE trainer (official ``config_medium``: Adam 5e-5, no decay, no schedule).

    ``graph_path``: how the graph layers run while training. ``gather`` by default: PyTorch's backward through
    sparse CSR values is about 7× slower on the CPU (8.5 s against 1.2 s for 16 meshes, docs/training.md).
    """

    lr: float = 5e-5
    commitment_cost: float = COMMITMENT_COST
    decay: float = 0.99
    epsilon: float = 1e-5
    mode: str = "official"
    graph_path: str = "gather"

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.graph_path not in GRAPH_PATHS:
            raise TrainingError(f"unknown graph path {self.graph_path!r}", hint=f"use one of {', '.join(GRAPH_PATHS)}")
        if self.lr <= 0 or not 0.0 <= self.decay < 1.0 or self.epsilon <= 0:
            raise TrainingError(
                f"bad Mesh-VQ-VAE settings: lr {self.lr}, decay {self.decay}, epsilon {self.epsilon}",
                hint="lr > 0, 0 <= decay < 1, epsilon > 0",
            )


class MeshVQVAETrainer:
    """Trains a :class:`MeshVQVAE` one step at a time.

    ``official`` mode: Adam over every parameter (the EMA tensors included, as officially; they never get a
    gradient so Adam leaves them alone); only the prediction is centred in the distance term.
    ``default`` mode: the EMA tensors are not given to the optimiser, and the target is centred too, so
    uncentred data trains the same as centred data (docs/training.md).
    """

    def __init__(self, model: MeshVQVAE, config: MeshVQVAEConfig) -> None:
        self.model = model
        self.config = config
        model.graph_path = config.graph_path
        ema = {id(p) for name, p in model.named_parameters() if name in EMA_STATE}
        params = [p for p in model.parameters() if config.mode == "official" or id(p) not in ema]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, amsgrad=False)
        self.loss_backward: Callable[[torch.Tensor], None] = plain_backward
        """How the step back-propagates its loss (default ``loss.backward()``)."""

    def step(self, batch: MeshBatch) -> StepResult:
        """One update on ``batch`` (B meshes): losses ``loss_v2v``, ``loss_vq``, ``loss_total``, ``perplexity``."""
        model, cfg = self.model, self.config
        model.train()
        self.optimizer.zero_grad()
        meshes = batch.meshes.to(next(model.parameters()).device)
        latent = model.encoder_latent(meshes)
        vq = model.vq_vae
        with torch.no_grad():
            indices, one_hot, quantized = vq.assign(latent)
            vq.ema_update(latent.reshape(-1, latent.shape[-1]), one_hot, cfg.decay, cfg.epsilon)
        loss_vq = commitment_loss(latent, quantized, cfg.commitment_cost)
        straight = latent + (quantized - latent).detach()
        recon = model.decode_latent(straight)
        target = meshes if cfg.mode == "official" else meshes - meshes.mean(dim=1, keepdim=True)
        loss_v2v = mean_vertex_distance(target, recon)
        loss = loss_v2v + loss_vq
        self.loss_backward(loss)
        norm = global_grad_norm(model.parameters())
        self.optimizer.step()
        losses = {
            "loss_v2v": float(loss_v2v.detach()),
            "loss_vq": float(loss_vq.detach()),
            "loss_total": float(loss.detach()),
            "perplexity": float(perplexity(one_hot)),
        }
        outputs = {"indices": indices, "latent": latent.detach(), "recon": recon.detach()}
        return StepResult(losses, norm, False, outputs)
