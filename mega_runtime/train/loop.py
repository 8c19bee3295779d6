"""The training loop shared by the three stages (``mega-runtime train tokenizer|pretrain|finetune``).

One optimiser step sees ``G = batch_size · accumulate · devices`` rows: the data source yields batches of G
rows in the same order whatever the process count; process ``r`` takes its ``batch_size · accumulate`` rows and
runs them as ``accumulate`` micro-batches. The random decisions of a step (masking, and CVQMAE's dropout keep
masks) are drawn once for all G rows from the trainer's generator (seeded alike in every process) and each
micro-batch gets its rows' share. The trainers' optimiser is wrapped (:class:`StepGate`) so gradients add up
over the micro-batches, are summed over the processes and divided by ``accumulate · devices`` before the one
real update: K micro-batches of B rows, or N processes of B rows, equal one batch of K·B or N·B rows within
float tolerance wherever every loss is a mean with the same denominator per row (pretrain always; not the
Mesh-VQ-VAE's codebook EMA nor CVQMAE's BatchNorm statistics, which see each micro-batch: docs/training.md).

The LR schedule steps once per epoch, as officially. Checkpoints are official-format files plus
``config.json`` (:mod:`mega_runtime.train.checkpoint`) and a ``trainer_state.pt`` that makes ``--resume``
bit-identical: step counter, epoch, position in the epoch, the data order's ``numpy`` generator state at the
start of the epoch, the trainer's torch generator and the global torch RNG.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mega_runtime import defaults
from mega_runtime.errors import TrainingError
from mega_runtime.train.batch import ImageBatch, MeshBatch, TokenBatch
from mega_runtime.train.checkpoint import save_checkpoint
from mega_runtime.train.settings import TrainSettings

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
"""Resume state beside the official checkpoint files of a checkpoint folder."""
LOG_FILE = "log.csv"
SETTINGS_FILE = "settings.json"
CHECKPOINTS_DIR = "checkpoints"
VIT_BAND = 32
"""Columns the CVQMAE step cuts from each side of a ViT crop (official 256×256 → 256×192)."""
INIT_STD = 0.02
"""Std of the truncated normal for the transformers' cls/mask tokens and position embeddings (MAE convention)."""

CHECKPOINT_NAME = {"tokenizer": defaults.TOKENIZER_MODEL, "pretrain": defaults.PRETRAINED_MODEL}


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports: optimiser ``steps`` taken in total (resumed ones included), ``epochs``
    finished, the last logged ``losses``, the final checkpoint folder ``out`` and seconds of wall time."""

    steps: int
    epochs: int
    losses: dict[str, float]
    out: Path
    seconds: float


@dataclass(frozen=True)
class Distributed:
    """This process's place in a multi-process run (``world`` 1: no torch.distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1


class StepGate:
    """Stands in for a trainer's optimiser so one update spans micro-batches and processes.

    ``zero_grad`` only clears on the first micro-batch of a step; ``step`` only updates on the last, after
    summing the gradients over the processes (``all_reduce``) and dividing them by ``accumulate · world``
    (each micro-batch's loss is its own mean). With a ``scaler`` (fp16), the update goes through it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, divide: int, dist: Distributed, scaler: Any = None) -> None:
        self.optimizer = optimizer
        self.divide = divide
        self.dist = dist
        self.scaler = scaler
        self.first = True
        self.last = True

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.first:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if not self.last:
            return
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.dist.active:
            for g in grads:
                torch.distributed.all_reduce(g)
        if self.divide > 1:
            for g in grads:
                g.div_(self.divide)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()


def rows_of(batch: Any, rows: slice) -> Any:
    """The same kind of batch holding only ``rows`` (every tensor field sliced on its first axis)."""
    values = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        values[f.name] = value[rows] if isinstance(value, torch.Tensor) else value
    return type(batch)(**values)


def _device(settings: TrainSettings, dist: Distributed) -> torch.device:
    if settings.accelerator == "gpu":
        if not torch.cuda.is_available():
            raise TrainingError("--accelerator gpu but CUDA is not available", hint="use --accelerator cpu")
        local = int(os.environ.get("LOCAL_RANK", dist.rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _assets(settings: TrainSettings) -> Path:
    from mega_runtime.weights.resolve import resolve_assets_dir

    return Path(resolve_assets_dir(settings.assets_dir, download=False))


def init_mesh_vqvae(model: torch.nn.Module, generator: torch.Generator) -> None:
    """This runtime's from-scratch initialisation of a Mesh-VQ-VAE (the modules are built zero-filled for
    loading): basis kernels ``W_k`` ~ N(0, 1/in_channels), per-point mixing weights ~ N(0, 1/K), residual
    pooling weights uniform ``1/max_neighbours``, biases 0, codebook ~ N(0, 1) with ``_ema_w`` equal to it and
    cluster sizes 1 (so the EMA starts from the codebook)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("w_weights"):
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
            elif leaf.startswith("weights"):
                # (K, out·in): the layer's in_channels is out·in / out, out = the matching bias's length.
                bias = dict(model.named_parameters())[name.replace("weights", "bias")]
                fan_in = p.shape[1] // bias.shape[0]
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
            elif leaf.startswith("p_neighbors"):
                p.fill_(1.0 / p.shape[-1])
        vq: Any = model.vq_vae
        codebook = torch.randn(vq._embedding.weight.shape, generator=generator)
        vq._embedding.weight.copy_(codebook)
        vq._ema_w.copy_(codebook)
        vq._ema_cluster_size.fill_(1.0)


def init_transformer(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Truncated-normal (std 0.02) cls/mask tokens and position embeddings, zero-filled at construction; the
    ``nn`` layers keep PyTorch's default initialisation (drawn from the seeded global RNG)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("cls_token", "mask_token", "pos_embedding") and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=generator).clamp_(-2, 2) * INIT_STD)


def _load_tokenizer(folder: Path, assets: Path, device: torch.device) -> torch.nn.Module:
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_mesh_vqvae

    path = folder / CHECKPOINT_FILES[defaults.TOKENIZER_MODEL]
    if not path.is_file():
        raise TrainingError(
            f"no tokenizer checkpoint {path}", hint="pass --tokenizer the --out folder of a tokenizer run"
        )
    return load_mesh_vqvae(path, load_connection_matrices(assets / "connection_matrices"), device)


def tokenize_with(tokenizer: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """(B, 6890, 3) canonical meshes → (B, 54) int64 tokens with the frozen tokenizer."""
    device = next(tokenizer.parameters()).device

    def tokenize(meshes: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return tokenizer.encode(torch.as_tensor(meshes, dtype=torch.float32, device=device)).cpu().numpy()  # type: ignore[operator]

    return tokenize


def _transformer_config(settings: TrainSettings) -> Any:
    from mega_runtime.models.config import TransformerConfig

    return TransformerConfig(**settings.model.get("transformer", {}))


def _cvqmae_config(settings: TrainSettings) -> Any:
    from mega_runtime.models.config import BackboneConfig, CVQMAEConfig, ViTConfig

    backbone = dict(settings.model.get("backbone", {"type": "hrnet"}))
    vit = ViTConfig(**backbone.pop("vit", {}))
    return CVQMAEConfig(BackboneConfig(vit=vit, **backbone), _transformer_config(settings))


def _load_init(model: torch.nn.Module, folder: Path) -> None:
    """Copy the pre-trained VQMAE's tensors into ``model`` wherever a key and shape match (encoder, decoder)."""
    from mega_runtime.weights.checkpoint import read_state_dict
    from mega_runtime.weights.loaders import CHECKPOINT_FILES

    path = folder / CHECKPOINT_FILES[defaults.PRETRAINED_MODEL]
    if not path.is_file():
        raise TrainingError(f"no pre-trained checkpoint {path}", hint="pass --init the --out folder of a pretrain run")
    source = read_state_dict(path)
    own = model.state_dict()
    taken = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not taken:
        raise TrainingError(f"{path} shares no tensor with the fine-tuned model", hint="use the same model sizes")
    model.load_state_dict(taken, strict=False)
    log.info("initialised %d of %d tensors from %s (%d not used)", len(taken), len(own), path, len(source) - len(taken))


@dataclass(frozen=True)
class Stage:
    """What the loop needs of one stage: the trainer (its ``step``/``optimizer``/``generator``), the model to
    save under ``name``, how to draw a step's random decisions for G rows and the per-micro-batch arguments."""

    trainer: Any
    model: torch.nn.Module
    name: str
    draw: Callable[[int], tuple[Any, ...]]
    tokenize: Callable[[np.ndarray], np.ndarray] | None
    prepare: Callable[[Any], Any]
    extra_files: tuple[tuple[Path, str], ...] = ()


def checkpoint_name(settings: TrainSettings) -> str:
    """The checkpoint a run of ``settings`` writes (``mesh_vqvae_54``, ``mega_pretrained``, ``mega_<backbone>``)."""
    if settings.stage in CHECKPOINT_NAME:
        return CHECKPOINT_NAME[settings.stage]
    return defaults.MODEL_SHORT_NAMES[_cvqmae_config(settings).backbone.type]


def _build_stage(settings: TrainSettings, device: torch.device) -> Stage:
    from mega_runtime.train.optim import OptimConfig

    assets = _assets(settings)
    torch.manual_seed(settings.seed)
    init_gen = torch.Generator().manual_seed(settings.seed)
    step_gen = torch.Generator().manual_seed(settings.seed + 1)
    optim = OptimConfig(
        lr=settings.lr,
        batch=settings.global_batch,
        weight_decay=settings.weight_decay,
        warmup_epoch=settings.warmup_epoch,
        total_epoch=settings.total_epoch,
        mode=settings.mode,
    )
    same: Callable[[Any], Any] = lambda b: b  # noqa: E731
    if settings.stage == "tokenizer":
        from mega_runtime.models.mesh_vqvae import MeshVQVAE
        from mega_runtime.train.mesh_vqvae_step import MeshVQVAEConfig, MeshVQVAETrainer

        mesh_model = MeshVQVAE.from_connection_folder(assets / "connection_matrices")
        init_mesh_vqvae(mesh_model, init_gen)
        mesh_model.to(device)
        trainer = MeshVQVAETrainer(mesh_model, MeshVQVAEConfig(lr=settings.lr, mode=settings.mode))
        trainer.generator = step_gen  # type: ignore[attr-defined]
        return Stage(trainer, mesh_model, defaults.TOKENIZER_MODEL, lambda g: (), None, same)
    from mega_runtime.train.masking import draw_mask

    tokenizer = _load_tokenizer(settings.tokenizer, assets, device) if settings.tokenizer else None
    if tokenizer is not None and settings.precision != "fp32":
        tokenizer.graph_path = "gather"  # type: ignore[assignment]  # sparse CSR products have no bf16/fp16 kernels
    tokenize = tokenize_with(tokenizer) if tokenizer is not None else None
    if settings.stage == "pretrain":
        from mega_runtime.models.config import VQMAEConfig
        from mega_runtime.models.masked_transformer import VQMAE
        from mega_runtime.train.vqmae_step import VQMAETrainer

        vq_model = VQMAE(VQMAEConfig(_transformer_config(settings)))
        init_transformer(vq_model, init_gen)
        vq_model.to(device)
        vq_trainer = VQMAETrainer(vq_model, optim, step_gen)
        seq = vq_model.seq_length
        return Stage(
            vq_trainer, vq_model, defaults.PRETRAINED_MODEL, lambda g: (draw_mask(g, seq, step_gen),), tokenize, same
        )
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.train.cvqmae_step import CVQMAETrainer

    if tokenizer is None:
        raise TrainingError("fine-tuning needs the frozen tokenizer", hint="pass --tokenizer DIR (a tokenizer run)")
    config = _cvqmae_config(settings)
    model = CVQMAE(config)
    init_transformer(model, init_gen)
    if settings.init is not None:
        _load_init(model, settings.init)
    model.to(device)
    regressors = _regressors(settings, assets)
    cv_trainer = CVQMAETrainer(model, tokenizer, *regressors, optim, step_gen)  # type: ignore[arg-type]
    cv_seq = model.seq_length

    def draw(g: int) -> tuple[Any, ...]:
        return draw_mask(g, cv_seq, step_gen), cv_trainer.draw_dropout(g)

    def prepare(batch: ImageBatch) -> ImageBatch:
        # The readers make 224×224 crops; a ViT sized for them (197 positions) gets 32-column bands added on
        # each side, which the step's official side cut removes again.
        if config.backbone.type == "vit" and batch.images.shape[-1] == config.backbone.input_size[1]:
            images = torch.nn.functional.pad(batch.images, (VIT_BAND, VIT_BAND))
            return ImageBatch(images, batch.gt_tokens, batch.rotation, batch.keypoints, batch.is_3dpw, batch.meshes)
        return batch

    from mega_runtime.weights.loaders import CHECKPOINT_FILES

    relative = CHECKPOINT_FILES[defaults.TOKENIZER_MODEL]
    tok_file = (Path(settings.tokenizer or "") / relative, relative)
    name = defaults.MODEL_SHORT_NAMES[config.backbone.type]
    return Stage(cv_trainer, model, name, draw, tokenize, prepare, (tok_file,))


def _regressors(settings: TrainSettings, assets: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(17, 6890) H36M and (24, 6890) SMPL joint regressors: the given ``.npy`` files; with ``--synthetic``
    the synthetic source's stand-ins when none is given."""
    out = []
    wanted = ((settings.regressor_h36m, 17, "--regressor-h36m"), (settings.regressor_smpl, 24, "--regressor-smpl"))
    for path, joints, flag in wanted:
        if path is not None:
            out.append(torch.as_tensor(np.load(path, allow_pickle=False), dtype=torch.float32))
        elif settings.synthetic is not None:
            from mega_runtime.train.synthetic import load_template, synthetic_joint_regressor

            out.append(torch.as_tensor(synthetic_joint_regressor(load_template(assets), joints), dtype=torch.float32))
        else:
            raise TrainingError(f"fine-tuning on real data needs {flag} NPY", hint=f"pass {flag} (J_regressor file)")
    return out[0], out[1]


def _save(stage: Stage, settings: TrainSettings, folder: Path, state: dict[str, Any], loss: float) -> Path:
    """Write a checkpoint folder: the official file(s), ``config.json``, the tokenizer (finetune), the resume
    state and the settings. Existing checkpoint files are never replaced (:class:`TrainingError`)."""
    from mega_runtime.weights.loaders import read_folder_config, write_folder_config

    trainer = stage.trainer
    optimizer = trainer.optimizer.optimizer if isinstance(trainer.optimizer, StepGate) else trainer.optimizer
    for source, relative in stage.extra_files:
        target = folder / relative
        if target.exists():
            raise TrainingError(f"{target} already exists", hint="choose another --out (runs never overwrite)")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        write_folder_config(folder, {**read_folder_config(source.parent.parent), **read_folder_config(folder)})
    save_checkpoint(
        folder,
        stage.name,
        stage.model,
        optimizer=optimizer,
        scheduler=getattr(trainer, "scheduler", None),
        epoch=state["epoch"],
        loss=loss,
    )
    partial = folder / (STATE_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, folder / STATE_FILE)
    (folder / SETTINGS_FILE).write_text(json.dumps(_jsonable(settings), indent=2) + "\n")
    return folder


def _jsonable(settings: TrainSettings) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}


RESUME_KEYS = ("batch_size", "accumulate", "devices", "seed", "synthetic", "data", "mode", "model", "lr")
"""Settings that change the continuation when they differ from the checkpoint's (a warning names them)."""


def _resume_state(stage: Stage, settings: TrainSettings, folder: Path) -> dict[str, Any]:
    from mega_runtime.weights.loaders import CHECKPOINT_FILES

    state_path, model_path = folder / STATE_FILE, folder / CHECKPOINT_FILES[stage.name]
    if not state_path.is_file() or not model_path.is_file():
        raise TrainingError(
            f"{folder} is not a checkpoint folder of this stage (it needs {STATE_FILE} and {model_path.name})",
            hint="pass --resume OUT/checkpoints/step-NNNNNN of a run of the same stage",
        )
    payload = torch.load(model_path, map_location="cpu", weights_only=True)
    stage.model.load_state_dict(payload["model"], strict=True)
    trainer = stage.trainer
    optimizer = trainer.optimizer.optimizer if isinstance(trainer.optimizer, StepGate) else trainer.optimizer
    optimizer.load_state_dict(payload["optimizer"])
    if getattr(trainer, "scheduler", None) is not None and "scheduler" in payload:
        trainer.scheduler.load_state_dict(payload["scheduler"])
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    saved = folder / SETTINGS_FILE
    if saved.is_file():
        before = json.loads(saved.read_text())
        changed = [k for k in RESUME_KEYS if k in before and before[k] != _jsonable(settings)[k]]
        if changed:
            log.warning("resuming with changed %s: the run will not repeat the original", ", ".join(changed))
    trainer.generator.set_state(state["step_generator"])
    torch.set_rng_state(state["torch_rng"])
    return state


def _autocast(settings: TrainSettings, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if settings.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class CsvLog:
    """``log.csv`` of a run (rank 0 only): one row per logged optimiser step; appends when resuming. The numeric
    columns also go to TensorBoard (``tensorboard/``) when ``torch.utils.tensorboard`` imports."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.columns: list[str] | None = None
        self.board: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("torch.utils.tensorboard does not import (no tensorboard package): log.csv only")
            else:
                self.board = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, float | int) and math.isfinite(value):
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()
        new = not self.path.exists()
        if self.columns is None:
            self.columns = list(row) if new else next(csv.reader(self.path.open()))
        with self.path.open("a", newline="") as handle:
            writer: csv.DictWriter[str] = csv.DictWriter(handle, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


def average_state(model: torch.nn.Module, dist: Distributed) -> None:
    """Average what each process updates from its own rows (BatchNorm running statistics, the codebook's EMA
    tensors), so every process holds the same model after a step (parameters already agree)."""
    from mega_runtime.train.mesh_vqvae_step import EMA_STATE

    ema = dict(model.named_parameters())
    tensors = [t for t in model.buffers() if t.is_floating_point()]
    tensors += [ema[name] for name in EMA_STATE if name in ema]
    with torch.no_grad():
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)
            tensor.div_(dist.world)


def _epoch_batches(source: Any, generator: np.random.Generator, skip: int) -> Iterator[Any]:
    for index, batch in enumerate(source.epoch(generator)):
        if index >= skip:
            yield batch


def train(settings: TrainSettings, dist: Distributed = Distributed()) -> RunResult:
    """Run ``settings`` in this process (rank ``dist.rank`` of ``dist.world``; torch.distributed already set up
    when ``world`` > 1). Returns the run's :class:`RunResult`; rank 0 writes every file."""
    from mega_runtime.train.sources import DataOptions, open_batches

    start = time.monotonic()
    device = _device(settings, dist)
    out = settings.out
    from mega_runtime.weights.loaders import CHECKPOINT_FILES

    final_file = out / CHECKPOINT_FILES[checkpoint_name(settings)]
    if final_file.exists():
        raise TrainingError(f"{final_file} already exists", hint="choose another --out (runs never overwrite)")
    stage = _build_stage(settings, device)
    scaler = None
    if settings.precision == "fp16" and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    trainer = stage.trainer
    gate = StepGate(trainer.optimizer, settings.accumulate * dist.world, dist, scaler)
    trainer.optimizer = gate
    if scaler is not None:
        trainer.loss_backward = lambda loss: scaler.scale(loss).backward()
    options = DataOptions(
        data=settings.data,
        synthetic=settings.synthetic,
        smpl_model=settings.smpl_model,
        assets_dir=settings.assets_dir,
        seed=settings.seed,
    )
    source = open_batches(settings.stage, options, settings.global_batch, stage.tokenize)
    order = np.random.default_rng(settings.seed)
    step, epoch, skip = 0, 0, 0
    if settings.resume is not None:
        state = _resume_state(stage, settings, settings.resume)
        step, epoch, skip = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        order.bit_generator.state = state["order_state"]
    if dist.active:
        for tensor in stage.model.state_dict().values():
            torch.distributed.broadcast(tensor, 0)
    rank0 = dist.rank == 0
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    csv_log = CsvLog(out / LOG_FILE, rank0)
    per_rank = settings.batch_size * settings.accumulate
    losses: dict[str, float] = {}
    done = settings.max_steps and step >= settings.max_steps
    epoch_state, index = order.bit_generator.state, skip
    while epoch < settings.epochs and not done:
        epoch_state = order.bit_generator.state
        index = skip
        for batch in _epoch_batches(source, order, skip):
            draws = stage.draw(settings.global_batch)
            mine = rows_of(batch, slice(dist.rank * per_rank, (dist.rank + 1) * per_rank))
            for micro in range(settings.accumulate):
                rows = slice(micro * settings.batch_size, (micro + 1) * settings.batch_size)
                global_rows = slice(dist.rank * per_rank + rows.start, dist.rank * per_rank + rows.stop)
                gate.first, gate.last = micro == 0, micro == settings.accumulate - 1
                args = tuple(_draw_rows(d, global_rows, device) for d in draws)
                with _autocast(settings, device):
                    result = trainer.step(stage.prepare(rows_of(mine, rows)), *args)
            if dist.active:
                average_state(stage.model, dist)
            step += 1
            index += 1
            losses = dict(result.losses)
            if step % settings.log_every == 0:
                lr = float(gate.param_groups[0]["lr"])
                row = {"step": step, "epoch": epoch, "lr": lr, **losses, "grad_norm": result.grad_norm}
                row["skipped"] = int(result.skipped)
                row["seconds"] = round(time.monotonic() - start, 3)
                csv_log.write(row)
                if rank0:
                    shown = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
                    log.info("%s epoch %d step %d lr %.3g %s", settings.stage, epoch, step, lr, shown)
            state = {
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": index,
                "order_state": epoch_state,
                "step_generator": trainer.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            if rank0 and settings.checkpoint_every and step % settings.checkpoint_every == 0:
                folder = out / CHECKPOINTS_DIR / f"step-{step:06d}"
                _save(stage, settings, folder, state, losses.get("loss_total", 0.0))
            if settings.max_steps and step >= settings.max_steps:
                done = True
                break
        else:
            skip = 0
            epoch += 1
            if hasattr(trainer, "end_epoch"):
                trainer.end_epoch()
    final_state = {
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": index if done else 0,
        "order_state": epoch_state if done else order.bit_generator.state,
        "step_generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if rank0:
        _save(stage, settings, out, final_state, losses.get("loss_total", 0.0))
    return RunResult(step, epoch, losses, out, time.monotonic() - start)


def _draw_rows(draw: Any, rows: slice, device: torch.device) -> Any:
    """A step's random decisions restricted to ``rows`` (the time ``t`` is shared by all rows); dropout keep
    masks on the model's ``device`` (the step moves the masking permutations itself)."""
    from mega_runtime.train.cvqmae_step import DropoutKeep
    from mega_runtime.train.masking import MaskDraw

    if isinstance(draw, MaskDraw):
        return MaskDraw(t=draw.t, perm=draw.perm[rows])
    if isinstance(draw, DropoutKeep):
        return DropoutKeep(draw.first[rows].to(device), draw.second[rows].to(device))
    return draw


__all__ = ["Distributed", "MeshBatch", "RunResult", "TokenBatch", "train"]
