"""The live-link protocol (docs/protocol.md): requests, replies, limits, framing. Imports no torch.

One JSON object per line in each direction. :class:`LineReader` frames a byte stream into lines without ever
holding more than one bounded line; :func:`parse_request` validates a line into a :class:`Request` (for
``infer`` an :class:`InferRequest`) or raises :class:`ProtocolError` with the reply's code, message and hint;
:class:`ReplyWriter` writes replies, one whole line at a time, from any thread. An ``infer``'s ``boxes``,
``detection``, ``boxes_per_frame`` and ``boxes_mode`` are checked by ``io/detection.py``, its ``temporal`` object
by ``io/temporal_options.py``; their errors become ``bad_request`` replies here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from mega_runtime import defaults
from mega_runtime.constants import NUM_VERTICES
from mega_runtime.defaults import MAX_INLINE_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, VIDEO_SUFFIXES
from mega_runtime.errors import MegaError
from mega_runtime.io.detection import (
    DetectionSettings,
    DetectionSettingsError,
    FrameBoxes,
    request_boxes,
    request_detection,
)
from mega_runtime.io.temporal_options import TemporalOptions, TemporalOptionsError, parse_temporal_options

OPS = ("hello", "infer", "complete", "generate", "cancel", "shutdown")
MODELS = defaults.MODEL_SHORT_NAMES
READ_CHUNK = 1 << 16


class ProtocolError(MegaError):
    """A request the server cannot act on; ``code`` is the reply's error code."""

    def __init__(self, code: str, message: str, hint: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A parsed ``hello``, ``cancel`` (``job`` set) or ``shutdown``."""

    request_id: str
    op: str
    job: str | None = None


@dataclass(frozen=True)
class InferRequest:
    """A parsed ``infer``: the source is either ``path`` or ``data`` (decoded bytes) with ``name``."""

    request_id: str
    path: str | None
    data: bytes | None
    name: str
    out_dir: str | None
    result_name: str | None
    inline_result: bool
    model: str
    hypotheses: int
    steps: int | None
    temperature: float | None
    seed: int
    sampler: str
    device: str | None
    boxes: tuple[tuple[float, float, float, float], ...] | None
    frame_start: int
    frame_stop: int | None
    frame_step: int
    temporal: TemporalOptions | None = None
    smpl_model: str | None = None
    #: The ``detection`` keys the request gave, checked (``DETECTION_KEYS`` of ``io/detection.py``); the server
    #: fills in the rest.
    detection: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ``boxes_per_frame``: {source frame number: boxes}, for videos (a photo uses frame 0's).
    frame_boxes: FrameBoxes | None = None
    boxes_mode: str = defaults.BOXES_MODE
    #: Videos: stitch track fragments of one person after the pass.
    stitch: bool = defaults.STITCH
    precision: str | None = None
    detect_every: int = defaults.DETECT_EVERY
    score_steps: int = defaults.SCORE_STEPS

    @property
    def op(self) -> str:
        return "infer"

    @property
    def is_video(self) -> bool:
        suffix = "." + self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""
        return suffix in VIDEO_SUFFIXES


@dataclass(frozen=True)
class CompleteRequest:
    """A parsed ``complete``: keep the tokens owning ``keep`` (a region name or vertex indices) of one hypothesis of
    one person of the result at ``result_path``, resample the others ``count`` times (docs/completion.md)."""

    request_id: str
    result_path: str
    person: int
    hypothesis: int
    keep: str | tuple[int, ...]
    count: int
    seed: int
    coverage: float
    out_dir: str | None
    result_name: str | None
    device: str | None
    pin: bool = defaults.COMPLETION_PIN
    falloff_m: float = defaults.COMPLETION_FALLOFF_M
    use_image: bool = True

    @property
    def op(self) -> str:
        return "complete"

    @property
    def inline_result(self) -> bool:
        return False


@dataclass(frozen=True)
class GenerateRequest:
    """A parsed ``generate``: ``count`` bodies from the pre-trained unconditional model (as ``mega-runtime
    generate``); ``steps`` / ``temperature`` None = the official settings."""

    request_id: str
    count: int
    seed: int
    steps: int | None
    temperature: float | None
    out_dir: str | None
    result_name: str | None
    device: str | None
    stack: bool = False

    @property
    def op(self) -> str:
        return "generate"

    @property
    def inline_result(self) -> bool:
        return False


# -- framing ------------------------------------------------------------------------------------------------------


class LineReader:
    """Complete lines from a binary stream, each at most ``limit`` bytes.

    Iterating yields ``bytes`` lines (without the newline) or, for a longer line, ``None`` once that line
    has been skipped up to its newline — never buffering more than ``limit`` plus one chunk.
    """

    def __init__(self, stream: IO[bytes], limit: int = MAX_MESSAGE_BYTES) -> None:
        self.stream = stream
        self.limit = limit

    def __iter__(self) -> Iterator[bytes | None]:
        buffer = bytearray()
        skipping = False
        read = getattr(self.stream, "read1", None) or self.stream.read
        while True:
            chunk = read(READ_CHUNK)
            if not chunk:
                if buffer and not skipping:
                    yield bytes(buffer)
                return
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    if not skipping:
                        buffer += chunk[start:]
                        if len(buffer) > self.limit:
                            buffer.clear()
                            skipping = True
                    break
                if skipping:
                    skipping = False
                    yield None
                else:
                    buffer += chunk[start:newline]
                    if len(buffer) > self.limit:
                        yield None
                    else:
                        yield bytes(buffer)
                    buffer.clear()
                start = newline + 1


class ReplyWriter:
    """Writes replies as JSON lines to a binary stream; safe to call from several threads."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, request_id: str | None, **fields: Any) -> None:
        line = json.dumps({"v": PROTOCOL_VERSION, "type": kind, "id": request_id, **fields}, separators=(",", ":"))
        with self._lock:
            try:
                self.stream.write(line.encode("utf-8") + b"\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client has gone; the server notices on its input

    def error(self, request_id: str | None, code: str, message: str, hint: str | None = None) -> None:
        self.send("error", request_id, code=code, message=message, hint=hint)


# -- parsing ------------------------------------------------------------------------------------------------------


#: Largest value of each integer field of a request (the same limits as the command line's).
_INT_MAXIMA = {
    "hypotheses": defaults.MAX_HYPOTHESES,
    "steps": defaults.MAX_SAMPLING_STEPS,
    "seed": defaults.MAX_SEED,
    "count": min(defaults.MAX_HYPOTHESES, defaults.MAX_GENERATE_COUNT),
    "detect_every": defaults.MAX_DETECT_EVERY,
    "score_steps": defaults.MAX_SCORE_STEPS,
}


def _int(fields: dict[str, Any], key: str, default: int | None, minimum: int, rid: str) -> int | None:
    value = fields.get(key, default)
    if value is None:
        return None
    maximum = _INT_MAXIMA.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        allowed = f"≥ {minimum} and ≤ {maximum}" if maximum is not None else f"≥ {minimum}"
        raise ProtocolError("bad_request", f"'{key}' must be an integer {allowed}, got {value!r}", request_id=rid)
    return value


def _bool(fields: dict[str, Any], key: str, default: bool, rid: str) -> bool:
    value = fields.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"'{key}' must be true or false, got {value!r}", request_id=rid)
    return value


def parse_request(
    line: bytes, max_inline_bytes: int = MAX_INLINE_BYTES
) -> Request | InferRequest | CompleteRequest | GenerateRequest:
    """Validate one request line. Raises :class:`ProtocolError` (with the request id when it could be read)."""
    try:
        message = json.loads(line.decode("utf-8"))  # NaN/Infinity parse; each field's check refuses them by name
    except RecursionError:
        raise ProtocolError("bad_json", "the request nests too deeply", "send one flat JSON object per line") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(
            "bad_json", f"the request is not valid JSON: {exc}", "send one JSON object per line"
        ) from exc
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "the request is not a JSON object", "send one JSON object per line")
    rid = message.get("id")
    rid = rid if isinstance(rid, str) and rid else None
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol_version",
            f"this runtime speaks protocol {PROTOCOL_VERSION}; the request is protocol {version!r}",
            "use a client and runtime of matching versions",
            rid,
        )
    if rid is None:
        raise ProtocolError("bad_request", "the request has no 'id' (a non-empty string)")
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError("unknown_op", f"unknown op {op!r}", f"use one of {', '.join(OPS)}", rid)
    if op == "cancel":
        job = message.get("job")
        if not isinstance(job, str) or not job:
            raise ProtocolError("bad_request", "'cancel' needs 'job': the id of an infer request", request_id=rid)
        return Request(rid, op, job)
    if op == "complete":
        return _parse_complete(message, rid)
    if op == "generate":
        return _parse_generate(message, rid)
    if op != "infer":
        return Request(rid, op)
    return _parse_infer(message, rid, max_inline_bytes)


def _out_fields(message: dict[str, Any], rid: str) -> tuple[str | None, str | None, str | None]:
    """(out_dir, name, device) of a job request, checked as for ``infer``."""
    out_dir = message.get("out_dir")
    if out_dir is not None and (not isinstance(out_dir, str) or "\0" in out_dir or not os.path.isabs(out_dir)):
        raise ProtocolError(
            "bad_request", "'out_dir' must be an absolute folder path on the runtime's machine", request_id=rid
        )
    name = message.get("name")
    if name is not None and (
        not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name in {".", ".."}
    ):
        raise ProtocolError("bad_request", "'name' must be a plain file name (no folders)", request_id=rid)
    device = message.get("device")
    if device is not None and not isinstance(device, str):
        raise ProtocolError("bad_request", "'device' must be a string such as cpu or cuda", request_id=rid)
    return out_dir, name, device


def _temperature(message: dict[str, Any], rid: str) -> float | None:
    value = message.get("temperature")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= defaults.MAX_SAMPLING_TEMPERATURE
    ):
        raise ProtocolError(
            "bad_request",
            f"'temperature' must be a number ≥ 0 and ≤ {defaults.MAX_SAMPLING_TEMPERATURE:g}, got {value!r}",
            request_id=rid,
        )
    return float(value)


def _parse_complete(message: dict[str, Any], rid: str) -> CompleteRequest:
    result = message.get("result")
    if not isinstance(result, str) or not result or "\0" in result or not os.path.isabs(result):
        raise ProtocolError("bad_request", "'result' must be the absolute path of a result .json", request_id=rid)
    keep = message.get("keep")
    kept: str | tuple[int, ...]
    if isinstance(keep, str) and keep:
        kept = keep
    elif (
        isinstance(keep, list)
        and keep
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < NUM_VERTICES for i in keep)
    ):
        kept = tuple(keep)
    else:
        raise ProtocolError(
            "bad_request",
            f"'keep' must be a region name or a non-empty list of vertex indices in [0, {NUM_VERTICES})",
            request_id=rid,
        )
    coverage = message.get("coverage", defaults.COMPLETION_COVERAGE)
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0 < coverage <= 1:
        raise ProtocolError("bad_request", f"'coverage' must be a number in (0, 1], got {coverage!r}", request_id=rid)
    falloff = message.get("falloff_m", defaults.COMPLETION_FALLOFF_M)
    if isinstance(falloff, bool) or not isinstance(falloff, int | float) or not 0 <= falloff <= 10:
        raise ProtocolError(
            "bad_request", f"'falloff_m' must be a number in [0, 10] (metres), got {falloff!r}", request_id=rid
        )
    out_dir, name, device = _out_fields(message, rid)
    return CompleteRequest(
        request_id=rid,
        result_path=result,
        person=_int(message, "person", 0, 0, rid) or 0,
        hypothesis=_int(message, "hypothesis", 0, 0, rid) or 0,
        keep=kept,
        count=_int(message, "count", defaults.COMPLETION_COUNT, 1, rid) or defaults.COMPLETION_COUNT,
        seed=_int(message, "seed", defaults.SEED, 0, rid) or 0,
        coverage=float(coverage),
        out_dir=out_dir,
        result_name=name,
        device=device,
        pin=_bool(message, "pin", defaults.COMPLETION_PIN, rid),
        falloff_m=float(falloff),
        use_image=_bool(message, "use_image", True, rid),
    )


def _parse_generate(message: dict[str, Any], rid: str) -> GenerateRequest:
    out_dir, name, device = _out_fields(message, rid)
    return GenerateRequest(
        request_id=rid,
        count=_int(message, "count", defaults.GENERATE_COUNT, 1, rid) or defaults.GENERATE_COUNT,
        seed=_int(message, "seed", defaults.SEED, 0, rid) or 0,
        steps=_int(message, "steps", None, 1, rid),
        temperature=_temperature(message, rid),
        out_dir=out_dir,
        result_name=name,
        device=device,
        stack=_bool(message, "stack", False, rid),
    )


def _parse_infer(message: dict[str, Any], rid: str, max_inline_bytes: int) -> InferRequest:
    source = message.get("source")
    if not isinstance(source, dict) or ("path" in source) == ("data" in source):
        raise ProtocolError("bad_request", "'source' must hold exactly one of 'path' or 'data'", request_id=rid)
    path = source.get("path")
    data: bytes | None = None
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ProtocolError("bad_request", "'source.path' must be a non-empty string", request_id=rid)
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
    else:
        encoded, given_name = source.get("data"), source.get("name")
        if not isinstance(encoded, str) or not isinstance(given_name, str) or not given_name:
            raise ProtocolError("bad_request", "inline 'source' needs 'data' (base64) and 'name'", request_id=rid)
        name = given_name
        if len(encoded) // 4 * 3 > max_inline_bytes:
            raise ProtocolError(
                "too_large",
                f"the inline source is over the limit of {max_inline_bytes} bytes",
                "send a smaller image, or the file's path to a runtime on the same machine",
                rid,
            )
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("bad_request", "'source.data' is not valid base64", request_id=rid) from exc
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
        if name in {"", ".", ".."} or "\0" in name:
            raise ProtocolError("bad_request", "'source.name' must be a file name such as photo.jpg", request_id=rid)
    out_dir = message.get("out_dir")
    if out_dir is not None and (not isinstance(out_dir, str) or "\0" in out_dir or not os.path.isabs(out_dir)):
        raise ProtocolError(
            "bad_request", "'out_dir' must be an absolute folder path on the runtime's machine", request_id=rid
        )
    result_name = message.get("name")
    if result_name is not None and (
        not isinstance(result_name, str)
        or not result_name
        or any(c in result_name for c in "/\\\0")
        or result_name in {".", ".."}
    ):
        raise ProtocolError("bad_request", "'name' must be a plain file name (no folders)", request_id=rid)
    returned = message.get("return", "files")
    if returned not in ("files", "inline"):
        raise ProtocolError("bad_request", "'return' must be 'files' or 'inline'", request_id=rid)
    model = message.get("model", defaults.DEFAULT_MODEL)
    if not isinstance(model, str) or MODELS.get(model, model) not in MODELS.values():
        raise ProtocolError("bad_request", f"unknown model {model!r}", f"use {', '.join(MODELS)}", rid)
    temperature = message.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature < 0
        or temperature > defaults.MAX_SAMPLING_TEMPERATURE
    ):
        raise ProtocolError(
            "bad_request",
            f"'temperature' must be a number ≥ 0 and ≤ {defaults.MAX_SAMPLING_TEMPERATURE:g}, got {temperature!r}",
            request_id=rid,
        )
    sampler = message.get("sampler", defaults.SAMPLER)
    if sampler not in defaults.SAMPLERS:
        raise ProtocolError("bad_request", f"'sampler' must be one of {', '.join(defaults.SAMPLERS)}", request_id=rid)
    device = message.get("device")
    if device is not None and not isinstance(device, str):
        raise ProtocolError("bad_request", "'device' must be a string such as cpu or cuda", request_id=rid)
    precision = message.get("precision")
    if precision is not None and precision not in defaults.PRECISIONS:
        raise ProtocolError(
            "bad_request", f"'precision' must be one of {', '.join(defaults.PRECISIONS)}", request_id=rid
        )
    try:
        boxes = request_boxes(message.get("boxes"))
        detection, frame_boxes, boxes_mode = request_detection(message)
        temporal = parse_temporal_options(message.get("temporal"))
    except (DetectionSettingsError, TemporalOptionsError) as exc:
        raise ProtocolError("bad_request", exc.message, exc.hint, rid) from None
    smpl_model = message.get("smpl_model")
    if smpl_model is not None and (not isinstance(smpl_model, str) or not smpl_model):
        raise ProtocolError("bad_request", "'smpl_model' must be the path of an SMPL model file", request_id=rid)
    frames = message.get("frames") or {}
    if not isinstance(frames, dict):
        raise ProtocolError("bad_request", "'frames' must be an object with start, stop, step", request_id=rid)
    start, stop = _int(frames, "start", 0, 0, rid) or 0, _int(frames, "stop", None, 1, rid)
    if stop is not None and stop <= start:
        raise ProtocolError(
            "bad_request", f"'frames' selects no frame (start {start}, stop {stop})", "use a stop above the start", rid
        )
    return InferRequest(
        request_id=rid,
        path=path,
        data=data,
        name=name,
        out_dir=out_dir,
        result_name=result_name,
        inline_result=returned == "inline",
        model=MODELS.get(model, model),
        hypotheses=_int(message, "hypotheses", defaults.NUM_HYPOTHESES, 1, rid) or defaults.NUM_HYPOTHESES,
        steps=_int(message, "steps", None, 1, rid),
        temperature=float(temperature) if temperature is not None else None,
        seed=_int(message, "seed", defaults.SEED, 0, rid) or 0,
        sampler=sampler,
        device=device,
        boxes=boxes,
        frame_start=_int(frames, "start", 0, 0, rid) or 0,
        frame_stop=_int(frames, "stop", None, 1, rid),
        frame_step=_int(frames, "step", 1, 1, rid) or 1,
        temporal=temporal,
        smpl_model=smpl_model,
        detection=detection,
        frame_boxes=frame_boxes,
        boxes_mode=boxes_mode,
        stitch=_bool(message, "stitch", defaults.STITCH, rid),
        precision=precision,
        detect_every=_int(message, "detect_every", defaults.DETECT_EVERY, 1, rid) or defaults.DETECT_EVERY,
        score_steps=_int(message, "score_steps", defaults.SCORE_STEPS, 1, rid) or defaults.SCORE_STEPS,
    )


def infer_defaults() -> dict[str, Any]:
    """What an ``infer`` request gets for each field it leaves out (``hello`` reports it; docs/protocol.md)."""
    return {
        "model": defaults.DEFAULT_MODEL,
        "hypotheses": defaults.NUM_HYPOTHESES,
        "steps": defaults.SAMPLING_STEPS,
        "temperature": defaults.SAMPLING_TEMPERATURE,
        "seed": defaults.SEED,
        "sampler": defaults.SAMPLER,
        "temporal": dataclasses.asdict(TemporalOptions()),
        "detection": DetectionSettings().as_request(),
        "detector_choices": list(defaults.DETECTOR_CHOICES),
        "boxes_mode": defaults.BOXES_MODE,
        "stitch": defaults.STITCH,
        "detect_every": defaults.DETECT_EVERY,
        "score_steps": defaults.SCORE_STEPS,
    }
