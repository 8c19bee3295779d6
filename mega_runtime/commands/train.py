"""``mega-runtime train tokenizer|pretrain|finetune``: one training stage end to end (docs/training.md).

Torch-free at import; the settings (stage defaults, ``--config`` file, options) are checked before torch loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

STAGE_HELP = "tokenizer (Mesh-VQ-VAE), pretrain (VQMAE on tokens), finetune (CVQMAE on images)"


def _cmd_train(args: argparse.Namespace) -> int:
    from mega_runtime.train.settings import make_settings, read_config_file

    file_values = read_config_file(args.config) if args.config else {}
    overrides = {
        "out": args.out,
        "data": args.data,
        "synthetic": args.synthetic,
        "smpl_model": args.smpl_model,
        "assets_dir": args.assets_dir,
        "tokenizer": args.tokenizer,
        "init": args.init,
        "resume": args.resume,
        "regressor_h36m": args.regressor_h36m,
        "regressor_smpl": args.regressor_smpl,
        "batch_size": args.batch_size,
        "accumulate": args.accumulate,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "lr": args.lr,
        "mode": args.mode,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
        "precision": args.precision,
        "accelerator": args.accelerator,
        "devices": args.devices,
    }
    settings = make_settings(args.stage, file_values, overrides)
    from mega_runtime.train.distributed import launch

    summary = launch(settings)
    if summary:
        losses = summary.get("losses", {})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in losses.items()) if isinstance(losses, dict) else ""
        print(
            f"{settings.stage}: {summary['steps']} steps, {summary['epochs']} epochs, {summary['seconds']} s  {shown}"
        )
        print(settings.out)
    return 0


def add_train_command(sub: Any) -> None:
    """Register ``train`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "train",
        help="train a stage: tokenizer, pretrain or finetune (official recipe; --synthetic needs no data)",
        description="Train one MEGA stage with the official hyper-parameters (overridable by --config FILE, a "
        "TOML or YAML file, and the options below), writing official-format checkpoints that infer loads. "
        "docs/training.md describes each stage.",
    )
    p.add_argument("stage", choices=("tokenizer", "pretrain", "finetune"), help=STAGE_HELP)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (checkpoints, log.csv)")
    p.add_argument("--config", type=Path, metavar="FILE", help="settings file (.toml, or .yaml with PyYAML)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, metavar="PATH", help="dataset folder/.npz/.txt (docs/training-data.md)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic items instead of a dataset")
    p.add_argument("--smpl-model", type=Path, metavar="PATH", help="your SMPL model file (real data)")
    p.add_argument("--assets-dir", type=Path, metavar="DIR", help="template.ply and connection_matrices/")
    p.add_argument("--tokenizer", type=Path, metavar="DIR", help="checkpoint folder of a trained Mesh-VQ-VAE")
    p.add_argument("--init", type=Path, metavar="DIR", help="finetune: start from this pretrain run's VQMAE")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint folder of a run")
    p.add_argument("--regressor-h36m", type=Path, metavar="NPY", help="finetune: (17, 6890) J_regressor_h36m")
    p.add_argument("--regressor-smpl", type=Path, metavar="NPY", help="finetune: (24, 6890) SMPL joint regressor")
    p.add_argument("--batch-size", type=int, metavar="B", help="rows per micro-batch per process")
    p.add_argument("--accumulate", type=int, metavar="K", help="micro-batches per optimiser step (default 1)")
    p.add_argument("--epochs", type=int, metavar="E", help="epochs to run (default: the stage's schedule)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps")
    p.add_argument("--lr", type=float, metavar="LR", help="base learning rate (per 256 rows for the transformers)")
    p.add_argument("--mode", choices=("official", "default"), help="official quirks or fixed bugs (default official)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of weights, data order and masking (default 0)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="also checkpoint every N optimiser steps")
    p.add_argument("--log-every", type=int, metavar="N", help="log.csv row and progress line every N steps")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast precision (default fp32)")
    p.add_argument("--accelerator", choices=("cpu", "gpu"), help="cpu (gloo) or gpu (NCCL), default cpu")
    p.add_argument("--devices", type=int, metavar="N", help="processes on this machine (default 1)")
    p.set_defaults(func=_cmd_train)
