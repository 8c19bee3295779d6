"""Detection controls and user boxes, checked once for the CLI, the protocol and the pipeline (stdlib only).

* :class:`DetectionSettings` — which detector and which threshold (``conf``, score in [0, 1]), minimum person
  height (``min_height_px``, pixels of the source frame) and maximum number of people (``max_people``, best
  scores kept; None keeps all) decide who is reconstructed. Built by :func:`detection_settings`, which refuses a
  bad value with :class:`DetectionSettingsError` (message + hint).
* User boxes: :func:`check_boxes` (one list ``[[x1, y1, x2, y2], ...]``) and :func:`parse_frame_boxes` /
  :func:`read_boxes_file` (boxes per frame, ``{"<frame>": [[x1, y1, x2, y2], ...], ...}``, frame = the source
  video's frame number, counted from 0). Boxes are pixels of the frame; ``x1 < x2`` and ``y1 < y2``.
* :data:`BOX_SOURCES` — what the result's ``box_source`` array codes mean (docs/result-format.md).
* Protocol fields (docs/protocol.md): :func:`request_detection` checks an ``infer`` request's ``detection`` object,
  ``boxes_per_frame`` and ``boxes_mode``, :func:`request_boxes` its ``boxes``; the protocol turns their
  :class:`DetectionSettingsError` into a ``bad_request`` reply with the same message and hint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import MegaError

Box = tuple[float, float, float, float]
FrameBoxes = dict[int, tuple[Box, ...]]

#: The result's ``box_source`` codes: index into this tuple (−1 where a person is not seen).
BOX_SOURCES = ("detected", "given")
#: ``boxes_mode``: ``replace`` — in a frame with given boxes, only those people; ``add`` — the detector runs too
#: and its boxes that overlap a given box (IoU ≥ :data:`ADD_MODE_IOU`) are dropped in favour of the given one.
BOXES_MODES = defaults.BOXES_MODES
ADD_MODE_IOU = 0.5
#: Keys of an ``infer`` request's ``detection`` object (each optional: the server's own setting otherwise).
DETECTION_KEYS = ("detector", "conf", "min_height_px", "max_people")


class DetectionSettingsError(MegaError):
    """A detection control or a user box is out of range or malformed."""

    code = "detection_settings_invalid"


@dataclass(frozen=True)
class DetectionSettings:
    """Detector choice and filters. ``conf``: minimum score in [0, 1]; ``min_height_px``: minimum box height in
    pixels (≥ 0); ``max_people``: at most this many people per frame, best scores first (None: all)."""

    detector: str = defaults.DETECTOR
    conf: float = defaults.DETECTOR_CONF
    min_height_px: float = defaults.DETECTOR_MIN_HEIGHT_PX
    max_people: int | None = defaults.DETECTOR_MAX_PEOPLE

    def as_meta(self) -> dict[str, Any]:
        """The settings as the result's ``detection.settings`` block."""
        return {"conf": self.conf, "min_height_px": self.min_height_px, "max_people": self.max_people}

    def as_request(self) -> dict[str, Any]:
        """The settings as a protocol ``detection`` object (docs/protocol.md)."""
        return {"detector": self.detector, **self.as_meta()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def detection_settings(
    detector: Any = defaults.DETECTOR,
    conf: Any = defaults.DETECTOR_CONF,
    min_height_px: Any = defaults.DETECTOR_MIN_HEIGHT_PX,
    max_people: Any = defaults.DETECTOR_MAX_PEOPLE,
) -> DetectionSettings:
    """Checked :class:`DetectionSettings`; a bad value raises :class:`DetectionSettingsError` naming the fix."""
    if detector not in defaults.DETECTOR_CHOICES:
        raise DetectionSettingsError(
            f"unknown detector {detector!r}", hint=f"use one of {', '.join(defaults.DETECTOR_CHOICES)}"
        )
    if not _is_number(conf) or not 0.0 <= conf <= 1.0:
        raise DetectionSettingsError(
            f"the detection threshold must be a number in [0, 1], got {conf!r}",
            hint=f"e.g. {defaults.DETECTOR_CONF} (lower finds more people, and more false ones)",
        )
    if not _is_number(min_height_px) or not 0.0 <= min_height_px <= defaults.MAX_DETECTOR_MIN_HEIGHT_PX:
        raise DetectionSettingsError(
            f"the minimum person height must be a number of pixels in [0, {defaults.MAX_DETECTOR_MIN_HEIGHT_PX}], "
            f"got {min_height_px!r}",
            hint="e.g. 60 (0 keeps people of any size)",
        )
    if max_people is not None and (
        isinstance(max_people, bool)
        or not isinstance(max_people, int)
        or not 1 <= max_people <= defaults.MAX_DETECTOR_PEOPLE
    ):
        raise DetectionSettingsError(
            f"the maximum number of people must be a whole number in 1 … {defaults.MAX_DETECTOR_PEOPLE} "
            f"(or none for all), got {max_people!r}",
            hint="e.g. 4, or leave it out to keep everyone found",
        )
    return DetectionSettings(str(detector), float(conf), float(min_height_px), max_people)


def check_boxes(value: Any, where: str = "boxes") -> tuple[Box, ...]:
    """A list of ``[x1, y1, x2, y2]`` pixel boxes (finite, x1 < x2, y1 < y2) as a tuple; an empty list is allowed."""
    hint = "give a list of [x1, y1, x2, y2] boxes in pixels with x1 < x2 and y1 < y2"
    if not isinstance(value, list | tuple):
        raise DetectionSettingsError(f"{where} must be a list of boxes, got {type(value).__name__}", hint=hint)
    out = []
    for i, box in enumerate(value):
        if not isinstance(box, list | tuple) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise DetectionSettingsError(f"{where}[{i}] is not 4 finite numbers: {box!r}", hint=hint)
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise DetectionSettingsError(f"{where}[{i}] {[x1, y1, x2, y2]} is empty or reversed", hint=hint)
        out.append((x1, y1, x2, y2))
    return tuple(out)


def parse_frame_boxes(value: Any, where: str = "boxes per frame") -> FrameBoxes:
    """``{"<frame>": [[x1, y1, x2, y2], ...]}`` (frame numbers as strings or ints, ≥ 0) → {frame: boxes}."""
    hint = 'give an object {"<frame>": [[x1, y1, x2, y2], ...]} with frame numbers from 0'
    if not isinstance(value, Mapping):
        raise DetectionSettingsError(f"{where} must be an object of frame → boxes", hint=hint)
    out: FrameBoxes = {}
    for key, boxes in value.items():
        text = str(key).strip()
        if isinstance(key, bool) or not text.isdigit():
            raise DetectionSettingsError(f"{where}: {key!r} is not a frame number (a whole number ≥ 0)", hint=hint)
        frame = int(text)
        if frame in out:
            raise DetectionSettingsError(f"{where}: frame {frame} is given twice", hint=hint)
        out[frame] = check_boxes(boxes, f"{where} frame {frame}")
    return dict(sorted(out.items()))


def read_boxes_file(path: Path | str) -> FrameBoxes:
    """Read a boxes-per-frame JSON file (:func:`parse_frame_boxes`), refusing a missing, large or bad file."""
    path = Path(path)
    hint = 'write JSON such as {"0": [[10, 20, 110, 320]], "5": [[12, 22, 112, 322]]}'
    if not path.is_file():
        raise DetectionSettingsError(f"boxes file {path} does not exist", hint="check the path")
    if path.stat().st_size > defaults.MAX_BOXES_FILE_BYTES:
        raise DetectionSettingsError(
            f"boxes file {path} is over {defaults.MAX_BOXES_FILE_BYTES} bytes", hint="split the clip into parts"
        )
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DetectionSettingsError(f"boxes file {path} is not valid JSON: {exc}", hint=hint) from None
    return parse_frame_boxes(value, f"boxes file {path.name}")


def request_detection(message: Mapping[str, Any]) -> tuple[dict[str, Any], FrameBoxes | None, str]:
    """The ``detection`` object (given keys only, each checked), ``boxes_per_frame`` and ``boxes_mode`` of an
    ``infer`` request; a bad value raises :class:`DetectionSettingsError` with the protocol's message and hint."""
    value = message.get("detection")
    given: dict[str, Any] = {}
    keys = ", ".join(DETECTION_KEYS)
    if value is not None:
        if not isinstance(value, dict):
            raise DetectionSettingsError(f"'detection' must be an object with some of {keys}")
        unknown = sorted(set(value) - set(DETECTION_KEYS))
        if unknown:
            raise DetectionSettingsError(
                f"'detection' has unknown key(s) {', '.join(map(repr, unknown))}", hint=f"use {keys}"
            )
        given = dict(value)
        try:
            detection_settings(**{"detector": defaults.DETECTOR, **given})
        except DetectionSettingsError as exc:
            raise DetectionSettingsError(f"'detection': {exc.message}", hint=exc.hint) from None
        if "conf" in given:
            given["conf"] = float(given["conf"])
        if "min_height_px" in given:
            given["min_height_px"] = float(given["min_height_px"])
    frame_boxes = None
    if message.get("boxes_per_frame") is not None:
        frame_boxes = parse_frame_boxes(message["boxes_per_frame"], "'boxes_per_frame'")
    mode = message.get("boxes_mode", defaults.BOXES_MODE)
    if mode not in defaults.BOXES_MODES:
        choices = " or ".join(map(repr, defaults.BOXES_MODES))
        raise DetectionSettingsError(f"'boxes_mode' must be {choices}, got {mode!r}")
    return given, frame_boxes, mode


def request_boxes(value: Any) -> tuple[Box, ...] | None:
    """An ``infer`` request's ``boxes`` (None when absent), checked as :func:`check_boxes` with the protocol's
    message; a bad value raises :class:`DetectionSettingsError`."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise DetectionSettingsError(
            "'boxes' must be a list of [x1, y1, x2, y2] finite numbers with x1 < x2 and y1 < y2"
        )
    try:
        return check_boxes(value, "'boxes'")
    except DetectionSettingsError as exc:
        raise DetectionSettingsError(
            f"'boxes' must be a list of [x1, y1, x2, y2] finite numbers with x1 < x2 and y1 < y2: {exc.message}",
            hint=exc.hint,
        ) from None
