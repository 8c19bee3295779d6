"""Torch-free reader of the MEGA result file pair, format versions 1.x (``docs/result-format.md``).

A result is ``<name>.json`` (metadata) + ``<name>.npz`` (arrays). This module re-implements reading on its own —
the add-on shares only the documented format with ``mega_runtime``, never its code — and validates everything the
Blender side relies on, so scene building can trust shapes, dtypes and values:

* the files exist (the ``.json``, the ``.npz`` or their common stem may be given);
* ``schema`` is ``"mega-result"`` and the MAJOR version is 1 (every 1.x is read: 1.0, 1.1 and newer MINORs,
  which only add fields; another MAJOR is refused with a message naming both versions and what to update);
* the ``.npz`` is the one the ``.json`` was written with: since 1.1 the JSON records its size
  (``arrays_file_size``) and SHA-256 (``arrays_file_sha256``), and a pair whose files disagree is refused (the
  files of two results mixed up, or an ``.npz`` replaced or damaged after the fact);
* the camera (``focal_px``, ``principal_point_px``, OpenCV convention) and the image size are present;
* every required array is present with the documented dtype and rank, and the sizes F (frames), P (people),
  H (hypotheses), V = 6890 (vertices) and the 13776 × 3 faces agree across arrays; face indices are in range;
  vertices and per-vertex spreads are finite.

Arrays are loaded with ``allow_pickle=False``; the meshes of format 2.x are decoded on demand by
:mod:`mega_blender.compact_reader`. Imports: numpy, json, the standard library and the pure siblings
``compact_reader`` and ``runtime_defaults`` only (no bpy), so this module is unit-tested in plain CPython.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import compact_reader, runtime_defaults

log = logging.getLogger(__name__)

SCHEMA = "mega-result"
#: The newest format version this reader implements; every ``1.x`` is read (1.0 files have no size and hash of
#: their ``.npz``, and are read without that check).
SUPPORTED_VERSION = "1.2"
SUPPORTED_MAJOR = 1
#: The compact format: meshes as a per-track basis + millimetre fixes, decoded on demand
#: (:class:`~mega_blender.compact_reader.CompactMeshes`).
COMPACT_VERSION = "2.0"
COMPACT_MAJOR = 2
_HASH_CHUNK_BYTES = 1 << 20

NUM_VERTICES = compact_reader.NUM_VERTICES
NUM_FACES = 13776
NUM_TOKENS = 54

#: name → (dtype, shape); symbols: F frames, P people, H hypotheses. Required by the add-on.
REQUIRED_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "faces": ("int32", (NUM_FACES, 3)),
    "vertices": ("float32", ("F", "P", "H", NUM_VERTICES, 3)),
    "cam_t": ("float32", ("F", "P", "H", 3)),
    "tokens": ("int16", ("F", "P", "H", NUM_TOKENS)),
    "log_likelihood": ("float32", ("F", "P", "H")),
    "vertex_std": ("float32", ("F", "P", NUM_VERTICES)),
    "boxes_xyxy": ("float32", ("F", "P", 4)),
    "track_ids": ("int32", ("P",)),
    "valid": ("bool", ("F", "P")),
    "frame_indices": ("int32", ("F",)),
}

#: Arrays of format 1.0 the add-on does not use: checked when present, kept in ``MegaResult.extra_arrays``.
OPTIONAL_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "rotation": ("float32", ("F", "P", 3, 3)),
    "cam_crop": ("float32", ("F", "P", 3)),
}

#: Detection provenance (format 1.2, optional): per person box 0 detected, 1 given (``meta["detection"]
#: ["box_sources"]``), -1 not seen; and the detector's score. Checked when present, kept in ``extra_arrays``.
DETECTION_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "box_source": ("int8", ("F", "P")),
    "box_score": ("float32", ("F", "P")),
}


class ResultFormatError(Exception):
    """A result file pair is missing, malformed or of an unsupported version.

    ``problem`` says what is wrong, ``hint`` how to fix it; ``str(error)`` joins both on one line so an
    operator can report it as is.
    """

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(f"{problem}; {hint}")
        self.problem = problem
        self.hint = hint


@dataclass(frozen=True)
class MegaResult:
    """A validated reconstruction. F frames, P people (tracks), H hypotheses, V = 6890 vertices.

    Hypothesis 0 of every person is the deterministic decode (the basis); 1…H−1 are samples. Entries of frames
    where ``valid[f, p]`` is False are zeros.
    """

    path: Path
    """The ``.json`` file of the pair, absolute."""
    meta: dict[str, Any]
    """The JSON document as read."""
    faces: np.ndarray = field(repr=False)
    """(13776, 3) int32 vertex indices of the SMPL-topology triangles."""
    vertices: np.ndarray = field(repr=False)
    """(F, P, H, 6890, 3) float32 metres, OpenCV camera frame (x right, y down, z forward), translation included."""
    cam_t: np.ndarray = field(repr=False)
    """(F, P, H, 3) float32 metres, the translation included in ``vertices``."""
    tokens: np.ndarray = field(repr=False)
    """(F, P, H, 54) int16 Mesh-VQ-VAE codes."""
    log_likelihood: np.ndarray = field(repr=False)
    """(F, P, H) float32 natural-log likelihood of each hypothesis."""
    vertex_std: np.ndarray = field(repr=False)
    """(F, P, 6890) float32 metres, per-vertex spread of the hypotheses."""
    boxes_xyxy: np.ndarray = field(repr=False)
    """(F, P, 4) float32 pixels, person boxes (x1, y1, x2, y2)."""
    track_ids: np.ndarray = field(repr=False)
    """(P,) int32 stable person ids."""
    valid: np.ndarray = field(repr=False)
    """(F, P) bool, whether person p was seen in frame f."""
    frame_indices: np.ndarray = field(repr=False)
    """(F,) int32 source frame number of each result frame (photos: [0])."""
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Every other array of the file (e.g. ``rotation`` (F, P, 3, 3), ``cam_crop`` (F, P, 3)), unmodified."""

    @property
    def num_frames(self) -> int:
        """F, the number of result frames."""
        return int(self.vertices.shape[0])

    @property
    def num_people(self) -> int:
        """P, the number of people (tracks)."""
        return int(self.vertices.shape[1])

    @property
    def num_hypotheses(self) -> int:
        """H, hypotheses per person and frame (hypothesis 0 included)."""
        return int(self.vertices.shape[2])

    @property
    def image_size(self) -> tuple[int, int]:
        """(W, H) of the source image in pixels."""
        source = self.meta["source"]
        return int(source["width"]), int(source["height"])

    @property
    def focal_px(self) -> float:
        """Pinhole focal length in pixels (fx = fy)."""
        return float(self.meta["camera"]["focal_px"])

    @property
    def principal_point_px(self) -> tuple[float, float]:
        """(cx, cy) in pixels from the image's top-left corner."""
        cx, cy = self.meta["camera"]["principal_point_px"]
        return float(cx), float(cy)

    @property
    def source_path(self) -> Path | None:
        """The photo or video the result was made from, as the runtime saw it; None when it had none."""
        value = self.meta["source"].get("path")
        return Path(value) if isinstance(value, str) and value else None

    @property
    def source_name(self) -> str:
        """A readable name for the source: its file name, else the result's (``photo.mega.json`` → ``photo.mega``)."""
        source_path = self.source_path
        if source_path is not None and source_path.name:
            return source_path.name
        return self.path.name.removesuffix(".json")

    @property
    def fps(self) -> float | None:
        """Frames per second of a video source; None for photos and generated results."""
        value = self.meta["source"].get("fps")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
        return None


def result_paths(path: str | Path) -> tuple[Path, Path]:
    """(json, npz) paths of a result named by either file or by their common stem.

    ``out/photo.json``, ``out/photo.npz`` and ``out/photo`` all give (``out/photo.json``, ``out/photo.npz``).
    The npz path is the default; the JSON's ``arrays_file`` names the actual one.
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".json", ".npz") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def read_result(path: str | Path) -> MegaResult:
    """Read and validate a result pair given by its ``.json``, its ``.npz`` or their common stem.

    Raises :class:`ResultFormatError` naming the problem and the fix; never returns a partially valid result.
    """
    json_path, default_npz_path = result_paths(path)
    meta = _read_meta(json_path, default_npz_path)
    npz_path = _arrays_path(json_path, meta)
    _check_pair(json_path, npz_path, meta)
    _check_headers(npz_path, meta)
    arrays = _read_arrays(npz_path)
    if str(meta.get("version")).split(".")[0] == str(COMPACT_MAJOR):
        arrays = _compact_views(arrays, npz_path)
    sizes = _check_arrays(arrays, npz_path)
    _check_values(arrays, npz_path)
    log.debug("read %s: F=%d P=%d H=%d", json_path, sizes["F"], sizes["P"], sizes["H"])
    compact_names = {*compact_reader.COMPACT_ARRAYS, *compact_reader.COMPACT_SMOOTHED_ARRAYS}
    extra = {name: arr for name, arr in arrays.items() if name not in REQUIRED_ARRAYS and name not in compact_names}
    return MegaResult(
        path=json_path.absolute(),  # objects store it: it must not depend on the working folder
        meta=meta,
        **{name: arrays[name] for name in REQUIRED_ARRAYS},
        extra_arrays=extra,
    )


def hypothesis_order(log_likelihood_row: np.ndarray) -> list[int]:
    """Hypotheses 1…H−1 ordered by descending log-likelihood (ties keep index order; NaN last).

    ``log_likelihood_row``: (H,) log-likelihoods of one person in one frame. Hypothesis 0, the deterministic
    decode, is always the basis and is not part of the order. Returns a list of H−1 hypothesis indices.
    """
    row = np.asarray(log_likelihood_row, dtype=np.float64)
    if row.ndim != 1 or row.shape[0] < 1:
        raise ValueError(f"hypothesis_order expects a (H,) row with H >= 1, got shape {row.shape}")
    return sorted(range(1, row.shape[0]), key=lambda h: (bool(np.isnan(row[h])), -row[h], h))


def most_likely_hypothesis(log_likelihood_row: np.ndarray) -> int:
    """Index of the most likely hypothesis among 0…H−1 (ties and all-NaN rows give the lowest index).

    ``log_likelihood_row``: (H,) log-likelihoods of one person in one frame.
    """
    row = np.asarray(log_likelihood_row, dtype=np.float64)
    if row.ndim != 1 or row.shape[0] < 1:
        raise ValueError(f"most_likely_hypothesis expects a (H,) row with H >= 1, got shape {row.shape}")
    if np.isnan(row).all():
        return 0
    return int(np.nanargmax(row))


# --- reading -------------------------------------------------------------------------------------------------


def _read_meta(json_path: Path, npz_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        if npz_path.is_file():
            raise ResultFormatError(
                f"the metadata file {json_path} of the result {npz_path} is missing",
                "a result is a .json + .npz pair: keep both files side by side",
            )
        raise ResultFormatError(f"result file {json_path} does not exist", "choose the .json of a MEGA result pair")
    meta = _load_json(json_path)
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise ResultFormatError(
            f"{json_path} is not a MEGA result (schema {schema!r}, expected {SCHEMA!r})",
            "choose the .json written by mega-runtime next to its .npz",
        )
    _check_version(meta.get("version"), json_path)
    _check_camera(meta, json_path)
    return meta


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed: numbers must be finite")


def _json_depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _load_json(json_path: Path) -> Any:
    """The parsed ``.json`` within the size and depth limits of ``runtime_defaults``; NaN and Infinity refused."""
    fix = "re-export the result with mega-runtime"
    limit, depth = runtime_defaults.MAX_RESULT_JSON_BYTES, runtime_defaults.MAX_JSON_DEPTH
    try:
        size = json_path.stat().st_size
        if size > limit:
            raise ResultFormatError(f"{json_path} is {size:,} bytes, more than the limit of {limit:,}", fix)
        meta = json.loads(json_path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ResultFormatError(f"{json_path} nests deeper than the limit of {depth} levels", fix) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultFormatError(f"{json_path} is not a readable JSON file ({exc})", fix) from exc
    if _json_depth(meta) > depth:
        raise ResultFormatError(f"{json_path} nests deeper than the limit of {depth} levels", fix)
    return meta


def _check_headers(npz_path: Path, meta: dict[str, Any]) -> None:
    """Read every ``.npy`` header in the archive before loading: refuse pickles, shapes that differ from the
    ``.json``'s ``arrays`` block and totals above ``MAX_RESULT_ARRAY_BYTES`` (a zip bomb stays on disk)."""
    fix = "re-export the result with mega-runtime"
    found = meta.get("arrays")
    declared: dict[str, Any] = found if isinstance(found, dict) else {}
    limit, total = runtime_defaults.MAX_RESULT_ARRAY_BYTES, 0
    try:
        with zipfile.ZipFile(npz_path) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ResultFormatError(f"{npz_path}: array {name} has .npy version {version}", fix)
                if dtype.hasobject:
                    raise ResultFormatError(f"{npz_path}: array {name} holds Python objects (a pickle)", fix)
                want = declared.get(name)
                if isinstance(want, dict) and "shape" in want and list(shape) != want["shape"]:
                    raise ResultFormatError(
                        f"{npz_path}: array {name} has shape {tuple(shape)}, the .json declares {want['shape']}", fix
                    )
                total += int(np.prod(shape, dtype=object)) * dtype.itemsize
                if total > limit:
                    raise ResultFormatError(
                        f"{npz_path} would need more than {limit:,} bytes of memory once loaded "
                        f"(array {name} is {tuple(shape)} {dtype})",
                        "split the video into shorter results, or re-export the result with mega-runtime",
                    )
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise ResultFormatError(f"{npz_path} is not a readable .npz file ({exc})", fix) from exc


def _check_version(version: Any, json_path: Path) -> None:
    major_text = str(version).split(".")[0] if isinstance(version, str | int) else ""
    if not major_text.isdigit():
        raise ResultFormatError(
            f"{json_path} has no valid format version ({version!r}); this add-on reads version {SUPPORTED_VERSION}",
            "re-export the result with mega-runtime",
        )
    if int(major_text) not in (SUPPORTED_MAJOR, COMPACT_MAJOR):
        newer = int(major_text) > COMPACT_MAJOR
        raise ResultFormatError(
            f"{json_path} has result format version {version}; this add-on reads version {SUPPORTED_VERSION} (and "
            f"every older {SUPPORTED_MAJOR}.x) and the compact version {COMPACT_VERSION} (and every {COMPACT_MAJOR}.x)",
            "update the MEGA add-on to a release that reads it"
            if newer
            else "re-export the result with a current mega-runtime",
        )


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_camera(meta: dict[str, Any], json_path: Path) -> None:
    fix = "re-export the result with mega-runtime (it writes source.width/height and camera)"
    source, camera = meta.get("source"), meta.get("camera")
    if not isinstance(source, dict):
        raise ResultFormatError(f"{json_path} has no 'source' section", fix)
    for key in ("width", "height"):
        value = source.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ResultFormatError(f"{json_path}: source.{key} is {value!r}, expected a positive integer", fix)
    if not isinstance(camera, dict):
        raise ResultFormatError(f"{json_path} has no 'camera' section", fix)
    focal = camera.get("focal_px")
    if not _finite_number(focal) or float(focal) <= 0:  # type: ignore[arg-type]
        raise ResultFormatError(f"{json_path}: camera.focal_px is {focal!r}, expected a positive number", fix)
    principal = camera.get("principal_point_px")
    if not (isinstance(principal, list) and len(principal) == 2 and all(_finite_number(v) for v in principal)):
        raise ResultFormatError(f"{json_path}: camera.principal_point_px is {principal!r}, expected [cx, cy]", fix)
    convention = camera.get("convention", "opencv")
    if convention != "opencv":
        raise ResultFormatError(
            f"{json_path}: camera convention {convention!r} is not supported, expected 'opencv'",
            "re-export the result with mega-runtime",
        )


def _arrays_path(json_path: Path, meta: dict[str, Any]) -> Path:
    name = meta.get("arrays_file", json_path.name.removesuffix(".json") + ".npz")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ResultFormatError(
            f"{json_path}: arrays_file {name!r} is not a file name beside the .json",
            "re-export the result with mega-runtime",
        )
    npz_path = json_path.with_name(name)
    if not npz_path.is_file():
        raise ResultFormatError(
            f"the arrays file {npz_path} of the result {json_path} is missing",
            "a result is a .json + .npz pair: keep both files side by side",
        )
    return npz_path


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_pair(json_path: Path, npz_path: Path, meta: dict[str, Any]) -> None:
    """Refuse an ``.npz`` whose size or SHA-256 differ from those its ``.json`` records (format 1.1 and later;
    1.0 files record neither). Hashing reads the file once more (about 1.5 GB/s)."""
    size, sha256 = meta.get("arrays_file_size"), meta.get("arrays_file_sha256")
    if size is None and sha256 is None:
        return
    if (size is not None and not _count(size)) or (sha256 is not None and not isinstance(sha256, str)):
        raise ResultFormatError(
            f"{json_path}: arrays_file_size {size!r} or arrays_file_sha256 {sha256!r} is malformed",
            "re-export the result with mega-runtime",
        )
    fix = "keep the .json and .npz written together side by side, or re-export the result with mega-runtime"
    try:
        actual_size = npz_path.stat().st_size
        if size is not None and actual_size != size:
            raise ResultFormatError(
                f"{npz_path} is {actual_size} bytes, but {json_path} was written with an arrays file of {size} "
                "bytes: the two files are not one pair",
                fix,
            )
        if sha256 is not None and _sha256(npz_path) != sha256.lower():
            raise ResultFormatError(
                f"{npz_path} does not match the SHA-256 recorded in {json_path}: the two files are not one pair",
                fix,
            )
    except OSError as exc:
        raise ResultFormatError(f"cannot read {npz_path} ({exc})", fix) from exc


def _read_arrays(npz_path: Path) -> dict[str, np.ndarray]:
    fix = "the file is damaged or incomplete: re-export the result with mega-runtime"
    try:
        loaded = np.load(npz_path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ResultFormatError(f"{npz_path} holds a single array, not an .npz archive of arrays", fix)
        with loaded as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ResultFormatError(f"{npz_path} is not a readable .npz file ({exc})", fix) from exc


def _compact_views(arrays: dict[str, np.ndarray], npz_path: Path) -> dict[str, Any]:
    """Format 2: check the compact arrays and put :class:`~mega_blender.compact_reader.CompactMeshes` in place of
    ``vertices`` (and ``smoothed_vertices``); the other arrays are returned unchanged."""
    fix = "re-export the result with mega-runtime"
    coeffs = arrays.get("vertices_coeffs")
    if coeffs is None or coeffs.ndim != 4:
        raise ResultFormatError(f"{npz_path} lacks the (F, P, H, K) array vertices_coeffs of format 2", fix)
    sizes = dict(zip("FPHK", (int(n) for n in coeffs.shape), strict=True))
    specs = dict(compact_reader.COMPACT_ARRAYS)
    if "smoothed_coeffs" in arrays:
        specs.update(compact_reader.COMPACT_SMOOTHED_ARRAYS)
    for name in ("rotation", "cam_t", *specs):
        if name not in arrays:
            raise ResultFormatError(f"{npz_path} lacks the array {name} of format 2", fix)
    for name, (dtype, shape) in specs.items():
        arr = arrays[name]
        if arr.dtype != np.dtype(dtype) or arr.ndim != len(shape):
            raise ResultFormatError(
                f"{npz_path}: array {name} is {arr.dtype} {arr.shape}, expected {dtype} {shape}", fix
            )
        for want, got in zip(shape, arr.shape, strict=True):
            if (want if isinstance(want, int) else sizes.setdefault(want, got)) != got:
                raise ResultFormatError(f"{npz_path}: array {name} has shape {arr.shape}, expected {shape}", fix)
    rotation, cam_t = arrays["rotation"], arrays["cam_t"]
    if rotation.shape != (sizes["F"], sizes["P"], 3, 3) or cam_t.shape != (sizes["F"], sizes["P"], sizes["H"], 3):
        raise ResultFormatError(f"{npz_path}: rotation or cam_t disagree with vertices_coeffs {coeffs.shape}", fix)
    out: dict[str, Any] = {k: v for k, v in arrays.items()}
    out["vertex_std"] = (arrays["vertex_std_q"].astype(np.float64) * compact_reader.COMPACT_QUANTUM_M).astype(
        np.float32
    )
    sets = [("vertices", "vertices_", cam_t, False)]
    if "smoothed_coeffs" in arrays:
        smoothed_t = arrays.get("smoothed_cam_t")
        translation = smoothed_t if smoothed_t is not None and smoothed_t.shape == (*cam_t.shape[:2], 3) else None
        sets.append(("smoothed_vertices", "smoothed_", cam_t[:, :, 0] if translation is None else translation, True))
    for name, prefix, translation, single in sets:
        count, index = arrays[prefix + "fix_count"], arrays[prefix + "fix_index"]
        if (count < 0).any() or int(count.sum(dtype=np.int64)) != index.size:
            raise ResultFormatError(f"{npz_path}: {prefix}fix_count disagrees with {prefix}fix_index", fix)
        if index.size and int(index.max()) >= NUM_VERTICES * 3:
            raise ResultFormatError(f"{npz_path}: {prefix}fix_index points beyond the mesh", fix)
        out[name] = compact_reader.CompactMeshes(
            arrays["mesh_mean"], arrays["mesh_basis"], arrays[prefix + "coeffs"], count, index,
            arrays[prefix + "fix_value"], rotation, translation, single=single,
        )  # fmt: skip
    return out


def _check_arrays(arrays: dict[str, Any], npz_path: Path) -> dict[str, int]:
    fix = "re-export the result with mega-runtime"
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise ResultFormatError(f"{npz_path} lacks the array(s) {', '.join(missing)}", fix)
    vertices = arrays["vertices"]
    if vertices.ndim != 5:
        raise ResultFormatError(
            f"{npz_path}: array vertices has shape {vertices.shape}, expected (F, P, H, {NUM_VERTICES}, 3)", fix
        )
    sizes = dict(zip("FPH", (int(n) for n in vertices.shape[:3]), strict=True))
    optional = {**OPTIONAL_ARRAYS, **DETECTION_ARRAYS}
    specs = {**REQUIRED_ARRAYS, **{k: v for k, v in optional.items() if k in arrays}}
    for name, (dtype, shape) in specs.items():
        arr = arrays[name]
        expected = "(" + ", ".join(str(sizes.get(d, d) if isinstance(d, str) else d) for d in shape) + ")"
        if arr.dtype != np.dtype(dtype):
            raise ResultFormatError(f"{npz_path}: array {name} has dtype {arr.dtype}, expected {dtype}", fix)
        wanted = tuple(sizes[d] if isinstance(d, str) else d for d in shape)
        if arr.shape != wanted:
            raise ResultFormatError(
                f"{npz_path}: array {name} has shape {arr.shape}, expected {expected} "
                f"(F={sizes['F']} P={sizes['P']} H={sizes['H']} from vertices)",
                fix,
            )
    if sizes["P"] > 0 and sizes["H"] < 1:
        raise ResultFormatError(f"{npz_path} has people but no hypotheses (H=0)", fix)
    return sizes


def _check_values(arrays: dict[str, np.ndarray], npz_path: Path) -> None:
    fix = "re-export the result with mega-runtime"
    faces = arrays["faces"]
    if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= NUM_VERTICES):
        raise ResultFormatError(
            f"{npz_path}: faces index vertices {int(faces.min())}…{int(faces.max())}, expected 0…{NUM_VERTICES - 1}",
            fix,
        )
    for name in sorted(n for n, a in arrays.items() if a.dtype.kind == "f" and isinstance(a, np.ndarray)):
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ResultFormatError(
                f"{npz_path}: array {name} has {int(bad.sum())} non-finite value(s), first at index {first}", fix
            )
    if (arrays["vertex_std"] < 0).any():
        raise ResultFormatError(f"{npz_path}: array vertex_std has negative spreads", fix)
