"""The one scorer: every hypothesis gets its log-likelihood from the same estimator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mega_runtime.decoding.samplers import all_masked_logits, argmax_decode, row_seeds, sample_tokens
from mega_runtime.decoding.schedule import SamplingConfig
from mega_runtime.decoding.scoring import ScoringConfig, score_tokens, scoring_blocks, scoring_order
from mega_runtime.mega import Mega
from mega_runtime.models.mesh_vqvae import MeshVQVAE
from tests.runtime.tiny_models import randomize, tiny_cvqmae, tiny_vqmae


@pytest.fixture(scope="module")
def model():
    return tiny_cvqmae()


@pytest.fixture(scope="module")
def cond(model):
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.condition(images)


@pytest.fixture(scope="module")
def samples(model, cond):
    return sample_tokens(model, cond.repeat(2), row_seeds(torch.Generator().manual_seed(0), 6)).tokens


def test_blocks_are_a_fixed_partition_spread_over_the_sequence():
    blocks = scoring_blocks(54)
    assert [len(b) for b in blocks] == [16, 38]
    assert sorted(torch.cat(blocks).tolist()) == list(range(54))
    assert torch.equal(scoring_order(54), scoring_order(54))
    first = sorted(blocks[0].tolist())
    assert max(b - a for a, b in itertools.pairwise(first)) <= 5  # no long run of unscored context
    assert [len(b) for b in scoring_blocks(54, ScoringConfig(steps=1))] == [54]


def test_score_is_the_block_factorised_log_likelihood(model, cond, samples):
    rows = cond.repeat(2)
    first, second = scoring_blocks(54)
    with torch.no_grad():
        prior = torch.log_softmax(all_masked_logits(model, rows, 6, torch.device("cpu")), -1)
        visible = first.sort().values.repeat(6, 1)
        later = torch.log_softmax(model.logits(samples, visible, rows).float(), -1)
    expected = prior.gather(2, samples[..., None])[:, first, 0].sum(1) + later.gather(2, samples[..., None])[
        :, second, 0
    ].sum(1)
    torch.testing.assert_close(score_tokens(model, rows, samples), expected, atol=1e-4, rtol=1e-6)


def test_a_sampled_row_that_equals_the_argmax_row_gets_the_argmax_score(model, cond, samples):
    argmax = argmax_decode(model, cond, 3, torch.device("cpu")).tokens
    mixed = samples.clone()
    mixed[1] = argmax[0]  # row 1 belongs to image 0 (cond.repeat(2)): a "sampled" row equal to hypothesis 0
    ll = score_tokens(model, cond.repeat(2), mixed)
    alone = score_tokens(model, cond.rows([0]), argmax[:1])
    torch.testing.assert_close(ll[1], alone[0], atol=1e-5, rtol=0)


def test_shared_all_masked_logits_give_the_same_scores_as_computing_them(model, cond, samples):
    rows = cond.repeat(2)
    initial = all_masked_logits(model, cond, 3, torch.device("cpu")).repeat_interleave(2, dim=0)
    shared = score_tokens(model, rows, samples, initial_logits=initial)
    torch.testing.assert_close(shared, score_tokens(model, rows, samples), atol=1e-5, rtol=0)


def test_scores_do_not_depend_on_the_rows_batched_with_them(model, cond, samples):
    rows = cond.repeat(2)
    full = score_tokens(model, rows, samples)
    for keep in ([4], [0, 5], [3, 1]):
        part = score_tokens(model, rows.rows(keep), samples[keep])
        torch.testing.assert_close(full[keep], part, atol=1e-5, rtol=0)
    assert (full < 0).all() and full.dtype == torch.float32


def test_scoring_costs_one_batched_pass_per_block_after_the_first(model, cond, samples):
    calls = []
    original = model.logits

    def counting(tokens, order, c, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, order, c, **kwargs)

    model.logits = counting
    try:
        initial = all_masked_logits(model, cond, 3, torch.device("cpu")).repeat_interleave(2, dim=0)
        calls.clear()
        score_tokens(model, cond.repeat(2), samples, initial_logits=initial)
        assert calls == [6]
        calls.clear()
        score_tokens(model, cond.repeat(2), samples, ScoringConfig(steps=3), initial_logits=initial)
        assert calls == [6, 6]
    finally:
        del model.logits


def test_unconditional_model_is_scored_the_same_way():
    vq = tiny_vqmae()
    tokens = sample_tokens(vq, None, row_seeds(torch.Generator().manual_seed(1), 3)).tokens
    ll = score_tokens(vq, None, tokens)
    assert ll.shape == (3,) and torch.isfinite(ll).all()
    torch.testing.assert_close(score_tokens(vq, None, tokens[1:2]), ll[1:2], atol=1e-5, rtol=0)


def test_scoring_rejects_wrong_lengths(model, cond):
    with pytest.raises(ValueError, match="positions"):
        score_tokens(model, cond, torch.zeros(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="scoring steps"):
        ScoringConfig(steps=0)


@pytest.fixture(scope="module")
def mega(assets_dir, model):
    mesh = randomize(MeshVQVAE.from_connection_folder(assets_dir / "connection_matrices"), seed=3)
    return Mega(model, mesh, tiny_vqmae())


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))


def test_reconstruct_scores_hypothesis_zero_like_a_sample_with_the_same_tokens(mega, images):
    # one step at temperature 0: every "sample" is the all-masked argmax, i.e. hypothesis 0's tokens
    out = mega.reconstruct(images, 3, torch.Generator().manual_seed(0), SamplingConfig(steps=1, temperature=0.0))
    assert torch.equal(out.tokens[:, 1], out.tokens[:, 0]) and torch.equal(out.tokens[:, 2], out.tokens[:, 0])
    torch.testing.assert_close(out.log_likelihood[:, 1:], out.log_likelihood[:, :1].expand(2, 2), atol=1e-5, rtol=0)


def test_reconstruct_scores_every_hypothesis_with_the_scorer(mega, images):
    for sampler, rng in (("full", None), ("official", np.random.RandomState(0))):
        out = mega.reconstruct(images, 4, torch.Generator().manual_seed(2), sampler=sampler, numpy_rng=rng)
        cond = mega.cvqmae.condition(images)
        expected = score_tokens(mega.cvqmae, cond.repeat(4), out.tokens.flatten(0, 1)).reshape(2, 4)
        torch.testing.assert_close(out.log_likelihood, expected, atol=1e-4, rtol=0)
        alone = mega.reconstruct(images[1:], 4, torch.Generator().manual_seed(2), sampler=sampler, numpy_rng=rng)
        if sampler == "full":  # the official sampler's numpy stream depends on the batch by design
            torch.testing.assert_close(out.log_likelihood[1], alone.log_likelihood[0], atol=1e-4, rtol=0)


def test_generate_and_complete_return_scored_samples(mega, images):
    samples, _ = mega.generate(2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples.log_likelihood, score_tokens(mega.vqmae, None, samples.tokens))
    fixed = torch.full((2, 54), -1, dtype=torch.long)
    fixed[:, :5] = 7
    done, _ = mega.complete(images, fixed, torch.Generator().manual_seed(2))
    assert done.log_likelihood.shape == (2,) and torch.isfinite(done.log_likelihood).all()


def test_one_scoring_step_scores_from_the_all_masked_logits_and_changes_nothing_else(mega, images):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    default = mega.reconstruct(images, 4, gen())
    free = mega.reconstruct(images, 4, gen(), scoring=ScoringConfig(steps=1))
    skipped = mega.reconstruct(images, 4, gen(), scoring=None)
    assert skipped.log_likelihood is None
    for out in (free, skipped):
        assert torch.equal(out.tokens, default.tokens) and torch.equal(out.vertices, default.vertices)
        assert torch.equal(out.vertex_std, default.vertex_std) and torch.equal(out.cam, default.cam)
    # one block: Σ over all 54 positions of log p(token | image) from the all-masked pass
    cond = mega.cvqmae.condition(images)
    empty = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        logits = mega.cvqmae.logits(torch.zeros(2, 54, dtype=torch.long), empty, cond)
    log_probs = torch.log_softmax(logits, dim=-1).repeat_interleave(4, dim=0)
    expected = torch.gather(log_probs, 2, free.tokens.flatten(0, 1).unsqueeze(-1)).sum(dim=(1, 2)).reshape(2, 4)
    torch.testing.assert_close(free.log_likelihood, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(free.log_likelihood, default.log_likelihood)


def test_one_scoring_step_runs_no_transformer_pass_beyond_the_decoding(mega, images, monkeypatch):
    passes = []
    original = type(mega.cvqmae).logits
    monkeypatch.setattr(type(mega.cvqmae), "logits", lambda self, *a, **k: passes.append(1) or original(self, *a, **k))
    mega.reconstruct(images, 1, scoring=ScoringConfig(steps=1))
    assert len(passes) == 1  # the all-masked pass only
    passes.clear()
    mega.reconstruct(images, 1)
    assert len(passes) == 2  # … plus the default scorer's second block
