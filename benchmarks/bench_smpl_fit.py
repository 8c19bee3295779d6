"""Speed and accuracy of the SMPL fit (mega_runtime.smpl.fit) on a synthetic SMPL-format model.

Poses a synthetic model (tests/runtime/smpl_synthetic.py — the real SMPL files are licensed) over a smooth clip
of ``--frames`` frames, then fits shape and poses back and prints, per case, the median wall time per frame over
``--repeats`` runs (shape stage included) and the errors. Cases: *exact* (meshes SMPL can reproduce) and
*perturbed* (plus a smooth, slowly changing displacement field of ``--perturb-mm``, as MEGA's meshes are not
exactly SMPL meshes).

    python benchmarks/bench_smpl_fit.py [--frames 300] [--threads 2] [--repeats 3]

Target (Armature issue): under 20 ms per frame on CPU. Never run as a test.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_smpl_fit")


def _clip(num_frames: int, seed: int = 1) -> dict[str, np.ndarray]:
    from mega_runtime.smpl.skeleton import axis_angle_to_matrix, matrix_to_axis_angle

    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / 30.0  # seconds at 30 fps
    base, amp = rng.normal(scale=0.25, size=(23, 3)), rng.normal(scale=0.35, size=(23, 3))
    phase = rng.uniform(0, 2 * math.pi, size=(23, 3))
    body_pose = base[None] + amp[None] * np.sin(2 * math.pi * 0.5 * t[:, None, None] + phase[None])
    turn = axis_angle_to_matrix(np.stack([0 * t, 0.8 * np.sin(0.4 * t), 0 * t], axis=1))
    global_orient = matrix_to_axis_angle(turn @ axis_angle_to_matrix(np.array([math.pi, 0.0, 0.0])))
    transl = np.stack([0.4 * np.sin(0.3 * t), 0.1 + 0 * t, 3.0 + 0.5 * np.sin(0.2 * t)], axis=1)
    return {
        "betas": rng.normal(size=10).astype(np.float32),
        "global_orient": global_orient.astype(np.float32),
        "body_pose": body_pose.astype(np.float32),
        "transl": transl.astype(np.float32),
    }


def _perturbation(rest: np.ndarray, num_frames: int, amplitude_m: float, seed: int = 2) -> np.ndarray:
    """(F, 6890, 3) smooth displacements: 8 low-frequency waves over the body, drifting slowly in time."""
    rng = np.random.default_rng(seed)
    out = np.zeros((num_frames, *rest.shape), np.float32)
    t = np.arange(num_frames)[:, None] / 30.0
    for _ in range(8):
        freq, direction = rng.normal(scale=5.0, size=3), rng.normal(size=3)
        phase = rest @ freq + rng.uniform(0, 2 * math.pi) + 0.5 * t
        out += (amplitude_m / 4) * np.sin(phase)[..., None] * direction
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--perturb-mm", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from mega_runtime.smpl.fit import SmplFitOptions, fit_smpl
    from mega_runtime.smpl.model import load_smpl_model
    from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_smpl_model(write_synthetic_smpl(Path(tmp) / "SMPL_SYNTHETIC.pkl", synthetic_smpl_arrays(0)))
    clip = _clip(args.frames)
    exact, joints = model.forward(**clip)
    perturbed = exact + _perturbation(model.arrays.v_template, args.frames, args.perturb_mm / 1000)
    options = SmplFitOptions()
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"# {args.frames} frames, options {options}")
    fit_smpl(model, exact[:16], options=options)  # warm-up
    for name, meshes in (("exact", exact), (f"perturbed {args.perturb_mm:g} mm", perturbed)):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fit = fit_smpl(model, meshes, options=options)
            times.append(time.perf_counter() - started)
        ms = 1000 * statistics.median(times) / args.frames
        joint_err = 1000 * np.linalg.norm(fit.joints - joints, axis=-1)
        print(
            f"{name:>20}: {ms:6.2f} ms/frame (runs {', '.join(f'{t:.2f}' for t in times)} s) | "
            f"vertex error mean {1000 * fit.vertex_error.mean():.2f} mm, max {1000 * fit.vertex_error.max():.2f} mm | "
            f"joints vs truth mean {joint_err.mean():.2f} mm, max {joint_err.max():.2f} mm | "
            f"betas max error {np.abs(fit.betas - clip['betas']).max():.3f}"
        )


if __name__ == "__main__":
    main()
