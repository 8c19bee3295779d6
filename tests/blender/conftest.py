"""Tests in real Blender (the PyPI ``bpy`` module: 4.5 LTS, and 5.0 via ``.ci/run-bpy5``): shared set-up.

* ``BLENDER_USER_RESOURCES`` points at a fresh temporary folder *before* bpy is imported, so Blender never reads
  or writes the user's configuration; the folder is removed at the end of the session.
* The repository root goes on ``sys.path``, so ``addon_utils.enable("mega_blender")`` registers the add-on as a
  package on the path (the zip install is tested by ``tests/test_build_addon.py``).
* The ``blender`` fixture resets to an empty factory scene (which disables add-ons), enables the add-on, and
  disables it again afterwards — a class left registered makes the bpy module hang at interpreter exit.
* ``arrays`` and ``result_path``: the synthetic result of the import tests (``test_import_*.py``; its size is in
  ``import_helpers.py``), written to the test's folder with a photo beside it.

Test modules start with ``bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)``, so the whole folder skips
with that reason where bpy is not installed (``test_typecheck.py`` needs only mypy and the stubs).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.blender.import_helpers import NUM_HYPOTHESES, NUM_PEOPLE
from tests.blender.make_result import make_arrays, make_meta, write_photo, write_result

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDON = "mega_blender"
BPY_SKIP_REASON = (
    "the Blender tests need the bpy module: pip install 'bpy==4.5.*' 'numpy<2' (Python 3.11) into this environment"
)

_USER_RESOURCES = Path(tempfile.mkdtemp(prefix="mega-blender-tests-"))
os.environ["BLENDER_USER_RESOURCES"] = str(_USER_RESOURCES)
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _bpy() -> Any:
    import bpy

    return bpy


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave nothing registered (bpy hangs at exit otherwise) and remove the temporary user folder."""
    if "bpy" in sys.modules:
        import addon_utils

        if addon_utils.check(ADDON)[1]:
            addon_utils.disable(ADDON)
    shutil.rmtree(_USER_RESOURCES, ignore_errors=True)


@pytest.fixture
def blender() -> Iterator[Any]:
    """bpy with an empty factory scene and the add-on enabled; the add-on is disabled afterwards."""
    bpy = _bpy()
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    module = addon_utils.enable(ADDON, default_set=True, handle_error=_raise)
    if module is None:
        pytest.fail(f"addon_utils.enable({ADDON!r}) failed")
    try:
        yield bpy
    finally:
        addon_utils.disable(ADDON, default_set=True)


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.fixture
def live(blender: Any, small_checkpoints: Path, assets_dir: Path, tmp_path: Path, monkeypatch: Any) -> Iterator[Any]:
    """The add-on set up to run this Python as its runtime (it has torch and mega_runtime installed), with the
    small seeded checkpoints; yields ``mega_blender.jobs``. The runtime is stopped afterwards."""
    bpy = blender
    monkeypatch.setenv("MEGA_ASSETS_DIR", str(assets_dir))
    preferences = bpy.context.preferences.addons[ADDON].preferences
    preferences.runtime_mode = "INTERPRETER"
    preferences.python_path = sys.executable
    preferences.weights_dir = str(small_checkpoints)
    preferences.results_dir = str(tmp_path / "results")
    preferences.model = "resnet"
    preferences.num_hypotheses = 3
    preferences.device = "CPU"
    from mega_blender import jobs

    yield jobs
    jobs.stop()


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    """The import tests' synthetic result arrays: ``NUM_PEOPLE`` people × ``NUM_HYPOTHESES`` hypotheses, seed 1."""
    return make_arrays(num_people=NUM_PEOPLE, num_hypotheses=NUM_HYPOTHESES, seed=1)


@pytest.fixture
def result_path(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` written as ``tmp_path/photo.json`` + ``.npz``, with a 640 × 480 ``photo.png`` beside it."""
    photo = write_photo(tmp_path / "photo.png", 640, 480)
    return write_result(tmp_path, "photo", arrays, make_meta(640, 480, source_path=str(photo)))
