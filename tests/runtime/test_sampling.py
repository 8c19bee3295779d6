"""Properties of the token samplers (tiny random models; no reference data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mega_runtime.decoding.samplers import (
    NumpySource,
    argmax_decode,
    row_seeds,
    sample_tokens,
    sample_tokens_official,
)
from mega_runtime.decoding.schedule import VQMAE_SAMPLING, SamplingConfig
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


def test_default_sampler_reveals_the_schedule_per_step_and_fills_every_token(model, cond):
    out = sample_tokens(model, cond.repeat(3), _seeds(0, 6), record=True)
    assert out.visible_per_step.sum(-1).tolist() == [[n] * 6 for n in (3, 11, 23, 38, 54)]
    assert out.visible_per_step[-1].all()
    assert out.tokens.shape == (6, 54) and out.tokens.dtype == torch.int64
    assert ((out.tokens >= 0) & (out.tokens < 512)).all()
    assert out.log_likelihood is None  # the samplers do not score; decoding.scoring does


def test_same_seed_gives_same_hypotheses(model, cond):
    a = sample_tokens(model, cond.repeat(4), _seeds(7, 8))
    b = sample_tokens(model, cond.repeat(4), _seeds(7, 8))
    assert torch.equal(a.tokens, b.tokens)


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


def test_official_sampler_takes_a_random_state_or_the_same_source_explicitly(model, cond):
    a = sample_tokens_official(model, cond.repeat(2), 4, np.random.RandomState(5), record=True)
    b = sample_tokens_official(model, cond.repeat(2), 4, NumpySource(np.random.RandomState(5), 4), record=True)
    assert torch.equal(a.tokens_per_step, b.tokens_per_step)


class ReplaySource:
    """A test source: ascending encoder order and Gumbel noise replayed from a fixed numpy stream.

    Two instances with the same seed hand out identical arrays, in the order they are asked for.
    """

    def __init__(self, seed: int, num_rows: int) -> None:
        self.rng = np.random.RandomState(seed)
        self.num_rows = num_rows
        self.draws: list[tuple[int, ...]] = []

    def visible_order(self, visible: torch.Tensor) -> torch.Tensor:
        return torch.argsort((~visible).to(torch.int8), dim=1, stable=True)

    def gumbel(self, shape: tuple[int, ...]) -> torch.Tensor:
        self.draws.append(shape)
        return torch.from_numpy(self.rng.gumbel(size=(self.num_rows, *shape)))


@pytest.mark.parametrize("temperature", [1.0, 4.5])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_and_official_samplers_commit_the_same_tokens_given_the_same_noise(
    model, cond, temperature, rows, seed
):
    """The default sampler is the official algorithm except for its documented differences.

    Same model, condition, encoder order and noise → at every step the same positions are
    visible and hold the same tokens, except at the last step, where the official loop re-masks
    one position (code 0) and the default fills it. The per-row count versus row 0's and the
    ``<=`` cut only differ on exact ties, which continuous noise does not produce.
    """
    config = SamplingConfig(steps=5, temperature=temperature)
    rows_cond = cond.rows([0]).repeat(rows)
    default_source, official_source = ReplaySource(seed, rows), ReplaySource(seed, rows)
    default = sample_tokens(model, rows_cond, default_source, config, record=True)
    official = sample_tokens_official(model, rows_cond, rows, official_source, config, record=True)
    assert default_source.draws == official_source.draws == [(54, 512), (54,)] * 5
    last = config.steps - 1
    for step in range(last):
        assert torch.equal(default.visible_per_step[step], official.visible_per_step[step]), step
        assert torch.equal(default.tokens_per_step[step], official.tokens_per_step[step]), step
    shown = official.visible_per_step[last]
    assert shown.sum(-1).tolist() == [53] * rows and default.visible_per_step[last].all()
    assert torch.equal(default.tokens[shown], official.tokens[shown])
    assert (official.tokens[~shown] == 0).all()
    # the steps actually sampled something other than the argmax, so the comparison has teeth
    assert not torch.equal(default.tokens, argmax_decode(model, rows_cond, rows, torch.device("cpu")).tokens)
