"""``mega-runtime infer`` (torch-free at import).

Photos, videos or folders of them → one result pair per input in ``--out``
(``<stem>.json`` + ``<stem>.npz``, docs/result-format.md), optional previews. Each input is
handled on its own: a bad input is reported (problem and fix) and skipped, the others are still
processed, and nothing partial is left for it. Exit codes: 0 every input done; 2 a usage or
input error, or at least one input failed (see docs/cli.md). What runs for one input is
:mod:`mega_runtime.commands.reconstruct` (shared with ``batch``); the option types are
:mod:`mega_runtime.commands.options`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from mega_runtime import defaults
from mega_runtime.commands.options import (
    add_detection_options,
    bounded_float,
    bounded_int,
    check_output_folder,
    common_options,
    sampling_options,
)
from mega_runtime.commands.reconstruct import load_pipeline, parse_boxes, reconstruct, temporal_config
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
IMAGE_SUFFIXES = defaults.IMAGE_SUFFIXES


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders → their photos and videos (sorted). A missing path is a usage error."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            media = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | defaults.VIDEO_SUFFIXES)
            if not media:
                raise MegaError(f"folder {path} holds no photo or video", hint="pass image or video files")
            found.extend(media)
        elif path.is_file():
            found.append(path)
        else:
            raise MegaError(f"input {path} does not exist", hint="check the path")
    stems = [p.stem for p in found]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise MegaError(
            f"several inputs share the name(s) {', '.join(clashes)}; their results would collide in --out",
            hint="run them separately with different --out folders",
        )
    return found


def _cmd_infer(args: argparse.Namespace) -> int:
    from mega_runtime.commands.progress import ProgressBar
    from mega_runtime.commands.weights import download_progress_bar as DownloadBar
    from mega_runtime.io.detection import detection_settings, read_boxes_file
    from mega_runtime.io.result import OutputExistsError, result_paths
    from mega_runtime.pipeline.media import FrameRange, check_frame_range, check_image_file, is_video

    inputs = expand_inputs(args.inputs)
    boxes = parse_boxes(args.boxes) if args.boxes else None  # checked before the model loads (and read again)
    if args.boxes_file:
        read_boxes_file(args.boxes_file)
    detection_settings(args.detector, args.detect_threshold, args.min_height, args.max_people)
    frames = FrameRange.parse(args.frames) if args.frames else None
    temporal = temporal_config(args)  # checked before anything is loaded
    out_dir = Path(args.out)
    check_output_folder(out_dir, "--out")
    plans = []
    failed = 0
    for path in inputs:
        try:  # checked before the model loads: a bad input is reported, the others still run
            if is_video(path):
                check_frame_range(path, frames)
            else:
                check_image_file(path)
        except MegaError as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        json_path, npz_path = result_paths(out_dir / path.stem)
        targets = [json_path, npz_path]
        if args.preview and is_video(path):
            targets += [out_dir / f"{path.stem}.preview.mp4", out_dir / f"{path.stem}.contact.png"]
        elif args.preview:
            targets += [out_dir / f"{path.stem}.preview.png", out_dir / f"{path.stem}.uncertainty.png"]
        existing = [str(t) for t in targets if t.exists()]
        if existing and not args.overwrite:
            raise OutputExistsError(
                f"not overwriting existing file(s): {', '.join(existing)}", hint="choose another --out, or --overwrite"
            )
        plans.append((path, targets))
    if not plans:
        print(f"{failed} of {len(inputs)} input(s) failed", file=sys.stderr)
        return EXIT_USAGE

    pipeline = load_pipeline(args, progress=DownloadBar(sys.stderr))
    frames_bar = ProgressBar(sys.stderr, verb="frames of")
    out_dir.mkdir(parents=True, exist_ok=True)
    interrupted = threading.Event()
    previous = _catch_first_interrupt(interrupted)
    try:
        for path, targets in plans:
            if interrupted.is_set():
                break
            try:
                _infer_one(args, pipeline, path, targets, frames, boxes, temporal, frames_bar, interrupted)
            except MegaError as exc:
                failed += 1
                print(f"error: {path}: {exc}", file=sys.stderr)
            except OSError as exc:
                failed += 1
                print(f"error: {path}: {exc.strerror or exc} ({exc.filename or out_dir})", file=sys.stderr)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        print("interrupted: the frames finished so far were kept; the remaining inputs were not run", file=sys.stderr)
        return EXIT_INTERRUPTED
    if failed:
        print(f"{failed} of {len(inputs)} input(s) failed", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _catch_first_interrupt(flag: threading.Event):
    """On the main thread: the first Ctrl-C sets ``flag`` (the running video stops after its frame and keeps what
    it has); a second one interrupts at once. Returns the previous handler, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)

    def first(signum, frame) -> None:
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("interrupted: stopping after this frame (press Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, first)
    return previous


def _infer_one(args, pipeline, path: Path, targets, frames, boxes, temporal, frames_bar, interrupted) -> None:
    """One input → its result pair (and previews); raises MegaError or OSError for this input only.

    ``frames``, ``boxes`` and ``temporal`` were checked from ``args`` before the model loaded; :func:`reconstruct`
    reads them from ``args`` again."""
    from mega_runtime.io.result import write_result
    from mega_runtime.pipeline.media import is_video

    out_dir = Path(args.out)
    result, image = reconstruct(
        args,
        pipeline,
        path,
        frame_progress=lambda done, total, name=path.name: frames_bar(name, done, total),
        should_stop=interrupted.is_set,
    )
    if is_video(path):
        frames_bar.close()
        if interrupted.is_set() and result.num_frames == 0:
            return
    write_result(result, out_dir / path.stem, overwrite=args.overwrite, compact=args.compact)
    line = f"{path.name}: {result.num_people} people, {result.num_frames} frame(s), "
    print(line + f"{result.num_hypotheses} hypotheses → {targets[0]}")
    for warning in result.meta.get("warnings", []):
        print(f"  warning: {warning}")
    if args.preview and image is not None:
        from mega_runtime.io.preview import write_preview, write_uncertainty_preview

        write_preview(result, image, targets[2])
        write_uncertainty_preview(result, image, targets[3])
        print(f"  preview: {targets[2]}, {targets[3]}")
    elif args.preview and result.num_frames > 0:
        _video_previews(result, path, frames, targets[2], targets[3])


def _video_previews(result, path: Path, frames, clip: Path, sheet: Path) -> None:
    """The preview clip and the contact sheet of a video's result (boxes, track IDs, provenance, meshes)."""
    from mega_runtime.io.preview import write_contact_sheet, write_video_preview
    from mega_runtime.pipeline.media import iter_frames

    fps = float(result.meta["source"].get("fps") or 25.0) / max(1, frames.step if frames else 1)
    _, written = write_video_preview(result, iter_frames(path, frames), clip, fps)
    write_contact_sheet(result, iter_frames(path, frames), sheet)
    print(f"  preview: {clip} ({written} frames), {sheet}")


def add_infer_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``infer`` on the CLI's sub-parsers (``batch`` takes its options from it)."""
    p = sub.add_parser(
        "infer",
        help="reconstruct the people in photos/videos into result files",
        description="Find the people in each photo or video (or folder of them), run MEGA and write "
        "<out>/<name>.json + <name>.npz (docs/result-format.md). Weights come from --checkpoint-dir/--assets-dir, "
        "$MEGA_CHECKPOINTS_DIR/$MEGA_ASSETS_DIR, or the cache (downloaded on first use). Exit codes: 0 done; "
        "2 usage error, missing weights, or an input that failed (the others are still processed).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos or folders")
    common_options(p)
    p.add_argument(
        "--model", default=defaults.DEFAULT_MODEL, help=f"{', '.join(defaults.MODEL_SHORT_NAMES)} (default %(default)s)"
    )
    p.add_argument(
        "--hypotheses",
        type=bounded_int(1, defaults.MAX_HYPOTHESES),
        default=defaults.NUM_HYPOTHESES,
        help="hypotheses per person, incl. the most likely (default %(default)s)",
    )
    sampling_options(p, defaults.SAMPLING_STEPS, defaults.SAMPLING_TEMPERATURE, "initial sampling temperature")
    p.add_argument(
        "--precision",
        choices=defaults.PRECISIONS,
        default=defaults.PRECISION,
        help="fp32 (exact), bf16, int8 (CPU) or auto (fastest native); default %(default)s (docs/benchmarks.md)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="fast kernels: the backbone compiled with BatchNorm folded (on the CPU ahead of time: the first run on "
        "a machine builds it for a minute or more, later runs load it), oneDNN products for the token transformers "
        "on x86-64 CPUs, CUDA graphs on a GPU",
    )
    p.add_argument(
        "--score-steps",
        type=bounded_int(1, defaults.MAX_SCORE_STEPS),
        default=defaults.SCORE_STEPS,
        help="blocks of the hypothesis scorer: k costs k−1 model passes; 1 scores from the first pass for free "
        "(default %(default)s; docs/runtime-core.md)",
    )
    p.add_argument(
        "--sampler",
        choices=defaults.SAMPLERS,
        default=defaults.SAMPLER,
        help="official = bit-exact official generate() (numpy RNG, one token left at code 0)",
    )
    p.add_argument(
        "--batch-size",
        type=bounded_int(1, defaults.MAX_BATCH_SIZE),
        default=defaults.BATCH_SIZE,
        help="crops per network batch",
    )
    add_detection_options(p)
    p.add_argument("--yolo-weights", type=Path, help="YOLOv8 weights for --detector yolo (needs ultralytics)")
    p.add_argument(
        "--boxes",
        help="person boxes instead of the detector: x1,y1,x2,y2;x1,y1,x2,y2 (pixels); for a video, the same "
        "fixed boxes in every frame",
    )
    p.add_argument(
        "--boxes-file",
        type=Path,
        metavar="JSON",
        help='boxes per frame: {"<frame>": [[x1,y1,x2,y2], ...]} (source frame numbers from 0, pixels); listed '
        "frames use these boxes (a photo is frame 0), the others --boxes or the detector",
    )
    p.add_argument(
        "--boxes-mode",
        choices=defaults.BOXES_MODES,
        default=defaults.BOXES_MODE,
        help="replace: frames with given boxes reconstruct only them; add: the detector runs too and keeps the "
        "people the given boxes do not cover (default %(default)s)",
    )
    p.add_argument("--frames", metavar="START:END:STEP", help="video frame range (default: all)")
    p.add_argument(
        "--no-stitch",
        dest="stitch",
        action="store_false",
        default=defaults.STITCH,
        help="videos: keep the tracker's online IDs (default: merge fragments of one person after the pass)",
    )
    p.add_argument(
        "--detect-every",
        type=bounded_int(1, defaults.MAX_DETECT_EVERY),
        default=defaults.DETECT_EVERY,
        metavar="K",
        help="videos: run the person detector on every K-th processed frame, following the boxes by optical flow in "
        "between (faster; people entering are found up to K-1 frames late; docs/video.md) (default %(default)s)",
    )
    p.add_argument(
        "--path",
        choices=defaults.TEMPORAL_PATHS,
        default=defaults.TEMPORAL_PATH,
        help="videos: per-frame hypothesis to animate — zero (the deterministic decode) or coherent (dynamic "
        "programming over frames × hypotheses for smooth, likely motion); stored as the result's 'path'",
    )
    p.add_argument(
        "--path-smoothness",
        type=bounded_float(0.0),
        default=defaults.PATH_SMOOTHNESS_WEIGHT,
        metavar="W",
        help="weight of smoothness vs likelihood in --path coherent, nats per (m/s)² of vertex speed (%(default)s)",
    )
    p.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        default=defaults.SMOOTH,
        help="videos: One-Euro smoothing of the chosen bodies (default: %(default)s)",
    )
    p.add_argument(
        "--one-euro-min-cutoff",
        type=bounded_float(0.0, above=True),
        default=defaults.ONE_EURO_MIN_CUTOFF_HZ,
        metavar="HZ",
        help="One-Euro cut-off at rest, Hz (%(default)s)",
    )
    p.add_argument(
        "--one-euro-beta",
        type=bounded_float(0.0),
        default=defaults.ONE_EURO_BETA,
        metavar="B",
        help="One-Euro speed coefficient, Hz per m/s (%(default)s)",
    )
    p.add_argument(
        "--one-euro-d-cutoff",
        type=bounded_float(0.0, above=True),
        default=defaults.ONE_EURO_D_CUTOFF_HZ,
        metavar="HZ",
        help="One-Euro cut-off of the speed, Hz (%(default)s)",
    )
    p.add_argument(
        "--one-euro-causal",
        action=argparse.BooleanOptionalAction,
        default=defaults.ONE_EURO_CAUSAL,
        help="forward-only One-Euro, as a live view would filter (lags moving bodies); off: forwards and "
        "backwards averaged, no lag (default: %(default)s)",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="write result format 2: meshes as a per-person basis plus millimetre fixes, ~20× smaller for "
        "videos, every vertex within 1 mm (docs/result-format.md)",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write <name>.preview.png (meshes over the photo) and <name>.uncertainty.png (per-vertex spread "
        "as a heat map); for a video <name>.preview.mp4 (boxes, track IDs and meshes per frame) and "
        "<name>.contact.png (12 of its frames)",
    )
    p.set_defaults(func=_cmd_infer)
