"""``mega-runtime verify``: prove this runtime computes what the official code computes.

For each reference fixture folder (format: ``shared/fixtures/README.md``) it
rebuilds the seeded weights, saves them as official-format checkpoint files,
loads those files through the same loaders users use, runs the stored inputs and
compares every stored output with its tolerance (integer outputs exactly). A
``manifests`` folder is checked by building every full-size model (on the
``meta`` device, no weights) and comparing keys, shapes and dtypes.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mega_runtime.decoding.samplers import official_decoder_mask, official_encoder_order
from mega_runtime.errors import FixtureError
from mega_runtime.models.config import CVQMAEConfig, VQMAEConfig
from mega_runtime.verify.recipe import FixtureSpec, build_state_dict, save_official_checkpoint
from mega_runtime.weights.loaders import CHECKPOINT_FILES, write_folder_config

log = logging.getLogger(__name__)

#: The reference outputs of deterministic calls were recorded right after ``np.random.seed(0)``;
#: the official decoder's returned mask (and the demo's token combination) depend on that draw.
DETERMINISTIC_SEED = 0


@dataclass(frozen=True)
class Check:
    """One compared output. ``error`` is the largest absolute difference (0 or 1 mismatch count for integers)."""

    name: str
    passed: bool
    detail: str


@dataclass
class FixtureReport:
    """All checks of one fixture folder; ``status`` is passed, failed or not-verified."""

    name: str
    kind: str
    checks: list[Check] = field(default_factory=list)
    not_verified: str | None = None

    @property
    def status(self) -> str:
        if self.not_verified:
            return "not-verified"
        return "passed" if self.checks and all(c.passed for c in self.checks) else "failed"


def _rule_for(name: str, tolerances: dict[str, Any]) -> dict[str, float] | str | None:
    """The tolerance fixture.json states for array ``name`` (a dict of atol/rtol…, "exact" or None)."""
    if isinstance(tolerances.get(name), dict):
        return tolerances[name]
    for key, value in tolerances.items():
        names: set[str] = set()
        for token in re.findall(r"[A-Za-z0-9_]+(?:\(_b\))?", key):
            if token.endswith("(_b)"):
                base = token[: -len("(_b)")]
                names.update({base, base + "_b"})
            else:
                names.add(token)
        if name in names:
            if isinstance(value, dict):
                return value
            if isinstance(value, str) and "exact" in value:
                return "exact"
    return None


class Comparator:
    """Compares computed arrays with ``reference.npz`` using the fixture's tolerances."""

    def __init__(self, spec: FixtureSpec, reference: dict[str, np.ndarray], report: FixtureReport) -> None:
        self.tolerances = spec.meta.get("tolerances", {})
        self.reference = reference
        self.report = report

    def __call__(
        self,
        name: str,
        value: torch.Tensor | np.ndarray,
        ref_name: str | None = None,
        rows: int | None = None,
        rule: dict[str, float] | str | None = None,
    ) -> None:
        """Compare ``value`` with reference ``ref_name`` (default ``name``), its first ``rows`` rows if given.

        ``rule`` overrides the fixture's tolerance (for arrays fixture.json states none for).
        """
        ref = self.reference[ref_name or name]
        if rows is not None:
            ref = ref[:rows]
        got = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if got.shape != ref.shape:
            self.report.checks.append(Check(name, False, f"shape {got.shape} but reference {ref.shape}"))
            return
        rule = rule or _rule_for(ref_name or name, self.tolerances)
        if rule is None and not (np.issubdtype(ref.dtype, np.integer) or "mask" in (ref_name or name)):
            raise FixtureError(f"{self.report.name}: fixture.json states no tolerance for {name}")
        if rule == "exact" or rule is None:
            diff = int(np.count_nonzero(got != ref))
            passed = diff == 0
            detail = "identical" if passed else f"{diff} of {ref.size} entries differ"
        elif isinstance(rule, str):
            raise FixtureError(f"{self.report.name}: unknown tolerance {rule!r} for {name} (a dict or 'exact')")
        else:
            err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            if "rtol_of_max_abs" in rule:
                bound = rule["rtol_of_max_abs"] * float(np.abs(ref).max())
                passed = bool(err.max() <= bound)
                detail = f"max|err| {err.max():.3g} (tol {bound:.3g} = {rule['rtol_of_max_abs']:g}·max|ref|)"
            else:
                atol, rtol = float(rule.get("atol", 0.0)), float(rule.get("rtol", 0.0))
                passed = bool(np.all(err <= atol + rtol * np.abs(ref)))
                tol = f"atol {atol:g}" + (f" + rtol {rtol:g}" if rtol else "")
                detail = f"max|err| {err.max():.3g} ({tol})"
        self.report.checks.append(Check(name, passed, detail))


def _parse_call(text: str, pattern: str, default: float) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else default


def _checkpoint_from_fixture(spec: FixtureSpec, out_dir: Path, rel_path: str) -> Path:
    return save_official_checkpoint(build_state_dict(spec.path), out_dir / rel_path)


def _token_model_checks(
    spec: FixtureSpec,
    model,
    cond: Any,
    sample_cond: Any,
    ref: dict[str, np.ndarray],
    compare: Comparator,
    prefix: str,
    device: torch.device | str = "cpu",
) -> None:
    """Partial-mask path and official sampler checks shared by CVQMAE and VQMAE fixtures.

    cond: condition of the reference batch (None for VQMAE); sample_cond: condition of the
    single image the sampler fixture repeats (None for VQMAE).
    """
    from mega_runtime.decoding.samplers import sample_tokens_official
    from mega_runtime.decoding.schedule import SamplingConfig

    tokens = torch.from_numpy(ref["tokens"]).to(device)
    visible = ref["partial_visible_mask"]
    order = official_encoder_order(visible, np.random.RandomState(2))
    compare("partial_backward_indexes", np.argsort(order, axis=1).T.copy())
    kept = int(visible[0].sum())
    compare("partial_logits", model.logits(tokens, torch.from_numpy(order[:, :kept].copy()).to(device), cond))
    compare("partial_mask_out", official_decoder_mask(order, kept))
    if f"{prefix}_tokens" not in ref:
        return
    desc = spec.meta["arrays"][f"{prefix}_tokens"]
    seed = int(_parse_call(desc, r"np\.random\.seed\((\d+)\)", 0))
    steps = int(_parse_call(desc, r"nb_steps=(\d+)", 5))
    temperature = _parse_call(desc, r"gen_temp=([0-9.]+)", 4.5)
    rows = ref[f"{prefix}_tokens"].shape[0]
    annealing = "power5" if spec.kind == "vqmae" else "linear"
    sampling = SamplingConfig(steps=steps, temperature=temperature, annealing=annealing)
    cond_rows = sample_cond.repeat(rows) if sample_cond is not None else None
    out = sample_tokens_official(model, cond_rows, rows, np.random.RandomState(seed), sampling, record=True)
    compare(f"{prefix}_tokens", out.tokens)
    compare(f"{prefix}_tokens_per_step", _recorded(out.tokens_per_step, "tokens per step"))
    compare(f"{prefix}_mask_per_step", _recorded(out.visible_per_step, "visible masks per step").long())
    if cond_rows is not None:
        compare(f"{prefix}_pred_rot6d", cond_rows.rot6d)
        compare(f"{prefix}_pred_cam", cond_rows.cam)


def _recorded(steps: torch.Tensor | None, what: str) -> torch.Tensor:
    """A per-step record of a decoder run that was asked to record it (None there is a runtime bug)."""
    if steps is None:
        raise RuntimeError(f"the decoder returned no {what} although it was asked to record them")
    return steps


def _cvqmae_config(spec: FixtureSpec) -> CVQMAEConfig:
    from mega_runtime.models.config import BackboneConfig, ViTConfig, transformer_from_official

    backbone_type = spec.meta["config"]["backbone"]["type"]
    vit = ViTConfig()
    if backbone_type == "vit":
        ctor = spec.meta["backbone"]["constructor"]
        vit = ViTConfig(
            embed_dim=int(_parse_call(ctor, r"embed_dim=(\d+)", 1280)),
            depth=int(_parse_call(ctor, r"depth=(\d+)", 32)),
            num_heads=int(_parse_call(ctor, r"num_heads=(\d+)", 16)),
            mlp_ratio=_parse_call(ctor, r"mlp_ratio=([0-9.]+)", 4.0),
        )
    return CVQMAEConfig(BackboneConfig(backbone_type, vit), transformer_from_official(spec.meta["config"]["model"]))


def _verify_cvqmae(
    spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], compare: Comparator, device: str = "cpu"
) -> dict:
    from mega_runtime.decoding.samplers import argmax_decode_official
    from mega_runtime.models.geometry import rotation_6d_to_matrix
    from mega_runtime.weights.loaders import load_cvqmae

    config = _cvqmae_config(spec)
    name = f"mega_{config.backbone.type}"
    path = save_official_checkpoint(build_state_dict(spec.path), workdir / CHECKPOINT_FILES[name])
    model = load_cvqmae(path, config, device)
    img = torch.from_numpy(ref["img"]).to(device)
    with torch.no_grad():
        compare("backbone_features", model.backbone(img))
        logits, rot6d, cam = model(img)
        compare("logits", logits)
        compare("pred_rot6d", rot6d)
        compare("pred_cam", cam)
        compare("argmax_indices", logits.argmax(-1))
        tokens = torch.from_numpy(ref["tokens"]).to(device)
        demo = argmax_decode_official(model, model.condition(img), tokens, np.random.RandomState(DETERMINISTIC_SEED))
        compare("mask", _recorded(demo.visible_per_step, "visible masks per step")[-1].logical_not().float())
        compare("mesh_indices_demo", demo.tokens)
        compare("rotmat", rotation_6d_to_matrix(rot6d))
        compare("encoder_features_fixed_ratio1", model.encoder(tokens, tokens[:, :0]).transpose(0, 1))
        _token_model_checks(spec, model, model.condition(img), model.condition(img[:1]), ref, compare, "stoch", device)
    return {name: config.to_dict()}


def _verify_vqmae(
    spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], compare: Comparator, device: str = "cpu"
) -> dict:
    from mega_runtime.decoding.samplers import argmax_decode_official
    from mega_runtime.models.config import transformer_from_official
    from mega_runtime.weights.loaders import load_vqmae

    config = VQMAEConfig(transformer_from_official(spec.meta["config"]["model"]))
    path = save_official_checkpoint(build_state_dict(spec.path), workdir / CHECKPOINT_FILES["mega_pretrained"])
    model = load_vqmae(path, config, device)
    rows = ref["logits"].shape[0]
    with torch.no_grad():
        logits = model(rows)
        compare("logits", logits)
        tokens = torch.from_numpy(ref["tokens"]).to(device)
        demo = argmax_decode_official(model, None, tokens, np.random.RandomState(DETERMINISTIC_SEED))
        compare("mask", _recorded(demo.visible_per_step, "visible masks per step")[-1].logical_not().float())
        compare("argmax_indices", logits.argmax(-1))
        _token_model_checks(spec, model, None, None, ref, compare, "gen", device)
    return {"mega_pretrained": config.to_dict()}


def _verify_mesh_vqvae(
    spec: FixtureSpec,
    workdir: Path,
    ref: dict[str, np.ndarray],
    compare: Comparator,
    assets_dir: Path,
    device: str = "cpu",
) -> dict:
    from mega_runtime.models.assets import load_connection_matrices, read_template_ply
    from mega_runtime.weights.loaders import load_mesh_vqvae

    connections = load_connection_matrices(assets_dir / "connection_matrices")
    path = save_official_checkpoint(build_state_dict(spec.path), workdir / CHECKPOINT_FILES["mesh_vqvae_54"])
    model = load_mesh_vqvae(path, connections, device)
    template = read_template_ply(assets_dir / "template.ply")
    compare("template_vertices", template.vertices, rule="exact")
    indices = torch.from_numpy(ref["indices"]).to(device)
    with torch.no_grad():
        compare("quantized_latent", model.quantize(indices))
        compare("decoded_vertices", model.decode(indices))
        for suffix in ("", "_b"):
            meshes = torch.from_numpy(ref[f"encode_input_meshes{suffix}"]).to(device)
            compare(f"encoder_latent{suffix}", model.encoder_latent(meshes))
            codes = model.encode(meshes)
            compare(f"encoded_indices{suffix}", codes)
            compare(f"decoded_from_encoded{suffix}", model.decode(codes))
        single = model.decode(indices[:1])
        compare("decode_single_with_cfg_batch3 (one row → one mesh)", single, "decode_single_with_cfg_batch3", rows=1)
    return {}


def _verify_manifests(folder: Path, report: FixtureReport, assets_dir: Path | None) -> None:
    """Full-size models built from their configuration have exactly the manifest's keys, shapes and dtypes."""
    for path in sorted(folder.glob("manifest_*.json")):
        manifest = json.loads(path.read_text())
        name = path.stem[len("manifest_") :]
        try:
            state = _meta_state_dict(name, manifest, assets_dir)
        except FixtureError as exc:
            report.checks.append(Check(name, False, str(exc)))
            continue
        ours = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()]
        theirs = [(k, v["shape"], v["dtype"]) for k, v in manifest["keys"].items()]
        if ours == theirs:
            report.checks.append(Check(name, True, f"{len(ours)} keys, shapes, dtypes and order identical"))
            continue
        missing = sorted({k for k, *_ in theirs} - {k for k, *_ in ours})
        extra = sorted({k for k, *_ in ours} - {k for k, *_ in theirs})
        shaped = [k for (k, s, d), (k2, s2, d2) in zip(ours, theirs, strict=False) if k == k2 and (s, d) != (s2, d2)]
        detail = f"missing {missing[:5]}, unexpected {extra[:5]}, mis-shaped {shaped[:5]}"
        if not (missing or extra or shaped):
            detail = "same entries in a different order"
        report.checks.append(Check(name, False, detail))


def _meta_state_dict(name: str, manifest: dict[str, Any], assets_dir: Path | None) -> dict[str, torch.Tensor]:
    from mega_runtime.models.config import BackboneConfig, transformer_from_official
    from mega_runtime.models.masked_transformer import CVQMAE, VQMAE

    if name.startswith("cvqmae"):
        config = CVQMAEConfig(BackboneConfig(manifest["backbone"]), transformer_from_official(manifest["config"]))
        with torch.device("meta"):
            return CVQMAE(config).state_dict()
    if name.startswith("vqmae"):
        with torch.device("meta"):
            return VQMAE(VQMAEConfig(transformer_from_official(manifest["config"]))).state_dict()
    if name.startswith("mesh_vqvae"):
        from mega_runtime.models.assets import load_connection_matrices
        from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

        if assets_dir is None:
            raise FixtureError("the Mesh-VQ-VAE manifest needs the connection matrices: pass --assets-dir")
        return MeshVQVAE(MeshVQVAEConfig(), load_connection_matrices(assets_dir / "connection_matrices")).state_dict()
    raise FixtureError(f"no model is known for manifest {name}")


def find_assets_dir(explicit: Path | str | None, fixture: Path | None = None) -> Path | None:
    """The assets folder: the explicit one, else ``$MEGA_ASSETS_DIR``, else ``../assets`` beside the fixtures."""
    import os

    for candidate in (explicit, os.environ.get("MEGA_ASSETS_DIR")):
        if candidate:
            return Path(candidate)
    if fixture is not None:
        sibling = fixture.resolve().parent.parent / "assets"
        if (sibling / "connection_matrices").is_dir():
            return sibling
    return None


def verify_folder(
    folder: Path | str, workdir: Path, assets_dir: Path | str | None = None, device: str = "cpu"
) -> FixtureReport:
    """Verify one fixture (or manifests) folder; checkpoints are written under ``workdir``.

    ``device``: where the models run (``cpu``, ``cuda``, ``mps``); outputs are compared on the CPU.
    The ``pipeline_demo`` fixture always runs on the CPU.
    """
    folder = Path(folder)
    assets = find_assets_dir(assets_dir, folder)
    if not (folder / "fixture.json").is_file() and any(folder.glob("manifest_*.json")):
        report = FixtureReport(folder.name, "manifests")
        _verify_manifests(folder, report, assets)
        return report
    spec = FixtureSpec.read(folder)
    report = FixtureReport(spec.name, spec.kind)
    if spec.kind.startswith("train_"):
        from mega_runtime.verify.training import verify_training_folder

        return verify_training_folder(spec, workdir, assets, report)
    with np.load(folder / "reference.npz", allow_pickle=False) as npz:
        ref = {k: npz[k] for k in npz.files}
    compare = Comparator(spec, ref, report)
    if spec.kind == "cvqmae":
        models = _verify_cvqmae(spec, workdir, ref, compare, device)
    elif spec.kind == "vqmae":
        models = _verify_vqmae(spec, workdir, ref, compare, device)
    elif spec.kind == "pipeline_demo":
        if assets is None:
            raise FixtureError(f"{folder}: the pipeline fixture needs the assets", hint="pass --assets-dir")
        models = _verify_pipeline_demo(spec, workdir, ref, compare, assets)
    elif spec.kind == "mesh_vqvae":
        if assets is None:
            raise FixtureError(
                f"{folder}: the Mesh-VQ-VAE fixture needs the connection matrices and template.ply",
                hint="pass --assets-dir shared/assets or set MEGA_ASSETS_DIR",
            )
        models = _verify_mesh_vqvae(spec, workdir, ref, compare, assets, device)
    else:
        raise FixtureError(f"{folder}: unknown fixture kind {spec.kind!r}")
    if models:
        existing = {}
        if (workdir / "config.json").is_file():
            existing = json.loads((workdir / "config.json").read_text()).get("models", {})
        write_folder_config(workdir, {**existing, **models})
    return report


def verify(
    folders: list[Path], write_checkpoints: Path | None = None, assets_dir: Path | None = None
) -> Iterator[FixtureReport]:
    """Verify each folder in turn, yielding its report; checkpoints land in ``write_checkpoints`` if given."""
    with tempfile.TemporaryDirectory(prefix="mega-verify-") as tmp:
        workdir = Path(write_checkpoints) if write_checkpoints else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            yield verify_folder(folder, workdir, assets_dir)


def _verify_pipeline_demo(
    spec: FixtureSpec, workdir: Path, ref: dict[str, np.ndarray], compare: Comparator, assets_dir: Path
) -> dict:
    """The official demo chain on real photos: crops, camera, tokens, canonical and posed vertices."""
    from mega_runtime.decoding.samplers import argmax_decode_official
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.geometry import cam_crop_to_full, rotate_vertices, rotation_6d_to_matrix
    from mega_runtime.pipeline.media import read_image
    from mega_runtime.pipeline.preprocess import crop_person, focal_length_px
    from mega_runtime.weights.loaders import load_cvqmae, load_mesh_vqvae

    siblings = spec.path.parent
    cvqmae_spec = FixtureSpec.read(siblings / "cvqmae_resnet")
    config = _cvqmae_config(cvqmae_spec)
    cvqmae_path = workdir / CHECKPOINT_FILES["mega_resnet"]
    if not cvqmae_path.is_file():
        save_official_checkpoint(build_state_dict(cvqmae_spec.path), cvqmae_path)
    mesh_path = workdir / CHECKPOINT_FILES["mesh_vqvae_54"]
    if not mesh_path.is_file():
        save_official_checkpoint(build_state_dict(siblings / "mesh_vqvae"), mesh_path)
    model = load_cvqmae(cvqmae_path, config)
    mesh = load_mesh_vqvae(mesh_path, load_connection_matrices(assets_dir / "connection_matrices"))
    images = [read_image((spec.path / item["file"]).resolve()) for item in spec.meta["images"]]
    crops = [crop_person(images[i], box) for box, i in zip(ref["boxes_xyxy"], ref["image_index"], strict=True)]
    compare("crops", np.stack([c.image for c in crops]))
    compare("box_center", np.stack([c.box_center for c in crops]))
    compare("box_size", np.array([c.box_size for c in crops], dtype=np.float32))
    compare("img_size", np.stack([c.img_size for c in crops]))
    compare("antialias_sigma", np.array([c.antialias_sigma for c in crops]), rule={"atol": 1e-12})
    compare("affine", np.stack([c.affine for c in crops]), rule={"atol": 1e-9})
    with torch.no_grad():
        img = torch.from_numpy(np.stack([c.image for c in crops]))
        logits, rot6d, cam = model(img)
        compare("logits", logits)
        compare("pred_rot6d", rot6d)
        compare("pred_cam", cam)
        # demo.py runs one box at a time; the reference run seeded numpy with 0 before each box
        zeros = torch.zeros(1, 54, dtype=torch.long)
        tokens = torch.cat(
            [
                argmax_decode_official(
                    model, model.condition(img[i : i + 1]), zeros, np.random.RandomState(DETERMINISTIC_SEED)
                ).tokens
                for i in range(len(crops))
            ]
        )
        compare("mesh_indices", tokens)
        rotation = rotation_6d_to_matrix(rot6d)
        compare("rotmat", rotation)
        canonical = mesh.decode(tokens)
        compare("vertices_canonical", canonical)
        compare("vertices_posed", rotate_vertices(rotation, canonical))
        focal = torch.tensor([focal_length_px(*c.img_size.astype(int)) for c in crops])
        compare("focal_length", focal)
        cam_t = cam_crop_to_full(
            cam,
            torch.from_numpy(np.stack([c.box_center for c in crops])),
            torch.tensor([c.box_size for c in crops]),
            torch.from_numpy(np.stack([c.img_size for c in crops])),
            focal,
        )
        compare("cam_t", cam_t)
    return {"mega_resnet": config.to_dict()}
