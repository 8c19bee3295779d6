"""The one scorer: the log-likelihood every hypothesis carries, whichever decoder produced it.

Estimator (block-factorised likelihood with a fixed reveal order): the S positions are put
in one fixed order (:func:`scoring_order`, the same for every sequence, image and batch)
and cut into ``steps`` blocks by the cosine reveal schedule (for 54 positions and 2 steps:
16, then 38). A sequence x scores

    log q(x) = Σ_blocks Σ_{i ∈ block} log p(x_i | x_{earlier blocks}, image)

with temperature-1 log-softmax of the model's logits. Because the order and the blocks are
fixed, q is one normalised distribution over all token sequences, so the score is defined
for any sequence (argmax decode, default or official samples, completions, even a code 0
left by the official sampler) and compares them like with like. It is deterministic, and a
row's score depends only on its tokens and its condition (up to float rounding of batched
matrix products).

Cost: the first block is scored from the all-masked logits, which do not depend on the
tokens; callers that already have them (the deterministic decode) pass them in, so scoring
costs ``steps − 1`` transformer passes over all rows together — one pass with the default
two steps, against four per hypothesis for the default 5-step sampler (see
docs/runtime-core.md for measured times).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from mega_runtime.decoding.schedule import RevealSchedule, SamplingConfig
from mega_runtime.models.masked_transformer import Condition, TokenModel

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class ScoringConfig:
    """Settings of the scorer. steps: number of blocks (transformer passes, the first one shareable)."""

    steps: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"scoring steps must be at least 1, got {self.steps}")


DEFAULT_SCORING = ScoringConfig()


def scoring_order(num_positions: int) -> torch.Tensor:
    """(S,) int64 fixed reveal order: positions sorted by ``frac(i · 0.618…)`` (golden-ratio sequence).

    Every prefix of the order is spread evenly over the token sequence, so each block sees
    context from the whole body. The same for every call.
    """
    keys = torch.tensor([(i * _GOLDEN) % 1.0 for i in range(num_positions)], dtype=torch.float64)
    return torch.argsort(keys, stable=True)


def scoring_blocks(num_positions: int, config: ScoringConfig = DEFAULT_SCORING) -> list[torch.Tensor]:
    """The fixed blocks of positions, in scoring order: a list of ``config.steps`` (n_k,) int64 tensors."""
    order = scoring_order(num_positions)
    schedule = RevealSchedule.set_timesteps(num_positions, SamplingConfig(steps=config.steps))
    bounds = [0] + [schedule.visible_after(step) for step in range(config.steps)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@torch.no_grad()
def score_tokens(
    model: TokenModel,
    cond: Condition | None,
    tokens: torch.Tensor,
    config: ScoringConfig = DEFAULT_SCORING,
    initial_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each token row under the fixed-order block estimator (module docstring).

    tokens: (N, S) int64 codebook ids; cond: condition with N rows (None for VQMAE).
    initial_logits: optional (N, S, K) all-masked logits of the same rows (they do not depend on
    the tokens); when given, the first block costs no transformer pass.
    Returns (N,) float32 natural log, ≤ 0. All N rows go through each pass together.
    """
    n, s = tokens.shape
    if s != model.seq_length:
        raise ValueError(f"tokens must have {model.seq_length} positions, got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    tokens = tokens.to(device=device, dtype=torch.long)
    total = torch.zeros(n, dtype=torch.float32, device=device)
    seen = torch.zeros(s, dtype=torch.bool)
    for index, block in enumerate(scoring_blocks(s, config)):
        block = block.to(device)
        if index == 0 and initial_logits is not None:
            block_logits = initial_logits.float()[:, block]
        else:
            visible = torch.nonzero(seen).squeeze(1).to(device).repeat(n, 1)
            block_logits = model.logits(tokens, visible, cond, positions=block.repeat(n, 1)).float()
        log_probs = torch.log_softmax(block_logits, dim=-1)
        total += torch.gather(log_probs, 2, tokens[:, block].unsqueeze(-1)).squeeze(-1).sum(dim=1)
        seen[block.cpu()] = True
    return total
