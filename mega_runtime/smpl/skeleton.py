"""The SMPL skeleton, rotation helpers, a safe reader of SMPL model files, and the SMPL arrays of a result.

numpy only (plus the standard library and :mod:`mega_runtime.errors`): no torch, no scipy, no bpy, so the
Blender side and the CLI start-up can use it. The fitting itself lives in :mod:`mega_runtime.smpl.fit` (torch).

Conventions (as SMPL / ``smplx``):

* 24 joints, :data:`JOINT_NAMES` in SMPL order, :data:`PARENTS` (root: −1). ``global_orient`` is joint 0's
  rotation, ``body_pose`` joints 1…23. Rotations are axis-angle vectors (radians × unit axis), each joint's
  rotation relative to its parent, applied about the joint's rest position.
* ``SMPL(betas, θ) + transl`` gives the posed vertices: the root rotates about the rest pelvis ``J(β)[0]``, so the
  posed pelvis is ``J(β)[0] + transl`` (``transl`` is not the pelvis position).
* Rest joints ``J(β) = J_regressor · (v_template + shapedirs · β)`` are in SMPL's canonical frame (metres, y up,
  the body facing +z, +x its left).
* Quaternions are ``(w, x, y, z)`` (Blender's order).

SMPL model files (``.pkl`` as published, or ``.npz``) are licensed and never bundled: the user gives the path.
:func:`read_smpl_model` reads them without executing their contents: ``.npz`` with ``allow_pickle=False``;
``.pkl`` through a restricted unpickler that only builds numpy arrays, plain containers and stand-ins for the
``chumpy`` and ``scipy.sparse`` objects of the official files (so neither package is needed), and refuses
anything else. The file is still the user's choice and treated as trusted input in every other respect.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime.constants import NUM_BETAS, NUM_BODY_JOINTS, NUM_JOINTS
from mega_runtime.errors import SmplError
from mega_runtime.io.result_schema import SMPL_RESULT_ARRAYS

log = logging.getLogger(__name__)

NUM_POSE_FEATURES = 9 * NUM_BODY_JOINTS
SMPL_NUM_VERTICES = 6890
SMPL_NUM_FACES = 13776

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
"""SMPL's 24 joints in model order (``left`` is the body's own left)."""

PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""Parent joint of each joint (``kintree_table[0]`` of the model files); −1 for the pelvis."""

SMPL_MODEL_HINT = (
    "download SMPL from https://smpl.is.tue.mpg.de (free registration, its licence forbids redistribution) and "
    "give the path of a model file such as basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl (or SMPL_NEUTRAL.npz)"
)


def children(parents: Sequence[int] = PARENTS) -> tuple[tuple[int, ...], ...]:
    """Children of each joint, in joint order."""
    return tuple(tuple(c for c, p in enumerate(parents) if p == j) for j in range(len(parents)))


# --- rotations ---------------------------------------------------------------------------------------------------


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle (radians) → (..., 4) unit quaternions (w, x, y, z), w ≥ 0 for angles ≤ π."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(θ/2)/θ, with its series near 0
    scale = np.where(angle > 1e-6, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), normalised here → (..., 3, 3) rotation matrices."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle (radians) → (..., 3, 3) rotation matrices (float64)."""
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices → (..., 4) unit quaternions (w, x, y, z) with w ≥ 0 (Shepperd's method)."""
    m = np.asarray(matrix, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # the four candidates 4·q_i² and, for each, the quaternion scaled by 4·q_i; pick the largest q_i (stable)
    cand = np.stack(
        [
            np.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                      m[..., 1, 0] - m[..., 0, 1]], axis=-1),
            np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                      m[..., 0, 2] + m[..., 2, 0]], axis=-1),
            np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                      m[..., 1, 2] + m[..., 2, 1]], axis=-1),
            np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                      1 - m00 - m11 + m22], axis=-1),
        ],
        axis=-2,
    )  # fmt: skip
    diag = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) → (..., 3) axis-angle with angle in [0, π]."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-7, angle / np.maximum(sin_half, 1e-12), 2.0 / np.maximum(q[..., :1], 1e-12))
    return q[..., 1:] * scale


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices → (..., 3) axis-angle, angle in [0, π] (stable near 0 and π)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def continuous_quaternions(quaternion: np.ndarray, axis: int = 0) -> np.ndarray:
    """Flip signs along ``axis`` (time) so consecutive quaternions have a non-negative dot product.

    ``q`` and ``−q`` are the same rotation; keyframe interpolation between them takes the long way round.
    """
    q = np.asarray(quaternion, dtype=np.float64)
    q = np.moveaxis(q, axis, 0)
    if q.shape[0] < 2:
        return np.moveaxis(q.copy(), 0, axis)
    dots = np.sum(q[1:] * q[:-1], axis=-1, keepdims=True)
    signs = np.concatenate([np.ones_like(dots[:1]), np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)], axis=0)
    return np.moveaxis(q * signs, 0, axis)


def forward_kinematics(
    rest_joints: np.ndarray, rotations: np.ndarray, transl: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Posed skeleton: (…, 24, 3, 3) global rotations and (…, 24, 3) joint positions.

    ``rest_joints`` (24, 3) or (…, 24, 3) metres (``J(β)``), ``rotations`` (…, 24, 3, 3) local rotation matrices
    (``axis_angle_to_matrix`` of global_orient and body_pose), ``transl`` (…, 3) added to every joint.
    """
    rest = np.asarray(rest_joints, dtype=np.float64)
    rot = np.asarray(rotations, dtype=np.float64)
    glob = np.empty_like(rot)
    pos = np.empty(rot.shape[:-1], dtype=np.float64)
    rest = np.broadcast_to(rest, pos.shape)
    glob[..., 0, :, :] = rot[..., 0, :, :]
    pos[..., 0, :] = rest[..., 0, :]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        glob[..., j, :, :] = glob[..., p, :, :] @ rot[..., j, :, :]
        bone = rest[..., j, :] - rest[..., p, :]
        pos[..., j, :] = pos[..., p, :] + np.einsum("...ab,...b->...a", glob[..., p, :, :], bone)
    if transl is not None:
        pos = pos + np.asarray(transl, dtype=np.float64)[..., None, :]
    return glob, pos


# --- SMPL model files --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmplModelArrays:
    """The arrays of an SMPL model file, dense float64 (faces int64), in the model's canonical frame (metres).

    ``v_template`` (6890, 3), ``shapedirs`` (6890, 3, 10) (the first 10 shape directions), ``posedirs``
    (6890, 3, 207), ``J_regressor`` (24, 6890), ``weights`` (6890, 24) skinning weights, ``faces`` (13776, 3).
    """

    path: Path
    v_template: np.ndarray = field(repr=False)
    shapedirs: np.ndarray = field(repr=False)
    posedirs: np.ndarray = field(repr=False)
    J_regressor: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)

    def rest_joints(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(24, 3) rest joints ``J(β)`` (or (…, 24, 3) for (…, 10) betas), metres."""
        return self.J_regressor @ self.rest_vertices(betas)

    def rest_vertices(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(6890, 3) shaped rest-pose vertices ``v_template + shapedirs · β`` (or (…, 6890, 3)), metres."""
        if betas is None:
            return self.v_template.copy()
        return self.v_template + np.einsum("vcb,...b->...vc", self.shapedirs, np.asarray(betas, dtype=np.float64))


class _ChumpyStandIn:
    """Takes the place of a pickled ``chumpy`` object; a plain ``Ch`` keeps its value in ``x``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseStandIn:
    """Takes the place of a pickled ``scipy.sparse`` matrix (its format comes from the class name)."""

    format = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


_SPARSE_STAND_INS = {
    name: type(f"_{name}", (_SparseStandIn,), {"format": name[:3]})
    for name in ("csc_matrix", "csr_matrix", "coo_matrix")
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("__builtin__", "frozenset"),
    ("builtins", "frozenset"),
}


class _SmplUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, containers and the stand-ins above; refuses every other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if module.startswith("scipy.sparse") and name in _SPARSE_STAND_INS:
            return _SPARSE_STAND_INS[name]
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an SMPL model file")


def _sparse_to_dense(obj: _SparseStandIn, key: str, path: Path) -> np.ndarray:
    state = getattr(obj, "state", None)
    state = state if isinstance(state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    if shape is None:
        raise SmplError(f"{path}: {key} is a sparse matrix without a shape")
    try:
        rows, cols = (int(s) for s in shape)
        data = np.asarray(state["data"], dtype=np.float64)
        dense = np.zeros((rows, cols), dtype=np.float64)
        if obj.format == "coo":
            row, col = state["coords"] if "coords" in state else (state["row"], state["col"])
            np.add.at(dense, (np.asarray(row), np.asarray(col)), data)
            return dense
        indices, indptr = np.asarray(state["indices"]), np.asarray(state["indptr"])
        major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if obj.format == "csc":
            dense[indices, major] = data
        else:
            dense[major, indices] = data
        return dense
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SmplError(f"{path}: {key} is a sparse matrix this reader does not understand ({exc})") from exc


def _to_array(value: Any, key: str, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyStandIn):
        state = getattr(value, "state", None)
        state = state if isinstance(state, dict) else {}
        if "x" not in state:
            raise SmplError(
                f"{path}: {key} is a chumpy expression, not a plain array",
                hint="convert the file to plain arrays (load it once with chumpy and save the arrays as an .npz)",
            )
        value = state["x"]
    if isinstance(value, _SparseStandIn):
        return _sparse_to_dense(value, key, path)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise SmplError(f"{path}: {key} is not an array") from exc
    if array.dtype == object:
        raise SmplError(f"{path}: {key} is not a numeric array")
    return array


_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (SMPL_NUM_VERTICES, 3),
    "shapedirs": (SMPL_NUM_VERTICES, 3, None),
    "posedirs": (SMPL_NUM_VERTICES, 3, NUM_POSE_FEATURES),
    "J_regressor": (NUM_JOINTS, SMPL_NUM_VERTICES),
    "weights": (SMPL_NUM_VERTICES, NUM_JOINTS),
    "kintree_table": (2, NUM_JOINTS),
    "f": (SMPL_NUM_FACES, 3),
}


def _load_raw(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in _SHAPES if k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise SmplError(f"{path} is not a readable SMPL .npz file: {exc}", hint=SMPL_MODEL_HINT) from exc
    try:
        with path.open("rb") as handle:
            data = _SmplUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise SmplError(f"{path} is not an SMPL model file: {exc}", hint=SMPL_MODEL_HINT) from exc
    except (EOFError, OSError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
        raise SmplError(f"{path} is not a readable SMPL model file: {exc}", hint=SMPL_MODEL_HINT) from exc
    if not isinstance(data, dict):
        raise SmplError(f"{path} holds a {type(data).__name__}, not an SMPL model's dictionary", hint=SMPL_MODEL_HINT)
    return data


def read_smpl_model(path: Path | str) -> SmplModelArrays:
    """Read and check an SMPL model file (``.pkl`` as published, or ``.npz``) without executing its contents.

    Raises :class:`SmplError` when the file is missing or unreadable, lacks an array, has one of the wrong shape,
    holds non-finite values, or is another body model (SMPL-H, SMPL-X, MANO: other joint counts).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SmplError(f"SMPL model file {path} does not exist", hint=SMPL_MODEL_HINT)
    raw = _load_raw(path)
    missing = [k for k in _SHAPES if k not in raw]
    if missing:
        raise SmplError(f"{path} is not an SMPL model file: missing {missing}", hint=SMPL_MODEL_HINT)
    arrays: dict[str, np.ndarray] = {}
    for key, want in _SHAPES.items():
        arr = _to_array(raw[key], key, path)
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape, strict=True)):
            shape = tuple("K" if w is None else w for w in want)
            raise SmplError(
                f"{path}: {key} has shape {arr.shape}, an SMPL model has {shape}",
                hint="give an SMPL model file (24 joints, 6890 vertices), not SMPL-H, SMPL-X or MANO",
            )
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise SmplError(f"{path}: {key} holds non-numeric or non-finite values", hint=SMPL_MODEL_HINT)
        arrays[key] = arr
    if arrays["shapedirs"].shape[2] < NUM_BETAS:
        raise SmplError(f"{path}: shapedirs has {arrays['shapedirs'].shape[2]} shape directions, at least 10 needed")
    parents = arrays["kintree_table"][0].astype(np.int64)
    if tuple(int(p) for p in parents[1:]) != PARENTS[1:]:
        raise SmplError(f"{path}: its kinematic tree is not SMPL's", hint="give an SMPL model file")
    faces = arrays["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= SMPL_NUM_VERTICES:
        raise SmplError(f"{path}: its faces index vertices outside 0…6889")
    return SmplModelArrays(
        path=path,
        v_template=arrays["v_template"].astype(np.float64),
        shapedirs=np.ascontiguousarray(arrays["shapedirs"][:, :, :NUM_BETAS], dtype=np.float64),
        posedirs=arrays["posedirs"].astype(np.float64),
        J_regressor=arrays["J_regressor"].astype(np.float64),
        weights=arrays["weights"].astype(np.float64),
        faces=faces,
    )


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file (recorded with a fit, so a reader can check it has the same model file)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- fits and result arrays --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmplFit:
    """SMPL parameters fitted to one person's meshes over F frames (float32; camera frame, metres).

    ``betas`` (10,) one body shape for the whole clip; ``global_orient`` (F, 3) and ``body_pose`` (F, 23, 3)
    axis-angle (radians, angle in [0, π]); ``transl`` (F, 3); ``joints`` (F, 24, 3) posed joints;
    ``rest_joints`` (24, 3) ``J(β)`` in SMPL's canonical frame; ``vertex_error`` (F,) mean distance between the
    fitted and the given vertices; ``valid`` (F,) frames that were fitted — the others hold zeros.
    ``SMPL(betas, global_orient, body_pose) + transl`` reproduces the given vertices (x right, y down, z forward).
    """

    betas: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    joints: np.ndarray
    rest_joints: np.ndarray
    vertex_error: np.ndarray
    valid: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.global_orient.shape[0])


def smpl_result_arrays(fits: Sequence[SmplFit | None], hypothesis: np.ndarray) -> dict[str, np.ndarray]:
    """The result arrays of one fit per person (``None``: not fitted, zeros); ``hypothesis`` (F, P) fitted index."""
    hyp = np.asarray(hypothesis)
    num_frames, num_people = hyp.shape
    if len(fits) != num_people:
        raise ValueError(f"{len(fits)} fits for {num_people} people")
    sizes = {"F": num_frames, "P": num_people}
    out = {name: np.zeros([sizes[s] if isinstance(s, str) else s for s in shape], dtype=dtype)
           for name, (dtype, shape) in SMPL_RESULT_ARRAYS.items()}  # fmt: skip
    out["smpl_hypothesis"][:] = hyp.astype(np.int16)
    for p, fit in enumerate(fits):
        if fit is None:
            continue
        if fit.num_frames != num_frames:
            raise ValueError(f"person {p}: fit has {fit.num_frames} frames, the result {num_frames}")
        out["smpl_betas"][p] = fit.betas
        out["smpl_rest_joints"][p] = fit.rest_joints
        for name in ("global_orient", "body_pose", "transl", "joints", "vertex_error"):
            values = np.where(fit.valid.reshape((-1,) + (1,) * (getattr(fit, name).ndim - 1)), getattr(fit, name), 0)
            out[f"smpl_{name}"][:, p] = values
    return out


def with_smpl_fit(result: Any, fits: Sequence[SmplFit | None], hypothesis: np.ndarray, meta: dict[str, Any]) -> Any:
    """A copy of ``result`` (a :class:`mega_runtime.io.result.Result`) carrying the SMPL arrays and ``meta["smpl"]``.

    The result keeps every array it had (earlier ``smpl_*`` arrays are replaced); the JSON's ``smpl`` object
    records the model file and how the fit was made (see docs/smpl.md).
    """
    arrays = {k: v for k, v in result.arrays.items() if not k.startswith("smpl_")}
    arrays.update(smpl_result_arrays(fits, hypothesis))
    return dataclasses.replace(result, meta={**result.meta, "smpl": meta}, arrays=arrays)
