"""The registry, cache and downloads of ``mega_runtime.weights``, against a loopback HTTP server.

Nothing here reaches the real network: every download goes to a server started by the test on
127.0.0.1 (stopped at teardown, and by a watchdog after 60 s), and the environment's source URLs
point at a closed local port so that a stray default would fail fast instead of going out.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mega_runtime import weights
from mega_runtime.commands.weights import add_weights_commands, download_progress_bar
from mega_runtime.errors import ConfigError, WeightsError
from mega_runtime.weights import (
    ASSET_FILES,
    CHECKPOINTS,
    AssetFile,
    Sources,
    cache_dir,
    extract_archive,
    identify_checkpoint,
    parse_zenodo_files,
    resolve_assets_dir,
    resolve_checkpoint_dir,
    status,
)

RECORD_PATH = "/api/records/14974141"
REPO_ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------------------------
# Loopback server
# ----------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Serves files under the server's root; misbehaves on request (see ``_Server.modes``)."""

    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with srv.lock:
            srv.requests.append(path)
        if path in srv.json_routes:
            self._send(json.dumps(srv.json_routes[path]).encode(), "application/json")
            return
        file = (srv.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(srv.root.resolve()) or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        mode = srv.modes.get(path)
        if mode == "stall":  # hold the answer until the test is over: the client's timeout must fire first
            srv.release.wait(30)
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(data, "application/octet-stream")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.modes: dict[str, str] = {}  # URL path -> "corrupt" | "truncate" | "stall"
        self.json_routes: dict[str, object] = {}
        self.release = threading.Event()  # set at teardown: ends every stalled answer

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def publish(self, relative: str, data: bytes) -> str:
        """Serve ``data`` at ``/relative``; returns its URL."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{urllib.parse.quote(relative)}"

    def publish_record(self, files: dict[str, bytes], shape: str = "current", md5: dict[str, str] | None = None):
        """Emulate the Zenodo record API: a JSON listing whose links point back at this server."""
        entries = []
        for key, data in files.items():
            url = self.publish(f"records/{key}", data)
            digest = (md5 or {}).get(key, hashlib.md5(data).hexdigest())
            if shape == "current":
                entries.append({"key": key, "size": len(data), "checksum": f"md5:{digest}", "links": {"self": url}})
            elif shape == "rdm":
                meta = f"{self.url}{RECORD_PATH}/files/{key}"
                entries.append(
                    {
                        "key": key,
                        "size": len(data),
                        "checksum": f"md5:{digest}",
                        "links": {"self": meta, "content": url},
                    }
                )
            else:  # legacy
                entries.append({"filename": key, "filesize": len(data), "checksum": digest, "links": {"download": url}})
        listing = {"entries": {e["key"]: e for e in entries}} if shape == "rdm" else entries
        self.json_routes[RECORD_PATH] = {"id": 14974141, "files": listing}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60.0, srv.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield srv
    finally:
        watchdog.cancel()
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no local folders, and default source URLs that can only fail locally."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEGA_HOME", str(home))
    monkeypatch.delenv("MEGA_ASSETS_DIR", raising=False)
    monkeypatch.delenv("MEGA_CHECKPOINTS_DIR", raising=False)
    monkeypatch.setenv("MEGA_ASSETS_URL", "http://127.0.0.1:9/unreachable")
    monkeypatch.setenv("MEGA_ZENODO_URL", "http://127.0.0.1:9/unreachable")
    monkeypatch.setenv("MEGA_DETECTOR_URL", "http://127.0.0.1:9/unreachable")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


# ----------------------------------------------------------------------------------------------------------------
# Synthetic files
# ----------------------------------------------------------------------------------------------------------------

TINY_TEMPLATE = b"ply\nformat ascii 1.0\ncomment tiny test file\nend_header\n"
TINY_POOL0 = bytes(range(256)) * 9


def _asset(name: str, source: str, data: bytes) -> AssetFile:
    return AssetFile(name, source, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def tiny_sources(server: _Server) -> Sources:
    """Two small asset files served by the loopback server, registered with their real hashes."""
    server.publish("files/template.ply", TINY_TEMPLATE)
    server.publish("files/conn/_pool0.npy", TINY_POOL0)
    assets = (
        _asset("template.ply", "files/template.ply", TINY_TEMPLATE),
        _asset("connection_matrices/_pool0.npy", "files/conn/_pool0.npy", TINY_POOL0),
    )
    return Sources(assets_base_url=server.url, zenodo_record_url=server.url + RECORD_PATH, assets=assets, timeout=5)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Official-format files of two tiny models, and the config.json that sizes them."""
    import torch

    from mega_runtime.models.config import VQMAEConfig
    from tests.runtime.tiny_models import TINY, TINY_VIT, tiny_cvqmae, tiny_vqmae

    folder = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for name, model in (("mega_pretrained", tiny_vqmae(0)), ("mega_vit", tiny_cvqmae(1))):
        torch.save({"model": model.state_dict(), "loss": 0.0}, folder / name)
        out[name] = (folder / name).read_bytes()
    config = {"mega_pretrained": VQMAEConfig(TINY).to_dict(), "mega_vit": TINY_VIT.to_dict()}
    out["config.json"] = json.dumps({"format": "mega-runtime-checkpoints", "version": 1, "models": config}).encode()
    return out


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _write_tiny_config(folder: Path, tiny_models: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(tiny_models["config.json"])


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")] if folder.exists() else []


# ----------------------------------------------------------------------------------------------------------------
# Assets: download, reuse, failures
# ----------------------------------------------------------------------------------------------------------------


def test_assets_are_downloaded_verified_and_placed_in_the_cache(tiny_sources: Sources, isolated: Path):
    calls: list[tuple[str, int, int | None]] = []
    folder = resolve_assets_dir(progress=lambda *a: calls.append(a), sources=tiny_sources)
    assert folder == isolated / "assets"
    assert (folder / "template.ply").read_bytes() == TINY_TEMPLATE
    assert (folder / "connection_matrices" / "_pool0.npy").read_bytes() == TINY_POOL0
    assert ("template.ply", len(TINY_TEMPLATE), len(TINY_TEMPLATE)) in calls
    assert ("connection_matrices/_pool0.npy", len(TINY_POOL0), len(TINY_POOL0)) in calls
    assert _leftovers(folder) == []


def test_cached_assets_are_reused_without_a_second_request(tiny_sources: Sources, server: _Server):
    first = resolve_assets_dir(sources=tiny_sources)
    served = list(server.requests)
    assert len(served) == 2
    assert resolve_assets_dir(sources=tiny_sources) == first
    assert resolve_assets_dir(download=False, sources=tiny_sources) == first
    assert server.requests == served


def test_a_damaged_cached_asset_is_downloaded_again(tiny_sources: Sources, server: _Server):
    folder = resolve_assets_dir(sources=tiny_sources)
    (folder / "template.ply").write_bytes(b"not the template")
    with pytest.raises(WeightsError, match=r"template\.ply"):
        resolve_assets_dir(download=False, sources=tiny_sources)
    resolve_assets_dir(sources=tiny_sources)
    assert (folder / "template.ply").read_bytes() == TINY_TEMPLATE
    assert server.requests.count("/files/template.ply") == 2


@pytest.mark.parametrize(
    ("mode", "message"),
    [("corrupt", "corrupted: its sha256"), ("truncate", "interrupted: received 1152 of 2304 bytes")],
)
def test_a_bad_transfer_raises_naming_the_url_and_leaves_nothing(
    tiny_sources: Sources, server: _Server, mode: str, message: str
):
    server.modes["/files/conn/_pool0.npy"] = mode
    with pytest.raises(WeightsError) as caught:
        resolve_assets_dir(sources=tiny_sources)
    text = str(caught.value)
    assert f"{server.url}/files/conn/_pool0.npy" in text
    assert message in text
    folder = cache_dir() / "assets"
    assert not (folder / "connection_matrices" / "_pool0.npy").exists()
    assert _leftovers(folder) == []
    with pytest.raises(WeightsError, match=r"_pool0\.npy"):  # it never counts as cached
        resolve_assets_dir(download=False, sources=tiny_sources)
    del server.modes["/files/conn/_pool0.npy"]
    assert (resolve_assets_dir(sources=tiny_sources) / "connection_matrices" / "_pool0.npy").read_bytes() == TINY_POOL0


def test_http_errors_and_stalls_raise_naming_the_url(tiny_sources: Sources, server: _Server):
    missing = Sources(
        assets_base_url=server.url,
        assets=(_asset("template.ply", "files/absent.ply", b"x"),),
        timeout=5,
    )
    with pytest.raises(WeightsError, match=r"absent\.ply failed: HTTP 404"):
        resolve_assets_dir(sources=missing)
    server.modes["/files/template.ply"] = "stall"
    stalled = Sources(assets_base_url=server.url, assets=tiny_sources.assets[:1], timeout=0.2)
    with pytest.raises(WeightsError, match=r"template\.ply timed out after 0\.2 s"):
        resolve_assets_dir(sources=stalled)
    assert not (cache_dir() / "assets" / "template.ply").exists()


def test_without_download_an_empty_cache_names_the_fetch_command(tiny_sources: Sources, server: _Server):
    with pytest.raises(WeightsError) as caught:
        resolve_assets_dir(download=False, sources=tiny_sources)
    assert "template.ply" in str(caught.value) and "mega-runtime weights fetch" in str(caught.value)
    with pytest.raises(WeightsError) as caught:
        resolve_checkpoint_dir(["mega_hrnet"], download=False, sources=tiny_sources)
    assert "CVQMAE/mega_hrnet" in str(caught.value)
    assert "mega-runtime weights fetch --models mega_hrnet" in str(caught.value)
    assert server.requests == []


# ----------------------------------------------------------------------------------------------------------------
# Local folders
# ----------------------------------------------------------------------------------------------------------------


def test_assets_dir_from_the_environment_is_used_without_downloading(
    assets_dir: Path, tiny_sources: Sources, server: _Server, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MEGA_ASSETS_DIR", str(assets_dir))
    assert resolve_assets_dir(sources=tiny_sources) == assets_dir
    assert server.requests == []
    assert not cache_dir().exists()


def test_pinned_hashes_match_the_shared_assets(assets_dir: Path):
    rows = status(assets_dir=assets_dir, models=[])
    assert [r.name for r in rows] == [a.name for a in ASSET_FILES]
    bad = [(r.name, r.problem) for r in rows if not (r.ok and r.verified)]
    assert not bad


def test_a_local_assets_folder_missing_a_file_names_it_and_the_fix(tmp_path: Path, server: _Server):
    folder = tmp_path / "my-assets"
    folder.mkdir()
    (folder / "template.ply").write_bytes(b"ply")
    with pytest.raises(WeightsError) as caught:
        resolve_assets_dir(folder)
    error = caught.value
    assert str(folder) in error.message and "connection_matrices/_pool0.npy" in error.message
    assert "template.ply" not in error.message.split("lacks")[1]
    expected_fix = f"curl -L --create-dirs -o '{folder / 'connection_matrices' / '_unpool6.npy'}'"
    assert expected_fix in error.hint
    assert "dfaust2/_unpool6.npy" in error.hint
    assert "leave out --assets-dir" in error.hint


def test_a_local_checkpoint_folder_missing_files_names_them_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: _Server
):
    folder = tmp_path / "ckpts"
    (folder / "VQMAE").mkdir(parents=True)
    (folder / "VQMAE" / "mega_pretrained").write_bytes(b"anything")
    monkeypatch.setenv("MEGA_CHECKPOINTS_DIR", str(folder))
    assert resolve_checkpoint_dir(["mega_pretrained"]) == folder
    with pytest.raises(WeightsError) as caught:
        resolve_checkpoint_dir(["mega_pretrained", "mega_hrnet", "mesh_vqvae_54"])
    error = caught.value
    assert "CVQMAE/mega_hrnet, MESH_VQVAE/mesh_vqvae_54" in error.message and "MEGA_CHECKPOINTS_DIR" in error.message
    assert "https://zenodo.org/records/14974141" in error.hint
    assert f"{folder / 'CVQMAE' / 'mega_hrnet'}" in error.hint
    assert "unset MEGA_CHECKPOINTS_DIR and run `mega-runtime weights fetch --models mega_hrnet,mesh_vqvae_54`" in (
        error.hint
    )
    assert server.requests == []


def test_unknown_model_names_are_refused():
    with pytest.raises(ConfigError, match="mega_bogus"):
        resolve_checkpoint_dir(["mega_bogus"])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints from the Zenodo record
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("archive_name", "layout", "packer"),
    [
        (
            "checkpoint.tar.gz",
            {
                "mega_pretrained": "checkpoint/VQMAE/mega_pretrained",
                "mega_vit": "checkpoint/CVQMAE/mega_vit",
                "config.json": "checkpoint/config.json",
            },
            _tar_gz,
        ),
        (
            "release.zip",
            {
                "mega_pretrained": "release/weights_b",
                "mega_vit": "release/sub/a.bin",
                "config.json": "release/config.json",
            },
            _zip,
        ),
    ],
    ids=["official-layout-tar-gz", "unknown-names-zip"],
)
def test_an_archive_in_the_record_is_unpacked_and_its_models_identified_by_structure(
    server: _Server, tiny_sources: Sources, tiny_models: dict[str, bytes], archive_name, layout, packer, isolated
):
    from mega_runtime.weights.loaders import load_cvqmae, load_vqmae, model_config

    members = {layout[k]: tiny_models[k] for k in layout}
    members[layout["mega_vit"].rsplit("/", 1)[0] + "/README.txt"] = b"not a model"
    server.publish_record({"README.md": b"# MEGA", archive_name: packer(members)})

    folder = resolve_checkpoint_dir(["mega_pretrained", "mega_vit"], sources=tiny_sources)

    assert folder == isolated / "checkpoints"
    assert (folder / "VQMAE" / "mega_pretrained").read_bytes() == tiny_models["mega_pretrained"]
    assert (folder / "CVQMAE" / "mega_vit").read_bytes() == tiny_models["mega_vit"]
    load_vqmae(folder / "VQMAE" / "mega_pretrained", model_config(folder, "mega_pretrained"))
    load_cvqmae(folder / "CVQMAE" / "mega_vit", model_config(folder, "mega_vit"))
    assert f"/records/{archive_name}" in server.requests and "/records/README.md" not in server.requests
    manifest = json.loads((folder / ".mega-weights.json").read_text())["files"]
    assert manifest["mega_vit"]["sha256"] == hashlib.sha256(tiny_models["mega_vit"]).hexdigest()
    assert manifest["mega_vit"]["source"].endswith(f"/records/{archive_name}#{layout['mega_vit']}")
    assert not (isolated / "downloads").exists() or not any((isolated / "downloads").iterdir())

    served = list(server.requests)
    assert resolve_checkpoint_dir(["mega_vit", "mega_pretrained"], sources=tiny_sources) == folder
    assert server.requests == served  # cached: not even the listing is fetched again
    rows = {
        r.name: r
        for r in status(checkpoint_dir=None, models=["mega_vit", "mega_pretrained"], deep=True, sources=tiny_sources)
    }
    assert rows["mega_vit"].ok and rows["mega_vit"].verified and rows["mega_pretrained"].ok


@pytest.mark.parametrize("shape", ["legacy", "rdm"])
def test_single_files_are_fetched_by_name_and_checked_by_structure(
    server: _Server, tiny_sources: Sources, tiny_models: dict[str, bytes], shape: str, isolated: Path
):
    _write_tiny_config(isolated / "checkpoints", tiny_models)
    server.publish_record(
        {"notes.txt": b"hello", "mega_vit.pth": tiny_models["mega_vit"], "weights-x": tiny_models["mega_pretrained"]},
        shape=shape,
    )
    folder = resolve_checkpoint_dir(["mega_pretrained"], sources=tiny_sources)
    assert (folder / "VQMAE" / "mega_pretrained").read_bytes() == tiny_models["mega_pretrained"]
    assert "/records/weights-x" in server.requests
    assert "/records/mega_vit.pth" not in server.requests  # named for a model nobody asked for
    assert "/records/notes.txt" not in server.requests
    assert not (folder / "CVQMAE" / "mega_vit").exists()


def test_a_record_file_with_the_wrong_md5_raises_and_installs_nothing(
    server: _Server, tiny_sources: Sources, tiny_models: dict[str, bytes], isolated: Path
):
    _write_tiny_config(isolated / "checkpoints", tiny_models)
    server.publish_record({"mega_pretrained": tiny_models["mega_pretrained"]}, md5={"mega_pretrained": "0" * 32})
    with pytest.raises(WeightsError) as caught:
        resolve_checkpoint_dir(["mega_pretrained"], sources=tiny_sources)
    assert f"{server.url}/records/mega_pretrained" in str(caught.value) and "corrupted: its md5" in str(caught.value)
    assert not (isolated / "checkpoints" / "VQMAE").exists()
    assert _leftovers(isolated) == []


def test_a_record_without_the_model_raises_naming_it_and_the_manual_fix(
    server: _Server, tiny_sources: Sources, tiny_models: dict[str, bytes]
):
    server.publish_record({"README.md": b"# MEGA", "other.bin": b"PK\x03\x04 not a checkpoint"})
    with pytest.raises(WeightsError) as caught:
        resolve_checkpoint_dir(["mega_hrnet"], sources=tiny_sources)
    assert "did not provide CVQMAE/mega_hrnet" in caught.value.message
    assert "other.bin is not a MEGA checkpoint" in caught.value.message
    assert "https://zenodo.org/records/14974141" in caught.value.hint and "--checkpoint-dir" in caught.value.hint


def test_a_model_file_that_does_not_load_strictly_is_not_installed(
    server: _Server, tiny_sources: Sources, tiny_models: dict[str, bytes]
):
    # no config.json: the tiny VQMAE is checked against the full-size preset and refused
    server.publish_record({"mega_pretrained": tiny_models["mega_pretrained"]})
    with pytest.raises(WeightsError, match="looks like mega_pretrained but does not load"):
        resolve_checkpoint_dir(["mega_pretrained"], sources=tiny_sources)
    assert not (cache_dir() / "checkpoints" / "VQMAE" / "mega_pretrained").exists()


def test_mesh_vqvae_is_identified_and_strictly_loaded_with_the_connection_matrices(
    server: _Server, assets_dir: Path, tmp_path: Path
):
    import torch

    from mega_runtime.models.assets import load_connection_matrices
    from mega_runtime.models.mesh_vqvae import MeshVQVAE, MeshVQVAEConfig

    model = MeshVQVAE(MeshVQVAEConfig(), load_connection_matrices(assets_dir / "connection_matrices"))
    file = tmp_path / "tokenizer"
    torch.save({"model": model.state_dict(), "v2v": 0.0}, file)
    server.publish_record({"tokenizer.tar": _tar_gz({"ckpt/tok": file.read_bytes()})})
    sources = Sources(zenodo_record_url=server.url + RECORD_PATH, timeout=5)
    folder = resolve_checkpoint_dir(["mesh_vqvae_54"], assets_dir=assets_dir, sources=sources)
    assert (folder / "MESH_VQVAE" / "mesh_vqvae_54").is_file()


def test_identify_checkpoint_reads_the_model_from_its_keys():
    import torch

    from mega_runtime.models.config import BackboneConfig, CVQMAEConfig
    from mega_runtime.models.masked_transformer import CVQMAE
    from tests.runtime.tiny_models import TINY, TINY_VIT

    for backbone, expected in (("resnet", "mega_resnet"), ("hrnet", "mega_hrnet")):
        with torch.device("meta"):
            model = CVQMAE(CVQMAEConfig(BackboneConfig(backbone), TINY))
        assert identify_checkpoint(model.state_dict()) == expected
    with torch.device("meta"):
        assert identify_checkpoint(CVQMAE(TINY_VIT).state_dict()) == "mega_vit"
    transformer = ["encoder.cls_token", "decoder.head.weight"]
    assert identify_checkpoint(transformer) == "mega_pretrained"
    assert identify_checkpoint([*transformer, "decoder.cond_emb.weight"]) is None  # conditioned, no backbone
    assert identify_checkpoint(["vq_vae._embedding.weight", "encoder.model.weights0"]) == "mesh_vqvae_54"
    assert identify_checkpoint(["conv1.weight", "fc.weight"]) is None


def test_zenodo_listings_of_every_known_shape_are_parsed():
    record = "https://zenodo.org/api/records/14974141"
    current = {
        "files": [
            {
                "key": "a.zip",
                "size": 3,
                "checksum": "md5:" + "A" * 32,
                "links": {"self": f"{record}/files/a.zip/content"},
            }
        ]
    }
    rdm = {
        "files": {
            "entries": {
                "b": {
                    "key": "b",
                    "size": 4,
                    "checksum": "md5:" + "b" * 32,
                    "links": {"self": f"{record}/files/b", "content": f"{record}/files/b/content"},
                }
            }
        }
    }
    legacy = {
        "files": [
            {
                "filename": "c.pth",
                "filesize": 5,
                "checksum": "c" * 32,
                "links": {"download": "https://zenodo.org/record/14974141/files/c.pth"},
            }
        ]
    }
    bare = {
        "files": [{"key": "d e", "size": 6, "checksum": "sha1:abc"}, {"key": "x", "links": {"self": "file:///etc"}}]
    }
    assert parse_zenodo_files(current, record)[0] == weights.RemoteFile(
        "a.zip", f"{record}/files/a.zip/content", 3, "a" * 32
    )
    assert parse_zenodo_files(rdm, record)[0].url == f"{record}/files/b/content"
    assert parse_zenodo_files(legacy, record)[0] == weights.RemoteFile(
        "c.pth", "https://zenodo.org/record/14974141/files/c.pth", 5, "c" * 32
    )
    assert parse_zenodo_files(bare, record) == [weights.RemoteFile("d e", f"{record}/files/d%20e/content", 6, None)]
    with pytest.raises(WeightsError, match="no list of files"):
        parse_zenodo_files({"hits": []}, record)


def test_archives_are_extracted_without_traversal_or_links(tmp_path: Path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in (("ok/model", b"fine"), ("../escape", b"evil"), ("/abs/evil", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind, target in (("link", tarfile.SYMTYPE, "/etc/passwd"), ("hard", tarfile.LNKTYPE, "ok/model")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    archive = tmp_path / "a.tar"
    archive.write_bytes(buffer.getvalue())
    dest = tmp_path / "out" / "inner"
    assert extract_archive(archive, dest) == [dest / "ok" / "model"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "a.tar",
        "out/inner/ok/model",
    ]

    zbuffer = io.BytesIO()
    with zipfile.ZipFile(zbuffer, "w") as zf:
        zf.writestr("ok.bin", b"fine")
        zf.writestr("../../escape.bin", b"evil")
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16) | 0
        zf.writestr(link, "/etc/passwd")
    zarchive = tmp_path / "b.zip"
    zarchive.write_bytes(zbuffer.getvalue())
    zdest = tmp_path / "zout"
    assert extract_archive(zarchive, zdest) == [zdest / "ok.bin"]
    assert not (tmp_path / "escape.bin").exists() and not (zdest / "link").exists()


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
