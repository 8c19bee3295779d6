"""End-to-end speed of the pipeline: photos per second, video frames per second, detection separately.

Full-size model (default HRNet-W48 configuration; ``--model resnet`` for ResNet-50) with random weights,
the default offline detector, the shared photos. Prints figures; never run as a test.

    MEGA_ASSETS_DIR=../shared/assets python benchmarks/bench_pipeline.py [--hypotheses 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["hrnet", "resnet"], default="hrnet")
    parser.add_argument("--hypotheses", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video-frames", type=int, default=24)
    args = parser.parse_args()
    assets = Path(os.environ.get("MEGA_ASSETS_DIR", ROOT.parent / "shared" / "assets"))
    if not (assets / "images").is_dir():
        parser.error("set MEGA_ASSETS_DIR to the shared assets folder (with images/)")

    import cv2
    import numpy as np
    import torch

    from mega_runtime.mega import Mega
    from mega_runtime.models.assets import load_connection_matrices, read_template_ply
    from mega_runtime.models.config import PRESETS
    from mega_runtime.models.masked_transformer import CVQMAE
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig
    from mega_runtime.pipeline.chain import Pipeline, PipelineConfig
    from mega_runtime.pipeline.detect import make_detector
    from mega_runtime.pipeline.media import read_image

    torch.set_num_threads(args.threads)
    name = f"mega_{args.model}"
    mega = Mega(
        CVQMAE(PRESETS[name]).eval().to(args.device),
        MeshVQVAE(MeshVQVAEConfig(), load_connection_matrices(assets / "connection_matrices")).eval().to(args.device),
    )
    detector = make_detector("default")
    faces = read_template_ply(assets / "template.ply").faces
    photos = sorted((assets / "images").glob("*.jpg"))
    images = {p.name: read_image(p) for p in photos}
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, model {name} (random weights)")

    for photo, image in images.items():
        det_s = _median_s(lambda image=image: detector.detect(image), args.repeats)
        people = len(detector.detect(image))
        print(f"detect   {photo}: {det_s * 1e3:7.1f} ms ({people} people, {image.shape[1]}x{image.shape[0]})")
    with torch.inference_mode():
        for hypotheses in args.hypotheses:
            pipeline = Pipeline(
                mega,
                detector,
                faces,
                PipelineConfig(model=name, num_hypotheses=hypotheses, device=args.device),
                {"name": name},
            )
            for photo, image in images.items():
                total = _median_s(lambda image=image, pipeline=pipeline: pipeline.run_image(image), args.repeats)
                print(f"photo    {photo} H={hypotheses}: {total * 1e3:8.1f} ms end to end ({1 / total:5.2f} photos/s)")
            with tempfile.TemporaryDirectory() as tmp:
                clip = Path(tmp) / "clip.avi"
                src = images[photos[-1].name]
                small = cv2.resize(src, (src.shape[1] // 4, src.shape[0] // 4))
                h, w = 480, 360
                writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
                for i in range(args.video_frames):
                    writer.write(np.ascontiguousarray(small[100 : 100 + h, 50 + 2 * i : 50 + 2 * i + w]))
                writer.release()
                t0 = time.perf_counter()
                result = pipeline.run_video(clip)
                elapsed = time.perf_counter() - t0
                people = int(result.arrays["valid"].sum())
                print(
                    f"video    {args.video_frames} frames {w}x{h} H={hypotheses}: {args.video_frames / elapsed:5.2f} "
                    f"frames/s ({people} person-frames, detect {result.meta['timings_ms']['detect']:.0f} ms total)"
                )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
