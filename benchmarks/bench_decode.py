"""Speed and memory of MEGA decoding with the full-size ResNet-50 configuration (random weights).

Prints one line per case: median latency over repeats and peak memory. Each case
runs in a fresh subprocess so peak-memory figures do not leak between cases.

    python benchmarks/bench_decode.py                  # CPU (2 threads) and, if present, CUDA
    python benchmarks/bench_decode.py --device cuda --precision bf16
    python benchmarks/bench_decode.py --device cpu --precision int8 --only hypotheses16
    python benchmarks/bench_decode.py --device cpu --only mesh_decode1 mesh_decode16 --graph-path gather
    python benchmarks/bench_decode.py --device cuda --batches 1 8 64     # throughput of batched crops (video)

Needs MEGA_ASSETS_DIR (connection matrices for Mesh-VQ-VAE). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Cases run at every batch size of ``--batches`` (images per call), then the single-batch ones.
BATCHED_CASES = ("deterministic", "hypotheses16")
SINGLE_CASES = (
    "official16",  # the official algorithm on this runtime's kernels, for a same-run ratio
    "mesh_decode1",
    "mesh_decode16",
)
DEFAULT_BATCHES = (1, 8)
#: Stop repeating a case once this many seconds were spent on it (the first run counts when slow).
TIME_BUDGET_S = 40.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(
    case: str,
    batch: int,
    device: str,
    precision: str,
    repeats: int,
    threads: int,
    graph_path: str = "auto",
    score_steps: int = 2,
    compile_models: bool = False,
) -> dict:
    import numpy as np
    import torch

    from mega_runtime.decoding.samplers import sample_tokens_official
    from mega_runtime.decoding.scoring import ScoringConfig
    from mega_runtime.mega import Mega
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.config import PRESETS
    from mega_runtime.models.graph_conv import resolve_graph_path
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

    torch.set_num_threads(threads)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    connections = load_connection_matrices(Path(os.environ["MEGA_ASSETS_DIR"]) / "connection_matrices")
    mega = Mega(
        CVQMAE(PRESETS["mega_resnet"]).eval().to(device),
        MeshVQVAE(MeshVQVAEConfig(), connections, graph_path=graph_path).eval().to(device),
        precision=precision if precision in ("bf16", "int8") else "fp32",  # tf32 is a CUDA matmul switch
    )
    if compile_models:
        mega.compile_models()  # backbone frozen; token transformers too on CUDA (CUDA graphs)
    scoring = ScoringConfig(score_steps)
    images = torch.randn(batch, 3, 224, 224, device=device)
    tokens = torch.randint(0, 512, (16 * batch, 54), device=device)

    def once():
        gen = torch.Generator().manual_seed(0)
        if case == "deterministic":
            return mega.reconstruct(images, 1, scoring=scoring)
        if case == "hypotheses16":
            return mega.reconstruct(images, 16, gen, scoring=scoring)
        if case == "official16":
            # The official generate(): the crop repeated 16 times through the backbone, then 5 full
            # transformer passes over all 16 rows (no deterministic pass to reuse), then decoding.
            cond = mega.cvqmae.condition(images.repeat_interleave(16, dim=0))
            samples = sample_tokens_official(mega.cvqmae, cond, 16 * batch, np.random.RandomState(0))
            return mega.decode_meshes(samples.tokens)
        if case == "mesh_decode1":
            return mega.decode_meshes(tokens[:1])
        return mega.decode_meshes(tokens)

    base_rss = _rss_mb()
    with torch.inference_mode():
        times: list[float] = []
        for attempt in range(repeats + 1):
            if attempt == 1 and device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            once()
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            # the first run is a warm-up unless it is slow (always when compiling: it compiles)
            if attempt > 0 or (elapsed > TIME_BUDGET_S / 4 and not compile_models):
                times.append(elapsed)
            if sum(times) > TIME_BUDGET_S:
                break
    out = {
        "case": case,
        "batch": batch,
        "device": device,
        "precision": precision,
        "graph_path": resolve_graph_path(graph_path, device),
        "score_steps": score_steps,
        "compiled": compile_models,
        "runs": len(times),
        "median_ms": 1e3 * statistics.median(times),
    }
    out["per_image_ms"] = out["median_ms"] / batch
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = _rss_mb()
        out["rss_growth_mb"] = _rss_mb() - base_rss
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16", "int8", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--graph-path",
        choices=["auto", "csr", "gather"],
        default="auto",
        help="how the Mesh-VQ-VAE evaluates its graph layers (auto: CSR where the device supports it)",
    )
    parser.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases (e.g. hypotheses16)")
    parser.add_argument(
        "--batches",
        nargs="+",
        type=int,
        default=list(DEFAULT_BATCHES),
        metavar="N",
        help=f"images per call for {' and '.join(BATCHED_CASES)} (default {' '.join(map(str, DEFAULT_BATCHES))})",
    )
    parser.add_argument("--score-steps", type=int, default=2, help="blocks of the hypothesis scorer (1 = free)")
    parser.add_argument(
        "--compile", action="store_true", help="Mega.compile_models() first (the warm-up run then compiles)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "MEGA_ASSETS_DIR" not in os.environ:
        parser.error("set MEGA_ASSETS_DIR to the folder holding connection_matrices/")
    if min(args.batches) < 1:
        parser.error(f"--batches must be at least 1, got {min(args.batches)}")
    if args.case:
        res = run_case(
            args.case,
            args.batch,
            args.device,
            args.precision,
            args.repeats,
            args.threads,
            args.graph_path,
            args.score_steps,
            args.compile,
        )
        print(json.dumps(res))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: PyTorch {torch.__version__} sees no CUDA device on this machine")
    runs = []
    if args.device in ("cpu", "all"):
        runs += [("cpu", p) for p in ("fp32", "bf16", "int8") if args.precision in (p, "all")]
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        runs += [("cuda", p) for p in ("fp32", "tf32", "bf16") if args.precision in (p, "all")]
    print(
        f"torch {torch.__version__}, {args.threads} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    cases = [(case, batch) for case in BATCHED_CASES for batch in args.batches] + [(c, 1) for c in SINGLE_CASES]
    for device, precision in runs:
        for case, batch in cases:
            if args.only and case not in args.only:
                continue
            cmd = [
                sys.executable,
                __file__,
                "--case",
                case,
                "--batch",
                str(batch),
                "--device",
                device,
                "--precision",
                precision,
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--graph-path",
                args.graph_path,
                "--score-steps",
                str(args.score_steps),
                *(["--compile"] if args.compile else []),
            ]
            res = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            )
            mem = (
                f"peak GPU {res['peak_gpu_mb']:.0f} MB" if device == "cuda" else f"peak RSS {res['peak_rss_mb']:.0f} MB"
            )
            print(
                f"{device:4} {precision:4} {res['graph_path']:6} {case:14} batch {batch}: {res['median_ms']:9.1f} ms "
                f"({res['per_image_ms']:8.1f} ms/image, {res['runs']} runs), {mem}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
