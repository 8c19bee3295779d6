"""Which of the 54 Mesh-VQ-VAE tokens own which of the 6890 body vertices (numpy only, no torch).

The decoder of the Mesh-VQ-VAE lifts its 54 latent points to the 6890 vertices through the unpooling layers
``unpool6 .. unpool0`` (:data:`mega_runtime.models.assets.CONNECTION_LAYERS`). Each connection matrix lists,
for every output point, the input points it reads and their graph distance d. The influence map follows that
chain: every layer becomes a row-stochastic matrix (each output point reads its listed inputs with weight
``exp(-d)``, normalised per row; padding ids are dropped), and their product ``A_unpool0 @ ... @ A_unpool6``
is a (6890, 54) matrix whose row v says how much of vertex v comes from each token. Rows sum to 1; a weight
is non-zero exactly when the token reaches the vertex through the chain. The learned per-neighbour weights
are not used: the map describes the graph, so it is the same for every checkpoint.

Named regions are vertex sets cut from ``template.ply`` by coordinates (see :func:`region_vertices` for the
rule) and mapped to token sets by :func:`tokens_for_vertices`.

``python -m mega_runtime.models.token_regions --assets-dir DIR --write-addon-data`` writes the derived map
to :data:`ADDON_DATA` (the add-on reads it without torch); ``--check-addon-data`` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mega_runtime.constants import NUM_VERTICES
from mega_runtime.errors import AssetError
from mega_runtime.models.assets import load_connection_matrices, read_template_ply

__all__ = [
    "ADDON_DATA",
    "DECODER_LAYERS",
    "NUM_TOKENS",
    "REGION_NAMES",
    "TokenRegions",
    "addon_data_is_current",
    "addon_payload",
    "build_token_regions",
    "influence_matrix",
    "region_vertices",
    "tokens_covering",
    "tokens_for_vertices",
    "write_addon_data",
]

logger = logging.getLogger(__name__)

NUM_TOKENS = 54
"""Latent points (tokens) of the Mesh-VQ-VAE."""

DECODER_LAYERS: tuple[str, ...] = ("unpool6", "unpool5", "unpool4", "unpool3", "unpool2", "unpool1", "unpool0")
"""The decoder's connection layers, from the tokens up to the vertices."""

REGION_NAMES: tuple[str, ...] = (
    "head",
    "torso",
    "left_arm",
    "right_arm",
    "left_hand",
    "right_hand",
    "hands",
    "left_leg",
    "right_leg",
    "left_foot",
    "right_foot",
    "feet",
)
"""Named regions, in a fixed order."""

ADDON_DATA = "mega_blender/token_regions.json"
"""The derived map the add-on reads (relative to the repository root)."""

_REPO_ROOT = Path(__file__).resolve().parents[2]

# Region rule on the template (y up, metres; x is the body's left (+x) / right (-x)). ``h`` is the height above
# the lowest vertex as a fraction of the template's height, ``x`` is relative to the mean x of the head.
_HEAD_FROM = 0.87  # h at and above: head and neck
_FEET_BELOW = 0.08  # h below: feet
_HIPS_AT = 0.52  # h below: legs (inner) and hands (outer)
_HAND_OUTSIDE = 0.24  # |x| at and above, below the hips: hands (the template's arms hang beside the thighs)
_ARM_OUTSIDE = 0.17  # |x| at and above, between hips and head: arms; inside: torso


@dataclass(frozen=True, eq=False)
class TokenRegions:
    """The vertex-token influence map and the named regions.

    Attributes:
        weights: float32 (6890, 54); row v is the share of vertex v coming from each token, rows sum to 1.
        owner: int16 (6890,); the token with the largest weight for each vertex.
        regions: region name -> int32 sorted vertex indices (see :func:`region_vertices`).
        region_tokens: region name -> int16 sorted token indices (see :func:`tokens_for_vertices`).
    """

    weights: np.ndarray
    owner: np.ndarray
    regions: Mapping[str, np.ndarray]
    region_tokens: Mapping[str, np.ndarray]


def _layer_matrix(name: str, table: np.ndarray, inputs: int) -> np.ndarray:
    """Dense row-stochastic (rows, inputs) float64 matrix of one connection table (weights ``exp(-distance)``)."""
    rows = table.shape[0]
    out = np.zeros((rows, inputs), dtype=np.float64)
    for p in range(rows):
        count = int(table[p, 0])
        ids = table[p, 1 : 1 + 2 * count : 2]
        dist = table[p, 2 : 2 + 2 * count : 2].astype(np.float64)
        keep = (ids >= 0) & (ids < inputs)
        ids, dist = ids[keep], dist[keep]
        if ids.size == 0:
            raise AssetError(
                f"connection matrix {name}: output point {p} reads no input point",
                hint="replace the connection matrices with the official MeshConvolution ones",
            )
        w = np.exp(-dist)
        np.add.at(out[p], ids, w / w.sum())
    return out


def influence_matrix(connections: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (6890, 54) float32 vertex-token influence map of the decoder layers in ``connections``.

    ``connections`` maps each name of :data:`DECODER_LAYERS` to its table (as read by
    :func:`mega_runtime.models.assets.load_connection_matrices`); AssetError if one is missing or its sizes
    do not chain from 54 points to 6890.
    """
    inputs = NUM_TOKENS
    total = np.eye(NUM_TOKENS, dtype=np.float64)
    for name in DECODER_LAYERS:
        if name not in connections:
            raise AssetError(f"connection matrix {name} is missing", hint="pass every decoder layer")
        table = np.asarray(connections[name])
        layer = _layer_matrix(name, table, inputs)
        total = layer @ total
        inputs = table.shape[0]
    if inputs != NUM_VERTICES:
        raise AssetError(
            f"the decoder layers end with {inputs} points, not {NUM_VERTICES}",
            hint="replace the connection matrices with the official MeshConvolution ones",
        )
    return total.astype(np.float32)


def region_vertices(template_vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Named vertex sets of the template (float (6890, 3), y up, metres), each int32 sorted indices.

    Rule, with h the height above the lowest vertex as a fraction of the body height and x the lateral offset
    from the head's mean x (+x is the body's left): head h >= 0.87; feet h < 0.08; below the hips
    (h < 0.52) hands where |x| >= 0.24, else legs; between hips and head arms where |x| >= 0.17, else torso.
    Left/right split by the sign of x; ``hands`` and ``feet`` are the unions.
    """
    v = np.asarray(template_vertices, dtype=np.float64)
    y = v[:, 1]
    h = (y - y.min()) / max(float(y.max() - y.min()), 1e-9)
    head = h >= _HEAD_FROM
    x = v[:, 0] - v[head, 0].mean()
    left = x >= 0
    feet = h < _FEET_BELOW
    low = (h < _HIPS_AT) & ~feet
    hands = low & (np.abs(x) >= _HAND_OUTSIDE)
    legs = low & ~hands
    middle = (h >= _HIPS_AT) & ~head
    arms = middle & (np.abs(x) >= _ARM_OUTSIDE)
    torso = middle & ~arms
    masks = {
        "head": head,
        "torso": torso,
        "left_arm": arms & left,
        "right_arm": arms & ~left,
        "left_hand": hands & left,
        "right_hand": hands & ~left,
        "hands": hands,
        "left_leg": legs & left,
        "right_leg": legs & ~left,
        "left_foot": feet & left,
        "right_foot": feet & ~left,
        "feet": feet,
    }
    return {name: np.flatnonzero(masks[name]).astype(np.int32) for name in REGION_NAMES}


def tokens_for_vertices(weights: np.ndarray, vertices: np.ndarray, min_share: float = 0.5) -> np.ndarray:
    """Tokens that own a vertex set: int16 sorted indices.

    A token is taken when at least ``min_share`` of its total influence (column of ``weights``, (6890, 54))
    falls on ``vertices`` (int indices). When none qualifies, the tokens that are the largest weight of at least
    one of the vertices are taken instead, so a non-empty vertex set always has owners.
    """
    idx = np.unique(np.asarray(vertices, dtype=np.int64))
    if idx.size == 0:
        return np.zeros(0, dtype=np.int16)
    if idx[0] < 0 or idx[-1] >= weights.shape[0]:
        raise AssetError(
            f"vertex indices must lie in [0, {weights.shape[0]})", hint="select vertices of an SMPL-topology mesh"
        )
    share = weights[idx].sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-12)
    tokens = np.flatnonzero(share >= min_share)
    if tokens.size == 0:
        tokens = np.unique(weights[idx].argmax(axis=1))
    return tokens.astype(np.int16)


def tokens_covering(weights: np.ndarray, vertices: np.ndarray, coverage: float = 0.95) -> np.ndarray:
    """The fewest tokens that together give ``coverage`` of the vertices' influence: int16 sorted indices.

    Tokens are ranked by their summed weight over ``vertices`` (int indices into the rows of ``weights``,
    (6890, 54)) and taken until their share of the total reaches ``coverage`` (0 < coverage <= 1). Keeping these
    tokens locks the vertices far better than :func:`tokens_for_vertices`, at the price of more kept tokens.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    idx = np.unique(np.asarray(vertices, dtype=np.int64))
    if idx.size == 0:
        return np.zeros(0, dtype=np.int16)
    if idx[0] < 0 or idx[-1] >= weights.shape[0]:
        raise AssetError(
            f"vertex indices must lie in [0, {weights.shape[0]})", hint="select vertices of an SMPL-topology mesh"
        )
    mass = weights[idx].astype(np.float64).sum(axis=0)
    order = np.argsort(-mass, kind="stable")
    cumulative = np.cumsum(mass[order]) / mass.sum()
    count = int(np.searchsorted(cumulative, coverage - 1e-9)) + 1
    return np.sort(order[: min(count, weights.shape[1])]).astype(np.int16)


def build_token_regions(assets_dir: Path | str) -> TokenRegions:
    """The map from ``assets_dir`` (``template.ply`` and ``connection_matrices/``); AssetError if absent."""
    folder = Path(assets_dir)
    weights = influence_matrix(load_connection_matrices(folder / "connection_matrices", DECODER_LAYERS))
    regions = region_vertices(read_template_ply(folder / "template.ply").vertices)
    region_tokens = {name: tokens_for_vertices(weights, verts) for name, verts in regions.items()}
    owner = weights.argmax(axis=1).astype(np.int16)
    return TokenRegions(weights=weights, owner=owner, regions=regions, region_tokens=region_tokens)


def addon_payload(regions: TokenRegions) -> dict[str, object]:
    """The JSON-ready data the add-on reads: the owner token of each vertex and each region's tokens/vertices."""
    return {
        "generated_by": "python -m mega_runtime.models.token_regions --write-addon-data",
        "tokens": NUM_TOKENS,
        "vertices": int(regions.weights.shape[0]),
        "owner": [int(t) for t in regions.owner],
        "regions": {
            name: {
                "tokens": [int(t) for t in regions.region_tokens[name]],
                "vertices": [int(i) for i in regions.regions[name]],
            }
            for name in REGION_NAMES
        },
    }


def _render(regions: TokenRegions) -> str:
    return json.dumps(addon_payload(regions), separators=(",", ":"), sort_keys=True) + "\n"


def write_addon_data(assets_dir: Path | str, root: Path | None = None) -> Path:
    """Write :data:`ADDON_DATA` under ``root`` (default the repository) from ``assets_dir``; returns its path."""
    path = (root or _REPO_ROOT) / ADDON_DATA
    path.write_text(_render(build_token_regions(assets_dir)), encoding="utf-8")
    return path


def addon_data_is_current(assets_dir: Path | str, root: Path | None = None) -> bool:
    """True when :data:`ADDON_DATA` under ``root`` equals what ``assets_dir`` gives now."""
    path = (root or _REPO_ROOT) / ADDON_DATA
    if not path.is_file():
        return False
    return path.read_text(encoding="utf-8") == _render(build_token_regions(assets_dir))


def main(argv: list[str] | None = None) -> int:
    """Command line: write or check :data:`ADDON_DATA`; exit 0 done/current, 1 stale."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m mega_runtime.models.token_regions", description=__doc__)
    parser.add_argument("--assets-dir", type=Path, required=True, help="folder with template.ply, connection_matrices/")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-addon-data", action="store_true", help=f"regenerate {ADDON_DATA}")
    action.add_argument("--check-addon-data", action="store_true", help=f"exit 1 when {ADDON_DATA} is stale")
    args = parser.parse_args(argv)
    if args.write_addon_data:
        logger.info("wrote %s", write_addon_data(args.assets_dir))
        return 0
    if not addon_data_is_current(args.assets_dir):
        logger.error("%s is stale; run: python -m mega_runtime.models.token_regions --write-addon-data", ADDON_DATA)
        return 1
    logger.info("%s is current", ADDON_DATA)
    return 0


if __name__ == "__main__":
    sys.exit(main())
