"""Image crops for MEGA exactly as the official demo makes them.

Per person box (x1, y1, x2, y2) in pixels of the original image:

1. centre = box midpoint; ``box_size`` = the longer side (a tight square, no padding), in float32;
2. anti-aliasing: with d = box_size / 224 / 2, if d > 1.1 the image is blurred with a Gaussian of
   σ = (d − 1) / 2 (the official scipy kernel: truncate 4, mode "nearest") — the official code blurs
   the whole image in float64; here only the window the crop reads is blurred, in float32, which
   gives the same crops to ~1e-6 without holding a float64 copy of a large photo;
3. a 224×224 patch by ``cv2.warpAffine`` (INTER_LINEAR, constant 0 border) with the affine that maps the
   square onto the patch;
4. BGR → RGB, CHW float32, per channel (x − 255·mean) / (255·std) with the ImageNet mean and std.

torch-free (numpy, OpenCV, scipy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATCH_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Blur only when the crop shrinks the image by more than this (official rule).
ANTIALIAS_THRESHOLD = 1.1
GAUSSIAN_TRUNCATE = 4.0


@dataclass(frozen=True)
class Crop:
    """One person's network input and where it came from.

    image: (3, H, W) float32 normalised RGB patch (H = W = 224 for ResNet/HRNet).
    box_center: (2,) float32 pixels (cx, cy); box_size: float32 pixels (side of the square);
    img_size: (2,) float32 (W, H) of the original image; antialias_sigma: float64 (0 = no blur);
    affine: (2, 3) float64 original-image → patch transform.
    """

    image: np.ndarray
    box_center: np.ndarray
    box_size: np.float32
    img_size: np.ndarray
    antialias_sigma: float
    affine: np.ndarray


def square_box(box_xyxy: np.ndarray | tuple[float, ...]) -> tuple[np.ndarray, np.float32]:
    """Centre (2,) float32 and side (float32) of the official tight square around a box, in pixels."""
    box = np.asarray(box_xyxy, dtype=np.float32).reshape(4)
    center = (box[2:4] + box[0:2]) / np.float32(2.0)
    scale = (box[2:4] - box[0:2]) / np.float32(200.0)
    w, h = scale * np.float32(200.0)
    # expand_to_aspect_ratio with a 1:1 target, as the official code computes it
    size = (w, max(w, h)) if h / w < 1.0 else (max(h, w), h)
    return center, np.float32(max(size))


def crop_affine(
    center: np.ndarray, box_size: float | np.float32, patch: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE)
) -> np.ndarray:
    """(2, 3) float64 affine mapping the square (centre, side) onto a patch of (height, width) pixels.

    Built like the official ``gen_trans_from_patch_cv`` (three float32 point pairs, ``cv2.getAffineTransform``).
    """
    import cv2

    ph, pw = patch
    c = np.asarray(center, dtype=np.float32)
    half = np.float32(box_size) * np.float32(0.5)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = c
    src[1] = c + np.array([0.0, half], dtype=np.float32)
    src[2] = c + np.array([half, 0.0], dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = (pw * 0.5, ph * 0.5)
    dst[1] = (pw * 0.5, ph * 0.5 + ph * 0.5)
    dst[2] = (pw * 0.5 + pw * 0.5, ph * 0.5)
    return cv2.getAffineTransform(src, dst)


def antialias_sigma(box_size: float | np.float32, patch_width: int = PATCH_SIZE) -> float:
    """Gaussian σ (pixels) the official demo blurs with before cropping, 0 when it does not blur."""
    d = float(box_size) * 1.0 / patch_width / 2.0
    return (d - 1.0) / 2.0 if d > ANTIALIAS_THRESHOLD else 0.0


def _source_window(affine: np.ndarray, patch: tuple[int, int], shape: tuple[int, int], margin: int) -> tuple[int, ...]:
    """Pixel window (y0, y1, x0, x1) of the original image that the warp reads, plus ``margin``, clipped."""
    import cv2

    ph, pw = patch
    inverse = cv2.invertAffineTransform(affine)
    corners = np.array([[0, 0, 1], [pw, 0, 1], [0, ph, 1], [pw, ph, 1]], dtype=np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - margin - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + margin + 3
    h, w = shape
    return max(0, y0), min(h, y1), max(0, x0), min(w, x1)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D kernel scipy's ``gaussian_filter`` uses (truncate 4): normalised exp(−x²/2σ²), x = −r…r."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 / sigma**2 * x**2)
    return kernel / kernel.sum()


def blurred_window(image: np.ndarray, sigma: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """The official whole-image Gaussian blur (mode "nearest"), restricted to ``window``; float32.

    The window is read with a margin of the kernel radius on every side that is not an image
    border, so the result equals the same window of the whole-image blur. The official code blurs
    in float64 with scipy; this uses the same kernel and border rule in float32 with OpenCV's
    separable filter, which is ~5× faster on large photos and differs by ~1e-4 grey levels
    (1e-6 after normalisation, well inside the 1e-5 crop tolerance checked by ``verify``).
    """
    import cv2

    y0, y1, x0, x1 = window
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    h, w = image.shape[:2]
    ry0, ry1, rx0, rx1 = max(0, y0 - radius), min(h, y1 + radius), max(0, x0 - radius), min(w, x1 + radius)
    region = np.ascontiguousarray(image[ry0:ry1, rx0:rx1], dtype=np.float32)
    k32 = kernel.astype(np.float32)
    blurred = cv2.sepFilter2D(region, -1, k32, k32, borderType=cv2.BORDER_REPLICATE)
    return blurred[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]


def normalise_patch(patch_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR patch (uint8 or float) → (3, H, W) float32 ImageNet-normalised RGB."""
    rgb = np.transpose(patch_bgr[:, :, ::-1], (2, 0, 1)).astype(np.float32)
    mean = 255.0 * np.asarray(IMAGENET_MEAN, dtype=np.float64)[:, None, None]
    std = 255.0 * np.asarray(IMAGENET_STD, dtype=np.float64)[:, None, None]
    return ((rgb - mean) / std).astype(np.float32)


def crop_person(
    image_bgr: np.ndarray, box_xyxy: np.ndarray | tuple[float, ...], patch: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE)
) -> Crop:
    """The official demo's network input for one person box.

    image_bgr: (H, W, 3) uint8 BGR image; box_xyxy: (4,) pixels. patch: (height, width) of the
    network input (224×224, or 256×192 for a ViT whose position table was trained at that size:
    then the square is still fitted to the patch width as the official affine does).
    """
    import cv2

    center, box_size = square_box(box_xyxy)
    affine = crop_affine(center, box_size, patch)
    sigma = antialias_sigma(box_size, patch[1])
    h, w = image_bgr.shape[:2]
    if sigma > 0:
        y0, y1, x0, x1 = _source_window(affine, patch, (h, w), margin=0)
        source = blurred_window(image_bgr, sigma, (y0, y1, x0, x1))
        shifted = affine.copy()
        shifted[:, 2] += affine[:, :2] @ np.array([x0, y0], dtype=np.float64)
        patch_bgr = cv2.warpAffine(
            source, shifted, (patch[1], patch[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    else:
        patch_bgr = cv2.warpAffine(
            image_bgr, affine, (patch[1], patch[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    return Crop(
        image=normalise_patch(patch_bgr),
        box_center=center,
        box_size=np.float32(box_size),
        img_size=np.array([w, h], dtype=np.float32),
        antialias_sigma=sigma,
        affine=affine,
    )


def focal_length_px(width: int, height: int) -> np.float32:
    """The official demo's focal length: 1000 / 224 · max(W, H) pixels (float32)."""
    return np.float32(1000.0 / 224.0) * np.float32(max(width, height))
