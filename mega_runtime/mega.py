"""MEGA as one object: image crops in, meshes with hypotheses and uncertainty out.

:class:`Mega` joins the image-conditioned transformer (CVQMAE), the mesh
tokenizer (Mesh-VQ-VAE) and, when loaded, the pre-trained unconditional model
(VQMAE). It works on pre-processed crops; finding people and cropping them is
the pipeline's job.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mega_runtime import defaults
from mega_runtime.decoding.samplers import (
    TokenSamples,
    argmax_with_logits,
    row_seeds,
    sample_tokens,
    sample_tokens_official,
    to_device,
)
from mega_runtime.decoding.schedule import CVQMAE_SAMPLING, VQMAE_SAMPLING, SamplingConfig
from mega_runtime.decoding.scoring import DEFAULT_SCORING, ScoringConfig, score_tokens
from mega_runtime.errors import ConfigError, MegaError
from mega_runtime.models.config import CVQMAEConfig, VQMAEConfig
from mega_runtime.models.geometry import rotate_vertices, rotation_6d_to_matrix
from mega_runtime.weights.loaders import CHECKPOINT_FILES, load_cvqmae, load_mesh_vqvae, load_vqmae, model_config

log = logging.getLogger(__name__)

SAMPLERS = defaults.SAMPLERS


@dataclass(frozen=True)
class MeshHypotheses:
    """Meshes for B images with H hypotheses each (hypothesis 0 = the deterministic decode).

    tokens: (B, H, 54) int64 Mesh-VQ-VAE codes.
    log_likelihood: (B, H) float32, natural log; every hypothesis, hypothesis 0 included, is scored by
    the one estimator of :mod:`mega_runtime.decoding.scoring`; None when scoring was skipped (``scoring=None``).
    canonical: (B, H, 6890, 3) float32 metres, body frame (y up), mean-centred.
    vertices: (B, H, 6890, 3) float32 metres, v' = R·v in the camera-aligned frame (x right, y down, z forward).
    rotation: (B, 3, 3) float32 global rotation R (rows b1, b2, b3 of the 6D representation).
    rot6d: (B, 6) float32; cam: (B, 3) float32 weak-perspective (s, tx, ty) in crop-normalised units.
    vertex_std: (B, 6890) float32 metres: sqrt(mean over hypotheses of |v − mean v|²) per vertex.
    """

    tokens: torch.Tensor
    log_likelihood: torch.Tensor | None
    canonical: torch.Tensor
    vertices: torch.Tensor
    rotation: torch.Tensor
    rot6d: torch.Tensor
    cam: torch.Tensor
    vertex_std: torch.Tensor


def vertex_spread(vertices: torch.Tensor) -> torch.Tensor:
    """(B, H, V, 3) → (B, V): root-mean-square distance of each vertex to its mean over the H hypotheses."""
    centred = vertices - vertices.mean(dim=1, keepdim=True)
    return centred.square().sum(dim=-1).mean(dim=1).sqrt()


class Mega:
    """The MEGA model family on one device.

    precision: ``fp32`` (default; exact — the fixtures' tokens bit for bit), ``bf16`` (the token
    transformers and the backbone under bfloat16 autocast), ``int8`` (the token transformers' Linear
    layers dynamically quantised to int8; CPU only; applied in place, so the models are not to be
    shared with an fp32 Mega) or ``auto`` (:func:`resolve_precision`). Mesh decoding, geometry and
    all outputs stay float32. ``self.precision`` holds the resolved mode.
    """

    def __init__(self, cvqmae, mesh_vqvae, vqmae=None, precision: str = defaults.PRECISION) -> None:
        self.cvqmae = cvqmae
        self.mesh_vqvae = mesh_vqvae
        self.vqmae = vqmae
        self.precision = resolve_precision(precision, str(self.device))
        if self.precision == "int8":
            for model in (cvqmae, vqmae):
                if model is not None:
                    quantize_token_transformer(model)

    def compile_models(self, backbone: bool = True, transformers: bool | None = None) -> bool:
        """Opt-in fast kernels: ``torch.compile`` (inductor) of the image backbone, and for the token transformers
        CUDA graphs on a GPU or oneDNN's matrix products on an x86-64 CPU. False, with a log line, where nothing
        could be done.

        backbone: compile the backbone with inductor *freezing*: the weights become constants of the compiled
        graph, so BatchNorm is folded into the convolutions before it and the weights are pre-packed for oneDNN
        (HRNet-W48 measured 1.3× faster on this CPU). On the CPU in fp32 it is compiled ahead of time
        (:mod:`mega_runtime.models.backbone_package`): the first call builds a package under
        ``<runtime cache>/compiled`` once per machine and weights, later processes load it in a second or two.
        Elsewhere (CUDA, bf16) ``torch.compile`` with freezing, which applies to every graph this process compiles
        afterwards. A compiled Mega is for inference only. Needs a C compiler on the CPU (``$CC``, cc, gcc or
        clang); without one the backbone stays eager.
        transformers: compile the token transformers too; None (default) = on CUDA only, where they run as CUDA
        graphs (``reduce-overhead``) and the per-step launch overhead is the cost. On the CPU they stay eager and
        their Linear layers take oneDNN's fp32 kernel instead (:mod:`mega_runtime.models.cpu_kernels`; 1.1–1.35×
        per product on this CPU, no compiler needed): inductor's own CPU code for them calls MKL and gained
        nothing measurable (docs/runtime-core.md) while costing minutes per step shape.
        ``torch.compile``'s kernels are cached under ``<runtime cache>/inductor`` (``TORCHINDUCTOR_CACHE_DIR``
        unless already set), but a frozen graph bypasses inductor's graph caches, so those paths still trace and
        lower the model in every process. Neither inductor nor
        oneDNN promises eager's bits (another summation order, folded BatchNorm): the tokens of the side-by-side
        benchmark were the official ones (docs/benchmarks.md), but fp32 without ``--compile`` is the exact mode.
        """
        import os
        import shutil

        from mega_runtime.models.backbone_package import use_packaged_forward
        from mega_runtime.models.cpu_kernels import use_onednn
        from mega_runtime.weights.registry import cache_dir

        if self.device.type not in ("cpu", "cuda"):  # inductor's Apple-GPU (MPS) backend is experimental
            log.warning("--compile: not on %s (only CPU and CUDA); running uncompiled", self.device.type)
            return False
        if self.precision == "int8":
            log.warning("--compile: not with --precision int8 (dynamically quantised layers); running uncompiled")
            return False
        on_gpu = self.device.type == "cuda"
        models = [m for m in (self.cvqmae, self.vqmae) if m is not None]
        compile_transformers = transformers if transformers is not None else on_gpu
        done = []
        # oneDNN's products only for eager transformers on the CPU (compiled ones get inductor's kernels)
        onednn = not on_gpu and not compile_transformers
        if any([use_onednn(model.encoder, onednn) + use_onednn(model.decoder, onednn) for model in models]):
            done.append("token transformers (oneDNN kernels)")
        compilers = [os.environ.get("CC") or "cc", "gcc", "clang"]
        if self.device.type == "cpu" and not any(shutil.which(c) for c in compilers):
            log.warning("--compile: no C compiler found (inductor needs one on the CPU); the backbone stays eager")
            log.info("compiled: %s", ", ".join(done) or "nothing")
            return bool(done)
        # before inductor is imported: importing it sets the variable to its own default in the system's temp folder
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        import torch._inductor.config as inductor_config

        cvqmae = self.cvqmae if backbone else None  # the model whose backbone is compiled, if any
        # ahead of time on the CPU in fp32: built once per machine and weights, loaded by later processes
        packaged = not on_gpu and self.precision == "fp32"
        if compile_transformers or (cvqmae is not None and not packaged):
            inductor_config.freezing = True  # torch.compile in this process: frozen weights
        if compile_transformers:
            mode = "reduce-overhead" if on_gpu else None
            for model in models:
                model.encoder = torch.compile(model.encoder, mode=mode, dynamic=False)
                model.decoder = torch.compile(model.decoder, mode=mode, dynamic=False)
            done.append(f"token transformers ({mode or 'default'})")
        if cvqmae is not None and packaged:
            folder = cache_dir() / "compiled"
            use_packaged_forward(cvqmae.backbone, folder)
            done.append(f"backbone (frozen, ahead of time, packages in {folder})")
        elif cvqmae is not None:
            # dynamic=None: a second batch size (people per batch vary) compiles one batch-dynamic graph, not one more
            # graph per size
            cvqmae.backbone = torch.compile(cvqmae.backbone)
            done.append("backbone (frozen)")
        log.info("compiled: %s; cache %s", ", ".join(done) or "nothing", os.environ["TORCHINDUCTOR_CACHE_DIR"])
        return True

    def low_precision(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on this device in ``bf16`` mode, else nothing."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def device(self) -> torch.device:
        return next(self.mesh_vqvae.parameters()).device

    @classmethod
    def from_checkpoints(
        cls,
        folder: Path | str,
        model: str | None = defaults.MODEL_SHORT_NAMES[defaults.DEFAULT_MODEL],
        assets_dir: Path | str | None = None,
        device: torch.device | str = "cpu",
        pretrained: bool = False,
        precision: str = defaults.PRECISION,
    ) -> Mega:
        """Load from an official checkpoint folder (``CVQMAE/…``, ``MESH_VQVAE/…``, ``VQMAE/…``).

        model: ``mega_resnet``, ``mega_hrnet``, ``mega_vit``, or None for no image model (generation
        only). assets_dir holds ``connection_matrices/`` (default ``$MEGA_ASSETS_DIR``).
        pretrained: also load the unconditional VQMAE. precision: see :class:`Mega`.
        """
        from mega_runtime.models.assets import load_connection_matrices

        folder = Path(folder)
        cvqmae = None
        config: CVQMAEConfig | None = None
        if model is not None:
            if model not in defaults.IMAGE_MODELS:
                raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(defaults.IMAGE_MODELS)}")
            found = model_config(folder, model)
            if not isinstance(found, CVQMAEConfig):
                raise ConfigError(f"{folder}/config.json describes {model} as a {type(found).__name__}")
            config = found
        assets = _assets_dir(assets_dir)
        if model is not None and config is not None:
            cvqmae = load_cvqmae(folder / CHECKPOINT_FILES[model], config, device)
        connections = load_connection_matrices(assets / "connection_matrices")
        mesh_vqvae = load_mesh_vqvae(folder / CHECKPOINT_FILES[defaults.TOKENIZER_MODEL], connections, device)
        vqmae = None
        if pretrained:
            vq_config = model_config(folder, defaults.PRETRAINED_MODEL)
            if not isinstance(vq_config, VQMAEConfig):
                raise ConfigError(
                    f"{folder}/config.json describes {defaults.PRETRAINED_MODEL} as a {type(vq_config).__name__}"
                )
            vqmae = load_vqmae(folder / CHECKPOINT_FILES[defaults.PRETRAINED_MODEL], vq_config, device)
        return cls(cvqmae, mesh_vqvae, vqmae, precision=precision)

    @torch.no_grad()
    def decode_meshes(self, tokens: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """(N, 54) codes → (N, 6890, 3) canonical meshes, in chunks of ``chunk`` rows to bound memory."""
        return torch.cat([self.mesh_vqvae.decode(part) for part in tokens.split(chunk)])

    @torch.no_grad()
    def reconstruct(
        self,
        images: torch.Tensor,
        num_hypotheses: int = 1,
        generator: torch.Generator | None = None,
        sampling: SamplingConfig = CVQMAE_SAMPLING,
        sampler: str = "full",
        numpy_rng: np.random.RandomState | None = None,
        scoring: ScoringConfig | None = DEFAULT_SCORING,
    ) -> MeshHypotheses:
        """Meshes for a batch of crops: the deterministic decode plus ``num_hypotheses − 1`` samples.

        images: (B, 3, H, W) float32 ImageNet-normalised RGB crops (224×224 for ResNet/HRNet).
        generator: seeds the ``full`` sampler; each image gets the same per-hypothesis seeds, so an
        image's hypotheses do not depend on the other images in the batch or on H.
        sampler: ``full`` (fills all 54 tokens) or ``official`` (the official ``generate()``, numpy RNG;
        ``numpy_rng`` defaults to a RandomState seeded from ``generator``).
        scoring: how every hypothesis is scored (:class:`ScoringConfig`; the default, 2 steps, costs one
        more transformer pass over all B·H rows — about a fifth of a 16-hypothesis call and a third of a
        deterministic one; ``steps=1`` scores from the all-masked logits the call already has, at no cost);
        None skips scoring: ``log_likelihood`` is None and nothing else changes. The backbone runs once per
        image whatever H is.
        """
        if self.cvqmae is None:
            raise ConfigError("no image model is loaded", hint="load with Mega.from_checkpoints(..., model=...)")
        if num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be at least 1, got {num_hypotheses}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        images = to_device(images, self.device)
        b, extra = images.shape[0], num_hypotheses - 1
        with self.low_precision():
            cond = self.cvqmae.condition(images)
            cond = replace(cond, rot6d=cond.rot6d.float(), cam=cond.cam.float())
            first, first_logits = argmax_with_logits(self.cvqmae, cond, b, self.device)
            tokens = first.tokens[:, None]
            if extra:
                generator = generator if generator is not None else torch.Generator().manual_seed(0)
                samples = self._sample(cond, first_logits, b, extra, generator, sampling, sampler, numpy_rng)
                tokens = torch.cat([tokens, samples.tokens.reshape(b, extra, -1)], dim=1)
            # One estimator for every hypothesis (the deterministic decode included), all rows in one batch.
            log_likelihood = None
            if scoring is not None:
                log_likelihood = score_tokens(
                    self.cvqmae,
                    cond.repeat(num_hypotheses),
                    tokens.flatten(0, 1),
                    scoring,
                    initial_logits=first_logits.repeat_interleave(num_hypotheses, dim=0),
                ).reshape(b, num_hypotheses)
        canonical = self.decode_meshes(tokens.flatten(0, 1)).reshape(b, num_hypotheses, -1, 3)
        rotation = rotation_6d_to_matrix(cond.rot6d)
        vertices = rotate_vertices(rotation, canonical)
        return MeshHypotheses(
            tokens=tokens,
            log_likelihood=log_likelihood,
            canonical=canonical,
            vertices=vertices,
            rotation=rotation,
            rot6d=cond.rot6d,
            cam=cond.cam,
            vertex_std=vertex_spread(vertices),
        )

    def _sample(self, cond, first_logits, b, extra, generator, sampling, sampler, numpy_rng) -> TokenSamples:
        if sampler == "full":
            seeds = row_seeds(generator, extra).repeat(b)
            initial = first_logits.repeat_interleave(extra, dim=0)
            return sample_tokens(self.cvqmae, cond.repeat(extra), seeds, sampling, initial_logits=initial)
        rng = numpy_rng or np.random.RandomState(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        # The official code samples one image at a time (the crop repeated H times).
        parts = [
            sample_tokens_official(self.cvqmae, cond.rows(slice(i, i + 1)).repeat(extra), extra, rng, sampling)
            for i in range(b)
        ]
        return TokenSamples(torch.cat([p.tokens for p in parts]))

    @torch.no_grad()
    def generate(
        self,
        num_bodies: int,
        generator: torch.Generator,
        sampling: SamplingConfig = VQMAE_SAMPLING,
        fixed: torch.Tensor | None = None,
    ) -> tuple[TokenSamples, torch.Tensor]:
        """Bodies with no image from the pre-trained model: scored tokens and (N, 6890, 3) canonical meshes.

        fixed: optional (N, 54) int64 with −1 where to sample and a code where the caller fixes one
        (completion). The official settings are 20 steps, temperature 1.3, power-5 annealing.
        """
        if self.vqmae is None:
            raise ConfigError(
                "no pre-trained (unconditional) model is loaded",
                hint="load with Mega.from_checkpoints(..., pretrained=True)",
            )
        with self.low_precision():
            samples = sample_tokens(self.vqmae, None, row_seeds(generator, num_bodies), sampling, fixed=fixed)
            samples = replace(samples, log_likelihood=score_tokens(self.vqmae, None, samples.tokens))
        return samples, self.decode_meshes(samples.tokens)

    @torch.no_grad()
    def complete(
        self,
        images: torch.Tensor,
        fixed: torch.Tensor,
        generator: torch.Generator,
        sampling: SamplingConfig = CVQMAE_SAMPLING,
    ) -> tuple[TokenSamples, torch.Tensor]:
        """Image-conditioned completion: (B, 54) codes with −1 where to sample → scored tokens and canonical meshes.

        The log-likelihood scores the whole completed sequence (fixed tokens included).
        """
        with self.low_precision():
            cond = self.cvqmae.condition(images.to(self.device))
            seeds = row_seeds(generator, images.shape[0])
            samples = sample_tokens(self.cvqmae, cond, seeds, sampling, fixed=fixed)
            samples = replace(samples, log_likelihood=score_tokens(self.cvqmae, cond, samples.tokens))
        return samples, self.decode_meshes(samples.tokens)


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux lists in /proc/cpuinfo (e.g. ``avx512_bf16``, ``amx_bf16``, ``avx512_vnni``).

    Empty where the file is absent (macOS, Windows) or unreadable.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(name: str, device: str = "cpu") -> str:
    """``fp32``, ``bf16`` or ``int8`` for running on ``device``; ``auto`` picks by what the hardware has.

    auto: CUDA → bf16 where the GPU computes in bfloat16 natively (Ampere and later), else fp32; CPU →
    int8 with VNNI (``avx512_vnni`` / ``avx_vnni`` in /proc/cpuinfo), else bf16 with AMX or AVX512-BF16
    (``amx_bf16`` / ``avx512_bf16``), else fp32; MPS and others → fp32. On the CPU int8 comes first because
    it measured both faster and closer to fp32 than bf16 (docs/benchmarks.md). Explicit names are kept,
    except int8 off the CPU (PyTorch's dynamic quantisation is CPU only), a MegaError.
    """
    if name not in defaults.PRECISIONS:
        raise MegaError(f"unknown precision {name!r}", hint=f"use one of {', '.join(defaults.PRECISIONS)}")
    kind = torch.device(device).type
    if name == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if kind == "cpu":
            flags = cpu_flags()
            if flags & {"avx512_vnni", "avx_vnni"}:
                return "int8"
            if flags & {"amx_bf16", "avx512_bf16"}:
                return "bf16"
        return "fp32"
    if name == "int8" and kind != "cpu":
        raise MegaError(
            f"precision int8 runs on the CPU only, not on {device}", hint="use --precision bf16 or fp32 on a GPU"
        )
    return name


def quantize_token_transformer(model: Any) -> None:
    """Replace the Linear layers of a token transformer's encoder and decoder by dynamically quantised int8 ones.

    In place; the image backbone (convolutions) and the small rotation/camera heads stay float32.
    """
    import warnings

    from torch.ao.quantization import quantize_dynamic

    def quantized(module: torch.nn.Module) -> torch.nn.Module:
        with warnings.catch_warnings():  # PyTorch marks its eager quantisation deprecated (torchao replaces it)
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            # Wrapped so that a bare Linear (the head) is swapped too: only children are replaced.
            return quantize_dynamic(torch.nn.Sequential(module), {torch.nn.Linear}, dtype=torch.qint8)[0]

    model.encoder.transformer = quantized(model.encoder.transformer)
    model.decoder.transformer = quantized(model.decoder.transformer)
    model.decoder.head = quantized(model.decoder.head)


def _assets_dir(explicit: Path | str | None) -> Path:
    import os

    from mega_runtime.errors import AssetError

    value = explicit or os.environ.get("MEGA_ASSETS_DIR")
    if not value:
        raise AssetError(
            "no assets folder: Mesh-VQ-VAE needs template.ply and connection_matrices/",
            hint="set MEGA_ASSETS_DIR to a folder that holds them (e.g. ../shared/assets)",
        )
    return Path(value)


def device_problem(device: str) -> str | None:
    """None if the ops the models need run on ``device``, else the first line of PyTorch's error.

    A tiny float32 run of what the networks and decoding use: bmm, index_select, scaled-dot-product
    attention, ELU, top-k, argmax and a copy back to the CPU. Takes a few milliseconds.
    """
    try:
        x = torch.arange(24, dtype=torch.float32, device=device).view(2, 3, 4) / 24
        y = torch.bmm(x, x.transpose(1, 2)).index_select(0, torch.tensor([1, 0], device=device))
        att = torch.nn.functional.scaled_dot_product_attention(x[None], x[None], x[None])
        torch.nn.functional.elu(att).flatten().topk(3).indices.sum().item()
        y.argmax(-1).cpu()
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def resolve_device(name: str = "auto") -> str:
    """The device MEGA runs on, checked to exist and to run the models here.

    ``auto`` → ``cuda`` when PyTorch sees a CUDA GPU; else ``mps`` when Apple's MPS is available and a
    tiny run of the ops the models need (float32 matmul, bmm, index_select, ELU, attention, top-k)
    works on it; else ``cpu``. The Mesh-VQ-VAE takes its gather path where sparse CSR is missing
    (MPS), and nothing the models or the decoding run on the device is float64 (float64 stays on the
    CPU: SMPL fitting, pre-processing, tracking), which MPS lacks.

    An explicit name (``cpu``, ``cuda``, ``cuda:N``, ``mps``) is returned as given when it can run here;
    otherwise a MegaError says why and how to fix it.
    """
    from mega_runtime.errors import MegaError

    def mps_available() -> bool:
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if mps_available():
            problem = device_problem("mps")
            if problem is None:
                return "mps"
            log.warning("MPS is available but cannot run the models (%s); using the CPU", problem)
        return "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise MegaError(f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MegaError(
                "device cuda was asked for, but this PyTorch sees no CUDA GPU",
                hint="use --device auto or cpu; for an NVIDIA GPU install a CUDA build of PyTorch "
                "(https://pytorch.org/get-started/locally/) and check that nvidia-smi lists the GPU",
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise MegaError(
                f"device {name} was asked for, but PyTorch sees {count} CUDA GPU(s) (cuda:0 … cuda:{count - 1})",
                hint="use --device cuda (the first GPU) or a listed index",
            )
    elif device.type == "mps":
        if not mps_available():
            raise MegaError(
                "device mps was asked for, but Apple's MPS is not available here",
                hint="use --device auto or cpu; MPS needs an Apple-silicon Mac with macOS 12.3 or later "
                "and a PyTorch build with MPS",
            )
        problem = device_problem("mps")
        if problem is not None:
            raise MegaError(
                f"device mps is available but cannot run the models: {problem}",
                hint="update PyTorch (pip install -U torch), or use --device cpu",
            )
    elif device.type != "cpu":
        raise MegaError(f"device {name!r} is not supported", hint="use auto, cpu, cuda, cuda:N or mps")
    return name
