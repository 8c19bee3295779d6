"""``--data PATH | --synthetic N`` per training stage (mega_runtime/train/sources.py): the right batch type for
each stage, seeded epochs that repeat, and a clear DataError, before training, for each missing piece."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mega_runtime.train import sources
from mega_runtime.train.batch import ImageBatch, MeshBatch, TokenBatch
from mega_runtime.train.data import DataError
from tests.conftest import ASSETS_DIR
from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl
from tests.runtime.test_train_data import image_arrays, motion_arrays


def tokenize(meshes: np.ndarray) -> np.ndarray:
    return np.zeros((len(meshes), 54), np.int64) + 3


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("smplx", reason="meshing needs the optional smplx package")
    return write_synthetic_smpl(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", synthetic_smpl_arrays(0))


@pytest.fixture(scope="module")
def smpl(smpl_file: Path):
    from mega_runtime.smpl.model import load_smpl_model

    return load_smpl_model(smpl_file)


@pytest.fixture
def assets() -> Path:
    if not (ASSETS_DIR / "template.ply").is_file():
        pytest.skip(f"{ASSETS_DIR} is absent: the synthetic source deforms MEGA's template (../shared/assets)")
    return ASSETS_DIR


@pytest.mark.parametrize(
    ("stage", "kind"), [("tokenizer", MeshBatch), ("pretrain", TokenBatch), ("finetune", ImageBatch)]
)
def test_synthetic_data_gives_every_stage_its_batches_and_repeats_with_the_seed(assets, stage, kind):
    options = sources.DataOptions(synthetic=6, assets_dir=assets, seed=4)
    source = sources.open_batches(stage, options, batch_size=3)
    assert len(source) == 2
    first = list(source.epoch(np.random.default_rng(0)))
    again = list(sources.open_batches(stage, options, batch_size=3).epoch(np.random.default_rng(0)))
    assert len(first) == 2 and all(isinstance(b, kind) for b in first)
    for a, b in zip(first, again, strict=True):
        for name in ("meshes", "tokens", "images", "keypoints"):
            if hasattr(a, name):
                assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_exactly_one_source_and_enough_items_for_a_batch_are_required(assets):
    with pytest.raises(DataError, match="exactly one"):
        sources.DataOptions()
    with pytest.raises(DataError, match="exactly one"):
        sources.DataOptions(data=Path("x"), synthetic=3)
    with pytest.raises(DataError, match="fewer items than one batch"):
        sources.open_batches("tokenizer", sources.DataOptions(synthetic=2, assets_dir=assets), batch_size=4)
    with pytest.raises(DataError, match="unknown training stage"):
        sources.open_batches("train", sources.DataOptions(synthetic=2, assets_dir=assets), batch_size=1)  # type: ignore[arg-type]


def test_motion_capture_feeds_the_tokenizer_and_through_the_tokenizer_pre_training(tmp_path, smpl_file, smpl):
    for i in range(4):
        np.savez(tmp_path / f"seq{i}.npz", **motion_arrays(seed=i))
    options = sources.DataOptions(data=tmp_path, smpl_model=smpl_file)
    meshes = next(sources.open_batches("tokenizer", options, batch_size=2).epoch(np.random.default_rng(0)))
    assert isinstance(meshes, MeshBatch) and meshes.meshes.shape == (2, 6890, 3)
    with pytest.raises(DataError, match="tokenizer"):
        sources.open_batches("pretrain", options, batch_size=2)
    tokens = next(sources.open_batches("pretrain", options, 2, tokenize, smpl).epoch(np.random.default_rng(0)))
    assert isinstance(tokens, TokenBatch) and (tokens.tokens == 3).all()
    with pytest.raises(DataError, match="--smpl-model"):
        sources.open_batches("tokenizer", sources.DataOptions(data=tmp_path), batch_size=2)


def test_a_mix_list_of_image_datasets_feeds_fine_tuning_with_images_found_the_official_way(tmp_path, smpl):
    import cv2

    for name in ("coco", "mpii"):
        folder = tmp_path / "datasets" / name
        folder.mkdir(parents=True)
        arrays = image_arrays(n=3 if name == "coco" else 2)
        np.savez(folder / f"{name}.npz", **arrays)
        for image in arrays["imgname"]:
            cv2.imwrite(str(folder / str(image)), np.full((400, 400, 3), 90, np.uint8))
    mix = tmp_path / "mix.txt"
    mix.write_text(f"{tmp_path}/datasets/coco/coco.npz\n{tmp_path}/datasets/mpii/mpii.npz\n")
    source = sources.open_batches("finetune", sources.DataOptions(data=mix), 3, tokenize, smpl)
    batches = list(source.epoch(np.random.default_rng(0)))
    assert len(source) == 1 and len(batches) == 1 and isinstance(batches[0], ImageBatch)
    assert batches[0].keypoints.shape == (3, 17, 3) and not batches[0].all_3dpw
    elsewhere = sources.DataOptions(data=mix, images_root=tmp_path / "elsewhere")
    with pytest.raises(DataError, match="does not exist"):
        list(sources.open_batches("finetune", elsewhere, 3, tokenize, smpl).epoch(np.random.default_rng(0)))


def test_the_official_mix_draws_an_epoch_as_long_as_the_largest_dataset():
    class Fake:
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

    mix = sources.ImageMix([Fake(10), Fake(3)])  # type: ignore[list-item]
    draws = mix.draws(np.random.default_rng(0))
    assert len(draws) == 10 and {d for d, _ in draws} == {0, 1}
    assert all(row < (10 if d == 0 else 3) for d, row in draws)
    assert draws == mix.draws(np.random.default_rng(0))
