"""The backbone compiled ahead of time (``--compile`` on the CPU): built once, loaded by later processes, never stale.

The two real AOTInductor builds of a small conv + BatchNorm network (one image, and a dynamic batch: ~10 s each, a
C++ compiler is needed: skipped without one) serve every test that needs a package; the others check the key and
the fallbacks without building.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from mega_runtime.models import backbone_package
from mega_runtime.models.backbone_package import package_key, use_packaged_forward

pytestmark = [
    pytest.mark.slow,
    # emitted inside torch while AOTInductor builds, not by this project's code
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


def _network(seed: int = 0) -> nn.Module:
    """(B, 3, 32, 32) → (B, 16, 8, 8): two strided conv + BatchNorm + ReLU blocks with non-trivial statistics."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.3)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1 + 0.1 * torch.randn(module.num_features, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.num_features, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(1 + 0.1 * torch.rand(module.num_features, generator=gen))
    return net.eval()


def _images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The folder holding the two real packages of ``_network()`` for 3×32×32 inputs (batch 1, dynamic batch)."""
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("AOTInductor needs a C++ compiler on the CPU; none is installed")
    folder = tmp_path_factory.mktemp("compiled")
    net = _network()
    use_packaged_forward(net, folder)
    with torch.inference_mode():
        net(_images(3))
        net(_images(1))
        net(_images(5))  # served by the dynamic batch's package
    assert len(list(folder.glob("*.pt2"))) == 2, "one package per backbone, input size and batch kind"
    return folder


def _refuse_to_build(*args, **kwargs):
    pytest.fail("built a package where one should have been loaded or none built")


def test_a_later_process_loads_the_package_and_gets_the_eager_features_at_any_batch(built, monkeypatch):
    monkeypatch.setattr(backbone_package, "build_package", _refuse_to_build)
    net = _network()  # a fresh module with the same weights, as a new process has
    eager = [net(_images(b)) for b in (1, 3, 7)]
    packaged = use_packaged_forward(net, built)
    with torch.inference_mode():
        got = [net(_images(b)) for b in (1, 3, 7)]
    assert len(packaged._loaded) == 2 and None not in packaged._loaded.values(), "both packages were loaded"
    for a, b in zip(got, eager, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # BatchNorm folded: another rounding, same features
    channels_last = _images(2).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # how crops may arrive
    with torch.inference_mode():
        torch.testing.assert_close(net(channels_last), _network()(_images(2)), rtol=1e-5, atol=1e-5)
    assert sorted(built.glob("*.pt2")) == sorted({packaged.path_for(_images(b)) for b in (1, 3, 7)})
    assert not list(built.glob("*.partial*")), "no half-written file is left"
    assert [p.name for p in built.iterdir()] == [p.name for p in built.glob("*.pt2")], "no build files are left"


def test_other_weights_another_input_size_or_layout_get_another_key():
    net, sample = _network(), _images(2)
    key = package_key(net, sample)
    assert package_key(_network(), _images(5)) == key  # same weights; the batch dimension is dynamic
    assert package_key(net, _images(1)) != key  # one image has a package of its own
    assert package_key(_network(seed=1), sample) != key
    assert package_key(net, torch.randn(2, 3, 64, 64)) != key
    changed = _network()
    with torch.no_grad():
        changed[4].running_mean[0] += 1e-6  # one buffer value
    assert package_key(changed, sample) != key
    wider = _network()
    wider[0] = nn.Conv2d(3, 8, 3, stride=2, padding=2, bias=False)
    wider[0].weight.data.copy_(net[0].weight.data)
    assert package_key(wider, sample) != key  # same weights, other layout


def test_an_unreadable_package_is_built_again_with_a_warning(built, tmp_path, monkeypatch, caplog):
    net = _network()
    packaged = use_packaged_forward(net, tmp_path)
    path = packaged.path_for(_images(2))
    good = built / path.name
    assert good.is_file()
    path.write_bytes(b"half a package")
    rebuilt = []

    def rebuild(module, sample, target):  # what a build writes, without a second real build
        rebuilt.append(target)
        shutil.copyfile(good, target)

    monkeypatch.setattr(backbone_package, "build_package", rebuild)
    with caplog.at_level("WARNING"), torch.inference_mode():
        features = net(_images(2))
    assert rebuilt == [path] and "could not be loaded" in caplog.text
    torch.testing.assert_close(features, _network()(_images(2)), rtol=1e-5, atol=1e-5)


def test_when_compiling_fails_the_backbone_runs_uncompiled_and_says_so_once(tmp_path, monkeypatch, caplog):
    def broken(module, sample, path):
        raise RuntimeError("no C++ compiler works here")

    monkeypatch.setattr(backbone_package, "build_package", broken)
    net = _network()
    eager = net(_images(2))
    use_packaged_forward(net, tmp_path)
    with caplog.at_level("WARNING"), torch.inference_mode():
        first, second = net(_images(2)), net(_images(4))
    assert torch.equal(first, eager) and second.shape[0] == 4
    assert caplog.text.count("could not be compiled ahead of time") == 1
    assert "no C++ compiler works here" in caplog.text


def test_calls_a_package_cannot_serve_run_eagerly_without_building(tmp_path, monkeypatch):
    monkeypatch.setattr(backbone_package, "build_package", _refuse_to_build)
    monkeypatch.setattr(backbone_package, "MAX_PACKAGED_BATCH", 2)
    net = _network()
    expected = net(_images(3))
    assert use_packaged_forward(net, tmp_path) is use_packaged_forward(net, tmp_path)  # installed once
    assert torch.equal(net(_images(3)), expected)  # gradients enabled: training, or a user's own autograd
    with torch.inference_mode():
        assert torch.equal(net(_images(3)), expected)  # a batch larger than the package's dynamic dimension
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net(_images(2)).dtype == torch.bfloat16  # autocast is not part of an exported graph
    assert not list(tmp_path.iterdir())
