"""``resolve_device``: ``auto`` never picks a device the models cannot run on; a missing explicit one explains the fix.

CUDA and MPS availability are monkeypatched, so every branch runs on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch

from mega_runtime import mega
from mega_runtime.errors import MegaError
from mega_runtime.mega import device_problem, resolve_device


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Set what this 'machine' has: ``machine(cuda=…, gpus=…, mps=…, mps_problem=…)``."""

    def configure(cuda: bool = False, gpus: int = 0, mps: bool = False, mps_problem: str | None = None) -> list[str]:
        probed: list[str] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

        def probe(device: str) -> str | None:
            probed.append(device)
            return mps_problem

        monkeypatch.setattr(mega, "device_problem", probe)
        return probed

    return configure


def test_auto_prefers_cuda(machine) -> None:
    probed = machine(cuda=True, gpus=1, mps=True)
    assert resolve_device("auto") == "cuda"
    assert probed == []


def test_auto_takes_mps_when_it_runs_the_models(machine) -> None:
    probed = machine(mps=True)
    assert resolve_device("auto") == "mps"
    assert probed == ["mps"]


def test_auto_falls_back_to_the_cpu_when_mps_cannot_run_the_models(machine, caplog) -> None:
    machine(mps=True, mps_problem="The operator 'aten::topk' is not implemented for MPS")
    with caplog.at_level("WARNING", logger="mega_runtime.mega"):
        assert resolve_device("auto") == "cpu"
    assert "aten::topk" in caplog.text


def test_auto_takes_the_cpu_without_accelerators(machine) -> None:
    probed = machine()
    assert resolve_device() == "cpu"
    assert probed == []


def test_explicit_cuda_without_a_gpu_names_the_fix(machine) -> None:
    machine(mps=True)
    with pytest.raises(MegaError, match="no CUDA GPU") as info:
        resolve_device("cuda")
    assert "--device" in info.value.hint and "CUDA build" in info.value.hint


def test_explicit_cuda_index_must_exist(machine) -> None:
    machine(cuda=True, gpus=2)
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(MegaError, match="cuda:2"):
        resolve_device("cuda:2")


def test_explicit_mps_that_is_missing_or_broken_names_the_fix(machine) -> None:
    machine(mps=False)
    with pytest.raises(MegaError, match="not available") as info:
        resolve_device("mps")
    assert "macOS" in info.value.hint and "--device" in info.value.hint
    machine(mps=True, mps_problem="no kernel")
    with pytest.raises(MegaError, match="cannot run the models: no kernel") as info:
        resolve_device("mps")
    assert "update PyTorch" in info.value.hint
    machine(mps=True)
    assert resolve_device("mps") == "mps"


def test_unknown_and_unsupported_devices_are_refused(machine) -> None:
    machine()
    with pytest.raises(MegaError, match="unknown device"):
        resolve_device("gpu7")
    with pytest.raises(MegaError, match="not supported"):
        resolve_device("meta")
    assert resolve_device("cpu") == "cpu"


def test_the_op_probe_passes_on_the_cpu_and_reports_a_failing_device() -> None:
    assert device_problem("cpu") is None
    assert device_problem("meta") is not None  # meta tensors cannot be read back: reported, not raised
