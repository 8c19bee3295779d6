"""The device-agnostic decoding path, checked on the CPU: no host synchronisation per step, same values."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from mega_runtime.decoding.samplers import row_seeds, sample_tokens, to_device
from mega_runtime.decoding.schedule import SamplingConfig
from tests.runtime.tiny_models import tiny_cvqmae

#: Tensor methods that wait for a GPU's queue when the tensor lives there.
HOST_SYNCS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
}


class CountHostSyncs(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_SYNCS:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_the_sampling_loop_makes_no_host_sync_per_step():
    model = tiny_cvqmae()
    counts = []
    with torch.no_grad():
        cond = model.condition(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))).repeat(4)
        for steps in (2, 5, 9):
            seeds = row_seeds(torch.Generator().manual_seed(0), 4)
            with CountHostSyncs() as counter:
                sample_tokens(model, cond, seeds, SamplingConfig(steps=steps))
            counts.append(len(counter.calls))
    assert counts[0] == counts[1] == counts[2], f"host syncs grow with the step count: {counts}"


def test_to_device_leaves_cpu_tensors_as_they_are():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    assert to_device(x, "cpu") is x
    assert to_device(x, torch.device("cpu")) is x
