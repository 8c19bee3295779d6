"""The runtime's dependencies install from binary wheels on every platform the add-on supports (docs/detection.md).

Blender 4.2 – 5.2 bring Python 3.11 – 3.13, on Windows x86-64, macOS arm64 (14+), Linux x86-64 and Linux aarch64.
For each of the 12 combinations, uv resolves ``pyproject.toml``'s ``[project] dependencies`` (no extras) for that
*target* — its environment markers and wheel tags, not this machine's (pip's ``--platform`` would still evaluate
markers against the running interpreter) — with ``--only-binary :all:``, as the add-on's private environment gets
them. The 12 resolutions run concurrently against one temporary uv cache, so the package index is read about once.
Skipped when no package index answers (one probe for the whole module).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("x86_64-pc-windows-msvc", "aarch64-apple-darwin", "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu")
PYTHONS = ("3.11", "3.12", "3.13")
#: Oldest macOS the add-on supports on Apple silicon (uv reads it for the macOS wheel tags it accepts).
MACOS_TARGET = "14.0"
#: What every platform's environment must hold: the pinned torch and the detectors' TFLite interpreter and onnxruntime.
REQUIRED_PINS = ("torch==2.13.0", "ai-edge-litert==2.3.0")
REQUIRED_PACKAGES = ("onnxruntime",)
RESOLVE_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 5.0

pytestmark = pytest.mark.slow


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_carry_no_test_environment_pins():
    # numpy<2 exists only for bpy (test extra); tflite-runtime has Linux wheels only, mediapipe none for 3.13
    dependencies = _project()["dependencies"]
    numpy = [d for d in dependencies if d.split(";")[0].strip().startswith("numpy")]
    assert numpy and all("<2" not in d for d in numpy), numpy
    assert not [d for d in dependencies if d.startswith(("tflite-runtime", "mediapipe", "bpy"))]
    test_extra = _project()["optional-dependencies"]["test"]
    assert "numpy<2; python_version == '3.11'" in test_extra
    assert "bpy==4.5.*; python_version == '3.11'" in test_extra


def _uv_bin() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.skip("uv is not installed (it comes with the test extra: pip install -e '.[test]')")
    return find_uv_bin()


def _index_url() -> str:
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"


def _index_reachable(url: str) -> str | None:
    """None when the package index answers, else why not."""
    probe = url.rstrip("/") + "/uv/"
    try:
        with urllib.request.urlopen(urllib.request.Request(probe, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"{probe} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{probe} did not answer: {getattr(exc, 'reason', exc)}"


def _resolve(uv: str, cache: Path, platform: str, python: str) -> subprocess.CompletedProcess[str]:
    command = [
        uv, "pip", "compile", str(ROOT / "pyproject.toml"),
        "--python-platform", platform, "--python-version", python, "--only-binary", ":all:",
        "--cache-dir", str(cache), "--no-config", "--no-header", "--no-annotate", "--quiet",
        # resolve with this interpreter: uv would otherwise try to download a CPython of the target version
        "--python", sys.executable, "--no-python-downloads",
    ]  # fmt: skip
    env = {**os.environ, "MACOSX_DEPLOYMENT_TARGET": MACOS_TARGET}
    try:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, -1, "", f"no answer within {RESOLVE_TIMEOUT_S:g} s")


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    uv = _uv_bin()
    why = _index_reachable(_index_url())
    if why is not None:
        pytest.skip(f"no package index reachable to resolve for other platforms ({why})")
    cache = tmp_path_factory.mktemp("uv-cache")
    cases = [(platform, python) for platform in PLATFORMS for python in PYTHONS]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = dict(zip(cases, pool.map(lambda case: _resolve(uv, cache, *case), cases), strict=True))
    log.info("resolved %d platform/Python combinations with %s", len(cases), uv)
    return results


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_runtime_dependencies_resolve_to_wheels(resolutions, platform, python):
    result = resolutions[(platform, python)]
    assert result.returncode == 0, f"{platform}, Python {python}:\n{result.stderr.strip()}"
    pins = {line.strip() for line in result.stdout.splitlines() if "==" in line and not line.startswith("#")}
    missing = [pin for pin in REQUIRED_PINS if pin not in pins]
    assert not missing, f"{platform}, Python {python}: {missing} not in the resolution {sorted(pins)}"
    absent = [name for name in REQUIRED_PACKAGES if not any(pin.startswith(f"{name}==") for pin in pins)]
    assert not absent, f"{platform}, Python {python}: {absent} not in the resolution {sorted(pins)}"
    assert not [pin for pin in pins if pin.startswith(("tflite-runtime==", "mediapipe=="))]


def test_this_interpreter_is_one_of_the_targets():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in PYTHONS
