"""The vertex-token influence map of the Mesh-VQ-VAE decoder, the named regions and the add-on's derived copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.errors import AssetError
from mega_runtime.models import token_regions as tr
from mega_runtime.models.assets import load_connection_matrices

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def regions(assets_dir: Path) -> tr.TokenRegions:
    return tr.build_token_regions(assets_dir)


@pytest.fixture(scope="module")
def connections(assets_dir: Path) -> dict[str, np.ndarray]:
    return load_connection_matrices(assets_dir / "connection_matrices", tr.DECODER_LAYERS)


def _reachable(connections: dict[str, np.ndarray], token: int) -> set[int]:
    """Vertices whose chain of listed inputs reaches ``token`` (an independent, set-based walk)."""
    current = {token}
    inputs = tr.NUM_TOKENS
    for name in tr.DECODER_LAYERS:
        table = connections[name]
        nxt = set()
        for p in range(table.shape[0]):
            ids = table[p, 1 : 1 + 2 * int(table[p, 0]) : 2]
            if any(int(i) in current for i in ids if i < inputs):
                nxt.add(p)
        current, inputs = nxt, table.shape[0]
    return current


def test_ok_influence_rows_are_distributions_and_every_token_owns_vertices(regions):
    w = regions.weights
    assert w.shape == (6890, 54) and w.dtype == np.float32
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert regions.owner.shape == (6890,)
    assert np.array_equal(regions.owner, w.argmax(axis=1))
    assert set(np.unique(regions.owner)) == set(range(54))


@pytest.mark.parametrize("token", [0, 17, 53])
def test_ok_influence_support_is_the_unpooling_reach(regions, connections, token):
    support = set(np.flatnonzero(regions.weights[:, token] > 0).tolist())
    assert support == _reachable(connections, token)


def test_ok_regions_partition_the_template_and_are_roughly_mirrored(regions):
    parts = ["head", "torso", "left_arm", "right_arm", "left_hand", "right_hand", "left_leg", "right_leg",
             "left_foot", "right_foot"]  # fmt: skip
    counts = np.zeros(6890, dtype=int)
    for name in parts:
        counts[regions.regions[name]] += 1
    assert np.all(counts == 1)
    assert np.array_equal(
        regions.regions["hands"], np.union1d(regions.regions["left_hand"], regions.regions["right_hand"])
    )
    assert np.array_equal(
        regions.regions["feet"], np.union1d(regions.regions["left_foot"], regions.regions["right_foot"])
    )
    for side in ("arm", "hand", "leg", "foot"):
        left, right = len(regions.regions[f"left_{side}"]), len(regions.regions[f"right_{side}"])
        assert 0.75 < left / right < 1.33, (side, left, right)
    for name in tr.REGION_NAMES:
        assert len(regions.region_tokens[name]) > 0, name


def test_ok_region_tokens_are_mostly_inside_their_region(regions):
    w = regions.weights
    for name in tr.REGION_NAMES:
        tokens = regions.region_tokens[name].astype(int)
        share = w[regions.regions[name]][:, tokens].sum(axis=0) / w[:, tokens].sum(axis=0)
        owners = np.unique(regions.owner[regions.regions[name]])
        assert np.all(share >= 0.5) or np.array_equal(tokens, owners), name


def test_ok_head_tokens_and_hand_tokens_do_not_overlap(regions):
    assert not set(regions.region_tokens["head"].tolist()) & set(regions.region_tokens["hands"].tolist())
    assert not set(regions.region_tokens["left_hand"].tolist()) & set(regions.region_tokens["right_hand"].tolist())


def test_ok_tokens_for_vertices_edges(regions):
    w = regions.weights
    assert tr.tokens_for_vertices(w, np.arange(6890)).tolist() == list(range(54))
    assert tr.tokens_for_vertices(w, np.zeros(0, dtype=int)).size == 0
    one = tr.tokens_for_vertices(w, np.array([100]))  # one vertex owns no token's majority: its argmax owner
    assert one.tolist() == [int(regions.owner[100])]


def test_ng_tokens_for_vertices_out_of_range(regions):
    with pytest.raises(AssetError, match="vertex indices"):
        tr.tokens_for_vertices(regions.weights, np.array([6890]))


def test_ng_missing_or_broken_decoder_layer(connections):
    broken = dict(connections)
    del broken["unpool0"]
    with pytest.raises(AssetError, match="unpool0 is missing"):
        tr.influence_matrix(broken)
    short = dict(connections)
    short["unpool0"] = connections["unpool0"][:100]
    with pytest.raises(AssetError, match="not 6890"):
        tr.influence_matrix(short)


# -- the add-on's derived copy ---------------------------------------------------------------------------------------


def test_ok_addon_data_is_current(assets_dir):
    assert tr.addon_data_is_current(assets_dir), (
        f"{tr.ADDON_DATA} is stale: run python -m mega_runtime.models.token_regions --assets-dir ../shared/assets "
        "--write-addon-data"
    )


def test_ok_addon_data_reads_with_json_only(regions):
    data = json.loads((REPO_ROOT / tr.ADDON_DATA).read_text(encoding="utf-8"))
    assert data["tokens"] == 54 and data["vertices"] == 6890
    assert data["owner"] == regions.owner.tolist()
    assert list(data["regions"]) == sorted(tr.REGION_NAMES)
    assert data["regions"]["head"]["tokens"] == regions.region_tokens["head"].tolist()


def test_ng_stale_addon_data_is_detected(assets_dir, tmp_path):
    target = tmp_path / tr.ADDON_DATA
    target.parent.mkdir(parents=True)
    assert not tr.addon_data_is_current(assets_dir, tmp_path)
    assert tr.write_addon_data(assets_dir, tmp_path) == target
    assert tr.addon_data_is_current(assets_dir, tmp_path)
    data = json.loads(target.read_text(encoding="utf-8"))
    data["owner"][0] = (data["owner"][0] + 1) % 54
    target.write_text(json.dumps(data), encoding="utf-8")
    assert not tr.addon_data_is_current(assets_dir, tmp_path)


def test_ok_check_command_exit_status(assets_dir):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mega_runtime.models.token_regions",
            "--assets-dir",
            str(assets_dir),
            "--check-addon-data",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "is current" in done.stderr


def test_ok_tokens_covering_grows_with_coverage(regions):
    w = regions.weights
    head = regions.regions["head"]
    sizes = [len(tr.tokens_covering(w, head, c)) for c in (0.5, 0.8, 0.95, 1.0)]
    assert sizes == sorted(sizes) and sizes[0] >= 1
    picked = tr.tokens_covering(w, head, 0.95).astype(int)
    assert w[head][:, picked].sum() / w[head].sum() >= 0.95 - 1e-6
    assert set(tr.tokens_for_vertices(w, head).tolist()) <= set(picked.tolist())
    assert tr.tokens_covering(w, np.zeros(0, dtype=int)).size == 0
    with pytest.raises(ValueError, match="coverage"):
        tr.tokens_covering(w, head, 0.0)


def test_ok_region_picture_colours_every_token_in_one_of_two_views(assets_dir, tmp_path):
    import cv2

    out = tmp_path / "regions.png"
    done = subprocess.run(
        [sys.executable, "tools/draw_token_regions.py", "--assets-dir", str(assets_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 500 and image.shape[1] > 800  # two views side by side
    background = np.all(image == 255, axis=2)
    assert 0.1 < 1 - background.mean() < 0.6  # a body drawn in each view, not an empty or a filled canvas
