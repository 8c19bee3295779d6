"""Identities on a real clip without identity labels: how many does each tracking stage give?

Runs the person detector on the clip's frames once, then the box tracker alone, the tracker with appearance, and
the tracker with appearance followed by the offline stitching (appearance only: the body-shape cue needs MEGA's
meshes, which this script does not compute). Prints detections per frame, identities, and identities seen in
fewer than 5 frames. For OpenCV's pedestrian sample (Debian package opencv-doc,
/usr/share/doc/opencv-doc/examples/data/vtest.avi): docs/video.md.

    python benchmarks/bench_tracking_video.py VIDEO [--frames 150] [--step 1] [--detector default]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mega_runtime.pipeline.detect import make_detector
from mega_runtime.pipeline.media import FrameRange, iter_frames
from mega_runtime.pipeline.reid import appearance_descriptors, stitch_tracklets, tracklets_from_frames
from mega_runtime.pipeline.tracking import BoxTracker


def summary(name: str, ids: list[np.ndarray]) -> None:
    lengths: dict[int, int] = {}
    for frame in ids:
        for t in frame.tolist():
            lengths[t] = lengths.get(t, 0) + 1
    short = sum(n < 5 for n in lengths.values())
    print(f"| {name} | {len(lengths)} | {short} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--detector", default="default")
    args = parser.parse_args()
    detector = make_detector(args.detector)
    images, boxes = [], []
    started = time.perf_counter()
    for _, image in iter_frames(args.video, FrameRange(0, args.frames * args.step, args.step)):
        found = np.array([d.box_xyxy for d in detector.detect(image)], np.float64).reshape(-1, 4)
        images.append(image)
        boxes.append(found)
    size = (images[0].shape[1], images[0].shape[0])
    per_frame = np.mean([len(b) for b in boxes])
    print(f"{len(images)} frames, {per_frame:.2f} detections per frame ({time.perf_counter() - started:.0f} s)")
    print("| tracking | identities | identities seen in < 5 frames |")
    print("|---|---|---|")
    tracker = BoxTracker()
    summary("boxes only", [tracker.update(b, size) for b in boxes])
    tracker = BoxTracker()
    descriptors = [appearance_descriptors(image, b) for image, b in zip(images, boxes, strict=True)]
    online = [tracker.update(b, size, d) for b, d in zip(boxes, descriptors, strict=True)]
    summary("boxes + appearance", online)
    identity = stitch_tracklets(tracklets_from_frames(online, boxes, descriptors))
    summary("+ stitching (appearance)", [np.array([identity[int(t)] for t in frame]) for frame in online])


if __name__ == "__main__":
    main()
