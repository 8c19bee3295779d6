"""oneDNN's products for the eager token transformers (``--compile`` on an x86-64 CPU): same tokens, logits
within rounding, and the plain products wherever the kernel does not apply."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mega_runtime.decoding.samplers import all_masked_logits, row_seeds, sample_tokens
from mega_runtime.models import cpu_kernels
from mega_runtime.models.config import VQMAEConfig
from mega_runtime.models.cpu_kernels import OneDNNLinears, dense, onednn_supported, run_linear, use_onednn
from mega_runtime.models.masked_transformer import CVQMAE, VQMAE
from tests.runtime.tiny_models import TINY, TINY_VIT, randomize

needs_onednn = pytest.mark.skipif(
    not onednn_supported(), reason="oneDNN's linear kernel is used on x86-64 CPUs with a oneDNN build of PyTorch only"
)
WIDER = dataclasses.replace(TINY, emb_dim=64, encoder_layer=2, decoder_layer=2)


def _models():
    cvqmae = randomize(CVQMAE(dataclasses.replace(TINY_VIT, transformer=WIDER)), seed=11)
    return cvqmae, randomize(VQMAE(VQMAEConfig(WIDER)), seed=12)


def _switch(model, on: bool) -> int:
    return use_onednn(model.encoder, on) + use_onednn(model.decoder, on)


def _ran_onednn(fn) -> bool:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return any("_linear_pointwise" in event.name for event in prof.events())


@needs_onednn
def test_onednn_products_give_the_same_tokens_and_logits_within_rounding():
    cvqmae, vqmae = _models()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    results = {}
    with torch.no_grad():
        for on in (False, True):
            for model in (cvqmae, vqmae):
                parts = [*model.encoder.modules(), *model.decoder.modules()]
                assert _switch(model, on) == (sum(isinstance(m, OneDNNLinears) for m in parts) if on else 0)
            cond = cvqmae.condition(images).repeat(8)
            first = all_masked_logits(cvqmae, cond, 16, torch.device("cpu"))
            samples = sample_tokens(cvqmae, cond, row_seeds(torch.Generator().manual_seed(3), 16))
            prior = sample_tokens(vqmae, None, row_seeds(torch.Generator().manual_seed(4), 6))
            ran = _ran_onednn(lambda c=cond: all_masked_logits(cvqmae, c, 16, torch.device("cpu")))
            results[on] = (first, samples.tokens, prior.tokens, ran)
    plain, fast = results[False], results[True]
    assert not plain[3] and fast[3], "the switch decides which kernel runs"
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[1], plain[1]) and torch.equal(fast[2], plain[2])


@needs_onednn
@pytest.mark.parametrize("gelu", [False, True], ids=["linear", "linear-gelu"])
def test_dense_with_onednn_matches_linear_within_rounding(gelu):
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(3, 7, 64, generator=gen), torch.randn(96, 64, generator=gen) / 8, torch.randn(96)
    expected = F.linear(x, weight, bias)
    expected = F.gelu(expected) if gelu else expected
    with torch.no_grad():
        assert _ran_onednn(lambda: dense(x, weight, bias, True, gelu))
        torch.testing.assert_close(dense(x, weight, bias, True, gelu), expected, rtol=1e-5, atol=1e-5)
        # a column slice of the input (not contiguous) and no bias
        sliced = torch.randn(3, 7, 128, generator=gen)[..., ::2]
        torch.testing.assert_close(dense(sliced, weight, None, True), F.linear(sliced, weight), rtol=1e-5, atol=1e-5)


def test_dense_falls_back_to_the_plain_products_for_autograd_autocast_and_float64():
    gen = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(32, 16, generator=gen), torch.randn(32, generator=gen)
    x = torch.randn(5, 16, generator=gen, requires_grad=True)
    out = dense(x, weight, bias, onednn=True)
    assert torch.equal(out, F.linear(x, weight, bias)) and out.grad_fn is not None
    out.sum().backward()
    assert x.grad is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _ran_onednn(lambda: dense(x, weight, bias, onednn=True))
        out = dense(x, weight, bias, onednn=True)
        assert out.dtype == torch.bfloat16 and torch.equal(out, F.linear(x, weight, bias))
    x64, w64 = x.detach().double(), weight.double()
    with torch.no_grad():
        assert torch.equal(dense(x64, w64, None, onednn=True, gelu=True), F.gelu(F.linear(x64, w64)))


def test_use_onednn_switches_nothing_on_off_x86_64(monkeypatch):
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "arm64")
    cvqmae, _ = _models()
    assert _switch(cvqmae, True) == 0
    assert {m.onednn for m in cvqmae.modules() if isinstance(m, OneDNNLinears)} == {False}


@needs_onednn
def test_the_all_masked_encoding_cache_keeps_each_kernels_own_result():
    cvqmae, _ = _models()
    tokens = torch.zeros(4, 54, dtype=torch.long)
    empty = tokens[:, :0]
    with torch.no_grad():
        plain = cvqmae.encode(tokens, empty)
        _switch(cvqmae, True)
        fast = cvqmae.encode(tokens, empty)
        assert len(cvqmae._empty_encoding) == 2, "switching the kernel must not reuse the other kernel's encoding"
        assert torch.equal(fast, cvqmae.encoder(tokens, empty))
        _switch(cvqmae, False)
        assert torch.equal(cvqmae.encode(tokens, empty), plain)


def test_run_linear_calls_the_module_itself_wherever_onednn_does_not_run():
    layer = torch.nn.Linear(16, 8)
    calls = []
    layer.register_forward_hook(lambda module, args, out: calls.append(out.dtype))
    x = torch.randn(3, 16, requires_grad=True)
    out = run_linear(layer, x, onednn=True)  # autograd: the module runs, its hooks with it
    assert calls == [torch.float32] and out.grad_fn is not None
    with torch.no_grad():
        run_linear(layer, x, onednn=False)
        assert len(calls) == 2
        run_linear(layer, x, onednn=True)
    assert len(calls) == (2 if onednn_supported() else 3), "oneDNN's kernel replaces the module's call where it runs"
