"""Decoding token sequences from the masked transformers.

Three decoders share one model interface (:class:`~mega_runtime.models.masked_transformer.TokenModel`):

* :func:`argmax_decode` — MEGA's deterministic mode: one pass with every position
  masked, then argmax.
* :func:`sample_tokens` — iterative masked decoding with the official rules
  (cosine reveal schedule, Gumbel noise with an annealed temperature, re-masking
  the least confident positions), driven by an explicit ``torch.Generator``. Every
  position is filled. Each row draws its noise from its own seed, so a row's
  result does not depend on the rows batched with it. With ``fixed`` tokens it
  completes a partial sequence.
* :func:`sample_tokens_official` — a bit-exact re-enactment of the official
  ``generate()``: numpy's legacy RNG consumed in the official order, the masked
  count of row 0 shared by the batch, ``<=`` ties at the cut, and the last step
  re-masking one position, which keeps code 0. Use it to reproduce published
  numbers; it is what the stochastic reference fixtures check.

Log-likelihood: each committed token is scored with the model's own (temperature
1) log-probability at the step it was committed, given the tokens visible then;
the sum over a row's tokens is its ``log_likelihood`` (natural log).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mega_runtime import defaults
from mega_runtime.models.masked_transformer import Condition, TokenModel

Annealing = Callable[[float, float], float]


def linear_annealing(temperature: float, r: float) -> float:
    """CVQMAE's rule: ``temperature · (1 − r)`` at progress r = (step+1)/steps."""
    return temperature * (1.0 - r)


def power5_annealing(temperature: float, r: float) -> float:
    """VQMAE's (pre-trained model) rule: ``(1 − r) · (temperature · (1 − r))⁵``."""
    return (1.0 - r) * (temperature * (1.0 - r)) ** 5


ANNEALING: dict[str, Annealing] = {"linear": linear_annealing, "power5": power5_annealing}


@dataclass(frozen=True)
class SamplingConfig:
    """Iterative decoding settings. Defaults are the official CVQMAE ones (5 steps, 4.5, linear)."""

    steps: int = defaults.SAMPLING_STEPS
    temperature: float = defaults.SAMPLING_TEMPERATURE
    annealing: str = defaults.SAMPLING_ANNEALING

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}")
        if self.annealing not in ANNEALING:
            raise ValueError(f"unknown annealing {self.annealing!r}; expected one of {', '.join(ANNEALING)}")

    def temperature_at(self, step: int) -> float:
        return ANNEALING[self.annealing](self.temperature, (step + 1) / self.steps)


CVQMAE_SAMPLING = SamplingConfig()
VQMAE_SAMPLING = SamplingConfig(
    steps=defaults.GENERATE_STEPS, temperature=defaults.GENERATE_TEMPERATURE, annealing=defaults.GENERATE_ANNEALING
)


def cosine_hidden_count(num_hidden: int, step: int, steps: int) -> int:
    """Positions still hidden after ``step`` by the cosine schedule: ⌊n·cos(π/2 · (step+1)/steps)⌋."""
    return math.floor(num_hidden * math.cos(math.pi / 2 * (step + 1) / steps))


def reveal_schedule(num_hidden: int, steps: int) -> list[int]:
    """Visible count after each step for :func:`sample_tokens` starting from ``num_hidden`` hidden positions.

    Every step reveals at least one position and the last reveals all:
    for 54 positions and 5 steps → [3, 11, 23, 38, 54].
    """
    hidden = num_hidden
    seen: list[int] = []
    for step in range(steps):
        hidden = _next_hidden(hidden, num_hidden, step, steps)
        seen.append(num_hidden - hidden)
    return seen


def _next_hidden(hidden: int, num_hidden: int, step: int, steps: int) -> int:
    if step == steps - 1 or hidden <= 1:
        return 0
    return max(1, min(hidden - 1, cosine_hidden_count(num_hidden, step, steps)))


@dataclass(frozen=True)
class TokenSamples:
    """Decoded token rows.

    tokens: (N, S) int64 codebook ids.
    log_likelihood: (N,) float32, natural log (see the module docstring).
    tokens_per_step / visible_per_step: (steps, N, S) int64 / bool, only when recorded;
    hidden positions hold token 0.
    """

    tokens: torch.Tensor
    log_likelihood: torch.Tensor
    tokens_per_step: torch.Tensor | None = None
    visible_per_step: torch.Tensor | None = None


def _visible_order(visible: torch.Tensor, count: int) -> torch.Tensor:
    """(N, S) bool → (N, count) visible positions in ascending order (rows hold equal counts)."""
    return torch.argsort((~visible).to(torch.int8), dim=1, stable=True)[:, :count]


@torch.no_grad()
def argmax_decode(model: TokenModel, cond: Condition | None, num_rows: int, device: torch.device) -> TokenSamples:
    """One pass with every position masked, then argmax (ties → first index). (N, S) tokens."""
    return argmax_with_logits(model, cond, num_rows, device)[0]


@torch.no_grad()
def argmax_with_logits(
    model: TokenModel, cond: Condition | None, num_rows: int, device: torch.device
) -> tuple[TokenSamples, torch.Tensor]:
    """:func:`argmax_decode` and the (N, S, K) float32 logits it came from."""
    tokens = torch.zeros(num_rows, model.seq_length, dtype=torch.long, device=device)
    logits = model.logits(tokens, tokens[:, :0], cond).float()
    best, ids = logits.max(dim=-1)
    log_likelihood = (best - torch.logsumexp(logits, dim=-1)).sum(dim=1)
    return TokenSamples(tokens=ids, log_likelihood=log_likelihood), logits


def row_seeds(generator: torch.Generator, num_rows: int) -> torch.Tensor:
    """Draw ``num_rows`` int64 seeds from ``generator``; row k's seed is the k-th draw whatever num_rows is."""
    return torch.stack(
        [torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)[0] for _ in range(num_rows)]
    ).cpu()


class _RowNoise:
    """Gumbel(0, 1) noise drawn on the CPU from one generator per row, so results do not depend on batching."""

    def __init__(self, seeds: torch.Tensor) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]

    def gumbel(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        rows = [torch.rand(shape, generator=g, dtype=torch.float32) for g in self.generators]
        u = torch.stack(rows).clamp_(min=torch.finfo(torch.float32).tiny)
        return (-torch.log(-torch.log(u))).to(device)


@torch.no_grad()
def sample_tokens(
    model: TokenModel,
    cond: Condition | None,
    seeds: torch.Tensor,
    config: SamplingConfig = CVQMAE_SAMPLING,
    fixed: torch.Tensor | None = None,
    record: bool = False,
    initial_logits: torch.Tensor | None = None,
) -> TokenSamples:
    """Iterative masked decoding that fills every position.

    cond: condition with one row per output row (``Condition.repeat``), or None for VQMAE.
    seeds: (N,) int64, one per row (see :func:`row_seeds`): row i's tokens depend only on its
        condition, ``seeds[i]``, ``fixed[i]`` and the config.
    fixed: optional (N, S) int64 with −1 where the model should sample and a codebook id where
        the caller fixes the token (completion). Every row must fix the same number of positions.
    initial_logits: optional (N, S, K) logits of the starting state when the caller already has
        them — with nothing fixed, every row starts fully masked, so the deterministic pass's
        logits serve as the first step and one transformer pass per hypothesis is saved.
    """
    n, s, k = seeds.shape[0], model.seq_length, model.num_embeddings
    device = next(model.parameters()).device
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
    num_hidden = s - int(visible[0].sum())
    noise = _RowNoise(seeds)
    log_likelihood = torch.zeros(n, device=device)
    per_step_tokens, per_step_visible = [], []
    hidden = num_hidden
    for step in range(config.steps):
        if hidden == 0:
            break
        temp = config.temperature_at(step)
        if step == 0 and initial_logits is not None:
            logits = initial_logits.float()
        else:
            logits = model.logits(tokens, _visible_order(visible, s - hidden), cond).float()
        g1 = noise.gumbel((s, k), device)
        sampled = (logits + temp * g1).argmax(dim=-1)
        score = torch.gather(logits, 2, sampled.unsqueeze(-1)).squeeze(-1)
        confidence = torch.where(visible, torch.inf, score + temp * noise.gumbel((s,), device))
        hidden = _next_hidden(hidden, num_hidden, step, config.steps)
        reveal = ~visible
        if hidden:
            remask = torch.topk(confidence, hidden, dim=1, largest=False).indices
            reveal.scatter_(1, remask, False)
        logp = torch.gather(torch.log_softmax(logits, dim=-1), 2, sampled.unsqueeze(-1)).squeeze(-1)
        log_likelihood += torch.where(reveal, logp, 0.0).sum(dim=1)
        tokens = torch.where(reveal, sampled, tokens)
        visible = visible | reveal
        if record:
            per_step_tokens.append(tokens.clone())
            per_step_visible.append(visible.clone())
    return TokenSamples(
        tokens=tokens,
        log_likelihood=log_likelihood,
        tokens_per_step=torch.stack(per_step_tokens) if record else None,
        visible_per_step=torch.stack(per_step_visible) if record else None,
    )


@torch.no_grad()
def sample_tokens_official(
    model: TokenModel,
    cond: Condition | None,
    num_rows: int,
    rng: np.random.RandomState,
    config: SamplingConfig = CVQMAE_SAMPLING,
    record: bool = False,
) -> TokenSamples:
    """The official ``generate()`` loop, token for token.

    rng: a legacy ``numpy.random.RandomState``; ``RandomState(S)`` draws exactly what the
    official code draws after ``np.random.seed(S)``. Per step it consumes, in order: for each
    row, a shuffle of the visible then of the hidden positions; Gumbel noise (N, S, K); Gumbel
    noise (N, S). The result keeps the official quirks: one position is still hidden after
    the last step and holds code 0; the count to re-mask is row 0's; ``<=`` at the cut.
    """
    s, k = model.seq_length, model.num_embeddings
    device = next(model.parameters()).device
    patches = np.zeros((num_rows, s), dtype=np.int64)
    mask = np.zeros((num_rows, s), dtype=np.int64)  # 1 = visible
    log_likelihood = torch.zeros(num_rows, device=device)
    per_step_tokens, per_step_visible = [], []
    for step in range(config.steps):
        r = (step + 1) / config.steps
        temp = config.temperature_at(step)
        order = np.empty((num_rows, s), dtype=np.int64)
        for b in range(num_rows):
            shown = np.flatnonzero(mask[b] == 1).astype(np.int64)
            hidden = np.flatnonzero(mask[b] == 0).astype(np.int64)
            rng.shuffle(shown)
            rng.shuffle(hidden)
            order[b] = np.concatenate([shown, hidden])
        kept = int(mask[0].sum())
        tokens_t = torch.from_numpy(patches).to(device)
        order_t = torch.from_numpy(order[:, :kept].copy()).to(device)
        logits = model.logits(tokens_t, order_t, cond).float()
        g1 = torch.from_numpy((temp * rng.gumbel(size=(num_rows, s, k))).astype(np.float32)).to(device)
        sampled = (logits + g1).argmax(dim=-1)
        is_mask = torch.from_numpy(mask == 0).to(device)
        score = torch.gather(logits, 2, sampled.unsqueeze(-1)).squeeze(-1)
        score = torch.where(is_mask, score, torch.inf)
        sampled = torch.where(is_mask, sampled, tokens_t)
        mask_len = math.floor(s * math.cos(math.pi / 2 * r))
        mask_len = max(1, min(int(is_mask[0].sum()) - 1, mask_len))
        g2 = torch.from_numpy((temp * rng.gumbel(size=(num_rows, s))).astype(np.float32)).to(device)
        confidence = score + g2
        cut = torch.sort(confidence, dim=-1).values[:, mask_len - 1 : mask_len]
        remask = confidence <= cut
        logp = torch.gather(torch.log_softmax(logits, dim=-1), 2, sampled.unsqueeze(-1)).squeeze(-1)
        log_likelihood += torch.where(is_mask & ~remask, logp, 0.0).sum(dim=1)
        new_tokens = torch.where(remask, 0, sampled)
        patches = new_tokens.cpu().numpy()
        mask = (~remask).long().cpu().numpy()
        if record:
            per_step_tokens.append(new_tokens.clone())
            per_step_visible.append(~remask)
    return TokenSamples(
        tokens=torch.from_numpy(patches).to(device),
        log_likelihood=log_likelihood,
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
    result, logits = argmax_with_logits(model, cond, b, tokens.device)
    combined = torch.where(hidden, result.tokens, tokens.long())
    logp = torch.gather(torch.log_softmax(logits, dim=-1), 2, combined.unsqueeze(-1)).squeeze(-1)
    return TokenSamples(tokens=combined, log_likelihood=logp.sum(dim=1), visible_per_step=(~hidden)[None])
