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

    from mega_runtime.cli_infer import add_infer_commands

    add_infer_commands(sub)

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
