"""Coordinate frames and the pinhole ↔ Blender camera mapping, checked with numbers (and against real Blender)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module, run_in_bpy

coords = load_pure_module("coords")

#: (W, H, focal px, cx, cy): the runtime's own camera (f = 1000/224 · max(W, H), centred) and off-centre ones.
CAMERAS = [
    (640, 480, 1000 / 224 * 640, 320.0, 240.0),
    (480, 640, 1000 / 224 * 640, 240.0, 320.0),
    (1000, 1000, 500.0, 480.0, 530.0),
    (3000, 2000, 13392.9, 1600.0, 900.0),
    (1080, 1920, 1400.0, 500.5, 1100.25),
    (301, 2000, 1000.0, 100.0, 1500.0),
]


def points_in_front(seed: int = 0, count: int = 50) -> np.ndarray:
    """(count, 3) OpenCV points 1.5–12 m in front of the camera."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1.5, 1.5, (count, 3))
    pts[:, 2] = rng.uniform(1.5, 12.0, count)
    return pts


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c[0]}x{c[1]}")
def test_ok_blender_camera_projects_where_the_pinhole_does(camera):
    width, height, focal, cx, cy = camera
    intrinsics = coords.camera_intrinsics(width, height, focal, (cx, cy))
    pts = points_in_front()
    pinhole = coords.project_pinhole(pts, focal, (cx, cy))
    blender = intrinsics.project(coords.opencv_to_blender_camera(pts))
    np.testing.assert_allclose(blender, pinhole, atol=1e-6)


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c[0]}x{c[1]}")
def test_ok_intrinsics_round_trip_to_the_same_pinhole(camera):
    width, height, focal, cx, cy = camera
    intrinsics = coords.camera_intrinsics(width, height, focal, (cx, cy), sensor_mm=24.0)
    focal_back, (cx_back, cy_back) = intrinsics.pinhole()
    assert (focal_back, cx_back, cy_back) == pytest.approx((focal, cx, cy), rel=1e-12)


def test_ok_landscape_settings_with_numbers():
    k = coords.camera_intrinsics(640, 480, 2000.0, (320.0, 240.0))
    assert k.sensor_fit == "HORIZONTAL"
    assert k.lens_mm == pytest.approx(2000.0 * 36.0 / 640)  # 112.5 mm
    assert (k.sensor_width_mm, k.sensor_height_mm) == pytest.approx((36.0, 27.0))
    assert (k.shift_x, k.shift_y) == (0.0, 0.0)
    assert (k.resolution_x, k.resolution_y) == (640, 480)


def test_ok_portrait_fits_the_sensor_vertically_and_shifts_in_units_of_the_longer_side():
    k = coords.camera_intrinsics(480, 640, 2000.0, (240.0 + 64.0, 320.0 - 32.0))
    assert k.sensor_fit == "VERTICAL"
    assert k.lens_mm == pytest.approx(2000.0 * 36.0 / 640)
    assert (k.sensor_width_mm, k.sensor_height_mm) == pytest.approx((27.0, 36.0))
    # principal point right of centre → the window moves left (negative shift); above centre → down (negative)
    assert k.shift_x == pytest.approx(-64.0 / 640) and k.shift_y == pytest.approx(-32.0 / 640)


def test_ok_auto_fit_with_sensor_width_matches_the_explicit_fit():
    for width, height in ((640, 480), (480, 640)):
        k = coords.camera_intrinsics(width, height, 900.0, (200.0, 260.0))
        auto = coords.pinhole_from_blender(
            lens_mm=k.lens_mm,
            sensor_width_mm=36.0,  # AUTO always reads sensor_width, fitted to the longer side
            sensor_height_mm=1.0,
            sensor_fit="AUTO",
            shift_x=k.shift_x,
            shift_y=k.shift_y,
            resolution_x=width,
            resolution_y=height,
        )
        assert auto[0] == pytest.approx(900.0) and auto[1] == pytest.approx((200.0, 260.0))


def test_ok_the_principal_point_projects_to_the_optical_axis():
    k = coords.camera_intrinsics(1080, 1920, 1400.0, (500.5, 1100.25))
    uv = k.project(np.array([0.0, 0.0, -3.0]))
    assert uv == pytest.approx([500.5, 1100.25])


def test_ok_a_point_in_front_of_the_camera_is_in_front_of_the_blender_camera_and_up_is_z():
    world = coords.opencv_to_blender_world(np.array([[0.0, 0.0, 5.0], [0.0, -1.0, 5.0], [1.0, 0.0, 5.0]]))
    np.testing.assert_array_equal(world[0], [0.0, 5.0, 0.0])  # forward → world +Y
    assert world[1, 2] == 1.0  # image up (OpenCV −y) → world +Z
    assert world[2, 0] == 1.0  # image right → world +X
    view_dir = coords.camera_matrix_world()[:3, :3] @ np.array([0.0, 0.0, -1.0])  # Blender cameras look along −Z
    np.testing.assert_allclose(view_dir, [0.0, 1.0, 0.0], atol=1e-15)
    camera_up = coords.camera_matrix_world()[:3, :3] @ np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(camera_up, [0.0, 0.0, 1.0], atol=1e-15)
    assert np.dot(world[0] - coords.CAMERA_LOCATION_M, view_dir) > 0


def test_ok_euler_rotation_world_matrix_and_point_mapping_agree():
    rx, ry, rz = coords.camera_rotation_euler()
    assert (rx, ry, rz) == pytest.approx((math.pi / 2, 0.0, 0.0))
    cx_, sx_ = math.cos(rx), math.sin(rx)
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx_, -sx_], [0.0, sx_, cx_]])
    assert ry == 0.0 and rz == 0.0  # XYZ order reduces to the X rotation
    np.testing.assert_allclose(rot_x, coords.CAMERA_ROTATION_MATRIX, atol=1e-15)
    pts = points_in_front(1)
    via_camera = coords.opencv_to_blender_camera(pts) @ coords.camera_matrix_world()[:3, :3].T
    np.testing.assert_allclose(via_camera, coords.opencv_to_blender_world(pts), atol=1e-12)


def test_ok_world_mapping_inverts_and_keeps_dtype_and_shape():
    pts = np.random.default_rng(2).normal(size=(2, 3, 4, 3)).astype(np.float32)
    world = coords.opencv_to_blender_world(pts)
    assert world.dtype == np.float32 and world.shape == pts.shape
    np.testing.assert_array_equal(coords.blender_world_to_opencv(world), pts)
    assert coords.opencv_to_blender_world([1, 2, 3]).tolist() == [1.0, 3.0, -2.0]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"focal_px": 0.0}, "focal_px must be a positive"),
        ({"focal_px": float("nan")}, "focal_px must be a positive"),
        ({"width_px": 2}, "outside Blender's render resolution"),
        ({"height_px": 640.0}, "integer number of pixels"),
        ({"principal_px": (float("inf"), 1.0)}, "principal_px must be finite"),
        ({"focal_px": 5.0}, "below Blender's 1.0 mm minimum"),
        ({"sensor_mm": 0.5}, "sensor_mm must be at least"),
    ],
)
def test_ng_camera_intrinsics_rejects_what_blender_cannot_represent(kwargs, pattern):
    args = {"width_px": 640, "height_px": 480, "focal_px": 800.0, "principal_px": (320.0, 240.0), **kwargs}
    with pytest.raises(ValueError, match=pattern):
        coords.camera_intrinsics(**args)


def test_ng_points_must_have_three_coordinates():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        coords.opencv_to_blender_world(np.zeros((4, 2)))


@pytest.mark.blender
def test_ok_real_blender_camera_agrees_with_the_model(tmp_path):
    """Blender's own view frame (``world_to_camera_view``) puts the points where the pinhole does."""
    cases = []
    for width, height, focal, cx, cy in CAMERAS:
        k = coords.camera_intrinsics(width, height, focal, (cx, cy))
        pts = points_in_front(4, 8)
        cases.append(
            {
                "settings": {n: getattr(k, n) for n in ("lens_mm", "sensor_width_mm", "sensor_height_mm")}
                | {"sensor_fit": k.sensor_fit, "shift_x": k.shift_x, "shift_y": k.shift_y},
                "size": [width, height],
                "rotation": list(coords.camera_rotation_euler()),
                "world": coords.opencv_to_blender_world(pts).tolist(),
                "expected": coords.project_pinhole(pts, focal, (cx, cy)).tolist(),
            }
        )
    code = f"""
    import mathutils
    from bpy_extras.object_utils import world_to_camera_view
    errors = []
    for case in {cases!r}:
        scene = bpy.data.scenes.new("check")
        width, height = case["size"]
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        cam = bpy.data.cameras.new("check")
        s = case["settings"]
        cam.lens, cam.sensor_width, cam.sensor_height = s["lens_mm"], s["sensor_width_mm"], s["sensor_height_mm"]
        cam.sensor_fit, cam.shift_x, cam.shift_y = s["sensor_fit"], s["shift_x"], s["shift_y"]
        obj = bpy.data.objects.new("check", cam)
        scene.collection.objects.link(obj)
        obj.matrix_world = mathutils.Euler(case["rotation"], "XYZ").to_matrix().to_4x4()
        for point, (u, v) in zip(case["world"], case["expected"]):
            ndc = world_to_camera_view(scene, obj, mathutils.Vector(point))
            errors.append(max(abs(ndc.x * width - u), abs((1.0 - ndc.y) * height - v)))
    result["max_error_px"] = max(errors)
    """
    out = run_in_bpy(code, tmp_path / "blender_user")
    assert out["max_error_px"] < 2e-3  # float32 inside Blender
