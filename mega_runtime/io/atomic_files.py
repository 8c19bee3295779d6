"""Crash-safe files: written beside their final name, synced, then put in place without replacing a stranger's file.

The mechanics :func:`mega_runtime.io.result.write_result` builds a result pair from (its docstring gives the
order): :func:`write_temporary` writes a temporary file (``.<name>.<random>.tmp``, mode ``0o666`` under the
user's umask) in the destination folder, flushes and fsyncs it; :func:`publish` gives it its final name — with a
hard link that fails rather than replace a file that appeared meanwhile, or ``os.replace`` with ``overwrite``;
:func:`sync_directory` makes the renames survive a power cut. stdlib only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)


class ResultWriteError(MegaError):
    """A result could not be written (disk full, folder read-only); nothing partial is left."""

    code = "write_failed"


class OutputExistsError(MegaError):
    """Writing would overwrite a file the user already has."""

    code = "output_exists"


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


def write_temporary(path: Path, write: Callable[[IO[bytes]], object], digest: bool) -> _Written:
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


def sync_directory(folder: Path) -> None:
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


def exists_error(paths: list[Path]) -> OutputExistsError:
    return OutputExistsError(
        f"not overwriting existing file(s): {', '.join(str(p) for p in paths)}",
        hint="choose another output name, or pass --overwrite",
    )


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
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
        raise exists_error([path]) from None
    except OSError as exc:
        log.debug("no hard link in %s (%s): checking, then renaming", path.parent, exc)
        if path.exists():
            raise exists_error([path]) from None
        os.replace(tmp, path)
        return
    tmp.unlink()
