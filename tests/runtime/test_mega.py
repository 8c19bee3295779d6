"""The Mega API: crops in, deterministic mesh + hypotheses + uncertainty out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mega_runtime.errors import ConfigError
from mega_runtime.mega import Mega, vertex_spread
from mega_runtime.models.geometry import rotation_6d_to_matrix
from mega_runtime.models.mesh_vqvae import MeshVQVAE
from tests.runtime.tiny_models import randomize, tiny_cvqmae, tiny_vqmae


@pytest.fixture(scope="module")
def mega(assets_dir):
    mesh = randomize(MeshVQVAE.from_connection_folder(assets_dir / "connection_matrices"), seed=3)
    return Mega(tiny_cvqmae(), mesh, tiny_vqmae())


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reconstruct_runs_the_backbone_once_per_image_whatever_the_hypothesis_count(mega, images):
    calls = []
    handle = mega.cvqmae.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        mega.reconstruct(images, num_hypotheses=6, generator=_gen())
    finally:
        handle.remove()
    assert calls == [2]


def test_reconstruct_shapes_and_hypothesis_zero_is_the_deterministic_decode(mega, images):
    one = mega.reconstruct(images, 1)
    many = mega.reconstruct(images, 5, _gen())
    assert many.tokens.shape == (2, 5, 54) and many.vertices.shape == (2, 5, 6890, 3)
    assert many.log_likelihood.shape == (2, 5) and many.vertex_std.shape == (2, 6890)
    assert torch.equal(many.tokens[:, 0], one.tokens[:, 0])
    assert torch.count_nonzero(one.vertex_std) == 0
    assert many.vertex_std.max() > 0


def test_posed_vertices_are_the_canonical_ones_rotated_by_r(mega, images):
    out = mega.reconstruct(images, 2, _gen())
    rotation = rotation_6d_to_matrix(out.rot6d)
    expected = torch.einsum("bij,bhvj->bhvi", rotation, out.canonical)
    torch.testing.assert_close(out.vertices, expected, atol=1e-6, rtol=0)


def test_vertex_std_is_the_rms_distance_to_the_mean_hypothesis(mega, images):
    out = mega.reconstruct(images, 4, _gen())
    v = out.vertices.double()
    manual = ((v - v.mean(1, keepdim=True)) ** 2).sum(-1).mean(1).sqrt()
    torch.testing.assert_close(out.vertex_std.double(), manual, atol=1e-7, rtol=1e-5)
    assert torch.equal(vertex_spread(out.vertices), out.vertex_std)


def test_hypotheses_do_not_change_with_the_hypothesis_count_or_the_other_images(mega, images):
    both = mega.reconstruct(images, 5, _gen(9))
    fewer = mega.reconstruct(images, 3, _gen(9))
    alone = mega.reconstruct(images[1:], 5, _gen(9))
    assert torch.equal(both.tokens[:, :3], fewer.tokens)
    assert torch.equal(both.tokens[1], alone.tokens[0])


def test_official_sampler_mode_keeps_the_official_last_token_quirk(mega, images):
    out = mega.reconstruct(images, 3, sampler="official", numpy_rng=np.random.RandomState(0))
    assert out.tokens.shape == (2, 3, 54)
    assert ((out.tokens[:, 1:] == 0).sum(-1) >= 1).all()


def test_reconstruct_rejects_unknown_sampler_and_zero_hypotheses(mega, images):
    with pytest.raises(ValueError, match="sampler"):
        mega.reconstruct(images, 2, sampler="greedy")
    with pytest.raises(ValueError, match="num_hypotheses"):
        mega.reconstruct(images, 0)


def test_generate_makes_bodies_without_an_image_and_completes_fixed_tokens(mega):
    samples, meshes = mega.generate(3, _gen(1))
    assert samples.tokens.shape == (3, 54) and meshes.shape == (3, 6890, 3)
    fixed = torch.full((2, 54), -1, dtype=torch.long)
    fixed[:, 10:20] = 42
    completed, _ = mega.generate(2, _gen(1), fixed=fixed)
    assert (completed.tokens[:, 10:20] == 42).all()


def test_generate_without_the_pretrained_model_says_how_to_load_it(mega):
    with pytest.raises(ConfigError, match="pretrained=True"):
        Mega(mega.cvqmae, mega.mesh_vqvae).generate(1, _gen())


def test_image_completion_keeps_fixed_tokens(mega, images):
    fixed = torch.full((2, 54), -1, dtype=torch.long)
    fixed[:, :5] = 7
    samples, meshes = mega.complete(images, fixed, _gen(2))
    assert (samples.tokens[:, :5] == 7).all() and meshes.shape == (2, 6890, 3)


def test_small_checkpoints_from_verify_run_end_to_end(fixtures_dir, assets_dir, small_checkpoints):
    """``small_checkpoints`` (tests/conftest.py) are written by ``verify --write-checkpoints``."""
    out = small_checkpoints
    mega = Mega.from_checkpoints(out, "mega_resnet", assets_dir=assets_dir, pretrained=True)
    ref = np.load(fixtures_dir / "cvqmae_resnet" / "reference.npz")
    result = mega.reconstruct(torch.from_numpy(ref["img"]), 3, _gen())
    assert np.array_equal(result.tokens[:, 0].numpy(), ref["argmax_indices"])
    expected = mega.mesh_vqvae.decode(torch.from_numpy(ref["argmax_indices"]))
    torch.testing.assert_close(result.canonical[:, 0], expected)
    assert mega.generate(2, _gen())[1].shape == (2, 6890, 3)


def test_from_checkpoints_names_a_missing_assets_folder(tmp_path, monkeypatch):
    from mega_runtime.errors import AssetError

    monkeypatch.delenv("MEGA_ASSETS_DIR", raising=False)
    with pytest.raises(AssetError, match="MEGA_ASSETS_DIR"):
        Mega.from_checkpoints(tmp_path, "mega_resnet")
