"""What the Reconstruct button sends, in plain Python (no ``bpy``): pixels → PNG, clip frames → file frames.

* :func:`write_png` writes Blender image pixels (what ``Image.pixels.foreach_get`` gives: float32 RGBA rows,
  bottom row first, 0…1) as an 8-bit PNG, for images that have no file of their own (packed, generated,
  painted and unsaved). Only ``zlib`` is needed.
* :func:`clip_file_frames` maps a range of scene frames to the 0-based frame indices of a Movie Clip's file,
  the convention of the runtime's ``frames`` option.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1) on linear values in 0…1 (any shape, float)."""
    v = np.clip(values, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1.0 / 2.4) - 0.055)


def png_bytes(rgba: np.ndarray) -> bytes:
    """An 8-bit RGBA PNG of ``rgba`` (H, W, 4) uint8, top row first."""
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 4) uint8 pixels, got {rgba.shape} {rgba.dtype}")
    height, width = rgba.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, width * 4)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: Path, pixels: np.ndarray, width: int, height: int, *, linear: bool) -> Path:
    """Write Blender pixels as a PNG.

    ``pixels``: float32, ``width·height·channels`` values (1–4 channels), rows bottom first as Blender stores
    them, 0…1; ``linear``: True for float images in a linear colour space (converted to sRGB), False when the
    values are already display-referred (byte images). Returns ``path``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"the image has no pixels ({width}×{height})")
    count = pixels.size // (width * height)
    if count not in (1, 2, 3, 4) or pixels.size != width * height * count:
        raise ValueError(f"{pixels.size} values do not make a {width}×{height} image")
    image = np.asarray(pixels, dtype=np.float32).reshape(height, width, count)[::-1]
    if count < 3:
        image = np.concatenate([np.repeat(image[..., :1], 3, axis=2), image[..., 1:]], axis=2)
    rgb = linear_to_srgb(image[..., :3]) if linear else np.clip(image[..., :3], 0.0, 1.0)
    alpha = np.clip(image[..., 3:4], 0.0, 1.0) if image.shape[2] == 4 else np.ones_like(rgb[..., :1])
    rgba = np.round(np.concatenate([rgb, alpha], axis=2) * 255.0).astype(np.uint8)
    path.write_bytes(png_bytes(np.ascontiguousarray(rgba)))
    return path


def clip_file_frames(
    scene_start: int, scene_end: int, clip_start: int, clip_offset: int, clip_duration: int
) -> tuple[int, int]:
    """Scene frames ``scene_start…scene_end`` (inclusive) → file frames ``[start, stop)`` (0-based) of a clip.

    A Movie Clip shows its frame ``scene_frame − clip_start + clip_offset + 1`` (1-based) at ``scene_frame``;
    file frame = clip frame − 1. The range is clamped to the clip; raises ValueError when they do not overlap.
    """
    if scene_end < scene_start:
        raise ValueError(f"the frame range {scene_start}–{scene_end} is empty")
    start = scene_start - clip_start + clip_offset
    stop = scene_end - clip_start + clip_offset + 1
    start, stop = max(start, 0), min(stop, clip_duration)
    if stop <= start:
        raise ValueError(
            f"scene frames {scene_start}–{scene_end} show none of the clip's {clip_duration} frames "
            f"(it starts at scene frame {clip_start}); change the frame range or the clip's start frame"
        )
    return start, stop
