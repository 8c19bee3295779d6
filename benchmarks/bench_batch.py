"""Throughput of ``mega-runtime batch``: photos/s and video frames/s with 1 and 2 workers (local processes, Ray).

Uses the seeded small models of ../shared/fixtures (rebuilt once with ``verify --write-checkpoints``) — the
numbers measure the batch machinery and a small network, not the real MEGA models — on small copies of the shared
photos and a synthetic clip. Each run goes to a fresh --out; model loading is included (each worker loads once).

    python benchmarks/bench_batch.py                      # 8 photos, two 24-frame clips; workers 1, 2; Ray 2
    python benchmarks/bench_batch.py --photos 16 --frames 48 --no-ray --device cuda

Not a test: prints figures (docs/batch.md quotes them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _inputs(folder: Path, photos: int, frames: int) -> tuple[list[Path], list[Path]]:
    image = cv2.imread(str(SHARED / "assets" / "images" / "pexels-polina-tankilevitch-6739044.jpg"))
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    paths = []
    for i in range(photos):
        paths.append(folder / f"photo{i:03d}.png")
        cv2.imwrite(str(paths[-1]), np.roll(small, 5 * i, axis=1))
    clip = folder / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 24, small.shape[1::-1])
    for i in range(frames):
        writer.write(np.roll(small, 2 * i, axis=1))
    writer.release()
    twin = folder / "clip2.avi"
    twin.write_bytes(clip.read_bytes())
    return paths, [clip, twin]


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mega_runtime", *argv], check=False, capture_output=True, text=True)
    if done.returncode:
        print(f"  (exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mega-bench-batch-"))
    checkpoints = work / "checkpoints"
    fixtures = [str(SHARED / "fixtures" / n) for n in ("cvqmae_resnet", "mesh_vqvae", "vqmae")]
    subprocess.run([sys.executable, "-m", "mega_runtime", "verify", *fixtures, "--write-checkpoints",
                    str(checkpoints)], check=True, capture_output=True)  # fmt: skip
    photos, clips = _inputs(work, args.photos, args.frames)
    options = ["--checkpoint-dir", str(checkpoints), "--assets-dir", str(SHARED / "assets"), "--model", "resnet",
               "--device", args.device, "--hypotheses", "4"]  # fmt: skip
    modes = [("local", ["--workers", "1"]), ("local", ["--workers", "2"])]
    if not args.no_ray:
        modes.append(("ray", ["--ray", "--workers", "2"]))
    print(f"{args.photos} photos ({photos[0].stat().st_size // 1024} KiB PNG each), two {args.frames}-frame clips; "
          f"small seeded models, 4 hypotheses, device {args.device}")  # fmt: skip
    for n, (kind, extra) in enumerate(modes):
        photo_s = _run(["batch", *map(str, photos), "--out", str(work / f"p{n}"), *options, *extra])
        clip_s = _run(["batch", *map(str, clips), "--out", str(work / f"c{n}"), *options, *extra])
        print(f"{kind} {' '.join(extra)}: photos {args.photos / photo_s:.2f}/s ({photo_s:.1f} s with start-up), "
              f"video {2 * args.frames / clip_s:.2f} frames/s ({clip_s:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
