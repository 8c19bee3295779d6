"""How fast the evaluation metrics and the synthetic data source run on this machine (issue 14).

Prints: samples per second of ``mega_runtime.train.evaluate.evaluate`` (every metric, both alignments, a
17-joint regressor) for Q = 1 and Q = 8 hypotheses, and synthetic items per second (mesh + image + keypoints).

    python benchmarks/bench_evaluate.py [--samples 512] [--assets-dir ../shared/assets]

Not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mega_runtime.train import evaluate as ev
from mega_runtime.train.synthetic import SyntheticSource, load_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--assets-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/assets")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.samples
    gt = rng.normal(scale=0.3, size=(n, 6890, 3)).astype(np.float32)
    regressor = rng.dirichlet(np.ones(6890), size=17)
    for q in (1, 8):
        pred = (gt[:, None] + rng.normal(scale=0.02, size=(n, q, 6890, 3))).astype(np.float32)
        start = time.perf_counter()
        ev.evaluate(ev.Predictions(pred), ev.GroundTruth(gt), regressor)
        seconds = time.perf_counter() - start
        print(f"evaluate Q={q}: {n} samples in {seconds:.2f} s = {n / seconds:.0f} samples/s")
    source = SyntheticSource(64, 0, load_template(args.assets_dir))
    start = time.perf_counter()
    for i in range(64):
        source.item(i)
    seconds = time.perf_counter() - start
    print(f"synthetic items: {64 / seconds:.0f} items/s")


if __name__ == "__main__":
    main()
