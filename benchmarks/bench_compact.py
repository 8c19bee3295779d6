"""Size, error and speed of the compact result format 2.0 (``mega_runtime/io/compact.py``) on synthetic videos.

Bodies that move like people (``tests/runtime/synthetic_bodies.py``: the SMPL template from ../shared/assets when
present, bent by blended joint rotations over time, each hypothesis with extra bends of a few joints) are encoded
as a result would be (``compact_arrays``), then decoded by the runtime and by the add-on's reader. Prints bytes per
person-frame (format 1 vs 2), the largest coordinate and vertex errors, and the encode / decode times.

    python benchmarks/bench_compact.py                       # 300 frames × 2 people × 16 hypotheses
    python benchmarks/bench_compact.py --frames 60 --people 1 --hypotheses 8

Not a test: prints figures (docs/result-format.md quotes them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mega_runtime.io import compact  # noqa: E402
from tests.runtime.synthetic_bodies import make_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--hypotheses", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    template = None
    template_path = ROOT.parent / "shared" / "assets" / "template.ply"
    if template_path.exists():
        from mega_runtime.models.assets import read_template_ply

        template = np.asarray(read_template_ply(template_path).vertices)
    start = time.perf_counter()
    video = make_video(args.frames, args.people, args.hypotheses, seed=args.seed, template=template)
    f, p, h = args.frames, args.people, args.hypotheses
    arrays = {
        **video,
        "valid": np.ones((f, p), bool),
        "tokens": np.random.default_rng(0).integers(0, 512, (f, p, h, 54)).astype(np.int16),
    }
    print(f"{f} frames × {p} people × {h} hypotheses ({'SMPL template' if template is not None else 'procedural'} "
          f"bodies, made in {time.perf_counter() - start:.1f} s)")  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    packed, block = compact.compact_arrays(arrays)
    encode_s, encode_cpu = time.perf_counter() - start, time.process_time() - cpu
    meshes = ("vertices", "smoothed_vertices")
    v1 = sum(arrays[k].nbytes for k in meshes)
    v2 = compact.npz_bytes({k: v for k, v in packed.items() if k not in arrays or k in meshes})
    print(f"format 1 meshes: {v1 / (f * p) / 1024:9.1f} KiB per person-frame (float32, stored)")
    print(f"format 2 meshes: {v2 / (f * p) / 1024:9.1f} KiB per person-frame (deflated), basis sizes "
          f"{block['basis_sizes']}, {packed['vertices_fix_value'].size / (f * p * h):.1f} fixes per mesh")  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    decoded = compact.expand_arrays(packed)
    decode_s, decode_cpu = time.perf_counter() - start, time.process_time() - cpu
    for name in meshes:
        diff = decoded[name].astype(np.float64) - arrays[name]
        print(f"{name}: largest coordinate error {np.abs(diff).max() * 1000:.3f} mm, "
              f"largest vertex error {np.linalg.norm(diff, axis=-1).max() * 1000:.3f} mm")  # fmt: skip
    per_mesh_ms = decode_s / (f * p * (h + 1)) * 1000
    print(f"encode {encode_s:.1f} s (CPU {encode_cpu:.1f} s); decode (runtime, all meshes) {decode_s:.1f} s "
          f"(CPU {decode_cpu:.1f} s) = {per_mesh_ms:.2f} ms per mesh")  # fmt: skip


if __name__ == "__main__":
    main()
