"""benchmarks/device_check.sh: the prepared GPU run stages what the device machine needs and refuses to run without it.

The GPU steps themselves only run where a GPU is lent (docs/benchmarks.md, "CUDA"); these tests prove the parts that
decide whether such a run can start at all: the staged copy of ../shared and the script's refusals.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_stage_copies_the_fixtures_and_assets_the_gpu_run_reads(fixtures_dir: Path, assets_dir: Path, tmp_path):
    stage = tmp_path / "stage"
    done = _run("--stage", env={"MEGA_SHARED_DIR": str(fixtures_dir.parent), "MEGA_DEVICE_DIR": str(stage)})
    assert done.returncode == 0, done.stderr
    assert _files(stage / "shared" / "fixtures") == _files(fixtures_dir)
    assert _files(stage / "shared" / "assets") == _files(assets_dir)
    assert "carry" in done.stdout  # says what to do with the folder


def test_stage_again_keeps_what_is_there_and_updates_it(fixtures_dir: Path, tmp_path):
    stage = tmp_path / "stage"
    env = {"MEGA_SHARED_DIR": str(fixtures_dir.parent), "MEGA_DEVICE_DIR": str(stage)}
    assert _run("--stage", env=env).returncode == 0
    note = stage / "shared" / "my-notes.txt"
    note.write_text("mine")
    assert _run("--stage", env=env).returncode == 0
    assert note.read_text() == "mine"


def test_stage_without_the_shared_data_says_where_it_looked(tmp_path):
    done = _run("--stage", env={"MEGA_SHARED_DIR": str(tmp_path / "nowhere"), "MEGA_DEVICE_DIR": str(tmp_path / "s")})
    assert done.returncode == 2
    assert "nowhere/fixtures is missing" in done.stderr and "MEGA_SHARED_DIR" in done.stderr
    assert not (tmp_path / "s").exists()


def test_run_without_staged_data_refuses_and_names_the_stage_step(tmp_path):
    out = tmp_path / "out"
    done = _run(env={"MEGA_DEVICE_DIR": str(tmp_path / "empty"), "OUT": str(out)})
    assert done.returncode == 2
    assert "--stage" in done.stderr and "carry" in done.stderr
    assert not list(out.glob("*.log"))  # no step ran


@pytest.mark.parametrize("argument", ["--stages", "cuda"])
def test_unknown_argument_is_refused(argument: str, tmp_path):
    done = _run(argument, env={"MEGA_DEVICE_DIR": str(tmp_path / "s"), "OUT": str(tmp_path / "out")})
    assert done.returncode == 2
    assert f"unknown argument '{argument}'" in done.stderr
