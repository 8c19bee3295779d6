"""One source of truth: every runtime default comes from ``mega_runtime.defaults``; the add-on's copy is current."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mega_runtime import defaults
from mega_runtime.commands.cli import build_parser
from mega_runtime.io.protocol import InferRequest, ProtocolError, infer_defaults, parse_request
from mega_runtime.io.temporal_options import TemporalOptions

REPO_ROOT = Path(__file__).resolve().parents[2]


def _infer(**fields) -> InferRequest:
    message = {"v": 1, "id": "j1", "op": "infer", "source": {"path": "/tmp/clip.mp4"}, **fields}
    request = parse_request(json.dumps(message).encode())
    assert isinstance(request, InferRequest)
    return request


# -- the generated add-on copy --------------------------------------------------------------------------------------


def test_ok_addon_copy_is_current():
    assert defaults.addon_module_is_current(), (
        "mega_blender/runtime_defaults.py is stale: run python -m mega_runtime.defaults --write-addon-module"
    )


def test_ok_addon_copy_has_every_value_and_imports_nothing():
    path = REPO_ROOT / defaults.ADDON_MODULE
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(n) for n in imports] == ["from __future__ import annotations"]
    namespace: dict[str, object] = {}
    exec(compile(tree, str(path), "exec"), namespace)
    values = {k: v for k, v in namespace.items() if not k.startswith("__") and k != "annotations"}
    assert values == defaults.public_values()
    assert "GENERATED from mega_runtime/defaults.py" in path.read_text(encoding="utf-8")


def test_ng_a_stale_addon_copy_is_detected(tmp_path):
    target = tmp_path / defaults.ADDON_MODULE
    target.parent.mkdir(parents=True)
    assert not defaults.addon_module_is_current(tmp_path)  # missing
    assert defaults.write_addon_module(tmp_path) == target
    assert defaults.addon_module_is_current(tmp_path)
    target.write_text(target.read_text(encoding="utf-8").replace("NUM_HYPOTHESES = 8", "NUM_HYPOTHESES = 9"))
    assert not defaults.addon_module_is_current(tmp_path)


def test_ok_check_command_exit_status():
    done = subprocess.run(
        [sys.executable, "-m", "mega_runtime.defaults", "--check-addon-module"], cwd=REPO_ROOT, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


def test_ok_generated_text_is_reproducible_and_sorted():
    text = defaults.addon_module_source()
    assert text == defaults.addon_module_source()
    start = text.index("VIDEO_SUFFIXES = frozenset(")
    block = text[start : text.index(")", start)]
    suffixes = [line.strip().strip('",') for line in block.splitlines()[2:-1]]
    assert suffixes == sorted(defaults.VIDEO_SUFFIXES)


def test_ng_a_default_that_is_not_a_plain_literal_is_refused():
    with pytest.raises(TypeError, match="plain literal"):
        defaults._literal(object(), "")


# -- every reader agrees -----------------------------------------------------------------------------------------------


def test_ok_cli_infer_defaults_are_the_shared_ones():
    args = build_parser().parse_args(["infer", "photo.jpg", "--out", "o"])
    assert args.model == defaults.DEFAULT_MODEL
    assert args.hypotheses == defaults.NUM_HYPOTHESES
    assert (args.steps, args.temperature) == (defaults.SAMPLING_STEPS, defaults.SAMPLING_TEMPERATURE)
    assert (args.seed, args.sampler, args.device) == (defaults.SEED, defaults.SAMPLER, defaults.DEVICE)
    assert (args.batch_size, args.detector) == (defaults.BATCH_SIZE, defaults.DETECTOR)
    assert (args.path, args.smooth) == (defaults.TEMPORAL_PATH, defaults.SMOOTH)
    assert args.path_smoothness == defaults.PATH_SMOOTHNESS_WEIGHT
    assert args.one_euro_min_cutoff == defaults.ONE_EURO_MIN_CUTOFF_HZ
    assert args.one_euro_beta == defaults.ONE_EURO_BETA
    assert args.one_euro_d_cutoff == defaults.ONE_EURO_D_CUTOFF_HZ
    assert args.one_euro_causal == defaults.ONE_EURO_CAUSAL


def test_ok_cli_generate_and_serve_defaults_are_the_shared_ones():
    args = build_parser().parse_args(["generate", "--out", "o"])
    assert (args.count, args.steps, args.temperature, args.seed) == (
        defaults.GENERATE_COUNT,
        defaults.GENERATE_STEPS,
        defaults.GENERATE_TEMPERATURE,
        defaults.SEED,
    )
    args = build_parser().parse_args(["serve"])
    assert (args.device, args.detector) == (defaults.DEVICE, defaults.DETECTOR)
    assert (args.max_message_bytes, args.max_inline_bytes) == (defaults.MAX_MESSAGE_BYTES, defaults.MAX_INLINE_BYTES)
    assert args.checkpoint_every_s == defaults.CHECKPOINT_EVERY_S


def test_ok_serve_config_defaults_are_the_shared_ones():
    from mega_runtime.commands.serve import ServeConfig

    config = ServeConfig()
    assert (config.device, config.detector, config.checkpoint_every_s) == (
        defaults.DEVICE,
        defaults.DETECTOR,
        defaults.CHECKPOINT_EVERY_S,
    )
    assert (config.max_message_bytes, config.max_inline_bytes) == (
        defaults.MAX_MESSAGE_BYTES,
        defaults.MAX_INLINE_BYTES,
    )


def test_ok_protocol_fills_in_the_shared_defaults():
    request = _infer(temporal={})
    assert request.model == defaults.MODEL_SHORT_NAMES[defaults.DEFAULT_MODEL]
    assert (request.hypotheses, request.seed, request.sampler) == (
        defaults.NUM_HYPOTHESES,
        defaults.SEED,
        defaults.SAMPLER,
    )
    assert request.is_video
    assert request.temporal == TemporalOptions()
    assert (request.temporal.min_cutoff, request.temporal.beta, request.temporal.d_cutoff) == (
        defaults.ONE_EURO_MIN_CUTOFF_HZ,
        defaults.ONE_EURO_BETA,
        defaults.ONE_EURO_D_CUTOFF_HZ,
    )
    assert request.temporal.causal == defaults.ONE_EURO_CAUSAL
    assert (request.temporal.path, request.temporal.smooth) == (defaults.TEMPORAL_PATH, defaults.SMOOTH)
    assert request.temporal.smoothness == defaults.PATH_SMOOTHNESS_WEIGHT
    assert _infer().temporal is None
    reported = infer_defaults()
    assert reported["steps"] == defaults.SAMPLING_STEPS and reported["temperature"] == defaults.SAMPLING_TEMPERATURE
    assert reported["temporal"]["d_cutoff"] == defaults.ONE_EURO_D_CUTOFF_HZ
    json.dumps(reported)  # goes into the hello reply as it is


def test_ok_pipeline_temporal_and_sampling_defaults_are_the_shared_ones():
    from mega_runtime.decoding.schedule import CVQMAE_SAMPLING, VQMAE_SAMPLING
    from mega_runtime.pipeline.chain import PipelineConfig
    from mega_runtime.pipeline.temporal import OneEuroConfig, TemporalConfig

    one_euro = OneEuroConfig()
    assert (one_euro.min_cutoff, one_euro.beta, one_euro.d_cutoff) == (
        defaults.ONE_EURO_MIN_CUTOFF_HZ,
        defaults.ONE_EURO_BETA,
        defaults.ONE_EURO_D_CUTOFF_HZ,
    )
    assert one_euro.two_sided is not defaults.ONE_EURO_CAUSAL
    temporal = TemporalConfig()
    assert (temporal.path, temporal.smooth, temporal.smoothness_weight, temporal.likelihood_weight) == (
        defaults.TEMPORAL_PATH,
        defaults.SMOOTH,
        defaults.PATH_SMOOTHNESS_WEIGHT,
        defaults.PATH_LIKELIHOOD_WEIGHT,
    )
    config = PipelineConfig()
    assert config.model == defaults.MODEL_SHORT_NAMES[defaults.DEFAULT_MODEL]
    assert (config.num_hypotheses, config.sampler, config.seed, config.device, config.batch_size) == (
        defaults.NUM_HYPOTHESES,
        defaults.SAMPLER,
        defaults.SEED,
        defaults.DEVICE,
        defaults.BATCH_SIZE,
    )
    assert (CVQMAE_SAMPLING.steps, CVQMAE_SAMPLING.temperature, CVQMAE_SAMPLING.annealing) == (
        defaults.SAMPLING_STEPS,
        defaults.SAMPLING_TEMPERATURE,
        defaults.SAMPLING_ANNEALING,
    )
    assert (VQMAE_SAMPLING.steps, VQMAE_SAMPLING.temperature, VQMAE_SAMPLING.annealing) == (
        defaults.GENERATE_STEPS,
        defaults.GENERATE_TEMPERATURE,
        defaults.GENERATE_ANNEALING,
    )


def test_ok_detector_weights_and_media_use_the_shared_names():
    from mega_runtime.pipeline.detect import BlazePoseDetector, YoloDetector, make_detector
    from mega_runtime.pipeline.media import VIDEO_SUFFIXES, is_video
    from mega_runtime.weights import DEFAULT_MODELS
    from mega_runtime.weights.registry import CHECKPOINTS

    for cls in (BlazePoseDetector, YoloDetector):
        parameters = inspect.signature(cls.__init__).parameters
        assert parameters["conf"].default == defaults.DETECTOR_CONF
        assert parameters["min_size"].default == defaults.DETECTOR_MIN_SIZE_PX
        assert parameters["max_people"].default == defaults.DETECTOR_MAX_PEOPLE
    assert inspect.signature(make_detector).parameters["name"].default == defaults.DETECTOR
    assert {n: c.path for n, c in CHECKPOINTS.items()} == defaults.CHECKPOINT_FILES
    assert DEFAULT_MODELS == defaults.DEFAULT_CHECKPOINTS
    assert VIDEO_SUFFIXES is defaults.VIDEO_SUFFIXES
    assert all(is_video(f"clip{suffix.upper()}") for suffix in defaults.VIDEO_SUFFIXES)


#: Module-level names that may hold their own literal although ``defaults`` has a name like it, and why.
OWN_COPIES_ALLOWED = {
    # the client states the version *it* speaks; the handshake compares the two (and it loads without the package)
    ("mega_blender/runtime_transport.py", "PROTOCOL_VERSION"),
}


def _literal_assignments(path: Path) -> list[str]:
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        if value is None:
            continue
        try:
            ast.literal_eval(value)
        except ValueError:
            continue
        found.extend(t.id for t in targets if isinstance(t, ast.Name))
    return found


def test_ng_no_module_keeps_its_own_copy_of_a_shared_default():
    shared = set(defaults.public_values()) | {"MODELS", "MODEL_NAMES"}
    copies = []
    for package in ("mega_runtime", "mega_blender"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative in ("mega_runtime/defaults.py", defaults.ADDON_MODULE):
                continue
            copies += [
                f"{relative}: {name}"
                for name in _literal_assignments(path)
                if name in shared and (relative, name) not in OWN_COPIES_ALLOWED
            ]
    assert not copies, f"read these from mega_runtime.defaults (or the add-on's runtime_defaults): {copies}"


# -- the protocol's temporal object ------------------------------------------------------------------------------------


def test_ok_protocol_temporal_carries_every_cli_option():
    request = _infer(
        temporal={
            "path": "coherent",
            "smooth": True,
            "min_cutoff": 0.5,
            "beta": 2,
            "d_cutoff": 3.0,
            "causal": True,
            "smoothness": 4.0,
        }
    )
    assert request.temporal == TemporalOptions("coherent", True, 0.5, 2.0, 3.0, True, 4.0)
    assert isinstance(request.temporal.beta, float)
    cli_flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["infer"]._actions}  # type: ignore[union-attr]
    temporal_flags = {"path", "smooth", "one_euro_min_cutoff", "one_euro_beta", "one_euro_d_cutoff", "one_euro_causal"}
    assert temporal_flags | {"path_smoothness"} <= cli_flags
    assert len(TemporalOptions.__dataclass_fields__) == len(temporal_flags | {"path_smoothness"})


@pytest.mark.parametrize(
    ("temporal", "words"),
    [
        ([1], "'temporal' must be an object"),
        ({"dcutoff": 1.0}, "unknown key(s) 'dcutoff'"),
        ({"path": "best"}, "'temporal.path' must be 'zero' or 'coherent'"),
        ({"smooth": "yes"}, "'temporal.smooth' must be true or false"),
        ({"causal": 1}, "'temporal.causal' must be true or false"),
        ({"min_cutoff": 0}, "'temporal.min_cutoff' must be a number > 0"),
        ({"d_cutoff": -1.0}, "'temporal.d_cutoff' must be a number > 0"),
        ({"d_cutoff": "2"}, "'temporal.d_cutoff' must be a number > 0"),
        ({"beta": -0.1}, "'temporal.beta' must be a number ≥ 0"),
        ({"beta": True}, "'temporal.beta' must be a number ≥ 0"),
        ({"smoothness": float("inf")}, "'temporal.smoothness' must be a number ≥ 0"),
    ],
)
def test_ng_bad_temporal_is_refused_with_a_clear_error(temporal, words):
    with pytest.raises(ProtocolError) as caught:
        _infer(temporal=temporal)
    assert caught.value.code == "bad_request" and caught.value.request_id == "j1"
    assert words in caught.value.message
