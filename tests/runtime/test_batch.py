"""``mega-runtime batch``: inputs and names, the manifest, resuming, failures, and results identical to infer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_runtime.commands.batch import MANIFEST_NAME, assign_names, collect_inputs
from mega_runtime.commands.cli import main
from mega_runtime.io.result import read_result

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


def _options(checkpoints: Path, assets_dir: Path) -> list[str]:
    folders = ["--checkpoint-dir", str(checkpoints), "--assets-dir", str(assets_dir)]
    return [*folders, "--model", "resnet", "--device", "cpu", "--hypotheses", "2", "--seed", "7"]


@pytest.fixture(scope="module")
def inputs(assets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small photos with the same name in two folders, a 3-frame clip, a broken photo and a list file."""
    root = tmp_path_factory.mktemp("batch-inputs")
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    for folder, shift in (("a", 0), ("b", 9)):
        (root / folder).mkdir()
        cv2.imwrite(str(root / folder / "take.png"), np.roll(small, shift, axis=1))
    writer = cv2.VideoWriter(str(root / "a" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 12, small.shape[1::-1])
    for i in range(3):
        writer.write(np.roll(small, 3 * i, axis=1))
    writer.release()
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    (root / "list.txt").write_text("# inputs\nbroken.jpg\n")
    return root


def _arrays(json_path: Path) -> dict[str, str]:
    """SHA-256 of each array's bytes (a failed comparison then names the arrays that differ, quickly)."""
    result = read_result(json_path)
    return {name: hashlib.sha256(array.tobytes()).hexdigest() for name, array in result.arrays.items()}


def test_inputs_from_folders_globs_and_list_files_get_unique_names(inputs: Path, tmp_path: Path) -> None:
    paths = collect_inputs([str(inputs / "a"), str(inputs / "*" / "take.png"), f"@{inputs / 'list.txt'}"])
    assert [p.relative_to(inputs).as_posix() for p in paths] == ["a/clip.avi", "a/take.png", "b/take.png", "broken.jpg"]
    (tmp_path / "clip.json").write_text("{}")  # a user's file: its name is never used
    names = assign_names(paths, tmp_path, {})
    assert [names[str(p)] for p in paths] == ["clip-2", "a_take", "b_take", "broken"]
    assert assign_names(paths, tmp_path, {str(paths[0]): "kept"})[str(paths[0])] == "kept"


def test_batch_equals_infer_records_a_failure_and_resumes(
    small_checkpoints: Path, assets_dir: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    options = _options(small_checkpoints, assets_dir)
    argv = ["batch", str(inputs / "a"), str(inputs / "b"), f"@{inputs / 'list.txt'}", "--out", str(out), *options]
    assert main(argv) == 2  # the broken photo failed; the others were done
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    status = {Path(e["input"]).relative_to(inputs).as_posix(): (e["name"], e["status"]) for e in manifest["inputs"]}
    assert status == {
        "a/clip.avi": ("clip", "done"),
        "a/take.png": ("a_take", "done"),
        "b/take.png": ("b_take", "done"),
        "broken.jpg": ("broken", "failed"),
    }
    assert "[4/4]" in capsys.readouterr().err
    for source, name in (("a/clip.avi", "clip"), ("b/take.png", "b_take")):
        single = tmp_path / f"infer-{name}"
        assert main(["infer", str(inputs / source), "--out", str(single), *options]) == 0
        assert _arrays(out / f"{name}.json") == _arrays(single / f"{Path(source).stem}.json"), source

    # an interrupted run: one result left without its .json, marked running → redone; finished ones skipped
    before = (out / "a_take.json").stat().st_mtime_ns
    expected = _arrays(out / "b_take.json")
    (out / "b_take.json").unlink()
    manifest["inputs"][[e["name"] for e in manifest["inputs"]].index("b_take")]["status"] = "running"
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert main(argv) == 2
    assert "2 of 4 input(s) already done" in capsys.readouterr().err
    assert (out / "a_take.json").stat().st_mtime_ns == before
    assert _arrays(out / "b_take.json") == expected


def test_batch_refuses_to_resume_with_other_settings(
    small_checkpoints: Path, assets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    settings = {"seed": 1}
    (out / MANIFEST_NAME).write_text(json.dumps({"schema": "mega-batch-manifest", "settings": settings, "inputs": []}))
    assert main(["batch", str(tmp_path), "--out", str(out), *_options(small_checkpoints, assets_dir)]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_two_worker_processes_give_the_results_of_one(
    small_checkpoints: Path, assets_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    options = _options(small_checkpoints, assets_dir)
    sources = [str(inputs / "a" / "take.png"), str(inputs / "b" / "take.png"), str(inputs / "a" / "clip.avi")]
    assert main(["batch", *sources, "--out", str(tmp_path / "one"), *options]) == 0
    assert main(["batch", *sources, "--out", str(tmp_path / "two"), "--workers", "2", *options]) == 0
    for name in ("a_take", "b_take", "clip"):
        assert _arrays(tmp_path / "two" / f"{name}.json") == _arrays(tmp_path / "one" / f"{name}.json"), name
