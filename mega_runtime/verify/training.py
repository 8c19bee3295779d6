"""``mega-runtime verify`` for the training fixtures: replay the official training steps and compare.

For a ``train_*`` folder (format: ``shared/training_fixtures/README.md``) this rebuilds the starting weights
from the recipe, saves them as an official-format checkpoint and loads it through the runtime's strict loader,
then runs the three recorded steps through the trainers of :mod:`mega_runtime.train` in ``official`` mode with
the recorded random decisions injected (mask times and permutations, dropout keep masks). Every recorded array
the runtime computes is compared within the fixture's tolerances (integers exactly; parameter arrays may have
the stated fraction of Adam sign-flip outliers). The state-dict SHA-256 after each step is reported as a bonus,
never as a gate (it depends on the CPU kernels' summation order, see the fixture README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from mega_runtime.errors import FixtureError
from mega_runtime.verify.inference import Check, FixtureReport
from mega_runtime.verify.recipe import FixtureSpec, build_state_dict, save_official_checkpoint

log = logging.getLogger(__name__)

T = TypeVar("T")

TRAINING_KINDS = ("train_mesh_vqvae", "train_vqmae", "train_cvqmae")
"""The fixture kinds this module verifies."""

INT16_GRID = 4096.0
"""Meshes are stored as int16 codes on a 1/4096 m grid."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STEP_ARRAY = re.compile(r"^(grad|param|adam_exp_avg|adam_exp_avg_sq)_step(\d+)__(.+)$")


def compare_array(name: str, got: Any, ref: np.ndarray, rule: Any) -> Check:
    """One :class:`Check` of ``got`` against ``ref`` under a fixture tolerance rule.

    ``rule``: ``"exact"``; ``{"atol": a}`` (optionally ``"allow_outliers": {"max_fraction_of_elements": f,
    "atol": b}``: up to f of the elements may exceed a if they stay within b); ``{"skip": why, ...}``.
    """
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu().numpy()
    got = np.asarray(got)
    if got.shape != ref.shape:
        return Check(name, False, f"shape {got.shape} but reference {ref.shape}")
    if rule == "exact" or (rule is None and (np.issubdtype(ref.dtype, np.integer) or ref.dtype == bool)):
        diff = int(np.count_nonzero(got != ref))
        return Check(name, diff == 0, "identical" if diff == 0 else f"{diff} of {ref.size} entries differ")
    if not isinstance(rule, dict) or not ("atol" in rule or "rtol" in rule):
        raise FixtureError(f"fixture.json states no usable tolerance for {name}: {rule!r}")
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    worst = float(err.max()) if err.size else 0.0
    atol = float(rule.get("atol", 0.0))
    if "skip" in rule:
        return Check(name, True, f"not gated ({rule['skip']}); max|err| {worst:.3g}")
    if "rtol" in rule:
        rtol = float(rule["rtol"])
        ok = bool(np.all(err <= atol + rtol * np.abs(ref.astype(np.float64))))
        return Check(name, ok, f"max|err| {worst:.3g} (atol {atol:.3g} + rtol {rtol:.3g})")
    over = int(np.count_nonzero(err > atol))
    if not over:
        return Check(name, True, f"max|err| {worst:.3g} (atol {atol:.3g})")
    outliers = rule.get("allow_outliers")
    if outliers:
        limit = int(float(outliers["max_fraction_of_elements"]) * ref.size)
        bound = float(outliers["atol"])
        ok = over <= limit and worst <= bound
        return Check(
            name,
            ok,
            f"max|err| {worst:.3g}; {over} outliers above atol {atol:.3g} (allowed {limit}, up to {bound:.3g})",
        )
    return Check(name, False, f"max|err| {worst:.3g} > atol {atol:.3g} ({over} of {ref.size} elements)")


class StepRecorder:
    """Collects the arrays a training run produces under the reference names, then compares them all."""

    def __init__(self, spec: FixtureSpec, reference: dict[str, np.ndarray], report: FixtureReport) -> None:
        self.tolerances = dict(spec.meta.get("tolerances", {}))
        # The masked fraction is recomputed from the replayed time t with the official float32 expression.
        self.tolerances["mask_ratio"] = "exact"
        self.reference = reference
        self.report = report
        self.got: dict[str, Any] = {}

    def snapshot(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Record every ``*_step<step>*`` array the reference holds: gradients, parameters, Adam state, buffers."""
        state = model.state_dict(keep_vars=True)
        for name in self.reference:
            match = _STEP_ARRAY.match(name)
            if match and int(match.group(2)) == step:
                what, key = match.group(1), match.group(3)
                tensor = state[key]
                if what == "grad":
                    self.got[name] = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
                elif what == "param":
                    self.got[name] = tensor.detach().clone()
                else:
                    self.got[name] = optimizer.state[tensor][what[len("adam_") :]].clone()
            elif name.endswith(f"_step{step}") and name[: -len(f"_step{step}")] in state:
                self.got[name] = state[name[: -len(f"_step{step}")]].detach().clone()

    def compare(self) -> None:
        """Append one check per recorded array (in reference order) and name the reference arrays not computed."""
        for name, ref in self.reference.items():
            if name in self.got:
                self.report.checks.append(compare_array(name, self.got[name], ref, self.tolerances.get(name)))
        unused = [n for n in self.reference if n not in self.got and n not in self.inputs]
        if unused:
            detail = "not computed by the training step (evaluation metrics, see docs/training.md): " + ", ".join(
                unused
            )
            self.report.checks.append(Check("(not compared)", True, detail))

    inputs: tuple[str, ...] = (
        "mesh_int16",
        "tokens",
        "img_raw_uint8",
        "j2d_b12",
        "j2d_b3",
        "rotation_axis_angle",
        "gt_tokens",
        "is_3dpw",
        "J_regressor_h36m_random",
        "J_regressor_24_random",
        "mask_t",
        "mask_forward_perm",
        "dropout1_keep",
        "dropout2_keep",
    )


def state_sha256(model: torch.nn.Module, keys: list[str]) -> str:
    """SHA-256 of the model's tensors in ``keys`` order (aliases repeated), little-endian C order."""
    state = model.state_dict()
    h = hashlib.sha256()
    for key in keys:
        arr = np.ascontiguousarray(state[key].detach().cpu().numpy())
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _sha_checks(spec: FixtureSpec, model: torch.nn.Module, step: int, report: FixtureReport) -> None:
    expected = spec.meta.get("state_dict_sha256_after_step", {}).get(str(step))
    if not expected:
        return
    keys = [k for k, _, _ in json.loads((spec.path / spec.meta["weights"].get("keys", "keys.json")).read_text())]
    same = state_sha256(model, keys) == expected
    detail = "bit-identical to the official run" if same else "differs (bonus check only: summation order)"
    report.checks.append(Check(f"state_dict_sha256_after_step{step}", True, detail))


def _lr_checks(spec: FixtureSpec, ref: dict[str, np.ndarray], recorder: StepRecorder) -> None:
    from mega_runtime.train.schedule import lr_at

    train = spec.meta["train_config"]
    for name in ref:
        if name.startswith("lr_schedule"):
            match = re.search(r"total(\d+)", name)
            total = int(match.group(1)) if match else int(train["total_epoch"])
            values = [
                lr_at(e, float(train["lr"]), int(train["batch"]), int(train["warmup_epoch"]), total)
                for e in range(ref[name].shape[0])
            ]
            recorder.got[name] = np.array(values, dtype=np.float64)


def _saved_config(folder: Path, name: str, kind: type[T]) -> T:
    """The configuration of ``name`` that ``config.json`` in ``folder`` describes, checked to be a ``kind``."""
    from mega_runtime.weights.loaders import model_config

    config = model_config(folder, name)
    if not isinstance(config, kind):
        raise FixtureError(f"{folder}/config.json describes {name} as a {type(config).__name__}, not a {kind.__name__}")
    return config


def _reload_check(
    name: str,
    model: torch.nn.Module,
    trainer: Any,
    workdir: Path,
    load: Callable[[Path, Path], torch.nn.Module],
    report: FixtureReport,
) -> None:
    """Save the trained model with ``train.checkpoint.save_checkpoint`` and load it back through ``load(path,
    folder)`` (the runtime's strict loader): every tensor must come back bit for bit."""
    from mega_runtime.train.checkpoint import save_checkpoint

    folder = workdir / "trained"
    path = save_checkpoint(folder, name, model, optimizer=trainer.optimizer, overwrite=True)
    loaded = load(path, folder).state_dict()
    state = model.state_dict()
    differ = [k for k, v in loaded.items() if not torch.equal(state[k].cpu(), v.cpu())]
    detail = f"{len(loaded)} tensors reloaded strictly, identical" if not differ else f"differ: {differ[:5]}"
    report.checks.append(Check("trained checkpoint (official format) reloads", not differ, detail))


def _per_step(recorder: StepRecorder, name: str, values: list[float]) -> None:
    recorder.got[name] = np.array(values, dtype=np.float64)


def _verify_vqmae(spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], report: FixtureReport) -> None:
    from mega_runtime.models.config import VQMAEConfig, transformer_from_official
    from mega_runtime.train.batch import TokenBatch
    from mega_runtime.train.masking import MaskDraw
    from mega_runtime.train.vqmae_step import VQMAETrainer
    from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_vqmae

    config = VQMAEConfig(transformer_from_official(spec.meta["config"]["model"]))
    path = save_official_checkpoint(
        build_state_dict(spec.path, "weights"), workdir / CHECKPOINT_FILES["mega_pretrained"]
    )
    model = load_vqmae(path, config)
    trainer = VQMAETrainer(model, optim_config(spec.meta["train_config"]))
    recorder = StepRecorder(spec, ref, report)
    losses: dict[str, list[float]] = {"loss_ce": [], "loss_total": [], "grad_norm": []}
    masks, remains, ratios = [], [], []
    for step in range(ref["tokens"].shape[0]):
        draw = MaskDraw(float(ref["mask_t"][step]), torch.from_numpy(ref["mask_forward_perm"][step]))
        remains.append(draw.remain)
        ratios.append(draw.ratio)
        result = trainer.step(TokenBatch(torch.from_numpy(ref["tokens"][step])), draw)
        masks.append(result.outputs["loss_mask"].to(torch.uint8))
        if step == 0:
            recorder.got["logits_step1_rows01"] = result.outputs["logits"][:2]
        for key in ("loss_ce", "loss_total"):
            losses[key].append(result.losses[key])
        losses["grad_norm"].append(result.grad_norm)
        recorder.snapshot(step + 1, model, trainer.optimizer)
        _sha_checks(spec, model, step + 1, report)
    for key, values in losses.items():
        _per_step(recorder, key, values)
    recorder.got["mask_remain_T"] = np.array(remains, dtype=np.int64)
    recorder.got["mask_ratio"] = np.array(ratios, dtype=np.float32)
    recorder.got["mask_loss"] = torch.stack(masks)
    _lr_checks(spec, ref, recorder)
    recorder.compare()
    _reload_check(
        "mega_pretrained",
        model,
        trainer,
        workdir,
        lambda p, f: load_vqmae(p, _saved_config(f, "mega_pretrained", VQMAEConfig)),
        report,
    )


def optim_config(train: dict[str, Any], mode: str = "official"):
    """The :class:`~mega_runtime.train.optim.OptimConfig` of a fixture's ``train_config``."""
    from mega_runtime.train.optim import OptimConfig

    return OptimConfig(
        lr=float(train["lr"]),
        batch=int(train["batch"]),
        weight_decay=float(train.get("weight_decay", 0.0)),
        betas=tuple(train.get("betas", (0.9, 0.95))),
        eps=float(train.get("eps", 1e-8)),
        warmup_epoch=int(train.get("warmup_epoch", 0)),
        total_epoch=int(train.get("total_epoch", 1)),
        mode=mode,
    )


_VERIFIERS: dict[str, Callable[..., None]] = {"train_vqmae": _verify_vqmae}


def verify_training_folder(
    spec: FixtureSpec, workdir: Path, assets_dir: Path | None, report: FixtureReport
) -> FixtureReport:
    """Replay and compare one training fixture into ``report`` (checkpoints are written under ``workdir``)."""
    verifier = _VERIFIERS.get(spec.kind)
    if verifier is None:
        raise FixtureError(f"{spec.path}: unknown training fixture kind {spec.kind!r}")
    with np.load(spec.path / "reference.npz", allow_pickle=False) as npz:
        ref = {k: npz[k] for k in npz.files}
    with torch.random.fork_rng(devices=[]):
        if spec.kind == "train_mesh_vqvae" or spec.kind == "train_cvqmae":
            verifier(spec, workdir / spec.name, ref, report, assets_dir)
        else:
            verifier(spec, workdir / spec.name, ref, report)
    return report


def _verify_mesh_vqvae(
    spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], report: FixtureReport, assets_dir: Path | None
) -> None:
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.train.batch import MeshBatch
    from mega_runtime.train.mesh_vqvae_step import MeshVQVAEConfig, MeshVQVAETrainer
    from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_mesh_vqvae

    if assets_dir is None:
        raise FixtureError(
            f"{spec.path}: the Mesh-VQ-VAE training fixture needs the connection matrices",
            hint="pass --assets-dir shared/assets or set MEGA_ASSETS_DIR",
        )
    state = build_state_dict(spec.path, "weights")
    path = save_official_checkpoint(state, workdir / CHECKPOINT_FILES["mesh_vqvae_54"])
    model = load_mesh_vqvae(path, load_connection_matrices(assets_dir / "connection_matrices"))
    vq = spec.meta["config"]["vqvaemesh"]
    config = MeshVQVAEConfig(
        lr=float(spec.meta["config"]["train"]["lr"]),
        commitment_cost=float(vq["commitment_cost"]),
        decay=float(vq["decay"]),
    )
    trainer = MeshVQVAETrainer(model, config)
    recorder = StepRecorder(spec, ref, report)
    logged: dict[str, list[float]] = {k: [] for k in ("loss_v2v", "loss_vq", "loss_total", "perplexity", "grad_norm")}
    for step in range(ref["mesh_int16"].shape[0]):
        meshes = torch.from_numpy(ref["mesh_int16"][step].astype(np.float32) / INT16_GRID)
        result = trainer.step(MeshBatch(meshes))
        recorder.got[f"code_indices_step{step + 1}"] = result.outputs["indices"]
        if step == 0:
            recorder.got["encoder_latent_step1"] = result.outputs["latent"]
            recorder.got["recon_step1_first2"] = result.outputs["recon"][:2]
        for key in logged:
            logged[key].append(result.grad_norm if key == "grad_norm" else result.losses[key])
        recorder.snapshot(step + 1, model, trainer.optimizer)
        _sha_checks(spec, model, step + 1, report)
    for key, values in logged.items():
        _per_step(recorder, key, values)
    if "lr_schedule" in ref:
        lr = trainer.optimizer.param_groups[0]["lr"]
        recorder.got["lr_schedule"] = np.full(ref["lr_schedule"].shape, lr, dtype=np.float64)
    recorder.compare()
    connections = load_connection_matrices(assets_dir / "connection_matrices")
    _reload_check("mesh_vqvae_54", model, trainer, workdir, lambda p, f: load_mesh_vqvae(p, connections), report)


_VERIFIERS["train_mesh_vqvae"] = _verify_mesh_vqvae


def normalised_images(raw: np.ndarray) -> torch.Tensor:
    """(B, 3, H, W) uint8 crops → ImageNet-normalised float32 ``(u8/255 − mean) / std`` (torchvision's order)."""
    x = torch.from_numpy(raw).to(torch.float32) / 255
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def _verify_cvqmae(
    spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], report: FixtureReport, assets_dir: Path | None
) -> None:
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.config import BackboneConfig, CVQMAEConfig, transformer_from_official
    from mega_runtime.train.batch import ImageBatch
    from mega_runtime.train.cvqmae_step import CVQMAETrainer, DropoutKeep
    from mega_runtime.train.masking import MaskDraw
    from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_cvqmae, load_mesh_vqvae

    if assets_dir is None:
        raise FixtureError(
            f"{spec.path}: the CVQMAE training fixture needs the connection matrices for its tokenizer",
            hint="pass --assets-dir shared/assets or set MEGA_ASSETS_DIR",
        )
    cfg = spec.meta["config"]
    config = CVQMAEConfig(BackboneConfig(cfg["backbone"]["type"]), transformer_from_official(cfg["model"]))
    name = f"mega_{config.backbone.type}"
    path = save_official_checkpoint(build_state_dict(spec.path, "weights"), workdir / CHECKPOINT_FILES[name])
    model = load_cvqmae(path, config)
    tok_path = save_official_checkpoint(
        build_state_dict(spec.path, "tokenizer"), workdir / "tokenizer" / CHECKPOINT_FILES["mesh_vqvae_54"]
    )
    tokenizer = load_mesh_vqvae(tok_path, load_connection_matrices(assets_dir / "connection_matrices"))
    trainer = CVQMAETrainer(
        model,
        tokenizer,
        torch.from_numpy(ref["J_regressor_h36m_random"]),
        torch.from_numpy(ref["J_regressor_24_random"]),
        optim_config(spec.meta["train_config"]),
    )
    recorder = StepRecorder(spec, ref, report)
    names = ("loss_ce", "loss_rot", "loss_2d", "loss_total")
    logged: dict[str, list[float]] = {k: [] for k in (*names, "grad_norm")}
    per_step: dict[str, list[torch.Tensor]] = {k: [] for k in ("mask_loss", "pred_rot6d", "pred_cam", "decoded_ids")}
    remains, ratios, hashes = [], [], []
    steps = ref["img_raw_uint8"].shape[0]
    for step in range(steps):
        images = normalised_images(ref["img_raw_uint8"][step])
        hashes.append(hashlib.sha256(images.numpy().tobytes()).hexdigest())
        is_3dpw = torch.from_numpy(ref["is_3dpw"][step])
        keypoints = ref["j2d_b3"] if bool(is_3dpw.any()) else ref["j2d_b12"][step]
        batch = ImageBatch(
            images=images,
            gt_tokens=torch.from_numpy(ref["gt_tokens"][step]),
            rotation=torch.from_numpy(ref["rotation_axis_angle"][step]),
            keypoints=torch.from_numpy(np.ascontiguousarray(keypoints)),
            is_3dpw=is_3dpw,
        )
        draw = MaskDraw(float(ref["mask_t"][step]), torch.from_numpy(ref["mask_forward_perm"][step]))
        keep = DropoutKeep(
            torch.from_numpy(ref["dropout1_keep"][step][:, 0] != 0),
            torch.from_numpy(ref["dropout2_keep"][step][:, 0] != 0),
        )
        remains.append(draw.remain)
        ratios.append(draw.ratio)
        result = trainer.step(batch, draw, keep)
        out = result.outputs
        per_step["mask_loss"].append(out["loss_mask"].to(torch.uint8))
        per_step["pred_rot6d"].append(out["rot6d"])
        per_step["pred_cam"].append(out["cam"])
        per_step["decoded_ids"].append(out["decoded_ids"])
        if step == 0:
            recorder.got["logits_step1_row0"] = out["logits"][:1]
        for key in names:
            logged[key].append(result.losses[key])
        logged["grad_norm"].append(result.grad_norm)
        recorder.snapshot(step + 1, model, trainer.optimizer)
        _sha_checks(spec, model, step + 1, report)
    expected_hashes = spec.meta.get("img_float32_sha256")
    if expected_hashes:
        same = hashes == list(expected_hashes)
        report.checks.append(Check("img_float32_sha256", same, "identical" if same else f"{hashes} differ"))
    for key, values in logged.items():
        _per_step(recorder, key, values)
    recorder.got["mask_remain_T"] = np.array(remains, dtype=np.int64)
    recorder.got["mask_ratio"] = np.array(ratios, dtype=np.float32)
    recorder.got["mask_loss"] = torch.stack(per_step["mask_loss"])
    recorder.got["pred_rot6d"] = torch.stack(per_step["pred_rot6d"])
    recorder.got["pred_cam"] = torch.stack(per_step["pred_cam"])
    recorder.got["decoded_token_ids"] = torch.stack(per_step["decoded_ids"])
    _lr_checks(spec, ref, recorder)
    recorder.compare()
    _reload_check(
        name, model, trainer, workdir, lambda p, f: load_cvqmae(p, _saved_config(f, name, CVQMAEConfig)), report
    )


_VERIFIERS["train_cvqmae"] = _verify_cvqmae
