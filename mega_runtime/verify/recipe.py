"""Rebuild the seeded reference weights described by a fixture folder.

The reference fixtures (``shared/fixtures/<name>/``) do not ship checkpoints. They
describe the weights with the recipe ``seeded-normal-v1``: an ordered key list
(``keys.json``), an integer seed, per-key gains, aliases (keys that hold the same
tensor as an earlier key) and a few tensors stored verbatim (``explicit.npz``).
This module turns that description back into an official-format state dict and
checkpoint file. It needs numpy and torch only.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mega_runtime.errors import FixtureError

RECIPE_NAME = "seeded-normal-v1"


@dataclass(frozen=True)
class FixtureSpec:
    """What ``fixture.json`` says about one fixture folder."""

    path: Path
    name: str
    kind: str
    meta: dict

    @classmethod
    def read(cls, folder: Path | str) -> FixtureSpec:
        folder = Path(folder)
        meta_path = folder / "fixture.json"
        if not meta_path.is_file():
            raise FixtureError(
                f"{folder} is not a fixture folder: it has no fixture.json",
                hint="pass folders such as shared/fixtures/cvqmae_resnet",
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise FixtureError(f"{meta_path} is not valid JSON: {exc}") from exc
        return cls(path=folder, name=str(meta.get("name", folder.name)), kind=str(meta["kind"]), meta=meta)


def build_state_dict(folder: Path | str, section: str | None = None) -> OrderedDict[str, np.ndarray]:
    """Rebuild the fixture's state dict as numpy arrays, in ``keys.json`` order.

    Aliased keys map to the very same array object as their target.
    ``section`` names a sub-dict of fixture.json that holds the recipe (the training fixtures keep it in
    ``weights`` and ``tokenizer``, with the key list and explicit tensors named there by ``keys``/``explicit``
    and the hash as ``state_dict_sha256_initial`` or ``state_dict_sha256``).
    Raises :class:`FixtureError` when the folder is incomplete or the rebuilt
    weights do not hash to the stated SHA-256.
    """
    spec = FixtureSpec.read(folder)
    meta = spec.meta if section is None else spec.meta.get(section)
    if not isinstance(meta, dict):
        raise FixtureError(f"{spec.path}: fixture.json has no {section!r} weight recipe")
    if meta.get("recipe") != RECIPE_NAME:
        raise FixtureError(
            f"{spec.path}: unknown weight recipe {meta.get('recipe')!r}; this runtime knows {RECIPE_NAME!r}"
        )
    keys = json.loads((spec.path / str(meta.get("keys", "keys.json"))).read_text())
    gains = {k: float(v) for k, v in meta.get("gains", {}).items()}
    aliases = dict(meta.get("aliases", {}))
    with np.load(spec.path / str(meta.get("explicit", "explicit.npz")), allow_pickle=False) as npz:
        explicit = {k: npz[k] for k in npz.files}

    rng = np.random.default_rng(int(meta["seed"]))
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, shape, dtype in keys:
        shape = tuple(int(s) for s in shape)
        if key in aliases:
            out[key] = out[aliases[key]]
        elif key in explicit:
            value = explicit[key]
            if value.shape != shape or value.dtype != np.dtype(dtype):
                raise FixtureError(
                    f"{spec.path}: explicit tensor {key} is {value.shape} {value.dtype}, keys.json says {shape} {dtype}"
                )
            out[key] = value
        else:
            z = rng.standard_normal(shape)
            fan_in = int(np.prod(shape[1:]))
            gain = gains.get(key, 1.0)
            out[key] = ((z * gain) / np.sqrt(float(fan_in))).astype(np.float32)

    expected = meta.get("state_dict_sha256") or meta.get("state_dict_sha256_initial")
    if expected:
        digest = state_dict_sha256(out)
        if digest != expected:
            raise FixtureError(f"{spec.path}: rebuilt weights hash to {digest}, fixture.json says {expected}")
    return out


def state_dict_sha256(state: OrderedDict[str, np.ndarray]) -> str:
    """SHA-256 of all tensors' little-endian C-order bytes, concatenated in order."""
    h = hashlib.sha256()
    for value in state.values():
        arr = np.ascontiguousarray(value)
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def save_official_checkpoint(state: OrderedDict[str, np.ndarray], path: Path | str) -> Path:
    """Write ``state`` as the official training code does: ``{"model": ..., "loss": 0.0}``.

    Aliased entries (the same numpy object) become the same torch tensor, as in
    the official Mesh-VQ-VAE files.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    by_id: dict[int, torch.Tensor] = {}
    model: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        tensor = by_id.get(id(value))
        if tensor is None:
            tensor = torch.from_numpy(np.array(value, copy=True))
            by_id[id(value)] = tensor
        model[key] = tensor
    torch.save({"model": model, "loss": 0.0}, path)
    return path
