"""Speed of the YOLOX person detector (onnxruntime, CPU) on the shared photos.

Without ``--model`` it times a YOLOX-S-shaped network at YOLOX-S's own width (8.97 M parameters, the published
file's size) with seeded weights, exported once to a temporary folder: the same operations on the same tensor
shapes as the real model, so the same time (the boxes are meaningless). With ``--model`` it times that file.

Prints, per image: its size, the boxes found and the median / minimum wall-clock time and the median process CPU
time (all threads) over repeats (after one warm-up run) of the whole ``detect`` (letterbox, network, decoding,
NMS) and of the network alone. Decoding the image is not timed.

    python benchmarks/bench_yolox.py                               # ../shared/assets/images, 2 threads
    python benchmarks/bench_yolox.py --threads 1 --model object_detection_yolox_2022nov.onnx photo.jpg

Needs onnxruntime, OpenCV, and torch + onnx for the seeded model. Never run as a test.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "assets" / "images"
PHOTOS = (
    "pexels-labonheure-13020855.jpg",
    "pexels-polina-tankilevitch-6739044.jpg",
    "pexels-marcus-aurelius-6787357.jpg",
)


def _times(fn, repeats: int) -> tuple[float, float, float]:
    """(median, minimum) wall-clock ms of ``fn`` over ``repeats`` runs after one warm-up, and its median process
    CPU ms (all threads)."""
    fn()
    samples, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(samples), min(samples), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--model", type=Path, help="a YOLOX .onnx file (default: a seeded YOLOX-S-shaped network)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--conf", type=float, default=0.5)
    args = parser.parse_args(argv)

    import cv2
    import numpy as np
    import onnxruntime

    from mega_runtime.pipeline.detect.yolox import YoloxDetector, letterbox

    images = args.images or [DEFAULT_IMAGES / name for name in PHOTOS]
    with tempfile.TemporaryDirectory(prefix="bench-yolox-") as tmp:
        model = args.model
        if model is None:
            import torch

            from tests.runtime.yolox_seeded import export_seeded_yolox

            torch.set_num_threads(1)
            model = export_seeded_yolox(Path(tmp) / "yolox_s_seeded.onnx", width=0.5)
            print(f"model: seeded YOLOX-S-shaped network, {model.stat().st_size / 1e6:.1f} MB (boxes meaningless)")
        else:
            print(f"model: {model} ({model.stat().st_size / 1e6:.1f} MB)")
        started = time.perf_counter()
        detector = YoloxDetector(model_path=model, conf=args.conf, num_threads=args.threads)
        print(f"loaded in {(time.perf_counter() - started) * 1000:.0f} ms; onnxruntime {onnxruntime.__version__}, "
              f"{args.threads} thread(s), {platform.processor() or platform.machine()}")  # fmt: skip
        blob = letterbox(np.zeros((640, 640, 3), dtype=np.uint8), detector.input_hw)[0]
        net_median, net_min, net_cpu = _times(lambda: detector.run_network(blob), args.repeats)
        print(f"network alone (640×640): median {net_median:.0f} ms, min {net_min:.0f} ms, CPU {net_cpu:.0f} ms")
        for path in images:
            image = cv2.imread(str(path))
            if image is None:
                print(f"{path}: not readable")
                continue
            found = len(detector.detect(image))
            median, best, cpu = _times(lambda image=image: detector.detect(image), args.repeats)
            print(f"{path.name}: {image.shape[1]}×{image.shape[0]}, {found} box(es), detect median {median:.0f} ms, "
                  f"min {best:.0f} ms, CPU {cpu:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
