"""Command line of the runtime: ``mega-runtime`` / ``python -m mega_runtime``.

Start-up imports no torch: sub-commands import what they need when they run,
so ``--help`` is instant. Exit codes: 0 success, 1 a check failed,
2 a usage or input error (the message names the problem and the fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mega_runtime import __version__
from mega_runtime.errors import MegaError

log = logging.getLogger("mega_runtime")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _cmd_verify(args: argparse.Namespace) -> int:
    from mega_runtime.verify import verify

    folders = [Path(p) for p in args.fixtures]
    skipped = [p for p in folders if not p.is_dir()]
    for path in skipped:
        if path.exists():
            print(f"{path}: not a fixture folder, skipped")
        else:
            raise MegaError(f"fixture folder {path} does not exist", hint="pass folders such as ../shared/fixtures/*")
    counts = {"passed": 0, "failed": 0, "not-verified": 0}
    for report in verify([p for p in folders if p.is_dir()], args.write_checkpoints, args.assets_dir):
        print(f"{report.name} ({report.kind})")
        width = max((len(c.name) for c in report.checks), default=0)
        for check in report.checks:
            print(f"  {check.name:<{width}}  {'ok  ' if check.passed else 'FAIL'}  {check.detail}")
        if report.not_verified:
            print(f"  NOT VERIFIED: {report.not_verified}")
        print(f"  => {report.status}")
        sys.stdout.flush()
        counts[report.status] += 1
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['not-verified']} not verified")
    if args.write_checkpoints:
        print(f"checkpoints written to {args.write_checkpoints}")
    return EXIT_FAILED if counts["failed"] else EXIT_OK


def _parse_boxes(text: str) -> list[list[float]]:
    """'x1,y1,x2,y2;x1,y1,x2,y2' → list of boxes (pixels)."""
    try:
        boxes = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError as exc:
        raise MegaError(f"--boxes {text!r} is not a list of numbers", hint="use x1,y1,x2,y2;x1,y1,x2,y2") from exc
    if not boxes or any(len(b) != 4 for b in boxes):
        raise MegaError(f"--boxes {text!r} needs 4 numbers per box", hint="use x1,y1,x2,y2;x1,y1,x2,y2")
    return boxes


class _ProgressBar:
    """A one-line progress bar on stderr (the CLI's only progress display)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, *update) -> None:
        """(done, total) or (label, done, total); total may be None when unknown."""
        label, done, total = update if len(update) == 3 else (self.label, *update)
        if label != self.label:
            self.label = label
            sys.stderr.write("\n")
        if total:
            filled = int(30 * done / max(total, 1))
            bar = "#" * filled + "-" * (30 - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total}")
        else:
            sys.stderr.write(f"\r{self.label} {done}")
        if total and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from mega_runtime.media import FrameRange, is_video, read_image
    from mega_runtime.result import OutputExistsError, result_paths, write_result

    source = Path(args.input)
    if not source.is_file():
        raise MegaError(f"input {source} does not exist", hint="pass a photo or a video file")
    out = Path(args.out) if args.out else source.with_name(source.stem + ".mega")
    json_path, npz_path = result_paths(out)
    preview_path = out.with_name(out.name + ".preview.jpg")
    if not args.overwrite:
        existing = [str(p) for p in (json_path, npz_path, preview_path) if p.exists()]
        if existing:
            raise OutputExistsError(
                f"not overwriting existing file(s): {', '.join(existing)}",
                hint="choose another --out, or pass --overwrite",
            )
    video = is_video(source)
    boxes = _parse_boxes(args.boxes) if args.boxes else None
    if video and boxes is not None:
        raise MegaError("--boxes applies to photos only", hint="drop --boxes for a video")
    frames = FrameRange.parse(args.frames) if args.frames else None
    image = None if video else read_image(source)  # fail on an unreadable photo before loading the model

    from mega_runtime.detect import make_detector
    from mega_runtime.pipeline import Pipeline, PipelineConfig
    from mega_runtime.sampling import SamplingConfig

    config = PipelineConfig(
        model=args.model,
        num_hypotheses=args.hypotheses,
        sampling=SamplingConfig(steps=args.steps, temperature=args.temperature),
        sampler=args.sampler,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
    )
    options = {"weights": args.yolo_weights} if args.detector == "yolo" else {}
    detector = make_detector(args.detector, **options) if boxes is None else None
    pipeline = Pipeline.load(config, args.checkpoints, args.assets_dir, detector, progress=_ProgressBar("download"))
    if video:
        result = pipeline.run_video(source, frames or FrameRange(), progress=_ProgressBar("frames"))
    else:
        result = pipeline.run_image(image, boxes, {"path": str(source)})
    write_result(result, out, overwrite=args.overwrite)
    print(f"{result.num_people} people, {result.num_frames} frame(s), {result.num_hypotheses} hypotheses each")
    for warning in result.meta.get("warnings", []):
        print(f"warning: {warning}")
    print(f"result: {json_path} + {npz_path.name}")
    if image is not None and not args.no_preview:
        from mega_runtime.preview import write_preview

        write_preview(result, image, preview_path)
        print(f"preview: {preview_path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mega-runtime", description="MEGA human mesh recovery runtime")
    parser.add_argument("--version", action="version", version=f"mega-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "verify",
        help="check this runtime against reference outputs of the official code",
        description="Rebuild each fixture's seeded weights as official-format checkpoints, load them, run the "
        "stored inputs and compare every output with its tolerance. Exits 1 if any check fails.",
    )
    p.add_argument("fixtures", nargs="+", help="fixture folders (e.g. ../shared/fixtures/*)")
    p.add_argument(
        "--write-checkpoints",
        type=Path,
        metavar="DIR",
        help="also leave the built checkpoints in DIR, laid out like the official folder, with a config.json",
    )
    p.add_argument(
        "--assets-dir",
        type=Path,
        metavar="DIR",
        help="folder with template.ply and connection_matrices/ (default: $MEGA_ASSETS_DIR, else ../assets "
        "beside the fixtures)",
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "reconstruct",
        help="reconstruct the people in a photo or video into a result file pair (+ a preview)",
        description="Find the people, run MEGA and write <out>.json + <out>.npz (docs/result-format.md) and, "
        "for a photo, <out>.preview.jpg. Weights come from --checkpoints/--assets-dir, $MEGA_CHECKPOINTS_DIR/"
        "$MEGA_ASSETS_DIR, or the cache (downloaded on first use).",
    )
    p.add_argument("input", help="photo (any format OpenCV reads) or video file")
    p.add_argument("-o", "--out", help="output name without extension (default: <input>.mega beside the input)")
    p.add_argument("--checkpoints", type=Path, metavar="DIR", help="folder laid out like the official checkpoints")
    p.add_argument("--assets-dir", type=Path, metavar="DIR", help="folder with template.ply and connection_matrices/")
    p.add_argument("--model", default="mega_hrnet", choices=["mega_hrnet", "mega_resnet", "mega_vit"])
    p.add_argument("--hypotheses", type=int, default=8, help="hypotheses per person, incl. the deterministic one")
    p.add_argument("--steps", type=int, default=5, help="sampling steps (official: 5)")
    p.add_argument("--temperature", type=float, default=4.5, help="initial sampling temperature (official: 4.5)")
    p.add_argument("--sampler", choices=["full", "official"], default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps …")
    p.add_argument("--batch-size", type=int, default=16, help="crops per network batch")
    p.add_argument("--detector", default="default", choices=["default", "yolo"], help="person detector")
    p.add_argument("--yolo-weights", type=Path, help="YOLOv8 weights for --detector yolo (needs ultralytics)")
    p.add_argument("--boxes", help="person boxes instead of a detector: x1,y1,x2,y2;x1,y1,x2,y2 (pixels)")
    p.add_argument("--frames", help="video frame range START:STOP:STEP (default: all)")
    p.add_argument("--no-preview", action="store_true", help="do not write the preview image")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_reconstruct)

    from mega_runtime.weights import add_weights_commands

    add_weights_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except MegaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
