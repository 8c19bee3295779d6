"""Saving trained models as official-format checkpoint files that the runtime's strict loader reads.

A file is what the official trainers write: ``torch.save({"model": state_dict, "optimizer": …, "scheduler": …,
"epoch": …, "loss": …})`` at the official relative path (``CVQMAE/mega_resnet``, ``VQMAE/mega_pretrained``,
``MESH_VQVAE/mesh_vqvae_54``) inside a checkpoint folder; the model sizes go into the folder's ``config.json``
(the format ``weights.loaders`` reads), so non-official sizes load too. Files are written atomically and an
existing file is only replaced when asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mega_runtime.errors import TrainingError
from mega_runtime.weights.loaders import CHECKPOINT_FILES, read_folder_config, write_folder_config


def save_checkpoint(
    folder: Path | str,
    name: str,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int | None = None,
    loss: float = 0.0,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as checkpoint ``name`` (a key of ``CHECKPOINT_FILES``) under ``folder``; return its path.

    The model's sizes (``model.config.to_dict()`` when it has one) are merged into ``folder/config.json``.
    Raises :class:`TrainingError` for an unknown name, or when the file exists and ``overwrite`` is False.
    """
    if name not in CHECKPOINT_FILES:
        raise TrainingError(f"unknown checkpoint name {name!r}", hint=f"use one of {', '.join(CHECKPOINT_FILES)}")
    folder = Path(folder)
    path = folder / CHECKPOINT_FILES[name]
    if path.exists() and not overwrite:
        raise TrainingError(f"{path} already exists", hint="choose another folder, or ask to overwrite it")
    payload: dict[str, Any] = {"model": model.state_dict(), "loss": float(loss)}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if epoch is not None:
        payload["epoch"] = int(epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    if callable(to_dict):
        write_folder_config(folder, {**read_folder_config(folder), name: to_dict()})
    return path
