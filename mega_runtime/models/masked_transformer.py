"""The masked token transformers: CVQMAE (image-conditioned) and VQMAE (unconditional).

Both share the encoder, which sees only the *visible* tokens plus a cls token,
and a decoder that puts mask tokens at the hidden positions and predicts logits
over the 512 Mesh-VQ-VAE codes for all 54 positions. CVQMAE's decoder also reads
the image feature map as a prefix of condition tokens and predicts the global
rotation (6D) and the weak-perspective camera (s, tx, ty) from the pooled
features alone.

Parameter names and shapes follow the official checkpoints. The official code
works sequence-first and shuffles tokens with numpy; here everything is
batch-first and the caller says which positions are visible (and, optionally,
in which order the encoder sees them). Visible-token order only changes float
summation order, never the result beyond rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from mega_runtime.models.config import BackboneConfig, CVQMAEConfig, TransformerConfig, VQMAEConfig
from mega_runtime.models.cpu_kernels import OneDNNLinears, run_linear
from mega_runtime.models.transformer import Block, gather_rows


def sinusoidal_table(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim) float32 table: pe[p, 2i] = sin(p·10000^(−2i/dim)), pe[p, 2i+1] = cos(same)."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal table (the official non-persistent buffer ``pe``), recomputed here."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=False)

    def reset_buffers(self, device: torch.device | str = "cpu") -> None:
        """Recompute the table (after building the model on the ``meta`` device)."""
        self.pe = sinusoidal_table(self.max_len, self.dim, device=torch.device(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, dim) → x + pe[:L]."""
        return x + self.pe[: x.shape[1]].to(x.dtype)


def _blocks(cfg: TransformerConfig, depth: int, heads: int) -> nn.ModuleList:
    return nn.ModuleList(Block(cfg.emb_dim, heads) for _ in range(depth))


class MaskedEncoder(nn.Module):
    """Encodes the visible tokens.

    State-dict names: ``cls_token``, ``pos_embedding``, ``proj``, ``transformer``, ``layer_norm``.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        e = cfg.emb_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.seq_length, 1, e))
        self.proj = nn.Embedding(cfg.dim_tokens, e)
        self.transformer = _blocks(cfg, cfg.encoder_layer, cfg.encoder_head)
        self.layer_norm = nn.LayerNorm(e)

    def forward(self, tokens: torch.Tensor, visible_order: torch.Tensor) -> torch.Tensor:
        """Encode the tokens at ``visible_order``.

        tokens: (B, S) int token ids (only visible positions are read).
        visible_order: (B, T) int64 positions the encoder sees, in that order (T may be 0).
        Returns (B, 1+T, E): the cls feature then one feature per visible token.
        """
        b = tokens.shape[0]
        cls = self.cls_token.expand(b, 1, -1)
        if visible_order.shape[1] == 0:
            x = cls
        else:
            picked = torch.gather(tokens.long(), 1, visible_order)
            x = self.proj(picked) + self.pos_embedding[:, 0][visible_order]
            x = torch.cat([cls, x], dim=1)
        for block in self.transformer:
            x = block(x)
        return self.layer_norm(x)


class _DecoderBase(OneDNNLinears, nn.Module):
    #: Skip work whose result is known: reuse the first block's keys/values of the tokens that are the same
    #: at every step (condition tokens, hidden slots) and compute the last block only for the positions
    #: asked for. Off: the plain computation, every row in full (for comparisons; the same bits).
    reuse_invariants: bool = True
    #: Below this many freshly computed rows a small matrix product may take another kernel (and
    #: round differently) than the whole-batch product it replaces, so the plain path runs instead.
    min_fresh_rows: int = 16
    #: Asked for fewer positions than this, the last block computes all of them and picks: attention with
    #: very few queries may take another kernel than the full one (measured: ≤ 3 queries round differently).
    min_query_positions: int = 8

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        e = cfg.emb_dim
        self.seq_length = cfg.seq_length
        self.mask_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embedding = nn.Parameter(torch.zeros(cfg.seq_length + 1, 1, e))
        self.transformer = _blocks(cfg, cfg.decoder_layer, cfg.decoder_head)
        self.head = nn.Linear(e, cfg.num_embeddings)

    def token_slots(self, features: torch.Tensor, visible_order: torch.Tensor) -> torch.Tensor:
        """Lay encoder features back on the sequence: (B, 1+T, E) → (B, 1+S, E) with position embeddings.

        Slot 0 is the cls feature, hidden positions get ``mask_token``.
        """
        b, _, e = features.shape
        slots = self.mask_token.expand(b, self.seq_length, e).clone()
        if visible_order.shape[1]:
            slots.scatter_(1, visible_order.unsqueeze(-1).expand(-1, -1, e), features[:, 1:])
        seq = torch.cat([features[:, :1], slots], dim=1)
        return seq + self.pos_embedding[:, 0]

    def first_block(self) -> Block:
        """The first transformer block (typed for the key/value helpers)."""
        return cast(Block, self.transformer[0])

    def slot_key_values(self) -> torch.Tensor:
        """(S, 2E) first-block keys/values of a hidden slot at each position (mask token + position embedding)."""
        block = self.first_block()
        return block.attn.key_values(block.norm1(self.mask_token[0] + self.pos_embedding[1:, 0]))

    def first_key_values(
        self, x: torch.Tensor, visible_order: torch.Tensor, prefix_kv: torch.Tensor | None
    ) -> torch.Tensor | None:
        """(B, P+1+S, 2E) first-block keys/values of the decoder input x, or None for the plain path.

        Only the cls slot and the visible slots (``visible_order``, (B, T)) are projected here; the P
        condition tokens' rows come from ``prefix_kv`` ((B, P, 2E), :attr:`Condition.kv0`) and the hidden
        slots' from :meth:`slot_key_values`. Each row equals what the whole-input product gives.
        """
        b, _, e = x.shape
        prefix = 0 if prefix_kv is None else prefix_kv.shape[1]
        fresh = torch.cat([visible_order.new_zeros(b, 1), visible_order + 1], dim=1) + prefix
        if not self.reuse_invariants or b * fresh.shape[1] < self.min_fresh_rows:
            return None
        block = self.first_block()
        parts = [x.new_zeros(b, 1, 2 * e), self.slot_key_values().expand(b, -1, -1)]
        kv = torch.cat(parts if prefix_kv is None else [prefix_kv, *parts], dim=1)
        fresh_kv = block.attn.key_values(block.norm1(gather_rows(x, fresh)))
        return kv.scatter_(1, fresh.unsqueeze(-1).expand(-1, -1, 2 * e), fresh_kv.to(kv.dtype))

    def run_blocks(
        self,
        x: torch.Tensor,
        prefix: int,
        positions: torch.Tensor | None = None,
        first_kv: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks (no final norm), drop the ``prefix`` condition tokens and the cls slot, then the head.

        The last block computes outputs for the kept token slots only — (B, S, K) logits — or, with
        ``positions`` ((B, Q) int64 token positions), for those only: (B, Q, K).
        first_kv: optional first-block keys/values (:meth:`first_key_values`).
        """
        if positions is not None and (positions.shape[1] < self.min_query_positions or not self.reuse_invariants):
            logits = self.run_blocks(x, prefix, None, first_kv)
            return torch.gather(logits, 1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        blocks = list(self.transformer)
        for index, block in enumerate(blocks):
            kv = first_kv if index == 0 else None
            if index < len(blocks) - 1:
                x = block(x, kv=kv)
            else:
                queries = None if positions is None else positions + prefix + 1
                x = block(x, start=prefix + 1, queries=queries, kv=kv)
        return run_linear(self.head, x, self.onednn)


class Decoder(_DecoderBase):
    """Unconditional decoder of VQMAE."""

    def forward(
        self, features: torch.Tensor, visible_order: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 1+T, E) encoder features → (B, S, num_embeddings) logits ((B, Q, …) for ``positions``)."""
        x = self.token_slots(features, visible_order)
        return self.run_blocks(x, 0, positions, self.first_key_values(x, visible_order, None))


@dataclass(frozen=True)
class Condition:
    """What the decoder needs from one image, computed once and shared by all its hypotheses.

    tokens: (B, L, E) projected condition tokens with the sinusoidal table added.
    rot6d: (B, 6) global rotation in the 6D representation (rows b1, b2 of R before Gram–Schmidt).
    cam: (B, 3) weak-perspective camera (s, tx, ty) in crop-normalised units.
    kv0: optional (B, L, 2E) keys then values of the condition tokens in the decoder's first block.
    They depend only on the image, so they are computed once (:meth:`ConditionalDecoder.condition`)
    and reused by every step and hypothesis; None: computed with each pass.
    """

    tokens: torch.Tensor
    rot6d: torch.Tensor
    cam: torch.Tensor
    kv0: torch.Tensor | None = None

    def rows(self, index: slice | list[int] | torch.Tensor) -> Condition:
        """The condition of the selected rows."""
        kv0 = None if self.kv0 is None else self.kv0[index]
        return Condition(self.tokens[index], self.rot6d[index], self.cam[index], kv0)

    def repeat(self, n: int) -> Condition:
        """Each image repeated n times in a row: B → B·n (image i owns rows i·n … i·n+n−1)."""
        kv0 = None if self.kv0 is None else self.kv0.repeat_interleave(n, dim=0)
        tokens, rot6d, cam = (t.repeat_interleave(n, dim=0) for t in (self.tokens, self.rot6d, self.cam))
        return Condition(tokens, rot6d, cam, kv0)


class ConditionalDecoder(_DecoderBase):
    """CVQMAE's decoder: condition tokens prefix, plus the rotation/camera heads."""

    def __init__(self, cfg: TransformerConfig, cond_dim: int, cond_length: int) -> None:
        super().__init__(cfg)
        e = cfg.emb_dim
        self.rotcam_head = nn.Sequential(nn.Linear(cond_dim, e), nn.Dropout(0.5), nn.Linear(e, e), nn.Dropout(0.5))
        self.rot_predictor = nn.Linear(e, 6)
        self.cam_predictor = nn.Linear(e, 3)
        self.cond_emb = nn.Linear(cond_dim, e)
        self.pos_emb_cond = PositionalEncoding(e, cond_length)

    def condition(self, fmap: torch.Tensor) -> Condition:
        """(B, C, h, w) backbone feature map → :class:`Condition` (tokens in row-major spatial order)."""
        pooled = fmap.mean(dim=(2, 3))
        hidden = self.rotcam_head(pooled)
        tokens = self.pos_emb_cond(run_linear(self.cond_emb, fmap.flatten(2).transpose(1, 2), self.onednn))
        block = self.first_block()
        kv0 = block.attn.key_values(block.norm1(tokens)) if self.reuse_invariants else None
        return Condition(tokens=tokens, rot6d=self.rot_predictor(hidden), cam=self.cam_predictor(hidden), kv0=kv0)

    def forward(
        self,
        features: torch.Tensor,
        visible_order: torch.Tensor,
        cond: Condition,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 1+T, E) encoder features and a matching condition → (B, S, num_embeddings) logits.

        positions: optional (B, Q) int64 token positions; then only their logits, (B, Q, num_embeddings).
        """
        x = torch.cat([cond.tokens, self.token_slots(features, visible_order)], dim=1)
        prefix_kv = cond.kv0
        if prefix_kv is None and self.reuse_invariants:
            block = self.first_block()
            prefix_kv = block.attn.key_values(block.norm1(cond.tokens))
        first_kv = self.first_key_values(x, visible_order, prefix_kv)
        return self.run_blocks(x, cond.tokens.shape[1], positions, first_kv)


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The image backbone named by ``cfg.type`` (imports only the one it needs)."""
    if cfg.type == "resnet":
        from mega_runtime.models.resnet import resnet50_trunk

        return resnet50_trunk()
    if cfg.type == "hrnet":
        from mega_runtime.models.hrnet import HRNetW48

        return HRNetW48()
    from mega_runtime.models.vit import ViT

    return ViT(cfg.vit)


class TokenModel(nn.Module):
    """What the samplers need from a masked transformer: logits for a partly visible sequence."""

    seq_length: int
    num_embeddings: int
    encoder: MaskedEncoder

    def __init__(self) -> None:
        super().__init__()
        #: All-masked encodings by (batch, device, autocast, kernels, encoder, parameter versions): :meth:`encode`.
        self._empty_encoding: dict[tuple, torch.Tensor] = {}

    def encode(self, tokens: torch.Tensor, visible_order: torch.Tensor) -> torch.Tensor:
        """The encoder's (B, 1+T, E) features of the tokens at ``visible_order`` ((B, T) int64).

        With nothing visible (T = 0: the all-masked pass) they depend on the weights alone, so outside autograd
        they are computed once per batch size, device, autocast state and kernel choice and reused — the same
        call as before, hence the same bits. The cache is keyed on the encoder object and its parameters' version
        counters, so loading, training steps or ``torch.compile`` (a new encoder object) invalidate it.
        """
        if visible_order.shape[1] or torch.is_grad_enabled():
            return self.encoder(tokens, visible_order)
        device = tokens.device
        autocast = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type)
        versions = tuple(p._version for p in self.encoder.parameters())
        onednn = any(isinstance(m, OneDNNLinears) and m.onednn for m in self.encoder.modules())
        key = (tokens.shape[0], str(device), autocast, onednn, id(self.encoder), versions)
        cache = self._empty_encoding
        if key not in cache:
            if len(cache) >= 8:  # a few batch sizes (a video's last batch is smaller); stale keys go with them
                cache.clear()
            # a copy: under CUDA graphs (compiled, ``reduce-overhead``) an output's memory is reused by later replays
            cache[key] = self.encoder(tokens, visible_order).clone()
        return cache[key].clone()

    def logits(
        self,
        tokens: torch.Tensor,
        visible_order: torch.Tensor,
        cond: Condition | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S, K) logits, or (B, Q, K) for the (B, Q) int64 ``positions`` only (the others are not computed)."""
        raise NotImplementedError


class CVQMAE(TokenModel):
    """Image-conditioned masked transformer of MEGA (official ``CVQMAE``)."""

    def __init__(self, config: CVQMAEConfig) -> None:
        super().__init__()
        t = config.transformer
        self.config = config
        self.seq_length = t.seq_length
        self.num_embeddings = t.num_embeddings
        self.backbone = build_backbone(config.backbone)
        self.encoder = MaskedEncoder(t)
        self.decoder = ConditionalDecoder(t, config.cond_dim, config.backbone.num_cond_tokens)

    def condition(self, images: torch.Tensor) -> Condition:
        """(B, 3, H, W) normalised RGB crops → :class:`Condition` (runs the backbone once)."""
        return self.decoder.condition(self.backbone(images))

    def logits(
        self,
        tokens: torch.Tensor,
        visible_order: torch.Tensor,
        cond: Condition | None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) tokens, (B, T) visible positions, condition of B rows → (B, S, num_embeddings) logits.

        positions: optional (B, Q) int64; then only those positions' logits, (B, Q, num_embeddings).
        """
        if cond is None:
            raise ValueError("CVQMAE needs an image condition")
        return self.decoder(self.encode(tokens, visible_order), visible_order, cond, positions)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deterministic pass (every position masked): → logits (B, S, 512), rot6d (B, 6), cam (B, 3)."""
        cond = self.condition(images)
        empty = torch.zeros(images.shape[0], 0, dtype=torch.long, device=images.device)
        tokens = torch.zeros(images.shape[0], self.seq_length, dtype=torch.long, device=images.device)
        return self.logits(tokens, empty, cond), cond.rot6d, cond.cam


class VQMAE(TokenModel):
    """Unconditional masked transformer pre-trained on motion capture (official ``VQMAE``)."""

    def __init__(self, config: VQMAEConfig) -> None:
        super().__init__()
        t = config.transformer
        self.config = config
        self.seq_length = t.seq_length
        self.num_embeddings = t.num_embeddings
        self.encoder = MaskedEncoder(t)
        self.decoder = Decoder(t)

    def logits(
        self,
        tokens: torch.Tensor,
        visible_order: torch.Tensor,
        cond: Condition | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, S) tokens and (B, T) visible positions → (B, S, num_embeddings) logits ((B, Q, …) for positions)."""
        return self.decoder(self.encode(tokens, visible_order), visible_order, positions)

    def forward(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All positions masked: the model's prior → (batch_size, S, 512) logits."""
        tokens = torch.zeros(batch_size, self.seq_length, dtype=torch.long, device=device)
        return self.logits(tokens, tokens[:, :0], None)
