"""The add-on's defaults (panel, preferences, ``mega reconstruct``) are the runtime's (``mega_runtime.defaults``),
read through the generated ``mega_blender/runtime_defaults.py``; the panel's temporal options reach the protocol."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from mega_runtime import defaults
from mega_runtime.io.protocol import InferRequest, parse_request
from mega_runtime.io.temporal_options import TEMPORAL_KEYS, TemporalOptions
from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import batch, preferences, properties, reconstruct, runtime_client, runtime_transport  # noqa: E402


def _default(cls, name):
    return cls.bl_rna.properties[name].default


@pytest.fixture
def fake_link(monkeypatch):
    """``runtime_client.Link`` replaced by one that records each start's ``serve`` arguments (``started``) and the
    first job's options (``sent``), then stops the batch with a LinkError."""

    record = SimpleNamespace(started=[], sent=[])

    class FakeLink:
        def __init__(self, command, serve_args):
            record.started.append(list(serve_args))

        def start(self):
            pass

        def submit(self, path, results_dir, options):
            record.sent.append(options)
            raise runtime_client.LinkError("stopped by the test")

        def stop(self):
            pass

        def wait_stopped(self, timeout_s):
            return True

    monkeypatch.setattr(runtime_client, "Link", FakeLink)
    return record


def test_ok_panel_settings_start_at_the_shared_defaults(blender):
    scene = properties.MEGA_PG_scene
    assert _default(scene, "temporal_path") == defaults.PANEL_TEMPORAL_PATH
    assert _default(scene, "smooth") == defaults.PANEL_SMOOTH
    assert _default(scene, "one_euro_min_cutoff") == pytest.approx(defaults.ONE_EURO_MIN_CUTOFF_HZ)
    assert _default(scene, "one_euro_beta") == pytest.approx(defaults.ONE_EURO_BETA)
    assert _default(scene, "one_euro_d_cutoff") == pytest.approx(defaults.ONE_EURO_D_CUTOFF_HZ)
    assert _default(scene, "one_euro_causal") == defaults.ONE_EURO_CAUSAL
    assert _default(scene, "detect_every") == defaults.DETECT_EVERY
    assert scene.bl_rna.properties["detect_every"].hard_max == defaults.MAX_DETECT_EVERY
    settings = bpy.context.scene.mega
    assert settings.one_euro_d_cutoff == pytest.approx(defaults.ONE_EURO_D_CUTOFF_HZ)


def test_ok_preferences_start_at_the_shared_defaults(blender):
    prefs = preferences.MEGA_AddonPreferences
    assert _default(prefs, "model") == defaults.DEFAULT_MODEL
    assert _default(prefs, "num_hypotheses") == defaults.NUM_HYPOTHESES
    assert _default(prefs, "num_steps") == defaults.SAMPLING_STEPS
    assert _default(prefs, "seed") == defaults.SEED
    assert _default(prefs, "score_steps") == defaults.SCORE_STEPS
    assert _default(prefs, "device").lower() == defaults.DEVICE
    models = {item.identifier for item in prefs.bl_rna.properties["model"].enum_items}
    assert models == set(defaults.MODEL_SHORT_NAMES)


def test_ok_batch_reconstruct_arguments_default_to_the_shared_defaults():
    args = batch.build_parser().parse_args(["reconstruct", "clip.mp4", "--export", "out.blend"])
    assert (args.model, args.hypotheses, args.seed, args.device) == (
        defaults.DEFAULT_MODEL,
        defaults.NUM_HYPOTHESES,
        defaults.SEED,
        defaults.DEVICE,
    )
    assert (args.path, args.smooth) == (defaults.TEMPORAL_PATH, defaults.SMOOTH)
    assert args.one_euro_min_cutoff == defaults.ONE_EURO_MIN_CUTOFF_HZ
    assert args.one_euro_beta == defaults.ONE_EURO_BETA
    assert args.one_euro_d_cutoff == defaults.ONE_EURO_D_CUTOFF_HZ
    assert args.one_euro_causal == defaults.ONE_EURO_CAUSAL
    assert args.score_steps == defaults.SCORE_STEPS
    assert args.detect_every == defaults.DETECT_EVERY
    assert reconstruct.VIDEO_SUFFIXES == defaults.VIDEO_SUFFIXES


def _infer_request(path: str, options: dict) -> InferRequest:
    """The runtime's parse of an ``infer`` message for ``path`` carrying the add-on's ``options``."""
    message = {"v": runtime_transport.PROTOCOL_VERSION, "id": "j", "op": "infer", "source": {"path": path}}
    request = parse_request(json.dumps({**message, **options}).encode())
    assert isinstance(request, InferRequest)
    return request


def _parsed(temporal) -> TemporalOptions:
    request = _infer_request("/c.mp4", {"temporal": temporal})
    assert request.temporal is not None
    return request.temporal


def test_ok_panel_sends_every_one_euro_option_the_runtime_takes(blender):
    settings = bpy.context.scene.mega
    settings.one_euro_d_cutoff, settings.one_euro_causal, settings.one_euro_beta = 2.5, True, 1.5
    sent = reconstruct.temporal_options(settings)
    assert set(sent) <= set(TEMPORAL_KEYS) and {"d_cutoff", "causal"} <= set(sent)
    parsed = _parsed(sent)
    assert (parsed.d_cutoff, parsed.causal, parsed.beta) == (2.5, True, 1.5)
    assert parsed.path == defaults.PANEL_TEMPORAL_PATH and parsed.smooth is defaults.PANEL_SMOOTH


def test_ok_batch_reconstruct_sends_d_cutoff_and_causal(fake_link, tmp_path):
    media = tmp_path / "clip.avi"
    media.write_bytes(b"not read: the fake link stops first")
    sent = fake_link.sent
    argv = ["reconstruct", str(media), "--export", str(tmp_path / "out.blend"), "--runtime", "unused"]
    argv += ["--smooth", "--one-euro-d-cutoff", "3", "--one-euro-causal", "--score-steps", "1"]
    args = batch.build_parser().parse_args(argv)
    with pytest.raises(batch.BatchError, match="stopped by the test"):
        batch.run_reconstruct(args, {"files": [], "warnings": []})
    (options,) = sent
    parsed = _parsed(options["temporal"])
    assert (parsed.smooth, parsed.d_cutoff, parsed.causal) == (True, 3.0, True)
    assert options["score_steps"] == 1
    refused = batch.build_parser().parse_args([*argv[:-1], "0"])
    with pytest.raises(batch.BatchError, match="--score-steps must be between 1 and"):
        batch.run_reconstruct(refused, {"files": [], "warnings": []})
    assert len(sent) == 1  # refused before any job was sent
    assert parsed.min_cutoff == defaults.ONE_EURO_MIN_CUTOFF_HZ


def test_ok_batch_reconstruct_sends_the_detection_cadence_and_refuses_one_out_of_range(fake_link, tmp_path):
    media = tmp_path / "clip.avi"
    media.write_bytes(b"not read: the fake link stops first")
    argv = ["reconstruct", str(media), "--export", str(tmp_path / "out.blend"), "--runtime", "unused"]
    args = batch.build_parser().parse_args([*argv, "--detect-every", "3"])
    with pytest.raises(batch.BatchError, match="stopped by the test"):
        batch.run_reconstruct(args, {"files": [], "warnings": []})
    (options,) = fake_link.sent
    assert _infer_request(str(media), options).detect_every == 3
    for bad in ("0", str(defaults.MAX_DETECT_EVERY + 1)):
        refused = batch.build_parser().parse_args([*argv, "--detect-every", bad])
        with pytest.raises(batch.BatchError, match=f"--detect-every must be between 1 and {defaults.MAX_DETECT_EVERY}"):
            batch.run_reconstruct(refused, {"files": [], "warnings": []})
    assert len(fake_link.sent) == 1  # refused before any job was sent


def test_ok_panel_jobs_send_the_preferred_scoring_steps_and_the_runtime_accepts_them(blender):
    prefs = preferences.get_preferences(bpy.context)
    assert prefs is not None
    prefs.score_steps = 1
    no_overrides = SimpleNamespace(model="", hypotheses=0, steps=0, seed=-1, device="")
    options = reconstruct.MEGA_OT_reconstruct._options(no_overrides, bpy.context)
    assert options["score_steps"] == 1
    assert _infer_request("/p.jpg", options).score_steps == 1


def test_ok_fast_kernels_preference_starts_the_runtime_with_compile(blender):
    from mega_blender import jobs
    from mega_runtime.commands.cli import build_parser

    prefs = preferences.get_preferences(bpy.context)
    assert prefs is not None and _default(preferences.MEGA_AddonPreferences, "fast_kernels") is False
    mode, command = prefs.runtime_mode, prefs.custom_command
    try:
        prefs.runtime_mode, prefs.custom_command = "COMMAND", "mega-runtime"
        prefs.fast_kernels = True
        _, serve_args, _ = jobs.link_settings(bpy.context)
        assert "--compile" in serve_args
        assert build_parser().parse_args(["serve", *serve_args]).compile is True
        prefs.fast_kernels = False
        assert "--compile" not in jobs.link_settings(bpy.context)[1]
    finally:
        prefs.fast_kernels = False
        prefs.runtime_mode, prefs.custom_command = mode, command


@pytest.mark.parametrize("extra", [[], ["--checkpoint-dir", "ckpt"]], ids=["plain", "with-checkpoints"])
def test_ok_batch_reconstruct_compile_starts_the_runtime_with_compile(fake_link, tmp_path, extra):
    media = tmp_path / "photo.jpg"
    media.write_bytes(b"not read: the fake link stops first")
    argv = ["reconstruct", str(media), "--export", str(tmp_path / "out.blend"), "--runtime", "unused", *extra]
    for compile_flag in ([], ["--compile"]):
        args = batch.build_parser().parse_args([*argv, *compile_flag])
        with pytest.raises(batch.BatchError, match="stopped by the test"):
            batch.run_reconstruct(args, {"files": [], "warnings": []})
    assert fake_link.started == [extra, [*extra, "--compile"]]
