"""Which PyTorch build the private environment gets, without Blender: the wheel index for a machine.

Pure (standard library only), unit-tested in plain CPython (``tests/addon_pure/test_installer.py``); used by
:mod:`mega_blender.installer` (the install steps) and :mod:`mega_blender.preferences` (the choice shown).

* :func:`choose_torch_build` — the PyTorch wheel index for a machine (CUDA tag from the NVIDIA driver version,
  the default PyPI build on macOS, the CPU index otherwise), overridable by the user.
* :func:`detect_nvidia_driver` — the driver version from ``nvidia-smi`` or ``/proc/driver/nvidia/version``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TORCH_INDEX_BASE = "https://download.pytorch.org/whl/"
#: CUDA wheel indexes assumed published for torch 2.13, newest first, with the lowest NVIDIA driver (Linux,
#: Windows) each needs. Source: NVIDIA's CUDA Toolkit release notes, table "CUDA Toolkit and Minimum Required
#: Driver Version for CUDA Minor Version Compatibility" / the toolkit driver table (CUDA 13.0 GA: ≥ 580.65.06 on
#: Linux; 12.8 GA: ≥ 570.26 / 570.65), and for cu126 CUDA 12's minor-version compatibility floor (≥ 525.60.13 /
#: 527.41: every CUDA 12.x runtime runs on an R525+ driver; PyTorch's wheels ship their own CUDA runtime).
CUDA_BUILDS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("cu130", (580, 65, 6), (580, 88)),
    ("cu128", (570, 26), (570, 65)),
    ("cu126", (525, 60, 13), (527, 41)),
)
CUDA_TAGS = tuple(tag for tag, _, _ in CUDA_BUILDS)
#: What the user may choose in the preferences (``AUTO`` picks with :func:`choose_torch_build`).
OVERRIDES = ("AUTO", "DEFAULT", "CPU", *CUDA_TAGS)


class InstallerError(RuntimeError):
    """An install that cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class TorchBuild:
    """A PyTorch build: its wheel index (None = PyPI's default build), a short label and why it was chosen."""

    index_url: str | None
    label: str
    reason: str
    kind: str  # "cpu", "cuda", "default"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text)
    if not parts:
        raise InstallerError(f"'{text}' is not a driver version: expected numbers such as 570.86.15")
    return tuple(int(p) for p in parts)


def cuda_tag_for_driver(driver_version: str, platform: str) -> str | None:
    """The newest CUDA wheel tag in :data:`CUDA_BUILDS` the driver runs, or None when it is too old for all."""
    version = _version_tuple(driver_version)
    for tag, linux_min, windows_min in CUDA_BUILDS:
        if version >= (windows_min if platform == "win32" else linux_min):
            return tag
    return None


def choose_torch_build(
    platform: str, machine: str, nvidia_driver_version: str | None, override: str = "AUTO"
) -> TorchBuild:
    """The PyTorch build for ``platform`` (``sys.platform``: linux, win32, darwin) and ``machine``
    (``platform.machine()``), given the NVIDIA driver version (None without one) and the user's choice.

    Raises :class:`InstallerError` for a choice the platform has no wheels for.
    """
    override = override.lower() if override.upper() in ("AUTO", "DEFAULT", "CPU") else override
    machine = machine.lower()
    if override not in ("auto", "default", "cpu", *CUDA_TAGS):
        raise InstallerError(f"unknown PyTorch build '{override}': choose one of {', '.join(OVERRIDES)}")
    if platform == "darwin":
        if machine not in ("arm64", "aarch64"):
            raise InstallerError(
                "PyTorch publishes no wheels for Intel Macs: use a Mac with Apple silicon, or run the runtime "
                "elsewhere with the 'Custom command' mode"
            )
        if override in CUDA_TAGS:
            raise InstallerError(f"there is no CUDA PyTorch for macOS: choose Automatic instead of {override}")
        if override == "cpu":
            return TorchBuild(None, "default (CPU use)", "chosen in the preferences; macOS has one build", "default")
        return TorchBuild(None, "default (Apple GPU)", "macOS: PyPI's build runs on the Apple GPU (MPS)", "default")
    if override == "default":
        return TorchBuild(None, "default (PyPI)", "chosen in the preferences", "default")
    if override == "cpu":
        return TorchBuild(TORCH_INDEX_BASE + "cpu", "CPU", "chosen in the preferences", "cpu")
    if override in CUDA_TAGS:
        return TorchBuild(TORCH_INDEX_BASE + override, f"CUDA {override}", "chosen in the preferences", "cuda")
    if nvidia_driver_version is None:
        return TorchBuild(TORCH_INDEX_BASE + "cpu", "CPU", "no NVIDIA driver found (nvidia-smi)", "cpu")
    tag = cuda_tag_for_driver(nvidia_driver_version, platform)
    if tag is None:
        return TorchBuild(
            TORCH_INDEX_BASE + "cpu",
            "CPU",
            f"NVIDIA driver {nvidia_driver_version} is older than any CUDA build of this PyTorch needs "
            "(update the driver to 525.60 or newer and install again)",
            "cpu",
        )
    return TorchBuild(TORCH_INDEX_BASE + tag, f"CUDA {tag}", f"NVIDIA driver {nvidia_driver_version}", "cuda")


def detect_nvidia_driver(
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    proc_version: Path = Path("/proc/driver/nvidia/version"),
) -> str | None:
    """The NVIDIA driver version (``570.86.15``), from ``nvidia-smi`` on PATH or Linux's
    ``/proc/driver/nvidia/version``; None when neither answers."""
    smi = which("nvidia-smi")
    if smi:
        try:
            done = run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.info("nvidia-smi did not answer: %s", exc)
        else:
            found = re.search(r"\d+\.\d+(?:\.\d+)?", done.stdout or "") if done.returncode == 0 else None
            if found:
                return found.group(0)
    try:
        text = proc_version.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None
