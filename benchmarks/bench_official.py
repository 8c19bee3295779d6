"""Side by side with the OFFICIAL MEGA code: same seeded full-size weights, same crop, one process.

Times the official g-fiche/MEGA + g-fiche/Mesh-VQ-VAE code and this runtime, interleaved, on the
full-size HRNet-W48 model (``mega_hrnet``, the demo's model) and the full ``config_medium``
Mesh-VQ-VAE, and checks that both compute the same thing:

* ``deterministic``: official ``CVQMAE(zeros, crop, fixed_ratio=1)`` → argmax → Mesh-VQ-VAE decode
  (``modelconv.batch = 1``) → R·v, as demo.py does; runtime ``Mega.reconstruct(crop, 1)`` (which also
  scores the hypothesis).
* ``hypotheses16``: official ``generate()`` on the crop repeated 16 times (5 steps, the runtime's
  default temperature) → decode of the 16 meshes (``modelconv.batch = 16``) → R·v, as the official
  ``eval_stochastic`` does; runtime ``Mega.reconstruct(crop, 16)`` (deterministic decode + 15 samples,
  all scored, decoded and posed).
* ``decode16``: Mesh-VQ-VAE decode of the same 16 token rows, official vs runtime.
* equality: deterministic logits (max |diff|), argmax tokens and canonical vertices on every crop;
  tokens of the official ``generate()`` vs the runtime's ``--sampler official`` with the same legacy
  numpy seed.
* peak memory: each side in a fresh subprocess (peak RSS after loading, and while running 16
  hypotheses).

The official code is never imported at module import time. Without ``--official-dir`` (or when it
does not hold the official code, or the interpreter lacks timm/einops/yacs/omegaconf) the script
prints why and exits 0 ("skipped"). How to set up the official checkout, the private venv and the
CPU shims: docs/benchmarks.md, "Side by side with the official code".

    /tmp/venv-official/bin/python benchmarks/bench_official.py --official-dir /tmp/official --threads 2 --repeats 3

Reads the full-size key lists (``fixtures/manifests``), the connection matrices and the demo crops
from the shared folder (``../shared`` or ``$MEGA_SHARED_DIR``). Never run as a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import OrderedDict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: The official commits the reference fixtures were made with (shared/fixtures/README.md, Provenance).
OFFICIAL_COMMITS = {
    "g-fiche/MEGA": "e3e2c5b862c5c9126419609d1ee246b6f459014d",
    "g-fiche/Mesh-VQ-VAE": "fc82add1ea02b1b951ed06c31ed03a462ee87e74",
}
#: Python packages the official model code imports (beyond torch and numpy).
OFFICIAL_DEPS = ("timm", "einops", "yacs", "omegaconf")
MODEL = "mega_hrnet"
CASES = ("deterministic", "hypotheses16", "decode16")
HYPOTHESES = 16
SKIP_EXIT = 0


class Skip(Exception):
    """The official side cannot run here; the message says why and what to set up."""


# ---------------------------------------------------------------------------------------------------------------
# Checks that need nothing heavy (tested in CI)
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--official-dir",
        type=Path,
        help="folder with MEGA/ (g-fiche/MEGA), Mesh-VQ-VAE/ (g-fiche/Mesh-VQ-VAE) and shims/ (docs/benchmarks.md)",
    )
    parser.add_argument(
        "--shared-dir",
        type=Path,
        default=Path(os.environ.get("MEGA_SHARED_DIR", REPO_ROOT.parent / "shared")),
        help="shared reference folder with fixtures/manifests, fixtures/pipeline_demo and assets/",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case and side (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the full-size weights and of the samplers")
    parser.add_argument("--crop", type=int, default=0, help="which pipeline_demo crop to time (0-2)")
    parser.add_argument("--only", nargs="+", choices=CASES, help="time only these cases")
    parser.add_argument("--warmup-all", action="store_true", help="also warm up hypotheses16 before timing it")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the runtime side (Mega.compile_models: the backbone with BatchNorm folded; the token "
        "transformers too on CUDA); the first calls compile and are not timed",
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the timings (equality checks and memory only)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-check", action="store_true", help="skip the equality checks")
    parser.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    parser.add_argument("--workdir", type=Path, help="where to write the seeded checkpoints (default: a temp dir)")
    parser.add_argument("--memory-child", choices=["official", "runtime"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    return args


def official_problem(official_dir: Path | None) -> str | None:
    """Why the official side cannot run (None when it can); imports nothing from the official code."""
    if official_dir is None:
        return "no --official-dir given; see docs/benchmarks.md, 'Side by side with the official code'"
    needed = [
        official_dir / "MEGA" / "mega" / "model" / "cvqmae" / "masked_autoencoder.py",
        official_dir / "MEGA" / "mega" / "model" / "backbone" / "hrnet.py",
        official_dir / "Mesh-VQ-VAE" / "mesh_vq_vae" / "model" / "mesh_vq_vae.py",
        official_dir / "shims" / "cpu_shim.py",
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        return f"{official_dir} lacks the official checkout or its shims: missing {', '.join(missing)}"
    absent = [name for name in OFFICIAL_DEPS if importlib.util.find_spec(name) is None]
    if absent:
        return f"this interpreter lacks {', '.join(absent)}; run with the private venv (/tmp/venv-official/bin/python)"
    return None


def shared_problem(shared: Path) -> str | None:
    needed = [
        shared / "fixtures" / "manifests" / "manifest_cvqmae_hrnet.json",
        shared / "fixtures" / "manifests" / "manifest_mesh_vqvae_54.json",
        shared / "fixtures" / "pipeline_demo" / "reference.npz",
        shared / "assets" / "connection_matrices",
    ]
    missing = [str(p) for p in needed if not p.exists()]
    return (
        f"the shared reference data is absent: {', '.join(missing)} (set --shared-dir or MEGA_SHARED_DIR)"
        if missing
        else None
    )


# ---------------------------------------------------------------------------------------------------------------
# The seeded full-size weights (official on-disk format)
# ---------------------------------------------------------------------------------------------------------------


def seeded_state(manifest: Path, seed: int):
    """A full-size official state dict from a manifest's key list, in its order.

    Tensors with ndim ≥ 2 follow the ``seeded-normal-v1`` draw (N(0,1)/sqrt(fan_in), PCG64 ``seed``);
    1-D tensors: (norm) weights 1 + 0.1·N, running variances 1 + 0.1·|N|, other vectors 0.1·N;
    ``num_batches_tracked`` 0. ``decoder.model.*`` aliases ``encoder.model.*`` (Mesh-VQ-VAE's shared graph).
    """
    import numpy as np

    keys = json.loads(manifest.read_text())["keys"]
    rng = np.random.default_rng(seed)
    out: OrderedDict = OrderedDict()
    for key, info in keys.items():
        shape = tuple(int(s) for s in info["shape"])
        if key.startswith("decoder.model.") and "encoder.model." + key[len("decoder.model.") :] in out:
            out[key] = out["encoder.model." + key[len("decoder.model.") :]]
        elif info["dtype"] == "int64":
            out[key] = np.zeros(shape, dtype=np.int64)
        elif len(shape) >= 2:
            out[key] = (rng.standard_normal(shape) / np.sqrt(float(np.prod(shape[1:])))).astype(np.float32)
        elif key.endswith("running_var"):
            out[key] = (1.0 + 0.1 * np.abs(rng.standard_normal(shape))).astype(np.float32)
        elif key.endswith("weight"):  # every 1-D weight is a BatchNorm or LayerNorm scale
            out[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def write_checkpoints(shared: Path, folder: Path, seed: int) -> Path:
    """Write ``CVQMAE/mega_hrnet`` and ``MESH_VQVAE/mesh_vqvae_54`` (official format) under ``folder``."""
    from mega_runtime import defaults
    from mega_runtime.verify.recipe import save_official_checkpoint

    manifests = shared / "fixtures" / "manifests"
    for name, manifest in (
        (MODEL, "manifest_cvqmae_hrnet.json"),
        (defaults.TOKENIZER_MODEL, "manifest_mesh_vqvae_54.json"),
    ):
        path = folder / defaults.CHECKPOINT_FILES[name]
        if not path.is_file():
            save_official_checkpoint(seeded_state(manifests / manifest, seed), path)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------------------------------------------


def _stub_package(name: str, folder: Path) -> None:
    """Register ``name`` as a package rooted at ``folder`` without running its __init__ (which imports
    the training, data and rendering stacks); sub-packages then import normally."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


class Official:
    """The official model code, loaded through its own loaders, on CPU."""

    def __init__(self, official_dir: Path, checkpoints: Path, assets: Path, workdir: Path) -> None:
        import torch
        from omegaconf import OmegaConf

        from mega_runtime import defaults

        sys.path.insert(0, str(official_dir / "shims"))
        importlib.import_module("cpu_shim")  # .cuda() → stays on CPU
        _stub_package("mega", official_dir / "MEGA" / "mega")
        _stub_package("mesh_vq_vae", official_dir / "Mesh-VQ-VAE" / "mesh_vq_vae")
        cvqmae_mod = importlib.import_module("mega.model.cvqmae.masked_autoencoder")
        hrnet_mod = importlib.import_module("mega.model.backbone.hrnet")
        mesh_mod = importlib.import_module("mesh_vq_vae.model")
        self.rotation_6d_to_matrix = importlib.import_module("pytorch3d.transforms").rotation_6d_to_matrix
        self.torch = torch

        cfg = OmegaConf.load(official_dir / "MEGA" / "configs" / "config_cvqmae" / "config_demo.yaml")
        # The graph code lists the folder and concatenates names to it: it needs the trailing slash.
        cfg.modelconv.connection_folder = str(assets / "connection_matrices") + "/"
        cfg.modelconv.initial_connection_fn = str(assets / "connection_matrices" / "_pool0.npy")
        backbone = hrnet_mod.hrnet_w48(pretrained_ckpt_path="", downsample=True, use_conv=True)
        self.cvqmae = cvqmae_mod.CVQMAE(backbone=backbone, **cfg.model)
        _quiet(self.cvqmae.load, str(checkpoints / defaults.CHECKPOINT_FILES[MODEL]))
        self.cvqmae.eval()
        self.mesh = {}
        for batch in (1, HYPOTHESES):
            cfg.modelconv.batch = batch
            conv = mesh_mod.FullyConvAE(cfg.modelconv, test_mode=True)
            vqvae = mesh_mod.MeshVQVAE(conv, **cfg.vqvaemesh)
            _quiet(vqvae.load, path_model=str(checkpoints / defaults.CHECKPOINT_FILES[defaults.TOKENIZER_MODEL]))
            conv.init_test_mode()
            vqvae.eval()
            self.mesh[batch] = vqvae

    def logits(self, crops):
        """(B, 54, 512) deterministic logits, rot6d, cam (demo.py's call)."""
        tokens = self.torch.zeros((crops.shape[0], 54), dtype=self.torch.int)
        with self.torch.no_grad():
            logits, rot, cam, mask = self.cvqmae(tokens, crops, fixed_ratio=1)
        return logits, rot, cam, mask

    def deterministic(self, crop):
        """demo.py's chain for one box: tokens, canonical and posed vertices."""
        torch = self.torch
        with torch.no_grad():
            indices = torch.zeros((1, 54), dtype=torch.int)
            logits, rot, _cam, mask = self.cvqmae(indices, crop, fixed_ratio=1)
            _, tokens = torch.max(logits.data, -1)
            tokens = (tokens * mask + indices * (~mask.to(torch.bool))).type(torch.int64)
            canonical = self.mesh[1].decode(tokens)[:1]
            posed = (self.rotation_6d_to_matrix(rot) @ canonical.transpose(2, 1)).transpose(2, 1)
        return tokens, canonical, posed

    def hypotheses(self, crop, rows: int, temperature: float, steps: int):
        """eval_stochastic's chain: generate() on the crop repeated, decode, pose."""
        torch = self.torch
        with torch.no_grad():
            tokens, rot, _cam = self.cvqmae.generate(
                crop.repeat(rows, 1, 1, 1), nb_steps=steps, gen_temp=temperature, device="cpu"
            )
            canonical = self.decode(tokens.long())
            posed = (self.rotation_6d_to_matrix(rot) @ canonical.transpose(2, 1)).transpose(2, 1)
        return tokens, posed

    def decode(self, tokens):
        with self.torch.no_grad():
            return self.mesh[tokens.shape[0]].decode(tokens)[: tokens.shape[0]]


def _quiet(fn, *args, **kwargs):
    """Run an official loader, which prints a line, with stdout kept for the figures."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


class Runtime:
    def __init__(self, checkpoints: Path, assets: Path, compile_models: bool = False) -> None:
        import torch

        from mega_runtime.mega import Mega

        self.torch = torch
        self.mega = Mega.from_checkpoints(checkpoints, model=MODEL, assets_dir=assets)
        if compile_models and not self.mega.compile_models():
            raise Skip("--compile: this machine cannot compile (see the log line above)")

    def deterministic(self, crop, score_steps: int = 2):
        from mega_runtime.decoding.scoring import ScoringConfig

        return self.mega.reconstruct(crop, 1, scoring=ScoringConfig(score_steps))

    def hypotheses(self, crop, seed: int, sampler: str = "full", numpy_rng=None, score_steps: int = 2):
        from mega_runtime.decoding.scoring import ScoringConfig

        gen = self.torch.Generator().manual_seed(seed)
        return self.mega.reconstruct(
            crop, HYPOTHESES, generator=gen, sampler=sampler, numpy_rng=numpy_rng, scoring=ScoringConfig(score_steps)
        )

    def decode(self, tokens):
        return self.mega.decode_meshes(tokens)


# ---------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_cases(official: Official, runtime: Runtime, crop, tokens16, args) -> dict:
    """Interleaved timings: per repeat, each case runs once per side, the order of the sides alternating.

    The runtime has two sides for the model cases: ``runtime`` (the product's default call, which also scores
    every hypothesis with the default 2-step scorer) and ``runtime_score1`` (``--score-steps 1``: the scores come from
    the all-masked pass, so the model work is the official chain's: the same tokens, meshes, rotation and camera,
    plus a free score the official code does not compute).
    """
    from mega_runtime.decoding.schedule import CVQMAE_SAMPLING

    temp, steps = CVQMAE_SAMPLING.temperature, CVQMAE_SAMPLING.steps
    calls = {
        "deterministic": {
            "official": lambda: official.deterministic(crop),
            "runtime": lambda: runtime.deterministic(crop),
            "runtime_score1": lambda: runtime.deterministic(crop, score_steps=1),
        },
        "hypotheses16": {
            "official": lambda: official.hypotheses(crop, HYPOTHESES, temp, steps),
            "runtime": lambda: runtime.hypotheses(crop, args.seed),
            "runtime_score1": lambda: runtime.hypotheses(crop, args.seed, score_steps=1),
        },
        "decode16": {"official": lambda: official.decode(tokens16), "runtime": lambda: runtime.decode(tokens16)},
    }
    cases = args.only or list(CASES)
    times: dict[str, dict[str, list[float]]] = {c: {side: [] for side in calls[c]} for c in cases}
    # Warm-up, not counted. hypotheses16 runs the same networks as deterministic and one official run takes
    # minutes on a busy 2-core machine, so it is warmed up only with --warmup-all (always with --compile: its
    # step shapes compile on their first call).
    for case in cases:
        if case != "hypotheses16" or args.warmup_all or args.compile:
            for fn in calls[case].values():
                fn()
    for rep in range(args.repeats):
        for case in cases:
            order = list(calls[case].items())
            for side, fn in order if rep % 2 == 0 else order[::-1]:
                times[case][side].append(_timed(fn))
                print(f"  run {rep + 1}: {case} {side} {times[case][side][-1]:.3f} s", flush=True)
    out = {}
    for case in cases:
        medians = {side: statistics.median(runs) for side, runs in times[case].items()}
        o = medians["official"]
        out[case] = {f"{side}_s": t for side, t in medians.items()}
        out[case].update({"speedup": o / medians["runtime"], "runs": times[case]})
        if "runtime_score1" in medians:
            out[case]["speedup_score1"] = o / medians["runtime_score1"]
    return out


def check_equal(official: Official, runtime: Runtime, crops, args) -> dict:
    """Deterministic logits/tokens/vertices on every crop; official-sampler tokens on the timed crop."""
    import numpy as np
    import torch

    from mega_runtime.decoding.samplers import argmax_with_logits
    from mega_runtime.decoding.schedule import CVQMAE_SAMPLING

    res: dict = {}
    np.random.seed(args.seed)
    o_logits, o_rot, o_cam, _mask = official.logits(crops)
    cond = runtime.mega.cvqmae.condition(crops)
    first, r_logits = argmax_with_logits(runtime.mega.cvqmae, cond, crops.shape[0], runtime.mega.device)
    res["logits_max_abs_diff"] = float((o_logits - r_logits).abs().max())
    res["logits_std"] = float(o_logits.std())
    res["rot6d_max_abs_diff"] = float((o_rot - cond.rot6d.detach()).abs().max())
    res["cam_max_abs_diff"] = float((o_cam - cond.cam.detach()).abs().max())
    o_tokens = o_logits.argmax(-1)
    res["deterministic_tokens_equal"] = bool(torch.equal(o_tokens, first.tokens))
    verts = [official.decode(o_tokens[i : i + 1]) for i in range(crops.shape[0])]
    r_verts = runtime.decode(first.tokens)
    res["canonical_vertices_max_abs_diff"] = float((torch.cat(verts) - r_verts).abs().max())
    res["crops"] = int(crops.shape[0])

    crop = crops[args.crop : args.crop + 1]
    rows = HYPOTHESES - 1  # the runtime's hypothesis 0 is the deterministic decode
    np.random.seed(args.seed)
    o_gen, _rot, _cam = official.cvqmae.generate(
        crop.repeat(rows, 1, 1, 1),
        nb_steps=CVQMAE_SAMPLING.steps,
        gen_temp=CVQMAE_SAMPLING.temperature,
        device="cpu",
    )
    hyp = runtime.hypotheses(crop, args.seed, sampler="official", numpy_rng=np.random.RandomState(args.seed))
    r_gen = hyp.tokens[0, 1:]
    res["official_sampler_rows"] = rows
    res["official_sampler_tokens_equal"] = bool(torch.equal(o_gen.long(), r_gen.long()))
    res["official_sampler_rows_equal"] = int((o_gen.long() == r_gen.long()).all(dim=1).sum())
    res["official_sampler_distinct_rows"] = len({tuple(t) for t in o_gen.tolist()})
    return res


def memory_child(args) -> dict:
    """RSS of one side in this fresh process: after loading, and the peak while running each case once.

    ``ru_maxrss`` cannot separate the phases (and Linux carries the parent's over fork + exec), so a thread
    samples the current RSS every 5 ms during each phase.
    """
    import torch

    from mega_runtime.decoding.schedule import CVQMAE_SAMPLING

    torch.set_num_threads(args.threads)
    checkpoints, assets = args.workdir, args.shared_dir / "assets"
    crop = _crops(args.shared_dir)[args.crop : args.crop + 1]
    sides: dict = {}

    def load() -> None:
        if args.memory_child == "official":
            sides["s"] = Official(args.official_dir, checkpoints, assets, args.workdir)
        else:
            sides["s"] = Runtime(checkpoints, assets)

    load_peak = _peak_while(load)
    side = sides["s"]
    if args.memory_child == "official":
        runs = {
            "deterministic": lambda: side.deterministic(crop),
            "hypotheses16": lambda: side.hypotheses(
                crop, HYPOTHESES, CVQMAE_SAMPLING.temperature, CVQMAE_SAMPLING.steps
            ),
        }
    else:
        runs = {
            "deterministic": lambda: side.deterministic(crop),
            "hypotheses16": lambda: side.hypotheses(crop, args.seed),
        }
    out = {"load_peak_mb": load_peak, "loaded_mb": _current_rss_mb()}
    for case, fn in runs.items():
        out[f"{case}_peak_mb"] = _peak_while(fn)
    return out


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_while(fn) -> float:
    import threading

    peak = [_current_rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _current_rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _current_rss_mb())


def _crops(shared: Path):
    import numpy as np
    import torch

    with np.load(shared / "fixtures" / "pipeline_demo" / "reference.npz") as ref:
        return torch.from_numpy(ref["crops"].copy())


def _versions() -> dict:
    import numpy
    import timm
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "timm": timm.__version__,
    }


def _report_timings(report: dict, official: Official, runtime: Runtime, crop, args) -> None:
    tokens16 = runtime.hypotheses(crop, args.seed).tokens[0]
    report["timings"] = timings = time_cases(official, runtime, crop, tokens16, args)
    print(
        f"{'case':<15}{'official s':>12}{'runtime s':>12}{'speedup':>10}{'score1 s':>12}{'speedup':>10}"
        f"   (median of {args.repeats}, interleaved{', runtime compiled' if args.compile else ''})"
    )
    for case, t in timings.items():
        extra = f"{t['runtime_score1_s']:>12.3f}{t['speedup_score1']:>9.2f}×" if "runtime_score1_s" in t else ""
        print(f"{case:<15}{t['official_s']:>12.3f}{t['runtime_s']:>12.3f}{t['speedup']:>9.2f}×{extra}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = official_problem(args.official_dir) or shared_problem(args.shared_dir)
    if problem:
        print(f"skipped: {problem}")
        return SKIP_EXIT
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
        workdir = args.workdir or Path(tmp)
        started = time.perf_counter()
        write_checkpoints(args.shared_dir, workdir, args.seed)
        print(f"seeded full-size checkpoints ({MODEL}, mesh_vqvae_54, seed {args.seed}) in {workdir}")
        assets = args.shared_dir / "assets"
        official = Official(args.official_dir, workdir, assets, workdir)
        try:
            runtime = Runtime(workdir, assets, compile_models=args.compile)
        except Skip as why:
            print(f"skipped: {why}")
            return SKIP_EXIT
        crops = _crops(args.shared_dir)
        crop = crops[args.crop : args.crop + 1]
        report: dict = {"versions": _versions(), "threads": args.threads, "repeats": args.repeats, "seed": args.seed}
        report["compiled"] = args.compile
        print(f"versions: {report['versions']}, torch threads {args.threads}, repeats {args.repeats}")

        if not args.no_check:
            report["equality"] = eq = check_equal(official, runtime, crops, args)
            print(
                f"deterministic: tokens equal {eq['deterministic_tokens_equal']} on {eq['crops']} crops, "
                f"max|Δlogits| {eq['logits_max_abs_diff']:.2e} (logit std {eq['logits_std']:.2f}), "
                f"max|Δrot6d| {eq['rot6d_max_abs_diff']:.2e}, max|Δcam| {eq['cam_max_abs_diff']:.2e}, "
                f"max|Δvertices| {eq['canonical_vertices_max_abs_diff']:.2e}"
            )
            print(
                f"official sampler ({eq['official_sampler_rows']} rows, numpy seed {args.seed}): tokens equal "
                f"{eq['official_sampler_tokens_equal']} ({eq['official_sampler_rows_equal']}/"
                f"{eq['official_sampler_rows']} rows, {eq['official_sampler_distinct_rows']} distinct)"
            )

        if not args.no_timing:
            _report_timings(report, official, runtime, crop, args)
        del official, runtime

        if not args.no_memory:
            report["memory"] = {}
            for side in ("official", "runtime"):
                cmd = [sys.executable, __file__, "--memory-child", side, "--workdir", str(workdir)]
                cmd += ["--official-dir", str(args.official_dir), "--shared-dir", str(args.shared_dir)]
                cmd += ["--threads", str(args.threads), "--seed", str(args.seed), "--crop", str(args.crop)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
                report["memory"][side] = mem = json.loads(out[-1])
                print(
                    f"RSS {side:<9}: peak while loading {mem['load_peak_mb']:.0f} MB, "
                    f"loaded {mem['loaded_mb']:.0f} MB, "
                    f"peak deterministic {mem['deterministic_peak_mb']:.0f} MB, "
                    f"peak 16 hypotheses {mem['hypotheses16_peak_mb']:.0f} MB"
                )
        report["wall_s"] = time.perf_counter() - started
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
