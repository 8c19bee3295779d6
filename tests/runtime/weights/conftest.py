"""Fixtures of the ``mega_runtime.weights`` tests: the loopback server, an isolated cache, tiny sources and models.

Nothing here reaches the real network: every download goes to a server started by the test on
127.0.0.1 (stopped at teardown, and by a watchdog after 60 s), and the environment's source URLs
point at a closed local port (the autouse ``isolated`` fixture, for every test in this folder) so that a stray
default would fail fast instead of going out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mega_runtime.weights import Sources
from tests.runtime.weights.loopback import RECORD_PATH, TINY_POOL0, TINY_TEMPLATE, Server, asset


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root)
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


@pytest.fixture
def tiny_sources(server: Server) -> Sources:
    """Two small asset files served by the loopback server, registered with their real hashes."""
    server.publish("files/template.ply", TINY_TEMPLATE)
    server.publish("files/conn/_pool0.npy", TINY_POOL0)
    assets = (
        asset("template.ply", "files/template.ply", TINY_TEMPLATE),
        asset("connection_matrices/_pool0.npy", "files/conn/_pool0.npy", TINY_POOL0),
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
