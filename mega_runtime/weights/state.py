"""What is present and intact (:func:`status`), without downloading anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mega_runtime.errors import MegaError
from mega_runtime.weights.downloads import file_digests
from mega_runtime.weights.identify import verify_checkpoint
from mega_runtime.weights.registry import (
    CHECKPOINTS,
    ENV_ASSETS_DIR,
    ENV_CHECKPOINTS_DIR,
    FETCH_COMMAND,
    ZENODO_PAGE_URL,
    Sources,
    cache_assets_dir,
    cache_checkpoints_dir,
    check_models,
    default_sources,
    instead_hint,
    local_folder,
    read_manifest,
)
from mega_runtime.weights.resolve import curl_command


@dataclass(frozen=True)
class FileStatus:
    """The state of one needed file.

    Attributes:
        name: asset path (``"template.ply"``) or model name (``"mega_hrnet"``).
        kind: ``"asset"`` or ``"checkpoint"``.
        path: where the file is expected.
        present: the file exists.
        ok: present and no problem found.
        verified: its hash was checked against the pinned / recorded one (assets, cached checkpoints),
            or, for checkpoints with ``deep=True``, it also loaded strictly.
        source: where the official file comes from.
        size: its size in bytes, None when absent.
        problem: what is wrong, None when nothing is.
        fix: the command or copy that fixes a problem, None when nothing is wrong.
    """

    name: str
    kind: str
    path: Path
    present: bool
    ok: bool
    verified: bool
    source: str
    size: int | None
    problem: str | None = None
    fix: str | None = None


def status(
    assets_dir: Path | str | None = None,
    checkpoint_dir: Path | str | None = None,
    *,
    models: Sequence[str] | None = None,
    deep: bool = False,
    sources: Sources | None = None,
) -> list[FileStatus]:
    """The state of every asset and of the checkpoints of ``models`` (default: all), without downloading.

    Folders are chosen as the resolve functions do (argument, environment variable, cache).
    Assets are always checked against their pinned SHA-256 (they are small). Checkpoints are
    checked for presence and recorded size; with ``deep=True`` their SHA-256 is compared with the
    one recorded at download and each is loaded strictly (slow for the full-size models).
    """
    sources = sources or default_sources()
    names = check_models(models if models is not None else list(CHECKPOINTS))
    rows = _asset_status(assets_dir, sources)
    assets_ok = all(r.ok for r in rows if r.name.startswith("connection_matrices/"))
    assets_folder = local_folder(assets_dir, ENV_ASSETS_DIR)[0] or cache_assets_dir()
    rows += _checkpoint_status(checkpoint_dir, names, deep, assets_folder if assets_ok else None)
    return rows


def _asset_status(explicit: Path | str | None, sources: Sources) -> list[FileStatus]:
    local = local_folder(explicit, ENV_ASSETS_DIR)[0]
    folder = local or cache_assets_dir()
    rows = []
    for asset in sources.assets:
        path = folder / asset.name
        url = asset.url(sources.assets_base_url)
        fix = curl_command(url, path) if local is not None else FETCH_COMMAND
        if not path.is_file():
            rows.append(FileStatus(asset.name, "asset", path, False, False, False, url, None, "missing", fix))
            continue
        size = path.stat().st_size
        digest = file_digests(path)["sha256"]
        problem = None
        if size != asset.size or digest != asset.sha256:
            problem = f"differs from the official file (sha256 {digest[:12]}…, {size} bytes)"
        rows.append(
            FileStatus(
                asset.name, "asset", path, True, problem is None, True, url, size, problem, fix if problem else None
            )
        )
    return rows


def _checkpoint_status(
    explicit: Path | str | None, names: list[str], deep: bool, assets_folder: Path | None
) -> list[FileStatus]:
    local, origin = local_folder(explicit, ENV_CHECKPOINTS_DIR)
    folder = local or cache_checkpoints_dir()
    manifest = read_manifest(folder)
    rows = []
    for name in names:
        entry = CHECKPOINTS[name]
        path = folder / entry.path
        recorded = manifest.get(name, {})
        source = str(recorded.get("source") or ZENODO_PAGE_URL)
        if local is None:
            fix = f"{FETCH_COMMAND} --models {name}"
        else:
            instead = instead_hint(origin, "--checkpoint-dir", ENV_CHECKPOINTS_DIR)
            fetch = f"{FETCH_COMMAND} --models {name}"
            fix = f"copy {entry.path} from {ZENODO_PAGE_URL} to {path}, or {instead} and run `{fetch}`"
        if not path.is_file():
            rows.append(FileStatus(name, "checkpoint", path, False, False, False, source, None, "missing", fix))
            continue
        size = path.stat().st_size
        problem = None
        verified = False
        if recorded and recorded.get("size") != size:
            problem = f"has {size} bytes, {recorded.get('size')} were downloaded"
        elif deep:
            problem, verified = _deep_check(name, path, folder, recorded, assets_folder)
        fix_now = None
        if problem:
            fix_now = f"delete {path} and run `{FETCH_COMMAND} --models {name}`" if local is None else fix
        rows.append(
            FileStatus(name, "checkpoint", path, True, problem is None, verified, source, size, problem, fix_now)
        )
    return rows


def _deep_check(
    name: str, path: Path, folder: Path, recorded: dict[str, Any], assets_folder: Path | None
) -> tuple[str | None, bool]:
    if recorded.get("sha256"):
        digest = file_digests(path)["sha256"]
        if digest != recorded["sha256"]:
            return f"sha256 {digest[:12]}… differs from the downloaded {str(recorded['sha256'])[:12]}…", False
    if CHECKPOINTS[name].kind == "mesh_vqvae" and assets_folder is None:
        return "cannot load it: the connection matrices are missing or damaged", False
    try:
        verify_checkpoint(name, path, folder, assets_folder)
    except MegaError as exc:
        return exc.message, False
    return None, True
