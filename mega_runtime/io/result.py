"""The result file pair: ``<name>.json`` (metadata) + ``<name>.npz`` (arrays).

The format is documented in ``docs/result-format.md``; the Blender add-on reads it with its own torch-free reader.
numpy + json only.

How a pair is written (:func:`write_result`), so that a reader — or a user after a crash or a power cut — never
finds a ``.json`` without its complete, matching ``.npz``:

1. both files are written to temporary files in the destination folder (``.<name>.json.<random>.tmp``), created
   with mode ``0o666`` so the operating system applies the user's umask (and default ACLs) exactly as for any
   other file the user creates; each is flushed and ``os.fsync``-ed;
2. the ``.npz`` is put in place first, then the directory is synced; the ``.json`` — which records the size and
   SHA-256 of its ``.npz`` — is put in place last, and the directory is synced again (directories are not synced
   on Windows, where they cannot be opened);
3. without ``overwrite``, a file is put in place with a hard link, which fails rather than replace a file that
   appeared meanwhile (a plain existence check then rename where the file system has no hard links); with
   ``overwrite``, the old ``.json`` is removed before the new ``.npz`` replaces the old one, so a crash between
   the two steps leaves an ``.npz`` without a ``.json``, never a ``.json`` beside the wrong ``.npz``.

:func:`read_result` reads every 1.x version (1.0 files lack the size and hash and are read without the check) and
refuses another MAJOR version with an error naming both versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mega_runtime.constants import NUM_BETAS, NUM_BODY_JOINTS, NUM_FACES, NUM_JOINTS, NUM_TOKENS, NUM_VERTICES
from mega_runtime.defaults import MAX_JSON_DEPTH, MAX_RESULT_ARRAY_BYTES, MAX_RESULT_JSON_BYTES
from mega_runtime.errors import MegaError
from mega_runtime.io import compact as compact_meshes

log = logging.getLogger(__name__)

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

_HASH_CHUNK_BYTES = 1 << 20


class ResultFormatError(MegaError):
    """A result file is missing, malformed or of an unsupported version."""

    code = "result_invalid"


class ResultWriteError(MegaError):
    """A result could not be written (disk full, folder read-only); nothing partial is left."""

    code = "write_failed"


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


def _compact_required() -> dict[str, tuple[str, tuple[str | int, ...]]]:
    """The arrays a format-2 file must hold: those of format 1 without ``vertices``, plus the compact meshes."""
    replaced = ("vertices", "vertex_std")
    return {**{k: v for k, v in ARRAYS.items() if k not in replaced}, **compact_meshes.COMPACT_ARRAYS}


def _check_arrays(arrays: dict[str, np.ndarray], source: str, compact: bool = False) -> None:
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


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed: numbers must be finite")


def json_depth(value: Any) -> int:
    """Deepest nesting of objects and lists in a parsed JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_json_limited(path: Path, max_bytes: int, what: str, error: type[MegaError]) -> Any:
    """Parse the JSON file ``path`` within ``max_bytes`` and ``MAX_JSON_DEPTH`` levels; NaN/Infinity refused."""
    hint = "pass the file written by mega-runtime"
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size:,} bytes, more than the {what} limit of {max_bytes:,}", hint=hint)
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_json_constant)
    except RecursionError:
        raise error(f"{path} nests deeper than the {what} limit of {MAX_JSON_DEPTH} levels", hint=hint) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}", hint=hint) from exc
    except OSError as exc:
        raise error(
            f"{path} cannot be read ({exc.strerror or exc})", hint="check the path and its permissions"
        ) from exc
    if json_depth(data) > MAX_JSON_DEPTH:
        raise error(f"{path} nests deeper than the {what} limit of {MAX_JSON_DEPTH} levels", hint=hint)
    return data


def npz_array_headers(npz_path: Path, declared: dict[str, Any] | None = None) -> dict[str, tuple[np.dtype, tuple]]:
    """Each array's (dtype, shape) read from the ``.npy`` headers inside ``npz_path``, without loading any data.

    Refuses object arrays (pickles), shapes that differ from the ones the ``.json`` declares (``declared``: its
    ``arrays`` block) and a total above :data:`MAX_RESULT_ARRAY_BYTES` — so a small, highly compressed file
    cannot make a reader allocate gigabytes.
    """
    fix = "re-export the result with mega-runtime"
    headers: dict[str, tuple[np.dtype, tuple]] = {}
    total = 0
    try:
        with zipfile.ZipFile(npz_path) as archive:
            for info in archive.infolist():
                name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ResultFormatError(f"{npz_path}: array {name} has .npy version {version}", hint=fix)
                if dtype.hasobject:
                    raise ResultFormatError(
                        f"{npz_path}: array {name} holds Python objects (a pickle), which are never loaded", hint=fix
                    )
                want = (declared or {}).get(name)
                if isinstance(want, dict) and list(shape) != want.get("shape", list(shape)):
                    raise ResultFormatError(
                        f"{npz_path}: array {name} has shape {tuple(shape)}, the .json declares {want.get('shape')}",
                        hint=fix,
                    )
                total += int(np.prod(shape, dtype=object)) * dtype.itemsize
                if total > MAX_RESULT_ARRAY_BYTES:
                    raise ResultFormatError(
                        f"{npz_path} would need more than {MAX_RESULT_ARRAY_BYTES:,} bytes of memory once loaded "
                        f"(array {name} is {tuple(shape)} {dtype})",
                        hint="split the video into shorter results, or re-export the result with mega-runtime",
                    )
                headers[name] = (dtype, tuple(shape))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ResultFormatError(f"{npz_path} is not a readable .npz file: {exc}", hint=fix) from exc
    return headers


def result_paths(path: Path | str) -> tuple[Path, Path]:
    """(json, npz) paths of a result named by either file or by its stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


# --- writing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Written:
    """A complete, synced temporary file: its ``path``, ``size`` in bytes and ``sha256`` (hex; "" when not asked)."""

    path: Path
    size: int
    sha256: str


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` (open file descriptor, its path), created exclusively with mode 0o666.

    The kernel applies the process's umask (or the folder's default ACL) to that mode, as for any file the user
    creates — unlike ``tempfile.mkstemp``'s 0o600 — without reading or changing the process-wide umask, which
    would race with other threads creating files.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _write_temporary(path: Path, write: Callable[[IO[bytes]], object], digest: bool) -> _Written:
    """Write a temporary file beside ``path`` with ``write``, flush and fsync it; removed again on any failure."""
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "w+b") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size = os.fstat(handle.fileno()).st_size
            sha256 = ""
            if digest:
                handle.seek(0)
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        return _Written(tmp, size, sha256)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(cause, OSError):  # zipfile hides ENOSPC behind "seek of closed file" when it closes
            raise ResultWriteError(
                f"cannot write {path}: {cause.strerror or cause}",
                hint="free some disk space or choose another output folder",
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _savez(handle: IO[bytes], arrays: dict[str, np.ndarray], deflate: bool = False) -> None:
    """What ``np.savez`` writes (uncompressed ``<name>.npy`` members), with the archive closed inside this call
    even when a write fails — ``np.savez`` leaves it to the garbage collector, whose late close of an already
    closed file then prints a traceback ("seek of closed file") and hides the real error (e.g. a full disk)."""
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(handle, "w", compression=compression, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _sync_directory(folder: Path) -> None:
    """fsync ``folder`` so that the renames in it survive a power cut; skipped where directories cannot be synced
    (Windows, some network and FUSE file systems)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        log.debug("cannot open %s to sync it: %s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("cannot sync the folder %s: %s", folder, exc)
    finally:
        os.close(fd)


def _exists_error(paths: list[Path]) -> OutputExistsError:
    return OutputExistsError(
        f"not overwriting existing file(s): {', '.join(str(p) for p in paths)}",
        hint="choose another output name, or pass --overwrite",
    )


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give the complete temporary file ``tmp`` its final name ``path``.

    With ``overwrite`` an existing ``path`` is replaced (``os.replace``, atomic). Without it, a hard link puts the
    file in place only if ``path`` does not exist (atomic on POSIX and NTFS), so a file created by someone else in
    the meantime is never replaced; file systems without hard links fall back to a check, then a rename.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error([path]) from None
    except OSError as exc:
        log.debug("no hard link in %s (%s): checking, then renaming", path.parent, exc)
        if path.exists():
            raise _exists_error([path]) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


#: Files a result name stands for: the pair and a video's partial pair.
RESERVED_ENDINGS = (".json", ".npz", ".partial.json", ".partial.npz")


class Reservation:
    """A result name held by this process (a locked lock file, see :func:`lock_path`) until :meth:`release`.

    Writers that share a folder each reserve a name before they write, so two of them never pick the same free
    name. The lock file is removed on release; one left by a killed process holds no lock and is taken over.
    """

    def __init__(self, folder: Path, stem: str, lock: Path, fd: int) -> None:
        self.folder, self.stem, self.lock, self._fd = folder, stem, lock, fd

    def release(self) -> None:
        """Give the name up (idempotent)."""
        if self._fd < 0:
            return
        self.lock.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def lock_path(folder: Path, stem: str) -> Path:
    """The lock file of the result name ``stem`` in ``folder``.

    It lives in a private folder of this user in the system's temporary folder, keyed by the output folder's
    resolved path — never in the user's folder, so a writer killed with SIGKILL (no clean-up runs) leaves nothing
    beside the results. Writers on one machine share it; that is what name reservation needs.
    """
    key = hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()[:24]
    owner = str(os.getuid()) if hasattr(os, "getuid") else "user"
    locks = Path(tempfile.gettempdir()) / f"mega-runtime-locks-{owner}" / key
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    return locks / f"{stem}.lock"


def _taken(folder: Path, stem: str) -> bool:
    return any((folder / f"{stem}{end}").exists() for end in RESERVED_ENDINGS)


def _lock_exclusively(lock: Path) -> int | None:
    """An open, exclusively held descriptor of ``lock``, or None when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: the lock file's existence is the lock
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return None
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(lock).st_ino:  # its holder removed it between our open and our lock
            raise BlockingIOError
    except OSError:
        os.close(fd)
        return None
    return fd


def reserve_stem(folder: Path, name: str, skip: int = 0) -> Reservation:
    """Reserve ``name``, ``name-2``, … in ``folder``: the first with no result files (:data:`RESERVED_ENDINGS`)
    that no other writer holds; ``skip`` names are passed over first. Choosing and holding are one step."""
    for n in range(1 + skip, 100_000):
        stem = name if n == 1 else f"{name}-{n}"
        if _taken(folder, stem):
            continue
        lock = lock_path(folder, stem)
        fd = _lock_exclusively(lock)
        if fd is None:
            continue
        reservation = Reservation(folder, stem, lock, fd)
        if _taken(folder, stem):  # published by a writer that finished just before we locked
            reservation.release()
            continue
        return reservation
    raise ResultWriteError(f"no free result name {name}-N in {folder}", hint="choose another output folder")


def write_result(result: Result, path: Path | str, overwrite: bool = False, compact: bool = False) -> tuple[Path, Path]:
    """Write ``result`` as ``<path>.json`` + ``<path>.npz``; returns both paths (json, npz).

    ``compact``: write format 2 (:data:`COMPACT_VERSION`): the meshes as a per-track basis plus millimetre fixes
    (every coordinate within 0.5 mm of ``result``'s float32 vertices), the arrays deflated.

    The ``.npz`` is written and synced before the ``.json``, which records the ``.npz``'s size and SHA-256; see
    the module docstring for the exact order. Raises :class:`OutputExistsError` if either file exists and
    ``overwrite`` is False (nothing is written then), :class:`ResultFormatError` if the arrays disagree with
    :data:`ARRAYS`.
    """
    json_path, npz_path = result_paths(path)
    if not overwrite:
        existing = [p for p in (json_path, npz_path) if p.exists()]
        if existing:
            raise _exists_error(existing)
    _check_arrays(result.arrays, str(npz_path))
    check_finite(result.arrays, str(npz_path))
    arrays, version, extra_meta = result.arrays, VERSION, {}
    if compact:
        try:
            arrays, block = compact_meshes.compact_arrays(result.arrays)
        except ValueError as exc:  # meshes metres away from their person's basis: not bodies
            raise ResultFormatError(
                f"{npz_path} cannot be written compactly: {exc}", hint="write it without --compact"
            ) from exc
        version, extra_meta = COMPACT_VERSION, {"compact": block}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    folder = json_path.parent
    temporaries: list[Path] = []
    published: list[Path] = []
    try:
        npz = _write_temporary(npz_path, lambda f: _savez(f, arrays, compact), digest=True)
        temporaries.append(npz.path)
        meta = {
            "schema": SCHEMA,
            "version": version,
            **{k: v for k, v in result.meta.items() if k not in ("schema", "version", "compact")},
            **extra_meta,
            "arrays_file": npz_path.name,
            "arrays_file_size": npz.size,
            "arrays_file_sha256": npz.sha256,
        }
        meta["arrays"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()}
        try:
            text = (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode("utf-8")
        except ValueError as exc:
            raise ResultFormatError(
                f"{json_path}: the metadata holds a NaN or infinite number", hint="re-run with finite settings"
            ) from exc
        meta_file = _write_temporary(json_path, lambda f: f.write(text), digest=False)
        temporaries.append(meta_file.path)
        if overwrite and json_path.exists():
            json_path.unlink()  # no moment where the old .json stands beside the new .npz
            _sync_directory(folder)
        _publish(npz.path, npz_path, overwrite)
        published.append(npz_path)
        _sync_directory(folder)  # the .npz's name is on disk before the .json's
        _publish(meta_file.path, json_path, overwrite)
        published.append(json_path)
        _sync_directory(folder)
    except BaseException:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        if not overwrite and published == [npz_path]:
            npz_path.unlink(missing_ok=True)  # ours: it did not exist before this call
        raise
    log.info("wrote %s and %s", json_path, npz_path)
    return json_path, npz_path


# --- reading ---------------------------------------------------------------------------------------------------


def _check_version(version: Any, json_path: Path) -> None:
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


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_pair(json_path: Path, npz_path: Path, meta: dict[str, Any]) -> None:
    """Refuse an ``.npz`` that is not the one its ``.json`` was written with (size and SHA-256 since 1.1)."""
    size, sha256 = meta.get("arrays_file_size"), meta.get("arrays_file_sha256")
    hint = "keep the .json and .npz written together side by side, or re-export the result with mega-runtime"
    if size is None and sha256 is None:
        return  # version 1.0: nothing recorded
    if (size is not None and not _is_count(size)) or (sha256 is not None and not isinstance(sha256, str)):
        raise ResultFormatError(
            f"{json_path}: arrays_file_size {size!r} or arrays_file_sha256 {sha256!r} is malformed",
            hint="re-export the result with mega-runtime",
        )
    actual_size = npz_path.stat().st_size
    if size is not None and actual_size != size:
        raise ResultFormatError(
            f"{npz_path} is {actual_size} bytes, but {json_path} was written with an arrays file of {size} bytes: "
            "the two files are not one pair",
            hint=hint,
        )
    if sha256 is not None and _file_sha256(npz_path) != sha256.lower():
        raise ResultFormatError(
            f"{npz_path} does not match the SHA-256 recorded in {json_path}: the two files are not one pair",
            hint=hint,
        )


def read_result(path: Path | str) -> Result:
    """Read and validate a result pair (either file's path, or the common stem); any version 1.x or 2.x.

    Format 2 (compact) is returned as format-1 arrays: ``vertices`` (and ``smoothed_vertices``) decoded.

    Raises :class:`ResultFormatError` for a missing or malformed file, another MAJOR version, or an ``.npz`` whose
    size or SHA-256 differ from those its ``.json`` records.
    """
    json_path, _ = result_paths(path)
    if not json_path.is_file():
        raise ResultFormatError(f"result file {json_path} does not exist", hint="pass the .json of a result pair")
    meta = load_json_limited(json_path, MAX_RESULT_JSON_BYTES, "result", ResultFormatError)
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise ResultFormatError(f"{json_path} is not a MEGA result (schema {schema!r})")
    _check_version(meta.get("version"), json_path)
    name = meta.get("arrays_file", json_path.with_suffix(".npz").name)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ResultFormatError(
            f"{json_path}: arrays_file {name!r} is not a file name beside the .json",
            hint="re-export the result with mega-runtime",
        )
    npz_path = json_path.with_name(name)
    if not npz_path.is_file():
        raise ResultFormatError(f"{json_path}: its arrays file {npz_path} is missing")
    _check_pair(json_path, npz_path, meta)
    declared = meta.get("arrays")
    npz_array_headers(npz_path, declared if isinstance(declared, dict) else None)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ResultFormatError(f"{npz_path} is not a readable .npz file: {exc}") from exc
    if str(meta.get("version")).split(".")[0] == str(COMPACT_MAJOR):
        _check_arrays(arrays, str(npz_path), compact=True)
        check_finite(arrays, str(npz_path))
        f, p, h, _ = arrays["vertices_coeffs"].shape
        if f * p * h * NUM_VERTICES * 3 * 4 > MAX_RESULT_ARRAY_BYTES:
            raise ResultFormatError(
                f"{npz_path} would need more than {MAX_RESULT_ARRAY_BYTES:,} bytes of memory once its "
                f"{f} × {p} × {h} meshes are decoded",
                hint="split the video into shorter results",
            )
        try:
            arrays = compact_meshes.expand_arrays(arrays)
        except ValueError as exc:
            raise ResultFormatError(f"{npz_path}: {exc}", hint="re-export the result with mega-runtime") from exc
    _check_arrays(arrays, str(npz_path))
    check_finite(arrays, str(npz_path))
    return Result(meta=meta, arrays=arrays)
