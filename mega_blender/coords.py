"""Coordinate frames and camera intrinsics: the runtime's OpenCV pinhole ↔ Blender's camera.

The runtime reports points in metres in the frame of a pinhole camera with OpenCV axes — **x right, y down,
z forward** — focal length ``f`` in pixels (fx = fy) and principal point ``(cx, cy)`` in pixels from the image's
top-left corner (continuous coordinates: the image spans 0…W × 0…H):

    u = f·x/z + cx,    v = f·y/z + cy.

**Convention of the add-on.** The Blender camera sits at the world origin with ``rotation_euler = (90°, 0, 0)``
(XYZ), so it looks along world +Y with world +Z up and world +X to the right. Blender cameras look along their
local −Z with local +Y up, so

    camera-local (Blender) = (x, −y, −z)          world (Blender) = (x, z, −y)

for an OpenCV point (x, y, z). A point in front of the camera (z > 0) lands at world Y = z > 0, and the image's
up (−y) is world +Z. Objects parented to the camera take camera-local coordinates instead.

**Blender's perspective camera** (``BKE_camera_params_compute_viewplane``, pixel aspect 1): with
``fit = sensor_fit`` (``AUTO`` → ``HORIZONTAL`` when W ≥ H else ``VERTICAL``), ``viewfac = W`` for a horizontal
fit and ``H`` for a vertical one, ``sensor = sensor_height`` for ``sensor_fit == 'VERTICAL'`` and
``sensor_width`` otherwise (``AUTO`` included), a camera-local point (X, Y, Z), Z < 0, lands at

    u = (lens/sensor)·viewfac · X/(−Z) + W/2 − shift_x·viewfac          (pixels from the left)
    v = (lens/sensor)·viewfac · (−Y)/(−Z) + H/2 + shift_y·viewfac       (pixels from the top)

so the shifts are in units of ``viewfac`` — the larger image side when the fit follows the image's orientation.
Matching it to the pinhole gives (``L = max(W, H)``, ``s`` the sensor size in mm along the longer side):

    lens_mm = f·s/L,    shift_x = (W/2 − cx)/L,    shift_y = (cy − H/2)/L,

with ``sensor_fit`` = ``HORIZONTAL`` when W ≥ H else ``VERTICAL``, the sensor's other side ``s·min(W, H)/L``,
and render resolution W × H at 100 % and pixel aspect 1.

Imports numpy and the standard library only (no bpy), so this module is unit-tested in plain CPython.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Where the add-on puts the Blender camera (world, metres).
CAMERA_LOCATION_M = (0.0, 0.0, 0.0)

#: The smallest focal length and sensor size Blender accepts (mm); smaller values are clamped by Blender.
BLENDER_MIN_LENS_MM = 1.0
BLENDER_MIN_SENSOR_MM = 1.0
#: Render resolution limits of Blender (pixels per side).
BLENDER_MIN_RESOLUTION_PX = 4
BLENDER_MAX_RESOLUTION_PX = 65536

#: Rotation of the Blender camera's local axes into the world (3, 3): columns are local X, Y, Z in world axes.
CAMERA_ROTATION_MATRIX = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _as_points(points: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(points)
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise ValueError(f"{what} expects points of shape (..., 3), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def opencv_to_blender_world(points: np.ndarray) -> np.ndarray:
    """OpenCV camera frame → Blender world, for the add-on's camera (origin, ``camera_rotation_euler()``).

    ``points``: (..., 3) metres, x right, y down, z forward. Returns (..., 3) metres (x, z, −y), same float dtype
    (integers become float64).
    """
    arr = _as_points(points, "opencv_to_blender_world")
    out = np.empty_like(arr)
    out[..., 0] = arr[..., 0]
    out[..., 1] = arr[..., 2]
    out[..., 2] = -arr[..., 1]
    return out


def blender_world_to_opencv(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opencv_to_blender_world`: (..., 3) world metres → (..., 3) OpenCV camera frame (X, −Z, Y)."""
    arr = _as_points(points, "blender_world_to_opencv")
    out = np.empty_like(arr)
    out[..., 0] = arr[..., 0]
    out[..., 1] = -arr[..., 2]
    out[..., 2] = arr[..., 1]
    return out


def opencv_to_blender_camera(points: np.ndarray) -> np.ndarray:
    """OpenCV camera frame → Blender camera-local frame (x, −y, −z), for objects parented to the camera.

    ``points``: (..., 3) metres. Returns (..., 3) metres: X right, Y up, the camera looking along −Z.
    """
    arr = _as_points(points, "opencv_to_blender_camera")
    out = np.empty_like(arr)
    out[..., 0] = arr[..., 0]
    out[..., 1] = -arr[..., 1]
    out[..., 2] = -arr[..., 2]
    return out


def camera_rotation_euler() -> tuple[float, float, float]:
    """(rx, ry, rz) radians, XYZ order, of the add-on's Blender camera: (π/2, 0, 0) — looking along world +Y."""
    return (math.pi / 2.0, 0.0, 0.0)


def camera_matrix_world() -> np.ndarray:
    """(4, 4) float64 world matrix of the add-on's Blender camera (rotation of :func:`camera_rotation_euler`)."""
    matrix = np.eye(4)
    matrix[:3, :3] = CAMERA_ROTATION_MATRIX
    matrix[:3, 3] = CAMERA_LOCATION_M
    return matrix


@dataclass(frozen=True)
class CameraIntrinsics:
    """Blender camera and render settings equivalent to a pinhole camera (see the module docstring)."""

    lens_mm: float
    """``Camera.lens``, focal length in mm."""
    sensor_width_mm: float
    """``Camera.sensor_width`` in mm."""
    sensor_height_mm: float
    """``Camera.sensor_height`` in mm."""
    sensor_fit: str
    """``Camera.sensor_fit``: ``'HORIZONTAL'`` (W ≥ H) or ``'VERTICAL'``."""
    shift_x: float
    """``Camera.shift_x``, in units of the larger image side."""
    shift_y: float
    """``Camera.shift_y``, in units of the larger image side."""
    resolution_x: int
    """``RenderSettings.resolution_x``, pixels (with ``resolution_percentage`` 100 and pixel aspect 1)."""
    resolution_y: int
    """``RenderSettings.resolution_y``, pixels."""

    def pinhole(self) -> tuple[float, tuple[float, float]]:
        """(focal_px, (cx, cy)) of the pinhole these settings render like."""
        return pinhole_from_blender(
            lens_mm=self.lens_mm,
            sensor_width_mm=self.sensor_width_mm,
            sensor_height_mm=self.sensor_height_mm,
            sensor_fit=self.sensor_fit,
            shift_x=self.shift_x,
            shift_y=self.shift_y,
            resolution_x=self.resolution_x,
            resolution_y=self.resolution_y,
        )

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """Blender's projection of camera-local points (..., 3) metres → (..., 2) pixels (u from left, v from top)."""
        return project_blender_camera(
            points_camera,
            lens_mm=self.lens_mm,
            sensor_width_mm=self.sensor_width_mm,
            sensor_height_mm=self.sensor_height_mm,
            sensor_fit=self.sensor_fit,
            shift_x=self.shift_x,
            shift_y=self.shift_y,
            resolution_x=self.resolution_x,
            resolution_y=self.resolution_y,
        )


def _check_resolution(width_px: int, height_px: int) -> None:
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer number of pixels, got {value!r}")
        if not BLENDER_MIN_RESOLUTION_PX <= value <= BLENDER_MAX_RESOLUTION_PX:
            raise ValueError(
                f"{name} = {value} is outside Blender's render resolution range "
                f"{BLENDER_MIN_RESOLUTION_PX}…{BLENDER_MAX_RESOLUTION_PX}"
            )


def camera_intrinsics(
    width_px: int,
    height_px: int,
    focal_px: float,
    principal_px: tuple[float, float],
    sensor_mm: float = 36.0,
) -> CameraIntrinsics:
    """Blender camera settings that render like the pinhole (``focal_px``, ``principal_px``) on a W × H image.

    ``sensor_mm`` is the sensor size along the image's longer side (the fitted side); the other side keeps the
    image's aspect (at least Blender's 1 mm). Raises ValueError for values Blender cannot represent.
    """
    _check_resolution(width_px, height_px)
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal_px must be a positive number, got {focal_px!r}")
    if not (math.isfinite(sensor_mm) and sensor_mm >= BLENDER_MIN_SENSOR_MM):
        raise ValueError(f"sensor_mm must be at least {BLENDER_MIN_SENSOR_MM} mm, got {sensor_mm!r}")
    cx, cy = (float(v) for v in principal_px)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"principal_px must be finite, got {principal_px!r}")
    width, height = int(width_px), int(height_px)
    longer = max(width, height)
    lens_mm = float(focal_px) * sensor_mm / longer
    if lens_mm < BLENDER_MIN_LENS_MM:
        raise ValueError(
            f"focal_px = {focal_px} gives a {lens_mm:.3g} mm lens on a {sensor_mm} mm sensor, below Blender's "
            f"{BLENDER_MIN_LENS_MM} mm minimum; use a larger sensor_mm"
        )
    other_mm = max(BLENDER_MIN_SENSOR_MM, sensor_mm * min(width, height) / longer)
    horizontal = width >= height
    return CameraIntrinsics(
        lens_mm=lens_mm,
        sensor_width_mm=float(sensor_mm) if horizontal else other_mm,
        sensor_height_mm=other_mm if horizontal else float(sensor_mm),
        sensor_fit="HORIZONTAL" if horizontal else "VERTICAL",
        shift_x=(width / 2.0 - cx) / longer,
        shift_y=(cy - height / 2.0) / longer,
        resolution_x=width,
        resolution_y=height,
    )


def _blender_view(
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    resolution_x: int,
    resolution_y: int,
) -> tuple[float, float]:
    """(pixels per unit of X/−Z, viewfac in pixels) of Blender's viewplane (pixel aspect 1)."""
    if sensor_fit not in ("AUTO", "HORIZONTAL", "VERTICAL"):
        raise ValueError(f"sensor_fit must be 'AUTO', 'HORIZONTAL' or 'VERTICAL', got {sensor_fit!r}")
    _check_resolution(resolution_x, resolution_y)
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if resolution_x >= resolution_y else "VERTICAL"
    viewfac = float(resolution_x if fit == "HORIZONTAL" else resolution_y)
    sensor_mm = sensor_height_mm if sensor_fit == "VERTICAL" else sensor_width_mm
    return lens_mm / sensor_mm * viewfac, viewfac


def pinhole_from_blender(
    *,
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    resolution_x: int,
    resolution_y: int,
) -> tuple[float, tuple[float, float]]:
    """(focal_px, (cx, cy)) of the pinhole that Blender's camera settings render like (pixel aspect 1).

    Inverse of :func:`camera_intrinsics`; ``sensor_fit`` may also be ``'AUTO'``.
    """
    focal_px, viewfac = _blender_view(
        lens_mm, sensor_width_mm, sensor_height_mm, sensor_fit, resolution_x, resolution_y
    )
    cx = resolution_x / 2.0 - shift_x * viewfac
    cy = resolution_y / 2.0 + shift_y * viewfac
    return focal_px, (cx, cy)


def project_blender_camera(
    points_camera: np.ndarray,
    *,
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    resolution_x: int,
    resolution_y: int,
) -> np.ndarray:
    """Blender's perspective projection (module docstring), re-implemented for checks.

    ``points_camera``: (..., 3) metres in the Blender camera's local frame (in front: Z < 0). Returns (..., 2)
    float64 pixels, u from the image's left and v from its top edge.
    """
    arr = _as_points(points_camera, "project_blender_camera").astype(np.float64)
    scale, viewfac = _blender_view(lens_mm, sensor_width_mm, sensor_height_mm, sensor_fit, resolution_x, resolution_y)
    depth = -arr[..., 2]
    u = scale * arr[..., 0] / depth + resolution_x / 2.0 - shift_x * viewfac
    v_up = scale * arr[..., 1] / depth + resolution_y / 2.0 - shift_y * viewfac
    return np.stack([u, resolution_y - v_up], axis=-1)


def project_pinhole(points: np.ndarray, focal_px: float, principal_px: tuple[float, float]) -> np.ndarray:
    """The runtime's pinhole: (..., 3) OpenCV camera-frame metres → (..., 2) float64 pixels (u, v) from top-left."""
    arr = _as_points(points, "project_pinhole").astype(np.float64)
    u = focal_px * arr[..., 0] / arr[..., 2] + principal_px[0]
    v = focal_px * arr[..., 1] / arr[..., 2] + principal_px[1]
    return np.stack([u, v], axis=-1)
