"""The cache location, the registry and the ``weights`` commands (``list``, ``verify``, ``fetch``, the progress bar)
of ``mega_runtime.weights``; stray default URLs never leave the machine."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mega_runtime import weights
from mega_runtime.commands.weights import add_weights_commands, download_progress_bar
from mega_runtime.errors import WeightsError
from mega_runtime.weights import ASSET_FILES, CHECKPOINTS, Sources, cache_dir, resolve_assets_dir
from tests.runtime.weights.loopback import RECORD_PATH
from tests.runtime.weights.loopback import Server as _Server
from tests.runtime.weights.loopback import write_tiny_config as _write_tiny_config
from tests.runtime.weights.loopback import zip_bytes as _zip

REPO_ROOT = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------------------------------------------
# Cache location, registry, command line
# ----------------------------------------------------------------------------------------------------------------


def test_mega_home_overrides_the_platform_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MEGA_HOME", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    assert weights.cache_checkpoints_dir() == tmp_path / "elsewhere" / "checkpoints"
    monkeypatch.delenv("MEGA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mega-blender"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / ".cache" / "mega-blender"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == tmp_path / "Library" / "Caches" / "mega-blender"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert cache_dir() == tmp_path / "Local" / "mega-blender" / "Cache"


def test_registry_matches_the_loaders_and_asset_readers():
    from mega_runtime.models.assets import CONNECTION_LAYERS, connection_file_name
    from mega_runtime.weights.loaders import CHECKPOINT_FILES

    assert {n: c.path for n, c in CHECKPOINTS.items()} == CHECKPOINT_FILES
    expected = {"template.ply", *(f"connection_matrices/{connection_file_name(x)}" for x in CONNECTION_LAYERS)}
    assert {a.name for a in ASSET_FILES} == expected and len(ASSET_FILES) == 15
    assert all(
        a.url(weights.MESHCONV_BASE_URL).startswith(
            "https://raw.githubusercontent.com/papagina/MeshConvolution/f4982a842313b38f93a7fc778aeec3bae0eab62f/"
        )
        for a in ASSET_FILES
    )
    assert (
        ASSET_FILES[1]
        .url(weights.MESHCONV_BASE_URL)
        .endswith("/train/0223_GraphAE27_compare/connections/dfaust2/_pool0.npy")
    )


def test_importing_weights_loads_no_torch():
    code = "import sys, mega_runtime.weights; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mega-runtime")
    add_weights_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_weights_list_names_missing_files_and_the_command_that_fixes_each(
    capsys: pytest.CaptureFixture[str], isolated: Path
):
    assert _cli("weights", "list") == 0
    out = capsys.readouterr().out
    assert f"assets: {isolated / 'assets'} (download cache)" in out
    assert "missing  template.ply" in out and "fix: mega-runtime weights fetch\n" in out
    assert "missing  mega_hrnet" in out and "fix: mega-runtime weights fetch --models mega_hrnet" in out
    assert "absent   mega_vit" in out and "(optional)" in out
    assert "fix: mega-runtime weights fetch --models mega_vit" in out
    assert "0 of 20 files present" in out


def test_weights_list_with_a_local_folder_gives_copy_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert (
        _cli(
            "weights",
            "list",
            "--assets-dir",
            str(tmp_path / "a"),
            "--checkpoint-dir",
            str(tmp_path / "c"),
            "--models",
            "mega_pretrained",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"fix: curl -L --create-dirs -o '{tmp_path / 'a' / 'template.ply'}'" in out
    assert f"fix: copy VQMAE/mega_pretrained from https://zenodo.org/records/14974141 to {tmp_path / 'c'}" in out
    assert "mega_hrnet" not in out


def test_weights_verify_exits_0_when_all_is_well_and_1_otherwise(
    capsys: pytest.CaptureFixture[str], assets_dir: Path, tmp_path: Path, tiny_models: dict[str, bytes]
):
    folder = tmp_path / "ckpts"
    _write_tiny_config(folder, tiny_models)
    (folder / "VQMAE").mkdir()
    (folder / "VQMAE" / "mega_pretrained").write_bytes(tiny_models["mega_pretrained"])
    args = ("weights", "verify", "--assets-dir", str(assets_dir), "--checkpoint-dir", str(folder))
    assert _cli(*args, "--models", "mega_pretrained") == 0
    assert "0 problem(s)" in capsys.readouterr().out
    (folder / "VQMAE" / "mega_pretrained").write_bytes(tiny_models["mega_pretrained"][:1000])
    assert _cli(*args, "--models", "mega_pretrained") == 1
    out = capsys.readouterr().out
    assert "BAD      mega_pretrained" in out and "truncated" in out
    assert _cli(*args, "--models", "mega_pretrained,mega_vit") == 1  # asked for, and missing
    assert "missing  mega_vit" in capsys.readouterr().out


def test_weights_fetch_downloads_the_pinned_assets_and_a_checkpoint(
    capsys: pytest.CaptureFixture[str],
    assets_dir: Path,
    server: _Server,
    tiny_models: dict[str, bytes],
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    for asset in ASSET_FILES:  # the real files, served at their official relative paths
        server.publish(asset.source, (assets_dir / asset.name).read_bytes())
    server.publish_record(
        {
            "checkpoint.zip": _zip(
                {
                    "checkpoint/VQMAE/mega_pretrained": tiny_models["mega_pretrained"],
                    "checkpoint/config.json": tiny_models["config.json"],
                }
            )
        }
    )
    monkeypatch.setenv("MEGA_ASSETS_URL", server.url)
    monkeypatch.setenv("MEGA_ZENODO_URL", server.url + RECORD_PATH)
    assert _cli("weights", "fetch", "--models", "mega_pretrained") == 0
    captured = capsys.readouterr()
    assert f"checkpoints: {isolated / 'checkpoints'}" in captured.out
    assert "downloading connection_matrices/_unpool6.npy" in captured.err
    assert (isolated / "assets" / "connection_matrices" / "_unpool6.npy").read_bytes() == (
        assets_dir / "connection_matrices" / "_unpool6.npy"
    ).read_bytes()
    assert _cli("weights", "verify", "--models", "mega_pretrained") == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_weights_fetch_detector_downloads_the_pinned_models_into_the_cache(
    capsys: pytest.CaptureFixture[str], server: _Server, isolated: Path, monkeypatch: pytest.MonkeyPatch
):
    # stand-ins for the two BlazePose models, pinned like the real ones (size + SHA-256), served from a mirror
    bodies = {"pose_detection.tflite": b"detector model", "pose_landmark_full.tflite": b"landmark model"}
    pinned = tuple(
        weights.AssetFile(name, name, hashlib.sha256(body).hexdigest(), len(body)) for name, body in bodies.items()
    )
    monkeypatch.setattr("mega_runtime.weights.resolve.DETECTOR_FILES", pinned)
    monkeypatch.setattr("mega_runtime.commands.weights.resolve_assets_dir", lambda *a, **k: isolated / "assets")
    monkeypatch.setattr("mega_runtime.commands.weights.resolve_checkpoint_dir", lambda *a, **k: isolated / "ckpt")
    for name, body in bodies.items():
        server.publish(name, body)
    monkeypatch.setenv("MEGA_DETECTOR_URL", server.url)
    assert _cli("weights", "fetch", "--detector") == 0
    assert f"detector models: {isolated / 'detector'}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (isolated / "detector").iterdir()} == bodies
    server.publish("pose_detection.tflite", b"another model")  # a changed upstream file is refused, nothing kept
    (isolated / "detector" / "pose_detection.tflite").unlink()
    with pytest.raises(WeightsError, match="pose_detection"):
        weights.fetch_detector_models()
    assert not (isolated / "detector" / "pose_detection.tflite").exists()


def test_stray_defaults_never_leave_the_machine(tiny_sources: Sources):
    # the autouse fixture points the default sources at a closed local port
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"127\.0\.0\.1:9"):
        resolve_assets_dir()
    assert time.monotonic() - started < 5
    assert os.environ["MEGA_ASSETS_URL"].startswith("http://127.0.0.1:9")


def test_the_progress_bar_draws_one_line_per_file_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = download_progress_bar(stream)
    bar("CVQMAE/mega_hrnet", 0, 2_000_000)
    bar("CVQMAE/mega_hrnet", 2_000_000, 2_000_000)
    bar("other", 10, None)
    bar.close()
    lines = stream.getvalue().split("\n")
    assert "100.0% 2.0 MB/2.0 MB" in lines[0] and lines[0].count("\r") == 2
    assert lines[1] == "\rother                            10 B" and lines[2] == ""
