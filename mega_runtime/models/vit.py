"""ViTPose-style ViT backbone of ``mega_vit`` (own attention with qkv bias, LayerNorm eps 1e-6).

Tokens get ``pos_embed[:, 1:] + pos_embed[:, :1]`` (the cls slot's embedding is
added to every patch; there is no cls token), then pre-norm blocks and
``last_norm``; the output is laid back out as a feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from mega_runtime.models.config import ViTConfig
from mega_runtime.models.transformer import Block

PATCH_SIZE = 16
PATCH_PADDING = 2


class PatchEmbed(nn.Module):
    """Conv2d(3, E, 16, stride 16, padding 2): 224 → 14 patches per side."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH_SIZE, stride=PATCH_SIZE, padding=PATCH_PADDING)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViT(nn.Module):
    """(B, 3, H, W) normalised RGB → (B, E, Hp, Wp) with E = ``config.embed_dim``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_positions, config.embed_dim))
        self.patch_embed = PatchEmbed(config.embed_dim)
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, qkv_bias=True, eps=1e-6)
            for _ in range(config.depth)
        )
        self.last_norm = nn.LayerNorm(config.embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.patch_embed(x)
        b, c, hp, wp = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)
        tokens = tokens + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.last_norm(tokens)
        return tokens.transpose(1, 2).reshape(b, c, hp, wp)
