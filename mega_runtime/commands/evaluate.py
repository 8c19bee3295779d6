"""``mega-runtime evaluate`` and ``mega-runtime evaluate-table`` (torch-free at import and when they run, unless
the ground truth must be meshed with an SMPL model).

``evaluate`` compares predictions (a ``.npz``, a result pair, or a folder of results) with ground truth (a
``.npz`` of meshes, or an official 3DPW/EMDB annotation ``.npz`` meshed with the user's SMPL model), prints the
metrics and, with ``--out``, writes ``metrics.json`` and ``per_sample.csv``. ``evaluate-table`` lays several
``metrics.json`` out as the paper's Table 1 or Table 3 (docs/training-data.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mega_runtime.errors import MegaError

METRICS_FILE, PER_SAMPLE_FILE = "metrics.json", "per_sample.csv"


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise MegaError(f"not overwriting existing file(s): {', '.join(existing)}", hint="add --overwrite")


def _ground_truth(args: argparse.Namespace) -> Any:
    from mega_runtime.train import evaluate as ev

    gt_path = Path(args.gt)
    if gt_path.suffix == ".npz" and gt_path.is_file():
        import numpy as np

        with np.load(gt_path, allow_pickle=False) as npz:
            has_vertices = "vertices" in npz.files
        if not has_vertices:  # an official annotation file: mesh it with the user's SMPL model
            if args.smpl_model is None:
                raise MegaError(
                    f"{gt_path} holds SMPL parameters, not meshes",
                    hint="pass --smpl-model PATH (your SMPL model file) to mesh them",
                )
            from mega_runtime.train.data import read_evaluation_set

            return read_evaluation_set(gt_path, args.smpl_model)
    return ev.read_ground_truth_npz(gt_path)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from mega_runtime.train import evaluate as ev

    outputs = [args.out / METRICS_FILE, args.out / PER_SAMPLE_FILE] if args.out else []
    _refuse_existing(outputs, args.overwrite)
    predictions = ev.read_predictions(args.predictions)
    gt = _ground_truth(args)
    regressor = None
    if args.regressor is not None:
        if not args.regressor.is_file():
            raise MegaError(f"joint regressor {args.regressor} does not exist", hint="pass J_regressor_h36m.npy")
        regressor = np.load(args.regressor, allow_pickle=False)
    dataset = args.dataset or Path(args.gt).stem
    from mega_runtime.train.metrics import H36M_TO_J14, PELVIS_INDEX_H36M

    joints = H36M_TO_J14 if args.pelvis_joints == "j14" else None
    pelvis = PELVIS_INDEX_H36M if args.pelvis_index is None else args.pelvis_index
    report = ev.evaluate(
        predictions,
        gt,
        regressor,
        dataset=dataset,
        method=args.method,
        pelvis_index=pelvis,
        pelvis_joints=joints,
    )
    print(f"{report.method} on {report.dataset}: {report.count} samples, {report.hypotheses} hypotheses, mm")
    for block, values in report.means.items():
        label = "hypothesis 0" if block == "first" else f"min over {report.hypotheses}"
        print(f"  {label:<16} " + "  ".join(f"{k} {v:.2f}" for k, v in values.items()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        _refuse_existing(outputs, args.overwrite)
        outputs[0].write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        outputs[1].write_text(report.per_sample_csv(), encoding="utf-8")
        for path in outputs:
            print(path)
    return 0


def _report_path(path: Path) -> Path:
    return path / METRICS_FILE if path.is_dir() else path


def _cmd_evaluate_table(args: argparse.Namespace) -> int:
    from mega_runtime.train import evaluate as ev

    reports = [ev.read_report(_report_path(p)) for p in args.reports]
    text = ev.format_table(reports, table=args.table, alignment=args.alignment, fmt=args.format)
    if args.out:
        _refuse_existing([args.out], args.overwrite)
        args.out.write_text(text, encoding="utf-8")
        print(args.out)
    else:
        print(text, end="")
    return 0


def add_evaluate_commands(sub: Any) -> None:
    """Register ``evaluate`` and ``evaluate-table`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "evaluate",
        help="PVE, MPJPE, PA-MPJPE (official and pelvis alignment, min over hypotheses) against ground truth",
        description="Compare predicted meshes with ground truth using the metrics of the MEGA paper "
        "(docs/training-data.md). Predictions: a .npz (vertices (N[,Q],6890,3), optional canonical, imgname, "
        "center), a result .json of infer, or a folder of results. Ground truth: a .npz with vertices "
        "(N,6890,3) and optional imgname/center, or an official 3DPW/EMDB .npz with --smpl-model.",
    )
    p.add_argument("predictions", type=Path, help="predictions .npz, result .json, or a folder of results")
    p.add_argument("--gt", type=Path, required=True, metavar="NPZ", help="ground-truth meshes or annotations .npz")
    p.add_argument("--regressor", type=Path, metavar="NPY", help="joint regressor (J, 6890), e.g. J_regressor_h36m.npy")
    p.add_argument("--smpl-model", type=Path, metavar="PATH", help="SMPL model file to mesh annotation ground truth")
    p.add_argument("--pelvis-index", type=int, help="regressor row of the pelvis (default 0, H36M order)")
    p.add_argument(
        "--pelvis-joints",
        choices=("j14", "all"),
        default="j14",
        help="joints of the pelvis-aligned MPJPE/PA-MPJPE: the 14 LSP joints of the usual protocol (default) or all",
    )
    p.add_argument("--dataset", metavar="NAME", help="dataset name in the report (default: the --gt file name)")
    p.add_argument("--method", default="MEGA", metavar="NAME", help="method name in the report (default MEGA)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write DIR/metrics.json and DIR/per_sample.csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_evaluate)

    t = sub.add_parser(
        "evaluate-table",
        help="lay evaluation reports out as the paper's Table 1 or Table 3 (Markdown or CSV)",
        description="One row per method, per dataset the columns PVE, MPJPE, PA-MPJPE (mm). Table 1: "
        "hypothesis 0 (deterministic); Table 3: min over the hypotheses.",
    )
    t.add_argument("reports", type=Path, nargs="+", help="metrics.json files (or the folders holding them)")
    t.add_argument("--table", choices=("1", "3"), default="1", help="1: deterministic (default), 3: min over Q")
    t.add_argument(
        "--alignment", choices=("official", "pelvis"), default="official", help="PVE/MPJPE alignment (default official)"
    )
    t.add_argument("--format", choices=("markdown", "csv"), default="markdown", help="output format")
    t.add_argument("--out", type=Path, metavar="FILE", help="write the table to FILE instead of stdout")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.set_defaults(func=_cmd_evaluate_table)
