"""Exact-mode speed-ups change no bit: reused first-block keys/values and logits of the asked positions only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mega_runtime.decoding.samplers import row_seeds, sample_tokens
from mega_runtime.decoding.scoring import score_tokens
from mega_runtime.models.config import VQMAEConfig
from mega_runtime.models.masked_transformer import CVQMAE, VQMAE, Condition, ConditionalDecoder, Decoder
from tests.runtime.tiny_models import TINY, TINY_VIT, randomize

TWO_BLOCKS = dataclasses.replace(TINY, decoder_layer=2, encoder_layer=2)


@pytest.fixture(params=[1, 2], ids=["one-decoder-block", "two-decoder-blocks"])
def models(request):
    t = TINY if request.param == 1 else TWO_BLOCKS
    cvqmae = randomize(CVQMAE(dataclasses.replace(TINY_VIT, transformer=t)), seed=5)
    return cvqmae, randomize(VQMAE(VQMAEConfig(t)), seed=6)


@pytest.fixture
def plain(monkeypatch):
    """A context switch: ``with plain(): ...`` runs the decoders without the shortcuts."""

    class Switch:
        def __enter__(self):
            for cls in (ConditionalDecoder, Decoder):
                monkeypatch.setattr(cls, "reuse_invariants", False)

        def __exit__(self, *exc):
            for cls in (ConditionalDecoder, Decoder):
                monkeypatch.setattr(cls, "reuse_invariants", True)

    return Switch


def _problem(n: int, visible: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 512, (n, 54), generator=gen)
    order = torch.stack([torch.randperm(54, generator=gen) for _ in range(n)])
    return tokens, order[:, :visible], order[:, visible:]


def test_reused_keys_values_and_asked_positions_give_bit_identical_logits(models, plain):
    cvqmae, vqmae = models
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with plain():
            cond_plain = cvqmae.condition(images)
        cond = cvqmae.condition(images)
        assert cond.kv0 is not None and cond_plain.kv0 is None
        for rows, visible in [(1, 0), (8, 3), (8, 23), (8, 50), (8, 53)]:
            tokens, shown, hidden = _problem(2 * rows, visible, seed=visible)
            for model, c, cp in [(cvqmae, cond.repeat(rows), cond_plain.repeat(rows)), (vqmae, None, None)]:
                with plain():
                    reference = model.logits(tokens, shown, cp)
                assert torch.equal(model.logits(tokens, shown, c), reference)
                picked = torch.gather(reference, 1, hidden.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
                assert torch.equal(model.logits(tokens, shown, c, positions=hidden), picked)


def test_a_condition_without_cached_keys_values_gives_the_same_logits(models):
    cvqmae, _ = models
    with torch.no_grad():
        cond = cvqmae.condition(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))).repeat(16)
        bare = Condition(cond.tokens, cond.rot6d, cond.cam)
        tokens, shown, _ = _problem(16, 11, seed=3)
        assert torch.equal(cvqmae.logits(tokens, shown, cond), cvqmae.logits(tokens, shown, bare))


def test_sampled_and_scored_tokens_are_identical_with_and_without_the_shortcuts(models, plain):
    cvqmae, vqmae = models
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    seeds = row_seeds(torch.Generator().manual_seed(8), 12)
    fixed = torch.full((12, 54), -1)
    fixed[:, ::5] = 7

    def run():
        cond = cvqmae.condition(images).repeat(6)
        image_rows = sample_tokens(cvqmae, cond, seeds, record=True)
        free_rows = sample_tokens(vqmae, None, seeds, fixed=fixed)
        return (
            image_rows.tokens,
            image_rows.tokens_per_step,
            score_tokens(cvqmae, cond, image_rows.tokens),
            free_rows.tokens,
            score_tokens(vqmae, None, free_rows.tokens),
        )

    with torch.no_grad():
        with plain():
            reference = run()
        for got, want in zip(run(), reference, strict=True):
            assert torch.equal(got, want)


def test_the_all_masked_encoding_is_reused_bit_for_bit_and_forgotten_when_the_weights_change(models):
    cvqmae, vqmae = models
    for model in (cvqmae, vqmae):
        for rows in (1, 3):
            tokens = torch.zeros(rows, 54, dtype=torch.long)
            empty = tokens[:, :0]
            with torch.no_grad():
                fresh = model.encoder(tokens, empty)
                first, again = model.encode(tokens, empty), model.encode(tokens, empty)
            assert torch.equal(first, fresh) and torch.equal(again, fresh)
            again.add_(1.0)  # a caller writing into its copy does not reach the cache
            with torch.no_grad():
                assert torch.equal(model.encode(tokens, empty), fresh)
        with torch.no_grad():
            model.encoder.cls_token.add_(0.5)  # a training step or a reload bumps the version counter
            changed = model.encode(torch.zeros(1, 54, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long))
            assert torch.equal(changed, model.encoder(torch.zeros(1, 54, dtype=torch.long), torch.zeros(1, 0).long()))
        assert not torch.equal(changed, fresh[:1])
        # with autograd on, nothing is cached: gradients reach the encoder
        out = model.encode(torch.zeros(1, 54, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long))
        out.sum().backward()
        assert model.encoder.cls_token.grad is not None
