"""A quick look at a result: the meshes drawn over the photo (torch-free, OpenCV only).

Each person's hypothesis 0 is projected with the result's pinhole camera and drawn with flat
shading, far triangles first (painter's algorithm), blended over the image. Meant for checking
alignment at a glance, not as a renderer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_COLOURS = [(222, 150, 90), (90, 180, 230), (120, 200, 120), (200, 120, 200), (90, 120, 230), (200, 200, 90)]


def project(vertices: np.ndarray, focal_px: float, principal_px: tuple[float, float]) -> np.ndarray:
    """(V, 3) camera-frame metres (x right, y down, z forward) → (V, 2) pixels."""
    z = np.where(np.abs(vertices[:, 2]) < 1e-9, 1e-9, vertices[:, 2])
    return np.stack(
        [focal_px * vertices[:, 0] / z + principal_px[0], focal_px * vertices[:, 1] / z + principal_px[1]], 1
    )


def draw_meshes(
    image_bgr: np.ndarray,
    meshes: list[np.ndarray],
    faces: np.ndarray,
    focal_px: float,
    principal_px: tuple[float, float],
    alpha: float = 0.7,
    face_colours: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Overlay of (V, 3) camera-frame meshes on a copy of the (H, W, 3) uint8 image.

    face_colours: optional per-mesh (F, 3) BGR colours (default: one colour per person), shaded.
    """
    import cv2

    canvas = image_bgr.copy()
    layer = image_bgr.copy()
    drawn = np.zeros(image_bgr.shape[:2], dtype=np.uint8)
    light = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])
    triangles = []
    for k, vertices in enumerate(meshes):
        v = np.asarray(vertices, dtype=np.float64)
        tri = v[faces]
        front = tri[:, :, 2].min(axis=1) > 1e-3
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        shade = 0.35 + 0.65 * np.abs(normals @ light)
        px = project(v, focal_px, principal_px)[faces]
        depth = tri[:, :, 2].mean(axis=1)
        colours = face_colours[k] if face_colours is not None else np.tile(_COLOURS[k % len(_COLOURS)], (len(faces), 1))
        for i in np.flatnonzero(front):
            triangles.append((depth[i], px[i], shade[i], colours[i]))
    if not triangles:
        return canvas
    triangles.sort(key=lambda t: -t[0])
    for _, pts, shade, colour in triangles:
        poly = np.round(pts * 4).astype(np.int32)
        fill = tuple(int(c * shade) for c in colour)
        cv2.fillConvexPoly(layer, poly, fill, lineType=cv2.LINE_8, shift=2)
        cv2.fillConvexPoly(drawn, poly, (255,), lineType=cv2.LINE_8, shift=2)
    mask = drawn > 0
    canvas[mask] = (alpha * layer[mask] + (1 - alpha) * image_bgr[mask]).astype(np.uint8)
    return canvas


def write_preview(result, image_bgr: np.ndarray, path: Path | str, frame: int = 0, max_side: int = 1600) -> Path:
    """Draw frame ``frame`` of ``result`` over ``image_bgr`` and write it (JPEG/PNG by suffix)."""
    import cv2

    path = Path(path)
    camera = result.meta["camera"]
    valid = result.arrays["valid"][frame]
    meshes = [result.arrays["vertices"][frame, p, 0] for p in np.flatnonzero(valid)]
    out = draw_meshes(
        image_bgr, meshes, result.arrays["faces"], camera["focal_px"], tuple(camera["principal_point_px"])
    )
    thickness = max(2, round(max(out.shape[:2]) / 600))
    for k, p in enumerate(np.flatnonzero(valid)):
        x1, y1, x2, y2 = (round(float(v)) for v in result.arrays["boxes_xyxy"][frame, p])
        cv2.rectangle(out, (x1, y1), (x2, y2), _COLOURS[k % len(_COLOURS)], thickness)
    return _write_image(out, path, max_side)


def uncertainty_colours(vertex_std: np.ndarray, faces: np.ndarray, scale_m: float) -> np.ndarray:
    """(V,) per-vertex spread in metres → (F, 3) BGR face colours on OpenCV's TURBO map (0 … scale_m)."""
    import cv2

    level = np.clip(vertex_std[faces].mean(axis=1) / max(scale_m, 1e-9), 0.0, 1.0)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0]
    return lut[np.round(level * 255).astype(int)].astype(float)


def write_uncertainty_preview(result, image_bgr: np.ndarray, path: Path | str, frame: int = 0) -> Path:
    """The most likely meshes coloured by per-vertex spread of the hypotheses (blue low, red high)."""
    import cv2

    path = Path(path)
    camera = result.meta["camera"]
    valid = np.flatnonzero(result.arrays["valid"][frame])
    faces = result.arrays["faces"]
    spread = result.arrays["vertex_std"][frame]
    scale = float(spread[valid].max()) if len(valid) else 0.0
    meshes = [result.arrays["vertices"][frame, p, 0] for p in valid]
    colours = [uncertainty_colours(spread[p], faces, scale) for p in valid]
    dimmed = (image_bgr * 0.5).astype(np.uint8)
    out = draw_meshes(dimmed, meshes, faces, camera["focal_px"], tuple(camera["principal_point_px"]), 0.9, colours)
    text = f"per-vertex spread: blue 0 mm ... red {scale * 1000:.0f} mm"
    size = max(0.6, max(out.shape[:2]) / 1500)
    cv2.putText(out, text, (20, int(40 * size)), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), max(1, int(size * 2)))
    return _write_image(out, path)


def _write_image(out: np.ndarray, path: Path, max_side: int = 1600) -> Path:
    import cv2

    scale = max_side / max(out.shape[:2])
    if scale < 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(path.suffix or ".png", out)
    if not ok:
        raise ValueError(f"cannot encode a preview as {path.suffix!r}")
    path.write_bytes(encoded.tobytes())
    return path
