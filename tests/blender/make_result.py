"""Hand-made MEGA results for the Blender tests and the benchmark (numpy + json only; no runtime, no torch).

:func:`make_arrays` builds every array of ``docs/result-format.md`` with the documented dtypes and shapes:
synthetic but valid SMPL-sized meshes (6890 vertices, 13776 distinct non-degenerate triangles) placed in front
of the camera, one distinct shape per hypothesis, a known per-vertex spread and log-likelihoods. The writer
mirrors the format (json + npz); tests that need a broken file change the arrays or the JSON before writing.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_TOKENS = 54


def synthetic_faces() -> np.ndarray:
    """(13776, 3) int32 distinct, non-degenerate triangles over 6890 vertices."""
    a = np.arange(NUM_VERTICES - 2)
    strip = np.stack([a, a + 1, a + 2], axis=1)  # 6888
    b = np.arange(NUM_VERTICES - 4)
    wide = np.stack([b, b + 2, b + 4], axis=1)  # 6886
    c = np.arange(NUM_FACES - len(strip) - len(wide))
    wider = np.stack([c, c + 3, c + 6], axis=1)  # the rest
    return np.concatenate([strip, wide, wider]).astype(np.int32)


def make_arrays(
    num_people: int = 1,
    num_hypotheses: int = 4,
    num_frames: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Every array of a result: F frames × P people × H hypotheses (see the module docstring)."""
    rng = np.random.default_rng(seed)
    f, p, h, v = num_frames, num_people, num_hypotheses, NUM_VERTICES
    body = rng.normal(scale=0.3, size=(v, 3)).astype(np.float32)  # canonical body, metres
    cam_t = np.zeros((f, p, h, 3), np.float32)
    cam_t[..., 0] = np.linspace(-1.0, 1.0, p)[None, :, None] if p > 1 else 0.0
    cam_t[..., 1] = 0.2
    cam_t[..., 2] = 5.0 + np.arange(p)[None, :, None]
    offsets = rng.normal(scale=0.02, size=(f, p, h, v, 3)).astype(np.float32)
    offsets[:, :, 0] = 0.0  # hypothesis 0 = the body itself
    vertices = (body[None, None, None] + offsets + cam_t[:, :, :, None, :]).astype(np.float32)
    log_likelihood = rng.normal(loc=-50.0, scale=5.0, size=(f, p, h)).astype(np.float32)
    vertex_std = np.abs(rng.normal(scale=0.03, size=(f, p, v))).astype(np.float32)
    boxes = np.tile(np.array([100.0, 50.0, 300.0, 450.0], np.float32), (f, p, 1))
    return {
        "faces": synthetic_faces(),
        "vertices": vertices,
        "cam_t": cam_t,
        "tokens": rng.integers(0, 512, size=(f, p, h, NUM_TOKENS)).astype(np.int16),
        "log_likelihood": log_likelihood,
        "vertex_std": vertex_std,
        "rotation": np.tile(np.eye(3, dtype=np.float32), (f, p, 1, 1)),
        "cam_crop": np.tile(np.array([1.0, 0.0, 0.0], np.float32), (f, p, 1)),
        "boxes_xyxy": boxes,
        "track_ids": np.arange(p, dtype=np.int32),
        "valid": np.ones((f, p), dtype=bool),
        "frame_indices": np.arange(f, dtype=np.int32),
    }


def make_meta(
    width_px: int = 640,
    height_px: int = 480,
    focal_px: float | None = None,
    principal_px: tuple[float, float] | None = None,
    source_path: str | None = "photo.jpg",
) -> dict[str, Any]:
    """The JSON document of a result (without ``arrays``/``arrays_file``, which :func:`write_result` adds)."""
    focal = focal_px if focal_px is not None else 1000.0 / 224.0 * max(width_px, height_px)
    principal = principal_px if principal_px is not None else (width_px / 2.0, height_px / 2.0)
    return {
        "schema": "mega-result",
        "version": "1.0",
        "runtime_version": "0.1.0",
        "model": {"name": "mega_test", "backbone": "none"},
        "source": {"kind": "image", "path": source_path, "width": width_px, "height": height_px},
        "camera": {
            "focal_px": focal,
            "principal_point_px": list(principal),
            "convention": "opencv",
            "axes": "x right, y down, z forward",
            "units": "metres",
        },
        "sampling": {"sampler": "full", "seed": 0},
        "warnings": [],
    }


def write_result(
    folder: Path,
    name: str = "photo",
    arrays: dict[str, np.ndarray] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``<folder>/<name>.json`` + ``.npz``; returns the .json path."""
    arrays = make_arrays() if arrays is None else arrays
    meta = make_meta() if meta is None else dict(meta)
    folder.mkdir(parents=True, exist_ok=True)
    npz_path = folder / f"{name}.npz"
    np.savez(npz_path, **arrays)
    meta["arrays_file"] = npz_path.name
    meta["arrays"] = {k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in arrays.items()}
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return json_path


def write_photo(path: Path, width_px: int = 640, height_px: int = 480) -> Path:
    """A small grey-ramp PNG (written with zlib; no image library needed) for the camera's background."""
    rows = np.linspace(0, 255, height_px).astype(np.uint8)[:, None, None]
    pixels = np.broadcast_to(rows, (height_px, width_px, 3))
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height_px))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width_px, height_px, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path
