"""The training steps match the official trainers on every training fixture (shared/training_fixtures)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mega_runtime.commands.cli import main
from mega_runtime.verify.inference import verify_folder

# The Mesh-VQ-VAE fixture is the slow one: about 23 s of CPU time for its three steps of 16 meshes.
TRAINING_FIXTURES = ["train_vqmae", "train_cvqmae_resnet", pytest.param("train_mesh_vqvae", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", TRAINING_FIXTURES)
def test_training_fixture_matches_the_official_training_steps(name, training_fixtures_dir, tmp_path):
    report = verify_folder(training_fixtures_dir / name, tmp_path)
    failures = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert report.status == "passed", "\n".join(failures) or report.not_verified
    assert len(report.checks) > 20


def test_every_training_fixture_folder_is_verified_by_the_tests(training_fixtures_dir):
    listed = {p if isinstance(p, str) else p.values[0] for p in TRAINING_FIXTURES}
    present = {p.name for p in training_fixtures_dir.iterdir() if (p / "fixture.json").is_file()}
    assert present <= listed, f"add {sorted(present - listed)} to TRAINING_FIXTURES"


def test_verify_exits_non_zero_when_a_training_loss_is_off(training_fixtures_dir, tmp_path, capsys):
    broken = tmp_path / "train_vqmae"
    shutil.copytree(training_fixtures_dir / "train_vqmae", broken)
    with np.load(broken / "reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["loss_ce"] = arrays["loss_ce"] + 0.01
    np.savez(broken / "reference.npz", **arrays)
    assert main(["verify", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "loss_ce" in out and "FAIL" in out and "0 passed, 1 failed" in out
