"""Recognising a checkpoint by its structure (the keys of its state dict) and loading it strictly.

torch is imported only inside the functions that read or load a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from mega_runtime.errors import ConfigError, MegaError, WeightsError
from mega_runtime.weights.registry import CHECKPOINTS

log = logging.getLogger(__package__)  # one logger for the package: mega_runtime.weights


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
    from mega_runtime.weights.checkpoint import read_state_dict

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
    from mega_runtime.models.config import CVQMAEConfig, VQMAEConfig
    from mega_runtime.weights import loaders

    kind = CHECKPOINTS[name].kind
    if kind in ("cvqmae", "vqmae"):
        config = loaders.model_config(config_folder, name)
        if kind == "cvqmae" and isinstance(config, CVQMAEConfig):
            loaders.load_cvqmae(path, config)
        elif kind == "vqmae" and isinstance(config, VQMAEConfig):
            loaders.load_vqmae(path, config)
        else:
            raise ConfigError(
                f"{config_folder}: config.json describes {name} (a {kind} model) as a {type(config).__name__}"
            )
    else:
        from mega_runtime.models.assets import load_connection_matrices

        if assets_dir is None:
            raise WeightsError(f"cannot check {path}: the Mesh-VQ-VAE needs the connection matrices")
        loaders.load_mesh_vqvae(path, load_connection_matrices(Path(assets_dir) / "connection_matrices"))
