"""Pre-norm transformer blocks with the official parameter names.

The token transformer uses timm 1.0.15's ``Block`` defaults (qkv without bias,
exact GELU, LayerNorm eps 1e-5); the ViT backbone uses the same structure with a
qkv bias and eps 1e-6. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``, which picks the fastest
kernel for the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` Linear (q, k, v order) and output ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, N, C) → (B, N − start, C): outputs for the tokens from ``start`` on.

        Every token is a key and value; only tokens ``start:`` are queries, so the outputs
        a caller would discard are never computed.
        """
        b, n, c = x.shape
        heads, dh = self.num_heads, c // self.num_heads
        if start == 0:
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            w, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, start:], w[:c], None if bias is None else bias[:c])
            q = q.reshape(b, n - start, heads, dh).transpose(1, 2)
            kv = F.linear(x, w[c:], None if bias is None else bias[c:])
            k, v = kv.reshape(b, n, 2, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n - start, c))


class Mlp(nn.Module):
    """``fc1`` → exact (erf) GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; x: (B, N, C)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, N, C) → (B, N − start, C); ``start`` > 0 skips outputs the caller drops."""
        x = x[:, start:] + self.attn(self.norm1(x), start)
        return x + self.mlp(self.norm2(x))
