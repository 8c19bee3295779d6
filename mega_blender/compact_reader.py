"""Torch-free decoder of the compact meshes of result format 2.x (``docs/result-format.md``).

A format-2 result stores, per track, a mean mesh and K basis directions in the body's canonical frame, and per
mesh K coefficients plus the coordinates the basis misses, as whole millimetres (``mega_runtime/io/compact.py``
writes them). :class:`CompactMeshes` decodes them on demand — only the frames and people indexed — as
``R · (mean + coeffs · basis) + t`` plus the fixes, the same float32 operations as the runtime's ``predict``.

This module re-implements the decoding on its own (the add-on shares only the documented format with
``mega_runtime``, never its code; ``tests/contract/test_result_compact.py`` keeps the two in step). The checks
of the arrays are :mod:`mega_blender.result_reader`'s, which puts :class:`CompactMeshes` in place of
``vertices``. Imports: numpy and the standard library only (no bpy), so it is unit-tested in plain CPython.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Vertices of a mesh of the SMPL topology.
NUM_VERTICES = 6890
#: Step of the compact format's fixes, metres (``docs/result-format.md``).
COMPACT_QUANTUM_M = 0.001

#: Format 2: what replaces ``vertices`` (symbols: K basis size, N fixes); ``smoothed_*`` as in
#: :data:`COMPACT_SMOOTHED_ARRAYS` when the result has a smoothed path.
COMPACT_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "mesh_mean": ("float32", ("P", NUM_VERTICES, 3)),
    "mesh_basis": ("float16", ("P", "K", NUM_VERTICES, 3)),
    "vertices_coeffs": ("float16", ("F", "P", "H", "K")),
    "vertices_fix_count": ("int32", ("F", "P", "H")),
    "vertices_fix_index": ("uint16", ("N",)),
    "vertices_fix_value": ("int16", ("N",)),
    "vertex_std_q": ("uint16", ("F", "P", NUM_VERTICES)),
}
COMPACT_SMOOTHED_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "smoothed_coeffs": ("float16", ("F", "P", "K")),
    "smoothed_fix_count": ("int32", ("F", "P")),
    "smoothed_fix_index": ("uint16", ("M",)),
    "smoothed_fix_value": ("int16", ("M",)),
}


class CompactMeshes:
    """The meshes of a format-2 result as a read-only float32 array-like, decoded on demand.

    Shape (F, P, H, 6890, 3) (``vertices``) or (F, P, 6890, 3) (``smoothed_vertices``), metres, OpenCV camera
    frame. Indexing works as on a numpy array (integers, slices, integer and boolean arrays); only the frames
    and people asked for are decoded: ``R · (mean + coeffs · basis) + t`` plus the millimetre fixes.
    ``np.asarray`` decodes everything.
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        mean: np.ndarray,
        basis: np.ndarray,
        coeffs: np.ndarray,
        fix_count: np.ndarray,
        fix_index: np.ndarray,
        fix_value: np.ndarray,
        rotation: np.ndarray,
        translation: np.ndarray,
        single: bool = False,
    ) -> None:
        self._mean, self._basis = mean, basis
        self._coeffs = coeffs[:, :, None] if single else coeffs  # (F, P, S, K)
        self._count = (fix_count[:, :, None] if single else fix_count).astype(np.int64)  # (F, P, S)
        self._starts = np.concatenate([[0], np.cumsum(self._count.ravel())])[:-1].reshape(self._count.shape)
        self._index, self._value = fix_index.astype(np.int64), fix_value
        self._rotation = rotation.astype(np.float32)
        self._translation = (translation[:, :, None] if single else translation).astype(np.float32)  # (F, P, S, 3)
        self._single = single
        f, p, s = self._count.shape
        self.shape: tuple[int, ...] = (f, p, NUM_VERTICES, 3) if single else (f, p, s, NUM_VERTICES, 3)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self[:, :]
        return full if dtype is None else full.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in key):
            return np.asarray(self)[key]
        cell_axes = 2 if self._single else 3
        if len(key) >= cell_axes and all(_is_integer_index(k) for k in key[:cell_axes]):
            # every mesh named one by one (e.g. [frames, person, chosen]): decode exactly those meshes
            sizes = self._count.shape
            parts = [_checked(np.asarray(k), sizes[axis]) for axis, k in enumerate(key[:cell_axes])]
            cells = np.broadcast_arrays(*parts)
            shape = cells[0].shape
            flat = [c.ravel() for c in cells] + ([np.zeros(cells[0].size, np.int64)] if self._single else [])
            meshes = self._decode_cells(*flat).reshape(*shape, NUM_VERTICES, 3)
            return meshes[(*(slice(None),) * len(shape), *key[cell_axes:])]
        key = key + (slice(None),) * max(0, cell_axes - len(key))
        frames, frame_key = _axis_positions(key[0], self.shape[0])
        people, person_key = _axis_positions(key[1], self.shape[1])
        if self._single:
            hypotheses, rest = np.array([0]), (0, *key[2:])
        else:
            hypotheses, hypothesis_key = _axis_positions(key[2], self._count.shape[2])
            rest = (hypothesis_key, *key[3:])
        f, p, h = np.meshgrid(frames, people, hypotheses, indexing="ij")
        block = self._decode_cells(f.ravel(), p.ravel(), h.ravel())
        block = block.reshape(frames.size, people.size, hypotheses.size, NUM_VERTICES, 3)
        return block[(frame_key, person_key, *rest)]

    def _decode_cells(self, frames: np.ndarray, people: np.ndarray, hypotheses: np.ndarray) -> np.ndarray:
        """Meshes (n, V, 3) float32 metres of the n cells (frames[i], people[i], hypotheses[i])."""
        out = np.empty((frames.size, NUM_VERTICES, 3), np.float32)
        k = self._basis.shape[1]
        for person in np.unique(people):
            rows = np.flatnonzero(people == person)
            f, h = frames[rows], hypotheses[rows]
            basis = self._basis[person].reshape(k, NUM_VERTICES * 3).astype(np.float32)
            coeffs = self._coeffs[f, person, h].reshape(rows.size, k).astype(np.float32)
            canonical = self._mean[person].reshape(1, NUM_VERTICES * 3).astype(np.float32) + coeffs @ basis
            posed = canonical.reshape(rows.size, NUM_VERTICES, 3) @ np.swapaxes(self._rotation[f, person], 1, 2)
            posed += self._translation[f, person, h][:, None, :]
            counts, starts = self._count[f, person, h], self._starts[f, person, h]
            total = int(counts.sum())
            if total:
                mesh = np.repeat(np.arange(rows.size), counts)
                picked = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
                flat = posed.reshape(rows.size, NUM_VERTICES * 3)
                quanta = self._value[picked].astype(np.float32) * np.float32(COMPACT_QUANTUM_M)
                flat[mesh, self._index[picked]] += quanta
            out[rows] = posed
        return out


def _is_integer_index(key: Any) -> bool:
    if isinstance(key, bool):
        return False
    if isinstance(key, int | np.integer):
        return True
    return isinstance(key, list | np.ndarray) and np.asarray(key).dtype.kind in "iu"


def _checked(index: np.ndarray, size: int) -> np.ndarray:
    """Integer ``index`` with negative entries counted from the end; IndexError when out of ``0 … size − 1``."""
    index = np.where(index < 0, index + size, index).astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= size):
        raise IndexError(f"an index is out of bounds for an axis of size {size}")
    return index


def _axis_positions(key: Any, size: int) -> tuple[np.ndarray, Any]:
    """(sorted indices to decode along an axis of ``size``, the key that picks ``key``'s items from them)."""
    if isinstance(key, slice):
        return np.arange(size)[key], slice(None)
    if isinstance(key, int | np.integer):
        index = int(key) + size if int(key) < 0 else int(key)
        if not 0 <= index < size:
            raise IndexError(f"index {int(key)} is out of bounds for an axis of size {size}")
        return np.array([index]), 0
    array = np.asarray(key)
    if array.dtype == bool:
        array = np.flatnonzero(array)
    array = _checked(array, size)
    unique = np.unique(array)
    return unique, np.searchsorted(unique, array)
