"""``mega-runtime generate`` and ``mega-runtime complete``: bodies shaped by the model without a new photo — sampled
from the pre-trained model, or one hypothesis with a region kept and the rest resampled (torch-free at import)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mega_runtime import defaults
from mega_runtime.commands.options import (
    bounded_float,
    bounded_int,
    check_output_folder,
    common_options,
    sampling_options,
)
from mega_runtime.errors import MegaError

EXIT_OK = 0


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


def add_shaping_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``generate`` and ``complete`` on the CLI's sub-parsers."""
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
    sampling_options(p, defaults.GENERATE_STEPS, defaults.GENERATE_TEMPERATURE, "sampling temperature")
    common_options(p)
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
    common_options(p)
    p.set_defaults(func=_cmd_complete)
