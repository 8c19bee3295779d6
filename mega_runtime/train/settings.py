"""Settings of one training run (``mega-runtime train``): stage defaults from the official configs, a TOML (or
YAML) file, then command-line overrides, as one frozen :class:`TrainSettings`.

Torch-free, so the CLI can check a configuration before importing torch. The file holds the same keys as
:class:`TrainSettings` (``batch_size``, ``lr``, ``epochs``, …) at top level, and the model sizes in a ``[model]``
table: ``[model.transformer]`` (``emb_dim``, ``encoder_layer``, …, as ``TransformerConfig``),
``[model.backbone]`` (``type``) and ``[model.backbone.vit]`` (as ``ViTConfig``). docs/training.md lists them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mega_runtime.errors import TrainingError

Stage = Literal["tokenizer", "pretrain", "finetune"]
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
ACCELERATORS = ("cpu", "gpu")

#: Official hyper-parameters per stage (Mesh-VQ-VAE ``config_medium.yaml``, ``config_vqmae/config.yaml``,
#: ``config_hrnet.yaml``); ``epochs`` is how long the loop runs, ``total_epoch`` the LR schedule's length.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tokenizer": {"batch_size": 16, "lr": 5e-5, "epochs": 500, "total_epoch": 500, "warmup_epoch": 0},
    "pretrain": {"batch_size": 16, "lr": 1e-3, "epochs": 500, "total_epoch": 500, "warmup_epoch": 20},
    "finetune": {"batch_size": 16, "lr": 1e-3, "epochs": 200, "total_epoch": 200, "warmup_epoch": 20},
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything one run needs. Paths are the user's; nothing existing is overwritten.

    * ``out``: run folder: the final checkpoint in the official layout (+ ``config.json``), ``checkpoints/
      step-NNNNNN/`` every ``checkpoint_every`` optimiser steps, ``log.csv``, ``settings.json``.
    * ``batch_size``: rows per micro-batch per process; one optimiser step sees ``batch_size · accumulate ·
      devices`` rows (the batch the LR is scaled with, ``lr · batch / 256``).
    * ``epochs``: epochs to run; ``max_steps``: stop after this many optimiser steps (0: no limit).
    * ``tokenizer``: a checkpoint folder holding ``MESH_VQVAE/mesh_vqvae_54`` (pretrain: tokenises the meshes;
      finetune: required, frozen, copied into ``out`` so ``infer --checkpoint-dir out`` runs).
    * ``init``: finetune only, a pretrain run folder whose ``VQMAE/mega_pretrained`` initialises the transformer.
    * ``model``: the ``[model]`` table (sizes; official full sizes when empty).
    """

    stage: Stage
    out: Path
    data: Path | None = None
    synthetic: int | None = None
    smpl_model: Path | None = None
    assets_dir: Path | None = None
    tokenizer: Path | None = None
    init: Path | None = None
    resume: Path | None = None
    regressor_h36m: Path | None = None
    regressor_smpl: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    accumulate: int = 1
    epochs: int = 500
    max_steps: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epoch: int = 20
    total_epoch: int = 500
    mode: str = "official"
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 1
    precision: str = "fp32"
    accelerator: str = "cpu"
    devices: int = 1

    def __post_init__(self) -> None:
        if self.stage not in STAGE_DEFAULTS:
            raise TrainingError(f"unknown training stage {self.stage!r}", hint="use tokenizer, pretrain or finetune")
        if self.precision not in TRAINING_PRECISIONS:
            choices = ", ".join(TRAINING_PRECISIONS)
            raise TrainingError(f"unknown precision {self.precision!r}", hint=f"use one of {choices}")
        if self.accelerator not in ACCELERATORS:
            raise TrainingError(f"unknown accelerator {self.accelerator!r}", hint="use cpu or gpu")
        small = {
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
            "devices": self.devices,
            "epochs": self.epochs,
            "log_every": self.log_every,
        }
        limits = (("max_steps", self.max_steps), ("checkpoint_every", self.checkpoint_every))
        bad = [f"{k} {v}" for k, v in small.items() if v < 1] + [f"{k} {v}" for k, v in limits if v < 0]
        if bad:
            raise TrainingError(
                f"bad run settings: {', '.join(bad)}",
                hint="batch_size, accumulate, devices, epochs, log_every >= 1; max_steps, checkpoint_every >= 0",
            )
        if self.init is not None and self.stage != "finetune":
            raise TrainingError("--init only applies to finetune", hint="drop --init for this stage")

    @property
    def global_batch(self) -> int:
        """Rows per optimiser step over all processes and micro-batches."""
        return self.batch_size * self.accumulate * self.devices


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The table of a ``.toml`` file (``tomllib``), or of a ``.yaml``/``.yml`` file when PyYAML is installed."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"config file {path} does not exist", hint="check the --config path")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise TrainingError(
                f"{path} is YAML but PyYAML is not installed", hint="write the config as TOML, or pip install pyyaml"
            ) from None
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TrainingError(f"{path} is not valid TOML: {exc}", hint="see docs/training.md for an example") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{path} holds a {type(data).__name__}, not a table of settings")
    return data


PATH_KEYS = (
    "out",
    "data",
    "smpl_model",
    "assets_dir",
    "tokenizer",
    "init",
    "resume",
    "regressor_h36m",
    "regressor_smpl",
)


def make_settings(stage: str, file_values: dict[str, Any], overrides: dict[str, Any]) -> TrainSettings:
    """Stage defaults, then the config file's values, then the non-None ``overrides`` (command-line options)."""
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise TrainingError(
            f"unknown training setting(s) {', '.join(unknown)}", hint="see docs/training.md for the accepted keys"
        )
    if "stage" in file_values and file_values["stage"] != stage:
        raise TrainingError(f"the config file is for stage {file_values['stage']!r}, not {stage!r}")
    values: dict[str, Any] = {**STAGE_DEFAULTS.get(stage, {}), **file_values}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in PATH_KEYS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    if values.get("out") is None:
        raise TrainingError("no output folder", hint="pass --out DIR")
    values["stage"] = stage
    return TrainSettings(**values)
