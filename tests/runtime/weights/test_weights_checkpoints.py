"""Checkpoints of ``mega_runtime.weights`` from the Zenodo record: archives and single files found, unpacked and
identified by their structure, strictly loaded before they are installed, wrong checksums and missing models
refused; the record listings of every known shape, and archive extraction without traversal or links."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from mega_runtime import weights
from mega_runtime.errors import WeightsError
from mega_runtime.weights import (
    Sources,
    cache_dir,
    extract_archive,
    identify_checkpoint,
    parse_zenodo_files,
    resolve_checkpoint_dir,
    status,
)
from tests.runtime.weights.loopback import RECORD_PATH
from tests.runtime.weights.loopback import Server as _Server
from tests.runtime.weights.loopback import leftovers as _leftovers
from tests.runtime.weights.loopback import tar_gz as _tar_gz
from tests.runtime.weights.loopback import write_tiny_config as _write_tiny_config
from tests.runtime.weights.loopback import zip_bytes as _zip

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
