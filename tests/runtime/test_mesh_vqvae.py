"""Mesh-VQ-VAE: official checkpoint layout and numerics (fixture ``shared/fixtures/mesh_vqvae``)."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mega_runtime.constants import CODEBOOK_SIZE, NUM_TOKENS, NUM_VERTICES, TOKEN_DIM
from mega_runtime.errors import AssetError, ConfigError
from mega_runtime.models.assets import load_connection_matrices
from mega_runtime.models.mesh_vqvae import CONFIG_MEDIUM, MeshVQVAE, MeshVQVAEConfig, VectorQuantizerEMA
from mega_runtime.verify.recipe import build_state_dict

VERTEX_ATOL = 1e-6  # fixture.json tolerances
LATENT_ATOL = 1e-5


@pytest.fixture(scope="module")
def connections(assets_dir: Path) -> dict[str, np.ndarray]:
    return load_connection_matrices(assets_dir / "connection_matrices")


@pytest.fixture(scope="module")
def official_state(fixtures_dir: Path) -> OrderedDict[str, torch.Tensor]:
    """The fixture checkpoint as torch tensors; aliased keys share one tensor, as in the official file."""
    by_id: dict[int, torch.Tensor] = {}
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in build_state_dict(fixtures_dir / "mesh_vqvae").items():
        if id(value) not in by_id:
            by_id[id(value)] = torch.from_numpy(np.array(value, copy=True))
        state[key] = by_id[id(value)]
    return state


@pytest.fixture(scope="module")
def reference(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "mesh_vqvae" / "reference.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def model(connections, official_state) -> MeshVQVAE:
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    net.load_state_dict(official_state, strict=True)
    return net.eval()


def _max_err(actual: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.abs(actual.detach().float().numpy() - expected).max())


def test_state_dict_matches_the_official_manifest(connections, manifests_dir: Path) -> None:
    manifest = json.loads((manifests_dir / "manifest_mesh_vqvae_54.json").read_text())
    state = MeshVQVAE(CONFIG_MEDIUM, connections).state_dict()
    assert list(state) == list(manifest["keys"])
    for key, info in manifest["keys"].items():
        assert list(state[key].shape) == info["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == info["dtype"], key
    assert len(state) == manifest["num_tensors"] == 63


def test_parameters_are_shared_between_encoder_and_decoder(connections, manifests_dir: Path) -> None:
    manifest = json.loads((manifests_dir / "manifest_mesh_vqvae_54.json").read_text())
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    assert sum(p.numel() for p in net.parameters()) == manifest["num_params_total"]
    state = net.state_dict()
    for key in state:
        if key.startswith("decoder.model."):
            assert state[key].data_ptr() == state["encoder." + key.removeprefix("decoder.")].data_ptr()


def test_connection_structure_is_not_saved_but_moves_with_the_model(connections) -> None:
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    buffers = {name for name, _ in net.named_buffers()}
    assert "vq_vae._ema_cluster_size" in buffers
    derived = buffers - {"vq_vae._ema_cluster_size"}
    assert derived and not derived & set(net.state_dict())


def test_neighbour_structure_is_a_valid_sparse_csr_layout(connections) -> None:
    graph = MeshVQVAE(CONFIG_MEDIUM, connections).encoder.model
    buffers = dict(graph.named_buffers())
    for spec in graph.layers:
        col = buffers[f"_col{spec.index}"]
        torch.sparse_csr_tensor(
            buffers[f"_crow{spec.index}"],
            col,
            torch.ones(col.shape[0]),
            (spec.out_points, spec.in_points),
            check_invariants=True,  # sorted, unique, in-range column ids per row
        )


def test_quantize_returns_codebook_rows_exactly(model, reference) -> None:
    with torch.no_grad():
        latent = model.quantize(torch.from_numpy(reference["indices"]))
    assert latent.shape == (3, NUM_TOKENS, TOKEN_DIM)
    np.testing.assert_array_equal(latent.numpy(), reference["quantized_latent"])


def test_decode_matches_the_official_vertices(model, reference) -> None:
    with torch.no_grad():
        vertices = model.decode(torch.from_numpy(reference["indices"]))
    assert vertices.shape == (3, NUM_VERTICES, 3) and vertices.dtype == torch.float32
    assert _max_err(vertices, reference["decoded_vertices"]) <= VERTEX_ATOL


@pytest.mark.parametrize("suffix", ["", "_b"])
def test_encoder_latent_and_tokens_match_the_official_encoder(model, reference, suffix: str) -> None:
    meshes = torch.from_numpy(reference["encode_input_meshes" + suffix])
    with torch.no_grad():
        latent = model.encoder_latent(meshes)
        tokens = model.encode(meshes)
    assert latent.shape == (3, NUM_TOKENS, TOKEN_DIM)
    assert _max_err(latent, reference["encoder_latent" + suffix]) <= LATENT_ATOL
    assert tokens.dtype == torch.int64
    np.testing.assert_array_equal(tokens.numpy(), reference["encoded_indices" + suffix])


@pytest.mark.parametrize("suffix", ["", "_b"])
def test_decoding_encoded_tokens_matches_the_official_round_trip(model, reference, suffix: str) -> None:
    with torch.no_grad():
        vertices = model.decode(torch.from_numpy(reference["encoded_indices" + suffix]))
    assert _max_err(vertices, reference["decoded_from_encoded" + suffix]) <= VERTEX_ATOL


def test_decode_returns_one_mesh_per_token_row(model, reference) -> None:
    # The official model (config batch 3) broadcasts one row to 3 copies; we return exactly one mesh.
    with torch.no_grad():
        vertices = model.decode(torch.from_numpy(reference["indices"][:1]))
    assert vertices.shape == (1, NUM_VERTICES, 3)
    assert _max_err(vertices[0], reference["decode_single_with_cfg_batch3"][0]) <= VERTEX_ATOL


def test_decoding_rows_one_by_one_equals_decoding_them_together(model) -> None:
    tokens = torch.from_numpy(np.random.default_rng(7).integers(0, CODEBOOK_SIZE, (5, NUM_TOKENS)))
    with torch.no_grad():
        together = model.decode(tokens)
        one_by_one = torch.cat([model.decode(tokens[i : i + 1]) for i in range(len(tokens))])
    torch.testing.assert_close(one_by_one, together, atol=VERTEX_ATOL, rtol=0)


def test_fresh_weights_take_effect_without_any_refresh_call(connections, official_state, reference) -> None:
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    tokens = torch.from_numpy(reference["indices"])
    with torch.no_grad():
        net.decode(tokens)  # run once with the zero weights: nothing may be cached from this call
        net.load_state_dict(official_state, strict=True)
        vertices = net.decode(tokens)
    assert _max_err(vertices, reference["decoded_vertices"]) <= VERTEX_ATOL


def test_float64_copy_matches_the_reference(connections, official_state, reference) -> None:
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    net.load_state_dict(official_state, strict=True)
    net.double()
    with torch.no_grad():
        vertices = net.decode(torch.from_numpy(reference["indices"]))
    assert vertices.dtype == torch.float64
    assert _max_err(vertices, reference["decoded_vertices"]) <= VERTEX_ATOL


def test_half_precision_model_decodes_on_cpu(connections, official_state, reference) -> None:
    net = MeshVQVAE(CONFIG_MEDIUM, connections)
    net.load_state_dict(official_state, strict=True)
    net.half()
    with torch.no_grad():
        vertices = net.decode(torch.from_numpy(reference["indices"]))
    assert vertices.dtype == torch.float16
    assert _max_err(vertices, reference["decoded_vertices"]) <= 5e-3


def test_decode_works_with_gradients_enabled(model, reference) -> None:
    vertices = model.decode(torch.from_numpy(reference["indices"][:1]))
    assert vertices.requires_grad
    assert _max_err(vertices, reference["decoded_vertices"][:1]) <= VERTEX_ATOL


def test_empty_batches_give_empty_results(model) -> None:
    with torch.no_grad():
        assert model.decode(torch.zeros(0, NUM_TOKENS, dtype=torch.int64)).shape == (0, NUM_VERTICES, 3)
        assert model.encode(torch.zeros(0, NUM_VERTICES, 3)).shape == (0, NUM_TOKENS)


def test_nearest_codebook_entry_ties_go_to_the_first_index() -> None:
    quantizer = VectorQuantizerEMA(8, TOKEN_DIM)
    with torch.no_grad():
        quantizer._embedding.weight.copy_(torch.arange(8 * TOKEN_DIM, dtype=torch.float32).view(8, TOKEN_DIM))
        quantizer._embedding.weight[6] = quantizer._embedding.weight[2]
        latent = quantizer._embedding.weight[[2, 5, 6]].view(1, 3, TOKEN_DIM) + 0.25
        assert quantizer.nearest(latent).tolist() == [[2, 5, 2]]


def test_invalid_token_inputs_are_rejected(model) -> None:
    with pytest.raises(ValueError, match="shape"):
        model.decode(torch.zeros(2, NUM_TOKENS + 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        model.decode(torch.full((1, NUM_TOKENS), CODEBOOK_SIZE, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        model.decode(torch.zeros(1, NUM_TOKENS))


def test_invalid_vertex_inputs_are_rejected(model) -> None:
    with pytest.raises(ValueError, match="6890"):
        model.encode(torch.zeros(1, 100, 3))
    with pytest.raises(TypeError, match="floating"):
        model.encode(torch.zeros(1, NUM_VERTICES, 3, dtype=torch.int64))


def test_missing_connection_matrix_raises_asset_error(connections) -> None:
    partial = {name: matrix for name, matrix in connections.items() if name != "unpool2"}
    with pytest.raises(AssetError, match="unpool2"):
        MeshVQVAE(CONFIG_MEDIUM, partial)


def test_connection_matrices_in_the_wrong_layers_are_rejected(connections) -> None:
    swapped = dict(connections, pool1=connections["pool2"], pool2=connections["pool1"])
    with pytest.raises(AssetError, match="does not fit a layer with 6890 input points"):
        MeshVQVAE(CONFIG_MEDIUM, swapped)


def test_inconsistent_config_lists_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="same even length"):
        MeshVQVAEConfig(channel_lst=CONFIG_MEDIUM.channel_lst[:-1])
    with pytest.raises(ConfigError, match="embedding_dim"):
        replace(CONFIG_MEDIUM, embedding_dim=8)
    with pytest.raises(ConfigError, match="residual rates"):
        MeshVQVAEConfig(residual_rate_lst=(0, 1.5, *CONFIG_MEDIUM.residual_rate_lst[2:]))


def test_config_accepts_lists_and_stores_tuples() -> None:
    config = MeshVQVAEConfig(channel_lst=list(CONFIG_MEDIUM.channel_lst))
    assert config == CONFIG_MEDIUM and isinstance(config.channel_lst, tuple)
    assert config.split == 7
