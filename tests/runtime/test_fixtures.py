"""The runtime matches the official code on every reference fixture (shared/fixtures)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mega_runtime.commands.cli import main
from mega_runtime.verify.inference import verify_folder

FIXTURES = ["cvqmae_resnet", "cvqmae_hrnet", "cvqmae_vit", "vqmae", "mesh_vqvae", "pipeline_demo", "manifests"]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_official_outputs(name, fixtures_dir, tmp_path):
    report = verify_folder(fixtures_dir / name, tmp_path)
    failures = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert report.status == "passed", "\n".join(failures) or report.not_verified


def test_verify_cli_writes_usable_official_layout(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code = main(["verify", str(fixtures_dir / "vqmae"), "--write-checkpoints", str(out)])
    assert code == 0
    assert (out / "VQMAE" / "mega_pretrained").is_file()
    assert '"mega_pretrained"' in (out / "config.json").read_text()
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_verify_cli_exits_non_zero_when_a_tolerance_is_exceeded(fixtures_dir, tmp_path, capsys):
    broken = tmp_path / "vqmae"
    shutil.copytree(fixtures_dir / "vqmae", broken)
    with np.load(broken / "reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["logits"] = arrays["logits"] + 0.01
    np.savez(broken / "reference.npz", **arrays)
    assert main(["verify", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "logits" in out and "FAIL" in out and "0 passed, 1 failed" in out


def test_verify_cli_names_a_missing_folder(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
