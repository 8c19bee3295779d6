"""Reading photos and video frames with OpenCV (torch-free).

Images: any format OpenCV decodes — 8/16-bit, grayscale, RGBA, EXIF-rotated JPEG — become
(H, W, 3) uint8 BGR, exactly as the official demo's ``cv2.imread(path)`` gives them (alpha dropped,
grey replicated, 16-bit scaled down, EXIF orientation applied). Paths are read as bytes first so
non-ASCII paths work on every platform, and inline bytes (from a remote client) use the same path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mega_runtime.defaults import VIDEO_SUFFIXES
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)


class MediaError(MegaError):
    """An image or video cannot be read."""

    code = "media_unreadable"


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Encoded image bytes → (H, W, 3) uint8 BGR (the official ``cv2.imread`` conversion)."""
    import cv2

    if not data:
        raise MediaError(f"{source} is empty")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(
            f"{source} is not an image OpenCV can decode",
            hint="use a JPEG, PNG, TIFF, WebP or BMP file (videos: pass a video file instead)",
        )
    return image


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file → (H, W, 3) uint8 BGR."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image {path} does not exist", hint="check the path")
    return decode_image(path.read_bytes(), str(path))


def is_video(path: Path | str) -> bool:
    """Whether ``path`` names a video (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """width, height in pixels; fps frames per second (0 when unknown); num_frames (0 when unknown)."""

    width: int
    height: int
    fps: float
    num_frames: int


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start, start+step, …`` before ``stop`` (None = to the end)."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    def __post_init__(self) -> None:
        if self.start < 0 or self.step < 1 or (self.stop is not None and self.stop < self.start):
            raise MediaError(
                f"invalid frame range start={self.start} stop={self.stop} step={self.step}",
                hint="use START:STOP:STEP with 0 <= START <= STOP and STEP >= 1",
            )

    @classmethod
    def parse(cls, text: str) -> FrameRange:
        """'START:STOP:STEP' with any part optional ('10:', ':100', '::2')."""
        parts = ([*text.split(":"), "", ""])[:3]
        try:
            start, stop, step = (int(p) if p.strip() else None for p in parts)
        except ValueError as exc:
            raise MediaError(f"frame range {text!r} is not START:STOP:STEP", hint="e.g. 0:300:2") from exc
        return cls(start or 0, stop, step or 1)


def open_video(path: Path | str):
    """Open a video with OpenCV; returns (capture, VideoInfo)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video {path} does not exist", hint="check the path")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(f"video {path} cannot be opened by OpenCV", hint="convert it to H.264 MP4 or MJPG AVI")
    info = VideoInfo(
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        num_frames=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
    )
    return capture, info


#: Consecutive unreadable frames after which a video is taken to have ended.
MAX_CONSECUTIVE_FAILURES = 25


def iter_frames(
    path: Path | str, frames: FrameRange | None = None, skipped: list[int] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, (H, W, 3) uint8 BGR) for the frames in ``frames``, decoding sequentially.

    A frame that cannot be decoded is skipped (its index appended to ``skipped``) and reading goes
    on; the video ends at its last frame, or after ``MAX_CONSECUTIVE_FAILURES`` unreadable frames
    in a row when the container does not say how many frames it has.
    """
    frames = frames or FrameRange()
    capture, info = open_video(path)
    failures = 0
    try:
        index = 0
        while frames.stop is None or index < frames.stop:
            wanted = index >= frames.start and (index - frames.start) % frames.step == 0
            ok = capture.grab()
            frame = None
            if ok and wanted:
                ok, frame = capture.retrieve()
            if not ok:
                if (info.num_frames and index >= info.num_frames) or failures >= MAX_CONSECUTIVE_FAILURES:
                    break
                failures += 1
                if wanted and skipped is not None:
                    skipped.append(index)
                index += 1
                continue
            failures = 0
            if wanted:
                if frame is None:
                    raise MediaError(f"video {path}: OpenCV reported frame {index} as read but returned no image")
                yield index, frame
            index += 1
    finally:
        capture.release()
