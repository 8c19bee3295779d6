"""The image backbone compiled ahead of time and kept on disk, so that ``--compile`` costs once per machine.

``torch.compile`` with inductor *freezing* (BatchNorm folded into the convolutions, weights pre-packed for oneDNN)
cannot use inductor's caches: a frozen graph bypasses the FX graph cache and AOTAutograd's cache, so every process
traced and lowered HRNet-W48 again (~45 s on a 2-core CPU for ~0.1 s saved per crop). Here the backbone is instead
exported (``torch.export``) and compiled by **AOTInductor** with the same freezing passes into a package file
(``.pt2``: the kernels as a shared library plus the folded, pre-packed weights), at most two per backbone: one for
a batch of one image (a photo with one person: as fast as ``torch.compile``) and one with a dynamic batch dimension
(every other batch; ~15 % of freezing's gain is lost to the generic shapes). Each is built at its first use on a
machine; later processes load it in a second or two.

A package is valid for exactly one backbone on one kind of machine, so its name carries a key hashed from: this
format's version, the torch and Python versions, the CPU's vector capability, the device type, the module's class
and layout (``repr``), the input's channels/height/width and dtype, the batch (1 or dynamic), and every parameter
and buffer byte. Different weights, a torch upgrade or a copied cache on another CPU therefore build a new package;
nothing stale is ever loaded. Packages are written to a temporary name and renamed into place (two processes
building the same one at once both finish; one file remains).

Only fp32 on the CPU (autocast is not part of an exported graph; CUDA keeps ``torch.compile``). Anything that
fails — export, the C++ build, loading — is logged once and the backbone runs eagerly for that input shape.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Bump when the way packages are built changes, so that older files are not loaded.
PACKAGE_FORMAT = 1
#: Largest batch the dynamic batch dimension is compiled for; a larger batch runs eagerly.
MAX_PACKAGED_BATCH = 1024


def package_key(module: nn.Module, sample: torch.Tensor) -> str:
    """32 hex digits identifying ``module`` (layout and every weight) on this machine for inputs like ``sample``.

    sample: (B, C, H, W) input; of B only whether it is 1 counts (:func:`batch_kind`).
    """
    digest = hashlib.blake2b(digest_size=16)
    header = [
        f"format {PACKAGE_FORMAT}",
        f"torch {torch.__version__}",
        f"python {sys.version_info.major}.{sys.version_info.minor}",
        f"cpu {torch.backends.cpu.get_cpu_capability()}",
        f"device {sample.device.type}",
        f"input {tuple(sample.shape[1:])} {sample.dtype}",
        f"batch {batch_kind(sample)}",
        f"class {type(module).__module__}.{type(module).__qualname__}",
        repr(module),
    ]
    digest.update("\n".join(header).encode())
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"\n{name} {value.dtype} {tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def batch_kind(sample: torch.Tensor) -> str:
    """Which package serves a (B, C, H, W) batch: ``"1"`` (compiled for one image) or ``"dynamic"``."""
    return "1" if sample.shape[0] == 1 else "dynamic"


def build_package(module: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """Export ``module`` for batches like ``sample`` and compile it into the package file ``path``.

    sample: (B, C, H, W) float32 input; B = 1 compiles for exactly one image, any other B for a dynamic batch
    dimension (1 … :data:`MAX_PACKAGED_BATCH`). Written under a temporary name in ``path``'s folder and renamed
    into place.
    """
    import torch._inductor
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    path.parent.mkdir(parents=True, exist_ok=True)
    if batch_kind(sample) == "1":
        example, dynamic_shapes = sample[:1].contiguous(), None
    else:
        # a batch of 2: an example of size 1 would let export specialise the batch dimension to 1
        example = sample[:1].expand(2, *sample.shape[1:]).contiguous()
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_PACKAGED_BATCH)},)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".partial.pt2")
    os.close(handle)
    # export traces the class's forward, not a packaged one installed on the instance (use_packaged_forward)
    installed = module.__dict__.pop("forward", None)
    try:
        # inductor's own build files (a second copy of the library and weights, ~270 MB for HRNet-W48) go to a
        # scratch folder beside the package that is removed afterwards, not to its cache in the system's temp folder
        with (
            tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as scratch,
            temporary_cache_dir(scratch),
            torch.no_grad(),
            inductor_config.patch(freezing=True),
        ):
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
            torch._inductor.aoti_compile_and_package(program, package_path=partial)
        os.replace(partial, path)
    finally:
        if installed is not None:
            module.forward = installed
        if os.path.exists(partial):
            os.unlink(partial)


class PackagedForward:
    """A backbone's ``forward`` served by AOTInductor packages from ``folder``, built on first use per input size
    and batch kind (:func:`batch_kind`).

    Call with (B, C, H, W) float32 CPU images; returns what the module's own forward returns. Thread-safe.
    """

    def __init__(self, module: nn.Module, folder: Path) -> None:
        self.module = module
        self.folder = Path(folder)
        self.eager = module.forward
        self._loaded: dict[tuple, Callable | None] = {}
        self._lock = threading.Lock()

    def path_for(self, sample: torch.Tensor) -> Path:
        """Where the package for inputs like ``sample`` is kept."""
        return self.folder / f"{type(self.module).__name__.lower()}-{package_key(self.module, sample)}.pt2"

    def __call__(self, images: torch.Tensor):
        if (
            images.device.type != "cpu"
            or images.dtype != torch.float32
            or images.dim() != 4
            or not 1 <= images.shape[0] <= MAX_PACKAGED_BATCH
            or torch.is_autocast_enabled("cpu")
            or torch.is_grad_enabled()
        ):
            return self.eager(images)
        shape = (*images.shape[1:], batch_kind(images))
        with self._lock:
            if shape not in self._loaded:
                self._loaded[shape] = self._load_or_build(images)
            compiled = self._loaded[shape]
        # the package reads its input as laid out at export (contiguous): other strides would be read wrongly
        return self.eager(images) if compiled is None else compiled(images.contiguous())

    def _load_or_build(self, sample: torch.Tensor) -> Callable | None:
        import torch._inductor

        path = self.path_for(sample)
        if path.is_file():
            try:
                compiled = torch._inductor.aoti_load_package(str(path))
                log.info("compiled backbone loaded from %s", path)
                return compiled
            except Exception as err:  # a truncated or foreign file: build it again below
                log.warning("compiled backbone %s could not be loaded (%s); building it again", path, err)
        size = "×".join(str(n) for n in sample.shape[1:])
        batches = "one image" if batch_kind(sample) == "1" else "batches of images"
        log.info("compiling the backbone for %s of %s into %s (once per machine and weights)", batches, size, path)
        try:
            build_package(self.module, sample, path)
            return torch._inductor.aoti_load_package(str(path))
        except Exception as err:
            log.warning(
                "--compile: the backbone could not be compiled ahead of time (%s: %s); it runs uncompiled",
                type(err).__name__,
                err,
            )
            return None


def use_packaged_forward(module: nn.Module, folder: Path) -> PackagedForward:
    """Route ``module``'s calls through :class:`PackagedForward` (the module keeps its parameters and state).

    Idempotent: a module already routed keeps its :class:`PackagedForward`.
    """
    installed = module.__dict__.get("forward")
    if isinstance(installed, PackagedForward):
        return installed
    packaged = PackagedForward(module, folder)
    module.forward = packaged
    return packaged
