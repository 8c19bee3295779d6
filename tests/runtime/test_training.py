"""Training building blocks: batches, schedule, masking, losses, the three steps and their checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from mega_runtime.constants import NUM_VERTICES
from mega_runtime.errors import TrainingError
from mega_runtime.train.batch import ImageBatch, MeshBatch, TokenBatch
from mega_runtime.train.checkpoint import save_checkpoint
from mega_runtime.train.losses import axis_angle_to_matrix, masked_token_ce, mean_vertex_distance
from mega_runtime.train.masking import MaskDraw, draw_mask, remain_count
from mega_runtime.train.optim import OptimConfig
from mega_runtime.train.schedule import lr_at, lr_factor, scaled_lr
from mega_runtime.train.vqmae_step import VQMAETrainer
from tests.runtime.tiny_models import TINY_VIT, tiny_vqmae


def _tokens(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 512, (batch, 54), generator=torch.Generator().manual_seed(seed))


def test_lr_warms_up_linearly_then_follows_the_half_cosine():
    assert lr_factor(0, 20, 200) == pytest.approx(1 / 20)
    assert lr_factor(9, 20, 200) == pytest.approx(10 / 20)
    assert lr_factor(19, 20, 200) == pytest.approx(0.5 * (math.cos(19 / 200 * math.pi) + 1))
    assert lr_factor(100, 20, 200) == pytest.approx(0.5)
    assert scaled_lr(1e-3, 16) == 1e-3 * 16 / 256
    assert lr_at(0, 1e-3, 4, 20, 200) == pytest.approx(1.5625e-5 / 20)


def test_official_loss_mask_leaves_out_the_first_hidden_token_and_default_keeps_it():
    perm = torch.stack([torch.randperm(54, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    draw = MaskDraw(t=0.4, perm=perm)
    remain = draw.remain
    assert remain == remain_count(0.4, 54) == int(54 * (1 - math.cos(0.2 * math.pi)))
    official, default = draw.loss_mask("official"), draw.loss_mask("default")
    assert (official.sum(1) == 54 - remain - 1).all()
    assert (default.sum(1) == 54 - remain).all()
    first_hidden = perm[:, remain]
    assert not official.gather(1, first_hidden[:, None]).any()
    assert default.gather(1, first_hidden[:, None]).all()
    assert not default.gather(1, draw.visible_order()).any()


def test_mask_draws_come_from_the_generator_and_reject_bad_permutations():
    a, b = (draw_mask(4, 54, torch.Generator().manual_seed(7)) for _ in range(2))
    assert a.t == b.t and torch.equal(a.perm, b.perm)
    with pytest.raises(TrainingError, match="permutation"):
        MaskDraw(t=0.5, perm=torch.zeros(2, 54, dtype=torch.long))
    with pytest.raises(TrainingError, match="mode"):
        a.loss_mask("fast")


def test_batches_name_the_malformed_field():
    with pytest.raises(TrainingError, match="'meshes'"):
        MeshBatch(torch.zeros(2, NUM_VERTICES, 2))
    with pytest.raises(TrainingError, match=r"'tokens'.*outside"):
        TokenBatch(torch.full((2, 54), 512))
    images, tokens, rot = torch.zeros(2, 3, 32, 32), _tokens(2), torch.zeros(2, 3)
    with pytest.raises(TrainingError, match="mixes 3DPW"):
        ImageBatch(images, tokens, rot, torch.zeros(2, 17, 3), torch.tensor([True, False]))
    with pytest.raises(TrainingError, match="'keypoints'"):
        ImageBatch(images, tokens, rot, torch.zeros(2, 17, 3), torch.tensor([True, True]))
    assert ImageBatch(images, tokens, rot, torch.zeros(2, 24, 3), torch.tensor([True, True])).all_3dpw


def test_losses_follow_the_official_formulas():
    target = torch.randn(2, 10, 3)
    assert mean_vertex_distance(target - target.mean(1, keepdim=True), target + 5.0) == pytest.approx(0.0, abs=1e-5)
    angle = torch.tensor([[0.0, 0.0, math.pi / 2]])
    expected = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    assert torch.allclose(axis_angle_to_matrix(angle), expected, atol=1e-6)
    assert torch.allclose(axis_angle_to_matrix(torch.zeros(1, 3)), torch.eye(3)[None])
    logits = torch.randn(1, 54, 512)
    assert torch.isnan(masked_token_ce(logits, _tokens(1), torch.zeros(1, 54, dtype=torch.bool)))


def test_vqmae_step_learns_and_skips_a_batch_with_nothing_to_learn():
    model = tiny_vqmae(0)
    trainer = VQMAETrainer(model, OptimConfig(lr=0.05, batch=256))
    batch = TokenBatch(_tokens(4))
    draw = MaskDraw(t=0.5, perm=torch.arange(54).repeat(4, 1))
    first = trainer.step(batch, draw)
    for _ in range(3):
        last = trainer.step(batch, draw)
    assert not first.skipped and last.losses["loss_ce"] < first.losses["loss_ce"]
    # t = 0.99: remain = 53, so the official loss mask is empty and the step is skipped, weights untouched.
    before = [p.detach().clone() for p in model.parameters()]
    skipped = trainer.step(batch, MaskDraw(t=0.99, perm=torch.arange(54).repeat(4, 1)))
    assert skipped.skipped and math.isnan(skipped.grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_trained_vqmae_saves_an_official_checkpoint_the_strict_loader_reads(tmp_path):
    from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_vqmae, model_config

    model = tiny_vqmae(1)
    trainer = VQMAETrainer(model, OptimConfig(batch=4))
    trainer.step(TokenBatch(_tokens(4)))
    path = save_checkpoint(tmp_path, "mega_pretrained", model, optimizer=trainer.optimizer, epoch=0)
    assert path == tmp_path / CHECKPOINT_FILES["mega_pretrained"]
    loaded = load_vqmae(path, model_config(tmp_path, "mega_pretrained"))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(TrainingError, match="already exists"):
        save_checkpoint(tmp_path, "mega_pretrained", model)


def _zero_tokenizer(assets_dir):
    from mega_runtime.models.mesh_vqvae import MeshVQVAE

    return MeshVQVAE.from_connection_folder(assets_dir / "connection_matrices")


def test_cvqmae_step_trains_the_whole_model_and_its_checkpoint_loads(assets_dir, tmp_path):
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.train.cvqmae_step import CVQMAETrainer
    from mega_runtime.weights.loaders import load_cvqmae, model_config
    from tests.runtime.tiny_models import randomize

    model = randomize(CVQMAE(TINY_VIT), 3)
    gen = torch.Generator().manual_seed(0)
    regs = (torch.rand(17, NUM_VERTICES, generator=gen), torch.rand(24, NUM_VERTICES, generator=gen))
    trainer = CVQMAETrainer(model, _zero_tokenizer(assets_dir), *regs, OptimConfig(batch=2, mode="default"))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for is_3dpw, joints in ((False, 17), (True, 24)):
        batch = ImageBatch(
            images=torch.randn(2, 3, 224, 288, generator=gen),
            gt_tokens=_tokens(2),
            rotation=torch.randn(2, 3, generator=gen),
            keypoints=torch.rand(2, joints, 3, generator=gen) - 0.5,
            is_3dpw=torch.full((2,), is_3dpw),
        )
        result = trainer.step(batch)
        assert all(math.isfinite(v) for k, v in result.losses.items() if k != "loss_ce")
        assert result.losses["loss_2d"] > 0 and result.grad_norm > 0
    after = model.state_dict()
    assert not torch.equal(before["backbone.patch_embed.proj.weight"], after["backbone.patch_embed.proj.weight"])
    assert not torch.equal(before["decoder.rot_predictor.weight"], after["decoder.rot_predictor.weight"])
    path = save_checkpoint(tmp_path, "mega_vit", model)
    loaded = load_cvqmae(path, model_config(tmp_path, "mega_vit"))
    assert all(torch.equal(after[k], v) for k, v in loaded.state_dict().items())


def test_mesh_vqvae_step_moves_the_codebook_by_ema_and_its_checkpoint_loads(assets_dir, tmp_path):
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.train.mesh_vqvae_step import MeshVQVAEConfig, MeshVQVAETrainer
    from mega_runtime.weights.loaders import load_mesh_vqvae

    model = _zero_tokenizer(assets_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        model.vq_vae._ema_cluster_size.fill_(1.0)
    template = torch.tensor(read_template_ply(assets_dir / "template.ply").vertices, dtype=torch.float32)
    meshes = template[None] + 0.01 * torch.randn(2, NUM_VERTICES, 3, generator=gen)
    trainer = MeshVQVAETrainer(model, MeshVQVAEConfig())
    codebook = model.vq_vae.lookup(torch.arange(512)).detach().clone()
    result = trainer.step(MeshBatch(meshes))
    assert set(result.losses) == {"loss_v2v", "loss_vq", "loss_total", "perplexity"}
    used = result.outputs["indices"].unique()
    moved = (model.vq_vae.lookup(torch.arange(512)) - codebook).abs().sum(1) > 0
    assert moved[used].all()
    path = save_checkpoint(tmp_path, "mesh_vqvae_54", model)
    from mega_runtime.models.assets import load_connection_matrices

    loaded = load_mesh_vqvae(path, load_connection_matrices(assets_dir / "connection_matrices"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_default_mode_mesh_distance_ignores_where_the_meshes_sit_and_official_does_not(assets_dir):
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.train.mesh_vqvae_step import MeshVQVAEConfig, MeshVQVAETrainer

    template = torch.tensor(read_template_ply(assets_dir / "template.ply").vertices, dtype=torch.float32)
    centred = (template - template.mean(0))[None]
    losses = {}
    for mode in ("official", "default"):
        for shift in (0.0, 0.5):
            model = _zero_tokenizer(assets_dir)
            trainer = MeshVQVAETrainer(model, MeshVQVAEConfig(mode=mode))
            losses[mode, shift] = trainer.step(MeshBatch(centred + shift)).losses["loss_v2v"]
    assert losses["default", 0.0] == pytest.approx(losses["default", 0.5], rel=1e-5)
    assert losses["official", 0.5] > losses["official", 0.0] + 0.5
