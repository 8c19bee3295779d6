"""Evaluation of predicted meshes against ground truth: the paper's metrics over a test set, reports and tables.

* :class:`Predictions` — (N, Q, V, 3) predicted meshes (Q = 1 for the deterministic mode), optionally the
  canonical (un-rotated) meshes the official stochastic PA-MPJPE uses, names and person-box centres.
* :func:`read_predictions` — from a ``.npz`` (``vertices``, optional ``canonical``, ``imgname``, ``center``), a
  MEGA result pair (``mega-runtime infer``), or a folder of result pairs.
* :func:`match` — pairs prediction rows with ground-truth rows by image name (and by person-box centre when an
  image holds several people), or row by row when either side has no names.
* :func:`evaluate` — per-sample errors and their means (mm) for hypothesis 0 ("first") and, with Q > 1, the
  official min-over-Q ("min", each metric taking its own best hypothesis), with the official alignment and the
  pelvis alignment (metrics.py says what each means).
* :func:`format_table` — reports in the layout of the paper's Table 1 (deterministic) and Table 3
  (min-over-Q), Markdown or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from mega_runtime import __version__
from mega_runtime.errors import MegaError
from mega_runtime.io.result import read_result
from mega_runtime.train import metrics

log = logging.getLogger(__name__)

REPORT_SCHEMA = "mega-evaluation"
REPORT_VERSION = "1.0"
GT_CENTRED_TOLERANCE_M = 1e-3
"""A ground-truth mesh whose vertex mean is further than this from the origin is reported as not centred (the
official metrics assume centred ground truth; the official datasets centre it)."""

#: Metric name → what it is (metres in the arrays, millimetres in reports).
METRIC_NAMES = {
    "pve": "PVE (official: prediction centred on its vertex mean)",
    "mpjpe": "MPJPE over all regressed joints (official alignment)",
    "pa_mpjpe": "PA-MPJPE (similarity-aligned joints)",
    "pve_pelvis": "PVE, both meshes aligned at the regressed pelvis",
    "mpjpe_pelvis": "MPJPE, both aligned at the regressed pelvis, over the protocol joints (default the 14 LSP)",
    "pa_mpjpe_pelvis": "PA-MPJPE over the protocol joints (default the 14 LSP joints)",
    "pa_pve": "PA-PVE (Mesh-VQ-VAE's PA-v2v: similarity-aligned vertices)",
}
JOINT_METRICS = ("mpjpe", "pa_mpjpe", "pve_pelvis", "mpjpe_pelvis", "pa_mpjpe_pelvis")


class EvaluationError(MegaError):
    """Predictions or ground truth for an evaluation are missing, malformed or cannot be matched."""

    code = "evaluation_invalid"


@dataclass(frozen=True)
class Predictions:
    """Predicted meshes of N samples.

    * ``vertices``: (N, Q, V, 3) float32 metres, any translation (the metrics remove it); Q hypotheses per sample,
      hypothesis 0 being the deterministic one when the model has one.
    * ``canonical``: optional (N, Q, V, 3) un-rotated meshes; when present, PA-MPJPE and PA-PVE use them (as the
      official ``eval_stochastic`` does for PA-MPJPE; mathematically the same, numerically not quite).
    * ``names``: optional N image names (paths) for matching; ``centers``: optional (N, 2) person-box centres, px.
    """

    vertices: np.ndarray
    canonical: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    centers: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = self.vertices
        if v.ndim != 4 or v.shape[-1] != 3 or v.shape[1] < 1:
            raise EvaluationError(f"predicted vertices have shape {v.shape}, expected (N, Q, V, 3)")
        if self.canonical is not None and self.canonical.shape != v.shape:
            raise EvaluationError(
                f"canonical meshes have shape {self.canonical.shape}, the posed ones {v.shape}",
                hint="store one canonical mesh per predicted mesh, or none",
            )
        if self.names is not None and len(self.names) != v.shape[0]:
            raise EvaluationError(f"{len(self.names)} names for {v.shape[0]} predictions")
        if self.centers is not None and self.centers.shape != (v.shape[0], 2):
            raise EvaluationError(f"centers have shape {self.centers.shape}, expected ({v.shape[0]}, 2)")

    @property
    def count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def hypotheses(self) -> int:
        return int(self.vertices.shape[1])

    def take(self, rows: np.ndarray) -> Predictions:
        """The predictions of ``rows`` (indices), in that order."""
        return Predictions(
            vertices=self.vertices[rows],
            canonical=None if self.canonical is None else self.canonical[rows],
            names=None if self.names is None else tuple(self.names[i] for i in rows),
            centers=None if self.centers is None else self.centers[rows],
        )


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth meshes of N samples: ``vertices`` (N, V, 3) float32 metres, centred on their vertex mean as
    the official datasets make them; optional ``names`` (image paths) and ``centers`` (N, 2) person-box centres."""

    vertices: np.ndarray
    names: tuple[str, ...] | None = None
    centers: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 3 or self.vertices.shape[-1] != 3:
            raise EvaluationError(f"ground-truth vertices have shape {self.vertices.shape}, expected (N, V, 3)")
        if self.names is not None and len(self.names) != self.vertices.shape[0]:
            raise EvaluationError(f"{len(self.names)} ground-truth names for {self.vertices.shape[0]} meshes")

    @property
    def count(self) -> int:
        return int(self.vertices.shape[0])


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics of one prediction set on one dataset.

    ``means``: ``{"first": {metric: mm}, "min": {metric: mm}}`` ("min" only with Q > 1); ``per_sample``: the same
    keys, each metric a (N,) float64 array in mm; ``names``: the matched ground-truth names (or row numbers).
    """

    dataset: str
    method: str
    count: int
    hypotheses: int
    alignment_note: str
    means: dict[str, dict[str, float]]
    per_sample: dict[str, dict[str, np.ndarray]] = field(repr=False)
    names: tuple[str, ...] = field(repr=False)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON document (means only; the per-sample values go to :meth:`per_sample_csv`)."""
        return {
            "schema": REPORT_SCHEMA,
            "version": REPORT_VERSION,
            "runtime_version": __version__,
            "dataset": self.dataset,
            "method": self.method,
            "count": self.count,
            "hypotheses": self.hypotheses,
            "units": "mm",
            "alignment": self.alignment_note,
            "metrics": {k: {m: round(v, 6) for m, v in block.items()} for k, block in self.means.items()},
            "warnings": list(self.warnings),
        }

    def per_sample_csv(self) -> str:
        """One row per sample: its name, then every metric of every block (``first_pve``, ``min_pve``, …), mm."""
        columns = [(block, m) for block, values in self.per_sample.items() for m in values]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", *[f"{b}_{m}" for b, m in columns]])
        for i, name in enumerate(self.names):
            writer.writerow([name, *[f"{self.per_sample[b][m][i]:.6f}" for b, m in columns]])
        return out.getvalue()


def _npz_arrays(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise EvaluationError(f"{what} file {path} does not exist", hint="check the path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise EvaluationError(
            f"{path} is not a readable .npz without pickled objects: {exc}",
            hint="store names as a unicode string array (numpy 'U' dtype), not as Python objects",
        ) from exc


def _names(arrays: dict[str, np.ndarray], count: int, path: Path) -> tuple[str, ...] | None:
    for key in ("imgname", "names"):
        if key in arrays:
            values = arrays[key]
            if values.shape != (count,):
                raise EvaluationError(f"{path}: {key!r} has shape {values.shape}, expected ({count},)")
            return tuple(str(v) for v in values)
    return None


def _centers(arrays: dict[str, np.ndarray], count: int, path: Path) -> np.ndarray | None:
    if "center" not in arrays:
        return None
    c = np.asarray(arrays["center"], dtype=np.float64)
    if c.shape != (count, 2):
        raise EvaluationError(f"{path}: 'center' has shape {c.shape}, expected ({count}, 2)")
    return c


def _predictions_from_npz(path: Path) -> Predictions:
    arrays = _npz_arrays(path, "predictions")
    if "vertices" not in arrays:
        raise EvaluationError(
            f"{path} has no 'vertices' array (it holds {sorted(arrays)})",
            hint="store predictions as vertices (N, 6890, 3) or (N, Q, 6890, 3), metres",
        )
    v = np.asarray(arrays["vertices"], dtype=np.float32)
    if v.ndim == 3:
        v = v[:, None]
    canonical = arrays.get("canonical")
    if canonical is not None:
        canonical = np.asarray(canonical, dtype=np.float32)
        canonical = canonical[:, None] if canonical.ndim == 3 else canonical
    return Predictions(v, canonical, _names(arrays, v.shape[0], path), _centers(arrays, v.shape[0], path))


def _predictions_from_results(paths: Sequence[Path]) -> Predictions:
    vertices, names, centers = [], [], []
    for path in paths:
        result = read_result(path)
        a = result.arrays
        source = str(result.meta.get("source", {}).get("path", Path(path).stem))
        video = result.meta.get("source", {}).get("kind") == "video"
        for f in range(result.num_frames):
            for p in range(result.num_people):
                if not a["valid"][f, p]:
                    continue
                vertices.append(a["vertices"][f, p])
                names.append(f"{source}#{int(a['frame_indices'][f])}" if video else source)
                box = a["boxes_xyxy"][f, p]
                centers.append([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    if not vertices:
        raise EvaluationError("the results hold no person", hint="check that infer found the people")
    return Predictions(np.stack(vertices).astype(np.float32), None, tuple(names), np.asarray(centers, np.float64))


def read_predictions(path: Path | str) -> Predictions:
    """Predictions from a ``.npz`` file, a result pair (its ``.json``) or a folder of result pairs."""
    path = Path(path)
    if path.is_dir():
        results = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
        if not results:
            raise EvaluationError(f"{path} holds no result .json files", hint="pass the --out folder of infer")
        return _predictions_from_results(results)
    if path.suffix == ".json":
        return _predictions_from_results([path])
    if path.suffix == ".npz":
        return _predictions_from_npz(path)
    raise EvaluationError(
        f"{path}: predictions must be a .npz, a result .json or a folder of results",
        hint="see docs/training-data.md, 'Evaluation inputs'",
    )


def read_ground_truth_npz(path: Path | str) -> GroundTruth:
    """Ground truth from a ``.npz`` with ``vertices`` (N, V, 3) metres and optional ``imgname``, ``center``."""
    path = Path(path)
    arrays = _npz_arrays(path, "ground-truth")
    if "vertices" not in arrays:
        raise EvaluationError(
            f"{path} has no 'vertices' array (it holds {sorted(arrays)})",
            hint="store meshes as vertices (N, 6890, 3), or pass an official 3DPW/EMDB .npz with --smpl-model",
        )
    v = np.asarray(arrays["vertices"], dtype=np.float32)
    if v.ndim != 3:
        raise EvaluationError(f"{path}: ground-truth vertices have shape {v.shape}, expected (N, V, 3)")
    return GroundTruth(v, _names(arrays, v.shape[0], path), _centers(arrays, v.shape[0], path))


def _same_image(a: str, b: str) -> bool:
    """Whether two image paths name the same file: the shorter is a trailing run of the longer's components."""
    pa, pb = PurePosixPath(a.replace("\\", "/")).parts, PurePosixPath(b.replace("\\", "/")).parts
    short, long = (pa, pb) if len(pa) <= len(pb) else (pb, pa)
    return len(short) > 0 and long[len(long) - len(short) :] == short


def match(predictions: Predictions, gt: GroundTruth) -> np.ndarray:
    """For each ground-truth row, the index of its prediction (N_gt,).

    By name when both sides have names (several people in one image: the prediction whose box centre is nearest
    the ground truth's ``center``); otherwise row by row, which needs equal counts.
    """
    if predictions.names is None or gt.names is None:
        if predictions.count != gt.count:
            raise EvaluationError(
                f"{predictions.count} predictions for {gt.count} ground-truth meshes, and no names to match them",
                hint="give both files an 'imgname' array, or store them row-aligned",
            )
        return np.arange(gt.count)
    by_base: dict[str, list[int]] = {}
    for i, name in enumerate(predictions.names):
        by_base.setdefault(PurePosixPath(name.split("#")[0].replace("\\", "/")).name, []).append(i)
    rows = np.empty(gt.count, dtype=np.int64)
    for g, gname in enumerate(gt.names):
        base = PurePosixPath(gname.replace("\\", "/")).name
        candidates = [i for i in by_base.get(base, []) if _same_image(predictions.names[i].split("#")[0], gname)]
        if not candidates:
            raise EvaluationError(
                f"no prediction for ground-truth image {gname!r}",
                hint="run infer on every test image, or evaluate a subset with a ground-truth file of that subset",
            )
        if len(candidates) > 1:
            if predictions.centers is None or gt.centers is None:
                raise EvaluationError(
                    f"{len(candidates)} predictions for image {gname!r} and no person-box centres to choose",
                    hint="store 'center' (N, 2) in both files",
                )
            distance = np.linalg.norm(predictions.centers[candidates] - gt.centers[g], axis=1)
            candidates = [candidates[int(np.argmin(distance))]]
        rows[g] = candidates[0]
    return rows


def _blocks(
    gt: np.ndarray,
    posed: np.ndarray,
    canonical: np.ndarray | None,
    regressor: np.ndarray | None,
    pelvis_index: int,
    pelvis_joints: tuple[int, ...] | None,
) -> dict[str, np.ndarray]:
    """Every metric (mm) for every sample and hypothesis: name → (N, Q)."""
    n, q = posed.shape[:2]
    out: dict[str, np.ndarray] = {}
    for name in ("pve", *JOINT_METRICS, "pa_pve"):
        if name in JOINT_METRICS and regressor is None:
            continue
        out[name] = np.empty((n, q))
    for h in range(q):
        p = posed[:, h]
        c = p if canonical is None else canonical[:, h]
        out["pve"][:, h] = metrics.pve(gt, p)
        out["pa_pve"][:, h] = metrics.pa_pve(gt, c)
        if regressor is not None:
            out["mpjpe"][:, h] = metrics.mpjpe(gt, p, regressor)
            out["pa_mpjpe"][:, h] = metrics.pa_mpjpe(gt, c, regressor)
            out["pve_pelvis"][:, h] = metrics.pve(gt, p, "pelvis", regressor, pelvis_index)
            out["mpjpe_pelvis"][:, h] = metrics.mpjpe(gt, p, regressor, "pelvis", pelvis_index, pelvis_joints)
            out["pa_mpjpe_pelvis"][:, h] = metrics.pa_mpjpe(gt, c, regressor, pelvis_joints)
    return {k: 1000.0 * v for k, v in out.items()}


def evaluate(
    predictions: Predictions,
    gt: GroundTruth,
    regressor: np.ndarray | None,
    *,
    dataset: str = "dataset",
    method: str = "MEGA",
    pelvis_index: int = metrics.PELVIS_INDEX_H36M,
    pelvis_joints: tuple[int, ...] | None = metrics.H36M_TO_J14,
    batch: int = 256,
) -> EvaluationReport:
    """Match, then compute every metric: hypothesis 0 ("first") and, when Q > 1, min over Q ("min").

    ``regressor``: (J, V) joint regressor (``J_regressor_h36m.npy``); without it only PVE and PA-PVE are
    computed. The official metrics use all its joints; the pelvis-aligned ones the rows ``pelvis_joints``
    (default the 14 LSP joints of the usual 3DPW protocol; None: all). Works through the samples ``batch`` at a
    time (memory: about batch × Q × 0.5 MB).
    """
    rows = match(predictions, gt)
    matched = predictions.take(rows)
    warnings = []
    offset = np.linalg.norm(gt.vertices.astype(np.float64).mean(axis=1), axis=1)
    if (offset > GT_CENTRED_TOLERANCE_M).any():
        warnings.append(
            f"{int((offset > GT_CENTRED_TOLERANCE_M).sum())} ground-truth meshes are not centred on their vertex "
            f"mean (up to {1000 * offset.max():.1f} mm): the official PVE/MPJPE assume centred ground truth; the "
            "pelvis-aligned metrics do not"
        )
    if regressor is None:
        warnings.append("no joint regressor: only PVE and PA-PVE were computed (pass J_regressor_h36m.npy)")
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, gt.count, batch):
        stop = min(start + batch, gt.count)
        parts.append(
            _blocks(
                gt.vertices[start:stop],
                matched.vertices[start:stop],
                None if matched.canonical is None else matched.canonical[start:stop],
                regressor,
                pelvis_index,
                pelvis_joints,
            )
        )
    errors = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    per_sample = {"first": {k: v[:, 0] for k, v in errors.items()}}
    if matched.hypotheses > 1:
        per_sample["min"] = {k: metrics.min_over_hypotheses(v) for k, v in errors.items()}
    means = {block: {k: float(v.mean()) for k, v in values.items()} for block, values in per_sample.items()}
    names = gt.names if gt.names is not None else tuple(str(i) for i in range(gt.count))
    for w in warnings:
        log.warning("%s", w)
    return EvaluationReport(
        dataset=dataset,
        method=method,
        count=gt.count,
        hypotheses=matched.hypotheses,
        alignment_note="official: prediction centred on its vertex mean, ground truth as given, all joints; "
        f"pelvis: both translated to their regressed joint {pelvis_index}, joints "
        f"{'all' if pelvis_joints is None else list(pelvis_joints)}; PA: per-sample similarity transform",
        means=means,
        per_sample=per_sample,
        names=names,
        warnings=tuple(warnings),
    )


def read_report(path: Path | str) -> dict[str, Any]:
    """A report written by :meth:`EvaluationReport.to_json` (checked for its schema)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvaluationError(f"report {path} does not exist") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path} is not a JSON file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != REPORT_SCHEMA:
        raise EvaluationError(
            f"{path} is not an evaluation report", hint="pass the .metrics.json files mega-runtime evaluate wrote"
        )
    return doc


TableKind = Literal["1", "3"]
TABLE_COLUMNS = {
    "official": (("pve", "PVE"), ("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE")),
    "pelvis": (("pve_pelvis", "PVE"), ("mpjpe_pelvis", "MPJPE"), ("pa_mpjpe_pelvis", "PA-MPJPE")),
}


def format_table(
    reports: Sequence[dict[str, Any]],
    table: TableKind = "1",
    alignment: metrics.Alignment = "official",
    fmt: Literal["markdown", "csv"] = "markdown",
) -> str:
    """Reports (JSON documents) as the paper's Table 1 or Table 3: one row per method, per dataset the columns
    PVE, MPJPE, PA-MPJPE in mm (one decimal). Table 1 uses hypothesis 0 (deterministic); Table 3 the min over
    the Q hypotheses, with Q in the method cell. A missing value is ``–``."""
    block = "first" if table == "1" else "min"
    columns = TABLE_COLUMNS[alignment]
    datasets: list[str] = []
    methods: list[str] = []
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for doc in reports:
        values = doc.get("metrics", {}).get(block)
        if values is None:
            raise EvaluationError(
                f"report {doc.get('method')!r} on {doc.get('dataset')!r} has no {block!r} metrics",
                hint="Table 3 needs predictions with several hypotheses (infer --hypotheses N)",
            )
        method = str(doc.get("method", "?"))
        if table == "3":
            method = f"{method} (Q={doc.get('hypotheses')})"
        dataset = str(doc.get("dataset", "?"))
        if dataset not in datasets:
            datasets.append(dataset)
        if method not in methods:
            methods.append(method)
        cells[(method, dataset)] = values
    header = ["Method"] + [f"{d} {label}" for d in datasets for _, label in columns]
    rows = []
    for method in methods:
        row = [method]
        for d in datasets:
            values = cells.get((method, d), {})
            row += [f"{values[k]:.1f}" if k in values else "–" for k, _ in columns]
        rows.append(row)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return out.getvalue()
    caption = "min over Q hypotheses" if table == "3" else "deterministic"
    lines = [
        f"<!-- Table {table}: {caption}, {alignment} alignment, mm -->",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
