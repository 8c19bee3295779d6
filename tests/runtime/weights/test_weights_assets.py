"""Assets of ``mega_runtime.weights``: downloaded, verified and cached; damaged, truncated, stalled or missing
files refused naming the URL; local folders (``--assets-dir``, ``MEGA_ASSETS_DIR``, ``MEGA_CHECKPOINTS_DIR``) used
as they are, and a missing file named with the command that fixes it. The loopback server and the isolated cache
come from this folder's ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mega_runtime.errors import ConfigError, WeightsError
from mega_runtime.weights import ASSET_FILES, Sources, cache_dir, resolve_assets_dir, resolve_checkpoint_dir, status
from tests.runtime.weights.loopback import TINY_POOL0, TINY_TEMPLATE
from tests.runtime.weights.loopback import Server as _Server
from tests.runtime.weights.loopback import asset as _asset
from tests.runtime.weights.loopback import leftovers as _leftovers

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
