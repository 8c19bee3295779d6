"""The folders inference reads: a local folder as given, or the cache, downloading what it lacks."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from mega_runtime.constants import CHECKPOINT_CONFIG_FILE
from mega_runtime.errors import ConfigError, MegaError, WeightsError
from mega_runtime.weights.downloads import download, file_digests, human_size, present_and_valid
from mega_runtime.weights.downloads import download as download_file
from mega_runtime.weights.identify import identify_checkpoint_file, verify_checkpoint
from mega_runtime.weights.registry import (
    CHECKPOINTS,
    DEFAULT_TIMEOUT_S,
    DETECTOR_FILES,
    DOWNLOADS_SUBDIR,
    ENV_ASSETS_DIR,
    ENV_CHECKPOINTS_DIR,
    ENV_OFFLINE,
    ENV_YOLOX_DIR,
    FETCH_COMMAND,
    YOLOX_FILE,
    ZENODO_PAGE_URL,
    AssetFile,
    ProgressCallback,
    Sources,
    cache_assets_dir,
    cache_checkpoints_dir,
    cache_detector_dir,
    cache_dir,
    cached_ok,
    check_models,
    default_sources,
    detector_base_url,
    instead_hint,
    local_folder,
    offline,
    read_manifest,
    write_manifest,
    yolox_url,
)
from mega_runtime.weights.zenodo import (
    NOT_CHECKPOINT_SUFFIXES,
    RemoteFile,
    archive_kind,
    extract_archive,
    guess_model,
    list_zenodo_record,
    plan_downloads,
)

log = logging.getLogger(__package__)  # one logger for the package: mega_runtime.weights


# --------------------------------------------------------------------------------------------------------------
# Assets
# --------------------------------------------------------------------------------------------------------------


def curl_command(url: str, path: Path) -> str:
    return f"curl -L --create-dirs -o '{path}' '{url}'"


def resolve_assets_dir(
    explicit: Path | str | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    *,
    sources: Sources | None = None,
) -> Path:
    """The folder holding ``template.ply`` and ``connection_matrices/``, every registered file present.

    Args:
        explicit: a local assets folder; else ``$MEGA_ASSETS_DIR``; else the download cache.
            A local folder is never downloaded into: a missing file raises.
        download: fetch files missing from (or damaged in) the cache; False raises instead.
        progress: called as each download advances (see :data:`ProgressCallback`); an exception it raises
            stops the download and propagates unchanged (nothing half-downloaded is kept).
        sources: where to download from (default :func:`default_sources`).

    Raises:
        WeightsError: a file is missing (naming each one and the command or copy that fixes it),
            or a download failed or did not match its pinned SHA-256.
    """
    sources = sources or default_sources()
    local, origin = local_folder(explicit, ENV_ASSETS_DIR)
    if local is not None:
        missing = [f for f in sources.assets if not (local / f.name).is_file()]
        if missing:
            fixes = "\n    ".join(curl_command(f.url(sources.assets_base_url), local / f.name) for f in missing)
            raise WeightsError(
                f"the assets folder {local} ({origin}) lacks {len(missing)} file(s): "
                + ", ".join(f.name for f in missing),
                hint=f"download them into it:\n    {fixes}\n"
                f"  or {instead_hint(origin, '--assets-dir', ENV_ASSETS_DIR)} "
                f"to use the download cache (`{FETCH_COMMAND}`)",
            )
        log.debug("using the assets in %s (%s)", local, origin)
        return local

    folder = cache_assets_dir()
    stale = [f for f in sources.assets if not present_and_valid(folder / f.name, f.sha256, None, f.size)]
    if not stale:
        return folder
    if not download:
        raise WeightsError(
            f"the asset cache {folder} lacks {len(stale)} file(s) (or holds damaged copies): "
            + ", ".join(f.name for f in stale),
            hint=f"run `{FETCH_COMMAND}`, or set {ENV_ASSETS_DIR} to a folder holding template.ply and "
            "connection_matrices/",
        )
    for asset in stale:
        url = asset.url(sources.assets_base_url)
        _download_asset(url, folder / asset.name, asset, progress, sources.timeout)
    return folder


def _download_asset(url: str, dest: Path, asset: AssetFile, progress: ProgressCallback | None, timeout: float) -> None:
    hint = (
        f"check the network connection and run `{FETCH_COMMAND}` again, or download it yourself "
        f"({curl_command(url, dest)}), or set {ENV_ASSETS_DIR} to a folder holding the official assets"
    )
    download(
        url, dest, sha256=asset.sha256, size=asset.size, progress=progress, timeout=timeout, label=asset.name, hint=hint
    )


# --------------------------------------------------------------------------------------------------------------
# The person detector's models
# --------------------------------------------------------------------------------------------------------------


def fetch_detector_models(
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download the BlazePose models (:data:`DETECTOR_FILES`) into ``<cache>/detector`` unless they are there.

    Each file is checked against its size and SHA-256 before it is renamed into place. ``base_url`` defaults to
    ``$MEGA_DETECTOR_URL``, else Google's MediaPipe bucket. Returns the folder.
    """
    folder = cache_detector_dir()
    base = base_url or detector_base_url()
    for model in DETECTOR_FILES:
        dest = folder / model.name
        if present_and_valid(dest, model.sha256, None, model.size):
            continue
        url = model.url(base)
        hint = (
            f"check the network connection and run `{FETCH_COMMAND} --detector` again, or download it yourself "
            f"({curl_command(url, dest)}), or set $MEGA_DETECTOR_DIR to a folder holding both models"
        )
        download(
            url, dest, sha256=model.sha256, size=model.size, progress=progress, timeout=timeout, label=model.name,
            hint=hint,
        )  # fmt: skip
    return folder


def resolve_yolox_model(
    explicit: Path | str | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    *,
    entry: AssetFile | None = None,
    url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    honour_offline: bool = True,
) -> Path:
    """The verified YOLOX ``.onnx`` file (:data:`YOLOX_FILE`): from a local folder, else the cache, else downloaded.

    Args:
        explicit: a folder holding ``entry.name``; else ``$MEGA_YOLOX_DIR``; else ``<cache>/detector``.
            A local folder is never downloaded into.
        download: fetch the file into the cache when it is missing there; False raises instead. Nothing is
            downloaded either when ``$MEGA_OFFLINE`` is set.
        progress: called as the download advances (see :data:`ProgressCallback`).
        entry: the pinned file (name, SHA-256, size); default :data:`YOLOX_FILE`.
        url: where to download it (default ``$MEGA_YOLOX_URL``, else opencv_zoo's Git LFS media URL).
        timeout: seconds a connection or a read may stall.
        honour_offline: False for an explicit fetch, which downloads even when ``$MEGA_OFFLINE`` is set.

    Raises:
        WeightsError: the file is missing or does not match its SHA-256 / size (naming the fix), or the download
            failed.
    """
    entry = entry or YOLOX_FILE
    url = url or yolox_url(entry)
    local, origin = local_folder(explicit, ENV_YOLOX_DIR)
    if local is not None:
        path = local / entry.name
        if not present_and_valid(path, entry.sha256, None, entry.size):
            state = "lacks" if not path.is_file() else "holds a different file than the pinned"
            raise WeightsError(
                f"the YOLOX folder {local} ({origin}) {state} {entry.name} (SHA-256 {entry.sha256[:12]}…, "
                f"{human_size(entry.size)})",
                hint=f"download it into the folder: {curl_command(url, path)}\n"
                f"  or {instead_hint(origin, 'the folder', ENV_YOLOX_DIR)} to use the download cache "
                f"(`{FETCH_COMMAND} --yolox`)",
            )
        return path
    dest = cache_detector_dir() / entry.name
    if present_and_valid(dest, entry.sha256, None, entry.size):
        return dest
    fixes = (
        f"run `{FETCH_COMMAND} --yolox` where the network can be reached, or download it yourself "
        f"({curl_command(url, dest)}), or set {ENV_YOLOX_DIR} to a folder holding {entry.name}"
    )
    if not download or (honour_offline and offline()):
        why = f" and ${ENV_OFFLINE} forbids downloading it" if download else ""
        raise WeightsError(f"the YOLOX person detector model is not in the cache ({dest}){why}", hint=fixes)
    download_file(
        url, dest, sha256=entry.sha256, size=entry.size, progress=progress, timeout=timeout, label=entry.name,
        hint=f"check the network connection, or {fixes}",
    )  # fmt: skip
    return dest


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: resolving and fetching
# --------------------------------------------------------------------------------------------------------------


def resolve_checkpoint_dir(
    models: Sequence[str],
    explicit: Path | str | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    *,
    assets_dir: Path | str | None = None,
    sources: Sources | None = None,
) -> Path:
    """A folder in the official layout holding the checkpoints of ``models`` (keys of :data:`CHECKPOINTS`).

    Args:
        models: model names, e.g. ``["mega_hrnet", "mesh_vqvae_54"]``.
        explicit: a local checkpoint folder; else ``$MEGA_CHECKPOINTS_DIR``; else the download cache.
            A local folder is never downloaded into: a missing file raises.
        download: fetch missing checkpoints from the Zenodo record into the cache; False raises instead.
        progress: called as each download advances; an exception it raises stops the download and
            propagates unchanged (nothing half-downloaded is kept or installed).
        assets_dir: assets folder used to check a downloaded Mesh-VQ-VAE (default: resolved as
            :func:`resolve_assets_dir` does, downloading if needed).
        sources: where to download from (default :func:`default_sources`).

    Raises:
        WeightsError: a checkpoint is missing (naming it and the fix), the record could not be
            listed or downloaded, or it did not provide a file that loads strictly as the model.
        ConfigError: an unknown model name.
    """
    names = check_models(models)
    sources = sources or default_sources()
    local, origin = local_folder(explicit, ENV_CHECKPOINTS_DIR)
    if local is not None:
        missing = [n for n in names if not (local / CHECKPOINTS[n].path).is_file()]
        if missing:
            paths = ", ".join(CHECKPOINTS[n].path for n in missing)
            copies = "\n    ".join(f"{CHECKPOINTS[n].path} -> {local / CHECKPOINTS[n].path}" for n in missing)
            raise WeightsError(
                f"the checkpoint folder {local} ({origin}) lacks {paths}",
                hint=f"copy the official file(s) from {ZENODO_PAGE_URL} into it:\n    {copies}\n  or "
                f"{instead_hint(origin, '--checkpoint-dir', ENV_CHECKPOINTS_DIR)} and run "
                f"`{FETCH_COMMAND} --models {','.join(missing)}` to download them into the cache",
            )
        log.debug("using the checkpoints in %s (%s)", local, origin)
        return local

    folder = cache_checkpoints_dir()
    manifest = read_manifest(folder)
    missing = [n for n in names if not cached_ok(folder, n, manifest)]
    if not missing:
        return folder
    if not download:
        raise WeightsError(
            f"the checkpoint cache {folder} lacks {', '.join(CHECKPOINTS[n].path for n in missing)}",
            hint=f"run `{FETCH_COMMAND} --models {','.join(missing)}`, or set {ENV_CHECKPOINTS_DIR} to a folder "
            f"holding the official checkpoints ({ZENODO_PAGE_URL})",
        )
    _Fetcher(folder, sources, progress, assets_dir).fetch(missing)
    return folder


class _Fetcher:
    """Fetches checkpoints from the Zenodo record into the cache folder (one call of :meth:`fetch`)."""

    def __init__(
        self, folder: Path, sources: Sources, progress: ProgressCallback | None, assets_dir: Path | str | None
    ) -> None:
        self.folder = folder
        self.sources = sources
        self.progress = progress
        self.assets_dir = assets_dir
        self.downloads = cache_dir() / DOWNLOADS_SUBDIR
        self.problems: list[str] = []
        self._assets: Path | None = None

    def fetch(self, wanted: list[str]) -> None:
        record = list_zenodo_record(self.sources)
        log.info(
            "Zenodo record %s lists %d file(s): %s",
            self.sources.zenodo_record_url,
            len(record),
            ", ".join(r.key for r in record),
        )
        remaining = set(wanted)
        for remote in plan_downloads(record, remaining):
            if not remaining:
                break
            guess = guess_model(remote.key)
            if guess is not None and guess not in remaining:
                continue
            remaining -= self._take(remote)
        with contextlib.suppress(OSError):
            self.downloads.rmdir()
        if remaining:
            order = [n for n in wanted if n in remaining]
            found = (
                "; ".join(self.problems)
                if self.problems
                else "its files: " + (", ".join(r.key for r in record) or "none")
            )
            raise WeightsError(
                f"the Zenodo record {self.sources.zenodo_record_url} did not provide "
                f"{', '.join(CHECKPOINTS[n].path for n in order)} ({found})",
                hint=f"download them by hand from {ZENODO_PAGE_URL}, lay them out as "
                f"{', '.join(CHECKPOINTS[n].path for n in order)} in a folder and pass it with --checkpoint-dir "
                f"(or set {ENV_CHECKPOINTS_DIR})",
            )

    def _take(self, remote: RemoteFile) -> set[str]:
        """Download one record file and install every model it holds; the model names installed."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(remote.key).name) or "download"
        local = self.downloads / name
        if remote.md5 is None:
            log.warning("the Zenodo listing gives no MD5 for %s; only its size is checked", remote.key)
        hint = (
            f"check the network connection and run `{FETCH_COMMAND}` again, or download {remote.key} by hand from "
            f"{ZENODO_PAGE_URL} and pass the unpacked checkpoint folder with --checkpoint-dir"
        )
        download(
            remote.url,
            local,
            md5=remote.md5,
            size=remote.size,
            progress=self.progress,
            timeout=self.sources.timeout,
            label=remote.key,
            hint=hint,
        )
        # On an exception the verified download stays in <cache>/downloads, so a retry does not fetch it again.
        installed = self._install_from(local, remote)
        with contextlib.suppress(OSError):
            local.unlink()
        return installed

    def _install_from(self, local: Path, remote: RemoteFile) -> set[str]:
        if archive_kind(local) is not None:
            return self._take_archive(local, remote)
        model = identify_checkpoint_file(local)
        if model is None:
            self.problems.append(f"{remote.key} is not a MEGA checkpoint")
            return set()
        if cached_ok(self.folder, model, read_manifest(self.folder)):
            log.info("%s holds %s, which is already in the cache", remote.key, CHECKPOINTS[model].path)
            return set()
        return {model} if self._install(local, model, remote.url, remote.md5) else set()

    def _take_archive(self, archive: Path, remote: RemoteFile) -> set[str]:
        placed: set[str] = set()
        found: set[str] = set()
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=self.downloads) as tmp:
            root = Path(tmp)
            members = extract_archive(archive, root)
            configs = [p for p in members if p.name == CHECKPOINT_CONFIG_FILE]
            for config in configs:
                self._merge_config(config)
            for path in sorted(members):
                if path in configs or path.name.lower().endswith(NOT_CHECKPOINT_SUFFIXES):
                    continue
                model = identify_checkpoint_file(path)
                if model is None or model in found:
                    continue
                found.add(model)
                if cached_ok(self.folder, model, read_manifest(self.folder)):
                    log.info("%s is already in the cache; keeping it", CHECKPOINTS[model].path)
                    continue
                member = path.relative_to(root).as_posix()
                if self._install(path, model, f"{remote.url}#{member}", None):
                    placed.add(model)
            if not found:
                self.problems.append(f"{remote.key} holds no MEGA checkpoint")
        return placed

    def _merge_config(self, config: Path) -> None:
        from mega_runtime.weights.loaders import read_folder_config, write_folder_config

        try:
            described = read_folder_config(config.parent)
        except ConfigError as exc:
            log.debug("ignoring %s: %s", config, exc.message)
            return
        if described:
            merged = {**read_folder_config(self.folder), **described}
            self.folder.mkdir(parents=True, exist_ok=True)
            write_folder_config(self.folder, merged)

    def _assets_for_check(self) -> Path:
        if self._assets is None:
            self._assets = resolve_assets_dir(
                self.assets_dir, download=True, progress=self.progress, sources=self.sources
            )
        return self._assets

    def _install(self, path: Path, model: str, source: str, md5: str | None) -> bool:
        """Strict-load ``path`` as ``model`` and move it into the official layout; False if it does not fit."""
        entry = CHECKPOINTS[model]
        try:
            assets = self._assets_for_check() if entry.kind == "mesh_vqvae" else None
            verify_checkpoint(model, path, self.folder, assets)
        except WeightsError:
            raise
        except MegaError as exc:
            self.problems.append(f"{source} looks like {model} but does not load: {exc.message}")
            log.warning("%s looks like %s but does not load strictly: %s", source, model, exc.message)
            return False
        digests = file_digests(path, ("sha256", "md5"))
        dest = self.folder / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        st = dest.stat()
        manifest = read_manifest(self.folder)
        manifest[model] = {
            "path": entry.path,
            "size": st.st_size,
            "sha256": digests["sha256"],
            "md5": md5 or digests["md5"],
            "source": source,
        }
        write_manifest(self.folder, manifest)
        log.info("installed %s (%s) from %s", dest, human_size(st.st_size), source)
        return True
