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

from mega_runtime.models.cpu_kernels import OneDNNLinears, dense, run_linear


class Attention(OneDNNLinears, nn.Module):
    """Multi-head self-attention: ``qkv`` Linear (q, k, v order) and output ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        """x: (..., C) → the ``part`` columns of ``qkv(x)``, computing only those (a plain Linear's rows).

        A replaced ``qkv`` (e.g. dynamically quantised for int8) is run whole and then sliced.
        """
        if isinstance(self.qkv, nn.Linear):
            bias = self.qkv.bias
            return dense(x, self.qkv.weight[part], None if bias is None else bias[part], self.onednn)
        return self.qkv(x)[..., part]

    def key_values(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) normalised tokens → (..., 2C): their keys then values, as :meth:`forward` computes them."""
        return self.project(x, slice(x.shape[-1], None))

    def attend(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """x: (B, Q, C) normalised query tokens, kv: (B, N, 2C) keys/values of all N tokens → (B, Q, C)."""
        b, rows, c = x.shape
        heads, dh = self.num_heads, c // self.num_heads
        q = self.project(x, slice(0, c)).reshape(b, rows, heads, dh).transpose(1, 2)
        k, v = kv.to(q.dtype).reshape(b, kv.shape[1], 2, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return run_linear(self.proj, out.transpose(1, 2).reshape(b, rows, c), self.onednn)

    def forward(self, x: torch.Tensor, start: int = 0, queries: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, C) → (B, N − start, C): outputs for the tokens from ``start`` on.

        Every token is a key and value; only tokens ``start:`` are queries, so the outputs
        a caller would discard are never computed. queries: optional (B, Q) int64 token
        indices; then only these rows are queries and the result is (B, Q, C).
        """
        b, n, c = x.shape
        heads, dh = self.num_heads, c // self.num_heads
        if start == 0 and queries is None:
            qkv = run_linear(self.qkv, x, self.onednn)
            q, k, v = qkv.reshape(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v)
            return run_linear(self.proj, out.transpose(1, 2).reshape(b, n, c), self.onednn)
        return self.attend(x[:, start:] if queries is None else gather_rows(x, queries), self.key_values(x))


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, N, C), index: (B, Q) int64 → (B, Q, C): the indexed tokens of each batch item."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Mlp(OneDNNLinears, nn.Module):
    """``fc1`` → exact (erf) GELU → ``fc2`` (with oneDNN, the GELU fused into ``fc1``'s kernel)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return run_linear(self.fc2, run_linear(self.fc1, x, True, gelu=True), True)
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

    def forward(
        self,
        x: torch.Tensor,
        start: int = 0,
        queries: torch.Tensor | None = None,
        kv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, C) → (B, N − start, C); ``start`` > 0 skips outputs the caller drops.

        queries: optional (B, Q) int64 token indices: only these outputs, (B, Q, C).
        kv: optional (B, N, 2C) keys/values of ``norm1(x)`` the caller already has
        (``attn.key_values``); then only the query tokens are normalised and projected here.
        """
        picked = x[:, start:] if queries is None else gather_rows(x, queries)
        if kv is None:
            out = picked + self.attn(self.norm1(x), start, queries)
        else:
            out = picked + self.attn.attend(self.norm1(picked), kv)
        return out + self.mlp(self.norm2(out))
