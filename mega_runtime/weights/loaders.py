"""Build models and fill them from official checkpoint files.

One function per checkpoint kind. Each reads the file with
:func:`~mega_runtime.weights.checkpoint.read_state_dict`, sizes the model from its
configuration (the ViT position-embedding length comes from the file itself),
and fills it strictly. Large models are built on PyTorch's ``meta`` device and
take the file's tensors directly, so no time or memory is spent on a random
initialisation that would be overwritten.

An official checkpoint folder looks like::

    CVQMAE/mega_resnet   CVQMAE/mega_hrnet   CVQMAE/mega_vit
    VQMAE/mega_pretrained
    MESH_VQVAE/mesh_vqvae_54
    config.json          (optional: sizes of non-standard models, see docs/checkpoints.md)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mega_runtime import defaults
from mega_runtime.constants import CHECKPOINT_CONFIG_FILE
from mega_runtime.errors import CheckpointError, ConfigError
from mega_runtime.models.config import PRESETS, CVQMAEConfig, VQMAEConfig, config_from_dict, with_vit_positions
from mega_runtime.weights.checkpoint import load_into, read_state_dict

log = logging.getLogger(__name__)

#: Official relative paths inside a checkpoint folder, by model name.
CHECKPOINT_FILES: dict[str, str] = defaults.CHECKPOINT_FILES
CONFIG_FORMAT = "mega-runtime-checkpoints"


def read_folder_config(folder: Path | str) -> dict[str, dict[str, Any]]:
    """The per-model configurations in ``folder/config.json`` ({} when there is none)."""
    path = Path(folder) / CHECKPOINT_CONFIG_FILE
    if not path.is_file():
        return {}
    hint = "rewrite it with mega-runtime verify --write-checkpoints, or remove it to use the official sizes"
    if path.stat().st_size > defaults.MAX_CONFIG_JSON_BYTES:
        raise ConfigError(f"{path} is larger than the limit of {defaults.MAX_CONFIG_JSON_BYTES:,} bytes", hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a checkpoint configuration", hint=hint) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}", hint=hint) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not an object", hint=hint)
    if data.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"{path} is not a {CONFIG_FORMAT} file (format {data.get('format')!r})", hint=hint)
    models = data.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise ConfigError(f"{path}: 'models' must map model names to objects", hint=hint)
    return dict(models)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed: numbers must be finite")


def write_folder_config(folder: Path | str, models: dict[str, dict[str, Any]]) -> Path:
    """Write ``folder/config.json`` describing the sizes of the models in that folder."""
    path = Path(folder) / CHECKPOINT_CONFIG_FILE
    path.write_text(json.dumps({"format": CONFIG_FORMAT, "version": 1, "models": models}, indent=2) + "\n")
    return path


def model_config(folder: Path | str, name: str) -> CVQMAEConfig | VQMAEConfig:
    """The configuration of model ``name`` in ``folder``: config.json if it names it, else the official preset."""
    described = read_folder_config(folder).get(name)
    if described is not None:
        try:
            return config_from_dict(described)
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"{Path(folder) / CHECKPOINT_CONFIG_FILE}: the sizes of {name} are malformed ({exc})",
                hint="rewrite it with mega-runtime verify --write-checkpoints, or remove it to use the official sizes",
            ) from exc
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _build_filled(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    with torch.device("meta"):
        model = factory()
    load_into(model, state, source, assign=True)
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if reset is not None:
            reset()
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"checkpoint {source}: tensors left unfilled after loading: {leftover[:5]}")
    return model.eval()


def load_cvqmae(path: Path | str, config: CVQMAEConfig, device: torch.device | str = "cpu"):
    """Load an official ``CVQMAE/mega_*`` file into a :class:`CVQMAE` in eval mode on ``device``."""
    from mega_runtime.models.masked_transformer import CVQMAE

    path = Path(path)
    state = read_state_dict(path)
    if config.backbone.type == "vit":
        pos = state.get("backbone.pos_embed")
        if pos is None or pos.dim() != 3:
            raise CheckpointError(f"checkpoint {path} has no 3-D backbone.pos_embed, so it is not a ViT MEGA model")
        config = with_vit_positions(config, pos.shape[1])
    return _build_filled(lambda: CVQMAE(config), state, path).to(device)


def load_vqmae(path: Path | str, config: VQMAEConfig, device: torch.device | str = "cpu"):
    """Load the official ``VQMAE/mega_pretrained`` file into a :class:`VQMAE` in eval mode."""
    from mega_runtime.models.masked_transformer import VQMAE

    path = Path(path)
    return _build_filled(lambda: VQMAE(config), read_state_dict(path), path).to(device)


def load_mesh_vqvae(path: Path | str, connections: dict, device: torch.device | str = "cpu"):
    """Load the official ``MESH_VQVAE/mesh_vqvae_54`` file into a :class:`MeshVQVAE` in eval mode.

    connections: the 14 connection matrices (:func:`mega_runtime.models.assets.load_connection_matrices`).
    """
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

    path = Path(path)
    model = MeshVQVAE(MeshVQVAEConfig(), connections)
    load_into(model, read_state_dict(path), path)
    return model.eval().to(device)
