"""HRNet-W48 backbone: official checkpoint layout and official numerics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mega_runtime.models.hrnet import OUT_CHANNELS, HRNetW48
from mega_runtime.verify.recipe import build_state_dict

PREFIX = "backbone."


def _official_backbone_entries(manifests_dir: Path) -> list[tuple[str, tuple[int, ...], str]]:
    manifest = json.loads((manifests_dir / "manifest_cvqmae_hrnet.json").read_text())
    return [
        (key.removeprefix(PREFIX), tuple(entry["shape"]), entry["dtype"])
        for key, entry in manifest["keys"].items()
        if key.startswith(PREFIX)
    ]


def test_hrnet_keys_match_official_manifest(manifests_dir: Path) -> None:
    official = _official_backbone_entries(manifests_dir)
    ours = [
        (key, tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in HRNetW48().state_dict().items()
    ]
    missing = sorted(set(official) - set(ours))
    extra = sorted(set(ours) - set(official))
    assert not missing and not extra, f"state_dict differs from the manifest: missing {missing[:5]}, extra {extra[:5]}"
    first_diff = next((i for i, (a, b) in enumerate(zip(official, ours, strict=False)) if a != b), None)
    assert first_diff is None, (
        f"same entries but different order: index {first_diff} is {ours[first_diff]}, official {official[first_diff]}"
    )


def test_hrnet_matches_official_backbone_features(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "cvqmae_hrnet"
    state = {
        key.removeprefix(PREFIX): torch.from_numpy(np.array(value))
        for key, value in build_state_dict(folder).items()
        if key.startswith(PREFIX)
    }
    model = HRNetW48()
    model.load_state_dict(state, strict=True)
    model.eval()
    with np.load(folder / "reference.npz") as ref:
        img, expected = ref["img"], ref["backbone_features"]
    with torch.no_grad():
        out = model(torch.from_numpy(img)).numpy()
    assert out.shape == expected.shape == (img.shape[0], OUT_CHANNELS, 7, 7), f"shape {out.shape} vs {expected.shape}"
    max_diff = float(np.abs(out - expected).max())
    bound = 1e-4 * float(np.abs(expected).max())
    assert max_diff <= bound, f"backbone features differ from the official ones: max|diff| {max_diff:.3g} > {bound:.3g}"
