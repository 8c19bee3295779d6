"""Token decoders for the masked transformers, with their randomness injected.

All decoders share one model interface (:class:`~mega_runtime.models.masked_transformer.TokenModel`):

* :func:`argmax_decode` — MEGA's deterministic mode: one pass with every position
  masked, then argmax.
* :func:`sample_tokens` — iterative masked decoding with the official rules
  (cosine reveal schedule, Gumbel noise with an annealed temperature, re-masking
  the least confident positions). Every position is filled. By default each row
  draws its noise from its own ``torch.Generator`` seed (:class:`RowGeneratorSource`),
  so a row's result does not depend on the rows batched with it. With ``fixed``
  tokens it completes a partial sequence (unconditional generation and completion
  use it too).
* :func:`sample_tokens_official` — a bit-exact re-enactment of the official
  ``generate()``: numpy's legacy RNG consumed in the official order
  (:class:`NumpySource`), the masked count of row 0 shared by the batch, ``<=`` ties
  at the cut, and the last step re-masking one position, which keeps code 0.

Randomness comes from a :class:`RandomSource`: the encoder's token order and the
Gumbel(0, 1) noise. Giving both samplers the same source shows that they commit the
same tokens except where they are documented to differ (tests/runtime/test_sampling.py).

The samplers return tokens only; every hypothesis is scored by the one estimator in
:mod:`mega_runtime.decoding.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mega_runtime.decoding.schedule import CVQMAE_SAMPLING, RevealSchedule, SamplingConfig
from mega_runtime.models.masked_transformer import Condition, TokenModel


@dataclass(frozen=True)
class TokenSamples:
    """Decoded token rows.

    tokens: (N, S) int64 codebook ids.
    log_likelihood: (N,) float32 natural log from :func:`mega_runtime.decoding.scoring.score_tokens`;
        None where the producer did not score (the samplers themselves never do).
    tokens_per_step / visible_per_step: (steps, N, S) int64 / bool, only when recorded;
    hidden positions hold token 0.
    """

    tokens: torch.Tensor
    log_likelihood: torch.Tensor | None = None
    tokens_per_step: torch.Tensor | None = None
    visible_per_step: torch.Tensor | None = None


class RandomSource(Protocol):
    """Where a sampler's randomness comes from, for ``num_rows`` (N) rows."""

    num_rows: int

    def visible_order(self, visible: torch.Tensor) -> torch.Tensor:
        """(N, S) bool → (N, S) int64 positions, each row's visible positions first, then its hidden ones."""
        ...

    def gumbel(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(N, *shape) Gumbel(0, 1) noise on the CPU, float32 or float64.

        The samplers scale it by the temperature in its own dtype, then cast to float32.
        """
        ...


def ascending_visible_order(visible: torch.Tensor) -> torch.Tensor:
    """(N, S) bool → (N, S) int64: visible positions in ascending order, then hidden ones in ascending order."""
    return torch.argsort((~visible).to(torch.int8), dim=1, stable=True)


class RowGeneratorSource:
    """The default source: Gumbel noise drawn from one CPU ``torch.Generator`` per row; ascending order.

    seeds: (N,) int64 (see :func:`row_seeds`). Row i's noise depends only on ``seeds[i]``, so a
    row's result does not depend on batching or on the device. Per step each row draws its
    token noise (S, K), then its confidence noise (S,).
    """

    def __init__(self, seeds: torch.Tensor) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        self.num_rows = len(self.generators)

    def visible_order(self, visible: torch.Tensor) -> torch.Tensor:
        return ascending_visible_order(visible)

    def gumbel(self, shape: tuple[int, ...]) -> torch.Tensor:
        rows = [torch.rand(shape, generator=g, dtype=torch.float32) for g in self.generators]
        u = torch.stack(rows).clamp_(min=torch.finfo(torch.float32).tiny)
        return -torch.log(-torch.log(u))


class NumpySource:
    """The official source: numpy's legacy RNG consumed as the official code consumes its global RNG.

    rng: ``numpy.random.RandomState``; ``RandomState(S)`` draws what ``np.random.seed(S)`` makes
    the official code draw; num_rows: N. Order: per row a shuffle of the visible then of the hidden positions
    (:func:`official_encoder_order`). Noise: ``rng.gumbel(size=(N, *shape))``, float64.
    """

    def __init__(self, rng: np.random.RandomState, num_rows: int) -> None:
        self.rng = rng
        self.num_rows = num_rows

    def visible_order(self, visible: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(official_encoder_order(visible.cpu().numpy().astype(np.int64), self.rng))

    def gumbel(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(self.rng.gumbel(size=(self.num_rows, *shape)))


def scaled_gumbel(
    source: RandomSource, temperature: float, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """``temperature · G`` with G from ``source`` (N, *shape), multiplied in G's dtype, then float32 on ``device``.

    float64 sources (numpy) therefore round once, as the official ``(temp · np.random.gumbel(…)).float()`` does.
    To a CUDA device the noise goes through pinned memory without blocking the host (:func:`to_device`).
    """
    return to_device((temperature * source.gumbel(shape)).to(dtype=torch.float32), device)


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor on ``device``; to CUDA it is pinned and copied asynchronously (no host sync per step).

    The values are the same on every path; on the CPU it is returned as is.
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def row_seeds(generator: torch.Generator, num_rows: int) -> torch.Tensor:
    """Draw ``num_rows`` int64 seeds from ``generator``; row k's seed is the k-th draw whatever num_rows is."""
    return torch.stack(
        [torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)[0] for _ in range(num_rows)]
    ).cpu()


@torch.no_grad()
def all_masked_logits(model: TokenModel, cond: Condition | None, num_rows: int, device: torch.device) -> torch.Tensor:
    """(N, S, K) float32 logits with every position masked (the encoder sees only its cls token)."""
    tokens = torch.zeros(num_rows, model.seq_length, dtype=torch.long, device=device)
    return model.logits(tokens, tokens[:, :0], cond).float()


@torch.no_grad()
def argmax_decode(model: TokenModel, cond: Condition | None, num_rows: int, device: torch.device) -> TokenSamples:
    """One pass with every position masked, then argmax (ties → first index). (N, S) tokens."""
    return argmax_with_logits(model, cond, num_rows, device)[0]


@torch.no_grad()
def argmax_with_logits(
    model: TokenModel, cond: Condition | None, num_rows: int, device: torch.device
) -> tuple[TokenSamples, torch.Tensor]:
    """:func:`argmax_decode` and the (N, S, K) float32 all-masked logits it came from."""
    logits = all_masked_logits(model, cond, num_rows, device)
    return TokenSamples(tokens=logits.argmax(dim=-1)), logits


@torch.no_grad()
def sample_tokens(
    model: TokenModel,
    cond: Condition | None,
    source: torch.Tensor | RandomSource,
    config: SamplingConfig = CVQMAE_SAMPLING,
    fixed: torch.Tensor | None = None,
    record: bool = False,
    initial_logits: torch.Tensor | None = None,
) -> TokenSamples:
    """Iterative masked decoding that fills every position.

    cond: condition with one row per output row (``Condition.repeat``), or None for VQMAE.
    source: (N,) int64 seeds, one per row (see :func:`row_seeds`; wrapped in
        :class:`RowGeneratorSource`, so row i's tokens depend only on its condition, ``seeds[i]``,
        ``fixed[i]`` and the config), or any :class:`RandomSource` for N rows.
    fixed: optional (N, S) int64 with −1 where the model should sample and a codebook id where
        the caller fixes the token (completion). Every row must fix the same number of positions.
    initial_logits: optional (N, S, K) logits of the starting state when the caller already has
        them — with nothing fixed, every row starts fully masked, so the deterministic pass's
        logits serve as the first step and one transformer pass per hypothesis is saved.
    """
    if isinstance(source, torch.Tensor):
        source = RowGeneratorSource(source)
    s, k = model.seq_length, model.num_embeddings
    device = next(model.parameters()).device
    n = source.num_rows
    tokens = torch.zeros(n, s, dtype=torch.long, device=device)
    visible = torch.zeros(n, s, dtype=torch.bool, device=device)
    if fixed is not None:
        fixed = fixed.to(device=device, dtype=torch.long)
        if fixed.shape != (n, s):
            raise ValueError(f"fixed tokens must have shape ({n}, {s}), got {tuple(fixed.shape)}")
        if ((fixed < -1) | (fixed >= k)).any():
            raise ValueError(f"fixed tokens must be -1 (sample) or a codebook id in [0, {k})")
        visible = fixed >= 0
        counts = visible.sum(dim=1)
        if (counts != counts[0]).any():
            raise ValueError("every row must fix the same number of tokens")
        tokens = torch.where(visible, fixed, tokens)
    schedule = RevealSchedule.set_timesteps(s - int(visible[0].sum()), config)
    per_step_tokens, per_step_visible = [], []
    hidden = schedule.num_positions
    for step in range(schedule.steps):
        if hidden == 0:
            break
        temp = schedule.temperature_at(step)
        full_order = source.visible_order(visible).to(device)
        order, still_hidden = full_order[:, : s - hidden], full_order[:, s - hidden :]
        noise = scaled_gumbel(source, temp, (s, k), device)
        if step == 0 and initial_logits is not None:
            sampled = (initial_logits.float() + noise).argmax(dim=-1)
            score = torch.gather(initial_logits.float(), 2, sampled.unsqueeze(-1)).squeeze(-1)
        else:
            # Only the hidden positions' logits matter (visible ones keep their token and rank first),
            # so only they are computed; the others are left at code 0 / score 0 and never used.
            logits = model.logits(tokens, order, cond, positions=still_hidden).float()
            picked = (logits + torch.gather(noise, 1, still_hidden.unsqueeze(-1).expand(-1, -1, k))).argmax(dim=-1)
            picked_score = torch.gather(logits, 2, picked.unsqueeze(-1)).squeeze(-1)
            sampled = torch.zeros_like(tokens).scatter_(1, still_hidden, picked)
            score = torch.zeros(n, s, device=device).scatter_(1, still_hidden, picked_score)
        confidence = torch.where(visible, torch.inf, score + scaled_gumbel(source, temp, (s,), device))
        hidden = schedule.hidden_after(step)
        reveal = ~visible
        if hidden:
            remask = torch.topk(confidence, hidden, dim=1, largest=False).indices
            reveal.scatter_(1, remask, False)
        tokens = torch.where(reveal, sampled, tokens)
        visible = visible | reveal
        if record:
            per_step_tokens.append(tokens.clone())
            per_step_visible.append(visible.clone())
    return TokenSamples(
        tokens=tokens,
        tokens_per_step=torch.stack(per_step_tokens) if record else None,
        visible_per_step=torch.stack(per_step_visible) if record else None,
    )


@torch.no_grad()
def sample_tokens_official(
    model: TokenModel,
    cond: Condition | None,
    num_rows: int,
    source: np.random.RandomState | RandomSource,
    config: SamplingConfig = CVQMAE_SAMPLING,
    record: bool = False,
) -> TokenSamples:
    """The official ``generate()`` loop, token for token.

    source: a legacy ``numpy.random.RandomState`` (wrapped in :class:`NumpySource`; per step it
    consumes, in order: for each row, a shuffle of the visible then of the hidden positions;
    Gumbel noise (N, S, K); Gumbel noise (N, S)), or any :class:`RandomSource` for ``num_rows``
    rows. The result keeps the official quirks: one position is still hidden after the last
    step and holds code 0; the count to re-mask is row 0's; ``<=`` at the cut.
    """
    if isinstance(source, np.random.RandomState):
        source = NumpySource(source, num_rows)
    s, k = model.seq_length, model.num_embeddings
    device = next(model.parameters()).device
    schedule = RevealSchedule.set_timesteps(s, config)
    tokens = torch.zeros(num_rows, s, dtype=torch.long, device=device)
    visible = torch.zeros(num_rows, s, dtype=torch.bool, device=device)
    per_step_tokens, per_step_visible = [], []
    for step in range(schedule.steps):
        temp = schedule.temperature_at(step)
        order = source.visible_order(visible)
        kept = int(visible[0].sum())
        logits = model.logits(tokens, order[:, :kept].to(device), cond).float()
        sampled = (logits + scaled_gumbel(source, temp, (s, k), device)).argmax(dim=-1)
        is_mask = ~visible
        score = torch.where(is_mask, torch.gather(logits, 2, sampled.unsqueeze(-1)).squeeze(-1), torch.inf)
        sampled = torch.where(is_mask, sampled, tokens)
        mask_len = schedule.official_hidden_after(step, int(is_mask[0].sum()))
        confidence = score + scaled_gumbel(source, temp, (s,), device)
        cut = torch.sort(confidence, dim=-1).values[:, mask_len - 1 : mask_len]
        remask = confidence <= cut
        tokens = torch.where(remask, 0, sampled)
        visible = ~remask
        if record:
            per_step_tokens.append(tokens.clone())
            per_step_visible.append(visible.clone())
    return TokenSamples(
        tokens=tokens,
        tokens_per_step=torch.stack(per_step_tokens) if record else None,
        visible_per_step=torch.stack(per_step_visible) if record else None,
    )


def official_encoder_order(visible: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """The official encoder's token order: per row, shuffled visible ids then shuffled hidden ids.

    visible: (B, S) with 1 = visible. Consumes ``rng`` exactly as the official encoder does
    (for each row: one shuffle of the visible ids, one of the hidden ids). Returns (B, S) int64.
    """
    rows = []
    for row in visible:
        shown = np.flatnonzero(row == 1).astype(np.int64)
        hidden = np.flatnonzero(row == 0).astype(np.int64)
        rng.shuffle(shown)
        rng.shuffle(hidden)
        rows.append(np.concatenate([shown, hidden]))
    return np.stack(rows)


def official_decoder_mask(order: np.ndarray, kept: int) -> np.ndarray:
    """The mask the official decoder returns: 0 for the first ``kept + 1`` positions of ``order``, else 1.

    An off-by-one in the official code (the cls slot is counted with the visible
    tokens) marks one hidden position, ``order[:, kept]``, as not masked. (B, S) float32.
    """
    mask = np.ones(order.shape, dtype=np.float32)
    np.put_along_axis(mask, order[:, : kept + 1], 0.0, axis=1)
    return mask


@torch.no_grad()
def argmax_decode_official(
    model: TokenModel, cond: Condition | None, tokens: torch.Tensor, rng: np.random.RandomState
) -> TokenSamples:
    """The official demo's deterministic tokens: ``argmax·mask + tokens·(1 − mask)``.

    Because of the decoder-mask off-by-one (:func:`official_decoder_mask`), one position
    per row — the first of a numpy shuffle of all 54 — keeps the *input* token
    (zeros in ``demo.py``) instead of the argmax. tokens: (B, S) input ids; rng: legacy
    RandomState consumed as the official forward does (one shuffle per row).
    ``visible_per_step[0]`` holds the positions that kept the input token.
    """
    b, s = tokens.shape
    order = official_encoder_order(np.zeros((b, s), dtype=np.int64), rng)
    hidden = torch.from_numpy(official_decoder_mask(order, 0)).to(tokens.device).bool()
    result = argmax_decode(model, cond, b, tokens.device)
    combined = torch.where(hidden, result.tokens, tokens.long())
    return TokenSamples(tokens=combined, visible_per_step=(~hidden)[None])
