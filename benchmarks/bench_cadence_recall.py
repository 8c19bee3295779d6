"""Recall and cost of the detection cadence (``--detect-every K``) on the hand-annotated vtest frames.

For each annotated frame f of OpenCV's 768×576 ``vtest.avi`` (benchmarks/data/vtest_people.json) and each
offset o = 0 … k − 1, a fresh :class:`~mega_runtime.pipeline.cadence.CadencedDetector` detects on frame f − o and
follows the boxes by optical flow to f (re-detecting early when it loses one), as the video pipeline does; the
boxes at f are scored with :mod:`mega_runtime.pipeline.detect.evaluate` (IoU 0.5, people ≥ 60 px). So each figure
is the expected recall/precision over where an annotated frame falls in the cadence (12·k scored frames).

Cost per frame = the detector's mean CPU time per run × runs per frame + the flow's mean CPU time per followed
frame × followed frames per frame (process CPU time, all threads). Detections are computed once per frame index
and reused across k and offsets (the detector is deterministic).

    python benchmarks/bench_cadence_recall.py --vtest /tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi \\
        [--every 1 3 5 10 20] [--detector blazepose] [--option hog=false] [--threads 2]

Never a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # eval_detect, the detection evaluation's script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vtest", type=Path, required=True, help="path of vtest.avi")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    parser.add_argument("--detector", default="blazepose", help="make_detector name (default blazepose)")
    parser.add_argument("--option", action="append", default=[], help="detector option NAME=VALUE (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from eval_detect import configured_detector, read_frames, vtest_labels

    from mega_runtime.pipeline import cadence
    from mega_runtime.pipeline.cadence import CadencedDetector
    from mega_runtime.pipeline.detect.evaluate import score_image, summarise

    detector, options = configured_detector(args.detector, args.option, args.threads)
    labels = vtest_labels()
    span = max(args.every)
    frames = read_frames(args.vtest, {f - o for f in labels for o in range(span) if f - o >= 0})

    detect_cpu: list[float] = []
    flow_cpu: list[float] = []
    cache: dict[int, tuple] = {}

    def cached_detect(index: int):
        if index not in cache:
            start = time.process_time()
            found = detector.detect(frames[index])
            detect_cpu.append(time.process_time() - start)
            cache[index] = ([d.box_xyxy for d in found], [d.score for d in found])
        return cache[index]

    original_propagate = cadence.propagate_boxes

    def timed_propagate(prev, gray, boxes):
        start = time.process_time()
        try:
            return original_propagate(prev, gray, boxes)
        finally:
            flow_cpu.append(time.process_time() - start)

    cadence.propagate_boxes = timed_propagate
    print(f"# detector {args.detector} {options}; {len(labels)} annotated frames")
    rows = []
    for every in args.every:
        scores, early, processed = [], 0, 0
        for f, entry in sorted(labels.items()):
            for offset in range(min(every, f + 1)):
                current = [f - offset]

                def detect_current(_image: np.ndarray, at: list[int] = current) -> tuple:
                    return cached_detect(at[0])

                tracker = CadencedDetector(detect_current, every=every)
                for index in range(f - offset, f + 1):
                    current[0] = index
                    boxes = tracker.boxes(frames[index])
                    processed += 1
                scores.append(score_image(boxes.tolist(), tracker.scores.tolist(), entry["people"], entry["ignore"]))
                early += tracker.early_runs
        total, _ = summarise(scores)
        rows.append((every, len(scores), total, early, processed))
    detect_ms = 1000 * statistics.mean(detect_cpu)
    flow_ms = 1000 * statistics.mean(flow_cpu) if flow_cpu else 0.0
    print(f"detector: {len(detect_cpu)} runs, {detect_ms:.0f} ms CPU per run; flow: {flow_ms:.1f} ms CPU per frame")
    print("| k | scored frames | recall | precision | detector runs / 100 frames (early) | CPU ms / frame (expected) |")
    print("|---|---|---|---|---|---|")
    for every, scored, total, early, processed in rows:
        per_frame = 1 / every + early / processed
        cpu = detect_ms * per_frame + flow_ms * (1 - per_frame)
        print(
            f"| {every} | {scored} | {total.recall:.3f} "
            f"({total.found}/{total.people}) | {total.precision:.3f} | {100 * per_frame:.0f} ({early}) | {cpu:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
