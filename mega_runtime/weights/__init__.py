"""Registry, cache, downloads and verification of every file the runtime needs.

This package is the only part of the runtime that touches the network or the download cache. Its modules:

* :mod:`~mega_runtime.weights.registry` — the files, their official sources, the cache folders, the manifest;
* :mod:`~mega_runtime.weights.downloads` — hashing and HTTP downloads (checked, then atomically renamed);
* :mod:`~mega_runtime.weights.identify` — recognising a checkpoint by its structure, strict verification;
* :mod:`~mega_runtime.weights.zenodo` — the Zenodo record's listing and safe archive extraction;
* :mod:`~mega_runtime.weights.resolve` — :func:`resolve_assets_dir`, :func:`resolve_checkpoint_dir`;
* :mod:`~mega_runtime.weights.state` — :func:`status` (what is present and intact);

Files and their official public sources:

* ``template.ply`` and the 14 graph connection matrices ``connection_matrices/_pool{0..6}.npy`` /
  ``_unpool{0..6}.npy`` from github.com/papagina/MeshConvolution at a pinned commit, each pinned by
  SHA-256 and size (:data:`ASSET_FILES`).
* The offline person detector's BlazePose models ``pose_detection.tflite`` and ``pose_landmark_full.tflite``
  from Google's MediaPipe bucket, pinned by SHA-256 and size (:data:`DETECTOR_FILES`), only where no mediapipe
  wheel bundles them: :func:`fetch_detector_models` (``mega-runtime weights fetch --detector``) puts them in
  ``<cache>/detector``.
* The default person detector's YOLOX-S model ``object_detection_yolox_2022nov.onnx`` from opencv_zoo's Git LFS
  at a pinned commit, pinned by SHA-256 and size (``registry.YOLOX_FILE``): :func:`resolve_yolox_model` finds it
  in ``$MEGA_YOLOX_DIR`` or ``<cache>/detector`` or downloads it there (not implicitly when ``$MEGA_OFFLINE``
  is set; ``mega-runtime weights fetch --yolox``).
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

from mega_runtime.weights.downloads import download
from mega_runtime.weights.downloads import file_digests as file_digests
from mega_runtime.weights.identify import identify_checkpoint, identify_checkpoint_file, verify_checkpoint
from mega_runtime.weights.registry import APP_NAME as APP_NAME
from mega_runtime.weights.registry import (
    ASSET_FILES,
    CHECKPOINTS,
    DEFAULT_MODELS,
    MESHCONV_BASE_URL,
    MESHCONV_COMMIT,
    ZENODO_PAGE_URL,
    ZENODO_RECORD_URL,
    AssetFile,
    CheckpointFile,
    ProgressCallback,
    Sources,
    cache_dir,
    default_sources,
)
from mega_runtime.weights.registry import ASSETS_SUBDIR as ASSETS_SUBDIR
from mega_runtime.weights.registry import CHECKPOINTS_SUBDIR as CHECKPOINTS_SUBDIR
from mega_runtime.weights.registry import DETECTOR_FILES as DETECTOR_FILES
from mega_runtime.weights.registry import DOWNLOADS_SUBDIR as DOWNLOADS_SUBDIR
from mega_runtime.weights.registry import ENV_ASSETS_DIR as ENV_ASSETS_DIR
from mega_runtime.weights.registry import ENV_ASSETS_URL as ENV_ASSETS_URL
from mega_runtime.weights.registry import ENV_CHECKPOINTS_DIR as ENV_CHECKPOINTS_DIR
from mega_runtime.weights.registry import ENV_HOME as ENV_HOME
from mega_runtime.weights.registry import ENV_ZENODO_URL as ENV_ZENODO_URL
from mega_runtime.weights.registry import FETCH_COMMAND as FETCH_COMMAND
from mega_runtime.weights.registry import MANIFEST_FILE as MANIFEST_FILE
from mega_runtime.weights.registry import ZENODO_RECORD_ID as ZENODO_RECORD_ID
from mega_runtime.weights.registry import cache_assets_dir as cache_assets_dir
from mega_runtime.weights.registry import cache_checkpoints_dir as cache_checkpoints_dir
from mega_runtime.weights.registry import cache_detector_dir as cache_detector_dir
from mega_runtime.weights.resolve import (
    fetch_detector_models,
    resolve_assets_dir,
    resolve_checkpoint_dir,
    resolve_yolox_model,
)
from mega_runtime.weights.state import FileStatus, status
from mega_runtime.weights.zenodo import RemoteFile, extract_archive, list_zenodo_record, parse_zenodo_files

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
    "cache_dir",
    "default_sources",
    "download",
    "extract_archive",
    "fetch_detector_models",
    "identify_checkpoint",
    "identify_checkpoint_file",
    "list_zenodo_record",
    "parse_zenodo_files",
    "resolve_assets_dir",
    "resolve_checkpoint_dir",
    "resolve_yolox_model",
    "status",
    "verify_checkpoint",
]

# The imports written `name as name` above re-export the other names the former weights.py module offered
# (mega_runtime.weights.cache_checkpoints_dir, …) without adding them to __all__.
