"""What ``infer`` and ``batch`` run for one input (torch-free at import): the pipeline for the parsed arguments
(:func:`load_pipeline`) and one photo or video through it (:func:`reconstruct`), with the option values they read
(boxes, sampling, video post-processing)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mega_runtime import defaults
from mega_runtime.errors import MegaError

MODEL_NAMES = defaults.MODEL_SHORT_NAMES


def parse_boxes(text: str) -> list[list[float]]:
    """'x1,y1,x2,y2;x1,y1,x2,y2' → list of boxes in pixels."""
    try:
        boxes = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError as exc:
        raise MegaError(f"--boxes {text!r} is not a list of numbers", hint="use x1,y1,x2,y2;x1,y1,x2,y2") from exc
    if not boxes or any(len(b) != 4 for b in boxes):
        raise MegaError(f"--boxes {text!r} needs 4 numbers per box", hint="use x1,y1,x2,y2;x1,y1,x2,y2")
    if not all(math.isfinite(v) for b in boxes for v in b) or any(b[2] <= b[0] or b[3] <= b[1] for b in boxes):
        raise MegaError(
            f"--boxes {text!r} holds a non-finite number or an empty box",
            hint="use finite pixel coordinates with x1 < x2 and y1 < y2",
        )
    return boxes


def _model_name(value: str) -> str:
    return MODEL_NAMES.get(value, value)


def _sampling(args: argparse.Namespace):
    from mega_runtime.decoding.schedule import SamplingConfig

    try:
        return SamplingConfig(steps=args.steps, temperature=args.temperature)
    except ValueError as exc:
        raise MegaError(str(exc), hint="see mega-runtime infer --help") from exc


def temporal_config(args: argparse.Namespace):
    """The video post-processing asked for on the command line, or None."""
    if args.path == "zero" and not args.smooth:
        return None
    from mega_runtime.pipeline.temporal import OneEuroConfig, TemporalConfig

    try:
        return TemporalConfig(
            path=args.path,
            smooth=args.smooth,
            one_euro=OneEuroConfig(
                min_cutoff=args.one_euro_min_cutoff,
                beta=args.one_euro_beta,
                d_cutoff=args.one_euro_d_cutoff,
                two_sided=not args.one_euro_causal,
            ),
            smoothness_weight=args.path_smoothness,
        )
    except ValueError as exc:
        raise MegaError(str(exc), hint="see mega-runtime infer --help") from exc


def load_pipeline(args: argparse.Namespace, progress=None):
    """The :class:`~mega_runtime.pipeline.chain.Pipeline` that ``infer`` runs for the parsed ``args`` (model,
    sampling, seed, device, batch size, detector and its settings, weights); ``progress`` shows downloads (the
    weights', and YOLOX's on first use)."""
    from mega_runtime.io.detection import detection_settings
    from mega_runtime.mega import resolve_device
    from mega_runtime.pipeline.chain import Pipeline, PipelineConfig, build_detector
    from mega_runtime.pipeline.detect import DOWNLOADING_DETECTORS

    settings = detection_settings(args.detector, args.detect_threshold, args.min_height, args.max_people)
    config = PipelineConfig(
        model=_model_name(args.model),
        num_hypotheses=args.hypotheses,
        sampling=_sampling(args),
        sampler=args.sampler,
        seed=args.seed,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        detection=settings,
        precision=args.precision,
        compile=args.compile,
        score_steps=args.score_steps,
    )
    options: dict[str, object] = {"weights": args.yolo_weights} if args.detector == "yolo" else {}
    if args.detector in DOWNLOADING_DETECTORS and progress is not None:  # YOLOX may be downloaded on first use
        options["progress"] = progress
    detector = build_detector(settings, **options)
    return Pipeline.load(config, args.checkpoint_dir, args.assets_dir, detector, progress=progress)


def reconstruct(args: argparse.Namespace, pipeline, path: Path, frame_progress=None, should_stop=None):
    """What ``infer`` computes for one input ``path`` with ``args`` → (Result, the photo as BGR or None for a
    video). ``frame_progress(done, total)`` follows a video's frames; ``should_stop()`` ends a video early
    (the frames so far are kept). Given boxes (``--boxes``, ``--boxes-file``, ``--boxes-mode``) apply to photos
    and videos alike. Raises MegaError or OSError for this input."""
    from mega_runtime.io.detection import read_boxes_file
    from mega_runtime.pipeline.media import FrameRange, is_video, read_image

    boxes = parse_boxes(args.boxes) if args.boxes else None
    frame_boxes = read_boxes_file(args.boxes_file) if args.boxes_file else None
    if is_video(path):
        frames = FrameRange.parse(args.frames) if args.frames else None
        result = pipeline.run_video(
            path,
            frames,
            progress=frame_progress,
            should_stop=should_stop,
            boxes=boxes,
            frame_boxes=frame_boxes,
            boxes_mode=args.boxes_mode,
            stitch=args.stitch,
            detect_every=args.detect_every,
        )
        temporal = temporal_config(args)
        if temporal is not None and result.num_frames > 0:
            from mega_runtime.pipeline.temporal import apply_temporal

            result = apply_temporal(result, temporal)
        return result, None
    image = read_image(path)
    given = frame_boxes[0] if frame_boxes is not None and 0 in frame_boxes else boxes
    result = pipeline.run_image(image, given, {"path": str(Path(path).resolve())}, boxes_mode=args.boxes_mode)
    return result, image
