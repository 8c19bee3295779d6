"""Every default and every name that more than one module needs, in one place (stdlib only, no torch).

The CLI (``mega_runtime.commands``), the live-link server and its protocol (``mega_runtime.io.protocol``), the
pipeline and the temporal post-processing read their defaults from here; changing a default is a one-line edit.

The Blender add-on never imports ``mega_runtime``: it reads the same values from ``mega_blender/runtime_defaults.py``,
a copy generated from this file::

    python -m mega_runtime.defaults --write-addon-module

(``tests/runtime/test_defaults.py`` fails while the copy is stale.) Only plain literals belong here — strings,
numbers, booleans, None, and tuples, frozensets and dicts of them — so the copy is exact. Names carry their units
(``_HZ``, ``_PX``, ``_S``, ``_BYTES``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# -- models and checkpoint files ---------------------------------------------------------------------------------------

#: Short model names (CLI ``--model``, protocol ``model``, add-on preferences) → full model names.
MODEL_SHORT_NAMES = {"resnet": "mega_resnet", "hrnet": "mega_hrnet", "vit": "mega_vit"}
#: The image-conditioned MEGA models (full names).
IMAGE_MODELS = ("mega_resnet", "mega_hrnet", "mega_vit")
#: Short name of the model used when none is asked for.
DEFAULT_MODEL = "hrnet"
#: The unconditional pre-trained masked transformer (``generate``).
PRETRAINED_MODEL = "mega_pretrained"
#: The Mesh-VQ-VAE tokenizer every MEGA model decodes through.
TOKENIZER_MODEL = "mesh_vqvae_54"
#: Official path of each model's checkpoint file inside a checkpoint folder (Zenodo record 14974141's layout).
CHECKPOINT_FILES = {
    "mega_resnet": "CVQMAE/mega_resnet",
    "mega_hrnet": "CVQMAE/mega_hrnet",
    "mega_vit": "CVQMAE/mega_vit",
    "mega_pretrained": "VQMAE/mega_pretrained",
    "mesh_vqvae_54": "MESH_VQVAE/mesh_vqvae_54",
}
#: What inference needs by default (the official demo path): one MEGA model and the mesh tokenizer.
DEFAULT_CHECKPOINTS = ("mega_hrnet", "mesh_vqvae_54")

# -- media -------------------------------------------------------------------------------------------------------------

#: File suffixes (lower case) read as videos; everything else is read as an image.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv", ".gif"}
)
#: File suffixes (lower case) a folder given to ``infer`` is searched for as photos.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pnm", ".exr"}
)

# -- sampling (reconstruction) -----------------------------------------------------------------------------------------

#: Hypotheses per person, hypothesis 0 (the deterministic decode) included.
NUM_HYPOTHESES = 8
#: Iterative decoding steps of the image models (official CVQMAE setting).
SAMPLING_STEPS = 5
#: Initial sampling temperature of the image models (official CVQMAE setting).
SAMPLING_TEMPERATURE = 4.5
#: Temperature annealing of the image models (official CVQMAE setting).
SAMPLING_ANNEALING = "linear"
#: Seed of the sampler (same seed, same hypotheses).
SEED = 0
#: ``full`` (this runtime's sampler) or ``official`` (bit-exact official generate()).
SAMPLERS = ("full", "official")
SAMPLER = "full"
#: Person crops per network batch.
BATCH_SIZE = 16
#: ``auto`` picks a GPU when one is available, else the CPU.
DEVICE = "auto"
#: Arithmetic of the image model: ``fp32`` (exact, reproduces the fixtures), ``bf16`` (autocast), ``int8``
#: (dynamic quantisation of Linear layers, CPU only), ``auto`` (the fastest this machine supports natively).
PRECISIONS = ("fp32", "bf16", "int8", "auto")
PRECISION = "fp32"
#: Blocks of the hypothesis scorer (``mega_runtime.decoding.scoring``; ``infer --score-steps``, the protocol's
#: ``score_steps``): k blocks cost k − 1 transformer passes over all hypotheses; 1 scores from the all-masked
#: logits the deterministic decode already has (no pass: a third faster with one hypothesis, a fifth with 16).
SCORE_STEPS = 2
MAX_SCORE_STEPS = 10

# -- sampling (generation with no image) -------------------------------------------------------------------------------

#: Bodies ``generate`` makes.
GENERATE_COUNT = 4
#: Official settings of the unconditional model: 20 steps, temperature 1.3, power-5 annealing.
GENERATE_STEPS = 20
GENERATE_TEMPERATURE = 1.3
GENERATE_ANNEALING = "power5"

# -- completion (keep a region, resample the rest) ---------------------------------------------------------------------

#: New hypotheses ``complete`` makes.
COMPLETION_COUNT = 8
#: Share of the kept vertices' token influence the kept tokens must give (docs/completion.md).
COMPLETION_COVERAGE = 0.95
#: Pin the kept vertices to the source hypothesis after decoding (docs/completion.md).
COMPLETION_PIN = True
#: Width (metres, along the template's surface) of the band over which pinned vertices blend into resampled ones.
COMPLETION_FALLOFF_M = 0.05

# -- video throughput --------------------------------------------------------------------------------------------------
#: Videos: run the person detector on every k-th processed frame, moving the boxes along by optical flow in between
#: (``infer --detect-every``, the protocol's ``detect_every``). 1 = every frame (exact); recall measured for
#: larger k in docs/video.md ("Detection cadence").
DETECT_EVERY = 1
#: Largest ``--detect-every`` (processed frames between two detector runs).
MAX_DETECT_EVERY = 30
#: Video frames decoded ahead on a reader thread while the model runs (0 = decode in the model's thread).
VIDEO_PREFETCH_FRAMES = 4

# -- temporal post-processing of videos --------------------------------------------------------------------------------

#: Hypothesis played per frame: ``zero`` (hypothesis 0) or ``coherent`` (the smooth, likely path). Measured on noisy
#: walking clips (docs/video.md): with the smoothing below, ``zero`` stays closest to the truth.
#: Videos: merge fragments of one person's track after the pass (appearance + body shape; docs/video.md).
STITCH = True
TEMPORAL_PATHS = ("zero", "coherent")
TEMPORAL_PATH = "zero"
#: One-Euro smoothing of the chosen bodies, for videos (CLI, protocol, panel and batch alike; ``--no-smooth`` turns
#: it off).
SMOOTH = True
#: One-Euro cut-off at rest, Hz: lower smooths more when the body is still. The three One-Euro values were chosen
#: by measurement (benchmarks/bench_temporal_defaults.py, docs/video.md): jitter ≥ 3× lower in every noisy walking
#: scenario with lag ≤ 2 frames (also forward-only), and of those the least harm to a low-noise clip.
ONE_EURO_MIN_CUTOFF_HZ = 0.7
#: One-Euro speed coefficient, Hz per m/s: higher follows fast motion more closely.
ONE_EURO_BETA = 0.5
#: One-Euro cut-off of the speed estimate, Hz.
ONE_EURO_D_CUTOFF_HZ = 1.0
#: Forward-only (causal) One-Euro, as a live view filters; False: forwards and backwards averaged, no lag.
ONE_EURO_CAUSAL = False
#: Weight of smoothness against likelihood in the coherent path, nats per (m/s)² of vertex speed.
PATH_SMOOTHNESS_WEIGHT = 10.0
#: Weight of the log-likelihood in the coherent path.
PATH_LIKELIHOOD_WEIGHT = 1.0
#: The add-on panel's starting choice for videos: the same as everywhere else.
PANEL_TEMPORAL_PATH = TEMPORAL_PATH
PANEL_SMOOTH = SMOOTH

# -- person detection --------------------------------------------------------------------------------------------------

#: Detectors the CLI and ``serve`` offer (``default`` is ``auto``: YOLOX where it can be had, else BlazePose).
DETECTOR_CHOICES = ("default", "auto", "yolox", "blazepose", "yolo")
DETECTOR = "default"
#: Minimum detector score of a person (0.5, as in MediaPipe).
DETECTOR_CONF = 0.5
#: Minimum length in pixels of a box's longer side.
DETECTOR_MIN_SIZE_PX = 0.0
#: Most people kept per image, best first; None keeps all.
DETECTOR_MAX_PEOPLE = None
#: Minimum person (box) height in pixels of the source frame (CLI ``--min-height``, protocol
#: ``detection.min_height_px``, panel and batch); 0 keeps people of any size.
DETECTOR_MIN_HEIGHT_PX = 0.0
#: Where given boxes (``--boxes``, a boxes-per-frame file, the add-on's tracks) apply: ``replace`` the detector in
#: those frames, or ``add`` to what it finds (docs/detection.md).
BOXES_MODES = ("replace", "add")
BOXES_MODE = "replace"
#: The add-on panel's starting choice for boxes from Movie Clip tracks: add them to what the detector finds.
PANEL_BOXES_MODE = "add"
#: Tracks of a Movie Clip whose name starts with this are people's boxes (add-on panel; docs/blender-addon.md).
PANEL_TRACK_PREFIX = "MEGA"

# -- live link (protocol) limits ---------------------------------------------------------------------------------------

#: Version of the JSON-Lines protocol (docs/protocol.md).
PROTOCOL_VERSION = 1
#: Longest request line accepted, in bytes (an inline image travels as base64 inside it).
MAX_MESSAGE_BYTES = 96 * 2**20
#: Largest decoded inline ``source.data``, in bytes.
MAX_INLINE_BYTES = 64 * 2**20
#: Seconds between two partial result pairs of a video job (kept should the process die).
CHECKPOINT_EVERY_S = 10.0


# -- limits: every value a user, a request or a file can give is checked against these before any work ---------------

#: Seeds accepted (``--seed``, protocol ``seed``): 0 … 2**32 − 1 (what numpy's and torch's generators take).
MAX_SEED = 2**32 - 1
#: Most hypotheses per person (``--hypotheses``): memory grows linearly with it (docs/reliability.md).
MAX_HYPOTHESES = 128
#: Most person crops per network batch (``--batch-size``).
MAX_BATCH_SIZE = 256
#: Most sampling steps (``--steps`` of ``infer`` and ``generate``).
MAX_SAMPLING_STEPS = 1000
#: Largest sampling temperature (the smallest is 0; never NaN or infinite).
MAX_SAMPLING_TEMPERATURE = 100.0
#: Most bodies ``generate`` makes in one run.
MAX_GENERATE_COUNT = 1024
#: Largest photo or video frame, in pixels (width × height), read from the file's header before decoding.
MAX_IMAGE_PIXELS = 100_000_000
#: Largest result ``.json`` read, in bytes, and its deepest nesting of objects and lists.
MAX_RESULT_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
#: Largest total of the arrays of a result ``.npz`` once loaded, in bytes (read from the headers first).
MAX_RESULT_ARRAY_BYTES = 2**30
#: Largest ``config.json`` beside checkpoints, in bytes.
MAX_CONFIG_JSON_BYTES = 2**20
#: Largest ``--max-people`` / ``detection.max_people``.
MAX_DETECTOR_PEOPLE = 1000
#: Largest ``--min-height`` / ``detection.min_height_px``, pixels.
MAX_DETECTOR_MIN_HEIGHT_PX = 100_000.0
#: Largest boxes-per-frame JSON file (``--boxes-file``), in bytes.
MAX_BOXES_FILE_BYTES = 16 * 2**20

# -- the add-on's copy -------------------------------------------------------------------------------------------------

ADDON_MODULE = "mega_blender/runtime_defaults.py"
"""Where the generated copy lives, relative to the repository root."""

_REPO_ROOT = Path(__file__).resolve().parent.parent


def public_values() -> dict[str, object]:
    """Every default of this module, by name, in the order they are defined."""
    return {
        name: value
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_") and name != "ADDON_MODULE"
    }


def _literal(value: object, indent: str) -> str:
    """``value`` as Python source equal to it, laid out as ``ruff format`` would (sets sorted: reproducible)."""
    inner = indent + "    "
    if isinstance(value, frozenset | set):
        items = [_literal(v, inner) for v in sorted(value)]
        flat = "frozenset({" + ", ".join(items) + "})"
        if len(indent) + len(flat) <= 80:
            return flat
        return (
            "frozenset(\n" + inner + "{\n" + "".join(f"{inner}    {v},\n" for v in items) + inner + "}\n" + indent + ")"
        )
    if isinstance(value, dict):
        rows = [f"{inner}{_literal(k, inner)}: {_literal(v, inner)},\n" for k, v in value.items()]
        return "{\n" + "".join(rows) + indent + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v, indent) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    raise TypeError(f"a default must be a plain literal, got {type(value).__name__}")


def _comments() -> dict[str, list[str]]:
    """The ``#:`` comment lines directly above each name's definition in this file."""
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    found: dict[str, list[str]] = {}
    for number, line in enumerate(lines):
        name = line.split(" = ", 1)[0]
        if " = " not in line or not name.isidentifier() or not name.isupper() or name.startswith("_"):
            continue
        first = number
        while first > 0 and lines[first - 1].startswith("#:"):
            first -= 1
        found[name] = lines[first:number]
    return found


def addon_module_source() -> str:
    """The text of ``mega_blender/runtime_defaults.py``: every default of this module as a plain assignment."""
    comments = _comments()
    out = [
        '"""The runtime\'s defaults, for the add-on (which never imports ``mega_runtime``).',
        "",
        "GENERATED from mega_runtime/defaults.py by ``python -m mega_runtime.defaults --write-addon-module``;",
        "do not edit: change the default there and regenerate (tests/runtime/test_defaults.py fails while this",
        "file is stale).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    for name, value in public_values().items():
        out.extend(comments.get(name, []))
        out.append(f"{name} = {_literal(value, '')}")
    return "\n".join(out) + "\n"


def write_addon_module(root: Path | None = None) -> Path:
    """Write the add-on's copy under the repository ``root`` (default: this checkout); returns its path."""
    path = (root or _REPO_ROOT) / ADDON_MODULE
    path.write_text(addon_module_source(), encoding="utf-8")
    return path


def addon_module_is_current(root: Path | None = None) -> bool:
    """Whether the add-on's copy under ``root`` (default: this checkout) equals what this file generates."""
    path = (root or _REPO_ROOT) / ADDON_MODULE
    return path.is_file() and path.read_text(encoding="utf-8") == addon_module_source()


def main(argv: list[str] | None = None) -> int:
    """``python -m mega_runtime.defaults``: list the defaults, or write / check the add-on's copy."""
    parser = argparse.ArgumentParser(prog="python -m mega_runtime.defaults", description="The runtime's defaults.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write-addon-module", action="store_true", help=f"regenerate {ADDON_MODULE}")
    action.add_argument("--check-addon-module", action="store_true", help=f"exit 1 when {ADDON_MODULE} is stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write_addon_module:
        log.info("wrote %s", write_addon_module())
        return 0
    if args.check_addon_module:
        if not addon_module_is_current():
            log.error("%s is stale; run: python -m mega_runtime.defaults --write-addon-module", ADDON_MODULE)
            return 1
        log.info("%s is current", ADDON_MODULE)
        return 0
    for name, value in public_values().items():
        sys.stdout.write(f"{name} = {value!r}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
