"""The registry of every file the runtime needs, its official source, and where the cache keeps it.

Pinned assets (:data:`ASSET_FILES`) and official checkpoints (:data:`CHECKPOINTS`), the overridable
download :class:`Sources`, the cache folders (:func:`cache_dir`) with their environment variables, and the
manifest recording what the checkpoint cache holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mega_runtime import __version__, defaults
from mega_runtime.errors import ConfigError

log = logging.getLogger(__package__)  # one logger for the package: mega_runtime.weights


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
ENV_DETECTOR_URL = "MEGA_DETECTOR_URL"
ENV_YOLOX_DIR = "MEGA_YOLOX_DIR"
ENV_YOLOX_URL = "MEGA_YOLOX_URL"
ENV_OFFLINE = "MEGA_OFFLINE"

#: Google's public bucket of MediaPipe model files (the URLs mediapipe's own build fetches, external_files.bzl).
MEDIAPIPE_ASSETS_URL = "https://storage.googleapis.com/mediapipe-assets"

ASSETS_SUBDIR = "assets"
CHECKPOINTS_SUBDIR = "checkpoints"
DETECTOR_SUBDIR = "detector"
DOWNLOADS_SUBDIR = "downloads"
MANIFEST_FILE = ".mega-weights.json"
_MANIFEST_FORMAT = "mega-weights-manifest"

CHUNK_BYTES = 1 << 20
MAX_JSON_BYTES = 32 << 20
DEFAULT_TIMEOUT_S = 60.0
USER_AGENT = f"mega-blender/{__version__} (Python urllib)"
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


#: The offline person detector's two BlazePose models, for where no mediapipe wheel bundles them (Python 3.13).
#: The same bytes as in mediapipe 0.10.9 – 0.10.21 (``pipeline.detect.blazepose.BLAZEPOSE_MODEL_FILES``); in the
#: bucket they are generations 1678737489600422 and 1661875894245786 (mediapipe's external_files.bzl).
DETECTOR_FILES: tuple[AssetFile, ...] = (
    AssetFile(
        "pose_detection.tflite",
        "pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        2959046,
    ),
    AssetFile(
        "pose_landmark_full.tflite",
        "pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        6440512,
    ),
)


#: opencv/opencv_zoo commit whose Git LFS pointer pins the YOLOX-S model below (the file is unchanged there since
#: 2022-11-13, commit 0b263e42, "Merge pull request #104 from Sidd1609:YoloX").
OPENCV_ZOO_COMMIT = "966be4cb6eefc2a4f586ed0581bf4bbaa2533070"
#: GitHub's Git LFS media host for opencv_zoo at that commit (serves the real file, not the pointer).
OPENCV_ZOO_MEDIA_URL = f"https://media.githubusercontent.com/media/opencv/opencv_zoo/{OPENCV_ZOO_COMMIT}"

#: The downloadable person detector: YOLOX-S (Megvii, Apache-2.0) as published in opencv_zoo
#: (``models/object_detection_yolox``, Apache-2.0): 640×640 BGR input, (1, 8400, 85) raw YOLOX head output.
#: SHA-256 and size are those of the repository's Git LFS pointer at :data:`OPENCV_ZOO_COMMIT`.
YOLOX_FILE = AssetFile(
    "object_detection_yolox_2022nov.onnx",
    "models/object_detection_yolox/object_detection_yolox_2022nov.onnx",
    "c5c2d13e59ae883e6af3b45daea64af4833a4951c92d116ec270d9ddbe998063",
    35858002,
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
        CheckpointFile(name, defaults.CHECKPOINT_FILES[name], kind, description)
        for name, kind, description in (
            ("mega_resnet", "cvqmae", "MEGA, ResNet-50 image backbone"),
            ("mega_hrnet", "cvqmae", "MEGA, HRNet-W48 image backbone"),
            ("mega_vit", "cvqmae", "MEGA, ViT-H image backbone"),
            (defaults.PRETRAINED_MODEL, "vqmae", "unconditional pre-trained VQ-MAE"),
            (defaults.TOKENIZER_MODEL, "mesh_vqvae", "Mesh-VQ-VAE tokenizer (54 tokens)"),
        )
    )
}

#: What inference needs by default (the official demo path): one MEGA model and the mesh tokenizer.
DEFAULT_MODELS: tuple[str, ...] = defaults.DEFAULT_CHECKPOINTS


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
    timeout: float = DEFAULT_TIMEOUT_S


def default_sources() -> Sources:
    """The official sources, with base URLs overridable by ``$MEGA_ASSETS_URL`` and ``$MEGA_ZENODO_URL``."""
    return Sources(
        assets_base_url=os.environ.get(ENV_ASSETS_URL) or MESHCONV_BASE_URL,
        zenodo_record_url=os.environ.get(ENV_ZENODO_URL) or ZENODO_RECORD_URL,
    )


#: ``progress(label, bytes_done, bytes_total_or_None)``, called as a download advances.
ProgressCallback = Callable[[str, int, "int | None"], None]


def check_models(models: Sequence[str] | str) -> list[str]:
    names = [models] if isinstance(models, str) else list(models)
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(map(repr, unknown))}", hint=f"choose among {', '.join(CHECKPOINTS)}"
        )
    return list(dict.fromkeys(names))


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


def cache_detector_dir() -> Path:
    """``<cache>/detector``: where the BlazePose models are kept when they are downloaded."""
    return cache_dir() / DETECTOR_SUBDIR


def detector_base_url() -> str:
    """Base URL of the detector models: ``$MEGA_DETECTOR_URL`` (a mirror), else Google's MediaPipe bucket."""
    return os.environ.get(ENV_DETECTOR_URL) or MEDIAPIPE_ASSETS_URL


def yolox_url(entry: AssetFile = YOLOX_FILE) -> str:
    """Download URL of the YOLOX model: ``$MEGA_YOLOX_URL`` (a mirror's full URL), else GitHub's LFS media host."""
    return os.environ.get(ENV_YOLOX_URL) or entry.url(OPENCV_ZOO_MEDIA_URL)


def offline() -> bool:
    """True when ``$MEGA_OFFLINE`` is set to something other than ``""``, ``0``, ``false``, ``no`` or ``off``.

    Offline, nothing is downloaded implicitly (the ``auto`` detector keeps to what is already on disk); an
    explicit ``mega-runtime weights fetch`` still downloads.
    """
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no", "off")


def cache_checkpoints_dir() -> Path:
    """``<cache>/checkpoints``: where downloaded checkpoints are kept, in the official layout."""
    return cache_dir() / CHECKPOINTS_SUBDIR


def local_folder(explicit: Path | str | None, env_name: str) -> tuple[Path | None, str]:
    """(folder, how it was named) for a user-given folder, or (None, "download cache")."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser(), "given explicitly"
    value = os.environ.get(env_name)
    if value:
        return Path(value).expanduser(), f"named by ${env_name}"
    return None, "download cache"


def instead_hint(origin: str, option: str, env_name: str) -> str:
    """How to fall back to the cache for a folder that was named by ``origin``."""
    if origin.startswith("named by"):
        return f"unset {env_name}"
    return f"leave out {option}"


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: manifest of what the cache holds
# --------------------------------------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
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


def write_manifest(folder: Path, files: dict[str, dict[str, Any]]) -> None:
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


def cached_ok(folder: Path, name: str, manifest: dict[str, dict[str, Any]]) -> bool:
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
