"""The synthetic data source (mega_runtime/train/synthetic.py): seeded, order-independent, and consistent
(keypoints are the projected joints of the posed mesh, the posed mesh is the rotated canonical one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mega_runtime.train import synthetic
from mega_runtime.train.batch import ImageBatch, MeshBatch, TokenBatch
from tests.conftest import ASSETS_DIR


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    if not (ASSETS_DIR / "template.ply").is_file():
        pytest.skip(f"{ASSETS_DIR} is absent: the synthetic source deforms MEGA's template (../shared/assets)")
    return synthetic.load_template(ASSETS_DIR)


def test_the_same_seed_gives_the_same_items_and_another_seed_other_items(template):
    a, b, c = (synthetic.SyntheticSource(6, s, template) for s in (5, 5, 6))
    for i in range(3):
        x, y, z = a.item(i), b.item(i), c.item(i)
        for field in ("canonical", "rotation", "posed", "cam", "image_u8", "keypoints"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)
        assert np.abs(x.canonical - z.canonical).max() > 1e-3


def test_an_item_does_not_depend_on_the_batch_size_or_the_epoch_order(template):
    source = synthetic.SyntheticSource(6, 1, template)
    by_two = torch.cat([b.meshes for b in source.mesh_batches(2, np.random.default_rng(0))])
    order = source.order(np.random.default_rng(0))
    np.testing.assert_array_equal(by_two.numpy(), np.stack([source.item(int(i)).canonical for i in order]))
    by_three = list(source.mesh_batches(3, np.random.default_rng(0)))
    assert torch.equal(torch.cat([b.meshes for b in by_three]), by_two)


def test_the_epoch_order_comes_from_the_callers_generator(template):
    source = synthetic.SyntheticSource(16, 0, template)
    same = [source.order(np.random.default_rng(3)) for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], source.order(np.random.default_rng(4)))


def test_items_are_centred_upright_and_their_keypoints_are_the_projected_joints(template):
    source = synthetic.SyntheticSource(4, 2, template)
    for i in range(4):
        it = source.item(i)
        assert np.abs(it.canonical.mean(axis=0)).max() < 1e-5
        matrix = synthetic.axis_angle_to_matrix(it.rotation.astype(np.float64))
        np.testing.assert_allclose(it.posed, it.canonical @ matrix.T, atol=1e-5)
        head, feet = it.posed[np.argmax(it.canonical[:, 1])], it.posed[np.argmin(it.canonical[:, 1])]
        assert head[1] < feet[1]  # camera frame: y down, so an upright person's head is above (smaller y)
        joints = (source.regressor @ it.posed)[list(synthetic.H36M_TO_J17)]  # as the 2D loss orders them
        np.testing.assert_allclose(it.keypoints[:, :2], it.cam[0] * (joints[:, :2] + it.cam[1:]), atol=1e-5)
        assert (np.abs(it.keypoints[:, :2]) < 1).all()  # inside the crop


def test_batches_have_the_trainers_types_and_tokens_come_from_the_tokenizer(template):
    calls = []

    def tokenize(meshes: np.ndarray) -> np.ndarray:
        calls.append(meshes.shape)
        return np.full((len(meshes), 54), 7)

    source = synthetic.SyntheticSource(5, 0, template, tokenize=tokenize)
    images = list(source.image_batches(2, np.random.default_rng(0)))
    assert len(images) == 2 and all(isinstance(b, ImageBatch) for b in images)  # drop_last
    assert images[0].keypoints.shape == (2, 17, 3) and not images[0].all_3dpw
    assert (images[0].gt_tokens == 7).all() and calls[0] == (2, 6890, 3)
    tokens = list(source.token_batches(5, np.random.default_rng(0)))
    assert isinstance(tokens[0], TokenBatch) and (tokens[0].tokens == 7).all()
    assert isinstance(next(source.mesh_batches(5, np.random.default_rng(0))), MeshBatch)
    untokenized = synthetic.SyntheticSource(5, 0, template)
    rows = next(untokenized.token_batches(5, np.random.default_rng(0))).tokens
    assert rows.dtype == torch.int64 and int(rows.min()) >= 0 and int(rows.max()) < 512


def test_rotations_round_trip_through_axis_angle():
    rng = np.random.default_rng(0)
    for angle in (0.0, 1e-9, 0.5, np.pi - 1e-7, np.pi):
        axis = rng.normal(size=3)
        aa = axis / np.linalg.norm(axis) * angle
        m = synthetic.axis_angle_to_matrix(aa)
        np.testing.assert_allclose(synthetic.axis_angle_to_matrix(synthetic.matrix_to_axis_angle(m)), m, atol=1e-7)


def test_an_empty_source_and_an_item_out_of_range_are_refused(template):
    with pytest.raises(synthetic.SyntheticDataError, match="at least 1"):
        synthetic.SyntheticSource(0, 0, template)
    with pytest.raises(synthetic.SyntheticDataError, match=r"outside 0\.\.2"):
        synthetic.SyntheticSource(3, 0, template).item(3)
