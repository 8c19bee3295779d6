"""Fit SMPL pose and shape to MEGA's meshes: a user-supplied SMPL model, loaded with ``smplx``, posed to match.

MEGA's meshes share SMPL's topology (6890 vertices in SMPL's order), so the fit is a registration with known
correspondences: find one body shape ``betas`` per person and, per frame, the 24 joint rotations and a
translation whose SMPL mesh is closest (least squares over all vertices) to the given one.

The solver, deterministic and free of randomness:

1. **Closed-form start** per frame: each joint's global rotation by weighted Procrustes (Kabsch) between the rest
   vertices it skins and the target vertices, local rotations from the chain, translation from the mean residual.
2. **Shape** on up to ``shape_frames`` evenly spread frames: Levenberg–Marquardt over betas and those frames'
   poses together (the frames' blocks are eliminated with a Schur complement, so the cost is linear in frames).
3. **Pose** of every frame with the shape fixed: batched Levenberg–Marquardt (one 75×75 system per frame, with an
   analytic Jacobian of linear blend skinning: rotation increments of each joint's subtree, in the camera frame).
4. **Warm start, frame to frame**: a frame whose error stands out from its neighbours' (a wrong local minimum,
   e.g. a limb twisted the other way) is refitted from the previous and the next frame's solution, and keeps
   the best of the three.

Vertices are subsampled (``vertex_stride``) during the iterations; the reported error uses all vertices. The
Jacobian leaves out the (small) dependence of the pose corrective offsets on the pose; the residual still
includes them, so a mesh SMPL can reproduce is recovered (to ~0.1 mm with the default iterations). Everything
runs in float32 on the CPU except the small linear solves (float64). See docs/smpl.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mega_runtime.errors import SmplError
from mega_runtime.io.result import Result
from mega_runtime.smpl.model import SmplModel
from mega_runtime.smpl.skeleton import (
    NUM_BETAS,
    NUM_JOINTS,
    PARENTS,
    SMPL_NUM_VERTICES,
    SmplFit,
    SmplModelArrays,
    file_sha256,
    matrix_to_axis_angle,
    with_smpl_fit,
)

log = logging.getLogger(__name__)

_DOF = 3 * NUM_JOINTS + 3  # per-frame unknowns: 24 rotation increments + translation
_SETTLED = 1e-4  # an accepted step that lowers the squared error by less than this fraction ends the iterations


@dataclass(frozen=True)
class SmplFitOptions:
    """How hard to fit. ``vertex_stride``: use every k-th vertex in the iterations (the error uses all)."""

    shape_frames: int = 16
    shape_iterations: int = 12
    pose_iterations: int = 5
    batch_frames: int = 32
    vertex_stride: int = 4
    refit_threshold_m: float = 0.002
    betas: tuple[float, ...] | None = None  # a known shape: skips the shape stage


# --- the model as float32 tensors over a set of vertices ----------------------------------------------------------


class _Body:
    """Model tensors restricted to ``index`` vertices (n of them), laid out for the solver's matrix products."""

    def __init__(self, arrays: SmplModelArrays, index: np.ndarray) -> None:
        f32 = torch.float32
        self.n = n = len(index)
        self.v_template = torch.as_tensor(arrays.v_template[index], dtype=f32)
        self.shapedirs = torch.as_tensor(arrays.shapedirs[index], dtype=f32)  # (n, 3, 10)
        self.posedirs = torch.as_tensor(arrays.posedirs[index].reshape(n * 3, -1).T.copy(), dtype=f32)  # (207, n·3)
        weights = arrays.weights[index]
        self.weights = torch.as_tensor(weights, dtype=f32)  # (n, 24)
        self.j_template = torch.as_tensor(arrays.J_regressor @ arrays.v_template, dtype=f32)  # (24, 3)
        self.j_shapedirs = torch.as_tensor(np.einsum("jv,vcb->jcb", arrays.J_regressor, arrays.shapedirs), dtype=f32)
        sub = np.zeros((NUM_JOINTS, NUM_JOINTS))  # sub[k, m]: m is in k's subtree
        for m in range(NUM_JOINTS):
            k = m
            while k >= 0:
                sub[k, m] = 1.0
                k = PARENTS[k]
        # rows (joint, axis): the skinning weight w_im, and s_ik = Σ_{m ∈ subtree(k)} w_im
        self.w_rows = torch.as_tensor(np.repeat(weights.T, 3, axis=0), dtype=f32)  # (72, n)
        self.s_rows = torch.as_tensor(np.repeat(sub @ weights.T, 3, axis=0), dtype=f32)  # (72, n)
        w2 = weights**2  # Procrustes weights: the vertices a joint clearly owns
        self.proc_w = torch.as_tensor(w2, dtype=f32)
        self.proc_mass = torch.as_tensor(w2.sum(0), dtype=f32)

    def shaped(self, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3) rest vertices and (24, 3) rest joints of ``betas`` (10,)."""
        return self.v_template + self.shapedirs @ betas, self.j_template + self.j_shapedirs @ betas


def _skew(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*w.shape[:-1], 3, 3)


def _rodrigues(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors → (..., 3, 3) matrices (float, no gradients needed)."""
    theta2 = (w * w).sum(-1)[..., None, None]
    theta = theta2.sqrt()
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(safe)) / (safe * safe))
    k = _skew(w)
    return torch.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def _chain(rot: torch.Tensor, joints: torch.Tensor, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global rotations (B, 24, 3, 3) and posed joint positions (B, 24, 3) from local rotations."""
    glob = [rot[:, 0]]
    pos = [joints[0].expand(rot.shape[0], 3) + transl]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        glob.append(glob[p] @ rot[:, j])
        pos.append(pos[p] + glob[p] @ (joints[j] - joints[p]))
    return torch.stack(glob, 1), torch.stack(pos, 1)


@dataclass
class _State:
    rot: torch.Tensor  # (B, 24, 3, 3) local rotations
    transl: torch.Tensor  # (B, 3)


@dataclass
class _Posed:
    v_posed: torch.Tensor  # (B, n, 3) rest vertices with shape and pose correctives
    glob: torch.Tensor  # (B, 24, 3, 3)
    pos: torch.Tensor  # (B, 24, 3) posed joints (translation included)
    offset: torch.Tensor  # (B, 24, 3): bone m maps x to glob_m x + offset_m


def _pose(body: _Body, betas: torch.Tensor, state: _State) -> _Posed:
    v_shaped, joints = body.shaped(betas)
    batch = state.rot.shape[0]
    pose_feature = (state.rot[:, 1:] - torch.eye(3)).reshape(batch, -1)
    v_posed = v_shaped + (pose_feature @ body.posedirs).reshape(batch, body.n, 3)
    glob, pos = _chain(state.rot, joints, state.transl)
    return _Posed(v_posed, glob, pos, pos - (glob * joints[:, None, :]).sum(-1))


def _vertices(body: _Body, posed: _Posed) -> torch.Tensor:
    """(B, n, 3) skinned vertices: per-vertex blended transforms from one matrix product."""
    batch = posed.glob.shape[0]
    bones = torch.cat([posed.glob, posed.offset[..., None]], -1)  # (B, 24, 3, 4)
    blended = (body.weights @ bones.transpose(0, 1).reshape(NUM_JOINTS, batch * 12)).reshape(body.n, batch, 3, 4)
    vp = posed.v_posed.transpose(0, 1)[..., None, :]  # (n, B, 1, 3)
    verts = torch.addcmul(blended[..., 3], blended[..., 0], vp[..., 0])
    verts.addcmul_(blended[..., 1], vp[..., 1]).addcmul_(blended[..., 2], vp[..., 2])
    return verts.transpose(0, 1)


def _subtree_lever(body: _Body, posed: _Posed) -> tuple[torch.Tensor, torch.Tensor]:
    """Aᵀ (B, 72, n) with a_ik = Σ_{m ∈ subtree(k)} w_im (u_im − p_k), u_im = vertex i moved by bone m; and the
    skinned vertices (B, n, 3) (the pelvis's subtree sum)."""
    batch = posed.glob.shape[0]
    u = posed.glob.reshape(batch, 3 * NUM_JOINTS, 3) @ posed.v_posed.transpose(1, 2)  # (B, 72, n)
    u += posed.offset.reshape(batch, -1, 1)
    u *= body.w_rows
    q = u.view(batch, NUM_JOINTS, 3, body.n)
    for j in range(NUM_JOINTS - 1, 0, -1):  # children have larger indices: sum the subtrees bottom-up
        q[:, PARENTS[j]] += q[:, j]
    verts = q[:, 0].transpose(1, 2).clone()
    u.addcmul_(body.s_rows, posed.pos.reshape(batch, -1, 1), value=-1.0)
    return u, verts


def _error(verts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) sum of squared distances."""
    return ((verts - target) ** 2).sum((1, 2))


def _cross_from_outer(m: torch.Tensor) -> torch.Tensor:
    """Σ a × b from M = Σ a bᵀ over the axes (-2, -1) of size (3, 3) → (..., 3)."""
    return torch.stack([m[..., 1, 2] - m[..., 2, 1], m[..., 2, 0] - m[..., 0, 2], m[..., 0, 1] - m[..., 1, 0]], -1)


def _normal_equations(body: _Body, posed: _Posed, target: torch.Tensor, with_betas: bool) -> tuple[torch.Tensor, ...]:
    """Gauss–Newton pieces per frame: H (B, 75, 75), g (B, 75), and with betas C (B, 75, 10), Hβ (B, 10, 10),
    gβ (B, 10) (float64), plus the current error (B,).

    Unknowns per frame: δ_k (rotation of joint k's subtree about the posed joint, camera frame) and δt:
    ∂v_i/∂δ_k = −[a_ik]×, ∂v_i/∂t = I.
    """
    batch, n = target.shape[:2]
    a_t, verts = _subtree_lever(body, posed)
    resid = target - verts  # (B, n, 3)
    err = (resid**2).sum((1, 2))
    gram = (a_t @ a_t.transpose(1, 2)).double().reshape(batch, NUM_JOINTS, 3, NUM_JOINTS, 3)
    trace = torch.einsum("bkzlz->bkl", gram)
    eye = torch.eye(3, dtype=torch.float64)
    h_rr = trace[:, :, None, :, None] * eye[None, None, :, None, :] - gram.transpose(2, 4)
    h_rt = _skew(a_t.sum(-1).reshape(batch, NUM_JOINTS, 3).double()).reshape(batch, 3 * NUM_JOINTS, 3)
    h = torch.zeros(batch, _DOF, _DOF, dtype=torch.float64)
    h[:, : 3 * NUM_JOINTS, : 3 * NUM_JOINTS] = h_rr.reshape(batch, 3 * NUM_JOINTS, 3 * NUM_JOINTS)
    h[:, : 3 * NUM_JOINTS, 3 * NUM_JOINTS :] = h_rt
    h[:, 3 * NUM_JOINTS :, : 3 * NUM_JOINTS] = h_rt.transpose(1, 2)
    h[:, 3 * NUM_JOINTS :, 3 * NUM_JOINTS :] = n * eye
    g = torch.zeros(batch, _DOF, dtype=torch.float64)
    g[:, : 3 * NUM_JOINTS] = _cross_from_outer((a_t @ resid).double().reshape(batch, NUM_JOINTS, 3, 3)).reshape(
        batch, -1
    )
    g[:, 3 * NUM_JOINTS :] = resid.sum(1).double()
    if not with_betas:
        return h, g, err
    # ∂v_i/∂β = (Σ_m w_im R_m) S_i + Σ_m w_im E_m with E_m = ∂p_m/∂β − R_m ∂J_m/∂β
    glob, js = posed.glob, body.j_shapedirs
    dpos = [js[0].expand(batch, 3, NUM_BETAS)]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        dpos.append(dpos[p] + glob[:, p] @ (js[j] - js[p]))
    e = torch.stack(dpos, 1) - glob @ js  # (B, 24, 3, 10)
    blend_rot = (body.weights @ glob.transpose(0, 1).reshape(NUM_JOINTS, -1)).reshape(n, batch, 3, 3).transpose(0, 1)
    blend_e = (body.weights @ e.transpose(0, 1).reshape(NUM_JOINTS, -1)).reshape(n, batch, 3, NUM_BETAS)
    jb = blend_rot @ body.shapedirs + blend_e.transpose(0, 1)  # (B, n, 3, 10)
    outer = (a_t @ jb.reshape(batch, n, 3 * NUM_BETAS)).double().reshape(batch, NUM_JOINTS, 3, 3, NUM_BETAS)
    c = torch.zeros(batch, _DOF, NUM_BETAS, dtype=torch.float64)
    c[:, : 3 * NUM_JOINTS] = _cross_from_outer(outer.movedim(-1, 2)).movedim(2, -1).reshape(batch, -1, NUM_BETAS)
    c[:, 3 * NUM_JOINTS :] = jb.sum(1).double()
    jb_flat = jb.reshape(batch, n * 3, NUM_BETAS)
    h_bb = (jb_flat.transpose(1, 2) @ jb_flat).double()
    g_b = (jb_flat.transpose(1, 2) @ resid.reshape(batch, -1, 1))[..., 0].double()
    return h, g, err, c, h_bb, g_b


def _damped(h: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    scale = diag.clamp_min(0) + 1e-6 * diag.mean(-1, keepdim=True).clamp_min(1e-12)
    return h + torch.diag_embed(lam[..., None] * scale)


def _apply(state: _State, glob: torch.Tensor, delta: torch.Tensor) -> _State:
    """New state after the per-frame step ``delta`` (B, 75): R_k ← exp([G_parent(k)ᵀ δ_k]) R_k, t ← t + δt."""
    batch = delta.shape[0]
    d_rot = delta[:, : 3 * NUM_JOINTS].reshape(batch, NUM_JOINTS, 3).float()
    parent_glob = torch.cat([torch.eye(3).expand(batch, 1, 3, 3), glob[:, list(PARENTS[1:])]], dim=1)
    local = (parent_glob.transpose(-1, -2) @ d_rot[..., None])[..., 0]
    return _State(rot=_rodrigues(local) @ state.rot, transl=state.transl + delta[:, 3 * NUM_JOINTS :].float())


def _orthonormal(r: torch.Tensor) -> torch.Tensor:
    """Closest rotation (det +1) to each (..., 3, 3) matrix."""
    u, _, vh = torch.linalg.svd(r)
    fix = torch.ones_like(u[..., 0, :])
    fix[..., 2] = torch.det(u @ vh)
    return (u * fix[..., None, :]) @ vh


def _procrustes_start(body: _Body, betas: torch.Tensor, target: torch.Tensor) -> _State:
    """Closed-form start: per-joint weighted Kabsch rotation, local rotations from the chain, mean translation."""
    batch = target.shape[0]
    v_shaped, _ = body.shaped(betas)
    w, mass = body.proc_w, body.proc_mass.clamp_min(1e-12)
    cx = (w.T @ v_shaped) / mass[:, None]  # (24, 3)
    cy = (w.T @ target.transpose(0, 1).reshape(body.n, -1)).reshape(NUM_JOINTS, batch, 3).transpose(0, 1)
    cy = cy / mass[:, None]
    wx = (w[:, :, None] * v_shaped[:, None, :]).reshape(body.n, -1)  # (n, 72)
    cov = (target.transpose(1, 2) @ wx).reshape(batch, 3, NUM_JOINTS, 3).transpose(1, 2)  # (B, 24, 3y, 3x)
    cov = cov - mass[:, None, None] * cy[..., None] * cx[None, :, None, :]
    glob = _orthonormal(cov.double()).float()
    owned = (body.proc_mass > 1e-3 * body.proc_mass.max()).tolist()
    globs: list[torch.Tensor] = []
    rot = []
    for j in range(NUM_JOINTS):
        p = PARENTS[j]
        g = glob[:, j] if owned[j] else (globs[p] if p >= 0 else torch.eye(3).expand(batch, 3, 3))
        globs.append(g)
        rot.append(g if p < 0 else globs[p].transpose(-1, -2) @ g)
    state = _State(rot=torch.stack(rot, 1), transl=torch.zeros(batch, 3))
    verts = _vertices(body, _pose(body, betas, state))
    state.transl = (target - verts).mean(1)
    return state


def _solve_poses(body: _Body, betas: torch.Tensor, target: torch.Tensor, state: _State, iterations: int) -> _State:
    """Levenberg–Marquardt on each frame's pose with the shape fixed (frames independent, batched)."""
    batch = target.shape[0]
    lam = torch.full((batch,), 1e-6, dtype=torch.float64)
    for _ in range(iterations):
        posed = _pose(body, betas, state)
        h, g, err = _normal_equations(body, posed, target, with_betas=False)
        delta = torch.linalg.solve(_damped(h, lam), g)
        trial = _apply(state, posed.glob, delta)
        trial_err = _error(_vertices(body, _pose(body, betas, trial)), target)
        better = trial_err < err
        lam = torch.where(better, (lam / 10).clamp_min(1e-9), lam * 10)
        state = _State(
            rot=torch.where(better[:, None, None, None], trial.rot, state.rot),
            transl=torch.where(better[:, None], trial.transl, state.transl),
        )
        settled = (better & (err - trial_err < _SETTLED * err)) | (delta.abs().amax(-1) < 1e-6)
        if bool(settled.all()):
            break
    return state


def _solve_shape(
    body: _Body, target: torch.Tensor, state: _State, betas: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, _State]:
    """Levenberg–Marquardt over betas and the poses of a few frames (Schur complement on the shared betas)."""
    lam = 1e-6
    for _ in range(iterations):
        posed = _pose(body, betas, state)
        h, g, err, c, h_bb, g_b = _normal_equations(body, posed, target, with_betas=True)
        lam_t = torch.full((h.shape[0],), lam, dtype=torch.float64)
        x = torch.linalg.solve(_damped(h, lam_t), torch.cat([c, g[..., None]], -1))  # (B, 75, 11)
        h_bb = h_bb.sum(0)
        schur = _damped(h_bb, torch.tensor(lam, dtype=torch.float64)) - (c.transpose(1, 2) @ x[..., :-1]).sum(0)
        rhs = g_b.sum(0) - (c.transpose(1, 2) @ x[..., -1:]).sum(0)[:, 0]
        d_beta = torch.linalg.solve(schur, rhs)
        delta = x[..., -1] - x[..., :-1] @ d_beta
        trial_betas = betas + d_beta.float()
        trial = _apply(state, posed.glob, delta)
        trial_err = float(_error(_vertices(body, _pose(body, trial_betas, trial)), target).sum())
        total = float(err.sum())
        if trial_err < total:
            state, betas, lam = trial, trial_betas, max(lam / 10, 1e-9)
            if total - trial_err < _SETTLED * total:
                break
        else:
            lam *= 10
    return betas, state


def _vertex_subset(weights: np.ndarray, stride: int, min_per_part: int = 64) -> np.ndarray:
    """Every ``stride``-th vertex of each body part (vertices grouped by their main joint), denser in small parts
    (hands, feet, head) so that each keeps about ``min_per_part`` vertices; sorted indices."""
    part = np.argmax(weights, axis=1)
    chosen = []
    for j in range(NUM_JOINTS):
        members = np.flatnonzero(part == j)
        step = max(1, min(stride, len(members) // min_per_part))
        chosen.append(members[::step])
    return np.sort(np.concatenate(chosen))


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
    if len(indices) <= count:
        return indices
    return indices[np.round(np.linspace(0, len(indices) - 1, count)).astype(int)]


@torch.inference_mode()
def fit_smpl(
    model: SmplModel, vertices: np.ndarray, valid: np.ndarray | None = None, options: SmplFitOptions | None = None
) -> SmplFit:
    """Fit one person's SMPL shape and per-frame pose to ``vertices`` (F, 6890, 3) float32 metres.

    ``valid`` (F,) bool marks the frames to fit (default: all); the others hold zeros in the :class:`SmplFit`.
    Deterministic (no randomness; the same inputs give the same fit on the same machine and thread count).
    """
    options = options or SmplFitOptions()
    verts = np.asarray(vertices, dtype=np.float32)
    if verts.ndim != 3 or verts.shape[1:] != (SMPL_NUM_VERTICES, 3):
        raise SmplError(f"SMPL fitting needs vertices of shape (F, 6890, 3), got {verts.shape}")
    num_frames = verts.shape[0]
    if valid is None:
        mask = np.ones(num_frames, dtype=bool)
    else:
        mask = np.asarray(valid, dtype=bool).reshape(-1)
        if mask.shape != (num_frames,):
            raise SmplError(f"valid has shape {np.shape(valid)}, expected ({num_frames},)")
    mask = mask & np.isfinite(verts).all(axis=(1, 2))
    if options.vertex_stride < 1 or options.batch_frames < 1:
        raise SmplError("vertex_stride and batch_frames must be at least 1")
    started = time.perf_counter()
    frames = np.flatnonzero(mask)
    arrays = model.arrays
    sub_index = _vertex_subset(arrays.weights, options.vertex_stride)
    body = _Body(arrays, sub_index)
    full = body if options.vertex_stride == 1 else _Body(arrays, np.arange(SMPL_NUM_VERTICES))
    target_all = torch.as_tensor(verts)
    rot = torch.eye(3).repeat(num_frames, NUM_JOINTS, 1, 1)
    transl = torch.zeros(num_frames, 3)

    if options.betas is not None:
        betas = torch.as_tensor(np.asarray(options.betas, dtype=np.float32).reshape(NUM_BETAS))
    else:
        betas = torch.zeros(NUM_BETAS)
        if len(frames):
            keys = torch.as_tensor(_spread(frames, options.shape_frames))
            target = target_all[keys][:, sub_index]
            start = _solve_poses(body, betas, target, _procrustes_start(body, betas, target), 2)
            betas, _ = _solve_shape(body, target, start, betas, options.shape_iterations)
    shape_s = time.perf_counter() - started

    def solve(idx: torch.Tensor, init: _State | None) -> tuple[_State, torch.Tensor]:
        target = target_all[idx][:, sub_index]
        if init is None:
            state = _solve_poses(body, betas, target, _procrustes_start(body, betas, target), options.pose_iterations)
        else:  # a neighbour's solution: further away than the closed-form start, so more iterations
            state = _solve_poses(body, betas, target, init, 2 * options.pose_iterations)
        err = _error(_vertices(body, _pose(body, betas, state)), target) / target.shape[1]
        return state, err

    sub_err = torch.full((num_frames,), float("inf"))
    for lo in range(0, len(frames), options.batch_frames):
        idx = torch.as_tensor(frames[lo : lo + options.batch_frames])
        state, err = solve(idx, None)
        rot[idx], transl[idx], sub_err[idx] = state.rot, state.transl, err

    # frame-to-frame warm start for frames that stand out from their neighbours
    refit = 0
    for _ in range(2):
        rms = sub_err.sqrt().numpy()
        suspects = []
        for pos, f in enumerate(frames):
            near = [rms[frames[q]] for q in (pos - 1, pos + 1) if 0 <= q < len(frames)]
            if near and rms[f] > min(near) * 1.5 + options.refit_threshold_m:
                suspects.append(pos)
        if not suspects:
            break
        for step in (-1, 1):
            pairs = [(frames[p], frames[p + step]) for p in suspects if 0 <= p + step < len(frames)]
            if not pairs:
                continue
            idx = torch.as_tensor([a for a, _ in pairs])
            src = torch.as_tensor([b for _, b in pairs])
            state, err = solve(idx, _State(rot=rot[src].clone(), transl=transl[src].clone()))
            better = err < sub_err[idx]
            rot[idx] = torch.where(better[:, None, None, None], state.rot, rot[idx])
            transl[idx] = torch.where(better[:, None], state.transl, transl[idx])
            sub_err[idx] = torch.where(better, err, sub_err[idx])
            refit += int(better.sum())

    # outputs over all vertices
    vertex_error = np.zeros(num_frames, dtype=np.float32)
    joints = torch.zeros(num_frames, NUM_JOINTS, 3)
    for lo in range(0, len(frames), options.batch_frames):
        idx = torch.as_tensor(frames[lo : lo + options.batch_frames])
        posed = _pose(full, betas, _State(rot=rot[idx], transl=transl[idx]))
        vertex_error[idx.numpy()] = (_vertices(full, posed) - target_all[idx]).norm(dim=-1).mean(-1).numpy()
        joints[idx] = posed.pos
    aa = matrix_to_axis_angle(rot.double().numpy()).astype(np.float32)
    keep = mask[:, None]
    rest_joints = (full.j_template + full.j_shapedirs @ betas).numpy()
    elapsed = time.perf_counter() - started
    log.info(
        "SMPL fit: %d frames in %.2f s (shape %.2f s, %.1f ms/frame), mean vertex error %.1f mm, %d refitted",
        len(frames), elapsed, shape_s, 1000 * elapsed / max(1, len(frames)),
        1000 * float(vertex_error[mask].mean()) if len(frames) else 0.0, refit,
    )  # fmt: skip
    return SmplFit(
        betas=betas.numpy().astype(np.float32),
        global_orient=np.where(keep, aa[:, 0], 0).astype(np.float32),
        body_pose=np.where(keep[..., None], aa[:, 1:], 0).astype(np.float32),
        transl=np.where(keep, transl.numpy(), 0).astype(np.float32),
        joints=np.where(keep[..., None], joints.numpy(), 0).astype(np.float32),
        rest_joints=rest_joints.astype(np.float32),
        vertex_error=vertex_error,
        valid=mask.copy(),
    )


SOURCES = ("auto", "smoothed", "path", "hypothesis0")


def _input_meshes(result: Result, source: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The source used and the hypothesis fitted per frame and person, (F, P) as int16 and int64."""
    arrays = result.arrays
    if source not in SOURCES:
        raise SmplError(f"unknown mesh source {source!r}", hint=f"use one of {', '.join(SOURCES)}")
    if source == "auto":
        source = "smoothed" if "smoothed_vertices" in arrays else "path" if "path" in arrays else "hypothesis0"
    if source in ("smoothed", "path") and source_array(source) not in arrays:
        raise SmplError(f"the result has no {source_array(source)} array", hint="use --source hypothesis0 (or auto)")
    num_frames, num_people = arrays["valid"].shape
    hyp = arrays["path"].astype(np.int64) if "path" in arrays else np.zeros((num_frames, num_people), np.int64)
    if hyp.size and (hyp.min() < 0 or hyp.max() >= result.num_hypotheses):
        raise SmplError(f"the result's path names hypotheses outside 0…{result.num_hypotheses - 1}")
    if source == "hypothesis0":
        hyp = np.zeros_like(hyp)
    return source, hyp.astype(np.int16), hyp


def source_array(source: str) -> str:
    """The result array a mesh source reads (``smoothed`` → ``smoothed_vertices``, ``path`` → ``path``)."""
    return {"smoothed": "smoothed_vertices", "path": "path"}.get(source, "vertices")


def fit_result(result: Result, model: SmplModel, source: str = "auto", options: SmplFitOptions | None = None) -> Result:
    """A copy of ``result`` with the SMPL fit of every person (``smpl_*`` arrays, ``meta["smpl"]``).

    ``source`` picks the meshes fitted: ``smoothed`` (``smoothed_vertices``), ``path`` (the hypothesis ``path``
    names per frame), ``hypothesis0``, or ``auto`` (the first of these the result has). People never seen get
    zeros. See docs/smpl.md.
    """
    options = options or SmplFitOptions()
    started = time.perf_counter()
    used, hyp16, hyp = _input_meshes(result, source)
    arrays = result.arrays
    valid = arrays["valid"]
    num_frames = valid.shape[0]
    fits: list[SmplFit | None] = []
    people: list[dict[str, int | float]] = []
    for p in range(valid.shape[1]):
        track = int(arrays["track_ids"][p])
        if not valid[:, p].any():
            fits.append(None)
            people.append({"track_id": track, "frames_fitted": 0})
            continue
        if used == "smoothed":
            meshes = arrays["smoothed_vertices"][:, p]
        else:
            meshes = arrays["vertices"][np.arange(num_frames), p, hyp[:, p]]
        fit = fit_smpl(model, meshes, valid[:, p], options)
        fits.append(fit)
        err = fit.vertex_error[fit.valid]
        people.append({
            "track_id": track,
            "frames_fitted": int(fit.valid.sum()),
            "mean_vertex_error_m": round(float(err.mean()), 6),
            "max_vertex_error_m": round(float(err.max()), 6),
        })  # fmt: skip
    meta = {
        "model_path": str(model.path.resolve()),
        "model_sha256": file_sha256(model.path),
        "source": used,
        "betas": "one shape per person (smpl_betas), shared by all its frames",
        "frame": "the result's camera frame: x right, y down, z forward, metres",
        "options": {k: v for k, v in asdict(options).items() if v is not None},
        "people": people,
        "time_s": round(time.perf_counter() - started, 3),
    }
    fitted = with_smpl_fit(result, fits, hyp16, meta)
    return _with_skinning(fitted, model, fits)


def _with_skinning(result: Result, model: SmplModel, fits: list[SmplFit | None]) -> Result:
    """Add what the Blender add-on needs to build a skinned SMPL body without the model file: the rest body of each
    person's shape ``smpl_rest_vertices`` (P, 6890, 3) and the skinning weights ``smpl_weights`` (6890, 24).

    Both derive from the user's SMPL model: results carrying them stay under that model's licence (docs/smpl.md).
    """
    rest = np.zeros((len(fits), SMPL_NUM_VERTICES, 3), np.float32)
    for p, fit in enumerate(fits):
        if fit is not None:
            rest[p] = model.arrays.rest_vertices(np.asarray(fit.betas, np.float64))
    arrays = {
        **result.arrays,
        "smpl_rest_vertices": rest,
        "smpl_weights": np.asarray(model.arrays.weights, np.float32),
    }
    return Result(meta=result.meta, arrays=arrays)
