"""Properties of the token decoders (tiny random models; no reference data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mega_runtime.decoding.sampling import (
    VQMAE_SAMPLING,
    SamplingConfig,
    argmax_decode,
    reveal_schedule,
    row_seeds,
    sample_tokens,
    sample_tokens_official,
)
from tests.runtime.tiny_models import tiny_cvqmae, tiny_vqmae


@pytest.fixture(scope="module")
def model():
    return tiny_cvqmae()


@pytest.fixture(scope="module")
def cond(model):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.condition(images)


def _seeds(seed: int, n: int) -> torch.Tensor:
    return row_seeds(torch.Generator().manual_seed(seed), n)


def test_reveal_schedule_follows_the_cosine_rule_and_ends_full():
    assert reveal_schedule(54, 5) == [3, 11, 23, 38, 54]
    assert reveal_schedule(54, 1) == [54]
    assert reveal_schedule(10, 20)[-1] == 10


def test_default_sampler_reveals_the_schedule_per_step_and_fills_every_token(model, cond):
    out = sample_tokens(model, cond.repeat(3), _seeds(0, 6), record=True)
    assert out.visible_per_step.sum(-1).tolist() == [[n] * 6 for n in (3, 11, 23, 38, 54)]
    assert out.visible_per_step[-1].all()
    assert out.tokens.shape == (6, 54) and out.tokens.dtype == torch.int64
    assert ((out.tokens >= 0) & (out.tokens < 512)).all()
    assert torch.isfinite(out.log_likelihood).all() and (out.log_likelihood < 0).all()


def test_same_seed_gives_same_hypotheses(model, cond):
    a = sample_tokens(model, cond.repeat(4), _seeds(7, 8))
    b = sample_tokens(model, cond.repeat(4), _seeds(7, 8))
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.log_likelihood, b.log_likelihood)


def test_different_seeds_give_different_hypotheses(model, cond):
    a = sample_tokens(model, cond.repeat(4), _seeds(7, 8))
    b = sample_tokens(model, cond.repeat(4), _seeds(8, 8))
    assert not torch.equal(a.tokens, b.tokens)
    # hypotheses of one image differ from each other too
    assert len({tuple(row) for row in a.tokens[:4].tolist()}) > 1


def test_a_hypothesis_does_not_change_when_the_batch_around_it_changes(model, cond):
    seeds = _seeds(3, 8)
    full = sample_tokens(model, cond.repeat(4), seeds)
    alone = sample_tokens(model, cond.repeat(4).rows([2, 5]), seeds[[2, 5]])
    assert torch.equal(full.tokens[[2, 5]], alone.tokens)
    torch.testing.assert_close(full.log_likelihood[[2, 5]], alone.log_likelihood, atol=1e-4, rtol=0)


def test_row_seeds_do_not_depend_on_how_many_are_drawn():
    assert torch.equal(_seeds(5, 3), _seeds(5, 10)[:3])


def test_argmax_decode_is_the_all_masked_argmax(model, cond):
    out = argmax_decode(model, cond, 2, torch.device("cpu"))
    tokens = torch.zeros(2, 54, dtype=torch.long)
    with torch.no_grad():
        logits = model.logits(tokens, tokens[:, :0], cond)
    assert torch.equal(out.tokens, logits.argmax(-1))


def test_official_sampler_leaves_one_position_masked_with_code_zero(model, cond):
    rows = cond.repeat(2)
    out = sample_tokens_official(model, rows, 4, np.random.RandomState(0), record=True)
    assert out.visible_per_step.sum(-1)[:, 0].tolist() == [3, 11, 23, 38, 53]
    hidden = ~out.visible_per_step[-1]
    assert hidden.sum(-1).tolist() == [1, 1, 1, 1]
    assert (out.tokens[hidden] == 0).all()


def test_official_sampler_is_reproducible_from_the_numpy_seed(model, cond):
    a = sample_tokens_official(model, cond.repeat(2), 4, np.random.RandomState(11))
    b = sample_tokens_official(model, cond.repeat(2), 4, np.random.RandomState(11))
    assert torch.equal(a.tokens, b.tokens)


def test_completion_keeps_the_fixed_tokens_and_fills_the_rest(model, cond):
    fixed = torch.full((4, 54), -1, dtype=torch.long)
    fixed[:, :20] = torch.arange(20) * 7
    out = sample_tokens(model, cond.repeat(2), _seeds(1, 4), fixed=fixed, record=True)
    assert torch.equal(out.tokens[:, :20], fixed[:, :20])
    assert out.visible_per_step[-1].all()
    first = 20 + 34 - math.floor(34 * math.cos(math.pi / 10))  # the cosine schedule on the 34 free positions
    assert out.visible_per_step[0].sum(-1).tolist() == [first] * 4


def test_completion_rejects_rows_with_different_fixed_counts(model, cond):
    fixed = torch.full((2, 54), -1, dtype=torch.long)
    fixed[0, 0] = 3
    with pytest.raises(ValueError, match="same number"):
        sample_tokens(model, cond, _seeds(1, 2), fixed=fixed)


def test_unconditional_generation_fills_every_token_with_the_pretrained_rules():
    model = tiny_vqmae()
    out = sample_tokens(model, None, _seeds(2, 3), VQMAE_SAMPLING, record=True)
    assert out.tokens_per_step.shape == (20, 3, 54)
    assert out.visible_per_step[-1].all()
    again = sample_tokens(model, None, _seeds(2, 3), VQMAE_SAMPLING)
    assert torch.equal(out.tokens, again.tokens)


def test_sampling_config_rejects_nonsense():
    with pytest.raises(ValueError, match="steps"):
        SamplingConfig(steps=0)
    with pytest.raises(ValueError, match="annealing"):
        SamplingConfig(annealing="cubic")
    assert SamplingConfig(temperature=4.5).temperature_at(0) == pytest.approx(4.5 * 0.8)
    assert VQMAE_SAMPLING.temperature_at(0) == pytest.approx(0.95 * (1.3 * 0.95) ** 5)
