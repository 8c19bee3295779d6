"""oneDNN's fp32 matrix products for the token transformers' inference on x86-64 CPUs.

PyTorch's ``F.linear`` on the CPU calls MKL's sgemm. On the AMD EPYC (Zen 4) this project is measured on,
oneDNN's kernel (``torch.ops.mkldnn._linear_pointwise``, the op inductor itself emits) runs the
transformer's products 13–35 % faster at 2 threads and 10–30 % at 1 thread (docs/runtime-core.md), and it
fuses ``fc1``'s exact GELU into the product. The results are the same products in another summation order:
within ~1e-5 of MKL's, not its bits, so the kernel is part of the opt-in ``--compile`` mode
(:meth:`mega_runtime.mega.Mega.compile_models`), never of the exact default.

Modules that can use it carry a ``onednn`` flag (:class:`OneDNNLinears`), switched by :func:`use_onednn`;
wherever the kernel does not apply (a GPU, bf16 autocast, autograd) :func:`run_linear` calls the module itself
and :func:`dense` calls ``F.linear``.
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import nn

#: Machine names (``platform.machine()``, lower case) of the x86-64 CPUs the kernel is used on. On arm64
#: (Apple silicon, Linux on ARM) PyTorch's oneDNN build and its speed against Accelerate/OpenBLAS are not
#: measured here, so those keep ``F.linear``.
X86_64 = frozenset({"x86_64", "amd64"})


def onednn_supported() -> bool:
    """Whether this machine and PyTorch build have the kernel: an x86-64 CPU, oneDNN built in, the op present."""
    return (
        platform.machine().lower() in X86_64
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a product of ``x`` with ``weight`` may take the kernel: both float32 on the CPU, no CPU autocast
    (bf16 mode keeps autocast's own products), and no gradient to track (the op has no backward)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def dense(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool, gelu: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then exact (erf) GELU if ``gelu``: x (..., in) → (..., out).

    onednn: take oneDNN's kernel (GELU fused) where :func:`onednn_applies`; otherwise, or when False,
    ``F.linear`` and ``F.gelu`` as the plain modules compute them.
    """
    if onednn and onednn_applies(x, weight):
        return _onednn_linear(x, weight, bias, gelu)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    activation, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, activation, [], algorithm)


def run_linear(layer: nn.Module, x: torch.Tensor, onednn: bool, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, then GELU if ``gelu``; a plain ``nn.Linear`` takes oneDNN's kernel when ``onednn`` and
    :func:`onednn_applies`. Otherwise the module itself is called (its hooks run; an int8 dynamically quantised
    Linear keeps its own kernel)."""
    if onednn and type(layer) is nn.Linear and onednn_applies(x, layer.weight):
        return _onednn_linear(x, layer.weight, layer.bias, gelu)
    out = layer(x)
    return F.gelu(out) if gelu else out


class OneDNNLinears:
    """Mixin for modules whose Linear layers may run oneDNN's kernel; off unless :func:`use_onednn` says so."""

    onednn: bool = False


def use_onednn(model: nn.Module, on: bool = True) -> int:
    """Switch every :class:`OneDNNLinears` module inside ``model`` on (where :func:`onednn_supported`) or off.

    Returns how many modules are now on: 0 when switched off or where the kernel is not supported.
    """
    on = on and onednn_supported()
    modules = [m for m in model.modules() if isinstance(m, OneDNNLinears)]
    for module in modules:
        module.onednn = on
    return len(modules) if on else 0
