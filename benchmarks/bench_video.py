"""End-to-end video speed: frames/s for a 300-frame clip with 1 and 16 hypotheses, detection ms/frame, with and
without the prefetching reader and with a detection cadence (``detect_every``).

The clip: OpenCV's 768×576 pedestrian sample ``vtest.avi`` when ``--video`` names it (Debian's opencv-doc package
ships it: ``apt-get download opencv-doc && dpkg -x opencv-doc_*.deb x`` →
``x/usr/share/doc/opencv-doc/examples/data/vtest.avi``), else a 768×576 clip synthesized here from the shared group
photo (a slow pan over it). The model: ``--model small`` (default) = the seeded small ResNet checkpoints of
``../shared/fixtures`` (what the tests use: the figures show detection, decoding and the pipeline's own cost);
``resnet``/``hrnet`` = the full-size configuration with random weights (the model's real cost; slow on a CPU).
Every configuration runs in one process, one after the other, so compare ratios within one run. Never a test.

    python benchmarks/bench_video.py --video /path/to/vtest.avi [--frames 300] [--hypotheses 1 16]
        [--detect-every 1 3] [--prefetch 0 4] [--model small|resnet|hrnet] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("MEGA_SHARED_DIR", ROOT.parent / "shared"))
GROUP_PHOTO = "pexels-labonheure-13020855.jpg"


def synthesize_clip(path: Path, frames: int, size: tuple[int, int] = (768, 576)) -> None:
    """A ``frames``-long MJPG clip of ``size`` panning 1 px per frame over the shared group photo."""
    import cv2
    import numpy as np

    from mega_runtime.pipeline.media import read_image

    photo = read_image(SHARED / "assets" / "images" / GROUP_PHOTO)
    height = size[1] + 200
    scaled = cv2.resize(photo, (round(photo.shape[1] * height / photo.shape[0]), height), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    room = scaled.shape[1] - size[0]
    for i in range(frames):
        x = i % (2 * room) if i % (2 * room) < room else 2 * room - i % (2 * room)
        writer.write(np.ascontiguousarray(scaled[100 : 100 + size[1], x : x + size[0]]))
    writer.release()


def load_mega(model: str, device: str, workdir: Path):
    """(Mega, model name) for ``small`` (the seeded fixtures rebuilt as checkpoints) or a full-size preset."""
    from mega_runtime.mega import Mega
    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.config import PRESETS
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

    assets = SHARED / "assets"
    if model == "small":
        from mega_runtime.commands.cli import main as cli

        fixtures = SHARED / "fixtures"
        names = [str(fixtures / n) for n in ("cvqmae_resnet", "mesh_vqvae", "vqmae")]
        if cli(["verify", *names, "--write-checkpoints", str(workdir)]) != 0:
            raise SystemExit("the seeded fixtures did not verify")
        return Mega.from_checkpoints(workdir, "mega_resnet", assets_dir=assets, device=device), "mega_resnet (small)"
    name = f"mega_{model}"
    mega = Mega(
        CVQMAE(PRESETS[name]).eval().to(device),
        MeshVQVAE(MeshVQVAEConfig(), load_connection_matrices(assets / "connection_matrices")).eval().to(device),
    )
    return mega, f"{name} (random weights)"


def front_end(clip: Path, frames, detector, every: int) -> tuple[int, float, float, int]:
    """Decode ``frames`` of ``clip`` and find the people with a cadence of ``every`` (no model) → (frames, wall s,
    CPU s of the whole process, detector runs)."""
    from mega_runtime.pipeline.cadence import CadencedDetector
    from mega_runtime.pipeline.media import iter_frames

    people = CadencedDetector(lambda image: [d.box_xyxy for d in detector.detect(image)], every)
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for _, image in iter_frames(clip, frames):
        people.boxes(image)
        n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0, people.detector_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="a video to read (default: synthesize one from the shared photo)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the clip read (default %(default)s)")
    parser.add_argument("--model-frames", type=int, help="frames run through the model (default: --frames)")
    parser.add_argument("--model", choices=["small", "resnet", "hrnet"], default="small")
    parser.add_argument("--hypotheses", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--prefetch", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--detector", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    from mega_runtime.models.assets import read_template_ply
    from mega_runtime.pipeline.chain import Pipeline, PipelineConfig
    from mega_runtime.pipeline.detect import make_detector
    from mega_runtime.pipeline.media import FrameRange, iter_frames, open_video

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.video
        if clip is None:
            clip = Path(tmp) / "clip.avi"
            synthesize_clip(clip, args.frames)
        frames = FrameRange(0, args.frames)
        _, info = open_video(clip)
        detector = make_detector(args.detector)
        t0, c0 = time.perf_counter(), time.process_time()
        decoded = sum(1 for _ in iter_frames(clip, frames))
        decode = ((time.perf_counter() - t0) / decoded * 1e3, (time.process_time() - c0) / decoded * 1e3)
        print(
            f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), detector "
            f"{getattr(detector, 'name', '?')}, clip {clip.name} {info.width}x{info.height}; decoding alone "
            f"{decode[0]:.1f} ms/frame wall, {decode[1]:.1f} ms/frame CPU"
        )
        print("\nDecoding + finding the people (no model):\n")
        print("| detect every | frames | frames/s | ms/frame (wall) | ms/frame (CPU) | detector runs |")
        print("|---|---|---|---|---|---|")
        for every in args.detect_every:
            n, wall, cpu, runs = front_end(clip, frames, detector, every)
            print(
                f"| {every} | {n} | {n / wall:.2f} | {wall / n * 1e3:.0f} | {cpu / n * 1e3:.0f} | {runs} |", flush=True
            )

        mega, model_name = load_mega(args.model, args.device, Path(tmp))
        faces = read_template_ply(SHARED / "assets" / "template.ply").faces
        model_frames = FrameRange(0, args.model_frames or args.frames)
        print(f"\nEnd to end, model {model_name}, batch {args.batch_size}:\n")
        print("| hypotheses | detect every | prefetch | frames | frames/s | CPU s/frame | detect ms/frame | people |")
        print("|---|---|---|---|---|---|---|---|")
        with torch.inference_mode():
            for hypotheses in args.hypotheses:
                config = PipelineConfig(
                    model="mega_resnet", num_hypotheses=hypotheses, device=args.device, batch_size=args.batch_size
                )
                pipeline = Pipeline(mega, detector, faces, config, {"name": model_name})
                for every in args.detect_every:
                    for prefetch in args.prefetch:
                        t0, c0 = time.perf_counter(), time.process_time()
                        result = pipeline.run_video(clip, model_frames, detect_every=every, prefetch=prefetch)
                        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                        n = result.num_frames
                        print(
                            f"| {hypotheses} | {every} | {prefetch} | {n} | {n / wall:.2f} | {cpu / n:.2f} "
                            f"| {result.meta['timings_ms']['detect'] / n:.0f} | {int(result.arrays['valid'].sum())} |",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
