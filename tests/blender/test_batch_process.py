"""The headless batch as users run it — a real ``python -m mega_blender.batch`` process — writes its file and exits.

In-process tests (test_batch_export.py) cannot see how the process ends: bpy 4.5 deadlocked at interpreter exit after
a video result (its movie reader's delayed-close thread), so every export here runs as a subprocess with a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bpy", reason="the batch needs the bpy module")

from tests.blender.conftest import REPO_ROOT
from tests.blender.make_result import make_arrays, make_meta, write_result

#: Generous: the export itself takes ~1 s; a deadlocked exit never ends and hits this.
EXIT_TIMEOUT_S = 120


def _video_result(folder: Path) -> Path:
    meta = make_meta(source_path=None)
    meta["source"].update(kind="video", fps=25.0)
    return write_result(folder, "clip", make_arrays(num_people=1, num_hypotheses=3, num_frames=5), meta)


def _run_batch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        return subprocess.run(
            [sys.executable, "-m", "mega_blender.batch", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the batch process did not exit within {EXIT_TIMEOUT_S} s: {args}; stderr: {exc.stderr!r}")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".glb", ".fbx", ".usd", ".abc", ".blend"])
def test_ok_batch_process_exports_a_video_result_and_exits(tmp_path, suffix):
    result = _video_result(tmp_path)
    out = tmp_path / f"clip{suffix}"
    run = _run_batch("import", str(result), "--export", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.is_file() and out.stat().st_size > 0
    assert "wrote" in run.stdout


def test_ng_batch_process_exits_non_zero_on_a_missing_result(tmp_path):
    run = _run_batch("import", str(tmp_path / "absent.json"), "--export", str(tmp_path / "x.blend"), cwd=tmp_path)
    assert run.returncode != 0
    assert "absent.json" in run.stderr
    assert not (tmp_path / "x.blend").exists()
