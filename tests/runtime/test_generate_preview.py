"""Unconditional generation, previews and device selection."""

from __future__ import annotations

import numpy as np
import pytest

from mega_runtime.commands.cli import main
from mega_runtime.errors import MegaError
from mega_runtime.io.result import Result, read_result
from mega_runtime.mega import resolve_device


@pytest.fixture(scope="module")
def checkpoints(fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoints")
    assert (
        main(["verify", str(fixtures_dir / "vqmae"), str(fixtures_dir / "mesh_vqvae"), "--write-checkpoints", str(out)])
        == 0
    )
    return out


def test_generate_writes_bodies_standing_in_front_of_the_camera(checkpoints, assets_dir, tmp_path):
    args = [
        "generate",
        "--count",
        "3",
        "--out",
        str(tmp_path),
        "--checkpoint-dir",
        str(checkpoints),
        "--assets-dir",
        str(assets_dir),
        "--device",
        "cpu",
        "--steps",
        "4",
    ]
    assert main(args) == 0
    result = read_result(tmp_path / "generated.json")
    assert result.num_people == 3 and result.num_hypotheses == 1
    assert result.meta["source"]["kind"] == "generated" and result.meta["sampling"]["steps"] == 4
    centres = result.arrays["vertices"][0, :, 0].mean(axis=1)
    np.testing.assert_allclose(centres[:, 2], 3.0, atol=1e-4)
    np.testing.assert_allclose(np.diff(centres[:, 0]), 1.0, atol=1e-4)
    assert main(args) == 2  # does not overwrite


def test_generate_stack_writes_the_bodies_as_hypotheses_of_one_person_most_likely_first(
    checkpoints, assets_dir, tmp_path
):
    common = ["--checkpoint-dir", str(checkpoints), "--assets-dir", str(assets_dir), "--device", "cpu"]
    common += ["--steps", "4", "--count", "3", "--seed", "5"]
    assert main(["generate", "--out", str(tmp_path), "--name", "row", *common]) == 0
    assert main(["generate", "--out", str(tmp_path), "--name", "stacked", "--stack", *common]) == 0
    row, stacked = read_result(tmp_path / "row.json"), read_result(tmp_path / "stacked.json")
    assert stacked.num_people == 1 and stacked.num_hypotheses == 3
    assert stacked.meta["sampling"]["num_hypotheses"] == 3
    likelihood = stacked.arrays["log_likelihood"][0, 0]
    assert np.all(np.diff(likelihood) <= 0)
    # the same bodies as side by side, moved to one place: match each stacked body to its row body by its tokens
    for h in range(3):
        (person,) = np.flatnonzero((row.arrays["tokens"][0, :, 0] == stacked.arrays["tokens"][0, 0, h]).all(axis=1))
        moved = row.arrays["vertices"][0, person, 0] - row.arrays["cam_t"][0, person, 0]
        np.testing.assert_allclose(stacked.arrays["vertices"][0, 0, h], moved + np.array([0, 0, 3.0]), atol=1e-5)
    assert stacked.arrays["vertex_std"][0, 0].max() > 0


def test_generate_without_the_pretrained_checkpoint_names_the_fix(assets_dir, tmp_path, capsys):
    args = [
        "generate",
        "--out",
        str(tmp_path),
        "--checkpoint-dir",
        str(tmp_path / "none"),
        "--assets-dir",
        str(assets_dir),
    ]
    assert main(args) == 2
    assert "mega_pretrained" in capsys.readouterr().err


def _template_result(assets_dir) -> tuple[Result, np.ndarray]:
    from mega_runtime.models.assets import read_template_ply
    from tests.runtime.test_result_tracking import make_result

    template = read_template_ply(assets_dir / "template.ply")
    result = make_result(frames=1, people=1, hypotheses=2)
    body = template.vertices * np.array([1, -1, -1], np.float32) + np.array([0, 0, 4], np.float32)
    result.arrays["vertices"][0, 0, :] = body
    result.arrays["faces"][:] = template.faces
    result.arrays["valid"][:] = True
    result.arrays["vertex_std"][0, 0] = np.linspace(0, 0.05, body.shape[0], dtype=np.float32)
    result.arrays["boxes_xyxy"][0, 0] = (100, 50, 300, 350)
    result.meta["camera"] = {"focal_px": 400.0, "principal_point_px": [200.0, 200.0]}
    return result, np.zeros((400, 400, 3), np.uint8)


def test_uncertainty_preview_colours_the_mesh_by_spread(assets_dir, tmp_path):
    import cv2

    from mega_runtime.io.preview import write_preview, write_uncertainty_preview

    result, image = _template_result(assets_dir)
    heat = cv2.imread(str(write_uncertainty_preview(result, image, tmp_path / "u.png")))
    overlay = cv2.imread(str(write_preview(result, image, tmp_path / "p.png")))
    assert heat.shape == overlay.shape == (400, 400, 3)
    body = heat[150:250, 180:220].reshape(-1, 3).astype(int)
    assert len({tuple(c // 32) for c in body}) > 3  # several colours of the map, not one flat colour
    assert overlay[200, 200].any()


def test_device_auto_falls_back_to_cpu_and_unknown_devices_are_named():
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(MegaError, match="unknown device"):
        resolve_device("gpu7")
