"""Readers of the official MEGA / Mesh-VQ-VAE dataset layouts, validated, producing the trainers' batch types.

* Motion capture (AMASS, BEDLAM animation files) — ``.npz`` per sequence with ``poses`` (T, ≥66) axis-angle
  (root 3 + body 63 [+ hands]), ``betas`` (≥10,), ``gender``; a folder is searched as the official
  ``DatasetMeshFromSmpl`` does (``**/*.npz``, files whose path holds "shape" skipped). :class:`MotionMeshSource`
  meshes random frames with the user's SMPL model into :class:`~mega_runtime.train.batch.MeshBatch` es:
  canonical (root rotation zero, as ``canonical=True``) and centred on the vertex mean (``normalize=True``).
* Image datasets (COCO, H36M, MPI-INF-3DHP, MPII, 3DPW, EMDB as ``DatasetHMRSquare`` reads them) — one ``.npz``
  per dataset with ``imgname``, ``center`` (N, 2), ``scale`` (N,), a pose (``pose_cam``, else ``pose``, else
  ``root_orient`` + ``pose_body``), 2D keypoints (``j2d``, else ``part``), shape (``betas``, else ``shape``),
  optional ``gender``. :func:`read_image_annotations` checks them; :class:`ImageAnnotations` crops and meshes one
  item the way the official loader does (augmentation off, as in the official scripts).
* Evaluation sets (3DPW, EMDB) — :func:`read_evaluation_set` meshes an annotation file into centred, posed
  ground truth (:class:`~mega_runtime.train.evaluate.GroundTruth`) with image names and person-box centres.

The official code meshes with gendered SMPL-H models; this runtime meshes with one SMPL model file the user
supplies (``mega_runtime.smpl.model``): body joints 1–21 are the same joints in both, SMPL's two hand joints
are left at rest, and SMPL-H hand poses are not used (the official readers do not use them either by default).
Files are read with ``allow_pickle=False``: names must be stored as string arrays, not Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mega_runtime.constants import NUM_BETAS, NUM_JOINTS, NUM_VERTICES
from mega_runtime.errors import MegaError
from mega_runtime.train.evaluate import GroundTruth

log = logging.getLogger(__name__)

BODY_POSE_DIMS = 66
"""Root (3) + 21 body joints (63) of an SMPL-H/SMPL pose vector; what the official readers use."""
CROP_SIZE = 224
"""Side of the square training crop (ResNet/HRNet; ViT cuts 32-column side bands from it inside the step)."""
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)
"""The official reorder of a dataset's 24 stored keypoints to the 17 of the COCO/H36M branch."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_HINT = "see docs/training-data.md for the fields each dataset file must hold"


class DataError(MegaError):
    """A dataset file or folder is missing, unreadable, or lacks a field the reader needs."""

    code = "data_invalid"


def load_npz(path: Path | str, what: str) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` (no pickled objects), or a :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist", hint=DATA_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise DataError(
            f"{path} stores Python objects (pickled), which this reader does not load: {exc}",
            hint="re-save the file with names as string arrays: np.savez(path, imgname=np.array(names, dtype=str), …)",
        ) from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file: {exc}", hint=DATA_HINT) from exc


def _field(arrays: dict[str, np.ndarray], path: Path, *names: str) -> np.ndarray:
    """The first of ``names`` present in the file, or a :class:`DataError` listing what is there."""
    for name in names:
        if name in arrays:
            return arrays[name]
    wanted = " or ".join(repr(n) for n in names)
    raise DataError(f"{path} has no {wanted} field (it holds {sorted(arrays)})", hint=DATA_HINT)


def _numeric(
    value: np.ndarray, path: Path, name: str, shape: tuple[int | None, ...], at_least: bool = False
) -> np.ndarray:
    """``value`` as finite float32 of ``shape`` (None: any size; ``at_least``: the last size is a minimum)."""
    try:
        a = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {name!r} is not numeric ({value.dtype})", hint=DATA_HINT) from exc
    last = len(shape) - 1
    ok = a.ndim == len(shape) and all(
        s is None or a.shape[i] == s or (at_least and i == last and a.shape[i] > s) for i, s in enumerate(shape)
    )
    if not ok:
        sizes = ["*" if s is None else str(s) for s in shape]
        if at_least:
            sizes[-1] = f"≥{sizes[-1]}"
        raise DataError(f"{path}: {name!r} has shape {a.shape}, expected ({', '.join(sizes)})", hint=DATA_HINT)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: {name!r} holds NaN or infinite values", hint="repair or drop those rows")
    return a


def _gender(value: np.ndarray) -> str:
    g = np.asarray(value).reshape(-1)[0] if np.asarray(value).size else "neutral"
    return g.decode("utf-8") if isinstance(g, bytes) else str(g)


# ---------------------------------------------------------------------------------------------- motion capture


@dataclass(frozen=True)
class MotionSequence:
    """One motion-capture sequence: ``poses`` (T, 66) float32 axis-angle radians (root + 21 body joints),
    ``betas`` (10,) float32, ``gender`` as stored (the SMPL model file the user gives is used for every gender)."""

    path: Path
    poses: np.ndarray = field(repr=False)
    betas: np.ndarray = field(repr=False)
    gender: str

    @property
    def frames(self) -> int:
        return int(self.poses.shape[0])


def read_motion_npz(path: Path | str) -> MotionSequence:
    """Read and check an AMASS/BEDLAM animation ``.npz`` (``poses``, ``betas``, ``gender``)."""
    path = Path(path)
    arrays = load_npz(path, "motion")
    poses = _numeric(_field(arrays, path, "poses"), path, "poses", (None, BODY_POSE_DIMS), at_least=True)
    if poses.shape[0] == 0:
        raise DataError(f"{path}: 'poses' holds no frame", hint="drop empty sequences from the folder")
    betas = _numeric(_field(arrays, path, "betas"), path, "betas", (NUM_BETAS,), at_least=True)
    gender = _gender(_field(arrays, path, "gender"))
    return MotionSequence(path, poses[:, :BODY_POSE_DIMS].copy(), betas[:NUM_BETAS].copy(), gender)


def find_motion_files(folder: Path | str) -> list[Path]:
    """The sequence files of a motion-capture folder, as the official reader finds them: ``**/*.npz`` (sorted),
    skipping paths that contain "shape" (AMASS's per-subject ``shape.npz``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"motion-capture folder {folder} does not exist", hint="pass the folder of AMASS/BEDLAM .npz")
    files = sorted(p for p in folder.glob("**/*.npz") if "shape" not in str(p.relative_to(folder)))
    if not files:
        raise DataError(f"{folder} holds no .npz sequence files", hint="pass the folder of AMASS/BEDLAM .npz")
    return files


def smpl_body_pose(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 66) root + body axis-angle → SMPL ``global_orient`` (T, 3) and ``body_pose`` (T, 23, 3), the two hand
    joints at rest."""
    t = poses.shape[0]
    body = np.zeros((t, NUM_JOINTS - 1, 3), dtype=np.float32)
    body[:, :21] = poses[:, 3:BODY_POSE_DIMS].reshape(t, 21, 3)
    return poses[:, :3].astype(np.float32), body


class MotionMeshSource:
    """Random frames of motion-capture sequences, meshed with an SMPL model, for Mesh-VQ-VAE training (and,
    through a tokenizer, pre-training).

    ``model``: a :class:`mega_runtime.smpl.model.SmplModel` (any object with the same ``forward``);
    ``canonical``: zero the root rotation (official default True); ``normalize``: centre on the vertex mean.
    Sequences are read when first needed; :meth:`batches` visits every sequence once per epoch in an order drawn
    from the given generator, one random frame each, as the official ``DatasetMeshFromSmpl`` with shuffling.
    """

    def __init__(self, files: list[Path], model: object, *, canonical: bool = True, normalize: bool = True) -> None:
        if not files:
            raise DataError("no motion-capture files given", hint="pass a folder of AMASS/BEDLAM .npz")
        self.files = list(files)
        self.model = model
        self.canonical = canonical
        self.normalize = normalize
        self._cache: dict[int, MotionSequence] = {}

    def __len__(self) -> int:
        return len(self.files)

    def sequence(self, index: int) -> MotionSequence:
        if index not in self._cache:
            self._cache[index] = read_motion_npz(self.files[index])
        return self._cache[index]

    def meshes(self, picks: list[tuple[int, int]]) -> np.ndarray:
        """(file index, frame) pairs → (B, 6890, 3) float32 metres."""
        out = np.empty((len(picks), NUM_VERTICES, 3), dtype=np.float32)
        for b, (i, frame) in enumerate(picks):
            seq = self.sequence(i)
            go, body = smpl_body_pose(seq.poses[frame : frame + 1])
            if self.canonical:
                go = np.zeros_like(go)
            vertices, _ = self.model.forward(seq.betas, go, body)  # type: ignore[attr-defined]
            out[b] = vertices[0]
        if self.normalize:
            out -= out.mean(axis=1, keepdims=True)
        return out

    def batches(self, batch_size: int, generator: np.random.Generator, drop_last: bool = True) -> Iterator:
        """One epoch of :class:`~mega_runtime.train.batch.MeshBatch` (imported lazily: it needs torch)."""
        import torch

        from mega_runtime.train.batch import MeshBatch

        order = generator.permutation(len(self.files))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            if drop_last and len(chosen) < batch_size:
                return
            picks = [(int(i), int(generator.integers(self.sequence(int(i)).frames))) for i in chosen]
            yield MeshBatch(meshes=torch.from_numpy(self.meshes(picks)))


# ---------------------------------------------------------------------------------------------- image datasets


@dataclass(frozen=True)
class ImageAnnotations:
    """The annotation arrays of one image dataset, checked (N rows).

    ``imgname`` N names (relative to the dataset's image folder; 3DPW/EMDB: full paths), ``center`` (N, 2) and
    ``scale`` (N,) of the person box (box side = 200·scale px; 3DPW/EMDB store 1/scale), ``pose`` (N, 66)
    root + body axis-angle in the camera frame, ``keypoints`` (N, K, 3) pixel x, y, confidence (K ≥ 17; the
    official loader keeps the first 24), ``betas`` (N, 10), ``gender`` N strings.
    """

    path: Path
    imgname: tuple[str, ...]
    center: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    pose: np.ndarray = field(repr=False)
    keypoints: np.ndarray = field(repr=False)
    betas: np.ndarray = field(repr=False)
    gender: tuple[str, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.imgname)

    def is_3dpw(self, index: int) -> bool:
        """Whether row ``index`` uses the 3DPW branch (the official test: "3DPW" or "EMDB" in its image name)."""
        name = self.imgname[index]
        return "3DPW" in name or "EMDB" in name

    def box_scale(self, index: int) -> float:
        """The box scale of a row (box side / 200 px), undoing 3DPW/EMDB's stored inverse."""
        s = float(self.scale[index])
        return 1.0 / s if self.is_3dpw(index) else s

    def image_path(self, index: int, images_root: Path) -> Path:
        """Where the official loader reads the image: ``images_root/<file stem>/<imgname>``, 3DPW/EMDB as stored."""
        name = self.imgname[index]
        return Path(name) if self.is_3dpw(index) else images_root / self.path.stem / name


def read_image_annotations(path: Path | str) -> ImageAnnotations:
    """Read and check an image dataset's ``.npz`` as ``DatasetHMRSquare`` reads it (field fallbacks included)."""
    path = Path(path)
    a = load_npz(path, "image dataset")
    names = _field(a, path, "imgname")
    if names.ndim != 1 or names.shape[0] == 0:
        raise DataError(f"{path}: 'imgname' has shape {names.shape}, expected (N,) with N ≥ 1", hint=DATA_HINT)
    n = int(names.shape[0])
    center = _numeric(_field(a, path, "center"), path, "center", (n, 2))
    scale = _numeric(_field(a, path, "scale"), path, "scale", (n,))
    if (scale <= 0).any():
        raise DataError(f"{path}: 'scale' holds values ≤ 0", hint="box scales are side / 200 px, positive")
    if "pose_cam" in a or "pose" in a:
        pose = _numeric(_field(a, path, "pose_cam", "pose"), path, "pose", (n, BODY_POSE_DIMS), at_least=True)
    else:
        root = _numeric(_field(a, path, "root_orient"), path, "root_orient", (n, 3))
        body = _numeric(_field(a, path, "pose_body"), path, "pose_body", (n, 63))
        pose = np.concatenate([root, body], axis=1)
    keypoints = _numeric(_field(a, path, "j2d", "part"), path, "j2d", (n, None, 3))
    if keypoints.shape[1] < len(J24_TO_J17) + 2:
        raise DataError(f"{path}: 2D keypoints have {keypoints.shape[1]} joints, the loader needs ≥ 19 (24 stored)")
    betas = _numeric(_field(a, path, "betas", "shape"), path, "betas", (n, NUM_BETAS), at_least=True)
    gender = tuple(str(g) for g in a["gender"]) if "gender" in a else ("neutral",) * n
    if len(gender) != n:
        raise DataError(f"{path}: 'gender' has {len(gender)} rows, 'imgname' {n}", hint=DATA_HINT)
    return ImageAnnotations(
        path=path,
        imgname=tuple(str(x) for x in names),
        center=center,
        scale=scale,
        pose=pose[:, :BODY_POSE_DIMS],
        keypoints=keypoints[:, :24],
        betas=betas[:, :NUM_BETAS],
        gender=gender,
    )


def crop_transform(center: np.ndarray, scale: float, size: int = CROP_SIZE) -> np.ndarray:
    """3×3 affine from image pixels to crop pixels: the square of side 200·scale around ``center`` → size×size
    (SPIN's convention, which the official loader uses)."""
    h = 200.0 * scale
    return np.array(
        [[size / h, 0.0, size * (0.5 - center[0] / h)], [0.0, size / h, size * (0.5 - center[1] / h)], [0, 0, 1.0]]
    )


def _to_pixel(t: np.ndarray, x: float, y: float) -> np.ndarray:
    """The official point transform with its integer step: ``trunc(t · (x, y, 1))``, as int64 (2,)."""
    return (t @ np.array([x, y, 1.0]))[:2].astype(np.int64)


def crop_image(image: np.ndarray, center: np.ndarray, scale: float, size: int = CROP_SIZE) -> np.ndarray:
    """RGB (H, W, 3) → the (size, size, 3) float64 crop (0..255) the official loader makes without augmentation:
    the box corners are mapped back to whole image pixels (truncated), the box is copied onto zeros (parts
    outside the image stay 0) and resized to size×size with bilinear interpolation."""
    import cv2

    inverse = np.linalg.inv(crop_transform(center, scale, size))
    ul, br = _to_pixel(inverse, 0.0, 0.0), _to_pixel(inverse, float(size), float(size))
    height, width = int(br[1] - ul[1]), int(br[0] - ul[0])
    if height < 1 or width < 1:
        raise DataError(f"the person box at {center.tolist()} with scale {scale} is empty", hint="check 'scale'")
    box = np.zeros((height, width, image.shape[2]))
    x0, x1 = max(0, -int(ul[0])), min(int(br[0]), image.shape[1]) - int(ul[0])
    y0, y1 = max(0, -int(ul[1])), min(int(br[1]), image.shape[0]) - int(ul[1])
    if x1 > x0 and y1 > y0:
        box[y0:y1, x0:x1] = image[
            max(0, int(ul[1])) : min(image.shape[0], int(br[1])), max(0, int(ul[0])) : min(image.shape[1], int(br[0]))
        ]
    return cv2.resize(box, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_keypoints(keypoints: np.ndarray, center: np.ndarray, scale: float, size: int = CROP_SIZE) -> np.ndarray:
    """(K, 3) pixel keypoints + confidence → crop coordinates normalised to [−1, 1], confidence kept: as the
    official loader, the crop pixel is ``trunc(t · kp) + 1`` (its +1/−1 shifts and integer step), then
    ``2·x/size − 1``."""
    t = crop_transform(center, scale, size)
    out = keypoints.astype(np.float32).copy()
    for k in range(len(out)):
        out[k, :2] = 2.0 * (_to_pixel(t, float(keypoints[k, 0]), float(keypoints[k, 1])) + 1) / size - 1.0
    return out


def normalize_image(crop: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB 0..255 → (3, H, W) float32 ImageNet-normalised: ``/255`` then ``Normalize``, as official."""
    x = crop.astype(np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    return (x - mean) / std


@dataclass(frozen=True)
class ImageItem:
    """One training item: ``image`` (3, 224, 224) float32 normalised; ``keypoints`` (17 or 24, 3) normalised crop
    coordinates + confidence; ``rotation`` (3,) root axis-angle; ``local_mesh`` / ``mesh`` (6890, 3) canonical /
    posed, both centred, metres; ``is_3dpw``; ``name`` the image path."""

    image: np.ndarray = field(repr=False)
    keypoints: np.ndarray = field(repr=False)
    rotation: np.ndarray = field(repr=False)
    local_mesh: np.ndarray = field(repr=False)
    mesh: np.ndarray = field(repr=False)
    is_3dpw: bool
    name: str


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); official: images whose path holds "closeup" are turned 90° clockwise."""
    import cv2

    if not path.is_file():
        raise DataError(f"image {path} does not exist", hint="pass --images-root, the folder above <dataset>/")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"image {path} could not be decoded", hint="check the file")
    if "closeup" in str(path):
        bgr = cv2.rotate(bgr, cv2.ROTATE_90_CLOCKWISE)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_item(
    annotations: ImageAnnotations,
    index: int,
    model: object,
    images_root: Path,
    read_image: Callable[[Path], np.ndarray] = read_rgb,
) -> ImageItem:
    """Item ``index`` as the official ``DatasetHMRSquare.__getitem__`` makes it with augmentation off."""
    center, scale = annotations.center[index], annotations.box_scale(index)
    name = annotations.image_path(index, images_root)
    crop = crop_image(read_image(name), center, scale)
    kp = annotations.keypoints[index]
    three_dpw = annotations.is_3dpw(index)
    keypoints = crop_keypoints(kp if three_dpw else kp[list(J24_TO_J17)], center, scale)
    pose = annotations.pose[index : index + 1]
    go, body = smpl_body_pose(pose)
    betas = annotations.betas[index]
    local, _ = model.forward(betas, np.zeros_like(go), body)  # type: ignore[attr-defined]
    posed, _ = model.forward(betas, go, body)  # type: ignore[attr-defined]
    return ImageItem(
        image=normalize_image(crop),
        keypoints=keypoints,
        rotation=pose[0, :3].astype(np.float32),
        local_mesh=(local[0] - local[0].mean(axis=0)).astype(np.float32),
        mesh=(posed[0] - posed[0].mean(axis=0)).astype(np.float32),
        is_3dpw=three_dpw,
        name=str(name),
    )


def image_batch(items: list[ImageItem], tokenize: Callable[[np.ndarray], np.ndarray]) -> object:
    """Stack items into an :class:`~mega_runtime.train.batch.ImageBatch`; ``tokenize`` maps (B, 6890, 3) canonical
    meshes to (B, 54) token ids (the frozen Mesh-VQ-VAE's ``encode``). Rows must all be 3DPW or all not."""
    import torch

    from mega_runtime.train.batch import ImageBatch

    local = np.stack([it.local_mesh for it in items])
    return ImageBatch(
        images=torch.from_numpy(np.stack([it.image for it in items])),
        gt_tokens=torch.as_tensor(np.asarray(tokenize(local)), dtype=torch.int64),
        rotation=torch.from_numpy(np.stack([it.rotation for it in items])),
        keypoints=torch.from_numpy(np.stack([it.keypoints for it in items])),
        is_3dpw=torch.tensor([it.is_3dpw for it in items]),
        meshes=torch.from_numpy(np.stack([it.mesh for it in items])),
    )


def read_dataset_list(path: Path | str) -> list[Path]:
    """The official mix files (``coco_train.txt``, ``real_train.txt``…): one dataset ``.npz`` path per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset list {path} does not exist", hint="one .npz path per line")
    entries = [Path(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not entries:
        raise DataError(f"dataset list {path} is empty", hint="one .npz path per line")
    return entries


# ---------------------------------------------------------------------------------------------- evaluation sets


@dataclass(frozen=True)
class PoseSet:
    """A Mesh-VQ-VAE test/validation file (``3DPW_validation.npz``, ``3DPW_test.npz`` as its ``preprocess.py``
    writes them) or one fine-tuning sequence: ``root_orient`` (N, 3), ``pose_body`` (N, 63), ``betas`` (N or 1,
    ≥10), ``gender``; checked, as float32 (N, 66) poses and (N, 10) betas."""

    path: Path
    pose: np.ndarray = field(repr=False)
    betas: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.pose.shape[0])


def read_pose_set(path: Path | str) -> PoseSet:
    """Read and check a ``root_orient`` / ``pose_body`` / ``betas`` / ``gender`` file (Mesh-VQ-VAE's layout)."""
    path = Path(path)
    a = load_npz(path, "pose set")
    root = _numeric(_field(a, path, "root_orient"), path, "root_orient", (None, 3))
    n = int(root.shape[0])
    body = _numeric(_field(a, path, "pose_body"), path, "pose_body", (n, 63))
    raw_betas = _field(a, path, "betas")
    raw_betas = raw_betas[None] if raw_betas.ndim == 1 else raw_betas
    betas = _numeric(raw_betas, path, "betas", (None, NUM_BETAS), at_least=True)
    if betas.shape[0] not in (1, n):
        raise DataError(f"{path}: 'betas' has {betas.shape[0]} rows for {n} poses", hint=DATA_HINT)
    _field(a, path, "gender")
    rows = np.broadcast_to(betas[:, :NUM_BETAS], (n, NUM_BETAS)).copy()
    return PoseSet(path, np.concatenate([root, body], axis=1), rows)


def _mesh_rows(model: object, pose: np.ndarray, betas: np.ndarray, canonical: bool, batch: int) -> np.ndarray:
    n = pose.shape[0]
    vertices = np.empty((n, NUM_VERTICES, 3), dtype=np.float32)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        go, body = smpl_body_pose(pose[start:stop])
        if canonical:
            go = np.zeros_like(go)
        v, _ = model.forward(betas[start:stop], go, body)  # type: ignore[attr-defined]
        vertices[start:stop] = v - v.mean(axis=1, keepdims=True)
    return vertices


def _model(smpl_model: Path | str | object) -> object:
    if isinstance(smpl_model, (str, Path)):
        from mega_runtime.smpl.model import load_smpl_model

        return load_smpl_model(smpl_model)
    return smpl_model


def read_evaluation_set(path: Path | str, smpl_model: Path | str | object, batch: int = 256) -> GroundTruth:
    """Evaluation ground truth meshed from an annotation ``.npz`` with the user's SMPL model (a file, or an
    already loaded model), every mesh centred on its vertex mean as the official datasets make them:

    * an image dataset (3DPW, EMDB: ``imgname`` …, see :func:`read_image_annotations`): posed with the root
      rotation in the camera frame (the official ``mesh``), with ``imgname`` and ``center`` for matching;
    * a Mesh-VQ-VAE pose set (``root_orient``, ``pose_body``; :func:`read_pose_set`): canonical, root rotation
      zero (the official ``DatasetMeshTest`` default), rows in file order.
    """
    path = Path(path)
    keys = set(load_npz(path, "evaluation set"))
    if "imgname" not in keys and {"root_orient", "pose_body"} <= keys:
        poses = read_pose_set(path)
        return GroundTruth(vertices=_mesh_rows(_model(smpl_model), poses.pose, poses.betas, True, batch))
    annotations = read_image_annotations(path)
    vertices = _mesh_rows(_model(smpl_model), annotations.pose, annotations.betas, False, batch)
    if len(set(annotations.gender)) > 1:
        log.info("%s: %d genders; meshed with the one SMPL model given", path, len(set(annotations.gender)))
    return GroundTruth(vertices=vertices, names=annotations.imgname, centers=annotations.center.astype(np.float64))
