"""Mesh-VQ-VAE: 6890-vertex body meshes <-> 54 tokens from a 512-entry codebook.

Loads the official ``mesh_vqvae_54`` state dict unchanged (63 keys): the graph autoencoder is
registered twice, as ``encoder.model`` and ``decoder.model`` (the same module, so the two key
sets alias the same tensors), and the quantiser as ``vq_vae`` with its training-only EMA state.

Differences from the official code, all on purpose:

* no ``init_test_mode()``: derived kernels are computed from the parameters on every call, so the
  model is right straight after ``load_state_dict``, ``.to(device)`` or ``.half()``;
* batch-agnostic: decoding B token rows returns B meshes (the official model broadcasts a single
  row to its configured batch size);
* sparse evaluation of the graph layers (see ``mega_runtime.models.graph_conv``), same numbers to
  float32 rounding: sparse CSR where the device supports it, a dense gather path elsewhere (MPS)
  or when asked (``graph_path`` / ``$MEGA_GRAPH_PATH``).

Gradients are not disabled here; wrap inference calls in ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from mega_runtime.constants import CODEBOOK_SIZE, NUM_VERTICES, TOKEN_DIM
from mega_runtime.errors import ConfigError
from mega_runtime.models.assets import CONNECTION_LAYERS, load_connection_matrices
from mega_runtime.models.graph_conv import GRAPH_PATHS, FullyConvAE

__all__ = ["CONFIG_MEDIUM", "GraphStage", "MeshVQVAE", "MeshVQVAEConfig", "VectorQuantizerEMA"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshVQVAEConfig:
    """The official ``modelconv`` + ``vqvaemesh`` settings (defaults: ``config_medium``, checkpoint ``mesh_vqvae_54``).

    Lists may be given as any sequence; they are stored as tuples. The first half of the layers
    is the encoder, the second half the decoder.
    """

    connection_layer_lst: tuple[str, ...] = CONNECTION_LAYERS
    channel_lst: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 9, 128, 128, 64, 64, 32, 32, 3)
    weight_num_lst: tuple[int, ...] = (9, 0, 9, 0, 9, 0, 9, 9, 0, 9, 0, 9, 0, 9)
    residual_rate_lst: tuple[float, ...] = (0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0)
    point_num: int = NUM_VERTICES
    num_embeddings: int = CODEBOOK_SIZE
    embedding_dim: int = TOKEN_DIM

    def __post_init__(self) -> None:
        for name in ("connection_layer_lst", "channel_lst", "weight_num_lst", "residual_rate_lst"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.connection_layer_lst)
        lengths = {len(self.channel_lst), len(self.weight_num_lst), len(self.residual_rate_lst)}
        if n < 2 or n % 2 or lengths != {n}:
            raise ConfigError(
                "connection_layer_lst, channel_lst, weight_num_lst and residual_rate_lst need the same even length, "
                f"got {n}, {len(self.channel_lst)}, {len(self.weight_num_lst)}, {len(self.residual_rate_lst)}"
            )
        if any(c < 1 for c in self.channel_lst) or any(k < 0 for k in self.weight_num_lst):
            raise ConfigError("channels must be >= 1 and weight numbers >= 0")
        if any(not 0 <= r <= 1 for r in self.residual_rate_lst):
            raise ConfigError(f"residual rates must lie in [0, 1], got {self.residual_rate_lst}")
        if self.channel_lst[-1] != 3:
            raise ConfigError(f"the last layer must output 3 channels (xyz), got {self.channel_lst[-1]}")
        if self.channel_lst[self.split - 1] != self.embedding_dim:
            raise ConfigError(
                f"the encoder's last layer outputs {self.channel_lst[self.split - 1]} channels "
                f"but embedding_dim is {self.embedding_dim}"
            )
        if self.point_num < 1 or self.num_embeddings < 1:
            raise ConfigError("point_num and num_embeddings must be >= 1")

    @property
    def split(self) -> int:
        """Index of the first decoder layer (the official ``len(layers) // 2``)."""
        return len(self.connection_layer_lst) // 2


CONFIG_MEDIUM = MeshVQVAEConfig()
"""``config_medium``: the configuration of the released ``mesh_vqvae_54`` checkpoint."""


class GraphStage(nn.Module):
    """Layers ``start .. stop - 1`` of a (shared) :class:`FullyConvAE`, kept as attribute ``model``."""

    def __init__(self, model: FullyConvAE, start: int, stop: int) -> None:
        super().__init__()
        self.model = model
        self.start = start
        self.stop = stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_points, in_channels) -> (B, out_points, out_channels) of the stage."""
        return self.model.run(x, self.start, self.stop)


class VectorQuantizerEMA(nn.Module):
    """Codebook of the official ``VectorQuantizerEMA``.

    State: ``_embedding.weight`` (N, D) codebook; ``_ema_w`` (N, D) and ``_ema_cluster_size`` (N,)
    are the training statistics of the codebook's moving average (:meth:`ema_update`, used by
    ``mega_runtime.train``; inference never changes them).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        codebook = torch.zeros(num_embeddings, embedding_dim)
        self._embedding = nn.Embedding(num_embeddings, embedding_dim, _weight=codebook)
        self._ema_w = nn.Parameter(torch.zeros(num_embeddings, embedding_dim))
        self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))

    def nearest(self, latent: torch.Tensor) -> torch.Tensor:
        """Index of the closest codebook entry for each latent vector.

        Args:
            latent: (..., D) floating tensor.

        Returns:
            int64 tensor (...): argmin over entries e of ``|z|^2 + |e|^2 - 2 z.e`` (the official
            formula, ties resolved to the lowest index).
        """
        codebook = self._embedding.weight
        flat = latent.reshape(-1, codebook.shape[1]).to(codebook.dtype)
        distances = (
            torch.sum(flat**2, dim=1, keepdim=True)
            + torch.sum(codebook**2, dim=1)
            - 2 * torch.matmul(flat, codebook.t())
        )
        return torch.argmin(distances, dim=1).view(latent.shape[:-1])

    @torch.no_grad()
    def assign(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official training forward's code assignment, without gradients.

        Args:
            latent: (..., D) encoder latents.

        Returns:
            indices (...) int64 nearest codes; one_hot (M, N) float with M = latent rows; quantized (..., D) =
            one_hot · codebook (the official matmul, same values as :meth:`lookup`).
        """
        indices = self.nearest(latent)
        codebook = self._embedding.weight
        one_hot = torch.zeros(indices.numel(), codebook.shape[0], device=latent.device, dtype=codebook.dtype)
        one_hot.scatter_(1, indices.reshape(-1, 1), 1)
        return indices, one_hot, torch.matmul(one_hot, codebook).view(latent.shape)

    @torch.no_grad()
    def ema_update(self, flat_latent: torch.Tensor, one_hot: torch.Tensor, decay: float, epsilon: float) -> None:
        """One moving-average step of the codebook, in place (the official training forward's update).

        Args:
            flat_latent: (M, D) encoder latents of the batch (gradients are not tracked).
            one_hot: (M, N) float one-hot rows of their nearest codes (found with the codebook before this update).
            decay: EMA decay (official 0.99); epsilon: Laplace smoothing (official 1e-5).

        ``_ema_cluster_size`` ← decay·size + (1−decay)·counts, Laplace-smoothed to keep its sum n:
        (size + ε) / (n + N·ε) · n; ``_ema_w`` ← decay·w + (1−decay)·one_hotᵀ·latent; the codebook ←
        ``_ema_w / _ema_cluster_size``. Same operations and order as the official code, so the same rounding.
        """
        cluster_size = cast(torch.Tensor, self._ema_cluster_size)
        size = cluster_size * decay + (1 - decay) * torch.sum(one_hot, 0)
        n = torch.sum(size)
        size = (size + epsilon) / (n + one_hot.shape[1] * epsilon) * n
        cluster_size.copy_(size)
        dw = torch.matmul(one_hot.t(), flat_latent)
        self._ema_w.copy_(self._ema_w * decay + (1 - decay) * dw)
        self._embedding.weight.copy_(self._ema_w / cluster_size.unsqueeze(1))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook rows: int tensor (...) -> (..., D) in the codebook's dtype."""
        return self._embedding(indices)


class MeshVQVAE(nn.Module):
    """The official Mesh-VQ-VAE for inference: ``encode`` meshes to tokens and ``decode`` tokens to meshes.

    Args:
        config: layer lists and codebook size (``CONFIG_MEDIUM`` for the released checkpoint).
        connections: ``{layer name: connection matrix}`` for every name in ``config.connection_layer_lst``
            (see :func:`mega_runtime.models.assets.load_connection_matrices`).
        graph_path: how the graph layers are evaluated: ``auto`` (default: CSR where the device
            supports it, else gather), ``csr`` or ``gather``; see :mod:`mega_runtime.models.graph_conv`.

    The weights start at zero; load the official state dict with ``load_state_dict(sd, strict=True)``.
    """

    def __init__(
        self, config: MeshVQVAEConfig, connections: Mapping[str, np.ndarray], graph_path: str = "auto"
    ) -> None:
        super().__init__()
        self.config = config
        graph = FullyConvAE(
            config.connection_layer_lst,
            config.channel_lst,
            config.weight_num_lst,
            config.residual_rate_lst,
            connections,
            in_points=config.point_num,
            graph_path=graph_path,
        )
        split = config.split
        self.num_tokens = graph.layers[split - 1].out_points
        # Registration order gives the official key order: encoder.model.*, vq_vae.*, decoder.model.*
        self.encoder = GraphStage(graph, 0, split)
        self.vq_vae = VectorQuantizerEMA(config.num_embeddings, config.embedding_dim)
        self.decoder = GraphStage(graph, split, len(graph.layers))
        logger.debug("built Mesh-VQ-VAE: %d graph layers, %d tokens", len(graph.layers), self.num_tokens)

    @property
    def graph_path(self) -> str:
        """``auto``, ``csr`` or ``gather``: how the (shared) graph autoencoder evaluates its layers."""
        return self.encoder.model.graph_path

    @graph_path.setter
    def graph_path(self, value: str) -> None:
        if value not in GRAPH_PATHS:
            raise ConfigError(f"unknown graph path {value!r}", hint=f"use one of {', '.join(GRAPH_PATHS)}")
        self.encoder.model.graph_path = value

    @classmethod
    def from_connection_folder(cls, folder: Path | str, config: MeshVQVAEConfig = CONFIG_MEDIUM) -> MeshVQVAE:
        """Build the model with the connection matrices ``folder/_<layer>.npy``; AssetError if one is missing."""
        return cls(config, load_connection_matrices(folder, config.connection_layer_lst))

    def _check_vertices(self, vertices: torch.Tensor) -> None:
        if not isinstance(vertices, torch.Tensor) or not vertices.is_floating_point():
            raise TypeError("vertices must be a floating-point torch.Tensor of shape (batch, 6890, 3)")
        if vertices.ndim != 3 or vertices.shape[1:] != (self.config.point_num, 3):
            raise ValueError(
                f"vertices must have shape (batch, {self.config.point_num}, 3), got {tuple(vertices.shape)}"
            )

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.is_complex():
            raise TypeError("token indices must be an integer torch.Tensor of shape (batch, tokens)")
        if indices.ndim != 2 or indices.shape[1] != self.num_tokens:
            raise ValueError(f"token indices must have shape (batch, {self.num_tokens}), got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.num_embeddings):
            raise ValueError(
                f"token indices must lie in [0, {self.config.num_embeddings}), "
                f"got [{int(indices.min())}, {int(indices.max())}]"
            )
        return indices.long()

    def encoder_latent(self, vertices: torch.Tensor) -> torch.Tensor:
        """Continuous latent of meshes before quantisation.

        Args:
            vertices: (B, 6890, 3) floating tensor, metres, SMPL vertex order (canonical pose frame).

        Returns:
            (B, 54, 9) tensor in the model's dtype.
        """
        self._check_vertices(vertices)
        return self.encoder(vertices)

    def encode(self, vertices: torch.Tensor) -> torch.Tensor:
        """Tokens of meshes: (B, 6890, 3) float -> (B, 54) int64 codebook indices (nearest entry)."""
        return self.vq_vae.nearest(self.encoder_latent(vertices))

    def quantize(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of tokens: (B, 54) int -> (B, 54, 9) in the model's dtype."""
        return self.vq_vae.lookup(self._check_indices(indices))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Meshes from (quantised or continuous) latents: (B, 54, 9) float -> (B, 6890, 3) vertices, metres."""
        return self.decoder(latent)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Meshes from tokens: (B, 54) int -> (B, 6890, 3) vertices in the model's dtype, one mesh per row."""
        return self.decode_latent(self.quantize(indices))
