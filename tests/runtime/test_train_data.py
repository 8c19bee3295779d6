"""Readers of the official dataset layouts (mega_runtime/train/data.py): a good file reads into the trainers'
batch types, and every missing field or file is a DataError that names it. Meshes come from the synthetic SMPL
model of tests/runtime/smpl_synthetic.py (the real SMPL files are licensed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mega_runtime.train import data
from mega_runtime.train.batch import ImageBatch, MeshBatch
from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl

pytest.importorskip("smplx", reason="meshing needs the optional smplx package")


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_smpl(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", synthetic_smpl_arrays(0))


@pytest.fixture(scope="module")
def smpl(smpl_file: Path):
    from mega_runtime.smpl.model import load_smpl_model

    return load_smpl_model(smpl_file)


def motion_arrays(frames: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"poses": 0.2 * rng.normal(size=(frames, 156)), "betas": rng.normal(size=16), "gender": np.array("male")}


def image_arrays(n: int = 4, three_dpw: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    prefix = "3DPW/imageFiles/s/" if three_dpw else ""
    return {
        "imgname": np.array([f"{prefix}image_{i:05d}.jpg" for i in range(n)]),
        "center": rng.uniform(150, 250, (n, 2)),
        "scale": rng.uniform(0.8, 1.2, n),
        "pose_cam": 0.2 * rng.normal(size=(n, 72)),
        "j2d": np.concatenate([rng.uniform(50, 350, (n, 24, 2)), np.ones((n, 24, 1))], axis=2),
        "betas": rng.normal(size=(n, 10)),
        "gender": np.array(["m"] * n),
    }


def fake_image(path: Path) -> np.ndarray:
    return np.full((400, 400, 3), 128, np.uint8)


# ---------------------------------------------------------------------------------------------- motion capture


def test_a_motion_file_reads_its_body_pose_and_betas(tmp_path):
    np.savez(tmp_path / "walk.npz", **motion_arrays(frames=5))
    seq = data.read_motion_npz(tmp_path / "walk.npz")
    assert seq.frames == 5 and seq.poses.shape == (5, 66) and seq.betas.shape == (10,) and seq.gender == "male"


@pytest.mark.parametrize("missing", ["poses", "betas", "gender"])
def test_a_motion_file_without_a_field_is_refused_by_name(tmp_path, missing):
    arrays = motion_arrays()
    del arrays[missing]
    np.savez(tmp_path / "walk.npz", **arrays)
    with pytest.raises(data.DataError, match=f"no '{missing}' field"):
        data.read_motion_npz(tmp_path / "walk.npz")


def test_a_motion_file_with_too_short_poses_or_pickled_objects_is_refused(tmp_path):
    arrays = motion_arrays()
    arrays["poses"] = arrays["poses"][:, :60]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(data.DataError, match=r"'poses' has shape \(6, 60\)"):
        data.read_motion_npz(tmp_path / "short.npz")
    arrays = motion_arrays()
    arrays["gender"] = np.array([{"not": "an array"}], dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(data.DataError, match="string arrays"):
        data.read_motion_npz(tmp_path / "pickled.npz")
    with pytest.raises(data.DataError, match="does not exist"):
        data.read_motion_npz(tmp_path / "absent.npz")


def test_a_motion_folder_is_searched_recursively_without_shape_files(tmp_path):
    (tmp_path / "CMU" / "01").mkdir(parents=True)
    for name in ("01_01_poses.npz", "01_02_poses.npz"):
        np.savez(tmp_path / "CMU" / "01" / name, **motion_arrays())
    np.savez(tmp_path / "CMU" / "01" / "shape.npz", betas=np.zeros(16))
    assert [p.name for p in data.find_motion_files(tmp_path)] == ["01_01_poses.npz", "01_02_poses.npz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match=r"no \.npz sequence"):
        data.find_motion_files(tmp_path / "empty")
    with pytest.raises(data.DataError, match="does not exist"):
        data.find_motion_files(tmp_path / "absent")


def test_motion_batches_are_centred_canonical_meshes_and_repeat_with_the_same_generator(tmp_path, smpl):
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", **motion_arrays(seed=i))
    source = data.MotionMeshSource(data.find_motion_files(tmp_path), smpl)
    first = list(source.batches(2, np.random.default_rng(7)))
    again = list(source.batches(2, np.random.default_rng(7)))
    assert len(first) == 1 and isinstance(first[0], MeshBatch) and first[0].meshes.shape == (2, 6890, 3)
    assert torch.equal(first[0].meshes, again[0].meshes)
    assert first[0].meshes.mean(dim=1).abs().max() < 1e-5
    posed = data.MotionMeshSource(source.files, smpl, canonical=False).meshes([(0, 0)])
    assert not np.allclose(posed, source.meshes([(0, 0)]), atol=1e-3)  # the root rotation matters


# ---------------------------------------------------------------------------------------------- image datasets


def test_an_image_dataset_reads_with_the_official_field_fallbacks(tmp_path):
    arrays = image_arrays()
    fallback = dict(arrays)
    fallback["root_orient"], fallback["pose_body"] = arrays["pose_cam"][:, :3], arrays["pose_cam"][:, 3:66]
    fallback["part"], fallback["shape"] = fallback.pop("j2d"), fallback.pop("betas")
    del fallback["pose_cam"], fallback["gender"]
    np.savez(tmp_path / "coco.npz", **arrays)
    np.savez(tmp_path / "mpii.npz", **fallback)
    a, b = data.read_image_annotations(tmp_path / "coco.npz"), data.read_image_annotations(tmp_path / "mpii.npz")
    assert len(a) == len(b) == 4 and b.gender == ("neutral",) * 4
    np.testing.assert_array_equal(a.pose, b.pose)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        (("imgname",), "'imgname'"),
        (("center",), "'center'"),
        (("scale",), "'scale'"),
        (("pose_cam",), "'root_orient'"),
        (("j2d",), "'j2d' or 'part'"),
        (("betas",), "'betas' or 'shape'"),
    ],
)
def test_an_image_dataset_without_a_field_is_refused_by_name(tmp_path, drop, needle):
    arrays = image_arrays()
    for key in drop:
        del arrays[key]
    np.savez(tmp_path / "coco.npz", **arrays)
    with pytest.raises(data.DataError, match=needle):
        data.read_image_annotations(tmp_path / "coco.npz")


def test_an_image_dataset_with_mismatched_rows_is_refused(tmp_path):
    arrays = image_arrays()
    arrays["center"] = arrays["center"][:3]
    np.savez(tmp_path / "coco.npz", **arrays)
    with pytest.raises(data.DataError, match=r"'center' has shape \(3, 2\), expected \(4, 2\)"):
        data.read_image_annotations(tmp_path / "coco.npz")


def test_keypoints_map_into_the_crop_with_the_official_integer_step():
    center, scale = np.array([300.0, 200.0]), 1.5  # a 300 px box: crop x = 224/300 · x − 112
    kp = np.array([[300.0, 200.0, 0.7], [301.0, 200.0, 1.0], [150.0, 50.0, 0.0], [149.0, 49.0, 1.0]])
    out = data.crop_keypoints(kp, center, scale)
    # trunc(t·kp) + 1, then 2·x/224 − 1; trunc goes towards zero (−0.75 → 0)
    expected_px = np.array([[113, 113], [113, 113], [1, 1], [1, 1]])
    np.testing.assert_allclose(out[:, :2], 2.0 * expected_px / 224 - 1.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], kp[:, 2], rtol=1e-6)


def test_the_crop_is_the_box_resized_and_zero_outside_the_image():
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (400, 500, 3)).astype(np.uint8)
    crop = data.crop_image(image, np.array([250.0, 200.0]), 1.0)  # a 200 px box, resized to 224
    expected = cv2.resize(image[100:300, 150:350].astype(np.float64), (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, expected)
    corner = data.crop_image(image, np.array([0.0, 0.0]), 1.0)  # three quarters outside the image
    assert (corner[:100] == 0).all() and (corner[:, :100] == 0).all() and corner[130:, 130:].min() >= 0
    assert corner[130:, 130:].any()


def test_image_items_stack_into_an_image_batch_in_both_keypoint_formats(tmp_path, smpl):
    for three_dpw, joints in ((False, 17), (True, 24)):
        name = "3DPW_test.npz" if three_dpw else "coco.npz"
        np.savez(tmp_path / name, **image_arrays(three_dpw=three_dpw))
        ann = data.read_image_annotations(tmp_path / name)
        items = [data.image_item(ann, i, smpl, tmp_path, read_image=fake_image) for i in range(2)]
        batch = data.image_batch(items, lambda meshes: np.zeros((len(meshes), 54), np.int64))
        assert isinstance(batch, ImageBatch) and batch.keypoints.shape == (2, joints, 3)
        assert batch.all_3dpw is three_dpw and batch.images.shape == (2, 3, 224, 224)
        assert items[0].name.endswith(ann.imgname[0])
    assert str(items[0].name).startswith("3DPW/")  # 3DPW paths are used as stored
    with pytest.raises(data.DataError, match="--images-root"):
        data.image_item(data.read_image_annotations(tmp_path / "coco.npz"), 0, smpl, tmp_path)


def test_a_dataset_list_names_one_file_per_line(tmp_path):
    (tmp_path / "mix.txt").write_text("datasets/coco/coco.npz\n\ndatasets/mpii/mpii.npz\n")
    assert data.read_dataset_list(tmp_path / "mix.txt") == [
        Path("datasets/coco/coco.npz"),
        Path("datasets/mpii/mpii.npz"),
    ]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(data.DataError, match="empty"):
        data.read_dataset_list(tmp_path / "empty.txt")


# ---------------------------------------------------------------------------------------------- evaluation sets


def test_an_evaluation_set_is_meshed_posed_and_centred_with_names_and_centres(tmp_path, smpl):
    arrays = image_arrays(n=3, three_dpw=True)
    np.savez(tmp_path / "3DPW_test.npz", **arrays)
    gt = data.read_evaluation_set(tmp_path / "3DPW_test.npz", smpl)
    assert gt.vertices.shape == (3, 6890, 3) and gt.names == tuple(str(n) for n in arrays["imgname"])
    assert np.abs(gt.vertices.mean(axis=1)).max() < 1e-5
    np.testing.assert_allclose(gt.centers, arrays["center"])


def test_a_mesh_vqvae_pose_set_reads_and_meshes_canonical_rows(tmp_path, smpl):
    rng = np.random.default_rng(0)
    arrays = {"root_orient": rng.normal(size=(3, 3)), "pose_body": 0.2 * rng.normal(size=(3, 63)),
              "betas": rng.normal(size=(3, 10)), "gender": np.array(["male"] * 3)}  # fmt: skip
    np.savez(tmp_path / "3DPW_validation.npz", **arrays)
    assert len(data.read_pose_set(tmp_path / "3DPW_validation.npz")) == 3
    gt = data.read_evaluation_set(tmp_path / "3DPW_validation.npz", smpl)
    assert gt.names is None and np.abs(gt.vertices.mean(axis=1)).max() < 1e-5
    arrays["root_orient"] = np.zeros((3, 3))
    np.savez(tmp_path / "zero_root.npz", **arrays)
    np.testing.assert_allclose(data.read_evaluation_set(tmp_path / "zero_root.npz", smpl).vertices, gt.vertices)
    for missing in ("pose_body", "betas", "gender"):
        del_arrays = {k: v for k, v in arrays.items() if k != missing}
        np.savez(tmp_path / "bad.npz", **del_arrays)
        with pytest.raises(data.DataError, match=f"no '{missing}' field"):
            data.read_pose_set(tmp_path / "bad.npz")


def test_evaluate_meshes_official_annotation_ground_truth_with_the_users_smpl_model(tmp_path, smpl, smpl_file, capsys):
    from mega_runtime.commands.cli import main

    np.savez(tmp_path / "3DPW_test.npz", **image_arrays(n=3, three_dpw=True))
    gt = data.read_evaluation_set(tmp_path / "3DPW_test.npz", smpl)
    np.savez(tmp_path / "pred.npz", vertices=gt.vertices + np.float32(0.5), imgname=np.array(gt.names))
    argv = ["evaluate", str(tmp_path / "pred.npz"), "--gt", str(tmp_path / "3DPW_test.npz")]
    assert main(argv) == 2 and "--smpl-model" in capsys.readouterr().err
    assert main([*argv, "--smpl-model", str(smpl_file), "--dataset", "3DPW", "--out", str(tmp_path / "o")]) == 0
    report = (tmp_path / "o" / "metrics.json").read_text()
    assert '"pve": 0.0' in report and '"count": 3' in report
