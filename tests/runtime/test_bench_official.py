"""benchmarks/bench_official.py: argument handling, the skip path and the seeded weights (no official code here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_official.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_official_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_without_official_dir_skips_cleanly_and_imports_no_official_code() -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('official modules loaded:', sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mega', 'mesh_vq_vae', 'timm', 'pytorch3d', 'torchvision')))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "skipped: no --official-dir given" in run.stdout
    assert "docs/benchmarks.md" in run.stdout
    assert "official modules loaded: []" in run.stdout


def test_official_dir_without_the_checkout_is_reported_by_path(tmp_path: Path, capsys) -> None:
    bench = _load()
    assert bench.main(["--official-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped:")
    assert str(tmp_path / "MEGA" / "mega" / "model" / "cvqmae" / "masked_autoencoder.py") in out


def test_missing_shared_data_is_named(tmp_path: Path) -> None:
    bench = _load()
    problem = bench.shared_problem(tmp_path)
    assert problem is not None and "manifest_cvqmae_hrnet.json" in problem and "MEGA_SHARED_DIR" in problem


@pytest.mark.parametrize("flag", ["--threads", "--repeats"])
def test_non_positive_counts_are_rejected(flag: str) -> None:
    bench = _load()
    with pytest.raises(SystemExit):
        bench.parse_args([flag, "0"])


def test_seeded_full_size_state_is_reproducible_and_keeps_the_shared_graph(tmp_path: Path) -> None:
    bench = _load()
    manifest = tmp_path / "manifest.json"
    keys = {
        "encoder.model.weights0": {"shape": [9, 6], "dtype": "float32"},
        "encoder.model.bias0": {"shape": [3], "dtype": "float32"},
        "bn.weight": {"shape": [4], "dtype": "float32"},
        "bn.running_var": {"shape": [4], "dtype": "float32"},
        "bn.num_batches_tracked": {"shape": [], "dtype": "int64"},
        "decoder.model.weights0": {"shape": [9, 6], "dtype": "float32"},
    }
    manifest.write_text(json.dumps({"keys": keys}))
    first, second = bench.seeded_state(manifest, 3), bench.seeded_state(manifest, 3)
    assert list(first) == list(keys)
    for key in keys:
        np.testing.assert_array_equal(first[key], second[key])
    assert first["decoder.model.weights0"] is first["encoder.model.weights0"]
    assert (first["bn.running_var"] > 0).all()
    assert first["bn.num_batches_tracked"].dtype == np.int64
    assert first["encoder.model.weights0"].dtype == np.float32
