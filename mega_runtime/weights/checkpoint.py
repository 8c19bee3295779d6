"""Loading the official checkpoint files, strictly and safely.

The official training code saves ``torch.save({"model": state_dict, "optimizer": …,
"epoch": …, "loss": …})`` under extension-less names such as
``CVQMAE/mega_hrnet``. This module reads such a file with
``torch.load(weights_only=True)`` (a file that needs pickled code is refused),
takes its ``model`` entry, maps the keys with :func:`official_to_runtime_keys`
and fills a model strictly: every model tensor filled, every official key used,
every shape equal — otherwise one :class:`CheckpointError` lists what is wrong.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mega_runtime.errors import CheckpointError

log = logging.getLogger(__name__)

#: Entries of an official checkpoint that are not model weights (kept for training, ignored here).
NON_MODEL_ENTRIES = ("optimizer", "scheduler", "epoch", "loss", "pampjpe", "v2v")

_MAX_LISTED = 12


def official_to_runtime_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one key mapping between official files and this runtime's modules.

    Parameter names are identical, so the only change is removing a leading
    ``module.`` (left by ``DistributedDataParallel``). Pure: returns a new dict.
    """
    prefix = "module."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def read_state_dict(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read the model tensors of an official checkpoint file, keys mapped for this runtime.

    Accepts the official ``{"model": state_dict, ...}`` layout or a bare state dict.
    Raises :class:`CheckpointError` for a missing, truncated, unsafe or unrecognised file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist",
            hint="run `mega-runtime weights fetch`, or pass the folder that holds the official checkpoints",
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} needs pickled Python code to load, which this runtime refuses for safety "
            f"(torch.load weights_only=True): {str(exc).splitlines()[0]}",
            hint="re-save it as plain tensors from a trusted environment: "
            "torch.save({'model': model.state_dict()}, path)",
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch file ({type(exc).__name__}: {str(exc).splitlines()[0]})",
            hint="delete it and download it again (`mega-runtime weights fetch`)",
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
        ignored = sorted(k for k in obj if k != "model")
        if ignored:
            log.debug("%s: ignoring non-model entries %s", path, ignored)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise CheckpointError(
            f"checkpoint {path} holds no model weights (expected a dict with a 'model' state dict)",
            hint="check that the file is an official MEGA or Mesh-VQ-VAE checkpoint",
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries are not tensors: {_listing(bad)}")
    return official_to_runtime_keys(state)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def load_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str, assign: bool = False
) -> nn.Module:
    """Copy ``state`` into ``model`` strictly; one :class:`CheckpointError` naming ``source`` otherwise.

    Non-persistent buffers (the sinusoidal table) are not expected in ``state``;
    they are recomputed by the model. ``assign=True`` makes the model take the
    tensors themselves (used with models built on the ``meta`` device).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"mis-shaped keys ({len(mismatched)}): {_listing(mismatched)}")
        raise CheckpointError(
            f"checkpoint {source} does not fit the {type(model).__name__} model: " + "; ".join(parts),
            hint="check that the file matches the chosen model (resnet/hrnet/vit, pretrained, mesh_vqvae) "
            "and its sizes (config.json beside small checkpoints)",
        )
    dtype_clash = [k for k, v in expected.items() if state[k].dtype.is_floating_point != v.dtype.is_floating_point]
    if dtype_clash:
        raise CheckpointError(f"checkpoint {source}: tensors of the wrong kind (int/float): {_listing(dtype_clash)}")
    model.load_state_dict(dict(state), strict=True, assign=assign)
    return model
