"""Loading official checkpoint files: strictness and the errors users see."""

from __future__ import annotations

import json

import pytest
import torch

from mega_runtime.errors import CheckpointError
from mega_runtime.models.config import VQMAEConfig
from mega_runtime.models.masked_transformer import VQMAE
from mega_runtime.weights.checkpoint import load_into, official_to_runtime_keys, read_state_dict
from mega_runtime.weights.loaders import load_vqmae, model_config, write_folder_config
from tests.runtime.tiny_models import TINY, tiny_vqmae


class _Custom:
    """A class only pickle can restore (weights_only refuses it)."""


@pytest.fixture()
def official_file(tmp_path):
    """A tiny VQMAE saved the way the official training code saves it."""
    model = tiny_vqmae()
    path = tmp_path / "VQMAE" / "mega_pretrained"
    path.parent.mkdir()
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}}, "epoch": 3, "loss": 0.5}, path)
    return path, model


def test_official_file_loads_and_ignores_training_entries(official_file):
    path, original = official_file
    loaded = load_vqmae(path, VQMAEConfig(TINY))
    for (k, a), (k2, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert not loaded.training


def test_leading_module_prefix_is_stripped(tmp_path):
    model = tiny_vqmae()
    path = tmp_path / "ddp"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    load_vqmae(path, VQMAEConfig(TINY))


def test_key_mapping_only_touches_a_leading_module_prefix():
    t = torch.zeros(1)
    assert list(official_to_runtime_keys({"module.a.b": t, "x.module.c": t})) == ["a.b", "x.module.c"]


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        read_state_dict(tmp_path / "CVQMAE" / "mega_hrnet")
    assert "mega_hrnet" in str(info.value) and "weights fetch" in str(info.value)


def test_truncated_file_is_reported_as_truncated(official_file, tmp_path):
    path, _ = official_file
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch file"):
        read_state_dict(cut)


def test_file_that_needs_pickled_code_is_refused(tmp_path):
    path = tmp_path / "pickled"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _Custom()}, path)
    with pytest.raises(CheckpointError, match="pickled Python code"):
        read_state_dict(path)


def test_wrong_keys_are_listed_in_one_error(official_file, tmp_path):
    _, model = official_file
    state = dict(model.state_dict())
    state.pop("decoder.head.bias")
    state["decoder.extra.weight"] = torch.zeros(2)
    state["encoder.proj.weight"] = torch.zeros(3, 4)
    path = tmp_path / "bad"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_vqmae(path, VQMAEConfig(TINY))
    text = str(info.value)
    assert str(path) in text
    assert "missing keys (1): decoder.head.bias" in text
    assert "unexpected keys (1): decoder.extra.weight" in text
    assert "mis-shaped keys (1): encoder.proj.weight (file (3, 4), model (512, 32))" in text


def test_file_without_model_weights_is_refused(tmp_path):
    path = tmp_path / "empty"
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="holds no model weights"):
        read_state_dict(path)


def test_load_into_rejects_integer_tensors_for_float_parameters():
    model = VQMAE(VQMAEConfig(TINY))
    state = {k: v.long() if k == "decoder.head.bias" else v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="wrong kind"):
        load_into(model, state, "memory")


def test_folder_config_names_the_model_sizes(tmp_path):
    write_folder_config(tmp_path, {"mega_pretrained": VQMAEConfig(TINY).to_dict()})
    assert model_config(tmp_path, "mega_pretrained") == VQMAEConfig(TINY)
    assert model_config(tmp_path / "none", "mega_pretrained").transformer.emb_dim == 1024
    assert json.loads((tmp_path / "config.json").read_text())["format"] == "mega-runtime-checkpoints"
