"""--precision: fp32 stays the exact default; bf16/int8 run with float32 outputs; auto picks by capability."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mega_runtime import defaults, mega
from mega_runtime.errors import MegaError
from mega_runtime.io.protocol import InferRequest, ProtocolError, parse_request
from mega_runtime.mega import Mega, resolve_precision
from mega_runtime.models import cpu_kernels
from mega_runtime.models.backbone_package import PackagedForward
from mega_runtime.models.cpu_kernels import OneDNNLinears, onednn_supported
from mega_runtime.models.mesh_vqvae import MeshVQVAE
from tests.runtime.tiny_models import randomize, tiny_cvqmae, tiny_vqmae


@pytest.fixture(scope="module")
def mesh(assets_dir):
    return randomize(MeshVQVAE.from_connection_folder(assets_dir / "connection_matrices"), seed=3)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))


def test_default_precision_is_exact_fp32():
    assert defaults.PRECISION == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "amx_bf16"}, "bf16"),
        ({"avx512f", "avx512_bf16"}, "bf16"),
        ({"avx512f", "avx512_bf16", "avx512_vnni"}, "int8"),
        ({"avx512f", "avx512_vnni"}, "int8"),
        ({"avx2", "avx_vnni"}, "int8"),
        ({"avx2"}, "fp32"),
        (set(), "fp32"),
    ],
)
def test_auto_precision_on_the_cpu_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(mega, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", "cpu") == expected


def test_auto_precision_on_a_gpu_follows_its_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda:0") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"


def test_unknown_precision_and_int8_off_the_cpu_say_what_to_use():
    with pytest.raises(MegaError, match="unknown precision") as err:
        resolve_precision("fp16", "cpu")
    assert "fp32" in err.value.hint
    with pytest.raises(MegaError, match="CPU only"):
        resolve_precision("int8", "cuda")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_modes_give_valid_float32_results(mesh, images, precision):
    model = Mega(tiny_cvqmae(), mesh, tiny_vqmae(), precision=precision)
    assert model.precision == precision
    res = model.reconstruct(images, 4, torch.Generator().manual_seed(0))
    assert res.tokens.shape == (2, 4, 54) and int(res.tokens.min()) >= 0 and int(res.tokens.max()) < 512
    for value in (res.log_likelihood, res.vertices, res.rotation, res.cam, res.vertex_std):
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    samples, meshes = model.generate(2, torch.Generator().manual_seed(1))
    assert samples.tokens.shape == (2, 54) and meshes.dtype == torch.float32


def test_fp32_mode_is_the_plain_model(mesh, images):
    plain = Mega(tiny_cvqmae(), mesh).reconstruct(images, 3, torch.Generator().manual_seed(0))
    fp32 = Mega(tiny_cvqmae(), mesh, precision="fp32").reconstruct(images, 3, torch.Generator().manual_seed(0))
    assert torch.equal(plain.tokens, fp32.tokens) and torch.equal(plain.log_likelihood, fp32.log_likelihood)


def _infer(**fields) -> InferRequest:
    message = {"v": 1, "id": "j1", "op": "infer", "source": {"path": "/tmp/photo.jpg"}, **fields}
    request = parse_request(json.dumps(message).encode())
    assert isinstance(request, InferRequest)
    return request


def test_protocol_accepts_the_precisions_and_rejects_others():
    assert _infer().precision is None
    assert _infer(precision="bf16").precision == "bf16"
    with pytest.raises(ProtocolError, match="precision"):
        _infer(precision="half")


def _onednn_flags(module: torch.nn.Module) -> set[bool]:
    return {m.onednn for m in module.modules() if isinstance(m, OneDNNLinears)}


def test_compile_without_a_c_compiler_on_the_cpu_keeps_the_backbone_eager_with_a_log_line(mesh, monkeypatch, caplog):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: pytest.fail("compiled without a C compiler"))
    model = Mega(tiny_cvqmae(), mesh)
    encoder, backbone = model.cvqmae.encoder, model.cvqmae.backbone
    with caplog.at_level("WARNING"):
        # the oneDNN products need no compiler: something was still made faster where they are supported
        assert model.compile_models() is onednn_supported()
    assert "no C compiler" in caplog.text and "backbone stays eager" in caplog.text
    assert model.cvqmae.encoder is encoder and model.cvqmae.backbone is backbone
    assert _onednn_flags(model.cvqmae.encoder) == {onednn_supported()}


def test_compile_without_a_c_compiler_or_onednn_reports_that_nothing_was_done(mesh, monkeypatch, caplog):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "arm64")
    model = Mega(tiny_cvqmae(), mesh)
    with caplog.at_level("INFO"):
        assert model.compile_models() is False
    assert "compiled: nothing" in caplog.text and _onednn_flags(model.cvqmae) == {False}


def test_compile_packages_the_backbone_and_compiles_the_transformers_on_request_caching_under_the_runtime_cache(
    mesh, monkeypatch, tmp_path
):
    # imported first: the first import of inductor sets TORCHINDUCTOR_CACHE_DIR to its own default, which would
    # make this test depend on whether an earlier test had imported it
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MEGA_HOME", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "set-so-that-teardown-restores-the-original")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")

    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append((module, kw)) or module)
    model = Mega(tiny_cvqmae(), mesh, tiny_vqmae())
    backbone = model.cvqmae.backbone
    with inductor_config.patch(freezing=False):  # compile_models sets it for the process; restored on exit
        assert model.compile_models() is True
        # on the CPU in fp32: the backbone compiled ahead of time into a package kept in the runtime's cache (built
        # at its first call: tests/runtime/test_backbone_package.py), nothing through torch.compile, and freezing
        # left alone for the process; the transformers take oneDNN's products where the machine has them
        assert calls == [] and model.cvqmae.backbone is backbone
        packaged = backbone.__dict__["forward"]
        assert isinstance(packaged, PackagedForward) and packaged.folder == tmp_path / "mega-blender" / "compiled"
        assert inductor_config.freezing is False
        assert _onednn_flags(model.cvqmae.decoder) == _onednn_flags(model.vqmae.encoder) == {onednn_supported()}
        assert _onednn_flags(model.cvqmae.backbone) <= {False}
        assert model.compile_models(backbone=False, transformers=True) is True
        assert inductor_config.freezing is True  # torch.compile of the transformers: frozen weights
    # compiled transformers get inductor's kernels, not the eager oneDNN switch
    assert _onednn_flags(model.cvqmae) == _onednn_flags(model.vqmae) == {False}
    compiled = [module for module, _ in calls]
    assert compiled == [model.cvqmae.encoder, model.cvqmae.decoder, model.vqmae.encoder, model.vqmae.decoder]
    assert all(kw.get("mode") is None for _, kw in calls)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))
    assert inductor_config.freezing is False  # the test left the process as it found it


def test_compile_in_bf16_on_the_cpu_compiles_the_backbone_in_process_frozen(mesh, monkeypatch):
    import torch._inductor.config as inductor_config

    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append(module) or module)
    model = Mega(tiny_cvqmae(), mesh, precision="bf16")
    with inductor_config.patch(freezing=False):
        assert model.compile_models() is True
        assert calls == [model.cvqmae.backbone]  # autocast is not part of an exported package
        assert inductor_config.freezing is True
    assert "forward" not in model.cvqmae.backbone.__dict__


def test_compile_refuses_int8_with_a_log_line_and_leaves_the_models_alone(mesh, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: pytest.fail("compiled an int8 model"))
    model = Mega(tiny_cvqmae(), mesh, precision="int8")
    with caplog.at_level("WARNING"):
        assert model.compile_models() is False
    assert "int8" in caplog.text


def test_compile_on_an_apple_gpu_runs_uncompiled_with_a_log_line(mesh, monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: pytest.fail("compiled on MPS"))
    monkeypatch.setattr(Mega, "device", property(lambda self: torch.device("mps")))
    model = Mega(tiny_cvqmae(), mesh)
    with caplog.at_level("WARNING"):
        assert model.compile_models() is False
    assert "mps" in caplog.text


def test_compile_on_cuda_also_compiles_the_transformers_as_cuda_graphs(mesh, monkeypatch):
    import torch._inductor.config as inductor_config

    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append((module, kw)) or module)
    monkeypatch.setattr(Mega, "device", property(lambda self: torch.device("cuda")))
    model = Mega(tiny_cvqmae(), mesh, tiny_vqmae())
    with inductor_config.patch(freezing=False):
        assert model.compile_models() is True
    modes = {id(module): kw.get("mode") for module, kw in calls}
    for module in (model.cvqmae.encoder, model.cvqmae.decoder, model.vqmae.encoder, model.vqmae.decoder):
        assert modes[id(module)] == "reduce-overhead"
    assert id(model.cvqmae.backbone) in modes
