"""Registry, cache, downloads and verification of every file the runtime needs.

This is the only module of the runtime that touches the network or the download cache.

Files and their official public sources:

* ``template.ply`` and the 14 graph connection matrices ``connection_matrices/_pool{0..6}.npy`` /
  ``_unpool{0..6}.npy`` from github.com/papagina/MeshConvolution at a pinned commit, each pinned by
  SHA-256 and size (:data:`ASSET_FILES`).
* The MEGA checkpoints (``CVQMAE/mega_resnet``, ``CVQMAE/mega_hrnet``, ``CVQMAE/mega_vit``,
  ``VQMAE/mega_pretrained``, ``MESH_VQVAE/mesh_vqvae_54``) from Zenodo record 14974141. The record is
  listed through Zenodo's public API; the names of its files are not assumed: single files and archives
  (zip / tar) are downloaded as needed, checked against Zenodo's MD5, extracted safely, and each model file
  is recognised *by its structure* (the keys of its state dict, :func:`identify_checkpoint`) and then loaded
  strictly before it is placed in the official layout.

Where the files live (:func:`cache_dir`): ``$MEGA_HOME`` if set, else the platform's user cache folder
(``$XDG_CACHE_HOME/mega-blender`` or ``~/.cache/mega-blender`` on Linux, ``~/Library/Caches/mega-blender``
on macOS, ``%LOCALAPPDATA%\\mega-blender\\Cache`` on Windows)::

    <cache>/assets/template.ply
    <cache>/assets/connection_matrices/_pool0.npy …
    <cache>/checkpoints/CVQMAE/mega_hrnet …          (official layout, plus .mega-weights.json)
    <cache>/downloads/                               (transient: archives being unpacked)

``$MEGA_ASSETS_DIR`` / ``$MEGA_CHECKPOINTS_DIR`` (or an explicit folder argument) name local folders that
are used instead of the cache; nothing is downloaded for them.

Every download streams into a temporary file beside its destination, is checked (size, SHA-256 or MD5)
and only then renamed into place with :func:`os.replace`, so an interrupted or corrupted transfer never
leaves a file that counts as cached. torch is imported only by the functions that load checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mega_runtime import __version__
from mega_runtime.errors import ConfigError, MegaError, WeightsError

__all__ = [
    "ASSET_FILES",
    "CHECKPOINTS",
    "DEFAULT_MODELS",
    "MESHCONV_BASE_URL",
    "MESHCONV_COMMIT",
    "ZENODO_PAGE_URL",
    "ZENODO_RECORD_URL",
    "AssetFile",
    "CheckpointFile",
    "FileStatus",
    "ProgressCallback",
    "RemoteFile",
    "Sources",
    "add_weights_commands",
    "cache_dir",
    "default_sources",
    "download",
    "extract_archive",
    "identify_checkpoint",
    "identify_checkpoint_file",
    "list_zenodo_record",
    "parse_zenodo_files",
    "resolve_assets_dir",
    "resolve_checkpoint_dir",
    "status",
    "verify_checkpoint",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------

#: MeshConvolution commit the assets are pinned to.
MESHCONV_COMMIT = "f4982a842313b38f93a7fc778aeec3bae0eab62f"
MESHCONV_BASE_URL = f"https://raw.githubusercontent.com/papagina/MeshConvolution/{MESHCONV_COMMIT}"
_CONNECTIONS_SOURCE = "train/0223_GraphAE27_compare/connections/dfaust2"

ZENODO_RECORD_ID = "14974141"
#: Public API listing of the Zenodo record holding the MEGA checkpoints.
ZENODO_RECORD_URL = f"https://zenodo.org/api/records/{ZENODO_RECORD_ID}"
#: Human-readable page of the same record (named in error messages).
ZENODO_PAGE_URL = f"https://zenodo.org/records/{ZENODO_RECORD_ID}"

APP_NAME = "mega-blender"
ENV_HOME = "MEGA_HOME"
ENV_ASSETS_DIR = "MEGA_ASSETS_DIR"
ENV_CHECKPOINTS_DIR = "MEGA_CHECKPOINTS_DIR"
ENV_ASSETS_URL = "MEGA_ASSETS_URL"
ENV_ZENODO_URL = "MEGA_ZENODO_URL"

ASSETS_SUBDIR = "assets"
CHECKPOINTS_SUBDIR = "checkpoints"
DOWNLOADS_SUBDIR = "downloads"
MANIFEST_FILE = ".mega-weights.json"
_MANIFEST_FORMAT = "mega-weights-manifest"
_CONFIG_FILE = "config.json"  # loaders.CONFIG_FILE (loaders imports torch, so the name is repeated here)

_CHUNK = 1 << 20
_MAX_JSON_BYTES = 32 << 20
_DEFAULT_TIMEOUT_S = 60.0
_USER_AGENT = f"mega-blender/{__version__} (Python urllib)"
FETCH_COMMAND = "mega-runtime weights fetch"


@dataclass(frozen=True)
class AssetFile:
    """One asset file: where it goes in an assets folder, where it comes from, and what it must be.

    Attributes:
        name: POSIX path inside an assets folder, e.g. ``"connection_matrices/_pool0.npy"``.
        source: path relative to the base URL of its source (:attr:`Sources.assets_base_url`).
        sha256: lower-case hex SHA-256 of the official file.
        size: size of the official file in bytes.
    """

    name: str
    source: str
    sha256: str
    size: int

    def url(self, base_url: str) -> str:
        """The download URL of this file under ``base_url``."""
        return base_url.rstrip("/") + "/" + urllib.parse.quote(self.source)


def _connection(layer: str, sha256: str, size: int) -> AssetFile:
    return AssetFile(f"connection_matrices/_{layer}.npy", f"{_CONNECTIONS_SOURCE}/_{layer}.npy", sha256, size)


#: The template mesh and the 14 connection matrices (``assets.CONNECTION_LAYERS``), pinned by SHA-256.
ASSET_FILES: tuple[AssetFile, ...] = (
    AssetFile(
        "template.ply",
        "data/DFAUST/template.ply",
        "228bccc617920659b95b7e07eee9ee0512f5f9a29943166be6625027dde7cc5d",
        289610,
    ),
    _connection("pool0", "bb8f3661708e461c69839d114f52e02f05afa750416d553f632ea642b3f97c96", 578840),
    _connection("pool1", "7ec0773329c36cf44a02765ee89e2eb110240ab03ce91cdabc84299dacb16631", 500580),
    _connection("pool2", "cc5acd27734625b55d08336fbbdff9411e42ea5e5072c9ced0435953e2f9ee61", 331180),
    _connection("pool3", "09902bd044f0280b1e59571ecde335805a92ba3b248059fdc4d0349159d7b199", 180880),
    _connection("pool4", "f49d4b4d210fd40fc9f9785e4ce10337551dc3f558974df31a89451ddd2e4941", 84880),
    _connection("pool5", "9808015822a2cc2a3f305337d52cbb47604bcdf583f3c844fcf67ba3217d5a52", 28808),
    _connection("pool6", "ea760d5e69979a75f970d58c802b7bf419258cb8c0217b2441b08873b99d66a2", 8504),
    _connection("unpool0", "6776613d4c7b15b7cd42004a833c6d40db8f4f1ef6a0f2e6f3c3424fdf62c7cb", 578840),
    _connection("unpool1", "7ec71372ac0b50de52ac453b1d28705b1f021331c311e7210e5da4070e0228df", 633960),
    _connection("unpool2", "4512312bb7fbffa59c564eaf48514add38ba190b3fddb8877d6019fb849da034", 331180),
    _connection("unpool3", "0f6d9b6f4e4f69512388277ca7ccdbe9f8560751e82ddb33485a22047e7d0a73", 223380),
    _connection("unpool4", "a9917981ccef0f4e39b596162258f7af420dde062b84790550b750452a5a6f7c", 84880),
    _connection("unpool5", "eac67842f2b6d412936c9542720c740f21eee76f976eeeb44cfa25c83f9ad09b", 36880),
    _connection("unpool6", "c258fb901f811f9991517ee8e37c05257eb117292f300a32185a57b30d8cbb8c", 8504),
)


@dataclass(frozen=True)
class CheckpointFile:
    """One official checkpoint file of Zenodo record 14974141.

    Attributes:
        name: model name (a key of ``loaders.CHECKPOINT_FILES``).
        path: official POSIX path inside a checkpoint folder, e.g. ``"CVQMAE/mega_hrnet"``.
        kind: ``"cvqmae"``, ``"vqmae"`` or ``"mesh_vqvae"`` (which loader fills it).
        description: one line for listings.
    """

    name: str
    path: str
    kind: str
    description: str


#: Every official checkpoint, by model name (same names and paths as ``loaders.CHECKPOINT_FILES``).
CHECKPOINTS: dict[str, CheckpointFile] = {
    c.name: c
    for c in (
        CheckpointFile("mega_resnet", "CVQMAE/mega_resnet", "cvqmae", "MEGA, ResNet-50 image backbone"),
        CheckpointFile("mega_hrnet", "CVQMAE/mega_hrnet", "cvqmae", "MEGA, HRNet-W48 image backbone"),
        CheckpointFile("mega_vit", "CVQMAE/mega_vit", "cvqmae", "MEGA, ViT-H image backbone"),
        CheckpointFile("mega_pretrained", "VQMAE/mega_pretrained", "vqmae", "unconditional pre-trained VQ-MAE"),
        CheckpointFile("mesh_vqvae_54", "MESH_VQVAE/mesh_vqvae_54", "mesh_vqvae", "Mesh-VQ-VAE tokenizer (54 tokens)"),
    )
}

#: What inference needs by default (the official demo path): one MEGA model and the mesh tokenizer.
DEFAULT_MODELS: tuple[str, ...] = ("mega_hrnet", "mesh_vqvae_54")


@dataclass(frozen=True)
class Sources:
    """Where files are downloaded from. Tests and mirrors substitute their own.

    Attributes:
        assets_base_url: base URL that :attr:`AssetFile.source` paths are appended to.
        zenodo_record_url: the record's API URL (JSON listing of its files).
        assets: the asset registry (names, sources, hashes).
        timeout: seconds a connection or a single read may stall before the download fails.
    """

    assets_base_url: str = MESHCONV_BASE_URL
    zenodo_record_url: str = ZENODO_RECORD_URL
    assets: tuple[AssetFile, ...] = ASSET_FILES
    timeout: float = _DEFAULT_TIMEOUT_S


def default_sources() -> Sources:
    """The official sources, with base URLs overridable by ``$MEGA_ASSETS_URL`` and ``$MEGA_ZENODO_URL``."""
    return Sources(
        assets_base_url=os.environ.get(ENV_ASSETS_URL) or MESHCONV_BASE_URL,
        zenodo_record_url=os.environ.get(ENV_ZENODO_URL) or ZENODO_RECORD_URL,
    )


#: ``progress(label, bytes_done, bytes_total_or_None)``, called as a download advances.
ProgressCallback = Callable[[str, int, "int | None"], None]

# --------------------------------------------------------------------------------------------------------------
# Cache location
# --------------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Root of the download cache: ``$MEGA_HOME``, else the platform's user cache folder + ``mega-blender``."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_NAME
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(local) / APP_NAME / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / APP_NAME


def cache_assets_dir() -> Path:
    """``<cache>/assets``: where downloaded assets are kept."""
    return cache_dir() / ASSETS_SUBDIR


def cache_checkpoints_dir() -> Path:
    """``<cache>/checkpoints``: where downloaded checkpoints are kept, in the official layout."""
    return cache_dir() / CHECKPOINTS_SUBDIR


def _local_folder(explicit: Path | str | None, env_name: str) -> tuple[Path | None, str]:
    """(folder, how it was named) for a user-given folder, or (None, "download cache")."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser(), "given explicitly"
    value = os.environ.get(env_name)
    if value:
        return Path(value).expanduser(), f"named by ${env_name}"
    return None, "download cache"


def _instead(origin: str, option: str, env_name: str) -> str:
    """How to fall back to the cache for a folder that was named by ``origin``."""
    if origin.startswith("named by"):
        return f"unset {env_name}"
    return f"leave out {option}"


# --------------------------------------------------------------------------------------------------------------
# Hashing and downloading
# --------------------------------------------------------------------------------------------------------------


def file_digests(path: Path | str, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, ``{algorithm: hex}``, computed in one pass."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _expected(sha256: str | None, md5: str | None) -> dict[str, str]:
    return {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5)) if v}


def _present_and_valid(path: Path, sha256: str | None, md5: str | None, size: int | None) -> bool:
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    expected = _expected(sha256, md5)
    if not expected:
        return True
    return file_digests(path, expected) == expected


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = _DEFAULT_TIMEOUT_S,
    label: str | None = None,
    hint: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless a file with the expected hash is already there.

    The body streams into a temporary file in ``dest``'s folder, is checked against the
    Content-Length, ``size``, ``sha256`` and ``md5`` (those given), and is then renamed onto
    ``dest`` with :func:`os.replace`. On any failure the temporary file is removed, nothing is
    left at ``dest``, and a :class:`WeightsError` naming the URL is raised (``hint`` is its fix).
    """
    dest = Path(dest)
    label = label or dest.name
    hint = hint or f"check the network connection and run `{FETCH_COMMAND}` again"
    if _present_and_valid(dest, sha256, md5, size):
        log.debug("%s is already present and verified; not downloading it again", dest)
        return dest
    try:
        if dest.is_file() or dest.is_symlink():
            log.warning("%s does not match its expected size or hash; downloading it again", dest)
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise WeightsError(
            f"cannot write the download of {url} to {dest}: {exc.strerror or exc}",
            hint=f"make the folder writable, or set ${ENV_HOME} to a writable folder for the download cache",
        ) from exc
    tmp = Path(tmp_name)
    expected = _expected(sha256, md5)
    started = time.monotonic()
    log.info("downloading %s -> %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out:
            received, total, digests = _transfer(url, out, expected.keys(), progress, timeout, label, hint)
        if total is not None and received != total:
            raise WeightsError(
                f"the download of {url} was interrupted: received {received} of {total} bytes "
                "(the connection closed early)",
                hint=hint,
            )
        if size is not None and received != size:
            raise WeightsError(f"the download of {url} has {received} bytes, expected {size}", hint=hint)
        for algorithm, want in expected.items():
            if digests[algorithm] != want:
                raise WeightsError(
                    f"the download of {url} is corrupted: its {algorithm} is {digests[algorithm]}, expected {want}",
                    hint=hint,
                )
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise WeightsError(f"cannot move the download of {url} to {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    log.info("downloaded %s (%s in %.1f s)", dest.name, _human_size(received), time.monotonic() - started)
    return dest


def _transfer(
    url: str,
    out: IO[bytes],
    algorithms: Iterable[str],
    progress: ProgressCallback | None,
    timeout: float,
    label: str,
    hint: str,
) -> tuple[int, int | None, dict[str, str]]:
    """Stream ``url`` into ``out``; (bytes received, Content-Length or None, hex digests)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            if progress is not None:
                progress(label, 0, total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(label, received, total)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}", hint=hint) from exc
    except http.client.IncompleteRead as exc:
        raise WeightsError(
            f"the download of {url} was interrupted after {received + len(exc.partial)} bytes "
            "(the connection closed early)",
            hint=hint,
        ) from exc
    except TimeoutError as exc:
        raise WeightsError(f"downloading {url} timed out after {timeout:g} s without data", hint=hint) from exc
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot reach {url}: {exc.reason}", hint=hint) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsError(
            f"downloading {url} failed after {received} bytes: {type(exc).__name__}: {exc}", hint=hint
        ) from exc
    return received, total, {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _fetch_json(url: str, timeout: float, hint: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(_MAX_JSON_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"listing {url} failed: HTTP {exc.code} {exc.reason}", hint=hint) from exc
    except TimeoutError as exc:
        raise WeightsError(f"listing {url} timed out after {timeout:g} s", hint=hint) from exc
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot reach {url}: {exc.reason}", hint=hint) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsError(f"listing {url} failed: {type(exc).__name__}: {exc}", hint=hint) from exc
    if len(body) > _MAX_JSON_BYTES:
        raise WeightsError(f"the listing at {url} is larger than {_MAX_JSON_BYTES} bytes", hint=hint)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"the listing at {url} is not valid JSON: {exc}", hint=hint) from exc


def _human_size(n: int | None) -> str:
    if n is None:
        return "unknown size"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------------------------------
# Assets
# --------------------------------------------------------------------------------------------------------------


def _curl(url: str, path: Path) -> str:
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
        progress: called as each download advances (see :data:`ProgressCallback`).
        sources: where to download from (default :func:`default_sources`).

    Raises:
        WeightsError: a file is missing (naming each one and the command or copy that fixes it),
            or a download failed or did not match its pinned SHA-256.
    """
    sources = sources or default_sources()
    local, origin = _local_folder(explicit, ENV_ASSETS_DIR)
    if local is not None:
        missing = [f for f in sources.assets if not (local / f.name).is_file()]
        if missing:
            fixes = "\n    ".join(_curl(f.url(sources.assets_base_url), local / f.name) for f in missing)
            raise WeightsError(
                f"the assets folder {local} ({origin}) lacks {len(missing)} file(s): "
                + ", ".join(f.name for f in missing),
                hint=f"download them into it:\n    {fixes}\n  or {_instead(origin, '--assets-dir', ENV_ASSETS_DIR)} "
                f"to use the download cache (`{FETCH_COMMAND}`)",
            )
        log.debug("using the assets in %s (%s)", local, origin)
        return local

    folder = cache_assets_dir()
    stale = [f for f in sources.assets if not _present_and_valid(folder / f.name, f.sha256, None, f.size)]
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
        f"({_curl(url, dest)}), or set {ENV_ASSETS_DIR} to a folder holding the official assets"
    )
    download(
        url, dest, sha256=asset.sha256, size=asset.size, progress=progress, timeout=timeout, label=asset.name, hint=hint
    )


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: identification and strict verification
# --------------------------------------------------------------------------------------------------------------


def identify_checkpoint(keys: Iterable[str]) -> str | None:
    """Which official model a state dict belongs to, from its keys alone; None if none fits.

    ``vq_vae._embedding.weight`` → ``mesh_vqvae_54``; with a backbone and the token transformer
    (``encoder.cls_token``): ``backbone.pos_embed`` → ``mega_vit``, ``backbone.conv1.weight`` with
    ``backbone.stage4.*`` → ``mega_hrnet``, ``backbone.0.weight`` → ``mega_resnet``; the transformer
    without a backbone or image condition → ``mega_pretrained``. Keys as read by
    ``checkpoint.read_state_dict`` (a ``module.`` prefix already removed).
    """
    keyset = set(keys)
    if "vq_vae._embedding.weight" in keyset and any(k.startswith("encoder.model.") for k in keyset):
        return "mesh_vqvae_54"
    if "encoder.cls_token" not in keyset or "decoder.head.weight" not in keyset:
        return None
    has_backbone = any(k.startswith("backbone.") for k in keyset)
    if not has_backbone:
        return None if "decoder.cond_emb.weight" in keyset else "mega_pretrained"
    if "backbone.pos_embed" in keyset:
        return "mega_vit"
    if "backbone.conv1.weight" in keyset and any(k.startswith("backbone.stage4.") for k in keyset):
        return "mega_hrnet"
    if "backbone.0.weight" in keyset:
        return "mega_resnet"
    return None


def _could_be_torch_file(path: Path) -> bool:
    """Cheap check before torch.load: a zip (torch >= 1.6) or a pickle stream (older torch.save)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def identify_checkpoint_file(path: Path | str) -> str | None:
    """The official model name a file holds, judged by its structure; None for anything else.

    Reads the file with ``checkpoint.read_state_dict`` (``torch.load(weights_only=True)``).
    """
    path = Path(path)
    if not path.is_file() or not _could_be_torch_file(path):
        return None
    from mega_runtime.checkpoint import read_state_dict

    try:
        state = read_state_dict(path)
    except MegaError as exc:
        log.debug("%s is not a checkpoint: %s", path, exc.message)
        return None
    name = identify_checkpoint(state.keys())
    log.debug("%s: %d tensors, identified as %s", path, len(state), name)
    return name


def verify_checkpoint(
    name: str, path: Path | str, config_folder: Path | str, assets_dir: Path | str | None = None
) -> None:
    """Load ``path`` strictly as model ``name`` (raises ``CheckpointError`` / ``ConfigError`` if it does not fit).

    config_folder: the folder whose ``config.json`` (if any) gives the model's sizes; the official
    presets otherwise. assets_dir: needed for ``mesh_vqvae_54`` (its connection matrices).
    """
    from mega_runtime import loaders

    kind = CHECKPOINTS[name].kind
    if kind == "cvqmae":
        loaders.load_cvqmae(path, loaders.model_config(config_folder, name))
    elif kind == "vqmae":
        loaders.load_vqmae(path, loaders.model_config(config_folder, name))
    else:
        from mega_runtime.assets import load_connection_matrices

        if assets_dir is None:
            raise WeightsError(f"cannot check {path}: the Mesh-VQ-VAE needs the connection matrices")
        loaders.load_mesh_vqvae(path, load_connection_matrices(Path(assets_dir) / "connection_matrices"))


def _check_models(models: Sequence[str] | str) -> list[str]:
    names = [models] if isinstance(models, str) else list(models)
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(map(repr, unknown))}", hint=f"choose among {', '.join(CHECKPOINTS)}"
        )
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: manifest of what the cache holds
# --------------------------------------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring the unreadable cache manifest %s: %s", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return {}
    files = data.get("files")
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def _write_manifest(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": _MANIFEST_FORMAT, "version": 1, "files": files}, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST_FILE}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, folder / MANIFEST_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _cached_ok(folder: Path, name: str, manifest: dict[str, dict[str, Any]]) -> bool:
    """A cached checkpoint counts as present when it exists and its size is the recorded one."""
    path = folder / CHECKPOINTS[name].path
    if not path.is_file():
        return False
    entry = manifest.get(name)
    if entry is not None and entry.get("size") != path.stat().st_size:
        log.warning(
            "%s has %d bytes, the cache recorded %s; it will be fetched again",
            path,
            path.stat().st_size,
            entry.get("size"),
        )
        return False
    return True


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
        links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
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
    return parse_zenodo_files(_fetch_json(sources.zenodo_record_url, sources.timeout, hint), sources.zenodo_record_url)


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_NOT_CHECKPOINT_SUFFIXES = (
    ".md", ".txt", ".rst", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".json", ".yaml", ".yml",
    ".py", ".ipynb", ".html", ".csv", ".obj", ".ply", ".npy", ".npz", ".mp4", ".log",
)  # fmt: skip
_MODEL_SUFFIXES = (*_ARCHIVE_SUFFIXES, ".pth", ".pt", ".ckpt", ".bin", ".pth.tar")


def _guess_model(key: str) -> str | None:
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


def _plan(record: list[RemoteFile], wanted: Iterable[str]) -> list[RemoteFile]:
    """Record files in the order to try: named after a wanted model, then archives, then unknown files."""
    wanted = set(wanted)
    named = [r for r in record if _guess_model(r.key) in wanted]
    unnamed = [r for r in record if _guess_model(r.key) is None]
    archives = [r for r in unnamed if _is_archive_name(r.key)]
    others = [
        r for r in unnamed if not _is_archive_name(r.key) and not r.key.lower().endswith(_NOT_CHECKPOINT_SUFFIXES)
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


def _archive_kind(path: Path) -> str | None:
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
            shutil.copyfileobj(source, out, _CHUNK)
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
    kind = _archive_kind(archive)
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
                    source = tf.extractfile(member)
                    if source is not None and _write_member(source, target, member.name):
                        written.append(target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsError(
            f"cannot unpack {archive}: {type(exc).__name__}: {exc}",
            hint=f"delete it and run `{FETCH_COMMAND}` again",
        ) from exc
    return written


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
        progress: called as each download advances.
        assets_dir: assets folder used to check a downloaded Mesh-VQ-VAE (default: resolved as
            :func:`resolve_assets_dir` does, downloading if needed).
        sources: where to download from (default :func:`default_sources`).

    Raises:
        WeightsError: a checkpoint is missing (naming it and the fix), the record could not be
            listed or downloaded, or it did not provide a file that loads strictly as the model.
        ConfigError: an unknown model name.
    """
    names = _check_models(models)
    sources = sources or default_sources()
    local, origin = _local_folder(explicit, ENV_CHECKPOINTS_DIR)
    if local is not None:
        missing = [n for n in names if not (local / CHECKPOINTS[n].path).is_file()]
        if missing:
            paths = ", ".join(CHECKPOINTS[n].path for n in missing)
            copies = "\n    ".join(f"{CHECKPOINTS[n].path} -> {local / CHECKPOINTS[n].path}" for n in missing)
            raise WeightsError(
                f"the checkpoint folder {local} ({origin}) lacks {paths}",
                hint=f"copy the official file(s) from {ZENODO_PAGE_URL} into it:\n    {copies}\n  or "
                f"{_instead(origin, '--checkpoint-dir', ENV_CHECKPOINTS_DIR)} and run "
                f"`{FETCH_COMMAND} --models {','.join(missing)}` to download them into the cache",
            )
        log.debug("using the checkpoints in %s (%s)", local, origin)
        return local

    folder = cache_checkpoints_dir()
    manifest = _read_manifest(folder)
    missing = [n for n in names if not _cached_ok(folder, n, manifest)]
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
        for remote in _plan(record, remaining):
            if not remaining:
                break
            guess = _guess_model(remote.key)
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
        if _archive_kind(local) is not None:
            return self._take_archive(local, remote)
        model = identify_checkpoint_file(local)
        if model is None:
            self.problems.append(f"{remote.key} is not a MEGA checkpoint")
            return set()
        if _cached_ok(self.folder, model, _read_manifest(self.folder)):
            log.info("%s holds %s, which is already in the cache", remote.key, CHECKPOINTS[model].path)
            return set()
        return {model} if self._install(local, model, remote.url, remote.md5) else set()

    def _take_archive(self, archive: Path, remote: RemoteFile) -> set[str]:
        placed: set[str] = set()
        found: set[str] = set()
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=self.downloads) as tmp:
            root = Path(tmp)
            members = extract_archive(archive, root)
            configs = [p for p in members if p.name == _CONFIG_FILE]
            for config in configs:
                self._merge_config(config)
            for path in sorted(members):
                if path in configs or path.name.lower().endswith(_NOT_CHECKPOINT_SUFFIXES):
                    continue
                model = identify_checkpoint_file(path)
                if model is None or model in found:
                    continue
                found.add(model)
                if _cached_ok(self.folder, model, _read_manifest(self.folder)):
                    log.info("%s is already in the cache; keeping it", CHECKPOINTS[model].path)
                    continue
                member = path.relative_to(root).as_posix()
                if self._install(path, model, f"{remote.url}#{member}", None):
                    placed.add(model)
            if not found:
                self.problems.append(f"{remote.key} holds no MEGA checkpoint")
        return placed

    def _merge_config(self, config: Path) -> None:
        from mega_runtime.loaders import read_folder_config, write_folder_config

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
        manifest = _read_manifest(self.folder)
        manifest[model] = {
            "path": entry.path,
            "size": st.st_size,
            "sha256": digests["sha256"],
            "md5": md5 or digests["md5"],
            "source": source,
        }
        _write_manifest(self.folder, manifest)
        log.info("installed %s (%s) from %s", dest, _human_size(st.st_size), source)
        return True


# --------------------------------------------------------------------------------------------------------------
# Status and verification
# --------------------------------------------------------------------------------------------------------------


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
    names = _check_models(models if models is not None else list(CHECKPOINTS))
    rows = _asset_status(assets_dir, sources)
    assets_ok = all(r.ok for r in rows if r.name.startswith("connection_matrices/"))
    assets_folder = _local_folder(assets_dir, ENV_ASSETS_DIR)[0] or cache_assets_dir()
    rows += _checkpoint_status(checkpoint_dir, names, deep, assets_folder if assets_ok else None)
    return rows


def _asset_status(explicit: Path | str | None, sources: Sources) -> list[FileStatus]:
    local = _local_folder(explicit, ENV_ASSETS_DIR)[0]
    folder = local or cache_assets_dir()
    rows = []
    for asset in sources.assets:
        path = folder / asset.name
        url = asset.url(sources.assets_base_url)
        fix = _curl(url, path) if local is not None else FETCH_COMMAND
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
    local, origin = _local_folder(explicit, ENV_CHECKPOINTS_DIR)
    folder = local or cache_checkpoints_dir()
    manifest = _read_manifest(folder)
    rows = []
    for name in names:
        entry = CHECKPOINTS[name]
        path = folder / entry.path
        recorded = manifest.get(name, {})
        source = str(recorded.get("source") or ZENODO_PAGE_URL)
        if local is None:
            fix = f"{FETCH_COMMAND} --models {name}"
        else:
            instead = _instead(origin, "--checkpoint-dir", ENV_CHECKPOINTS_DIR)
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


# --------------------------------------------------------------------------------------------------------------
# Command line: `mega-runtime weights list|fetch|verify`
# --------------------------------------------------------------------------------------------------------------


class _ProgressBar:
    """A one-line progress bar on a terminal stream; start lines only when the stream is not a terminal."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.label: str | None = None
        self.last_draw = 0.0
        self.open_line = False

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if label != self.label:
            self.close()
            self.label = label
            self.last_draw = 0.0
            if not self.tty:
                print(f"downloading {label} ({_human_size(total)})", file=self.stream, flush=True)
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last_draw < 0.1 and done != total:
            return
        self.last_draw = now
        if total:
            filled = int(self.width * min(done, total) / total)
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"\r{label[:32]:<32} [{bar}] {100 * done / total:5.1f}% {_human_size(done)}/{_human_size(total)}"
        else:
            text = f"\r{label[:32]:<32} {_human_size(done)}"
        self.stream.write(text)
        self.stream.flush()
        self.open_line = True

    def close(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


def _parse_models(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(CHECKPOINTS)
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(CHECKPOINTS)} or 'all'"
        )
    return tuple(dict.fromkeys(names))


def _where(explicit: Path | None, env_name: str, cache: Path) -> str:
    local, origin = _local_folder(explicit, env_name)
    return f"{local} ({origin})" if local is not None else f"{cache} (download cache)"


def _print_rows(rows: list[FileStatus], required: set[str]) -> None:
    width = max((len(r.name) for r in rows), default=0)
    for row in rows:
        if row.ok:
            state = "ok" if row.verified or row.kind == "asset" else "present"
        elif row.present:
            state = "BAD"
        else:
            state = "missing" if row.name in required or row.kind == "asset" else "absent"
        size = _human_size(row.size) if row.size is not None else ""
        optional = "" if row.kind == "asset" or row.name in required else "  (optional)"
        print(f"  {state:<8} {row.name:<{width}}  {size:>9}  {row.path}{optional}")
        if row.problem and row.problem != "missing":
            print(f"           problem: {row.problem}")
        if row.fix:
            print(f"           fix: {row.fix}")


def _cmd_list(args: argparse.Namespace) -> int:
    models = args.models or tuple(CHECKPOINTS)
    rows = status(args.assets_dir, args.checkpoint_dir, models=models)
    required = set(args.models or DEFAULT_MODELS)
    print(f"assets: {_where(args.assets_dir, ENV_ASSETS_DIR, cache_assets_dir())}")
    _print_rows([r for r in rows if r.kind == "asset"], required)
    print(f"checkpoints: {_where(args.checkpoint_dir, ENV_CHECKPOINTS_DIR, cache_checkpoints_dir())}")
    _print_rows([r for r in rows if r.kind == "checkpoint"], required)
    present = sum(r.present for r in rows)
    print(f"{present} of {len(rows)} files present; inference needs the assets and {', '.join(sorted(required))}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    models = args.models or DEFAULT_MODELS
    bar = _ProgressBar(sys.stderr)
    try:
        assets = resolve_assets_dir(args.assets_dir, download=True, progress=bar)
        checkpoints = resolve_checkpoint_dir(
            models, args.checkpoint_dir, download=True, progress=bar, assets_dir=assets
        )
    finally:
        bar.close()
    print(f"assets: {assets}")
    print(f"checkpoints: {checkpoints} ({', '.join(models)})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    rows = status(args.assets_dir, args.checkpoint_dir, models=args.models or tuple(CHECKPOINTS), deep=True)
    required = set(args.models or DEFAULT_MODELS)
    failing = [r for r in rows if not r.ok and (r.present or r.kind == "asset" or r.name in required)]
    print(f"assets: {_where(args.assets_dir, ENV_ASSETS_DIR, cache_assets_dir())}")
    _print_rows([r for r in rows if r.kind == "asset"], required)
    print(f"checkpoints: {_where(args.checkpoint_dir, ENV_CHECKPOINTS_DIR, cache_checkpoints_dir())}")
    _print_rows([r for r in rows if r.kind == "checkpoint"], required)
    checked = sum(r.present for r in rows)
    print(f"{checked} file(s) checked, {len(failing)} problem(s)")
    return 1 if failing else 0


def add_weights_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``weights list|fetch|verify`` on an argparse sub-parser collection; returns the ``weights`` parser.

    Each sub-command sets ``func`` (called with the parsed namespace, returns the exit code).
    """
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify the checkpoints and assets",
        description=f"Manage the files the runtime needs: the MEGA checkpoints (Zenodo record {ZENODO_RECORD_ID}) "
        f"and the template mesh and connection matrices (MeshConvolution @ {MESHCONV_COMMIT[:10]}). Downloads go "
        f"to the cache folder (${ENV_HOME} overrides it); ${ENV_ASSETS_DIR} / ${ENV_CHECKPOINTS_DIR} or the "
        "options below name local folders used instead.",
    )
    commands = parser.add_subparsers(dest="weights_command", required=True)
    specs = (
        ("list", _cmd_list, "show every file: present or missing, where, and the command that fixes it"),
        ("fetch", _cmd_fetch, "download what is missing into the cache (progress on stderr)"),
        ("verify", _cmd_verify, "check hashes and strict-load the checkpoints; exit 1 if anything is wrong"),
    )
    for name, func, text in specs:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--assets-dir",
            type=Path,
            metavar="DIR",
            help=f"folder with template.ply and connection_matrices/ (default: ${ENV_ASSETS_DIR}, else the cache)",
        )
        sub.add_argument(
            "--checkpoint-dir",
            type=Path,
            metavar="DIR",
            help=f"folder in the official layout (CVQMAE/, VQMAE/, MESH_VQVAE/) (default: ${ENV_CHECKPOINTS_DIR}, "
            "else the cache)",
        )
        sub.add_argument(
            "--models",
            type=_parse_models,
            metavar="NAMES",
            help=f"comma-separated models among {', '.join(CHECKPOINTS)}, or 'all' "
            f"(default: {','.join(DEFAULT_MODELS)} for fetch; all for list and verify)",
        )
        sub.set_defaults(func=func)
    return parser
