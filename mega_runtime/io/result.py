"""The result file pair: ``<name>.json`` (metadata) + ``<name>.npz`` (arrays).

The format is documented in ``docs/result-format.md``; the Blender add-on reads it
with its own torch-free reader. numpy + json only. Both files are written
atomically (temporary file in the same folder, then rename), the arrays first, so
a reader never sees a half-written pair. Existing files are never overwritten
unless the caller says so.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime.constants import NUM_BETAS, NUM_BODY_JOINTS, NUM_FACES, NUM_JOINTS, NUM_TOKENS, NUM_VERTICES
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

SCHEMA = "mega-result"
VERSION = "1.0"

#: name → (dtype, shape with symbols F frames, P people, H hypotheses, V vertices, T tokens)
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

#: Optional arrays (checked when present): added by mega_runtime.pipeline.temporal for videos, and the ``smpl_*``
#: arrays of an SMPL fit (``mega-runtime fit-smpl``, mega_runtime.smpl.skeleton).
OPTIONAL_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "path": ("int16", ("F", "P")),
    "smoothed_vertices": ("float32", ("F", "P", NUM_VERTICES, 3)),
    "smoothed_cam_t": ("float32", ("F", "P", 3)),
    **SMPL_RESULT_ARRAYS,
    "smpl_rest_vertices": ("float32", ("P", NUM_VERTICES, 3)),
    "smpl_weights": ("float32", (NUM_VERTICES, 24)),
}


class ResultFormatError(MegaError):
    """A result file is missing, malformed or of an unsupported version."""

    code = "result_invalid"


class OutputExistsError(MegaError):
    """Writing would overwrite a file the user already has."""

    code = "output_exists"


@dataclass(frozen=True)
class Result:
    """A reconstruction: ``meta`` (the JSON document) and ``arrays`` (see :data:`ARRAYS`)."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.arrays["vertices"].shape[0])

    @property
    def num_people(self) -> int:
        return int(self.arrays["vertices"].shape[1])

    @property
    def num_hypotheses(self) -> int:
        return int(self.arrays["vertices"].shape[2])


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ResultFormatError(f"{source}: missing arrays {missing}")
    sizes: dict[str, int] = {}
    present = {**ARRAYS, **{k: v for k, v in OPTIONAL_ARRAYS.items() if k in arrays}}
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


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def result_paths(path: Path | str) -> tuple[Path, Path]:
    """(json, npz) paths of a result named by either file or by its stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def write_result(result: Result, path: Path | str, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``result`` as ``<path>.json`` + ``<path>.npz``; returns both paths.

    Raises :class:`OutputExistsError` if either exists and ``overwrite`` is False.
    """
    json_path, npz_path = result_paths(path)
    if not overwrite:
        existing = [str(p) for p in (json_path, npz_path) if p.exists()]
        if existing:
            raise OutputExistsError(
                f"not overwriting existing file(s): {', '.join(existing)}",
                hint="choose another output name, or pass --overwrite",
            )
    _check_arrays(result.arrays, str(npz_path))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"schema": SCHEMA, "version": VERSION, **result.meta, "arrays_file": npz_path.name}
    meta["arrays"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in result.arrays.items()}
    _atomic_write(npz_path, lambda f: np.savez(f, **result.arrays))
    _atomic_write(json_path, lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))
    log.info("wrote %s and %s", json_path, npz_path)
    return json_path, npz_path


def read_result(path: Path | str) -> Result:
    """Read and validate a result pair (either file's path, or the common stem)."""
    json_path, _ = result_paths(path)
    if not json_path.is_file():
        raise ResultFormatError(f"result file {json_path} does not exist", hint="pass the .json of a result pair")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultFormatError(f"{json_path} is not valid JSON: {exc}") from exc
    if meta.get("schema") != SCHEMA:
        raise ResultFormatError(f"{json_path} is not a MEGA result (schema {meta.get('schema')!r})")
    major = str(meta.get("version", "")).split(".")[0]
    if major != VERSION.split(".")[0]:
        raise ResultFormatError(
            f"{json_path} has result format version {meta.get('version')}, this runtime reads version {VERSION}",
            hint="update the runtime (or the add-on) to a version that reads it",
        )
    npz_path = json_path.with_name(str(meta.get("arrays_file", json_path.with_suffix(".npz").name)))
    if not npz_path.is_file():
        raise ResultFormatError(f"{json_path}: its arrays file {npz_path} is missing")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ResultFormatError(f"{npz_path} is not a readable .npz file: {exc}") from exc
    _check_arrays(arrays, str(npz_path))
    return Result(meta=meta, arrays=arrays)
