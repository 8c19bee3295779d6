"""The Mesh-VQ-VAE graph layers' two evaluations (sparse CSR and dense gather) and how one is chosen.

Equality bound: the gather path sums each output's neighbour terms in another order than the CSR
kernels, so the two agree to float32 rounding, not bit for bit. Vertices must agree within
``PATH_ATOL`` = 1e-6 m (the fixture's own vertex tolerance against the official code); latents
within 1e-6 too.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from mega_runtime.constants import CODEBOOK_SIZE, NUM_TOKENS, NUM_VERTICES
from mega_runtime.errors import ConfigError
from mega_runtime.models import graph_conv
from mega_runtime.models.assets import load_connection_matrices
from mega_runtime.models.graph_conv import ENV_GRAPH_PATH, resolve_graph_path, sparse_csr_supported
from mega_runtime.models.mesh_vqvae import CONFIG_MEDIUM, MeshVQVAE
from mega_runtime.verify.recipe import build_state_dict

PATH_ATOL = 1e-6  # metres (vertices) / latent units


@pytest.fixture(scope="module")
def model(assets_dir: Path, fixtures_dir: Path) -> MeshVQVAE:
    by_id: dict[int, torch.Tensor] = {}
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in build_state_dict(fixtures_dir / "mesh_vqvae").items():
        if id(value) not in by_id:
            by_id[id(value)] = torch.from_numpy(np.array(value, copy=True))
        state[key] = by_id[id(value)]
    net = MeshVQVAE(CONFIG_MEDIUM, load_connection_matrices(assets_dir / "connection_matrices"))
    net.load_state_dict(state, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "mesh_vqvae" / "reference.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_GRAPH_PATH, raising=False)


def _decode(model: MeshVQVAE, path: str, tokens: torch.Tensor) -> torch.Tensor:
    previous = model.graph_path
    model.graph_path = path
    try:
        with torch.no_grad():
            return model.decode(tokens)
    finally:
        model.graph_path = previous


def _random_tokens(batch: int, seed: int) -> torch.Tensor:
    return torch.randint(0, CODEBOOK_SIZE, (batch, NUM_TOKENS), generator=torch.Generator().manual_seed(seed))


def test_gather_path_equals_csr_path_on_the_fixture_tokens(model, reference, no_env) -> None:
    tokens = torch.from_numpy(reference["indices"])
    csr, gather = _decode(model, "csr", tokens), _decode(model, "gather", tokens)
    assert gather.shape == csr.shape == (tokens.shape[0], NUM_VERTICES, 3) and gather.dtype == torch.float32
    assert float((gather - csr).abs().max()) <= PATH_ATOL
    assert float(np.abs(gather.numpy() - reference["decoded_vertices"]).max()) <= PATH_ATOL  # and the official code


@pytest.mark.parametrize("batch", [1, 16])
def test_gather_path_equals_csr_path_on_random_tokens(model, batch: int, no_env) -> None:
    tokens = _random_tokens(batch, seed=batch)
    csr, gather = _decode(model, "csr", tokens), _decode(model, "gather", tokens)
    assert gather.shape == (batch, NUM_VERTICES, 3)
    assert float((gather - csr).abs().max()) <= PATH_ATOL


@pytest.mark.parametrize("suffix", ["", "_b"])
def test_gather_path_encodes_like_the_csr_path(model, reference, suffix: str, no_env) -> None:
    meshes = torch.from_numpy(reference[f"encode_input_meshes{suffix}"])
    latents = {}
    for path in ("csr", "gather"):
        model.graph_path = path
        with torch.no_grad():
            latents[path] = model.encoder_latent(meshes)
    model.graph_path = "auto"
    assert float((latents["gather"] - latents["csr"]).abs().max()) <= PATH_ATOL
    assert torch.equal(model.vq_vae.nearest(latents["gather"]), torch.from_numpy(reference[f"encoded_indices{suffix}"]))


def test_gather_path_keeps_rows_independent_and_handles_empty_batches(model, no_env) -> None:
    tokens = _random_tokens(3, seed=7)
    together = _decode(model, "gather", tokens)
    alone = torch.cat([_decode(model, "gather", row[None]) for row in tokens])
    assert float((together - alone).abs().max()) <= PATH_ATOL
    assert _decode(model, "gather", tokens[:0]).shape == (0, NUM_VERTICES, 3)


def test_gather_path_runs_a_bfloat16_model_in_bfloat16(model, no_env) -> None:
    """Off the CPU-CSR route nothing forces float32: a bf16 model decodes in bf16, close to float32."""
    tokens = _random_tokens(2, seed=3)
    reference = _decode(model, "csr", tokens)
    vertices = _decode(copy.deepcopy(model).to(torch.bfloat16), "gather", tokens)
    assert vertices.dtype == torch.bfloat16
    scale = float(reference.abs().max())
    assert float((vertices.float() - reference).abs().max()) <= 0.05 * scale


def test_csr_is_supported_on_the_cpu_and_the_answer_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sparse_csr_supported("cpu") is True
    assert sparse_csr_supported(torch.device("cpu")) is True
    calls = []
    monkeypatch.setattr(torch, "sparse_csr_tensor", lambda *a, **k: calls.append(a))
    assert sparse_csr_supported("cpu") is True and not calls  # cached per device type


def test_the_probe_is_per_dtype_and_cpu_half_models_still_take_csr_in_float32(
    model, monkeypatch: pytest.MonkeyPatch, no_env
) -> None:
    assert sparse_csr_supported("cpu", torch.float64) is True
    chosen = []
    real = graph_conv.FullyConvAE._conv

    def spy(self, spec, h, batch, dtype):
        chosen.append(dtype)
        return real(self, spec, h, batch, dtype)

    monkeypatch.setattr(graph_conv.FullyConvAE, "_conv", spy)
    half = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        vertices = half.decode(_random_tokens(1, seed=4))
    assert vertices.dtype == torch.bfloat16 and set(chosen) == {torch.float32}


def test_a_device_without_csr_is_probed_as_unsupported_and_auto_takes_gather(
    monkeypatch: pytest.MonkeyPatch, model, no_env
) -> None:
    def missing_kernel(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::_sparse_csr_tensor_unsafe' with arguments from the backend")

    monkeypatch.setattr(graph_conv, "_CSR_SUPPORT", {})
    monkeypatch.setattr(torch, "sparse_csr_tensor", missing_kernel)
    assert sparse_csr_supported("cpu") is False
    assert resolve_graph_path("auto", "cpu") == "gather"
    with pytest.raises(ConfigError, match="cannot use sparse CSR") as info:
        resolve_graph_path("csr", "cpu")
    assert "gather" in info.value.hint
    with torch.no_grad():
        vertices = model.decode(_random_tokens(1, seed=1))  # auto → gather: still decodes
    assert vertices.shape == (1, NUM_VERTICES, 3)


def test_the_probe_lets_unexpected_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise KeyError("not a backend limitation")

    monkeypatch.setattr(graph_conv, "_CSR_SUPPORT", {})
    monkeypatch.setattr(torch, "sparse_csr_tensor", broken)
    with pytest.raises(KeyError):
        sparse_csr_supported("cpu")


def test_auto_takes_csr_on_the_cpu_and_the_environment_can_force_either_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_GRAPH_PATH, raising=False)
    assert resolve_graph_path("auto", "cpu") == "csr"
    monkeypatch.setenv(ENV_GRAPH_PATH, "gather")
    assert resolve_graph_path("auto", "cpu") == "gather"
    assert resolve_graph_path("csr", "cpu") == "csr"  # an explicit argument wins over the environment
    monkeypatch.setenv(ENV_GRAPH_PATH, " CSR ")
    assert resolve_graph_path("auto", "cpu") == "csr"
    monkeypatch.setenv(ENV_GRAPH_PATH, "dense")
    with pytest.raises(ConfigError, match=ENV_GRAPH_PATH):
        resolve_graph_path("auto", "cpu")


def test_the_environment_switches_a_loaded_model_to_the_gather_path(model, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    real = graph_conv.FullyConvAE._conv_gather

    def spy(self, *args):
        chosen.append("gather")
        return real(self, *args)

    monkeypatch.setattr(graph_conv.FullyConvAE, "_conv_gather", spy)
    monkeypatch.setenv(ENV_GRAPH_PATH, "gather")
    with torch.no_grad():
        model.decode(_random_tokens(1, seed=2))
    assert chosen


def test_unknown_graph_paths_are_config_errors(model, assets_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown graph path"):
        resolve_graph_path("dense", "cpu")
    with pytest.raises(ConfigError, match="unknown graph path"):
        model.graph_path = "dense"
    with pytest.raises(ConfigError, match="unknown graph path"):
        MeshVQVAE(CONFIG_MEDIUM, load_connection_matrices(assets_dir / "connection_matrices"), graph_path="coo")


def test_gather_path_in_small_blocks_gives_the_same_meshes(model, monkeypatch: pytest.MonkeyPatch, no_env) -> None:
    tokens = _random_tokens(2, seed=5)
    whole = _decode(model, "gather", tokens)
    monkeypatch.setattr(graph_conv, "_GATHER_ELEMENTS", 1000)  # a few points per block, uneven last block
    assert float((_decode(model, "gather", tokens) - whole).abs().max()) <= PATH_ATOL  # GEMM rounding varies with size


def test_gather_path_works_with_gradients_enabled(model, reference, no_env) -> None:
    model.graph_path = "gather"
    try:
        vertices = model.decode(torch.from_numpy(reference["indices"][:1]))
    finally:
        model.graph_path = "auto"
    assert vertices.requires_grad
    vertices.sum().backward()
    weights = model.decoder.model.get_parameter("w_weights13")
    assert weights.grad is not None and bool(weights.grad.abs().sum() > 0)
    model.zero_grad(set_to_none=True)
