"""Identity keeping on synthetic crowded walking clips: box tracking alone, with appearance, with stitching.

Prints, per setting, fragments per true person, identity switches and mixed identities summed over seeded
clips (definitions: mega_runtime/pipeline/clip_eval.py). Figures: docs/video.md.

    python benchmarks/bench_tracking_reid.py [--clips 5] [--people 12] [--frames 180]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mega_runtime.pipeline.clip_eval import crowd_clip, identity_metrics, track_clip

SETTINGS = {
    "boxes only (before)": dict(appearance=False, stitch=False),
    "boxes + appearance, online": dict(appearance=True, stitch=False),
    "+ stitching, appearance only": dict(appearance=True, shape=False, stitch=True),
    "+ stitching, appearance + shape": dict(appearance=True, shape=True, stitch=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--frames", type=int, default=180)
    parser.add_argument("--outfits", type=int, default=None, help="only this many outfits (look-alikes)")
    args = parser.parse_args()
    started = time.perf_counter()
    clips = [crowd_clip(seed, args.people, args.frames, outfits=args.outfits) for seed in range(args.clips)]
    made = time.perf_counter() - started
    print(f"{args.clips} clips × {args.frames} frames, {args.people} people each ({made:.1f} s to make)")
    print("| setting | fragments per person (mean; worst clip) | switches | mixed identities |")
    print("|---|---|---|---|")
    for name, kwargs in SETTINGS.items():
        results = [identity_metrics(c.truth, track_clip(c, **kwargs)) for c in clips]
        fragments = [r.fragments_per_person for r in results]
        print(
            f"| {name} | {np.mean(fragments):.2f}; {max(fragments):.2f} | {sum(r.switches for r in results)} "
            f"| {sum(r.mixed_identities for r in results)} |"
        )


if __name__ == "__main__":
    main()
