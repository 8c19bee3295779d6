"""Headless batch: build result files into an empty scene and export or save it.

    blender -b --command mega import RESULT.json... --export OUT.(blend|fbx|glb|usd|usda|usdc|usdz|abc)
            [--report REPORT.json] [--frame N] [--hypothesis K] [--overwrite]
    python -m mega_blender.batch import RESULT.json... --export OUT.glb     (any Python that has ``bpy``)
    blender -b --command mega reconstruct PHOTO_OR_VIDEO... --export OUT.blend [--runtime CMD]
            [--checkpoint-dir DIR] [--model M] [--hypotheses H] [--frames START:STOP:STEP] [--results-dir DIR]
            [--detector NAME] [--detect-threshold SCORE] [--min-height PX] [--max-people N]
            [--boxes x1,y1,x2,y2;...] [--boxes-file JSON] [--boxes-mode replace|add]

The first form is registered by the add-on with ``bpy.utils.register_cli_command("mega", …)``; the second is
the same :func:`main`. Every result is read and checked first; then the scene is reset to an empty factory
startup file (add-ons stay enabled), each result is built (:func:`mega_blender.scene_build.build_result`), the
hypothesis ``K`` is selected on every person (default 0, the Basis) and the scene is exported. Each photo gets its
own scene (named after it, with its own camera and render size; see docs/blender-addon.md), so several different
sources can only be saved to ``.blend``. Outputs (and the
report) are never overwritten unless ``--overwrite`` is given.

A video result (more than one frame) is animated (:mod:`mega_blender.animation`): point caches go to
``<OUT stem> cache/`` beside the output (listed in the report); for FBX, glTF and USD, whose exporters ignore the
Mesh Cache modifier, what each person shows (``--hypothesis K``; 0 = the chosen path) is first baked into a shape
key per frame (keyed), and Alembic exports the evaluated mesh over the scene's frame range. ``--frame N`` builds
one frame instead.

``reconstruct`` first runs each photo or video through the runtime (started as the live link starts it: the
``--runtime`` command, else the add-on's preferences, else ``<this Python> -m mega_runtime``), writing the result
pairs into ``--results-dir`` (default ``<OUT stem> results/``), then imports and exports them as ``import`` does.

Exit status 0 on success; 1 with one line ``mega import: error: <reason>`` on stderr on failure; 2 for usage
errors. ``--report`` writes JSON: ``ok``, ``error``, ``results``, ``objects`` (names), ``files`` (written),
``warnings`` — also when the command fails after the report's path was checked.

What each format keeps, and how it is written: :mod:`mega_blender.exports` (the table in docs/blender-addon.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import bpy

from . import animation, exports
from . import runtime_defaults as defaults
from .result_reader import MegaResult, ResultFormatError, read_result, result_paths
from .scene_build import HYPOTHESIS_PROP, num_hypotheses, source_key

log = logging.getLogger(__name__)

PROG_BLENDER = "blender -b --command mega"
#: Longest wait for the runtime to exit after the batch (its stop escalates to kill within ~6 s).
RUNTIME_EXIT_WAIT_S = 15.0
PROG_PYTHON = "python -m mega_blender.batch"


class BatchError(Exception):
    """A batch run failed; the message is the one-line reason."""


def build_parser(prog: str = PROG_PYTHON) -> argparse.ArgumentParser:
    """The command line: ``import RESULT... --export OUT [--report FILE] [--frame N] [--hypothesis K]``."""
    parser = argparse.ArgumentParser(prog=prog, description="Build MEGA results into a scene and export it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("import", help="import result files and export or save the scene")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULT", help="result .json files (with their .npz)")
    p.add_argument(
        "--export",
        required=True,
        type=Path,
        metavar="OUT",
        help=f"output file; the format follows the suffix: {', '.join(exports.EXPORTERS)}",
    )
    p.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report (objects, files, warnings)")
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        help="build only this result frame (default: photos their frame, videos animated over all frames)",
    )
    p.add_argument(
        "--hypothesis",
        type=int,
        default=0,
        metavar="K",
        help="hypothesis to show on every person: 0 = Basis, k = key 'Hypothesis k' (default 0)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output and report files")

    r = commands.add_parser(
        "reconstruct",
        help="reconstruct photos or videos with the MEGA runtime, then import and export like 'import'",
        description="Runs the MEGA runtime (as the live link does), writes one result pair per input into "
        "--results-dir, then builds and exports them like the 'import' command (videos animated).",
    )
    r.add_argument("media", nargs="+", type=Path, metavar="MEDIA", help="photos or video files")
    r.add_argument("--export", required=True, type=Path, metavar="OUT", help="output file (as for 'import')")
    r.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report (objects, files, warnings)")
    r.add_argument("--results-dir", type=Path, metavar="DIR", help="where result pairs go (default: '<OUT> results')")
    r.add_argument(
        "--runtime",
        metavar="COMMAND",
        help="command that starts the runtime (default: the add-on's preferences, else this Python: "
        "'python -m mega_runtime')",
    )
    r.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="the runtime's checkpoint folder")
    r.add_argument(
        "--model",
        default=defaults.DEFAULT_MODEL,
        help=f"{', '.join(defaults.MODEL_SHORT_NAMES)} (default %(default)s)",
    )
    r.add_argument(
        "--hypotheses",
        type=int,
        default=defaults.NUM_HYPOTHESES,
        help="hypotheses per person incl. the deterministic one (default %(default)s)",
    )
    r.add_argument("--steps", type=int, help=f"sampling steps (default {defaults.SAMPLING_STEPS})")
    r.add_argument("--seed", type=int, default=defaults.SEED)
    r.add_argument("--device", default=defaults.DEVICE, help="auto, cpu, cuda, mps (default %(default)s)")
    r.add_argument("--precision", choices=defaults.PRECISIONS, default=defaults.PRECISION, help="default %(default)s")
    r.add_argument(
        "--score-steps",
        type=int,
        default=defaults.SCORE_STEPS,
        help=f"blocks of the hypothesis scorer, 1–{defaults.MAX_SCORE_STEPS}: 1 is free, coarser (default %(default)s)",
    )
    r.add_argument(
        "--compile",
        action="store_true",
        help="start the runtime with fast kernels (serve --compile; the first job of each model compiles)",
    )
    r.add_argument("--frames", metavar="START:STOP:STEP", help="video frame range (stop exclusive)")
    r.add_argument(
        "--detect-every",
        type=int,
        default=defaults.DETECT_EVERY,
        metavar="K",
        help="videos: run the person detector on every K-th frame, optical flow in between (default %(default)s)",
    )
    r.add_argument(
        "--path", choices=defaults.TEMPORAL_PATHS, default=defaults.TEMPORAL_PATH, help="videos: hypothesis path"
    )
    r.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        default=defaults.SMOOTH,
        help="videos: One-Euro smoothing of the bodies (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-min-cutoff",
        type=float,
        default=defaults.ONE_EURO_MIN_CUTOFF_HZ,
        help="One-Euro cut-off at rest, Hz (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-beta",
        type=float,
        default=defaults.ONE_EURO_BETA,
        help="One-Euro speed coefficient, Hz per m/s (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-d-cutoff",
        type=float,
        default=defaults.ONE_EURO_D_CUTOFF_HZ,
        help="One-Euro cut-off of the speed, Hz (default %(default)s)",
    )
    r.add_argument(
        "--one-euro-causal",
        action=argparse.BooleanOptionalAction,
        default=defaults.ONE_EURO_CAUSAL,
        help="forward-only One-Euro (lags moving bodies); off: forwards and backwards averaged (default %(default)s)",
    )
    r.add_argument(
        "--smpl-model", type=Path, metavar="PATH", help="your SMPL model file: also fit SMPL and build armatures"
    )
    r.add_argument("--detector", choices=defaults.DETECTOR_CHOICES, help="person detector (default: the runtime's)")
    r.add_argument("--detect-threshold", type=float, metavar="SCORE", help="minimum detector score of a person, 0…1")
    r.add_argument("--min-height", type=float, metavar="PX", help="ignore detected people less tall, pixels")
    r.add_argument("--max-people", type=int, metavar="N", help="keep at most N detected people per frame")
    r.add_argument(
        "--boxes", help="person boxes x1,y1,x2,y2;... (pixels): a photo's people, or fixed boxes in every video frame"
    )
    r.add_argument("--boxes-file", type=Path, metavar="JSON", help='boxes per frame: {"<frame>": [[x1,y1,x2,y2], ...]}')
    r.add_argument(
        "--boxes-mode",
        choices=defaults.BOXES_MODES,
        default=defaults.BOXES_MODE,
        help="replace the detector in frames with given boxes, or add to it (default %(default)s)",
    )
    r.add_argument("--hypothesis", type=int, default=0, metavar="K", help="hypothesis to show (default 0)")
    r.add_argument("--frame", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument("--overwrite", action="store_true", help="replace existing output and report files")
    return parser


def _frames(text: str | None) -> dict[str, int | None] | None:
    if not text:
        return None
    parts = [*text.split(":"), "", ""][:3]
    try:
        start, stop, step = (int(v) if v.strip() else None for v in parts)
    except ValueError as exc:
        raise BatchError(f"--frames {text!r} is not START:STOP:STEP (e.g. 0:300:2)") from exc
    start = 0 if start is None else start
    step = 1 if step is None else step
    if start < 0 or step < 1 or (stop is not None and stop <= start):
        raise BatchError(f"--frames {text!r} selects no frame: use START:STOP:STEP with 0 <= START < STOP, STEP >= 1")
    return {"start": start, "stop": stop, "step": step}


def detection_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol fields of the detection options (``detection``, ``boxes``, ``boxes_per_frame``,
    ``boxes_mode``), checked here so a mistake is one line before the runtime starts; the runtime checks again."""
    detection: dict[str, Any] = {}
    if args.detector is not None:
        detection["detector"] = args.detector
    if args.detect_threshold is not None:
        if not 0.0 <= args.detect_threshold <= 1.0:
            raise BatchError(f"--detect-threshold must be in 0…1, got {args.detect_threshold}")
        detection["conf"] = args.detect_threshold
    if args.min_height is not None:
        if not 0.0 <= args.min_height <= defaults.MAX_DETECTOR_MIN_HEIGHT_PX:
            raise BatchError(f"--min-height must be 0 or more pixels, got {args.min_height}")
        detection["min_height_px"] = args.min_height
    if args.max_people is not None:
        if not 1 <= args.max_people <= defaults.MAX_DETECTOR_PEOPLE:
            raise BatchError(f"--max-people must be 1 … {defaults.MAX_DETECTOR_PEOPLE}, got {args.max_people}")
        detection["max_people"] = args.max_people
    fields: dict[str, Any] = {"detection": detection} if detection else {}
    if args.boxes:
        try:
            boxes = [[float(v) for v in part.split(",")] for part in args.boxes.split(";") if part.strip()]
        except ValueError:
            boxes = []
        if not boxes or any(len(b) != 4 or b[2] <= b[0] or b[3] <= b[1] for b in boxes):
            raise BatchError(f"--boxes {args.boxes!r} is not x1,y1,x2,y2;... with x1 < x2 and y1 < y2")
        fields["boxes"] = boxes
    if args.boxes_file:
        try:
            per_frame = json.loads(args.boxes_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BatchError(f"--boxes-file {args.boxes_file}: {exc}") from exc
        if not isinstance(per_frame, dict):
            raise BatchError(f'--boxes-file {args.boxes_file} must hold {{"<frame>": [[x1, y1, x2, y2], ...]}}')
        fields["boxes_per_frame"] = per_frame
    if args.boxes or args.boxes_file or args.boxes_mode != defaults.BOXES_MODE:
        fields["boxes_mode"] = args.boxes_mode
    return fields


def _runtime_command(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(runtime command, ``serve`` arguments): ``--runtime``/``--checkpoint-dir`` over the add-on's preferences;
    ``--compile`` adds fast kernels whatever the preferences say."""
    import shlex

    serve_args = ["--checkpoint-dir", str(args.checkpoint_dir)] if args.checkpoint_dir else []
    if args.runtime:
        command = shlex.split(args.runtime)
    else:
        from . import jobs

        try:
            command, preferred_args, _ = jobs.link_settings(bpy.context)
        except ValueError:
            command = [sys.executable, "-m", "mega_runtime"]
        else:
            serve_args = serve_args or preferred_args
    if args.compile and "--compile" not in serve_args:
        serve_args = [*serve_args, "--compile"]
    return command, serve_args


def run_reconstruct(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The ``reconstruct`` command: each input through the runtime (blocking), then :func:`run_import`."""
    from .runtime_client import JobDone, JobFailed, Link, LinkError, Progress, RuntimeFailed

    _check_outputs(args)
    missing = [str(p) for p in args.media if not p.is_file()]
    if missing:
        raise BatchError(f"no such file: {', '.join(missing)}")
    if args.hypotheses < 1:
        raise BatchError(f"--hypotheses must be at least 1, got {args.hypotheses}")
    if not 1 <= args.score_steps <= defaults.MAX_SCORE_STEPS:
        raise BatchError(f"--score-steps must be between 1 and {defaults.MAX_SCORE_STEPS}, got {args.score_steps}")
    if not 1 <= args.detect_every <= defaults.MAX_DETECT_EVERY:
        raise BatchError(
            f"--detect-every must be between 1 and {defaults.MAX_DETECT_EVERY} frames, got {args.detect_every}"
        )
    results_dir = (args.results_dir or args.export.parent / f"{args.export.stem} results").resolve()
    options: dict[str, Any] = {"model": args.model, "hypotheses": args.hypotheses, "seed": args.seed}
    options["device"] = args.device
    options["precision"] = args.precision
    options["score_steps"] = args.score_steps
    options["detect_every"] = args.detect_every
    if args.steps:
        options["steps"] = args.steps
    frames = _frames(args.frames)
    if frames:
        options["frames"] = frames
    if args.smpl_model:
        options["smpl_model"] = str(args.smpl_model.resolve())
    options.update(detection_fields(args))
    if args.path != "zero" or args.smooth:
        options["temporal"] = {
            "path": args.path,
            "smooth": args.smooth,
            "min_cutoff": args.one_euro_min_cutoff,
            "beta": args.one_euro_beta,
            "d_cutoff": args.one_euro_d_cutoff,
            "causal": args.one_euro_causal,
        }
    command, serve_args = _runtime_command(args)
    link = Link(command, serve_args)
    results: list[Path] = []
    try:
        link.start()
        for media in args.media:
            link.submit(media, results_dir, options=options)
            outcome: Any = None
            while outcome is None:
                for event in link.pump(wait_s=0.5):
                    if isinstance(event, Progress) and event.total:
                        log.info("%s: %s %d/%d", media.name, event.stage, event.done, event.total)
                    elif isinstance(event, JobDone | JobFailed | RuntimeFailed):
                        outcome = event
            if isinstance(outcome, RuntimeFailed):
                tail = f" (runtime stderr: {outcome.stderr.splitlines()[-1]})" if outcome.stderr else ""
                raise BatchError(f"{outcome.reason}{tail}")
            if isinstance(outcome, JobFailed):
                raise BatchError(f"{media}: {outcome.sentence}")
            results.append(outcome.json_path)
            report["files"].extend([str(outcome.json_path), str(outcome.npz_path)])
            report["warnings"].extend(outcome.warnings)
    except LinkError as exc:
        raise BatchError(str(exc)) from exc
    finally:
        link.stop()  # shutdown, then terminate and kill if need be (a few seconds at most) …
        link.wait_stopped(RUNTIME_EXIT_WAIT_S)  # … waited for here: a headless batch leaves no runtime behind
    args.results = results
    run_import(args, report)


def _check_outputs(args: argparse.Namespace) -> None:
    suffix = args.export.suffix.lower()
    if suffix not in exports.EXPORTERS:
        raise BatchError(
            f"cannot export to '{args.export.suffix or args.export.name}': use one of {', '.join(exports.EXPORTERS)}"
        )
    if args.hypothesis < 0:
        raise BatchError(f"--hypothesis must be 0 or more, got {args.hypothesis}")
    _check_collisions(args)
    if not args.overwrite:
        for path in (args.export, args.report):
            if path is not None and path.exists():
                raise BatchError(f"{path} already exists; choose another name or pass --overwrite")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same path, or two links to one existing file)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _report_collides(args: argparse.Namespace) -> bool:
    """Whether ``--report`` names the export or one of the inputs (then it is never written)."""
    try:
        _check_collisions(args)
    except BatchError:
        return True
    return False


def _check_collisions(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that would write over another output or over an input."""
    inputs: list[tuple[str, Path]] = []
    for result in getattr(args, "results", None) or []:
        json_path, npz_path = result_paths(result)
        inputs += [("the result", json_path), ("the result", npz_path)]
    for media in getattr(args, "media", None) or []:
        inputs.append(("the input", media))
    outputs = [("--export", args.export)] + ([("--report", args.report)] if args.report is not None else [])
    if args.report is not None and _same_file(args.report, args.export):
        raise BatchError(
            f"--report and --export name the same file {args.export}; give the report its own name, "
            "e.g. --report report.json"
        )
    for option, out in outputs:
        for what, source in inputs:
            if _same_file(out, source):
                raise BatchError(f"{option} {out} is {what} being read; choose another {option} path")


def _reset_scene() -> bpy.types.Context:
    """An empty factory-startup scene; enabled add-ons stay enabled (unlike ``read_factory_settings``)."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    return bpy.context


def run_import(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Do the ``import`` command, filling ``report``; raises :class:`BatchError` on failure."""
    _check_outputs(args)
    results: list[MegaResult] = []
    for path in args.results:
        try:
            results.append(read_result(path))
        except ResultFormatError as exc:
            raise BatchError(str(exc)) from exc
    sources = {source_key(r) for r in results}
    if len(sources) > 1 and args.export.suffix.lower() != ".blend":
        raise BatchError(
            f"{len(sources)} different photos or videos make one scene each, and {args.export.suffix} holds one "
            "scene: export to .blend, or run once per photo"
        )
    context = _reset_scene()
    cache_dir = args.export.parent / f"{args.export.stem} cache"
    for result in results:
        try:
            built = animation.build(context, result, frame=args.frame, cache_dir=cache_dir)
        except ResultFormatError as exc:
            raise BatchError(str(exc)) from exc
        report["results"].append(str(result.path))
        report["objects"].extend(obj.name for obj in built.objects)
        report["warnings"].extend(built.warnings)
        for person in built.people:
            count = num_hypotheses(person)
            if args.hypothesis >= count:
                report["warnings"].append(
                    f"{person.name} has {count} hypotheses; showing {count - 1} instead of {args.hypothesis}"
                )
            person[HYPOTHESIS_PROP] = min(args.hypothesis, count - 1)
    if context.view_layer is not None:
        context.view_layer.update()
    args.export.parent.mkdir(parents=True, exist_ok=True)
    if args.export.suffix.lower() in exports.BAKED_FORMATS:
        for person in exports.animated_people():  # these exporters ignore the Mesh Cache modifier
            animation.bake_path_to_shape_keys(person)
    if any(animation.is_animated(p) for p in exports.animated_people()):
        report["files"].extend(str(p) for p in sorted(cache_dir.glob("*")) if p.is_file())
    scene = context.scene
    frame = scene.frame_current if scene is not None else 1
    try:
        exports.EXPORTERS[args.export.suffix.lower()](args.export, frame)
    except RuntimeError as exc:
        raise BatchError(f"exporting {args.export} failed: {str(exc).strip().splitlines()[-1]}") from exc
    if not args.export.is_file():
        raise BatchError(f"the exporter wrote no file at {args.export}")
    report["files"].append(str(args.export))


def _write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None, prog: str = PROG_PYTHON) -> int:
    """Run the batch command line ``argv`` (without the program name); returns the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    except SystemExit as exc:  # --help (0) or a usage error (2); argparse printed the message
        return exc.code if isinstance(exc.code, int) else 2
    report: dict[str, Any] = {"ok": False, "error": None, "results": [], "objects": [], "files": [], "warnings": []}
    code = 0
    report_safe = (
        args.report is not None and not _report_collides(args) and (args.overwrite or not args.report.exists())
    )
    try:
        _check_outputs(args)  # before any work
        if args.command == "reconstruct":
            run_reconstruct(args, report)
        else:
            run_import(args, report)
        report["ok"] = True
    except (BatchError, exports.ExportError, OSError, MemoryError) as exc:
        report["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError):
            report["error"] = "out of memory; import fewer or shorter results at once"
        print(f"mega {args.command}: error: {report['error']}", file=sys.stderr)
        code = 1
    for message in report["warnings"]:
        print(f"mega {args.command}: warning: {message}", file=sys.stderr)
    if report_safe:  # never over the export or an input, never over a file that was there without --overwrite
        try:
            _write_report(args.report, report)
        except OSError as exc:
            print(f"mega {args.command}: error: cannot write the report {args.report}: {exc}", file=sys.stderr)
            return 1
        report["files"].append(str(args.report))
    if code == 0:
        print(f"mega {args.command}: wrote {', '.join(report['files'])} ({len(report['objects'])} objects)")
    return code


def cli_command(argv: list[str]) -> int:
    """Entry point for ``blender --command mega …`` (registered by the add-on)."""
    return main(argv, prog=PROG_BLENDER)


def run_as_script(argv: list[str] | None = None) -> NoReturn:
    """``python -m mega_blender.batch …``: run :func:`main`, then end the process at once with its status.

    The ``bpy`` module can deadlock at interpreter exit: after a video result, its movie reader's delayed-close
    thread waits on a condition variable that a static destructor then destroys, and ``exit()`` never returns
    (bpy 4.5; seen with every export format). Every file is written and closed by the time :func:`main` returns,
    so the streams are flushed and the process leaves through ``os._exit``, skipping those destructors. Inside
    Blender (``blender -b --command mega``) Blender's own shutdown stops that thread, and this is not used.
    """
    code = main(argv)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_as_script()
