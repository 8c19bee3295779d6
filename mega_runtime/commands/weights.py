"""The command line: ``mega-runtime weights list|fetch|verify``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from mega_runtime.commands.progress import ProgressBar
from mega_runtime.weights.downloads import human_size, present_and_valid
from mega_runtime.weights.registry import (
    CHECKPOINTS,
    DEFAULT_MODELS,
    ENV_ASSETS_DIR,
    ENV_CHECKPOINTS_DIR,
    ENV_HOME,
    ENV_YOLOX_DIR,
    FETCH_COMMAND,
    MESHCONV_COMMIT,
    YOLOX_FILE,
    ZENODO_RECORD_ID,
    cache_assets_dir,
    cache_checkpoints_dir,
    cache_detector_dir,
    local_folder,
)
from mega_runtime.weights.resolve import (
    fetch_detector_models,
    resolve_assets_dir,
    resolve_checkpoint_dir,
    resolve_yolox_model,
)
from mega_runtime.weights.state import FileStatus, status


def download_progress_bar(stream: IO[str]) -> ProgressBar:
    """The download progress bar: sizes in bytes, a 'downloading …' line when the stream is not a terminal."""
    return ProgressBar(stream, fmt=human_size, verb="downloading")


def _parse_models(text: str) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(CHECKPOINTS)
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(CHECKPOINTS)} or 'all'"
        )
    return tuple(dict.fromkeys(names))


def _where(explicit: Path | None, env_name: str, cache: Path) -> str:
    local, origin = local_folder(explicit, env_name)
    return f"{local} ({origin})" if local is not None else f"{cache} (download cache)"


def _print_rows(rows: list[FileStatus], required: set[str]) -> None:
    width = max((len(r.name) for r in rows), default=0)
    for row in rows:
        if row.ok:
            state = "ok" if row.verified or row.kind == "asset" else "present"
        elif row.present:
            state = "BAD"
        else:
            state = "missing" if row.name in required or row.kind == "asset" else "absent"
        size = human_size(row.size) if row.size is not None else ""
        optional = "" if row.kind == "asset" or row.name in required else "  (optional)"
        print(f"  {state:<8} {row.name:<{width}}  {size:>9}  {row.path}{optional}")
        if row.problem and row.problem != "missing":
            print(f"           problem: {row.problem}")
        if row.fix:
            print(f"           fix: {row.fix}")


def _cmd_list(args: argparse.Namespace) -> int:
    models = args.models or tuple(CHECKPOINTS)
    rows = status(args.assets_dir, args.checkpoint_dir, models=models)
    required = set(args.models or DEFAULT_MODELS)
    print(f"assets: {_where(args.assets_dir, ENV_ASSETS_DIR, cache_assets_dir())}")
    _print_rows([r for r in rows if r.kind == "asset"], required)
    print(f"checkpoints: {_where(args.checkpoint_dir, ENV_CHECKPOINTS_DIR, cache_checkpoints_dir())}")
    _print_rows([r for r in rows if r.kind == "checkpoint"], required)
    present = sum(r.present for r in rows)
    print(f"{present} of {len(rows)} files present; inference needs the assets and {', '.join(sorted(required))}")
    _print_yolox()
    return 0


def _print_yolox() -> None:
    """The optional YOLOX person detector: ok, BAD (another file) or absent, and the fix."""
    local, origin = local_folder(None, ENV_YOLOX_DIR)
    path = (local if local is not None else cache_detector_dir()) / YOLOX_FILE.name
    if present_and_valid(path, YOLOX_FILE.sha256, None, YOLOX_FILE.size):
        state = "ok"
    else:
        state = "BAD" if path.is_file() else "absent"
    where = origin if local is not None else "download cache"
    print(f"person detector (YOLOX-S; without it the offline BlazePose detector is used): {path.parent} ({where})")
    print(f"  {state:<8} {YOLOX_FILE.name}  {human_size(YOLOX_FILE.size):>9}  {path}  (optional)")
    if state != "ok":
        print(f"           fix: {FETCH_COMMAND} --yolox")


def _cmd_fetch(args: argparse.Namespace) -> int:
    models = args.models or DEFAULT_MODELS
    bar = download_progress_bar(sys.stderr)
    try:
        assets = resolve_assets_dir(args.assets_dir, download=True, progress=bar)
        checkpoints = resolve_checkpoint_dir(
            models, args.checkpoint_dir, download=True, progress=bar, assets_dir=assets
        )
        detector = fetch_detector_models(progress=bar) if args.detector else None
        yolox = resolve_yolox_model(progress=bar, honour_offline=False) if args.yolox else None
    finally:
        bar.close()
    print(f"assets: {assets}")
    print(f"checkpoints: {checkpoints} ({', '.join(models)})")
    if detector is not None:
        print(f"detector models: {detector}")
    if yolox is not None:
        print(f"YOLOX person detector: {yolox}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    rows = status(args.assets_dir, args.checkpoint_dir, models=args.models or tuple(CHECKPOINTS), deep=True)
    required = set(args.models or DEFAULT_MODELS)
    failing = [r for r in rows if not r.ok and (r.present or r.kind == "asset" or r.name in required)]
    print(f"assets: {_where(args.assets_dir, ENV_ASSETS_DIR, cache_assets_dir())}")
    _print_rows([r for r in rows if r.kind == "asset"], required)
    print(f"checkpoints: {_where(args.checkpoint_dir, ENV_CHECKPOINTS_DIR, cache_checkpoints_dir())}")
    _print_rows([r for r in rows if r.kind == "checkpoint"], required)
    checked = sum(r.present for r in rows)
    print(f"{checked} file(s) checked, {len(failing)} problem(s)")
    return 1 if failing else 0


def add_weights_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``weights list|fetch|verify`` on an argparse sub-parser collection; returns the ``weights`` parser.

    Each sub-command sets ``func`` (called with the parsed namespace, returns the exit code).
    """
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify the checkpoints and assets",
        description=f"Manage the files the runtime needs: the MEGA checkpoints (Zenodo record {ZENODO_RECORD_ID}) "
        f"and the template mesh and connection matrices (MeshConvolution @ {MESHCONV_COMMIT[:10]}). Downloads go "
        f"to the cache folder (${ENV_HOME} overrides it); ${ENV_ASSETS_DIR} / ${ENV_CHECKPOINTS_DIR} or the "
        "options below name local folders used instead.",
    )
    commands = parser.add_subparsers(dest="weights_command", required=True)
    specs = (
        ("list", _cmd_list, "show every file: present or missing, where, and the command that fixes it"),
        ("fetch", _cmd_fetch, "download what is missing into the cache (progress on stderr)"),
        ("verify", _cmd_verify, "check hashes and strict-load the checkpoints; exit 1 if anything is wrong"),
    )
    for name, func, text in specs:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--assets-dir",
            type=Path,
            metavar="DIR",
            help=f"folder with template.ply and connection_matrices/ (default: ${ENV_ASSETS_DIR}, else the cache)",
        )
        sub.add_argument(
            "--checkpoint-dir",
            type=Path,
            metavar="DIR",
            help=f"folder in the official layout (CVQMAE/, VQMAE/, MESH_VQVAE/) (default: ${ENV_CHECKPOINTS_DIR}, "
            "else the cache)",
        )
        sub.add_argument(
            "--models",
            type=_parse_models,
            metavar="NAMES",
            help=f"comma-separated models among {', '.join(CHECKPOINTS)}, or 'all' "
            f"(default: {','.join(DEFAULT_MODELS)} for fetch; all for list and verify)",
        )
        if name == "fetch":
            sub.add_argument(
                "--detector",
                action="store_true",
                help="also download the person detector's two BlazePose models (needed where no mediapipe wheel "
                "with them can be installed, e.g. Python 3.13; docs/detection.md)",
            )
            sub.add_argument(
                "--yolox",
                action="store_true",
                help="also download the YOLOX-S person detector (36 MB; the default detector where it is present, "
                "docs/detection.md); downloads even when $MEGA_OFFLINE is set",
            )
        sub.set_defaults(func=func)
    return parser
