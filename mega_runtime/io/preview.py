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


def splat_meshes(
    image_bgr: np.ndarray,
    meshes: list[np.ndarray],
    faces: np.ndarray,
    focal_px: float,
    principal_px: tuple[float, float],
    colours: list[tuple[int, int, int]],
    alpha: float = 0.7,
) -> np.ndarray:
    """A fast overlay for video previews, close to :func:`draw_meshes` at a fraction of its cost: every
    camera-facing triangle is sampled on a barycentric grid as fine as its projected edges (at most 10 steps)
    and the samples are written far to near (flat shading, per-person ``colours``, BGR), then a 2×2 dilation
    closes sub-pixel gaps. No per-triangle drawing calls; numpy only, plus OpenCV's dilation."""
    import cv2

    canvas = image_bgr.copy()
    height, width = image_bgr.shape[:2]
    layer = np.zeros_like(image_bgr)
    depth = np.full((height, width), np.inf)
    light = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])
    for k, vertices in enumerate(meshes):
        v = np.asarray(vertices, dtype=np.float64)
        tri = v[faces]
        front = tri[:, :, 2].min(axis=1) > 1e-3
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        px = project(v, focal_px, principal_px)[faces]  # (T, 3, 2)
        edge = np.linalg.norm(px - np.roll(px, 1, axis=1), axis=2).max(axis=1)
        steps = int(np.clip(np.ceil(np.percentile(edge[front], 75) if front.any() else 1), 1, 8))
        grid = [(i / steps, j / steps) for i in range(steps + 1) for j in range(steps + 1 - i)]
        bary = np.array([(a, b, 1.0 - a - b) for a, b in grid])  # (S, 3)
        keep = np.flatnonzero(front)
        points = np.matmul(px[keep].transpose(0, 2, 1).astype(np.float32), bary.T.astype(np.float32))  # (T, 2, S)
        points = points.transpose(0, 2, 1).reshape(-1, 2)
        z = np.repeat(tri[keep, :, 2].mean(axis=1), len(bary))
        shade = np.repeat(0.35 + 0.65 * np.abs(normals[keep] @ light), len(bary))
        xs, ys = np.floor(points[:, 0]).astype(np.int64), np.floor(points[:, 1]).astype(np.int64)
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        xs, ys, z, shade = xs[inside], ys[inside], z[inside], shade[inside]
        order = np.argsort(-z, kind="stable")  # far first: for one pixel the nearest sample is written last
        xs, ys, z, shade = xs[order], ys[order], z[order], shade[order]
        nearer = z < depth[ys, xs]  # against the people drawn before
        xs, ys, z, shade = xs[nearer], ys[nearer], z[nearer], shade[nearer]
        depth[ys, xs] = z
        layer[ys, xs] = (np.asarray(colours[k], np.float64)[None, :] * shade[:, None]).astype(np.uint8)
    drawn = np.isfinite(depth).astype(np.uint8)
    kernel = np.ones((2, 2), np.uint8)
    layer, drawn = cv2.dilate(layer, kernel), cv2.dilate(drawn, kernel)
    hit = drawn > 0
    canvas[hit] = (alpha * layer[hit] + (1 - alpha) * canvas[hit]).astype(np.uint8)
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


# -- videos: what the detector and the tracker did, frame by frame ---------------------------------------------------

#: Most frames on a contact sheet (spread evenly over the result's frames).
CONTACT_SHEET_FRAMES = 12


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track ID (the same ID keeps its colour in every frame)."""
    return _COLOURS[int(track_id) % len(_COLOURS)]


def draw_result_frame(result, frame: int, image_bgr: np.ndarray, meshes: bool = True) -> np.ndarray:
    """Frame ``frame`` (index into the result's frames) drawn over ``image_bgr`` (H, W, 3) uint8: hypothesis 0 of
    each person seen (``meshes``), its box in its track's colour and a label — the track ID, and ``given`` for a
    box the user gave or the detector's score (detection provenance, result format 1.2)."""
    import cv2

    arrays = result.arrays
    seen = np.flatnonzero(arrays["valid"][frame])
    track_ids = arrays["track_ids"]
    out = image_bgr
    if meshes and len(seen):
        camera = result.meta["camera"]
        out = splat_meshes(
            image_bgr,
            [arrays["vertices"][frame, p, 0] for p in seen],
            arrays["faces"],
            camera["focal_px"],
            tuple(camera["principal_point_px"]),
            [track_colour(track_ids[p]) for p in seen],
        )
    else:
        out = image_bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    size = max(0.4, max(out.shape[:2]) / 1200)
    sources = arrays.get("box_source")
    scores = arrays.get("box_score")
    for p in seen:
        colour = track_colour(track_ids[p])
        x1, y1, x2, y2 = (round(float(v)) for v in arrays["boxes_xyxy"][frame, p])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"id {int(track_ids[p])}"
        if sources is not None and int(sources[frame, p]) == 1:
            label += " given"
        elif scores is not None:
            label += f" {float(scores[frame, p]):.2f}"
        cv2.putText(
            out, label, (x1 + 2, max(y1 - 4, int(14 * size))), cv2.FONT_HERSHEY_SIMPLEX, size, colour, thickness
        )
    index = int(arrays["frame_indices"][frame])
    cv2.putText(out, f"frame {index}", (8, int(24 * size) + 4), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1)
    return out


def write_video_preview(result, frames, path: Path | str, fps: float, max_side: int = 960) -> tuple[Path, int]:
    """A preview clip (MPEG-4 Part 2, OpenCV's ``mp4v``) of the result's frames drawn by :func:`draw_result_frame`.

    ``frames`` yields ``(source frame number, (H, W, 3) uint8 BGR image)``, e.g. the video decoded again; frames
    the result does not hold are skipped. Returns the path and the number of frames written; raises ``OSError``
    when OpenCV cannot write the file.
    """
    import cv2

    path = Path(path)
    position = {int(f): i for i, f in enumerate(result.arrays["frame_indices"])}
    writer = None
    written = 0
    try:
        for index, image in frames:
            if int(index) not in position:
                continue
            drawn = _fit(draw_result_frame(result, position[int(index)], image), max_side)
            if writer is None:
                h, w = drawn.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), max(float(fps), 1.0), (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write an mp4v clip to {path}")
            writer.write(drawn)
            written += 1
    finally:
        if writer is not None:
            writer.release()
    return path, written


def contact_sheet_frames(num_frames: int, count: int = CONTACT_SHEET_FRAMES) -> list[int]:
    """Up to ``count`` result frame positions spread evenly over ``num_frames`` (first and last included)."""
    if num_frames <= 0:
        return []
    if num_frames <= count:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def write_contact_sheet(result, frames, path: Path | str, columns: int = 4, tile_width: int = 480) -> Path:
    """A grid of :func:`contact_sheet_frames` frames drawn by :func:`draw_result_frame` (PNG/JPEG by suffix).

    ``frames`` yields ``(source frame number, image)`` as for :func:`write_video_preview`.
    """
    import cv2

    positions = contact_sheet_frames(result.num_frames)
    wanted = {int(result.arrays["frame_indices"][i]): i for i in positions}
    tiles: dict[int, np.ndarray] = {}
    for index, image in frames:
        if int(index) in wanted:
            drawn = draw_result_frame(result, wanted[int(index)], image)
            scale = tile_width / drawn.shape[1]
            tiles[wanted[int(index)]] = cv2.resize(drawn, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if len(tiles) == len(wanted):
            break
    if not tiles:
        raise ValueError("the result holds no frame to put on a contact sheet")
    ordered = [tiles[i] for i in sorted(tiles)]
    h = max(t.shape[0] for t in ordered)
    blank = np.zeros((h, tile_width, 3), np.uint8)
    padded = [np.vstack([t, blank[: h - t.shape[0]]]) for t in ordered]
    padded += [blank] * (-len(padded) % columns)
    rows = [np.hstack(padded[r : r + columns]) for r in range(0, len(padded), columns)]
    return _write_image(np.vstack(rows), Path(path), max_side=tile_width * columns)


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down so its longer side is at most ``max_side`` (even sizes, as video encoders want)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
    return image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
