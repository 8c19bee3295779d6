"""Reading photos and video frames with OpenCV (torch-free).

Images: any format OpenCV decodes — 8/16-bit, grayscale, RGBA, EXIF-rotated JPEG — become
(H, W, 3) uint8 BGR, exactly as the official demo's ``cv2.imread(path)`` gives them (alpha dropped,
grey replicated, 16-bit scaled down, EXIF orientation applied). Paths are read as bytes first so
non-ASCII paths work on every platform, and inline bytes (from a remote client) use the same path.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from mega_runtime.defaults import MAX_IMAGE_PIXELS, VIDEO_SUFFIXES
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)


class MediaError(MegaError):
    """An image or video cannot be read."""

    code = "media_unreadable"


#: Bytes of a file's start read to find its size (a JPEG's size marker may follow large EXIF blocks).
_HEADER_BYTES = 1 << 20


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", head[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def image_size_from_header(head: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, GIF or BMP header, without decoding; None for other formats."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head.startswith(b"BM") and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    return None


def check_image_size(head: bytes, source: str) -> None:
    """Refuse an image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels — before it is decoded."""
    size = image_size_from_header(head)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise MediaError(
            f"{source} declares {size[0]}×{size[1]} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}",
            hint="scale the image down (e.g. to 8000×8000 or less) and try again",
        )


def check_image_file(path: Path | str) -> None:
    """Whether ``path`` can be read as a photo of an allowed size (header only); raises :class:`MediaError`."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image {path} does not exist", hint="check the path")
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except OSError as exc:
        raise MediaError(f"image {path} cannot be read ({exc.strerror or exc})", hint="check its permissions") from exc
    if not head:
        raise MediaError(f"image {path} is empty", hint="pass a JPEG, PNG, TIFF, WebP or BMP file")
    check_image_size(head, f"image {path}")


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Encoded image bytes → (H, W, 3) uint8 BGR (the official ``cv2.imread`` conversion).

    The header's size is checked first (PNG, JPEG, GIF, BMP); OpenCV's own limit, set to the same number of
    pixels, guards the other formats.
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
    import cv2

    if not data:
        raise MediaError(f"{source} is empty")
    check_image_size(data[:_HEADER_BYTES], source)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise MediaError(
            f"{source} cannot be decoded by OpenCV ({str(exc).strip().splitlines()[-1]})",
            hint=f"use an image of at most {MAX_IMAGE_PIXELS:,} pixels in JPEG, PNG, TIFF, WebP or BMP",
        ) from exc
    if image is None:
        raise MediaError(
            f"{source} is not an image OpenCV can decode",
            hint="use a JPEG, PNG, TIFF, WebP or BMP file (videos: pass a video file instead)",
        )
    return image


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file → (H, W, 3) uint8 BGR."""
    path = Path(path)
    check_image_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(f"image {path} cannot be read ({exc.strerror or exc})", hint="check its permissions") from exc
    return decode_image(data, str(path))


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
        if self.start < 0 or self.step < 1 or (self.stop is not None and self.stop <= self.start):
            raise MediaError(
                f"invalid frame range start={self.start} stop={self.stop} step={self.step}",
                hint="use START:STOP:STEP with 0 <= START < STOP and STEP >= 1",
            )

    @classmethod
    def parse(cls, text: str) -> FrameRange:
        """'START:STOP:STEP' with any part optional ('10:', ':100', '::2')."""
        parts = ([*text.split(":"), "", ""])[:3]
        try:
            start, stop, step = (int(p) if p.strip() else None for p in parts)
        except ValueError as exc:
            raise MediaError(f"frame range {text!r} is not START:STOP:STEP", hint="e.g. 0:300:2") from exc
        if len(text.split(":")) > 3:
            raise MediaError(
                f"frame range {text!r} has more than three parts", hint="use START:STOP:STEP, e.g. 0:300:2"
            )
        return cls(0 if start is None else start, stop, 1 if step is None else step)


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


def check_frame_range(path: Path | str, frames: FrameRange | None) -> None:
    """Refuse, before any model loads, a video that cannot be opened or whose frame range selects no frame."""
    capture, info = open_video(path)
    capture.release()
    start = frames.start if frames is not None else 0
    if info.num_frames and start >= info.num_frames:
        raise MediaError(
            f"{Path(path).name} has {info.num_frames} frames, so the frame range starting at {start} selects none",
            hint=f"choose a START below {info.num_frames}",
        )


#: Consecutive unreadable frames after which a video is taken to have ended.
MAX_CONSECUTIVE_FAILURES = 25


def iter_frames(
    path: Path | str, frames: FrameRange | None = None, skipped: list[int] | None = None
) -> Generator[tuple[int, np.ndarray], None, None]:
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


T = TypeVar("T")


class Prefetched(Generic[T]):
    """Items of an iterator — e.g. :func:`iter_frames`' frames — produced ahead on a daemon thread, at most ``depth``
    waiting in a bounded queue.

    Iterating yields exactly what ``source`` yields, in the same order; ``source`` runs entirely on the reader
    thread (one item after the other, never concurrently), so the work it does per item — decoding, and in the video
    loop finding the people — overlaps whatever the consumer does meanwhile (OpenCV, onnxruntime and torch release
    the GIL while they compute). An exception in ``source`` is raised in the consumer where its item would have
    come. Use it as a context manager (or call :meth:`close`): leaving early — a cancel, an error in the consumer —
    stops the reader after the item it is producing, closes ``source`` (a generator's ``finally`` runs: the video is
    released) and joins the thread, so no thread outlives the ``with`` block.
    """

    _END = object()

    def __init__(self, source: Iterator[T], depth: int = 4, name: str = "mega-prefetch") -> None:
        import queue
        import threading

        if depth < 1:
            raise ValueError(f"depth must be at least 1 item, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._done = False
        self._thread.start()

    def _put(self, item: object) -> bool:
        """Put ``item`` unless stopped; polls the stop flag so a full queue never blocks a closing reader."""
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # any failure is handed to the consumer and raised there
            self._put(exc)
            return
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # on this thread: a generator's cleanup (releasing the video) runs where it ran
        self._put(self._END)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is self._END or isinstance(item, BaseException):
            self._done = True
            self._thread.join()
        if isinstance(item, BaseException):
            raise item
        if item is self._END:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the reader and wait for its thread to end (idempotent)."""
        self._done = True
        self._stop.set()
        self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the reader thread is still running."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
