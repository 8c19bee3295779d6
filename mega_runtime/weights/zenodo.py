"""The Zenodo record holding the checkpoints: its listing, which of its files to try, and safe unpacking."""

from __future__ import annotations

import logging
import re
import shutil
import stat
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mega_runtime.errors import WeightsError
from mega_runtime.weights.downloads import fetch_json
from mega_runtime.weights.registry import (
    CHECKPOINTS,
    CHUNK_BYTES,
    ENV_CHECKPOINTS_DIR,
    FETCH_COMMAND,
    ZENODO_PAGE_URL,
    Sources,
    default_sources,
)

log = logging.getLogger(__package__)  # one logger for the package: mega_runtime.weights


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: the Zenodo record
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of the Zenodo record: its name (key), download URL, size and MD5 (when listed)."""

    key: str
    url: str
    size: int | None
    md5: str | None


_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


def parse_zenodo_files(data: Any, record_url: str) -> list[RemoteFile]:
    """The files of a Zenodo record from its API JSON.

    Accepts the current shape (``files: [{key, size, checksum: "md5:<hex>", links: {self|content}}]``),
    the InvenioRDM one (``files: {entries: {...}}``) and the legacy one (``filename``, ``filesize``,
    bare-hex ``checksum``, ``links.download``).
    """
    hint = f"download the checkpoints by hand from {ZENODO_PAGE_URL} and pass their folder with --checkpoint-dir"
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):
        entries = files.get("entries")
        files = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(files, list):
        raise WeightsError(f"the Zenodo listing {record_url} has no list of files", hint=hint)
    out: list[RemoteFile] = []
    for entry in files:
        if not isinstance(entry, dict):
            continue
        key = entry.get("key") or entry.get("filename")
        if not isinstance(key, str) or not key:
            continue
        links = entry.get("links")
        if not isinstance(links, dict):
            links = {}
        link = links.get("content") or links.get("download") or links.get("self")
        if not isinstance(link, str) or not link:
            link = f"{record_url.rstrip('/')}/files/{urllib.parse.quote(key)}/content"
        link = urllib.parse.urljoin(record_url, link)
        if urllib.parse.urlsplit(link).scheme not in ("http", "https"):
            log.warning("ignoring %s in the Zenodo listing: unsupported link %s", key, link)
            continue
        size = entry.get("size", entry.get("filesize"))
        checksum = entry.get("checksum")
        md5 = None
        if isinstance(checksum, str):
            algorithm, _, value = checksum.rpartition(":")
            if algorithm in ("", "md5") and _MD5_RE.match(value):
                md5 = value.lower()
        out.append(RemoteFile(key, link, int(size) if isinstance(size, int) else None, md5))
    return out


def list_zenodo_record(sources: Sources | None = None) -> list[RemoteFile]:
    """Download and parse the listing of the checkpoint record (:attr:`Sources.zenodo_record_url`)."""
    sources = sources or default_sources()
    hint = (
        f"check the network connection and run it again, or download the checkpoints by hand from "
        f"{ZENODO_PAGE_URL} and pass their folder with --checkpoint-dir (or set {ENV_CHECKPOINTS_DIR})"
    )
    return parse_zenodo_files(fetch_json(sources.zenodo_record_url, sources.timeout, hint), sources.zenodo_record_url)


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
NOT_CHECKPOINT_SUFFIXES = (
    ".md", ".txt", ".rst", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".json", ".yaml", ".yml",
    ".py", ".ipynb", ".html", ".csv", ".obj", ".ply", ".npy", ".npz", ".mp4", ".log",
)  # fmt: skip
_MODEL_SUFFIXES = (*_ARCHIVE_SUFFIXES, ".pth", ".pt", ".ckpt", ".bin", ".pth.tar")


def guess_model(key: str) -> str | None:
    """The model a record file is named after (``mega_hrnet.pth``, ``mesh-vqvae_54``), or None."""
    base = PurePosixPath(key.replace("\\", "/")).name.lower()
    for suffix in sorted(_MODEL_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    base = base.replace("-", "_")
    return base if base in CHECKPOINTS else None


def _is_archive_name(key: str) -> bool:
    return key.lower().endswith(_ARCHIVE_SUFFIXES)


def plan_downloads(record: list[RemoteFile], wanted: Iterable[str]) -> list[RemoteFile]:
    """Record files in the order to try: named after a wanted model, then archives, then unknown files."""
    wanted = set(wanted)
    named = [r for r in record if guess_model(r.key) in wanted]
    unnamed = [r for r in record if guess_model(r.key) is None]
    archives = [r for r in unnamed if _is_archive_name(r.key)]
    others = [
        r for r in unnamed if not _is_archive_name(r.key) and not r.key.lower().endswith(NOT_CHECKPOINT_SUFFIXES)
    ]
    return named + archives + others


# --------------------------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------------------------


def _is_torch_zip(path: Path) -> bool:
    """A zip written by ``torch.save`` (one top folder holding ``data.pkl``), not an archive of files."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    return len(tops) == 1 and any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)


def archive_kind(path: Path) -> str | None:
    """``"zip"`` or ``"tar"`` for an archive of files; None for anything else (a checkpoint included)."""
    try:
        if zipfile.is_zipfile(path):
            return None if _is_torch_zip(path) else "zip"
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return None


def _member_target(root: Path, name: str) -> Path | None:
    """Where an archive member may be written under ``root``; None for an unsafe name."""
    clean = name.replace("\\", "/")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if not parts or clean.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", parts[0]):
        return None
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        return None
    return target


def _write_member(source: IO[bytes], target: Path, name: str) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    except FileExistsError:
        log.warning("archive member %s appears twice; keeping the first copy", name)
        return False
    return True


def extract_archive(archive: Path | str, dest: Path | str) -> list[Path]:
    """Extract the regular files of a zip or tar archive under ``dest``; the paths written.

    Safe by construction: absolute names, ``..`` components and drive letters are refused,
    symbolic links, hard links, devices and other special members are skipped (never created),
    and every file is written by this function (no ``extractall``).

    Raises:
        WeightsError: ``archive`` is not a readable zip or tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    if kind is None:
        raise WeightsError(f"{archive} is not a zip or tar archive")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    file_type = stat.S_IFMT(info.external_attr >> 16)
                    if file_type and file_type != stat.S_IFREG:
                        log.warning("skipping archive member %s: not a regular file (a link?)", info.filename)
                        continue
                    target = _member_target(dest, info.filename)
                    if target is None:
                        log.warning("skipping archive member %s: unsafe path", info.filename)
                        continue
                    with zf.open(info) as source:
                        if _write_member(source, target, info.filename):
                            written.append(target)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    if not member.isfile():
                        if not member.isdir():
                            log.warning("skipping archive member %s: not a regular file", member.name)
                        continue
                    target = _member_target(dest, member.name)
                    if target is None:
                        log.warning("skipping archive member %s: unsafe path", member.name)
                        continue
                    extracted = tf.extractfile(member)
                    if extracted is not None and _write_member(extracted, target, member.name):
                        written.append(target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsError(
            f"cannot unpack {archive}: {type(exc).__name__}: {exc}",
            hint=f"delete it and run `{FETCH_COMMAND}` again",
        ) from exc
    return written
