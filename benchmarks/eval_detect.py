"""Precision / recall of a person detector on the labelled evaluation set (docs/detection.md, "Evaluation").

Three parts, each scored with :mod:`mega_runtime.pipeline.detect.evaluate` (IoU 0.5, people ≥ 60 px tall):

* ``vtest``: twelve hand-annotated frames of OpenCV's 768×576 pedestrian clip (benchmarks/data/vtest_people.json;
  the clip itself comes from Debian's opencv-doc package: ``apt-get download opencv-doc && dpkg -x …``),
  reported as the six frames used while tuning the detector, the three held out, the three annotated after
  the last change (``final``), and all twelve;
* ``photos``: the three photos of ../shared/assets/images (benchmarks/data/shared_photos_people.json);
* ``synthetic``: people cut out of those photos pasted at 70–300 px tall into 768×576 canvases (seeded).

    python benchmarks/eval_detect.py --vtest /tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi
    python benchmarks/eval_detect.py --option tiles=false --option hog=false --parts photos synthetic
    python benchmarks/eval_detect.py --detector yolox --vtest …/vtest.avi     # any detector, e.g. YOLOX-S

Prints a markdown table per part and size bucket, the group-box rate and the mean wall-clock (and CPU, all
threads) time per image. Never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from mega_runtime.pipeline.detect import PersonDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(os.environ.get("MEGA_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def vtest_labels() -> dict[int, dict]:
    """The hand-annotated vtest frames (benchmarks/data/vtest_people.json): frame index → its entry (``people``,
    ``ignore``, ``split``)."""
    labels = json.loads((DATA / "vtest_people.json").read_text())
    return {int(k): v for k, v in labels["frames"].items()}


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The frames of the video ``path`` whose indices are in ``wanted`` (BGR uint8), read in one pass."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    index, last = 0, max(wanted)
    while index <= last:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames[index] = frame
        index += 1
    capture.release()
    missing = sorted(wanted - set(frames))
    if missing:
        raise SystemExit(f"{path}: frames {missing[:5]}… not found")
    return frames


def vtest_set(path: Path) -> list[tuple[str, object, list, list]]:
    labels = vtest_labels()
    frames = read_frames(path, set(labels))
    return [
        (f"vtest#{index} ({entry.get('split', 'tuning')})", frames[index], entry["people"], entry["ignore"])
        for index, entry in sorted(labels.items())
    ]


def photo_set() -> list[tuple[str, object, list, list]]:
    from mega_runtime.pipeline.media import read_image

    labels = json.loads((DATA / "shared_photos_people.json").read_text())
    return [
        (name, read_image(SHARED / "assets" / "images" / name), entry["people"], entry["ignore"])
        for name, entry in labels["images"].items()
    ]


def cutouts() -> list[tuple[object, list, list]]:
    """(image, box, other people's boxes) of each person annotated in the shared photos (the group's front row
    and the two singles)."""
    from mega_runtime.pipeline.media import read_image

    labels = json.loads((DATA / "shared_photos_people.json").read_text())
    out = []
    for name, entry in labels["images"].items():
        image = read_image(SHARED / "assets" / "images" / name)
        for i, box in enumerate(entry["people"][:4]):
            others = [b for j, b in enumerate(entry["people"]) if j != i] + entry["ignore"]
            out.append((image, box, others))
    return out


def synthetic_set(count: int, seed: int = 0) -> list[tuple[str, object, list, list]]:
    import numpy as np

    from mega_runtime.pipeline.detect.evaluate import synthetic_scene

    people = cutouts()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        heights = rng.uniform(70, 300, size=int(rng.integers(3, 7)))
        order = rng.permutation(len(people))
        image, boxes, ignore = synthetic_scene([people[j] for j in order], (768, 576), heights, seed=seed * 1000 + i)
        out.append((f"synthetic#{i}", image, boxes, ignore))
    return out


def configured_detector(name: str, items: list[str], threads: int) -> tuple[PersonDetector, dict[str, object]]:
    """``make_detector(name, num_threads=threads, **options)`` with ``NAME=VALUE`` items (JSON values, or
    true/false) → (detector, the options used)."""
    from mega_runtime.pipeline.detect import make_detector

    options: dict[str, object] = {"num_threads": threads}
    for item in items:
        key, _, value = item.partition("=")
        options[key] = json.loads(value) if value not in ("true", "false") else value == "true"
    return make_detector(name, **options), options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vtest", type=Path, help="path of vtest.avi (the vtest part is skipped without it)")
    parser.add_argument("--parts", nargs="*", default=["vtest", "photos", "synthetic"])
    parser.add_argument("--synthetic", type=int, default=8, help="number of synthetic images (default 8)")
    parser.add_argument("--detector", default="blazepose", help="make_detector name (default blazepose; e.g. yolox)")
    parser.add_argument("--option", action="append", default=[], help="detector option NAME=VALUE (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print each image's counts")
    args = parser.parse_args(argv)

    from mega_runtime.pipeline.detect.evaluate import SIZE_BUCKETS, score_image, summarise

    detector, options = configured_detector(args.detector, args.option, args.threads)
    sets = {}
    if "vtest" in args.parts and args.vtest:
        frames = vtest_set(args.vtest)
        sets["vtest tuning"] = [item for item in frames if item[0].endswith("(tuning)")]
        sets["vtest held-out"] = [item for item in frames if item[0].endswith("(held-out)")]
        sets["vtest final"] = [item for item in frames if item[0].endswith("(final)")]
        sets["vtest all"] = frames
    if "photos" in args.parts:
        sets["photos"] = photo_set()
    if "synthetic" in args.parts:
        sets["synthetic"] = synthetic_set(args.synthetic)
    print(f"# detector {args.detector} {options}")
    print("| part | bucket | people | found | recall | detections | precision | group boxes | ms / image (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for part, items in sets.items():
        scores, elapsed, cpu = [], 0.0, 0.0
        for name, image, people, ignore in items:
            start, start_cpu = time.perf_counter(), time.process_time()
            found = detector.detect(image)
            elapsed += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            score = score_image([d.box_xyxy for d in found], [d.score for d in found], people, ignore)
            scores.append(score)
            if args.verbose:
                t = score.total
                boxes = [[round(v) for v in d.box_xyxy] for d in found]
                print(f"  {name}: {t.found}/{t.people} found, {t.true_positives}/{t.detections} right, "
                      f"{t.group_boxes} group; {list(zip(score.verdicts, boxes, strict=True))}")  # fmt: skip
        total, buckets = summarise(scores)
        ms = 1000 * elapsed / max(1, len(items))
        cpu_ms = 1000 * cpu / max(1, len(items))
        for bucket, counts in [("all", total), *((name, buckets[name]) for name, _, _ in SIZE_BUCKETS)]:
            if counts.people == 0 and counts.detections == 0:
                continue
            print(
                f"| {part} ({len(items)}) | {bucket} | {counts.people} | {counts.found} | {counts.recall:.2f} | "
                f"{counts.detections} | {counts.precision:.2f} | {counts.group_boxes} "
                f"({100 * counts.group_rate:.1f} %) | {ms:.0f} ({cpu_ms:.0f}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
