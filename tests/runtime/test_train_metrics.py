"""The evaluation metrics (mega_runtime/train/metrics.py) equal the official ones recorded in the training
fixtures (``eval_*`` arrays of ../shared/training_fixtures), and behave as metrics should on known inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mega_runtime.train import metrics
from tests.conftest import SHARED_DIR

TRAINING_FIXTURES = SHARED_DIR / "training_fixtures"
FOLDERS = sorted(p.name for p in TRAINING_FIXTURES.iterdir() if p.is_dir()) if TRAINING_FIXTURES.is_dir() else []


def _codes(a: np.ndarray) -> np.ndarray:
    """int16 codes on the fixtures' 1/4096 m grid → metres (exact)."""
    return a.astype(np.float32) / 4096


def _fixture(name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    folder = TRAINING_FIXTURES / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: these tests read ../shared/training_fixtures (or MEGA_SHARED_DIR)")
    return json.loads((folder / "fixture.json").read_text()), np.load(folder / "reference.npz")


def _close(name: str, value, fixture: dict, reference) -> None:
    tol = fixture["tolerances"][name]["atol"]
    np.testing.assert_allclose(value, reference[name], rtol=0, atol=tol, err_msg=name)


def test_every_training_fixture_with_eval_arrays_is_covered():
    if not FOLDERS:
        pytest.skip(f"{TRAINING_FIXTURES} is absent")
    with_eval = set()
    for name in FOLDERS:
        arrays = json.loads((TRAINING_FIXTURES / name / "fixture.json").read_text())["arrays"]
        if any(k.startswith("eval_") for k in arrays):
            with_eval.add(name)
    assert with_eval <= {"train_cvqmae_resnet", "train_mesh_vqvae"}, f"new fixtures with eval_* arrays: {with_eval}"


def test_deterministic_pve_mpjpe_pa_mpjpe_equal_the_official_metrics():
    fixture, ref = _fixture("train_cvqmae_resnet")
    gt, pred = _codes(ref["mesh_int16"][0]), _codes(ref["eval_det_pred_int16"])
    regressor = ref["J_regressor_h36m_random"]
    _close("eval_det_pve_mm", 1000 * metrics.pve(gt, pred).mean(), fixture, ref)
    _close("eval_det_mpjpe_mm", 1000 * metrics.mpjpe(gt, pred, regressor).mean(), fixture, ref)
    _close("eval_det_pampjpe_mm", 1000 * metrics.pa_mpjpe(gt, pred, regressor).mean(), fixture, ref)


def test_stochastic_per_sample_and_min_over_q_equal_the_official_metrics():
    fixture, ref = _fixture("train_cvqmae_resnet")
    posed, canonical = _codes(ref["eval_sto_pred_int16"]), _codes(ref["eval_sto_canonical_int16"])
    gt = np.repeat(_codes(ref["mesh_int16"][0, :1]), len(posed), axis=0)
    regressor = ref["J_regressor_h36m_random"]
    per = {
        "pve": 1000 * metrics.pve(gt, posed),
        "mpjpe": 1000 * metrics.mpjpe(gt, posed, regressor),
        "pampjpe": 1000 * metrics.pa_mpjpe(gt, canonical, regressor),  # official: PA on the canonical samples
    }
    for key, values in per.items():
        _close(f"eval_sto_{key}_per_sample_mm", values, fixture, ref)
        _close(f"eval_sto_min_{key}_mm", metrics.min_over_hypotheses(values[None])[0], fixture, ref)


def test_mesh_vqvae_v2v_and_pa_v2v_equal_the_official_metrics():
    fixture, ref = _fixture("train_mesh_vqvae")
    gt, pred = _codes(ref["eval_gt_int16"]), _codes(ref["eval_pred_int16"])
    _close("eval_v2v_mm", 1000 * metrics.pve(gt, pred).mean(), fixture, ref)
    _close("eval_pa_v2v_mm", 1000 * metrics.pa_pve(gt, pred).mean(), fixture, ref)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_procrustes_removes_scale_rotation_and_translation_exactly():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(3, 50, 3))
    pred = np.stack([1.3 * gt[i] @ _random_rotation(rng).T + rng.normal(size=3) for i in range(3)])
    np.testing.assert_allclose(metrics.pa_pve(gt, pred), 0.0, atol=1e-12)
    assert metrics.pve(gt, pred).min() > 0.1


def test_procrustes_never_returns_a_reflection():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(1, 40, 3))
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    aligned = metrics.similarity_align(mirrored, gt)
    centred = mirrored - mirrored.mean(axis=1, keepdims=True)
    a = np.linalg.lstsq(centred[0], aligned[0] - aligned[0].mean(axis=0), rcond=None)[0]
    assert np.linalg.det(a) > 0 and metrics.pa_pve(gt, mirrored)[0] > 0.1


def test_pelvis_alignment_ignores_translation_and_official_centring_ignores_it_too():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(2, 30, 3))
    gt -= gt.mean(axis=1, keepdims=True)
    regressor = rng.dirichlet(np.ones(30), size=5)
    shifted = gt + np.array([0.3, -1.0, 4.0])
    for alignment in metrics.ALIGNMENTS:
        np.testing.assert_allclose(metrics.pve(gt, shifted, alignment, regressor), 0.0, atol=1e-12)
        np.testing.assert_allclose(metrics.mpjpe(gt, shifted, regressor, alignment), 0.0, atol=1e-12)


def test_pelvis_and_official_alignment_differ_when_the_pelvis_is_off_centre():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(1, 30, 3))
    gt -= gt.mean(axis=1, keepdims=True)
    regressor = rng.dirichlet(np.ones(30), size=5)
    pred = gt.copy()
    pred[:, :10] += 0.2  # moves the vertex mean and the pelvis differently
    official = metrics.mpjpe(gt, pred, regressor, "official")
    pelvis = metrics.mpjpe(gt, pred, regressor, "pelvis")
    assert abs(official[0] - pelvis[0]) > 1e-3


def test_min_over_hypotheses_is_taken_per_metric():
    errors = np.array([[3.0, 1.0, 2.0], [0.5, 4.0, 9.0]])
    np.testing.assert_array_equal(metrics.min_over_hypotheses(errors), [1.0, 0.5])


@pytest.mark.parametrize(
    ("gt_shape", "pred_shape", "needle"),
    [((2, 10, 3), (3, 10, 3), "row-aligned"), ((2, 10, 3), (2, 11, 3), "topology"), ((2, 10), (2, 10), "(B, N, 3)")],
)
def test_mismatched_inputs_raise_a_clear_error(gt_shape, pred_shape, needle):
    with pytest.raises(metrics.MetricInputError) as info:
        metrics.pve(np.zeros(gt_shape), np.zeros(pred_shape))
    assert needle in str(info.value)


def test_a_regressor_of_the_wrong_size_and_nan_vertices_are_refused():
    with pytest.raises(metrics.MetricInputError, match="J_regressor_h36m"):
        metrics.mpjpe(np.zeros((1, 10, 3)), np.zeros((1, 10, 3)), np.zeros((17, 11)))
    bad = np.zeros((1, 10, 3))
    bad[0, 0, 0] = np.nan
    with pytest.raises(metrics.MetricInputError, match="NaN"):
        metrics.pve(np.zeros((1, 10, 3)), bad)


def test_the_usual_protocol_aligns_at_the_pelvis_then_measures_the_14_lsp_joints():
    rng = np.random.default_rng(4)
    gt, pred = rng.normal(size=(2, 2, 40, 3))
    regressor = rng.dirichlet(np.ones(40), size=17)
    joints_g, joints_p = regressor @ gt, regressor @ pred  # (2, 17, 3)
    joints_g, joints_p = joints_g - joints_g[:, :1], joints_p - joints_p[:, :1]  # pelvis = H36M joint 0
    lsp = list(metrics.H36M_TO_J14)
    expected = np.linalg.norm(joints_g[:, lsp] - joints_p[:, lsp], axis=-1).mean(axis=1)
    np.testing.assert_allclose(metrics.mpjpe(gt, pred, regressor, "pelvis", joints=metrics.H36M_TO_J14), expected)
    assert 0 not in metrics.H36M_TO_J14 and len(set(metrics.H36M_TO_J14)) == 14
    all17 = np.linalg.norm(joints_g - joints_p, axis=-1).mean(axis=1)
    np.testing.assert_allclose(metrics.mpjpe(gt, pred, regressor, "pelvis"), all17)
    with pytest.raises(metrics.MetricInputError, match="joint subset"):
        metrics.pa_mpjpe(gt, pred, regressor, joints=(3, 17))
