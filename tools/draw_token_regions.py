"""Draw which of the 54 Mesh-VQ-VAE tokens owns each vertex of the SMPL template (docs/token-regions.png).

    python tools/draw_token_regions.py --assets-dir ../shared/assets --out docs/token-regions.png

Front and back views of ``template.ply`` (orthographic, y up), every triangle coloured by the owner token of its
first vertex (:func:`mega_runtime.models.token_regions.build_token_regions`) with simple Lambert shading, each
token's number written at the centre of the vertices it owns in the view where that centre faces the camera.
Triangles are painted back to front (OpenCV polygons), so no GPU or renderer is needed.
"""

from __future__ import annotations

import argparse
import colorsys
import logging
from pathlib import Path

import cv2
import numpy as np

from mega_runtime.models.assets import read_template_ply
from mega_runtime.models.token_regions import NUM_TOKENS, build_token_regions

log = logging.getLogger(__name__)

#: Pixels per metre of the drawing and the margin around each view.
SCALE_PX = 560
MARGIN_PX = 40


def token_colours() -> np.ndarray:
    """(54, 3) uint8 BGR colours, neighbouring token numbers far apart in hue (golden-ratio steps)."""
    colours = []
    for t in range(NUM_TOKENS):
        hue = (t * 0.618033988749895) % 1.0
        light = 0.45 + 0.15 * (t % 3) / 2
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colours.append((b * 255, g * 255, r * 255))
    return np.asarray(colours, dtype=np.uint8)


def draw_view(vertices: np.ndarray, faces: np.ndarray, owner: np.ndarray, back: bool) -> np.ndarray:
    """One orthographic view (BGR uint8): front looks along −z (the template faces +z), back along +z."""
    flip = np.array([-1.0, 1.0, -1.0]) if back else np.ones(3)
    v = vertices * flip
    low, high = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    size = ((high - low) * SCALE_PX).astype(int) + 2 * MARGIN_PX
    image = np.full((size[1], size[0], 3), 255, np.uint8)
    xy = np.stack([(v[:, 0] - low[0]) * SCALE_PX + MARGIN_PX, (high[1] - v[:, 1]) * SCALE_PX + MARGIN_PX], axis=1)
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    shade = np.clip(0.35 + 0.65 * normals[:, 2], 0.0, 1.0)
    colours = token_colours()[owner[faces[:, 0]]].astype(np.float64) * shade[:, None]
    for f in np.argsort(tri[:, :, 2].mean(axis=1)):  # far to near
        if normals[f, 2] <= 0:
            continue
        points = np.round(xy[faces[f]] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
        cv2.fillConvexPoly(image, points, colours[f].tolist(), lineType=cv2.LINE_AA, shift=2)
    for t in range(NUM_TOKENS):
        mine = owner == t
        centre = v[mine].mean(axis=0)
        if centre[2] < np.median(v[:, 2]):
            continue  # labelled in the other view
        x, y = (centre[0] - low[0]) * SCALE_PX + MARGIN_PX, (high[1] - centre[1]) * SCALE_PX + MARGIN_PX
        for colour, width in (((255, 255, 255), 3), ((0, 0, 0), 1)):
            cv2.putText(image, str(t), (int(x) - 8, int(y) + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, width)
    cv2.putText(image, "back" if back else "front", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets-dir", required=True, type=Path, help="template.ply and connection_matrices/")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    template = read_template_ply(args.assets_dir / "template.ply")
    regions = build_token_regions(args.assets_dir)
    owner = np.asarray(regions.owner)
    views = [draw_view(template.vertices.astype(np.float64), template.faces, owner, back) for back in (False, True)]
    height = max(v.shape[0] for v in views)
    views = [np.pad(v, ((0, height - v.shape[0]), (0, 0), (0, 0)), constant_values=255) for v in views]
    if not cv2.imwrite(str(args.out), np.concatenate(views, axis=1)):
        parser.error(f"could not write {args.out}")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
