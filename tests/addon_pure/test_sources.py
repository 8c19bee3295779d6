"""What Reconstruct sends: Blender pixels as PNG, clip frames as file frames (plain CPython)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module

sources = load_pure_module("sources")
cv2 = pytest.importorskip("cv2", reason="reading the PNG back needs opencv (installed with the runtime)")


def test_ok_png_of_byte_image_pixels_reads_back_exactly_top_row_first(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    blender_pixels = (rgba[::-1].astype(np.float32) / 255.0).ravel()  # Blender stores the bottom row first
    path = sources.write_png(tmp_path / "a.png", blender_pixels, 7, 5, linear=False)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.shape == (5, 7, 4)
    np.testing.assert_array_equal(back[..., [2, 1, 0, 3]], rgba)


def test_ok_float_images_are_converted_from_linear_to_srgb(tmp_path):
    pixels = np.array([0.0, 0.2140, 1.0, 1.0], np.float32)  # linear 0.214 ≈ sRGB 0.5
    path = sources.write_png(tmp_path / "f.png", pixels, 1, 1, linear=True)
    b, g, r = cv2.imread(str(path))[0, 0]
    assert (r, b) == (0, 255) and abs(int(g) - 128) <= 1


def test_ng_pixel_count_that_does_not_fit_the_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="do not make a 3×3 image"):
        sources.write_png(tmp_path / "x.png", np.zeros(10, np.float32), 3, 3, linear=False)


@pytest.mark.parametrize(
    ("scene", "clip", "expected"),
    [
        ((1, 250), (1, 0, 100), (0, 100)),  # clamped to the clip
        ((10, 20), (1, 0, 100), (9, 20)),
        ((10, 20), (5, 0, 100), (5, 16)),  # clip starts at scene frame 5
        ((1, 10), (1, 30, 100), (30, 40)),  # clip offset skips its first 30 frames
    ],
)
def test_ok_scene_frames_map_to_0_based_file_frames(scene, clip, expected):
    assert sources.clip_file_frames(*scene, *clip) == expected


def test_ng_scene_range_outside_the_clip_says_how_to_fix_it():
    with pytest.raises(ValueError, match="change the frame range"):
        sources.clip_file_frames(200, 250, 1, 0, 100)
