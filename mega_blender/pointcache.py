"""PC2 point caches (the format Blender's Mesh Cache modifier reads), in plain numpy — no ``bpy``.

A PC2 file is a 32-byte header — ``b"POINTCACHE2\\0"``, version 1, point count, start frame, sample rate,
sample count (little-endian int32 / float32) — followed by ``samples × points × 3`` little-endian float32
coordinates. Blender's Mesh Cache modifier reads one sample per evaluation (it seeks; the file is never
loaded whole), which is what makes long clips cheap to play.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MAGIC = b"POINTCACHE2\0"
HEADER = np.dtype(
    [("magic", "S12"), ("version", "<i4"), ("points", "<i4"), ("start", "<f4"), ("rate", "<f4"), ("samples", "<i4")]
)


def write_pc2(path: Path, samples: np.ndarray) -> Path:
    """Write ``samples`` (S, V, 3) float32 (any float; stored as float32) as a PC2 file, atomically.

    Refuses to replace an existing file (callers choose a free name). Returns ``path``.
    """
    samples = np.asarray(samples)
    if samples.ndim != 3 or samples.shape[2] != 3 or samples.shape[0] < 1:
        raise ValueError(f"expected (samples, points, 3) coordinates, got shape {samples.shape}")
    chunks = (samples[i : i + 256] for i in range(0, samples.shape[0], 256))
    return write_pc2_chunks(path, samples.shape[0], samples.shape[1], chunks)


def write_pc2_chunks(path: Path, num_samples: int, num_points: int, chunks: Iterable[np.ndarray]) -> Path:
    """Write a PC2 file from ``chunks`` of (s, V, 3) samples that add up to ``num_samples`` (long clips never
    need all samples in memory at once); atomic, never overwriting. Returns ``path``."""
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    header = np.zeros(1, dtype=HEADER)
    header[0] = (MAGIC, 1, num_points, 0.0, 1.0, num_samples)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with open(tmp, "wb") as handle:
            handle.write(header.tobytes())
            for chunk in chunks:
                if chunk.ndim != 3 or chunk.shape[1:] != (num_points, 3):
                    raise ValueError(f"a chunk of shape {chunk.shape} does not hold ({num_points}, 3) points")
                handle.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
                written += chunk.shape[0]
        if written != num_samples:
            raise ValueError(f"{written} samples were written, {num_samples} announced")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_pc2(path: Path) -> np.ndarray:
    """A PC2 file as a read-only memory map (S, V, 3) float32; ValueError when it is not one."""
    header = np.fromfile(path, dtype=HEADER, count=1)
    if header.size != 1 or header[0]["magic"] != MAGIC.rstrip(b"\0") or header[0]["version"] != 1:
        raise ValueError(f"{path} is not a PC2 point cache")
    points, samples = int(header[0]["points"]), int(header[0]["samples"])
    expected = HEADER.itemsize + samples * points * 12
    if path.stat().st_size != expected:
        raise ValueError(f"{path} is truncated: {path.stat().st_size} bytes, expected {expected}")
    return np.memmap(path, dtype="<f4", mode="r", offset=HEADER.itemsize, shape=(samples, points, 3))


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or with ``-2``, ``-3``, … appended — the first name that does not exist."""
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate
