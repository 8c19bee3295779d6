"""Shared test helpers: where ../shared is, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MEGA_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures"
TRAINING_FIXTURES_DIR = SHARED_DIR / "training_fixtures"
ASSETS_DIR = SHARED_DIR / "assets"
MANIFESTS_DIR = FIXTURES_DIR / "manifests"

# Nothing is downloaded implicitly in tests (the "auto" detector keeps to files already on disk, so it falls back to
# BlazePose deterministically); subprocesses inherit it. Tests of downloads pass their own mirrors explicitly.
os.environ["MEGA_OFFLINE"] = "1"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests read the shared reference data from ../shared (or MEGA_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES_DIR)


@pytest.fixture(scope="session")
def training_fixtures_dir() -> Path:
    return _require(TRAINING_FIXTURES_DIR)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return _require(ASSETS_DIR)


@pytest.fixture(scope="session")
def manifests_dir() -> Path:
    return _require(MANIFESTS_DIR)


@pytest.fixture(scope="session")
def small_checkpoints(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded ResNet model, the pre-trained VQMAE and the Mesh-VQ-VAE rebuilt as official-format checkpoints
    (``verify --write-checkpoints``), written once per session for every test that needs loadable weights."""
    from mega_runtime.commands.cli import main

    out = tmp_path_factory.mktemp("small-checkpoints")
    names = [str(fixtures_dir / n) for n in ("cvqmae_resnet", "mesh_vqvae", "vqmae")]
    if main(["verify", *names, "--write-checkpoints", str(out)]) != 0:
        pytest.fail("the seeded fixtures did not verify, so no small checkpoints could be written")
    return out


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """Leave at once once Blender's module was loaded: its threads can keep the interpreter from exiting.

    Everything (results, summary) has been written by now; a clean-clone CI run printed its summary and
    then waited on a thread forever, so the process ends here with pytest's own exit status.
    """
    import sys

    if "bpy" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
