"""Choosing the One-Euro and path defaults by measurement on noisy synthetic walking clips.

Scenarios (mega_runtime.pipeline.clip_eval.noisy_walk): a person near the camera (tall in the image: depth noise
6 cm, lateral 1 cm, limbs 1.5 cm) and one far away in a crowd (short in the image: depth noise 25 cm, lateral 2 cm,
limbs 3 cm), each at 30 fps and at 10 fps (a clip read with --frames ::3). For every setting on the grid it prints
the worst jitter reduction over the scenarios (hypothesis 0's jitter / the output's), the worst lag (frames,
two-sided and forward-only) and the mean error to the truth relative to hypothesis 0's. Figures: docs/video.md.

    python benchmarks/bench_temporal_defaults.py [--seeds 3] [--top 15]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from mega_runtime import defaults
from mega_runtime.pipeline.clip_eval import evaluate_temporal, noisy_walk
from mega_runtime.pipeline.temporal import OneEuroConfig, TemporalConfig

SCENARIOS = {
    "near, 30 fps": dict(fps=30.0, num_frames=90),
    "near, 10 fps": dict(fps=10.0, num_frames=40),
    "far, 30 fps": dict(fps=30.0, num_frames=90, depth_noise=0.25, lateral_noise=0.02, limb_noise=0.03),
    "far, 10 fps": dict(fps=10.0, num_frames=40, depth_noise=0.25, lateral_noise=0.02, limb_noise=0.03),
}
#: Low-noise clips: smoothing must not make them worse (error to the truth at most hypothesis 0's).
CALM = {
    "calm, 30 fps": dict(fps=30.0, num_frames=90, depth_noise=0.01, lateral_noise=0.003, limb_noise=0.003),
    "calm, 10 fps": dict(fps=10.0, num_frames=40, depth_noise=0.01, lateral_noise=0.003, limb_noise=0.003),
}


def measure(clips, config: TemporalConfig, calm=()) -> dict[str, float]:
    rows = [evaluate_temporal(c, config) for c in clips]
    calm_rows = [evaluate_temporal(c, config) for c in calm]
    return {
        "reduction": min(r.reduction for r in rows),
        "lag": max(abs(r.lag) for r in rows + calm_rows),
        "error": float(np.mean([r.error_mm / r.error_raw_mm for r in rows])),
        "calm_error": max((r.error_mm / r.error_raw_mm for r in calm_rows), default=float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--fine", action="store_true", help="a finer grid near the chosen defaults, path zero")
    args = parser.parse_args()
    clips = {name: [noisy_walk(seed, **kw) for seed in range(args.seeds)] for name, kw in {**SCENARIOS, **CALM}.items()}
    every = [c for name in SCENARIOS for c in clips[name]]
    calm = [c for name in CALM for c in clips[name]]
    print("Per scenario, hypothesis 0 (no path, no smoothing) and the current defaults:")
    current = TemporalConfig(smooth=True)
    for name, group in clips.items():
        rows = [evaluate_temporal(c, current) for c in group]
        print(
            f"  {name}: raw jitter {np.mean([r.jitter_raw for r in rows]):.1f} m/s² (truth "
            f"{np.mean([r.jitter_truth for r in rows]):.1f}), raw error "
            f"{np.mean([r.error_raw_mm for r in rows]):.0f} mm;"
            f" defaults: reduction {np.mean([r.reduction for r in rows]):.1f}×, lag "
            f"{np.mean([r.lag for r in rows]):.2f}, error {np.mean([r.error_mm for r in rows]):.0f} mm"
        )
    grid = itertools.product(["zero", "coherent"], [0.3, 0.5, 1.0, 2.0], [0.0, 0.2, 0.5, 1.0, 2.0], [0.5, 1.0])
    if args.fine:
        grid = itertools.product(["zero"], [0.3, 0.5, 0.7, 1.0, 1.5], [0.2, 0.5, 0.7, 1.0, 1.5, 2.0], [1.0])
    results = []
    for path, min_cutoff, beta, d_cutoff in grid:
        one_euro = OneEuroConfig(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)
        config = TemporalConfig(path=path, smooth=True, one_euro=one_euro)
        two_sided = measure(every, config, calm)
        causal = TemporalConfig(path=path, smooth=True, one_euro=OneEuroConfig(min_cutoff, beta, d_cutoff, False))
        if two_sided["reduction"] < 3:
            results.append(((path, min_cutoff, beta, d_cutoff), two_sided, {}))
            continue
        results.append(((path, min_cutoff, beta, d_cutoff), two_sided, measure(every, causal)))
    ok = [r for r in results if r[1]["reduction"] >= 3 and r[1]["lag"] <= 2]
    ok.sort(key=lambda r: r[1]["error"])
    print(
        f"\n{len(ok)} of {len(results)} settings cut jitter ≥ 3× in every noisy scenario with lag ≤ 2 frames; "
        "best by error (the calm column: how much worse the smoothing leaves a low-noise clip):"
    )
    print("| path | min_cutoff | beta | d_cutoff | worst reduction | worst lag | error / raw | calm: worst error / raw "
          "| forward-only: worst reduction, worst lag, error / raw |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for (path, mc, beta, dc), two, causal in ok[: args.top]:
        print(
            f"| {path} | {mc} | {beta} | {dc} | {two['reduction']:.1f}× | {two['lag']:.2f} | {two['error']:.2f} | "
            f"{two['calm_error']:.2f} | {causal['reduction']:.1f}×, {causal['lag']:.2f}, {causal['error']:.2f} |"
        )
    config = TemporalConfig(path=defaults.TEMPORAL_PATH, smooth=True)
    print(f"\ndefaults.py ({config.path}, {config.one_euro}): {measure(every, config, calm)}")


if __name__ == "__main__":
    main()
