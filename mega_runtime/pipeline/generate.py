"""Bodies with no image, from MEGA's pre-trained unconditional model, as a result file.

The bodies are canonical meshes (body frame, y up, mean-centred). To give them the same
frame as reconstructions, each is turned to face a nominal camera (180° about x: y down,
facing −z) and placed 3 m in front of it, 1 m apart along x.
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
) -> Result:
    """Sample ``count`` bodies (official settings: 20 steps, temperature 1.3, power-5 annealing)."""
    import torch

    from mega_runtime.decoding.schedule import SamplingConfig
    from mega_runtime.mega import Mega, resolve_device
    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.pipeline.chain import camera_meta
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
    cam_t = np.stack([offsets, np.zeros(count), np.full(count, DISTANCE_M)], axis=1).astype(np.float32)
    bodies = canonical.cpu().numpy()
    bodies = bodies - bodies.mean(axis=1, keepdims=True)  # trained decoders give mean-centred meshes; make sure
    vertices = bodies @ turn.T + cam_t[:, None, :]
    arrays = {
        "faces": read_template_ply(assets / "template.ply").faces,
        "vertices": vertices[None, :, None].astype(np.float32),
        "cam_t": cam_t[None, :, None],
        "tokens": samples.tokens.cpu().numpy().astype(np.int16).reshape(1, count, 1, NUM_TOKENS),
        "log_likelihood": samples.log_likelihood.cpu().numpy().astype(np.float32).reshape(1, count, 1),
        "vertex_std": np.zeros((1, count, NUM_VERTICES), np.float32),
        "rotation": np.broadcast_to(turn, (1, count, 3, 3)).copy(),
        "cam_crop": np.zeros((1, count, 3), np.float32),
        "boxes_xyxy": np.zeros((1, count, 4), np.float32),
        "track_ids": np.arange(count, dtype=np.int32),
        "valid": np.ones((1, count), bool),
        "frame_indices": np.zeros(1, np.int32),
    }
    size = NOMINAL_IMAGE_PX
    meta: dict[str, Any] = {
        "runtime_version": __version__,
        "model": {"name": defaults.PRETRAINED_MODEL},
        "source": {"kind": "generated", "width": size, "height": size},
        "camera": camera_meta(size, size),
        "sampling": {"sampler": "full", "num_hypotheses": 1, "seed": seed, "steps": steps, "temperature": temperature},
        "detector": None,
        "device": str(mega.device),
        "warnings": [],
        "timings_ms": {},
    }
    return Result(meta=meta, arrays=arrays)
