"""Reading images/videos and making the official crops."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from mega_runtime.pipeline.media import FrameRange, MediaError, decode_image, iter_frames, open_video, read_image
from mega_runtime.pipeline.preprocess import antialias_sigma, crop_person, focal_length_px, square_box


def _photo(h: int = 120, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag after the JPEG's SOI marker."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_any_opencv_image_becomes_three_channel_uint8_bgr():
    base = _photo()
    grey = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(base, cv2.COLOR_BGR2BGRA)
    deep = base.astype(np.uint16) * 257
    for image, ext in [(grey, ".png"), (rgba, ".png"), (deep, ".png"), (deep, ".tiff"), (base, ".bmp")]:
        out = decode_image(_encode(image, ext), ext)
        assert out.shape == (120, 90, 3) and out.dtype == np.uint8, ext
    assert np.array_equal(decode_image(_encode(deep, ".png")), base)  # 16-bit scaled down like cv2.imread
    assert np.array_equal(decode_image(_encode(rgba, ".png")), base)  # alpha dropped


def test_exif_rotated_jpeg_is_turned_upright():
    jpeg = _encode(_photo(40, 80), ".jpg")
    assert decode_image(jpeg).shape == (40, 80, 3)
    assert decode_image(_with_exif_orientation(jpeg, 6)).shape == (80, 40, 3)


def test_unreadable_inputs_name_the_problem(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(MediaError, match="not an image OpenCV can decode"):
        read_image(bad)
    with pytest.raises(MediaError, match="empty"):
        decode_image(b"")


def test_square_box_is_the_tight_official_square():
    center, size = square_box((10, 20, 110, 320))
    assert center.tolist() == [60.0, 170.0] and size == np.float32(300.0)
    assert square_box((0, 0, 50, 20))[1] == np.float32(50.0)


def test_blur_only_for_strong_downsampling():
    assert antialias_sigma(224 * 2 * 1.1) == 0.0
    assert antialias_sigma(224 * 2 * 3) == pytest.approx(1.0)


def test_windowed_blur_crop_equals_the_whole_image_blur():
    from scipy.ndimage import gaussian_filter

    image = _photo(900, 700)
    box = (150, 100, 600, 850)
    crop = crop_person(image, box)
    assert crop.antialias_sigma > 0
    whole = gaussian_filter(image.astype(np.float64), (crop.antialias_sigma,) * 2 + (0,), mode="nearest", truncate=4.0)
    patch = cv2.warpAffine(whole, crop.affine, (224, 224), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    from mega_runtime.pipeline.preprocess import normalise_patch

    np.testing.assert_allclose(crop.image, normalise_patch(patch), atol=1e-5)


def test_crop_of_a_huge_image_reads_only_its_window(monkeypatch):
    import mega_runtime.pipeline.preprocess as pre

    seen = []
    original = pre.blurred_window

    def spy(image, sigma, window):
        out = original(image, sigma, window)
        seen.append(out.shape)
        return out

    monkeypatch.setattr(pre, "blurred_window", spy)
    image = np.zeros((6000, 8000, 3), np.uint8)
    crop = crop_person(image, (100, 100, 1100, 1100))
    assert crop.image.shape == (3, 224, 224)
    assert seen and seen[0][0] * seen[0][1] < 0.05 * 6000 * 8000


def test_official_focal_length():
    assert focal_length_px(2000, 3000) == np.float32(1000 / 224) * np.float32(3000)


def _write_video(path, frames=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), i * 20 % 255, np.uint8)
        writer.write(img)
    writer.release()


def test_video_frames_follow_the_range_and_stride(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    _, info = open_video(path)
    assert (info.width, info.height, info.num_frames) == (64, 48, 12) and info.fps == pytest.approx(25.0)
    assert [i for i, _ in iter_frames(path, FrameRange(2, 9, 3))] == [2, 5, 8]
    assert [i for i, _ in iter_frames(path, FrameRange.parse("10:"))] == [10, 11]


def test_bad_frame_range_and_missing_video_are_reported(tmp_path):
    with pytest.raises(MediaError, match="START:STOP:STEP"):
        FrameRange.parse("a:b")
    with pytest.raises(MediaError, match="invalid frame range"):
        FrameRange(5, 2)
    with pytest.raises(MediaError, match="does not exist"):
        open_video(tmp_path / "none.mp4")
