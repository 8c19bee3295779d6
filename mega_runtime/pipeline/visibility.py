"""Honest warnings about people the camera cannot show: a mesh behind the camera, or one that barely overlaps the image.

Both are signs of a bad reconstruction (a wrong box, a crop at the image border, an implausible camera), not of a
person who is merely cut off: a person partly outside the frame still has most vertices inside it. numpy only.
"""

from __future__ import annotations

import numpy as np

#: A person whose deterministic mesh has fewer than this share of its vertices inside the image gets a warning.
MIN_VISIBLE_FRACTION = 0.10


def visible_fraction(
    vertices_m: np.ndarray, focal_px: float, principal_px: tuple[float, float], width_px: int, height_px: int
) -> np.ndarray:
    """Share of each mesh's vertices in front of the camera and inside the image.

    ``vertices_m``: (..., V, 3) float metres in the camera frame (OpenCV axes: x right, y down, z forward);
    the pinhole camera has focal ``focal_px`` and principal point ``principal_px`` (pixels), the image is
    ``width_px`` × ``height_px``. Returns (...) float64 in [0, 1].
    """
    z = vertices_m[..., 2].astype(np.float64)
    in_front = z > 1e-6
    safe_z = np.where(in_front, z, 1.0)
    u = focal_px * vertices_m[..., 0] / safe_z + principal_px[0]
    v = focal_px * vertices_m[..., 1] / safe_z + principal_px[1]
    inside = in_front & (u >= 0) & (u < width_px) & (v >= 0) & (v < height_px)
    return inside.mean(axis=-1)


def visibility_warnings(
    vertices_m: np.ndarray,
    valid: np.ndarray,
    frame_indices: np.ndarray,
    focal_px: float,
    principal_px: tuple[float, float],
    width_px: int,
    height_px: int,
) -> list[str]:
    """One warning per person whose deterministic mesh is behind the camera or mostly outside the image.

    ``vertices_m``: (F, P, H, V, 3) float32 metres (hypothesis 0 is checked); ``valid``: (F, P) bool;
    ``frame_indices``: (F,) source frame numbers (photos: [0]).
    A photo's warning names the person; a video's names the person, how many of its frames and the first one.
    """
    num_frames = int(valid.shape[0])
    if vertices_m.size == 0:
        return []
    deterministic = vertices_m[:, :, 0]
    behind = (np.median(deterministic[..., 2], axis=-1) <= 0) & valid
    fraction = visible_fraction(deterministic, focal_px, principal_px, width_px, height_px)
    outside = (fraction < MIN_VISIBLE_FRACTION) & valid & ~behind
    warnings: list[str] = []
    for p in range(valid.shape[1]):
        who = f"person {p + 1}"  # as the add-on numbers them (<photo> Person 1, …)
        for mask, what in (
            (behind[:, p], "is behind the camera"),
            (outside[:, p], f"has under {MIN_VISIBLE_FRACTION:.0%} of its mesh inside the image"),
        ):
            count = int(mask.sum())
            if count == 0:
                continue
            if num_frames == 1:
                warnings.append(f"{who} {what}: its box or crop is probably wrong")
            else:
                first = int(frame_indices[int(np.argmax(mask))])
                seen = int(valid[:, p].sum())
                warnings.append(f"{who} {what} in {count} of its {seen} frames (first: frame {first})")
    return warnings
