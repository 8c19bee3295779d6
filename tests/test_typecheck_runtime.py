"""The runtime type-checks: ``python -m mypy`` with the [tool.mypy] configuration in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: A cold run of mypy over mega_runtime (torch and numpy stubs included) takes about a minute on one core.
TIMEOUT_S = 600


def test_runtime_type_checks():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        partial = b"".join(
            part if isinstance(part, bytes) else part.encode() for part in (exc.stdout, exc.stderr) if part
        )
        pytest.fail(f"mypy did not finish within {TIMEOUT_S} s:\n{partial.decode(errors='replace')}")
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
