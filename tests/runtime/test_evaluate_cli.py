"""``mega-runtime evaluate`` and ``evaluate-table`` end to end: inputs in each supported form, the official
fixture numbers through the command line, matching by name and box centre, reports, tables and refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mega_runtime.commands.cli import main
from mega_runtime.io.result import write_result
from mega_runtime.train import evaluate as ev
from tests.conftest import SHARED_DIR
from tests.runtime.test_result_tracking import make_result

CVQMAE_FIXTURE = SHARED_DIR / "training_fixtures" / "train_cvqmae_resnet"


def codes(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 4096


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def official(tmp_path) -> dict:
    """The deterministic and stochastic eval arrays of the CVQMAE training fixture, written as evaluate inputs."""
    if not CVQMAE_FIXTURE.is_dir():
        pytest.skip(f"{CVQMAE_FIXTURE} is absent: this test reads ../shared/training_fixtures (or MEGA_SHARED_DIR)")
    ref = np.load(CVQMAE_FIXTURE / "reference.npz")
    names = np.array([f"seq/image_{i:05d}.jpg" for i in range(4)])
    np.savez(tmp_path / "gt.npz", vertices=codes(ref["mesh_int16"][0]), imgname=names)
    order = np.array([2, 0, 3, 1])  # predictions in another order, with absolute paths: matched by name
    np.savez(
        tmp_path / "det.npz",
        vertices=codes(ref["eval_det_pred_int16"])[order],
        imgname=np.array([f"/data/3DPW/{n}" for n in names[order]]),
    )
    np.savez(tmp_path / "gt1.npz", vertices=codes(ref["mesh_int16"][0, :1]))
    np.savez(
        tmp_path / "sto.npz",
        vertices=codes(ref["eval_sto_pred_int16"])[None],
        canonical=codes(ref["eval_sto_canonical_int16"])[None],
    )
    np.save(tmp_path / "J.npy", ref["J_regressor_h36m_random"])
    return {"ref": ref, "tol": json.loads((CVQMAE_FIXTURE / "fixture.json").read_text())["tolerances"]}


def test_evaluate_reproduces_the_official_deterministic_and_min_over_q_metrics(tmp_path, capsys, official):
    ref, tol = official["ref"], official["tol"]
    common = ["--regressor", str(tmp_path / "J.npy"), "--dataset", "3DPW"]
    code, out, _ = run(
        capsys,
        "evaluate",
        str(tmp_path / "det.npz"),
        "--gt",
        str(tmp_path / "gt.npz"),
        *common,
        "--out",
        str(tmp_path / "det"),
    )
    assert code == 0 and "MEGA on 3DPW: 4 samples, 1 hypotheses" in out
    first = json.loads((tmp_path / "det" / "metrics.json").read_text())["metrics"]["first"]
    for key, name in (("pve", "eval_det_pve_mm"), ("mpjpe", "eval_det_mpjpe_mm"), ("pa_mpjpe", "eval_det_pampjpe_mm")):
        assert abs(first[key] - float(ref[name])) <= tol[name]["atol"], key

    code, _, _ = run(
        capsys,
        "evaluate",
        str(tmp_path / "sto.npz"),
        "--gt",
        str(tmp_path / "gt1.npz"),
        *common,
        "--out",
        str(tmp_path / "sto"),
    )
    assert code == 0
    report = json.loads((tmp_path / "sto" / "metrics.json").read_text())
    assert report["hypotheses"] == 5
    for key, name in (("pve", "pve"), ("mpjpe", "mpjpe"), ("pa_mpjpe", "pampjpe")):
        assert abs(report["metrics"]["min"][key] - float(ref[f"eval_sto_min_{name}_mm"])) <= max(
            tol[f"eval_sto_min_{name}_mm"]["atol"], 1e-5
        ), key
    rows = list(csv.DictReader((tmp_path / "det" / "per_sample.csv").open()))
    assert [r["name"] for r in rows] == [f"seq/image_{i:05d}.jpg" for i in range(4)]
    assert abs(np.mean([float(r["first_pve"]) for r in rows]) - first["pve"]) < 1e-4


def test_tables_lay_reports_out_as_the_paper_does(tmp_path, capsys, official):
    args = ["--gt", str(tmp_path / "gt.npz"), "--regressor", str(tmp_path / "J.npy")]
    assert main(["evaluate", str(tmp_path / "det.npz"), *args, "--dataset", "3DPW", "--out", str(tmp_path / "a")]) == 0
    assert main(["evaluate", str(tmp_path / "det.npz"), *args, "--dataset", "EMDB", "--method", "Ours",
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    capsys.readouterr()
    code, out, _ = run(capsys, "evaluate-table", str(tmp_path / "a"), str(tmp_path / "b" / "metrics.json"))
    lines = out.splitlines()
    assert code == 0 and lines[1] == (
        "| Method | 3DPW PVE | 3DPW MPJPE | 3DPW PA-MPJPE | EMDB PVE | EMDB MPJPE | EMDB PA-MPJPE |"
    )
    assert lines[3].startswith("| MEGA | 102.8 | 23.1 | 4.5 | – |") and lines[4].startswith(
        "| Ours | – | – | – | 102.8"
    )
    code, out, _ = run(capsys, "evaluate-table", str(tmp_path / "a"), "--format", "csv", "--alignment", "pelvis")
    assert code == 0 and out.splitlines()[0] == "Method,3DPW PVE,3DPW MPJPE,3DPW PA-MPJPE"
    code, _, err = run(capsys, "evaluate-table", str(tmp_path / "a"), "--table", "3")
    assert code == 2 and "several hypotheses" in err
    assert main(["evaluate-table", str(tmp_path / "a"), "--out", str(tmp_path / "t.md")]) == 0
    code, _, err = run(capsys, "evaluate-table", str(tmp_path / "a"), "--out", str(tmp_path / "t.md"))
    assert code == 2 and "--overwrite" in err


def test_a_folder_of_results_is_matched_to_ground_truth_by_image_and_box_centre(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=0.3, size=(3, 6890, 3)).astype(np.float32)
    gt -= gt.mean(axis=1, keepdims=True)
    results = tmp_path / "results"
    results.mkdir()
    # photo a.jpg holds two people (GT rows 0 and 1, told apart by box centre), photo b.jpg one (GT row 2)
    for stem, people, rows, centers in (("a", 2, [1, 0], [(300, 100), (100, 100)]), ("b", 1, [2], [(50, 60)])):
        result = make_result(frames=1, people=people, hypotheses=2)
        for p, (row, (cx, cy)) in enumerate(zip(rows, centers, strict=True)):
            result.arrays["vertices"][0, p] = gt[row] + np.array([0.1, 0.2, 3.0], np.float32)  # translation only
            result.arrays["boxes_xyxy"][0, p] = (cx - 10, cy - 10, cx + 10, cy + 10)
            result.arrays["valid"][0, p] = True
        result.meta["source"] = {"kind": "image", "path": f"/photos/{stem}.jpg"}
        write_result(result, results / stem)
    np.savez(tmp_path / "gt.npz", vertices=gt, imgname=np.array(["a.jpg", "a.jpg", "b.jpg"]),
             center=np.array([(100.0, 100.0), (300.0, 100.0), (50.0, 60.0)]))  # fmt: skip
    code, out, _ = run(capsys, "evaluate", str(results), "--gt", str(tmp_path / "gt.npz"), "--out", str(tmp_path / "o"))
    assert code == 0, out
    report = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert report["hypotheses"] == 2 and report["metrics"]["first"]["pve"] < 1e-3
    assert any("no joint regressor" in w for w in report["warnings"])


def test_evaluate_refuses_what_it_cannot_use_with_the_fix(tmp_path, capsys):
    v = np.zeros((2, 6890, 3), np.float32)
    np.savez(tmp_path / "gt.npz", vertices=v)
    np.savez(tmp_path / "three.npz", vertices=np.zeros((3, 6890, 3), np.float32))
    np.savez(tmp_path / "noverts.npz", verts=v)
    np.savez(tmp_path / "params.npz", pose=np.zeros((2, 72)))
    cases = [
        (["three.npz", "--gt", "gt.npz"], "3 predictions for 2 ground-truth meshes"),
        (["noverts.npz", "--gt", "gt.npz"], "no 'vertices' array"),
        (["gt.npz", "--gt", "params.npz"], "--smpl-model"),
        (["gt.npz", "--gt", "gt.npz", "--regressor", "absent.npy"], "does not exist"),
        (["gt.txt", "--gt", "gt.npz"], "must be a .npz"),
    ]
    for argv, needle in cases:
        argv = [str(tmp_path / a) if a.endswith((".npz", ".npy", ".txt")) else a for a in argv]
        code, _, err = run(capsys, "evaluate", *argv)
        assert code == 2 and needle in err and "fix:" in err, (argv, err)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")
    code, _, err = run(capsys, "evaluate", str(tmp_path / "gt.npz"), "--gt", str(tmp_path / "gt.npz"),
                       "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "--overwrite" in err and (tmp_path / "out" / "metrics.json").read_text() == "{}"


def test_a_report_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "x.json").write_text('{"schema": "mega-result"}')
    with pytest.raises(ev.EvaluationError, match="not an evaluation report"):
        ev.read_report(tmp_path / "x.json")
