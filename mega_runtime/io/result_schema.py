"""The result format's schema: versions, the arrays a result holds (name → dtype, shape) and their checks.

numpy only. The format is documented in ``docs/result-format.md``; :mod:`mega_runtime.io.result` reads and writes
it (and re-exports :data:`SCHEMA`, :data:`VERSION` and the errors its readers catch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime.constants import NUM_BETAS, NUM_BODY_JOINTS, NUM_FACES, NUM_JOINTS, NUM_TOKENS, NUM_VERTICES
from mega_runtime.errors import MegaError
from mega_runtime.io import compact as compact_meshes

SCHEMA = "mega-result"
#: The version this runtime writes. 1.1 (additive): the optional ``path``/``smoothed_*`` and ``smpl_*`` arrays,
#: the ``temporal`` and ``smpl`` blocks and the ``arrays_file_size``/``arrays_file_sha256`` check. 1.2 (additive):
#: detection provenance, the ``box_source``/``box_score`` arrays and the ``detection`` block.
VERSION = "1.2"
#: Every version this runtime reads: any ``1.x`` (a newer minor only adds fields, which are kept as read).
READABLE_MAJOR = 1
#: The compact format (``write_result(..., compact=True)``, ``--compact``): ``vertices`` and ``smoothed_vertices``
#: replaced by a per-track basis and millimetre fixes (``mega_runtime/io/compact.py``); every ``2.x`` is read.
#: (Not in :data:`VERSION_HISTORY`, which lists the MINOR steps of the default format 1.)
COMPACT_VERSION = "2.0"
COMPACT_MAJOR = 2
#: Result format versions and what each added, newest last (``docs/result-format.md``).
VERSION_HISTORY: dict[str, str] = {
    "1.0": "the required arrays, rotation and cam_crop; model, source, camera, sampling, warnings, timings",
    "1.1": "optional path, smoothed_vertices, smoothed_cam_t and smpl_* arrays; temporal and smpl blocks; "
    "arrays_file_size and arrays_file_sha256",
    "1.2": "optional box_source and box_score arrays and the detection block (which detector and settings, or "
    "given boxes, produced each person box)",
}

#: name → (dtype, shape with symbols F frames, P people, H hypotheses, V vertices, T tokens). Required since 1.0.
ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "faces": ("int32", (NUM_FACES, 3)),
    "vertices": ("float32", ("F", "P", "H", NUM_VERTICES, 3)),
    "cam_t": ("float32", ("F", "P", "H", 3)),
    "tokens": ("int16", ("F", "P", "H", NUM_TOKENS)),
    "log_likelihood": ("float32", ("F", "P", "H")),
    "vertex_std": ("float32", ("F", "P", NUM_VERTICES)),
    "rotation": ("float32", ("F", "P", 3, 3)),
    "cam_crop": ("float32", ("F", "P", 3)),
    "boxes_xyxy": ("float32", ("F", "P", 4)),
    "track_ids": ("int32", ("P",)),
    "valid": ("bool", ("F", "P")),
    "frame_indices": ("int32", ("F",)),
}

#: Optional arrays an SMPL fit adds to a result (name → dtype, shape; symbols as in ``ARRAYS``).
SMPL_RESULT_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "smpl_betas": ("float32", ("P", NUM_BETAS)),
    "smpl_global_orient": ("float32", ("F", "P", 3)),
    "smpl_body_pose": ("float32", ("F", "P", NUM_BODY_JOINTS, 3)),
    "smpl_transl": ("float32", ("F", "P", 3)),
    "smpl_joints": ("float32", ("F", "P", NUM_JOINTS, 3)),
    "smpl_rest_joints": ("float32", ("P", NUM_JOINTS, 3)),
    "smpl_vertex_error": ("float32", ("F", "P")),
    "smpl_hypothesis": ("int16", ("F", "P")),
}

#: Optional arrays (checked when present), all since 1.1: added by mega_runtime.pipeline.temporal for videos, and
#: the ``smpl_*`` arrays of an SMPL fit (``mega-runtime fit-smpl``: :data:`SMPL_RESULT_ARRAYS` and the skinning).
OPTIONAL_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "path": ("int16", ("F", "P")),
    "smoothed_vertices": ("float32", ("F", "P", NUM_VERTICES, 3)),
    "smoothed_cam_t": ("float32", ("F", "P", 3)),
    **SMPL_RESULT_ARRAYS,
    "smpl_rest_vertices": ("float32", ("P", NUM_VERTICES, 3)),
    "smpl_weights": ("float32", (NUM_VERTICES, 24)),
}

#: Detection provenance (optional, since 1.2): per person box, its source (an index into the ``detection`` block's
#: ``box_sources``: 0 detected, 1 given; −1 where the person is not seen) and the detector's score (1.0 for given).
DETECTION_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "box_source": ("int8", ("F", "P")),
    "box_score": ("float32", ("F", "P")),
}
OPTIONAL_ARRAYS.update(DETECTION_ARRAYS)


class ResultFormatError(MegaError):
    """A result file is missing, malformed or of an unsupported version."""

    code = "result_invalid"


def _compact_required() -> dict[str, tuple[str, tuple[str | int, ...]]]:
    """The arrays a format-2 file must hold: those of format 1 without ``vertices``, plus the compact meshes."""
    replaced = ("vertices", "vertex_std")
    return {**{k: v for k, v in ARRAYS.items() if k not in replaced}, **compact_meshes.COMPACT_ARRAYS}


def check_arrays(arrays: dict[str, np.ndarray], source: str, compact: bool = False) -> None:
    """Refuse missing arrays and arrays of another dtype or shape (:data:`ARRAYS`, :data:`OPTIONAL_ARRAYS`; with
    ``compact`` the format-2 arrays) or whose F/P/H sizes disagree; ``source`` names the file in the message."""
    required = _compact_required() if compact else ARRAYS
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ResultFormatError(f"{source}: missing arrays {missing}")
    sizes: dict[str, int] = {}
    optional = {k: v for k, v in OPTIONAL_ARRAYS.items() if k in arrays}
    if compact:
        optional.update(
            {k: v for k, v in compact_meshes.COMPACT_SMOOTHED_ARRAYS.items() if "smoothed_coeffs" in arrays}
        )
    present = {**required, **optional}
    for name, (dtype, shape) in present.items():
        arr = arrays[name]
        if arr.dtype != np.dtype(dtype) or arr.ndim != len(shape):
            raise ResultFormatError(f"{source}: array {name} is {arr.dtype} {arr.shape}, expected {dtype} {shape}")
        for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
            if isinstance(want, int):
                if got != want:
                    raise ResultFormatError(f"{source}: array {name} axis {axis} is {got}, expected {want}")
            elif sizes.setdefault(want, got) != got:
                raise ResultFormatError(f"{source}: array {name} has {want}={got}, other arrays have {sizes[want]}")


def check_finite(arrays: dict[str, np.ndarray], source: str) -> None:
    """Refuse NaN and infinity in any floating-point array (a result never holds them)."""
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ResultFormatError(
                f"{source}: array {name} holds {bad} NaN or infinite value(s)",
                hint="results must hold finite numbers only: re-run the reconstruction",
            )


def check_version(version: Any, json_path: Path) -> None:
    """Refuse a result ``version`` of a MAJOR version this runtime does not read (1.x and 2.x are read)."""
    text = str(version) if isinstance(version, str | int) and not isinstance(version, bool) else ""
    major = text.split(".")[0]
    if not major.isdigit():
        raise ResultFormatError(
            f"{json_path} has no valid result format version ({version!r}); this runtime reads version {VERSION}",
            hint="re-export the result with mega-runtime",
        )
    if int(major) not in (READABLE_MAJOR, COMPACT_MAJOR):
        newer = int(major) > COMPACT_MAJOR
        raise ResultFormatError(
            f"{json_path} has result format version {text}; this runtime reads version {VERSION} (and every older "
            f"{READABLE_MAJOR}.x) and the compact version {COMPACT_VERSION} (and every {COMPACT_MAJOR}.x)",
            hint="update mega-runtime to a release that reads it"
            if newer
            else "re-export the result with this mega-runtime",
        )
