"""Speed of the offline default person detector (BlazePose, TFLite) on the shared photos.

Prints, per image: its size, the people found and the median / minimum detection time over repeats (after one
warm-up run), with the number of TFLite threads given (default 2). Decoding the image is not timed.

    python benchmarks/bench_detect.py                       # ../shared/assets/images, 2 threads, 5 repeats
    python benchmarks/bench_detect.py --threads 1 --repeats 9 photo.jpg other.jpg

Needs tflite-runtime and the BlazePose model files (pip install --no-deps mediapipe==0.10.14, or
$MEGA_DETECTOR_DIR). Never run as a test.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "assets" / "images"
PHOTOS = (
    "pexels-labonheure-13020855.jpg",
    "pexels-polina-tankilevitch-6739044.jpg",
    "pexels-marcus-aurelius-6787357.jpg",
)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path, help=f"photos (default: the three in {DEFAULT_IMAGES})")
    parser.add_argument("--threads", type=int, default=2, help="TFLite threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per image after one warm-up (default 5)")
    parser.add_argument("--detector", default="default", help="detector name for make_detector (default 'default')")
    args = parser.parse_args(argv)

    from mega_runtime.pipeline.detect import make_detector
    from mega_runtime.pipeline.media import read_image

    paths = args.images or [DEFAULT_IMAGES / name for name in PHOTOS]
    start = time.perf_counter()
    detector = make_detector(args.detector, num_threads=args.threads)
    load_s = time.perf_counter() - start
    print(f"# {detector.name} detector, {args.threads} thread(s), {_cpu_name()}")
    print(f"# models loaded in {load_s * 1000:.0f} ms")
    print("| image | size | people | median | min |")
    print("|---|---|---|---|---|")
    for path in paths:
        image = read_image(path)
        people = detector.detect(image)  # warm-up
        times = []
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            people = detector.detect(image)
            times.append(time.perf_counter() - start)
        height, width = image.shape[:2]
        print(
            f"| {path.name} | {width}×{height} | {len(people)} | {statistics.median(times) * 1000:.0f} ms "
            f"| {min(times) * 1000:.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
