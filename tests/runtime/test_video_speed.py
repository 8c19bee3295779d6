"""Video throughput: the prefetching frame reader and the detection cadence (no model; the chain's use of both is
tested in test_video_speed_chain.py)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from mega_runtime.errors import MegaError
from mega_runtime.pipeline.cadence import CadencedDetector, propagate_box
from mega_runtime.pipeline.media import FrameRange, MediaError, Prefetched, iter_frames

SIZE = (160, 120)  # width, height
PATCH = (24, 48)  # width, height of the moving textured "person"


def _patch() -> np.ndarray:
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (PATCH[1] // 4, PATCH[0] // 4, 3), dtype=np.uint8)
    return cv2.resize(coarse, PATCH, interpolation=cv2.INTER_LINEAR)


def moving_frame(i: int, speed: float = 3.0, visible: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A grey frame with a textured patch at x = 20 + speed·i → (BGR frame, its xyxy box)."""
    image = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
    x, y = round(20 + speed * i), 40
    if visible:
        image[y : y + PATCH[1], x : x + PATCH[0]] = _patch()
    return image, np.array([x, y, x + PATCH[0], y + PATCH[1]], np.float64)


def write_clip(path, frames: int = 16, speed: float = 3.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for i in range(frames):
        writer.write(moving_frame(i, speed)[0])
    writer.release()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mega-")]


# -- the prefetching reader ---------------------------------------------------------------------------------------


def test_prefetched_frames_are_the_plain_readers_frames(tmp_path):
    path = tmp_path / "clip.avi"
    write_clip(path)
    for frames in (None, FrameRange(2, 13, 3)):
        plain = list(iter_frames(path, frames))
        skipped: list[int] = []
        with Prefetched(iter_frames(path, frames, skipped), depth=2) as reader:
            ahead = list(reader)
        assert [i for i, _ in ahead] == [i for i, _ in plain] and skipped == []
        for (_, a), (_, b) in zip(ahead, plain, strict=True):
            assert np.array_equal(a, b)
    assert not _reader_threads()


def test_leaving_a_prefetched_video_early_stops_its_reader_thread(tmp_path):
    path = tmp_path / "clip.avi"
    write_clip(path, frames=40, speed=1.0)
    with Prefetched(iter_frames(path), depth=1) as reader:
        first = next(reader)
        assert first[0] == 0 and reader.alive  # blocked on the full queue, not finished
    assert not reader.alive and not _reader_threads()
    with pytest.raises(RuntimeError, match="consumer failed"), Prefetched(iter_frames(path), depth=1) as reader:
        next(reader)
        raise RuntimeError("consumer failed")
    assert not reader.alive and not _reader_threads()
    assert list(reader) == []  # a closed reader yields nothing more


def test_a_source_left_early_is_closed_on_the_reader_thread():
    where: list[str] = []

    def numbers():
        try:
            yield from range(1000)
        finally:
            where.append(threading.current_thread().name)

    with Prefetched(numbers(), depth=2, name="mega-test-reader") as reader:
        assert [next(reader) for _ in range(3)] == [0, 1, 2]
    assert where == ["mega-test-reader"] and not _reader_threads()


def test_a_reader_error_is_raised_in_the_consumer_and_ends_the_thread(tmp_path):
    reader = Prefetched(iter_frames(tmp_path / "missing.avi"), depth=2)
    with pytest.raises(MediaError, match="does not exist"):
        next(reader)
    assert not reader.alive and not _reader_threads()
    with pytest.raises(ValueError, match="depth"):
        Prefetched(iter([]), depth=0)


# -- detection cadence ---------------------------------------------------------------------------------------------


class PatchDetector:
    """Finds the textured patch (pixels away from the grey background); records the frames it ran on."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        ys, xs = np.nonzero(np.abs(image.astype(int) - 128).max(-1) > 30)
        if not len(xs):
            return np.zeros((0, 4), np.float32)
        return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


def test_every_first_frame_runs_the_detector_and_nothing_else():
    detect = PatchDetector()
    cadence = CadencedDetector(detect, every=1)
    for i in range(5):
        image, box = moving_frame(i)
        np.testing.assert_array_equal(cadence.boxes(image)[0], box)
        assert cadence.last_detected
    assert detect.calls == 5 == cadence.detector_runs


def test_boxes_follow_the_person_by_optical_flow_between_detections():
    detect = PatchDetector()
    cadence = CadencedDetector(detect, every=4)
    ran = []
    for i in range(12):
        image, box = moving_frame(i)
        found = cadence.boxes(image)
        ran.append(cadence.last_detected)
        assert len(found) == 1
        assert np.abs(found[0] - box).max() < 2.0, (i, found[0], box)  # within 2 px of the truth
    assert ran == [True, False, False, False] * 3 and detect.calls == 3 and cadence.early_runs == 0


def test_a_lost_box_is_detected_again_at_once():
    detect = PatchDetector()
    cadence = CadencedDetector(detect, every=10)
    cadence.boxes(moving_frame(0)[0])
    cadence.boxes(moving_frame(1)[0])
    assert detect.calls == 1
    hidden, _ = moving_frame(2, visible=False)
    assert len(cadence.boxes(hidden)) == 0  # the flow lost the person: the detector ran and found nobody
    assert cadence.last_detected and cadence.early_runs == 1 and detect.calls == 2


def _textured(width: int, height: int, seed: int) -> np.ndarray:
    """Random blocks of 3 px, smoothed: as rich in corners as pavement."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 3, width // 3, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


WALKER = (36, 56)  # width, height of the people in the street


def street_frame(i: int, pan: float, speed: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured street moving left by ``pan`` px per frame (the camera pans right), a person walking right ``speed``
    px per frame faster than it and a person standing on it → (BGR frame, the walker's xyxy box, the stander's)."""
    street = _textured(400, SIZE[1], seed=5)
    x0 = round(120 + pan * i)  # the street moves left in the image
    image = np.ascontiguousarray(street[:, x0 : x0 + SIZE[0]])
    walker = np.array([round(30 + (speed - pan) * i), 4, 0, 4 + WALKER[1]], np.float64)
    walker[2] = walker[0] + WALKER[0]
    stander = np.array([round(110 - pan * i), 62, 0, 62 + WALKER[1]], np.float64)
    stander[2] = stander[0] + WALKER[0]
    for box, seed in ((walker, 7), (stander, 9)):
        x1, y1, x2, y2 = box.astype(int)
        image[y1:y2, x1:x2] = _textured(WALKER[0], WALKER[1], seed)
    return image, walker, stander


def test_a_box_holding_much_background_follows_its_person_not_the_background():
    """The detector's box is twice as wide as the person: half of it is the still street, as rich in corners as the
    person, yet the box moves with the person (the median of all its points lagged 16 px behind after 6 frames)."""
    frames = [street_frame(i, pan=0.0, speed=3.0) for i in range(7)]
    widen = np.array([-WALKER[0] / 2, 0.0, WALKER[0] / 2, 0.0])
    boxes = iter([np.stack([frames[0][1] + widen])])
    cadence = CadencedDetector(lambda _image: next(boxes), every=10)
    for image, walker, _ in frames:
        found = cadence.boxes(image)
        assert np.abs(found[0] - (walker + widen)).max() < 2.0, (found[0], walker + widen)
    assert cadence.detector_runs == 1


def test_boxes_follow_people_through_a_camera_pan():
    """The camera pans (the street moves 3 px per frame): the walker's box, twice as wide as the walker, follows
    the walker, not the street it mostly holds (the street's own motion is what is not the walker's); the box of a
    person standing still follows the street."""
    frames = [street_frame(i, pan=3.0, speed=7.0) for i in range(7)]
    widen = np.array([[-WALKER[0] / 2, 0.0, WALKER[0] / 2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    boxes = iter([np.stack(frames[0][1:]) + widen])
    cadence = CadencedDetector(lambda _image: next(boxes), every=10)
    for image, walker, stander in frames:
        found = cadence.boxes(image)
        assert np.abs(found - (np.stack([walker, stander]) + widen)).max() < 2.0, (found, walker, stander)
    assert cadence.detector_runs == 1 and cadence.early_runs == 0


def test_propagating_a_flat_or_tiny_box_gives_up():
    grey = np.full((SIZE[1], SIZE[0]), 128, np.uint8)
    assert propagate_box(grey, grey, np.array([10.0, 10.0, 60.0, 80.0])) is None
    assert propagate_box(grey, grey, np.array([10.0, 10.0, 12.0, 80.0])) is None
    with pytest.raises(ValueError, match="at least 1"):
        CadencedDetector(PatchDetector(), every=0)


def test_media_error_is_a_mega_error():
    assert issubclass(MediaError, MegaError)


# -- the option in the CLI and the protocol --------------------------------------------------------------------------


def _infer_request(**fields):
    import json

    from mega_runtime.io.protocol import InferRequest, parse_request

    message = {"v": 1, "id": "j1", "op": "infer", "source": {"path": "/tmp/clip.mp4"}, **fields}
    request = parse_request(json.dumps(message).encode())
    assert isinstance(request, InferRequest)
    return request


def test_detect_every_is_an_infer_option_of_the_cli_and_the_protocol():
    from mega_runtime import defaults
    from mega_runtime.commands.cli import build_parser
    from mega_runtime.io.protocol import ProtocolError, infer_defaults

    parser = build_parser()
    assert parser.parse_args(["infer", "clip.mp4", "--out", "o"]).detect_every == defaults.DETECT_EVERY
    assert parser.parse_args(["infer", "clip.mp4", "--out", "o", "--detect-every", "3"]).detect_every == 3
    for bad in ("0", str(defaults.MAX_DETECT_EVERY + 1)):
        with pytest.raises(SystemExit):
            parser.parse_args(["infer", "clip.mp4", "--out", "o", "--detect-every", bad])
    assert _infer_request().detect_every == defaults.DETECT_EVERY == infer_defaults()["detect_every"]
    assert _infer_request(detect_every=5).detect_every == 5
    for bad in (0, defaults.MAX_DETECT_EVERY + 1, True, 2.5):
        with pytest.raises(ProtocolError, match="'detect_every' must be an integer"):
            _infer_request(detect_every=bad)
