"""SMPL fitting: the skeleton and rotation helpers, the safe model reader, and fits that recover known parameters.

Everything runs on a synthetic SMPL-format model generated here (tests/runtime/smpl_synthetic.py): the real SMPL
files are licensed and never part of the repository.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import coo_matrix, csc_matrix, csr_matrix
from scipy.spatial.transform import Rotation

from mega_runtime.errors import SmplError
from mega_runtime.smpl.skeleton import (
    JOINT_NAMES,
    PARENTS,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    continuous_quaternions,
    forward_kinematics,
    matrix_to_axis_angle,
    read_smpl_model,
)
from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smpl_arrays() -> dict[str, np.ndarray]:
    return synthetic_smpl_arrays(seed=0)


@pytest.fixture(scope="module")
def smpl_pkl(smpl_arrays, tmp_path_factory) -> Path:
    return write_synthetic_smpl(tmp_path_factory.mktemp("smpl") / "SMPL_SYNTHETIC.pkl", smpl_arrays)


@pytest.fixture(scope="module")
def model(smpl_pkl):
    pytest.importorskip("smplx", reason="SMPL fitting needs smplx (pip install -e '.[test]')")
    from mega_runtime.smpl.model import load_smpl_model

    return load_smpl_model(smpl_pkl)


def _motion(num_frames: int, seed: int = 1) -> dict[str, np.ndarray]:
    """A smooth clip: an upright person (SMPL's y up → the camera's y down) turning and moving 3 m away."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, num_frames)
    base, swing = rng.normal(scale=0.25, size=(23, 3)), rng.normal(scale=0.25, size=(23, 3))
    body_pose = base[None] + swing[None] * np.sin(np.pi * t)[:, None, None]
    upright = axis_angle_to_matrix(np.array([math.pi, 0.0, 0.0]))
    turn = axis_angle_to_matrix(np.stack([np.zeros_like(t), 0.6 * np.sin(np.pi * t), 0.1 * t], axis=1))
    transl = np.stack([0.3 * t, 0.1 + 0.05 * np.sin(2 * np.pi * t), 3.0 + 0.5 * t], axis=1)
    return {
        "betas": rng.normal(scale=1.0, size=10).astype(np.float32),
        "global_orient": matrix_to_axis_angle(turn @ upright).astype(np.float32),
        "body_pose": body_pose.astype(np.float32),
        "transl": transl.astype(np.float32),
    }


def _angles_deg(aa_a: np.ndarray, aa_b: np.ndarray) -> np.ndarray:
    rel = np.swapaxes(axis_angle_to_matrix(aa_a), -1, -2) @ axis_angle_to_matrix(aa_b)
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


# --- skeleton and rotations (numpy only) -------------------------------------------------------------------------


def test_skeleton_is_smpls_24_joints():
    assert len(JOINT_NAMES) == len(PARENTS) == 24
    assert JOINT_NAMES[0] == "pelvis" and JOINT_NAMES[-2:] == ("left_hand", "right_hand")
    assert all(0 <= p < j for j, p in enumerate(PARENTS) if j)  # parents come first
    smplx_names = pytest.importorskip("smplx.joint_names").JOINT_NAMES
    assert JOINT_NAMES[:22] == tuple(smplx_names[:22])  # SMPL-X continues with the jaw where SMPL has hands


def test_rotation_helpers_agree_with_scipy_also_near_zero_and_pi():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, math.pi, 150), [0.0, 1e-9, 1e-5, math.pi - 1e-6, math.pi] * 10])
    aa = axes * angles[:, None]
    ref = Rotation.from_rotvec(aa)
    np.testing.assert_allclose(axis_angle_to_matrix(aa), ref.as_matrix(), atol=1e-12)
    quat = axis_angle_to_quaternion(aa)
    np.testing.assert_allclose(np.abs(np.sum(quat * np.roll(ref.as_quat(), 1, axis=1), axis=1)), 1.0, atol=1e-12)
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert np.all(np.linalg.norm(back, axis=1) <= math.pi + 1e-9)
    np.testing.assert_allclose(axis_angle_to_matrix(back), ref.as_matrix(), atol=1e-9)


def test_continuous_quaternions_remove_sign_flips():
    q = axis_angle_to_quaternion(np.stack([np.zeros(50), np.linspace(0, 3 * math.pi, 50), np.zeros(50)], axis=1))
    flipped = np.where(np.arange(50)[:, None] % 3 == 0, -q, q)
    smooth = continuous_quaternions(flipped)
    assert np.all(np.sum(smooth[1:] * smooth[:-1], axis=1) > 0)
    np.testing.assert_allclose(np.abs(smooth), np.abs(q))


def test_smpl_skeleton_and_result_import_no_torch():
    code = "import sys, mega_runtime.smpl.skeleton, mega_runtime.io.result; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- reading model files -----------------------------------------------------------------------------------------


def test_reader_gives_the_same_model_from_pkl_and_npz(smpl_arrays, smpl_pkl, tmp_path):
    npz = write_synthetic_smpl(tmp_path / "SMPL_SYNTHETIC.npz", smpl_arrays)
    a, b = read_smpl_model(smpl_pkl), read_smpl_model(npz)
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.shapedirs.shape == (6890, 3, 10) and a.faces.shape == (13776, 3)
    np.testing.assert_allclose(a.rest_joints(), smpl_arrays["J_regressor"] @ smpl_arrays["v_template"])


def test_reader_reads_chumpy_and_sparse_arrays_without_those_packages(smpl_arrays, tmp_path, monkeypatch):
    """The official .pkl files hold chumpy arrays and a scipy.sparse J_regressor; neither is imported to read them."""
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # pickled like chumpy's Ch: its value in `x`
        def __init__(self, x):
            self.x = x
            self._dirty_vars = {"x"}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
    data = dict(smpl_arrays, shapedirs=Ch(smpl_arrays["shapedirs"]), J_regressor=csc_matrix(smpl_arrays["J_regressor"]))
    path = tmp_path / "official_like.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")

    model = read_smpl_model(path)
    np.testing.assert_array_equal(model.shapedirs, smpl_arrays["shapedirs"])
    np.testing.assert_array_equal(model.J_regressor, smpl_arrays["J_regressor"])
    assert "chumpy" not in sys.modules


@pytest.mark.parametrize(("protocol", "sparse"), [(2, csr_matrix), (4, coo_matrix), (5, csc_matrix)])
def test_reader_reads_any_pickle_protocol_and_sparse_format(smpl_arrays, tmp_path, protocol, sparse):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(dict(smpl_arrays, J_regressor=sparse(smpl_arrays["J_regressor"])), protocol=protocol))
    np.testing.assert_array_equal(read_smpl_model(path).J_regressor, smpl_arrays["J_regressor"])


class _Payload:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_reader_refuses_pickles_that_would_run_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Payload()}, protocol=2))
    with pytest.raises(SmplError, match="not allowed"):
        read_smpl_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("weights"), "missing"),
        (lambda a: a.update(posedirs=a["posedirs"][:, :, :100]), "posedirs has shape"),
        (lambda a: a.update(kintree_table=np.zeros((2, 52), np.uint32)), "kintree_table has shape"),
        (lambda a: a.update(v_template=np.full((6890, 3), np.nan)), "non-finite"),
    ],
)
def test_reader_explains_malformed_models(smpl_arrays, tmp_path, change, message):
    arrays = dict(smpl_arrays)
    change(arrays)
    path = write_synthetic_smpl(tmp_path / "bad.pkl", arrays)
    with pytest.raises(SmplError, match=message) as info:
        read_smpl_model(path)
    assert info.value.hint


def test_reader_explains_missing_and_foreign_files(tmp_path):
    with pytest.raises(SmplError, match="does not exist") as info:
        read_smpl_model(tmp_path / "SMPL_NEUTRAL.pkl")
    assert "smpl.is.tue.mpg.de" in info.value.hint
    (tmp_path / "noise.pkl").write_bytes(b"\x00not a pickle at all")
    with pytest.raises(SmplError):
        read_smpl_model(tmp_path / "noise.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(SmplError, match="not an SMPL model"):
        read_smpl_model(tmp_path / "list.pkl")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SmplError, match="npz"):
        read_smpl_model(tmp_path / "broken.npz")


def test_missing_smplx_is_explained(smpl_pkl, monkeypatch):
    from mega_runtime.smpl.model import load_smpl_model

    monkeypatch.setitem(sys.modules, "smplx", None)
    with pytest.raises(SmplError, match="smplx") as info:
        load_smpl_model(smpl_pkl)
    assert "pip install" in info.value.hint


# --- fitting -----------------------------------------------------------------------------------------------------


def test_solver_skinning_and_skeleton_match_smplx(model):
    import torch

    from mega_runtime.smpl import fit as smpl_fit

    motion = _motion(6)
    verts, joints = model.forward(**motion)
    local = axis_angle_to_matrix(np.concatenate([motion["global_orient"][:, None], motion["body_pose"]], 1))
    state = smpl_fit._State(torch.as_tensor(local, dtype=torch.float32), torch.as_tensor(motion["transl"]))
    body = smpl_fit._Body(model.arrays, np.arange(6890))
    posed = smpl_fit._pose(body, torch.as_tensor(motion["betas"]), state)
    np.testing.assert_allclose(smpl_fit._vertices(body, posed).numpy(), verts, atol=2e-5)
    np.testing.assert_allclose(posed.pos.numpy(), joints, atol=2e-5)
    _, fk = forward_kinematics(model.arrays.rest_joints(motion["betas"]), local, motion["transl"])
    np.testing.assert_allclose(fk, joints, atol=2e-5)


def test_fit_recovers_known_shape_and_poses(model):
    from mega_runtime.smpl.fit import fit_smpl

    motion = _motion(30)
    verts, joints = model.forward(**motion)
    fit = fit_smpl(model, verts)
    assert fit.betas.shape == (10,) and fit.body_pose.shape == (30, 23, 3) and fit.joints.shape == (30, 24, 3)
    assert fit.vertex_error.max() < 1e-3  # metres
    assert np.abs(fit.joints - joints).max() < 2e-3
    np.testing.assert_allclose(fit.betas, motion["betas"], atol=0.02)
    assert _angles_deg(fit.global_orient, motion["global_orient"]).max() < 0.5
    assert _angles_deg(fit.body_pose, motion["body_pose"]).max() < 2.0
    np.testing.assert_allclose(fit.rest_joints, model.arrays.rest_joints(motion["betas"]), atol=2e-3)
    # the fitted parameters mean the same to smplx
    refit_verts, _ = model.forward(fit.betas, fit.global_orient, fit.body_pose, fit.transl)
    assert np.linalg.norm(refit_verts - verts, axis=-1).mean() < 1e-3


def test_fit_is_deterministic_and_skips_unseen_frames(model):
    from mega_runtime.smpl.fit import fit_smpl

    motion = _motion(12, seed=2)
    verts, joints = model.forward(**motion)
    valid = np.ones(12, dtype=bool)
    valid[[0, 5, 6]] = False
    verts[5] = np.nan  # unseen frames may hold anything
    first, second = fit_smpl(model, verts, valid), fit_smpl(model, verts, valid)
    for name in ("betas", "global_orient", "body_pose", "transl", "joints", "vertex_error"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not first.valid[[0, 5, 6]].any() and first.valid.sum() == 9
    assert not first.joints[[0, 5, 6]].any() and not first.body_pose[[0, 5, 6]].any()
    assert np.abs(first.joints[valid] - joints[valid]).max() < 2e-3


def test_warm_start_from_a_neighbour_repairs_a_frame_stuck_in_a_wrong_minimum(model, monkeypatch):
    """A frame whose start twists an arm the wrong way is refitted from the previous / next frame's solution."""
    import torch

    from mega_runtime.smpl import fit as smpl_fit
    from mega_runtime.smpl.fit import SmplFitOptions, fit_smpl

    motion = _motion(24, seed=3)
    verts, joints = model.forward(**motion)
    original = smpl_fit._procrustes_start
    twist = torch.as_tensor(axis_angle_to_matrix(np.array([math.pi, 0, 0])), dtype=torch.float32)

    def twisted_start(body, betas, target):
        state = original(body, betas, target)
        if target.shape[0] == 24:  # the clip's batch, not the shape stage or a refit
            for joint in (16, 18):  # left shoulder and elbow: 180° about the arm
                state.rot[7, joint] = state.rot[7, joint] @ twist
        return state

    monkeypatch.setattr(smpl_fit, "_procrustes_start", twisted_start)
    known = SmplFitOptions(betas=tuple(float(b) for b in motion["betas"]))
    stuck = fit_smpl(model, verts, options=SmplFitOptions(betas=known.betas, refit_threshold_m=math.inf))
    repaired = fit_smpl(model, verts, options=known)
    assert stuck.vertex_error[7] > 1e-3  # without the warm start the frame stays wrong…
    assert repaired.vertex_error[7] < 2e-4  # …with it, it is as good as its neighbours
    assert np.abs(repaired.joints - joints).max() < 2e-3


def test_fit_refuses_malformed_vertices(model):
    from mega_runtime.smpl.fit import fit_smpl

    with pytest.raises(SmplError, match=r"\(F, 6890, 3\)"):
        fit_smpl(model, np.zeros((4, 6890, 2), np.float32))
    with pytest.raises(SmplError, match="valid"):
        fit_smpl(model, np.zeros((4, 6890, 3), np.float32), valid=np.ones(5, bool))


# --- results and the command line ----------------------------------------------------------------------------------


def _result_with_meshes(path: Path, meshes: np.ndarray, hypotheses: int = 2):
    """A result pair whose person 0 is ``meshes`` (F, 6890, 3) at hypothesis 1 (named by ``path``), and whose
    person 1 is never seen."""
    from mega_runtime.io.result import Result, write_result

    num_frames = meshes.shape[0]
    vertices = np.zeros((num_frames, 2, hypotheses, 6890, 3), np.float32)
    vertices[:, 0, 1] = meshes
    vertices[:, 0, 0] = meshes + 0.05  # hypothesis 0 is somewhere else
    valid = np.zeros((num_frames, 2), bool)
    valid[:, 0] = True
    arrays = {
        "faces": np.zeros((13776, 3), np.int32),
        "vertices": vertices,
        "cam_t": np.zeros((num_frames, 2, hypotheses, 3), np.float32),
        "tokens": np.zeros((num_frames, 2, hypotheses, 54), np.int16),
        "log_likelihood": np.zeros((num_frames, 2, hypotheses), np.float32),
        "vertex_std": np.zeros((num_frames, 2, 6890), np.float32),
        "rotation": np.zeros((num_frames, 2, 3, 3), np.float32),
        "cam_crop": np.zeros((num_frames, 2, 3), np.float32),
        "boxes_xyxy": np.zeros((num_frames, 2, 4), np.float32),
        "track_ids": np.array([0, 1], np.int32),
        "valid": valid,
        "frame_indices": np.arange(num_frames, dtype=np.int32),
        "path": np.ones((num_frames, 2), np.int16),
    }
    return write_result(Result(meta={"source": {"kind": "video"}}, arrays=arrays), path)


def test_cli_fit_smpl_writes_a_new_result_with_the_smpl_arrays(model, smpl_pkl, tmp_path, capsys):
    from mega_runtime.commands.cli import main
    from mega_runtime.io.result import read_result

    motion = _motion(8, seed=4)
    verts, joints = model.forward(**motion)
    json_path, _ = _result_with_meshes(tmp_path / "clip", verts)
    assert main(["fit-smpl", str(json_path), "--smpl-model", str(smpl_pkl)]) == 0
    out = read_result(tmp_path / "clip.smpl.json")
    assert str(tmp_path / "clip.smpl.json") in capsys.readouterr().out
    a = out.arrays
    assert a["smpl_betas"].shape == (2, 10) and a["smpl_body_pose"].shape == (8, 2, 23, 3)
    assert a["smpl_rest_joints"].shape == (2, 24, 3) and a["smpl_hypothesis"].dtype == np.int16
    assert (a["smpl_hypothesis"] == 1).all()  # fitted the path's hypothesis
    assert np.abs(a["smpl_joints"][:, 0] - joints).max() < 2e-3
    assert not a["smpl_joints"][:, 1].any() and not a["smpl_betas"][1].any()  # never seen: zeros
    smpl = out.meta["smpl"]
    assert (
        smpl["source"] == "path" and smpl["model_path"] == str(smpl_pkl.resolve()) and len(smpl["model_sha256"]) == 64
    )
    assert smpl["people"][0]["frames_fitted"] == 8 and smpl["people"][1]["frames_fitted"] == 0
    np.testing.assert_array_equal(a["vertices"], read_result(json_path).arrays["vertices"])  # the rest is kept

    # never overwrites; bad inputs are usage errors with a fix
    assert main(["fit-smpl", str(json_path), "--smpl-model", str(smpl_pkl)]) == 2
    assert "not overwriting" in capsys.readouterr().err
    missing = ["fit-smpl", str(json_path), "--smpl-model", str(tmp_path / "none.pkl"), "--out", str(tmp_path / "o")]
    assert main(missing) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_result_validation_checks_the_smpl_arrays(tmp_path):
    from mega_runtime.io.result import ResultFormatError, read_result, write_result

    json_path, _ = _result_with_meshes(tmp_path / "clip", np.zeros((3, 6890, 3), np.float32))
    result = read_result(json_path)
    bad = dict(result.arrays, smpl_joints=np.zeros((3, 2, 23, 3), np.float32))
    with pytest.raises(ResultFormatError, match="smpl_joints"):
        write_result(type(result)(meta=result.meta, arrays=bad), tmp_path / "bad")
