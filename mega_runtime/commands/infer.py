"""``mega-runtime infer`` and ``mega-runtime generate`` (torch-free at import).

infer: photos, videos or folders of them → one result pair per input in ``--out``
(``<stem>.json`` + ``<stem>.npz``, docs/result-format.md), optional previews. Each input is
handled on its own: a bad input is reported (problem and fix) and skipped, the others are still
processed, and nothing partial is left for it. Exit codes: 0 every input done; 2 a usage or
input error, or at least one input failed (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from mega_runtime import defaults
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
MODEL_NAMES = defaults.MODEL_SHORT_NAMES
IMAGE_SUFFIXES = defaults.IMAGE_SUFFIXES


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low … high``; anything else is refused with the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use {low} … {high}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {low} … {high}")
        return value

    return parse


def bounded_float(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number ``>= low`` (``> low`` with ``above``) and ``<= high``; NaN and inf refused."""
    limits = f"{'more than' if above else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use a finite number {limits}") from None
        too_low = value <= low if above else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a finite number {limits}")
        return value

    return parse


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


def check_output_folder(folder: Path, option: str) -> None:
    """Refuse, before any model loads, an output folder that is a file or cannot be written (a probe file is
    created and removed, so read-only mounts are caught even for root)."""
    if folder.exists() and not folder.is_dir():
        raise MegaError(f"{option} {folder} is an existing file, not a folder", hint=f"give {option} a folder path")
    probe_in = folder
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise MegaError(f"{option} {folder} lies under the file {probe_in}", hint=f"give {option} a folder path")
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=probe_in):
            pass
    except OSError as exc:
        raise MegaError(
            f"{option} {folder} cannot be written ({exc.strerror or exc})",
            hint=f"choose a writable {option} folder",
        ) from exc


def _model_name(value: str) -> str:
    return MODEL_NAMES.get(value, value)


def _sampling(args: argparse.Namespace):
    from mega_runtime.decoding.schedule import SamplingConfig

    try:
        return SamplingConfig(steps=args.steps, temperature=args.temperature)
    except ValueError as exc:
        raise MegaError(str(exc), hint="see mega-runtime infer --help") from exc


def _temporal(args: argparse.Namespace):
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
    temporal = _temporal(args)  # checked before anything is loaded
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
        temporal = _temporal(args)
        if temporal is not None and result.num_frames > 0:
            from mega_runtime.pipeline.temporal import apply_temporal

            result = apply_temporal(result, temporal)
        return result, None
    image = read_image(path)
    given = frame_boxes[0] if frame_boxes is not None and 0 in frame_boxes else boxes
    result = pipeline.run_image(image, given, {"path": str(Path(path).resolve())}, boxes_mode=args.boxes_mode)
    return result, image


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


def _cmd_generate(args: argparse.Namespace) -> int:
    from mega_runtime.io.result import result_paths, write_result
    from mega_runtime.pipeline.generate import generate_bodies

    name = args.name
    if not name or Path(name).name != name or name in (".", ".."):
        raise MegaError(f"--name {name!r} is not a plain file name", hint="use a name without folders, e.g. bodies")
    check_output_folder(Path(args.out), "--out")
    out = Path(args.out) / name
    result = generate_bodies(
        args.count,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        assets_dir=args.assets_dir,
        device=args.device,
        steps=args.steps,
        temperature=args.temperature,
        stack=args.stack,
    )
    json_path, _ = result_paths(out)
    write_result(result, out, overwrite=args.overwrite)
    print(f"{args.count} generated bodies → {json_path}")
    return EXIT_OK


def _cmd_complete(args: argparse.Namespace) -> int:
    from mega_runtime.io.result import read_result, result_paths, write_result
    from mega_runtime.pipeline.complete import CompletionRequest, complete_person, keep_vertices
    from mega_runtime.weights import resolve_assets_dir

    source_json, _ = result_paths(args.result)
    name = args.name or f"{source_json.name.removesuffix('.json')}.completed"
    if Path(name).name != name or name in (".", ".."):
        raise MegaError(f"--name {name!r} is not a plain file name", hint="use a name without folders")
    check_output_folder(Path(args.out), "--out")
    source = read_result(args.result)
    assets = resolve_assets_dir(args.assets_dir)
    request = CompletionRequest(
        person=args.person,
        hypothesis=args.hypothesis,
        keep=keep_vertices(args.keep, assets),
        count=args.count,
        seed=args.seed,
        coverage=args.coverage,
        pin=args.pin,
        falloff_m=args.falloff,
        use_image=args.use_image,
    )
    result = complete_person(source, request, args.checkpoint_dir, assets, args.device)
    out = Path(args.out) / name
    json_path, _ = result_paths(out)
    write_result(result, out, overwrite=args.overwrite)
    print(f"{args.count} completed hypotheses → {json_path}")
    return EXIT_OK


def _sampling_options(p: argparse.ArgumentParser, steps: int, temperature: float, temperature_help: str) -> None:
    """``--steps`` and ``--temperature``, range-checked, with the command's own official defaults."""
    p.add_argument(
        "--steps",
        type=bounded_int(1, defaults.MAX_SAMPLING_STEPS),
        default=steps,
        help="sampling steps (official %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=bounded_float(0.0, defaults.MAX_SAMPLING_TEMPERATURE),
        default=temperature,
        help=f"{temperature_help} (official %(default)s)",
    )


def add_detection_options(p: argparse.ArgumentParser) -> None:
    """``--detector``, ``--detect-threshold``, ``--min-height`` and ``--max-people`` (infer and serve)."""
    p.add_argument(
        "--detector",
        default=defaults.DETECTOR,
        choices=defaults.DETECTOR_CHOICES,
        help="person detector (default %(default)s)",
    )
    p.add_argument(
        "--detect-threshold",
        type=bounded_float(0.0, 1.0),
        default=defaults.DETECTOR_CONF,
        metavar="SCORE",
        help="minimum detector score of a person, 0…1; lower finds more people and more false ones (%(default)s)",
    )
    p.add_argument(
        "--min-height",
        type=bounded_float(0.0, defaults.MAX_DETECTOR_MIN_HEIGHT_PX),
        default=defaults.DETECTOR_MIN_HEIGHT_PX,
        metavar="PX",
        help="ignore detected people whose box is less tall than this, pixels (%(default)s: any size)",
    )
    p.add_argument(
        "--max-people",
        type=bounded_int(1, defaults.MAX_DETECTOR_PEOPLE),
        default=defaults.DETECTOR_MAX_PEOPLE,
        metavar="N",
        help="keep at most N detected people per frame, best scores first (default: all)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the result pairs")
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="folder laid out like the official checkpoints "
        "(an optional config.json there gives non-standard model sizes); default $MEGA_CHECKPOINTS_DIR "
        "or the download cache",
    )
    p.add_argument(
        "--assets-dir",
        type=Path,
        metavar="DIR",
        help="folder with template.ply and connection_matrices/ (default $MEGA_ASSETS_DIR or the download cache)",
    )
    p.add_argument(
        "--seed",
        type=bounded_int(0, defaults.MAX_SEED),
        default=defaults.SEED,
        help="seed of the sampler (default %(default)s)",
    )
    p.add_argument("--device", default=defaults.DEVICE, help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def add_infer_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``infer`` and ``generate`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "infer",
        help="reconstruct the people in photos/videos into result files",
        description="Find the people in each photo or video (or folder of them), run MEGA and write "
        "<out>/<name>.json + <name>.npz (docs/result-format.md). Weights come from --checkpoint-dir/--assets-dir, "
        "$MEGA_CHECKPOINTS_DIR/$MEGA_ASSETS_DIR, or the cache (downloaded on first use). Exit codes: 0 done; "
        "2 usage error, missing weights, or an input that failed (the others are still processed).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos or folders")
    _common(p)
    p.add_argument(
        "--model", default=defaults.DEFAULT_MODEL, help=f"{', '.join(defaults.MODEL_SHORT_NAMES)} (default %(default)s)"
    )
    p.add_argument(
        "--hypotheses",
        type=bounded_int(1, defaults.MAX_HYPOTHESES),
        default=defaults.NUM_HYPOTHESES,
        help="hypotheses per person, incl. the most likely (default %(default)s)",
    )
    _sampling_options(p, defaults.SAMPLING_STEPS, defaults.SAMPLING_TEMPERATURE, "initial sampling temperature")
    p.add_argument(
        "--precision",
        choices=defaults.PRECISIONS,
        default=defaults.PRECISION,
        help="fp32 (exact), bf16, int8 (CPU) or auto (fastest native); default %(default)s (docs/benchmarks.md)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the backbone (BatchNorm folded) and the token transformers (cached across runs; the "
        "first run compiles for minutes)",
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

    p = sub.add_parser(
        "generate",
        help="make bodies with no image (pre-trained unconditional model)",
        description="Sample bodies from MEGA's pre-trained model (official: 20 steps, temperature 1.3) and write "
        "them as one result pair, standing side by side 1 m apart, 3 m in front of a nominal camera.",
    )
    p.add_argument(
        "--count",
        type=bounded_int(1, defaults.MAX_GENERATE_COUNT),
        default=defaults.GENERATE_COUNT,
        help="number of bodies (default %(default)s)",
    )
    p.add_argument("--name", default="generated", help="result name in --out (default 'generated')")
    p.add_argument(
        "--stack",
        action="store_true",
        help="write the bodies as the hypotheses of one person (most likely first) instead of side by side",
    )
    _sampling_options(p, defaults.GENERATE_STEPS, defaults.GENERATE_TEMPERATURE, "sampling temperature")
    _common(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "complete",
        help="keep a body region of one person's hypothesis, resample the rest",
        description="Keep the Mesh-VQ-VAE tokens that own a region of one hypothesis of one person and resample "
        "the other tokens (with the source image when the result has one): a new result pair with the new "
        "hypotheses (docs/completion.md).",
    )
    p.add_argument("result", metavar="RESULT.json", help="a result pair (either file, or the common stem)")
    p.add_argument("--person", type=bounded_int(0, 1_000_000), default=0, help="person index (default 0)")
    p.add_argument("--hypothesis", type=bounded_int(0, 1_000_000), default=0, help="hypothesis index (default 0)")
    p.add_argument(
        "--keep",
        required=True,
        metavar="REGION|VERTEX_FILE",
        help="a region (head, torso, left_arm, ..., hands, feet) or a text file of vertex indices",
    )
    p.add_argument(
        "--count",
        type=bounded_int(1, defaults.MAX_HYPOTHESES),
        default=defaults.COMPLETION_COUNT,
        help="number of new hypotheses (default %(default)s)",
    )
    p.add_argument(
        "--coverage",
        type=bounded_float(0.0, 1.0, above=True),
        default=defaults.COMPLETION_COVERAGE,
        help="share of the kept vertices' token influence the kept tokens give (default %(default)s)",
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        default=defaults.COMPLETION_PIN,
        help="keep the decoded kept region as it comes (default: pin it to the source hypothesis)",
    )
    p.add_argument(
        "--no-image",
        dest="use_image",
        action="store_false",
        help="resample with the pre-trained model, without the photo (default: with it when it is on disk)",
    )
    p.add_argument(
        "--falloff",
        type=bounded_float(0.0, 10.0),
        default=defaults.COMPLETION_FALLOFF_M,
        metavar="METRES",
        help="band along the surface over which the pinned region blends into the new body (default %(default)s)",
    )
    p.add_argument("--name", help="result name in --out (default <source name>.completed)")
    _common(p)
    p.set_defaults(func=_cmd_complete)
