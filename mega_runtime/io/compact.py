"""Compact meshes of result format 2 (``docs/result-format.md``): a per-track basis plus sparse millimetre fixes.

A result of format 1 stores every vertex of every hypothesis in float32 (82,680 bytes per mesh, 1.3 MiB per
person-frame with 16 hypotheses). Format 2 stores, per track p, the mean mesh and K directions of its meshes in
the body's canonical frame, and per mesh (frame f, person p, hypothesis h) K coefficients plus the coordinates
the basis misses by more than half a millimetre, as whole millimetres:

    mesh = R[f, p] · (mean[p] + Σ_k coeffs[f, p, h, k] · basis[p, k]) + t[f, p, h] + fixes · quantum

``R`` is the result's ``rotation`` and ``t`` its ``cam_t`` (``smoothed_cam_t`` for the smoothed path). The
writer computes the prediction with :func:`predict` — the same float32 operations a reader performs — and stores
``rint((true − prediction) / quantum)`` for every coordinate where that is not zero, so every coordinate read back
is within ``quantum / 2`` = 0.5 mm of the float32 original (a vertex within 0.87 mm). Readers on other machines
may round the prediction differently by ~1e-7 m, far inside the 1 mm promise. K is chosen per track from
:data:`BASIS_SIZES` as the one that gives the smallest file (tried on a few of its meshes).

numpy only (the add-on re-implements :func:`predict` and the fixes in ``mega_blender/compact_reader.py``).
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass

import numpy as np

from mega_runtime.constants import NUM_VERTICES

log = logging.getLogger(__name__)

#: Step of the fixes, metres: every coordinate is stored within half of it.
QUANTUM_M = 0.001
#: Candidate basis sizes per track; the smallest encoding wins (0 = the mean alone).
BASIS_SIZES = (0, 8, 16, 32, 64, 96)
#: At most this many meshes of a track are used to fit its basis (evenly spaced); all are projected on it.
MAX_FIT_MESHES = 384
#: Meshes on which the basis size is chosen (evenly spaced over the track).
SIZE_TRIAL_MESHES = 48
#: Meshes processed at once when projecting, predicting and fixing (bounds memory: ~83 kB per mesh and array).
CHUNK_MESHES = 256
_COORDS = NUM_VERTICES * 3
_INT16_MAX = np.iinfo(np.int16).max
_FLOAT16_MAX = 60000.0


@dataclass(frozen=True)
class EncodedMeshes:
    """One set of meshes (F, P, S, V, 3) encoded on a shared basis; S = H hypotheses or 1 (the smoothed path).

    ``coeffs``: (F, P, S, K) float16; ``fix_count``: (F, P, S) int32, fixes per mesh in C order;
    ``fix_index``: (N,) uint16 coordinate index v·3 + axis within its mesh, increasing per mesh;
    ``fix_value``: (N,) int16 whole quanta to add; ``max_error_m``: largest coordinate error once decoded.
    """

    coeffs: np.ndarray
    fix_count: np.ndarray
    fix_index: np.ndarray
    fix_value: np.ndarray
    max_error_m: float


def predict(
    mean: np.ndarray, basis: np.ndarray, coeffs: np.ndarray, rotation: np.ndarray, translation: np.ndarray
) -> np.ndarray:
    """The basis part of n meshes of one track, camera frame, float32.

    ``mean`` (V, 3) float32, ``basis`` (K, V, 3) float16, ``coeffs`` (n, K) float16, ``rotation`` (n, 3, 3)
    float32, ``translation`` (n, 3) float32 metres → (n, V, 3) float32 metres.
    """
    n = coeffs.shape[0]
    canonical = np.broadcast_to(mean.reshape(1, -1), (n, mean.size)).astype(np.float32)
    if basis.shape[0]:
        canonical = canonical + coeffs.astype(np.float32) @ basis.reshape(basis.shape[0], -1).astype(np.float32)
    canonical = canonical.reshape(n, NUM_VERTICES, 3)
    return (canonical @ np.swapaxes(rotation.astype(np.float32), 1, 2) + translation[:, None, :]).astype(np.float32)


def fit_basis(canonical: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (V, 3) float32 and the ``size`` leading principal directions (size, V, 3) float16 of meshes
    ``canonical`` (n, V, 3) float32 (at most :data:`MAX_FIT_MESHES` of them, evenly spaced, are used)."""
    n = canonical.shape[0]
    if n == 0:
        return np.zeros((NUM_VERTICES, 3), np.float32), np.zeros((0, NUM_VERTICES, 3), np.float16)
    pick = np.unique(np.linspace(0, n - 1, min(n, MAX_FIT_MESHES)).round().astype(np.int64))
    sample = canonical[pick].reshape(len(pick), -1).astype(np.float64)
    mean = sample.mean(axis=0)
    centred = sample - mean
    size = min(size, len(pick) - 1) if len(pick) > 1 else 0
    if size <= 0:
        return mean.reshape(-1, 3).astype(np.float32), np.zeros((0, NUM_VERTICES, 3), np.float16)
    gram = centred @ centred.T
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:size]
    keep = order[values[order] > 1e-12 * max(float(values.max()), 1e-30)]
    directions = (vectors[:, keep].T @ centred) / np.sqrt(values[keep])[:, None]
    return mean.reshape(-1, 3).astype(np.float32), directions.reshape(-1, NUM_VERTICES, 3).astype(np.float16)


def _project(canonical: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (n, K) float16 of meshes (n, V, 3) on the stored (float16) basis."""
    if basis.shape[0] == 0:
        return np.zeros((canonical.shape[0], 0), np.float16)
    b = basis.reshape(basis.shape[0], -1).astype(np.float64)
    gram_inv = np.linalg.pinv(b @ b.T)
    centred = canonical.reshape(canonical.shape[0], -1).astype(np.float64) - mean.reshape(1, -1)
    coeffs = (centred @ b.T) @ gram_inv
    return np.clip(coeffs, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)  # far from any body: fixes do the rest


def _fixes(true: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, float]:
    """(n, V·3) int64 whole quanta that bring ``predicted`` within half a quantum of ``true``, and that error."""
    diff = true.reshape(true.shape[0], -1).astype(np.float64) - predicted.reshape(true.shape[0], -1)
    steps = np.rint(diff / QUANTUM_M)
    if np.abs(steps).max(initial=0) > _INT16_MAX:
        raise ValueError(f"a mesh is {np.abs(diff).max():.1f} m from its basis prediction: not a body mesh")
    error = np.abs(diff - steps * QUANTUM_M).max(initial=0.0)
    return steps.astype(np.int64), float(error)


def _canonical(vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(n, V, 3) camera-frame meshes → the body frame: Rᵀ(v − t), float32."""
    return ((vertices - translation[:, None, :]) @ rotation.astype(np.float32)).astype(np.float32)


def _deflated_size(*arrays: np.ndarray) -> int:
    return sum(len(zlib.compress(np.ascontiguousarray(a).tobytes(), 6)) for a in arrays)


@dataclass(frozen=True)
class _Track:
    mean: np.ndarray
    basis: np.ndarray
    coeffs: np.ndarray  # (n, K) for the meshes in ``rows``
    steps: list[np.ndarray]  # per chunk (m, V·3) int64
    error: float


def _encode_track(meshes: np.ndarray, rotation: np.ndarray, translation: np.ndarray, sizes: tuple[int, ...]) -> _Track:
    """Encode meshes (n, V, 3) of one track (rotation (n, 3, 3), translation (n, 3)) with the best basis size.

    The size is chosen on up to :data:`SIZE_TRIAL_MESHES` meshes (evenly spaced): the file size each candidate
    would give (basis + coefficients + the trial's deflated fixes scaled to all meshes); then every mesh is
    encoded with the winner.
    """
    n = meshes.shape[0]
    if n == 0:
        empty = np.zeros((0, NUM_VERTICES, 3), np.float16)
        return _Track(np.zeros((NUM_VERTICES, 3), np.float32), empty, np.zeros((0, 0), np.float16), [], 0.0)
    chunks = range(0, n, CHUNK_MESHES)
    canonical = np.zeros((n, NUM_VERTICES, 3), np.float32)
    for i in chunks:
        s = slice(i, i + CHUNK_MESHES)
        canonical[s] = _canonical(meshes[s], rotation[s], translation[s])
    mean, full_basis = fit_basis(canonical, max(sizes))
    trial = np.unique(np.linspace(0, max(n - 1, 0), min(n, SIZE_TRIAL_MESHES)).round().astype(np.int64))
    best_size, best_bytes = 0, -1.0
    for size in sorted({min(s, full_basis.shape[0]) for s in sizes}):
        basis = full_basis[:size]
        coeffs = _project(canonical[trial], mean, basis)
        steps, _ = _fixes(meshes[trial], predict(mean, basis, coeffs, rotation[trial], translation[trial]))
        where = [np.flatnonzero(row) for row in steps]
        fixes = _deflated_size(
            *(row[w].astype(np.int16) for row, w in zip(steps, where, strict=True)),
            *(w.astype(np.uint16) for w in where),
        )
        total = basis.nbytes + n * size * 2 + fixes * n / max(len(trial), 1)
        log.debug("basis size %d: about %d bytes for %d meshes", size, total, n)
        if best_bytes < 0 or total < best_bytes:
            best_size, best_bytes = size, total
    basis = full_basis[:best_size]
    coeffs_parts, step_parts, error = [], [], 0.0
    for i in chunks:
        s = slice(i, i + CHUNK_MESHES)
        coeffs = _project(canonical[s], mean, basis)
        chunk_steps, chunk_error = _fixes(meshes[s], predict(mean, basis, coeffs, rotation[s], translation[s]))
        coeffs_parts.append(coeffs)
        step_parts.append(chunk_steps)
        error = max(error, chunk_error)
    coeffs_all = np.concatenate(coeffs_parts) if coeffs_parts else np.zeros((0, best_size), np.float16)
    return _Track(mean, basis, coeffs_all, step_parts, error)


def encode(
    vertices: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    mean: np.ndarray | None = None,
    basis: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, EncodedMeshes]:
    """Encode meshes ``vertices`` (F, P, S, V, 3) float32 metres (camera frame) of rotations (F, P, 3, 3) and
    translations (F, P, S, 3).

    Without ``mean``/``basis`` one basis per track is fitted (size from :data:`BASIS_SIZES`); with them (the
    (P, V, 3) means and (P, K, V, 3) bases of another set of the same result) those are used. Returns (mean,
    basis, encoded): the bases of every track padded with zero directions to the largest K.
    """
    f, p, s = vertices.shape[:3]
    fitted = mean is None or basis is None
    tracks: list[_Track] = []
    for person in range(p):
        meshes = vertices[:, person].reshape(f * s, NUM_VERTICES, 3)
        rot = np.repeat(rotation[:, person], s, axis=0)
        trans = translation[:, person].reshape(f * s, 3)
        if fitted:
            tracks.append(_encode_track(meshes, rot, trans, BASIS_SIZES))
        else:
            assert mean is not None and basis is not None
            tracks.append(_encode_given(meshes, rot, trans, mean[person], basis[person]))
    k = max((t.basis.shape[0] for t in tracks), default=0)
    if fitted:
        mean = np.stack([t.mean for t in tracks]) if tracks else np.zeros((0, NUM_VERTICES, 3), np.float32)
        basis = np.zeros((p, k, NUM_VERTICES, 3), np.float16)
        for person, track in enumerate(tracks):
            basis[person, : track.basis.shape[0]] = track.basis
    assert mean is not None and basis is not None
    k = basis.shape[1]
    coeffs = np.zeros((f, p, s, k), np.float16)
    counts = np.zeros((f, p, s), np.int32)
    index_parts: list[list[np.ndarray]] = [[] for _ in range(f * p * s)]
    value_parts: list[list[np.ndarray]] = [[] for _ in range(f * p * s)]
    for person, track in enumerate(tracks):
        coeffs[:, person, :, : track.coeffs.shape[1]] = track.coeffs.reshape(f, s, track.coeffs.shape[1])
        row = 0
        for chunk in track.steps:
            for mesh_steps in chunk:
                frame, sample = divmod(row, s)
                where = np.flatnonzero(mesh_steps)
                cell = (frame * p + person) * s + sample
                index_parts[cell].append(where.astype(np.uint16))
                value_parts[cell].append(mesh_steps[where].astype(np.int16))
                counts[frame, person, sample] = where.size
                row += 1
    flat_index = [a for parts in index_parts for a in parts]
    flat_value = [a for parts in value_parts for a in parts]
    encoded = EncodedMeshes(
        coeffs=coeffs,
        fix_count=counts,
        fix_index=np.concatenate(flat_index) if flat_index else np.zeros(0, np.uint16),
        fix_value=np.concatenate(flat_value) if flat_value else np.zeros(0, np.int16),
        max_error_m=max((t.error for t in tracks), default=0.0),
    )
    return mean, basis, encoded


def _encode_given(
    meshes: np.ndarray, rotation: np.ndarray, translation: np.ndarray, mean: np.ndarray, basis: np.ndarray
) -> _Track:
    n = meshes.shape[0]
    coeffs_list, steps, error = [], [], 0.0
    for i in range(0, n, CHUNK_MESHES):
        s = slice(i, i + CHUNK_MESHES)
        coeffs = _project(_canonical(meshes[s], rotation[s], translation[s]), mean, basis)
        chunk_steps, chunk_error = _fixes(meshes[s], predict(mean, basis, coeffs, rotation[s], translation[s]))
        coeffs_list.append(coeffs)
        steps.append(chunk_steps)
        error = max(error, chunk_error)
    coeffs_all = np.concatenate(coeffs_list) if coeffs_list else np.zeros((0, basis.shape[0]), np.float16)
    return _Track(mean, basis, coeffs_all, steps, error)


def decode(
    mean: np.ndarray,
    basis: np.ndarray,
    coeffs: np.ndarray,
    fix_count: np.ndarray,
    fix_index: np.ndarray,
    fix_value: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
) -> np.ndarray:
    """All meshes (F, P, S, V, 3) float32 metres of one encoded set (arrays as in :class:`EncodedMeshes`;
    ``mean`` (P, V, 3), ``basis`` (P, K, V, 3), ``rotation`` (F, P, 3, 3), ``translation`` (F, P, S, 3))."""
    f, p, s, _ = coeffs.shape
    out = np.empty((f, p, s, NUM_VERTICES, 3), np.float32)
    for person in range(p):
        rot = np.repeat(rotation[:, person], s, axis=0)
        flat_coeffs = coeffs[:, person].reshape(f * s, coeffs.shape[3])
        predicted = predict(mean[person], basis[person], flat_coeffs, rot, translation[:, person].reshape(-1, 3))
        out[:, person] = predicted.reshape(f, s, NUM_VERTICES, 3)
    flat = out.reshape(-1, _COORDS)
    cells = np.repeat(np.arange(f * p * s), fix_count.reshape(-1).astype(np.int64))
    flat[cells, fix_index.astype(np.int64)] += fix_value.astype(np.float32) * np.float32(QUANTUM_M)
    return out


#: The arrays of format 2 that replace ``vertices`` (and ``smoothed_vertices``): name → (dtype, shape), symbols F
#: frames, P people, H hypotheses, K basis size, N and M fixes.
COMPACT_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "mesh_mean": ("float32", ("P", NUM_VERTICES, 3)),
    "mesh_basis": ("float16", ("P", "K", NUM_VERTICES, 3)),
    "vertices_coeffs": ("float16", ("F", "P", "H", "K")),
    "vertices_fix_count": ("int32", ("F", "P", "H")),
    "vertices_fix_index": ("uint16", ("N",)),
    "vertices_fix_value": ("int16", ("N",)),
    "vertex_std_q": ("uint16", ("F", "P", NUM_VERTICES)),
}
#: Present when the result has ``smoothed_vertices`` (the smoothed path, translation ``smoothed_cam_t``).
COMPACT_SMOOTHED_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "smoothed_coeffs": ("float16", ("F", "P", "K")),
    "smoothed_fix_count": ("int32", ("F", "P")),
    "smoothed_fix_index": ("uint16", ("M",)),
    "smoothed_fix_value": ("int16", ("M",)),
}


def _smoothed_translation(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(F, P, 3) translation of the smoothed path: ``smoothed_cam_t``, else hypothesis 0's ``cam_t``."""
    if "smoothed_cam_t" in arrays:
        return arrays["smoothed_cam_t"]
    return arrays["cam_t"][:, :, 0]


def compact_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Format-1 arrays → format-2 arrays (``vertices``/``smoothed_vertices`` replaced by :data:`COMPACT_ARRAYS`,
    ``vertex_std`` by ``vertex_std_q``: whole quanta, each spread within half a millimetre)
    and the ``compact`` block of the JSON (quantum, basis sizes, measured largest error)."""
    out = {k: v for k, v in arrays.items() if k not in ("vertices", "smoothed_vertices", "vertex_std")}
    if "vertex_std" in arrays:  # float32 noise in the last bits would cost 27 KiB per person-frame
        quanta = np.rint(arrays["vertex_std"].astype(np.float64) / QUANTUM_M)
        out["vertex_std_q"] = np.clip(quanta, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    mean, basis, encoded = encode(arrays["vertices"], arrays["rotation"], arrays["cam_t"])
    out.update(
        mesh_mean=mean,
        mesh_basis=basis,
        vertices_coeffs=encoded.coeffs,
        vertices_fix_count=encoded.fix_count,
        vertices_fix_index=encoded.fix_index,
        vertices_fix_value=encoded.fix_value,
    )
    error = encoded.max_error_m
    if "smoothed_vertices" in arrays:
        _, _, smoothed = encode(
            arrays["smoothed_vertices"][:, :, None],
            arrays["rotation"],
            _smoothed_translation(arrays)[:, :, None],
            mean,
            basis,
        )
        out.update(
            smoothed_coeffs=smoothed.coeffs[:, :, 0],
            smoothed_fix_count=smoothed.fix_count[:, :, 0],
            smoothed_fix_index=smoothed.fix_index,
            smoothed_fix_value=smoothed.fix_value,
        )
        error = max(error, smoothed.max_error_m)
    rows = basis.reshape(basis.shape[0], basis.shape[1], _COORDS)
    sizes = [int(np.count_nonzero(np.any(rows[p] != 0, axis=1))) for p in range(basis.shape[0])]
    block = {"quantum_m": QUANTUM_M, "basis_sizes": sizes, "max_error_m": error}
    return out, block


def expand_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Format-2 arrays → format-1 arrays: ``vertices`` (and ``smoothed_vertices``) decoded, float32 metres.

    Raises ValueError when the fix counts disagree with the fix arrays or a fix index is out of range.
    """
    out = {k: v for k, v in arrays.items() if k not in COMPACT_ARRAYS and k not in COMPACT_SMOOTHED_ARRAYS}
    if "vertex_std_q" in arrays:
        out["vertex_std"] = (arrays["vertex_std_q"].astype(np.float64) * QUANTUM_M).astype(np.float32)
    sets = [("vertices", "vertices_", arrays["cam_t"], False)]
    if "smoothed_coeffs" in arrays:
        sets.append(("smoothed_vertices", "smoothed_", _smoothed_translation(arrays)[:, :, None], True))
    for name, prefix, translation, single in sets:
        coeffs, count = arrays[prefix + "coeffs"], arrays[prefix + "fix_count"]
        index, value = arrays[prefix + "fix_index"], arrays[prefix + "fix_value"]
        if single:
            coeffs, count = coeffs[:, :, None], count[:, :, None]
        if (count < 0).any() or int(count.sum(dtype=np.int64)) != index.size or index.size != value.size:
            raise ValueError(f"{prefix}fix_count sums to {int(count.sum())}, but there are {index.size} fixes")
        if index.size and int(index.max()) >= _COORDS:
            raise ValueError(f"{prefix}fix_index holds {int(index.max())}, beyond the {_COORDS} coordinates")
        meshes = decode(
            arrays["mesh_mean"], arrays["mesh_basis"], coeffs, count, index, value, arrays["rotation"], translation
        )
        out[name] = meshes[:, :, 0] if single else meshes
    return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Size in bytes of ``arrays`` written as a deflated ``.npz`` (for benchmarks and tests)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getbuffer().nbytes
