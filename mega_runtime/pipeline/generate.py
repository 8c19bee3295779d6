"""Bodies with no image, from MEGA's pre-trained unconditional model, as a result file.

The bodies are canonical meshes (body frame, y up, mean-centred). To give them the same
frame as reconstructions, each is turned to face a nominal camera (180° about x: y down,
facing −z) and placed 3 m in front of it, 1 m apart along x — one person each. With ``stack`` they are instead
the hypotheses of one person 3 m in front of the camera, most likely first (the add-on imports them as one object
whose shape keys are the bodies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import __version__, defaults
from mega_runtime.constants import NUM_TOKENS, NUM_VERTICES
from mega_runtime.io.result import Result

#: Nominal camera of generated bodies: square image, this many pixels, focal 1000/224 of it.
NOMINAL_IMAGE_PX = 1024
DISTANCE_M = 3.0
SPACING_M = 1.0


def generate_bodies(
    count: int,
    seed: int = defaults.SEED,
    checkpoint_dir: Path | str | None = None,
    assets_dir: Path | str | None = None,
    device: str = defaults.DEVICE,
    steps: int = defaults.GENERATE_STEPS,
    temperature: float = defaults.GENERATE_TEMPERATURE,
    stack: bool = False,
) -> Result:
    """Sample ``count`` bodies (official settings: 20 steps, temperature 1.3, power-5 annealing).

    Arrays (docs/result-format.md): vertices (1, count, 1, 6890, 3) float32 metres, or (1, 1, count, 6890, 3) with
    ``stack``.
    """
    import torch

    from mega_runtime.decoding.schedule import SamplingConfig
    from mega_runtime.mega import Mega, resolve_device
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.weights import resolve_assets_dir, resolve_checkpoint_dir

    assets = resolve_assets_dir(assets_dir)
    folder = resolve_checkpoint_dir(
        [defaults.PRETRAINED_MODEL, defaults.TOKENIZER_MODEL], checkpoint_dir, assets_dir=assets
    )
    mega = Mega.from_checkpoints(folder, None, assets_dir=assets, device=resolve_device(device), pretrained=True)
    sampling = SamplingConfig(steps=steps, temperature=temperature, annealing=defaults.GENERATE_ANNEALING)
    samples, canonical = mega.generate(count, torch.Generator().manual_seed(seed), sampling)
    if samples.log_likelihood is None:  # Mega.generate scores every body; a None here is a bug, not an input
        raise RuntimeError("Mega.generate returned unscored samples")
    turn = np.diag([1.0, -1.0, -1.0]).astype(np.float32)
    offsets = (np.arange(count) - (count - 1) / 2) * SPACING_M
    if stack:
        offsets = np.zeros(count)
    cam_t = np.stack([offsets, np.zeros(count), np.full(count, DISTANCE_M)], axis=1).astype(np.float32)
    bodies = canonical.cpu().numpy()
    bodies = bodies - bodies.mean(axis=1, keepdims=True)  # trained decoders give mean-centred meshes; make sure
    vertices = bodies @ turn.T + cam_t[:, None, :]
    tokens = samples.tokens.cpu().numpy().astype(np.int16)
    log_likelihood = samples.log_likelihood.cpu().numpy().astype(np.float32)
    if stack:
        return _stacked(count, seed, steps, temperature, str(mega.device), assets, vertices, tokens, log_likelihood)
    arrays = {
        "faces": read_template_ply(assets / "template.ply").faces,
        "vertices": vertices[None, :, None].astype(np.float32),
        "cam_t": cam_t[None, :, None],
        "tokens": tokens.reshape(1, count, 1, NUM_TOKENS),
        "log_likelihood": log_likelihood.reshape(1, count, 1),
        "vertex_std": np.zeros((1, count, NUM_VERTICES), np.float32),
        "rotation": np.broadcast_to(turn, (1, count, 3, 3)).copy(),
        "cam_crop": np.zeros((1, count, 3), np.float32),
        "boxes_xyxy": np.zeros((1, count, 4), np.float32),
        "track_ids": np.arange(count, dtype=np.int32),
        "valid": np.ones((1, count), bool),
        "frame_indices": np.zeros(1, np.int32),
    }
    return Result(meta=_meta(1, seed, steps, temperature, str(mega.device)), arrays=arrays)


def _meta(hypotheses: int, seed: int, steps: int, temperature: float, device: str) -> dict[str, Any]:
    from mega_runtime.pipeline.chain import camera_meta

    size = NOMINAL_IMAGE_PX
    sampling = {"sampler": "full", "num_hypotheses": hypotheses, "seed": seed, "steps": steps}
    sampling["temperature"] = temperature
    return {
        "runtime_version": __version__,
        "model": {"name": defaults.PRETRAINED_MODEL},
        "source": {"kind": "generated", "width": size, "height": size},
        "camera": camera_meta(size, size),
        "sampling": sampling,
        "detector": None,
        "device": device,
        "warnings": [],
        "timings_ms": {},
    }


def _stacked(
    count: int,
    seed: int,
    steps: int,
    temperature: float,
    device: str,
    assets: Path,
    vertices: np.ndarray,
    tokens: np.ndarray,
    log_likelihood: np.ndarray,
) -> Result:
    """The bodies as the hypotheses of one person, most likely first; per-vertex spread over them."""
    from mega_runtime.models.assets import read_template_ply

    order = np.argsort(-log_likelihood, kind="stable")
    vertices, tokens, log_likelihood = vertices[order], tokens[order], log_likelihood[order]
    spread = np.sqrt(np.square(vertices - vertices.mean(axis=0)).sum(axis=-1).mean(axis=0))
    arrays = {
        "faces": read_template_ply(assets / "template.ply").faces,
        "vertices": vertices[None, None].astype(np.float32),
        "cam_t": np.broadcast_to(np.array([0.0, 0.0, DISTANCE_M], np.float32), (1, 1, count, 3)).copy(),
        "tokens": tokens.reshape(1, 1, count, NUM_TOKENS),
        "log_likelihood": log_likelihood.reshape(1, 1, count),
        "vertex_std": spread[None, None].astype(np.float32),
        "rotation": np.diag([1.0, -1.0, -1.0]).astype(np.float32)[None, None],
        "cam_crop": np.zeros((1, 1, 3), np.float32),
        "boxes_xyxy": np.zeros((1, 1, 4), np.float32),
        "track_ids": np.zeros(1, dtype=np.int32),
        "valid": np.ones((1, 1), bool),
        "frame_indices": np.zeros(1, np.int32),
    }
    return Result(meta=_meta(count, seed, steps, temperature, device), arrays=arrays)
