"""Argument types and option groups shared by the commands that run the model (``infer``, ``batch``, ``generate``,
``complete``, ``serve``), and the check of an output folder made before any model loads (torch-free at import)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from mega_runtime import defaults
from mega_runtime.errors import MegaError


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low … high``; anything else is refused with the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use {low} … {high}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {low} … {high}")
        return value

    return parse


def bounded_float(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number ``>= low`` (``> low`` with ``above``) and ``<= high``; NaN and inf refused."""
    limits = f"{'more than' if above else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use a finite number {limits}") from None
        too_low = value <= low if above else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a finite number {limits}")
        return value

    return parse


def check_output_folder(folder: Path, option: str) -> None:
    """Refuse, before any model loads, an output folder that is a file or cannot be written (a probe file is
    created and removed, so read-only mounts are caught even for root)."""
    if folder.exists() and not folder.is_dir():
        raise MegaError(f"{option} {folder} is an existing file, not a folder", hint=f"give {option} a folder path")
    probe_in = folder
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise MegaError(f"{option} {folder} lies under the file {probe_in}", hint=f"give {option} a folder path")
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=probe_in):
            pass
    except OSError as exc:
        raise MegaError(
            f"{option} {folder} cannot be written ({exc.strerror or exc})",
            hint=f"choose a writable {option} folder",
        ) from exc


def sampling_options(p: argparse.ArgumentParser, steps: int, temperature: float, temperature_help: str) -> None:
    """``--steps`` and ``--temperature``, range-checked, with the command's own official defaults."""
    p.add_argument(
        "--steps",
        type=bounded_int(1, defaults.MAX_SAMPLING_STEPS),
        default=steps,
        help="sampling steps (official %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=bounded_float(0.0, defaults.MAX_SAMPLING_TEMPERATURE),
        default=temperature,
        help=f"{temperature_help} (official %(default)s)",
    )


def add_detection_options(p: argparse.ArgumentParser) -> None:
    """``--detector``, ``--detect-threshold``, ``--min-height`` and ``--max-people`` (infer and serve)."""
    p.add_argument(
        "--detector",
        default=defaults.DETECTOR,
        choices=defaults.DETECTOR_CHOICES,
        help="person detector (default %(default)s)",
    )
    p.add_argument(
        "--detect-threshold",
        type=bounded_float(0.0, 1.0),
        default=defaults.DETECTOR_CONF,
        metavar="SCORE",
        help="minimum detector score of a person, 0…1; lower finds more people and more false ones (%(default)s)",
    )
    p.add_argument(
        "--min-height",
        type=bounded_float(0.0, defaults.MAX_DETECTOR_MIN_HEIGHT_PX),
        default=defaults.DETECTOR_MIN_HEIGHT_PX,
        metavar="PX",
        help="ignore detected people whose box is less tall than this, pixels (%(default)s: any size)",
    )
    p.add_argument(
        "--max-people",
        type=bounded_int(1, defaults.MAX_DETECTOR_PEOPLE),
        default=defaults.DETECTOR_MAX_PEOPLE,
        metavar="N",
        help="keep at most N detected people per frame, best scores first (default: all)",
    )


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the result pairs")
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="folder laid out like the official checkpoints "
        "(an optional config.json there gives non-standard model sizes); default $MEGA_CHECKPOINTS_DIR "
        "or the download cache",
    )
    p.add_argument(
        "--assets-dir",
        type=Path,
        metavar="DIR",
        help="folder with template.ply and connection_matrices/ (default $MEGA_ASSETS_DIR or the download cache)",
    )
    p.add_argument(
        "--seed",
        type=bounded_int(0, defaults.MAX_SEED),
        default=defaults.SEED,
        help="seed of the sampler (default %(default)s)",
    )
    p.add_argument("--device", default=defaults.DEVICE, help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
