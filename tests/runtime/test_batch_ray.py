"""``mega-runtime batch --ray`` on a local Ray (2 CPUs, started once): equals the local batch, resumes, and
finishes when a worker is killed. Skipped when ray is not installed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_runtime.commands.batch import MANIFEST_NAME, Job
from mega_runtime.commands.cli import build_parser, main
from mega_runtime.io.result import read_result

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mega-blender[ray]')")

pytestmark = pytest.mark.slow
PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, no dashboard (start-up is the slow part)."""
    env = {k: os.environ[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(assets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ray-inputs")
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    paths = []
    for i in range(3):
        paths.append(root / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), np.roll(small, 7 * i, axis=1))
    return paths


def _options(checkpoints: Path, assets_dir: Path) -> list[str]:
    folders = ["--checkpoint-dir", str(checkpoints), "--assets-dir", str(assets_dir)]
    return [*folders, "--model", "resnet", "--device", "cpu", "--hypotheses", "2", "--seed", "3"]


def _arrays(json_path: Path) -> dict[str, str]:
    """SHA-256 of each array's bytes (a failed comparison then names the arrays that differ, quickly)."""
    return {name: hashlib.sha256(a.tobytes()).hexdigest() for name, a in read_result(json_path).arrays.items()}


def test_ray_with_two_workers_equals_the_local_batch_and_resumes(
    local_ray, small_checkpoints: Path, assets_dir: Path, photos: list[Path], tmp_path: Path
) -> None:
    options = _options(small_checkpoints, assets_dir)
    sources = [str(p) for p in photos]
    assert main(["batch", *sources, "--out", str(tmp_path / "local"), *options]) == 0
    out = tmp_path / "ray"
    assert main(["batch", *sources, "--out", str(out), "--ray", "--workers", "2", *options]) == 0
    for path in photos:
        assert _arrays(out / f"{path.stem}.json") == _arrays(tmp_path / "local" / f"{path.stem}.json"), path.name

    manifest = json.loads((out / MANIFEST_NAME).read_text())  # interrupted: p1's pair unfinished
    (out / "p1.json").unlink()
    manifest["inputs"][1]["status"] = "running"
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    untouched = (out / "p0.json").stat().st_mtime_ns
    assert main(["batch", *sources, "--out", str(out), "--ray", "--workers", "2", *options]) == 0
    assert (out / "p0.json").stat().st_mtime_ns == untouched
    assert _arrays(out / "p1.json") == _arrays(tmp_path / "local" / "p1.json")


def test_a_killed_ray_worker_is_restarted_and_the_batch_finishes(
    local_ray, small_checkpoints: Path, assets_dir: Path, photos: list[Path], tmp_path: Path
) -> None:
    from mega_runtime.commands.batch_ray import run_on_ray

    args = build_parser().parse_args(["batch", "x", "--out", str(tmp_path), "--workers", "2", *_options(
        small_checkpoints, assets_dir)])  # fmt: skip
    jobs = [Job(str(p), p.stem) for p in photos]
    pids: list[int] = []
    outcomes: dict[str, dict] = {}

    def started(job: Job) -> None:
        if job is jobs[0]:
            os.kill(pids[0], signal.SIGKILL)  # the first actor dies while its input is queued or running

    run_on_ray(args, jobs, started, lambda job, outcome: outcomes.update({job.name: outcome}), None, pids.extend)
    assert {name: o["status"] for name, o in outcomes.items()} == {"p0": "done", "p1": "done", "p2": "done"}
    for path in photos:
        assert read_result(tmp_path / f"{path.stem}.json").num_people >= 0
