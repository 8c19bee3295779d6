"""Tiny randomly initialised models for fast property tests (no shared data needed)."""

from __future__ import annotations

import torch

from mega_runtime.models.config import BackboneConfig, CVQMAEConfig, TransformerConfig, ViTConfig, VQMAEConfig
from mega_runtime.models.masked_transformer import CVQMAE, VQMAE

TINY = TransformerConfig(emb_dim=32, encoder_layer=1, encoder_head=2, decoder_layer=1, decoder_head=2)
TINY_VIT = CVQMAEConfig(BackboneConfig("vit", ViTConfig(embed_dim=16, depth=1, num_heads=2, num_positions=197)), TINY)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights with logits spread enough that samples differ from the argmax."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 / max(1, p.shape[-1]) ** 0.5
            p.copy_(torch.randn(p.shape, generator=gen) * (scale if p.dim() > 1 else 0.1))
            if name.endswith("head.weight"):
                p.mul_(4.0)
    return model.eval()


def tiny_cvqmae(seed: int = 0) -> CVQMAE:
    return randomize(CVQMAE(TINY_VIT), seed)


def tiny_vqmae(seed: int = 0) -> VQMAE:
    return randomize(VQMAE(VQMAEConfig(TINY)), seed)
