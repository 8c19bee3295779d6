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

The schema (versions, the arrays and their dtypes and shapes, their checks) is ``io/result_schema.py``; the
crash-safe file mechanics (temporary file, fsync, hard link or replace, directory sync) are ``io/atomic_files.py``.
:class:`Result`, :func:`read_result`, :func:`write_result`, :data:`SCHEMA`, :data:`VERSION` and the errors
(:class:`ResultFormatError`, :class:`ResultWriteError`, :class:`OutputExistsError`) are imported from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mega_runtime.constants import NUM_VERTICES
from mega_runtime.defaults import MAX_JSON_DEPTH, MAX_RESULT_ARRAY_BYTES, MAX_RESULT_JSON_BYTES
from mega_runtime.errors import MegaError
from mega_runtime.io import compact as compact_meshes
from mega_runtime.io.atomic_files import OutputExistsError as OutputExistsError
from mega_runtime.io.atomic_files import ResultWriteError, exists_error, publish, sync_directory, write_temporary
from mega_runtime.io.result_schema import (
    COMPACT_MAJOR,
    COMPACT_VERSION,
    SCHEMA,
    VERSION,
    ResultFormatError,
    check_arrays,
    check_finite,
    check_version,
)

log = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Result:
    """A reconstruction: ``meta`` (the JSON document) and ``arrays`` (see ``result_schema.ARRAYS``)."""

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


def _savez(handle: IO[bytes], arrays: dict[str, np.ndarray], deflate: bool = False) -> None:
    """What ``np.savez`` writes (uncompressed ``<name>.npy`` members), with the archive closed inside this call
    even when a write fails — ``np.savez`` leaves it to the garbage collector, whose late close of an already
    closed file then prints a traceback ("seek of closed file") and hides the real error (e.g. a full disk)."""
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(handle, "w", compression=compression, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


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
    ``result_schema.ARRAYS``.
    """
    json_path, npz_path = result_paths(path)
    if not overwrite:
        existing = [p for p in (json_path, npz_path) if p.exists()]
        if existing:
            raise exists_error(existing)
    check_arrays(result.arrays, str(npz_path))
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
        npz = write_temporary(npz_path, lambda f: _savez(f, arrays, compact), digest=True)
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
        meta_file = write_temporary(json_path, lambda f: f.write(text), digest=False)
        temporaries.append(meta_file.path)
        if overwrite and json_path.exists():
            json_path.unlink()  # no moment where the old .json stands beside the new .npz
            sync_directory(folder)
        publish(npz.path, npz_path, overwrite)
        published.append(npz_path)
        sync_directory(folder)  # the .npz's name is on disk before the .json's
        publish(meta_file.path, json_path, overwrite)
        published.append(json_path)
        sync_directory(folder)
    except BaseException:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        if not overwrite and published == [npz_path]:
            npz_path.unlink(missing_ok=True)  # ours: it did not exist before this call
        raise
    log.info("wrote %s and %s", json_path, npz_path)
    return json_path, npz_path


# --- reading ---------------------------------------------------------------------------------------------------


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
    check_version(meta.get("version"), json_path)
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
        check_arrays(arrays, str(npz_path), compact=True)
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
    check_arrays(arrays, str(npz_path))
    check_finite(arrays, str(npz_path))
    return Result(meta=meta, arrays=arrays)
