"""Command line of the runtime: ``mega-runtime`` / ``python -m mega_runtime``.

Start-up imports no torch: sub-commands import what they need when they run,
so ``--help`` is instant. Exit codes: 0 success, 1 a check failed,
2 a usage or input error (the message names the problem and the fix).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mega_runtime import __version__, defaults
from mega_runtime.errors import MegaError

log = logging.getLogger("mega_runtime")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _cmd_verify(args: argparse.Namespace) -> int:
    from mega_runtime.verify.inference import verify

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


def _cmd_serve(args: argparse.Namespace) -> int:
    from mega_runtime.commands.serve import ServeConfig, serve
    from mega_runtime.io.detection import detection_settings

    if args.max_message_bytes < 1024 or args.max_inline_bytes < 1:
        raise MegaError("the message limits are too small", hint="use --max-message-bytes of at least 1024")
    if not math.isfinite(args.checkpoint_every_s) or args.checkpoint_every_s < 0:
        raise MegaError(
            f"--checkpoint-every-s must be a finite number of 0 or more, got {args.checkpoint_every_s}",
            hint="e.g. --checkpoint-every-s 10",
        )
    return serve(
        ServeConfig(
            checkpoint_dir=args.checkpoint_dir,
            assets_dir=args.assets_dir,
            work_dir=args.work_dir,
            device=args.device,
            precision=args.precision,
            detector=args.detector,
            detection=detection_settings(args.detector, args.detect_threshold, args.min_height, args.max_people),
            max_message_bytes=args.max_message_bytes,
            max_inline_bytes=args.max_inline_bytes,
            checkpoint_every_s=args.checkpoint_every_s,
            compile=args.compile,
        )
    )


def _add_serve_command(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="answer JSON-Lines requests on stdin/stdout (the Blender add-on's live link)",
        description="A persistent runtime: reads requests (hello, infer, cancel, shutdown) as JSON lines on stdin "
        "and answers on stdout, keeping models loaded between jobs; logs go to stderr. Opens no network port. "
        "Protocol: docs/protocol.md.",
    )
    p.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="checkpoints in the official layout")
    p.add_argument("--assets-dir", type=Path, metavar="DIR", help="template.ply and connection_matrices/")
    p.add_argument(
        "--work-dir", type=Path, metavar="DIR", help="where jobs without out_dir write (default: a temporary folder)"
    )
    p.add_argument("--device", default=defaults.DEVICE, help="default device: auto, cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--precision", choices=defaults.PRECISIONS, default=defaults.PRECISION, help="default precision of infer jobs"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="fast kernels for every model loaded (as infer --compile; each model's first job compiles)",
    )

    from mega_runtime.commands.options import add_detection_options

    add_detection_options(p)  # the server's settings; a request's 'detection' object overrides them
    p.add_argument("--max-message-bytes", type=int, default=defaults.MAX_MESSAGE_BYTES, help=argparse.SUPPRESS)
    p.add_argument("--max-inline-bytes", type=int, default=defaults.MAX_INLINE_BYTES, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint-every-s", type=float, default=defaults.CHECKPOINT_EVERY_S, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)


def _cmd_fit_smpl(args: argparse.Namespace) -> int:
    from mega_runtime.io.result import OutputExistsError, read_result, result_paths, write_result

    source_json, _ = result_paths(args.result)
    out = args.out or source_json.with_name(source_json.name[: -len(".json")] + ".smpl")
    existing = [str(p) for p in result_paths(out) if p.exists()]
    if existing:  # checked before the work; write_result checks again
        raise OutputExistsError(f"not overwriting existing file(s): {', '.join(existing)}", hint="choose another --out")
    result = read_result(args.result)  # checked before torch and the SMPL model load
    from mega_runtime.smpl.fit import fit_result
    from mega_runtime.smpl.model import load_smpl_model

    model = load_smpl_model(args.smpl_model)
    json_path, npz_path = write_result(fit_result(result, model, args.source), out)
    print(json_path)
    print(npz_path)
    return EXIT_OK


def _add_fit_smpl_command(sub: Any) -> None:
    p = sub.add_parser(
        "fit-smpl",
        help="fit SMPL shape and pose to a result's meshes (needs your own SMPL model file)",
        description="Fit one SMPL body shape per person and its joint rotations per frame to the meshes of a "
        "result, and write a new result pair with the smpl_* arrays (docs/smpl.md). Never overwrites.",
    )
    p.add_argument("result", type=Path, help="a result (.json of the pair)")
    p.add_argument(
        "--smpl-model", type=Path, required=True, metavar="PATH", help="SMPL model file (.pkl or .npz), not bundled"
    )
    p.add_argument("--out", type=Path, metavar="NAME", help="output result name (default: <result>.smpl)")
    p.add_argument(
        "--source",
        default="auto",
        choices=("auto", "smoothed", "path", "hypothesis0"),
        help="meshes to fit (default auto: smoothed_vertices, else the path's hypotheses, else hypothesis 0)",
    )
    p.set_defaults(func=_cmd_fit_smpl)


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

    from mega_runtime.commands.infer import add_infer_commands

    add_infer_commands(sub)

    from mega_runtime.commands.shaping import add_shaping_commands

    add_shaping_commands(sub)

    from mega_runtime.commands.weights import add_weights_commands

    add_weights_commands(sub)

    from mega_runtime.commands.batch import add_batch_command

    add_batch_command(sub)
    _add_serve_command(sub)
    _add_fit_smpl_command(sub)
    from mega_runtime.commands.evaluate import add_evaluate_commands

    add_evaluate_commands(sub)
    from mega_runtime.commands.train import add_train_command

    add_train_command(sub)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(
            "error: out of memory\n  fix: use fewer --hypotheses, a smaller --batch-size, or shorter inputs",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except OSError as exc:  # a file-system fault outside any one input: one line, never a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"error: {exc.strerror or exc}{where}\n  fix: check the paths, free space and permissions", file=sys.stderr
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
