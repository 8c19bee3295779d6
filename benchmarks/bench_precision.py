"""Speed and agreement of the precision modes (fp32, bf16, int8) against exact fp32, in one process.

Full-size ResNet-50 configuration (CVQMAE + Mesh-VQ-VAE), seeded random weights, CPU (or --device cuda).
Per mode it prints:

* time of ``Mega.reconstruct(crop, 16)`` (median wall and process CPU seconds over --repeats, after a warm-up;
  --repeats 0 skips it) and of one token-transformer pass over 16 rows with 11 visible tokens (a sampling
  step; median over --pass-repeats), and the speed-ups over fp32 in process CPU time, measured in the same run
  (CPU time is steadier than wall time on a shared machine); ``fp32-plain`` is fp32 with the exact-mode
  shortcuts switched off (the previous code path), so fp32-plain / fp32 is what those shortcuts bought;
  ``fp32-onednn`` is fp32 with the token transformers on oneDNN's products (what ``--compile`` switches on
  on an x86-64 CPU, without the compiled backbone);
* argmax agreement: the share of the 54 deterministic (hypothesis-0) tokens equal to fp32's;
* distribution agreement over --hypotheses sampled hypotheses per crop and seed: the per-vertex mean mesh and
  per-vertex spread (``vertex_std``) against fp32's with the same seeds, in mm. Tolerance: a mode agrees when
  its mean-mesh and spread differences stay within 1.5× what fp32 itself moves between two seeds (the Monte
  Carlo noise of that many hypotheses), printed as the "fp32 seed-to-seed" row.

    MEGA_ASSETS_DIR=../shared/assets python benchmarks/bench_precision.py
    MEGA_ASSETS_DIR=... python benchmarks/bench_precision.py --crops 2 --seeds 1 --hypotheses 32 --repeats 1

Random weights are not trained ones: agreement here bounds how much rounding moves the sampler on this
architecture; rerun with real checkpoints (--checkpoint-dir) for the product figure. Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("fp32-plain", "fp32", "fp32-onednn", "bf16", "int8")
TOLERANCE_FACTOR = 1.5


def build(mode: str, device: str, checkpoint_dir: Path | None):
    import torch

    from mega_runtime.mega import Mega
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.config import PRESETS
    from mega_runtime.models.cpu_kernels import use_onednn
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

    precision = mode.split("-")[0]
    assets = Path(os.environ["MEGA_ASSETS_DIR"])
    if checkpoint_dir is not None:
        model = Mega.from_checkpoints(checkpoint_dir, "mega_resnet", assets, device, precision=precision)
    else:
        torch.manual_seed(0)  # the same random weights for every mode
        cvqmae = CVQMAE(PRESETS["mega_resnet"]).eval().to(device)
        mesh = MeshVQVAE(MeshVQVAEConfig(), load_connection_matrices(assets / "connection_matrices")).eval().to(device)
        model = Mega(cvqmae, mesh, precision=precision)
    if mode == "fp32-onednn" and not use_onednn(model.cvqmae.encoder) + use_onednn(model.cvqmae.decoder):
        raise SystemExit("fp32-onednn: oneDNN's linear kernel is not available here (x86-64 with oneDNN only)")
    return model


def set_plain(plain: bool) -> None:
    from mega_runtime.models.masked_transformer import ConditionalDecoder, Decoder

    for cls in (ConditionalDecoder, Decoder):
        cls.reuse_invariants = not plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--hypotheses", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pass-repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-dir", type=Path, help="official-layout checkpoints instead of random weights")
    args = parser.parse_args()
    if "MEGA_ASSETS_DIR" not in os.environ:
        parser.error("set MEGA_ASSETS_DIR to the folder holding connection_matrices/")
    import torch

    from mega_runtime.mega import cpu_flags

    torch.set_num_threads(args.threads)
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni"})
    print(f"torch {torch.__version__}, {args.device}, {args.threads} thread(s), CPU flags {flags or 'none'}")
    crops = torch.randn(args.crops, 1, 3, 224, 224, generator=torch.Generator().manual_seed(123))
    results: dict[str, dict] = {}
    for mode in ["fp32", *[m for m in args.modes if m != "fp32"]]:
        set_plain(mode == "fp32-plain")
        model = build(mode, args.device, args.checkpoint_dir)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        wall, cpu, step = [float("nan")], [float("nan")], []
        with torch.inference_mode():
            cond = model.cvqmae.condition(crops[0].to(args.device)).repeat(16)
            tokens = torch.randint(0, 512, (16, 54), generator=torch.Generator().manual_seed(1)).to(args.device)
            order = torch.arange(54, device=args.device).repeat(16, 1)
            with model.low_precision():
                for _ in range(args.pass_repeats + 1):
                    c0 = time.process_time()
                    model.cvqmae.logits(tokens, order[:, :11], cond, positions=order[:, 11:]).float()
                    sync()
                    step.append(time.process_time() - c0)
            step = step[1:]  # the first pass warms up
            if args.repeats:
                wall, cpu = [], []
                model.reconstruct(crops[0], 16, torch.Generator().manual_seed(0))  # warm-up
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                model.reconstruct(crops[0], 16, torch.Generator().manual_seed(0))
                sync()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            runs = {}
            extra = ["seed-ref"] if mode == "fp32" else []
            for c in range(args.crops):
                for s in range(args.seeds):
                    for tag in ["", *extra]:
                        seed = 1000 + s if not tag else 5000 + s
                        res = model.reconstruct(crops[c], args.hypotheses, torch.Generator().manual_seed(seed))
                        runs[(c, s, tag)] = (res.tokens[0, 0].cpu(), res.canonical[0].cpu(), res.vertex_std[0].cpu())
        results[mode] = {
            "wall": statistics.median(wall),
            "cpu": statistics.median(cpu),
            "step": statistics.median(step),
            "runs": runs,
        }
        r = results[mode]
        print(f"  {mode}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, pass {1e3 * r['step']:.0f} ms CPU", flush=True)
    set_plain(False)

    def compare(mode: str, tag: str = "") -> tuple[float, float, float]:
        """(argmax agreement, mean-mesh difference mm, spread difference mm), averaged over crops × seeds."""
        agree, dmean, dstd = [], [], []
        for c in range(args.crops):
            for s in range(args.seeds):
                t0, v0, sd0 = results["fp32"]["runs"][(c, s, "")]
                t1, v1, sd1 = results[mode]["runs"][(c, s, tag)]
                agree.append(float((t0 == t1).float().mean()))
                dmean.append(float((v0.mean(0) - v1.mean(0)).norm(dim=-1).mean()) * 1e3)
                dstd.append(float((sd0 - sd1).abs().mean()) * 1e3)
        return statistics.mean(agree), statistics.mean(dmean), statistics.mean(dstd)

    _, ref_mean, ref_std = compare("fp32", "seed-ref")
    base = results["fp32"]
    spread = statistics.mean(float(r[2].mean()) * 1e3 for r in base["runs"].values())
    print(
        f"\n{args.crops} crops × {args.seeds} seeds × {args.hypotheses} hypotheses; mean per-vertex spread of fp32 "
        f"{spread:.1f} mm; tolerance: ≤ {TOLERANCE_FACTOR}× the fp32 seed-to-seed difference"
    )
    print(
        "| mode | 16 hyps wall | CPU | speed-up | one pass (CPU) | speed-up | argmax agreement | Δ mean mesh "
        "| Δ spread | agrees |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| fp32 seed-to-seed | | | | | | | {ref_mean:.2f} mm | {ref_std:.2f} mm | (reference) |")
    for mode in results:
        r = results[mode]
        agree, dmean, dstd = compare(mode)
        ok = dmean <= TOLERANCE_FACTOR * ref_mean and dstd <= TOLERANCE_FACTOR * ref_std
        print(
            f"| {mode} | {r['wall']:.2f} s | {r['cpu']:.2f} s | {base['cpu'] / r['cpu']:.2f}× "
            f"| {1e3 * r['step']:.0f} ms | {base['step'] / r['step']:.2f}× | {100 * agree:.1f} % "
            f"| {dmean:.2f} mm | {dstd:.2f} mm | {'yes' if ok else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
