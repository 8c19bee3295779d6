"""The whole chain, and the only module that knows it: media → people → crops → MEGA → camera → result.

:class:`Pipeline` holds a loaded :class:`~mega_runtime.mega.Mega`, a person detector and the
faces of the SMPL topology, and turns a photo or a video into a :class:`~mega_runtime.io.result.Result`.
Vertices in the result are in metres in the camera frame (OpenCV axes: x right, y down, z forward)
of a pinhole camera with focal 1000/224·max(W, H) px and the principal point at the image centre:
v_cam = R·v + t with t from the official ``cam_crop_to_full``. Hypothesis 0 is always the
deterministic decode.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mega_runtime import __version__, defaults
from mega_runtime.constants import NUM_TOKENS, NUM_VERTICES
from mega_runtime.decoding.schedule import CVQMAE_SAMPLING, SamplingConfig
from mega_runtime.decoding.scoring import ScoringConfig
from mega_runtime.io.detection import ADD_MODE_IOU, BOX_SOURCES, DetectionSettings, FrameBoxes
from mega_runtime.io.result import Result
from mega_runtime.pipeline.cadence import CadencedDetector
from mega_runtime.pipeline.media import FrameRange, MediaError, Prefetched, iter_frames, open_video, read_image
from mega_runtime.pipeline.preprocess import Crop, crop_person, focal_length_px
from mega_runtime.pipeline.reid import (
    SHAPE_DIM,
    appearance_descriptors,
    shape_descriptor,
    stitch_tracklets,
    tracklets_from_frames,
)
from mega_runtime.pipeline.tracking import BoxTracker
from mega_runtime.pipeline.visibility import visibility_warnings

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
#: A photo's progress: (stage, done, total) with stage ``detect`` (0/1, 1/1) then ``model`` (people done/people).
StageProgress = Callable[[str, int, int | None], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class PipelineConfig:
    """How to reconstruct. ``num_hypotheses`` counts hypothesis 0 (the deterministic decode)."""

    model: str = defaults.MODEL_SHORT_NAMES[defaults.DEFAULT_MODEL]
    num_hypotheses: int = defaults.NUM_HYPOTHESES
    sampling: SamplingConfig = field(default_factory=lambda: CVQMAE_SAMPLING)
    sampler: str = defaults.SAMPLER
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    batch_size: int = defaults.BATCH_SIZE
    #: Detector choice and filters (threshold, minimum height, maximum people); recorded in the result.
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    #: fp32 (exact), bf16, int8 or auto: see :class:`mega_runtime.mega.Mega`.
    precision: str = defaults.PRECISION
    #: Blocks of the hypothesis scorer (1 = free, from the all-masked logits; see defaults.SCORE_STEPS).
    score_steps: int = defaults.SCORE_STEPS
    #: Opt-in torch.compile of the backbone and token transformers (:meth:`mega_runtime.mega.Mega.compile_models`).
    compile: bool = False

    def __post_init__(self) -> None:
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be at least 1, got {self.num_hypotheses}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 1 <= self.score_steps <= defaults.MAX_SCORE_STEPS:
            raise ValueError(f"score_steps must be between 1 and {defaults.MAX_SCORE_STEPS}, got {self.score_steps}")


@dataclass
class _PersonOutput:
    tokens: np.ndarray
    log_likelihood: np.ndarray
    vertices: np.ndarray
    cam_t: np.ndarray
    vertex_std: np.ndarray
    rotation: np.ndarray
    cam_crop: np.ndarray


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def build_detector(settings: DetectionSettings, **options: Any):
    """The person detector ``settings`` name, built with its threshold (``conf``); ``options`` as for
    :func:`~mega_runtime.pipeline.detect.make_detector` (e.g. ``weights`` for yolo)."""
    from mega_runtime.pipeline.detect import make_detector

    return make_detector(settings.detector, conf=settings.conf, **options)


def filter_detections(detections: Sequence[Any], settings: DetectionSettings) -> list[Any]:
    """Detections (sorted best first) with score ≥ ``conf`` and height ≥ ``min_height_px``, at most
    ``max_people`` of them, best scores first."""
    kept = [d for d in detections if d.score >= settings.conf and d.height >= settings.min_height_px]
    kept.sort(key=lambda d: -d.score)
    return kept if settings.max_people is None else kept[: settings.max_people]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def camera_meta(width: int, height: int) -> dict[str, Any]:
    """The result's ``camera`` block: the official demo's pinhole for a W×H image (OpenCV axes, metres)."""
    return {
        "focal_px": float(focal_length_px(width, height)),
        "principal_point_px": [width / 2.0, height / 2.0],
        "convention": "opencv",
        "axes": "x right, y down, z forward",
        "units": "metres",
    }


def _with_people(
    video: Iterator[tuple[int, np.ndarray]],
    find: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> Generator[tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], float], None, None]:
    """(frame index, BGR frame, its people = ``find(index, frame)`` (boxes, box sources, scores), seconds spent
    finding them) for each frame of ``video``."""
    try:
        for index, image in video:
            t = time.perf_counter()
            people = find(index, image)
            yield index, image, people, time.perf_counter() - t
    finally:
        close = getattr(video, "close", None)
        if close is not None:
            close()


class Pipeline:
    """Photos and videos in, :class:`Result` out."""

    def __init__(self, mega, detector, faces: np.ndarray, config: PipelineConfig, model_info: dict[str, Any]) -> None:
        self.mega = mega
        self.detector = detector
        self.faces = np.asarray(faces, dtype=np.int32)
        self.config = config
        self.model_info = model_info

    @classmethod
    def load(
        cls,
        config: PipelineConfig,
        checkpoint_dir: Path | str | None = None,
        assets_dir: Path | str | None = None,
        detector=None,
        progress=None,
    ) -> Pipeline:
        """Resolve weights (local folders or the cache, downloading when allowed) and load everything."""
        from mega_runtime.mega import Mega, resolve_device
        from mega_runtime.models.assets import read_template_ply
        from mega_runtime.weights import resolve_assets_dir, resolve_checkpoint_dir
        from mega_runtime.weights.loaders import CHECKPOINT_FILES

        assets = resolve_assets_dir(assets_dir, progress=progress)
        checkpoints = resolve_checkpoint_dir(
            [config.model, defaults.TOKENIZER_MODEL], checkpoint_dir, progress=progress, assets_dir=assets
        )
        device = resolve_device(config.device)
        mega = Mega.from_checkpoints(
            checkpoints, config.model, assets_dir=assets, device=device, precision=config.precision
        )
        if config.compile:
            mega.compile_models()
        template = read_template_ply(assets / "template.ply")
        model_file = checkpoints / CHECKPOINT_FILES[config.model]
        info = {
            "name": config.model,
            "backbone": mega.cvqmae.config.backbone.type,
            "checkpoint": str(model_file),
            "checkpoint_sha256": file_sha256(model_file),
            "input_size": list(mega.cvqmae.config.backbone.input_size),
        }
        return cls(
            mega, detector if detector is not None else build_detector(config.detection), template.faces, config, info
        )

    # -- core -----------------------------------------------------------------------------------
    def _detected(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detector's people in ``image`` that pass :func:`filter_detections`: (N, 4) float32 xyxy pixels and
        (N,) float32 scores."""
        found = filter_detections(self.detector.detect(image), self.config.detection)
        boxes = np.array([d.box_xyxy for d in found], dtype=np.float32).reshape(-1, 4)
        return boxes, np.array([d.score for d in found], dtype=np.float32).reshape(-1)

    def _people_boxes(
        self,
        image: np.ndarray,
        boxes: Sequence[Sequence[float]] | None,
        mode: str = defaults.BOXES_MODE,
        detected: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (N, 4) xyxy pixels, source codes (N,) int8 into BOX_SOURCES, scores (N,)), left to right.

        Given ``boxes`` replace the detector (``mode`` replace) or join what it finds (``mode`` add: a found box
        overlapping a given one by IoU ≥ ADD_MODE_IOU is dropped). Found boxes are :meth:`_detected`'s (or
        ``detected``, when the caller has them, e.g. from a detection cadence); given boxes are kept as given
        (clipped to the image)."""
        rows: list[tuple[tuple[float, ...], int, float]] = []
        if boxes is not None:
            from mega_runtime.pipeline.detect import make_detector

            given = make_detector("boxes", boxes=boxes).detect(image) if len(boxes) else []
            rows += [(d.box_xyxy, BOX_SOURCES.index("given"), 1.0) for d in given]
        if boxes is None or mode == "add":
            found_boxes, found_scores = detected if detected is not None else self._detected(image)
            rows += [
                (tuple(float(v) for v in box), BOX_SOURCES.index("detected"), float(score))
                for box, score in zip(found_boxes, found_scores, strict=True)
                if not any(_iou(box, g) >= ADD_MODE_IOU for g, code, _ in rows if code == 1)
            ]
        out = np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4)
        order = np.argsort((out[:, 0] + out[:, 2]) / 2, kind="stable")  # left to right
        sources = np.array([r[1] for r in rows], dtype=np.int8).reshape(-1)
        scores = np.array([r[2] for r in rows], dtype=np.float32).reshape(-1)
        return out[order], sources[order], scores[order]

    def _crops(self, image: np.ndarray, boxes: np.ndarray) -> list[Crop]:
        patch = tuple(self.mega.cvqmae.config.backbone.input_size)
        return [crop_person(image, box, patch) for box in boxes]

    def _run_crops(self, crops: list[Crop], done: Callable[[int], None] | None = None) -> list[_PersonOutput]:
        """MEGA on a list of crops (batched), then the full-image camera; ``done(people done)`` after each batch."""
        import torch

        from mega_runtime.models.geometry import cam_crop_to_full

        out: list[_PersonOutput] = []
        cfg = self.config
        for start in range(0, len(crops), cfg.batch_size):
            part = crops[start : start + cfg.batch_size]
            images = torch.from_numpy(np.stack([c.image for c in part]))
            gen = torch.Generator().manual_seed(cfg.seed)
            res = self.mega.reconstruct(
                images, cfg.num_hypotheses, gen, cfg.sampling, cfg.sampler, scoring=ScoringConfig(cfg.score_steps)
            )
            if res.log_likelihood is None:  # scoring is never skipped here; a None would be a bug
                raise RuntimeError("Mega.reconstruct returned no log-likelihood")
            focal = torch.tensor([focal_length_px(*c.img_size.astype(int)) for c in part])
            cam_t = cam_crop_to_full(
                res.cam.float().cpu(),
                torch.from_numpy(np.stack([c.box_center for c in part])),
                torch.tensor([c.box_size for c in part]),
                torch.from_numpy(np.stack([c.img_size for c in part])),
                focal,
            )
            vertices = res.vertices.cpu() + cam_t[:, None, None, :]
            for i in range(len(part)):
                out.append(
                    _PersonOutput(
                        tokens=res.tokens[i].cpu().numpy().astype(np.int16),
                        log_likelihood=res.log_likelihood[i].cpu().numpy().astype(np.float32),
                        vertices=vertices[i].numpy().astype(np.float32),
                        cam_t=np.repeat(cam_t[i].numpy()[None], cfg.num_hypotheses, axis=0).astype(np.float32),
                        vertex_std=res.vertex_std[i].cpu().numpy().astype(np.float32),
                        rotation=res.rotation[i].cpu().numpy().astype(np.float32),
                        cam_crop=res.cam[i].cpu().numpy().astype(np.float32),
                    )
                )
            if done is not None:
                done(len(out))
        return out

    def _meta(self, source: dict[str, Any], width: int, height: int, timings: dict[str, float], warnings: list[str]):
        cfg = self.config
        return {
            "runtime_version": __version__,
            "model": self.model_info,
            "source": {**source, "width": int(width), "height": int(height)},
            "camera": camera_meta(width, height),
            "sampling": {
                "sampler": cfg.sampler,
                "num_hypotheses": cfg.num_hypotheses,
                "seed": cfg.seed,
                **asdict(cfg.sampling),
            },
            "scoring": {"estimator": "fixed-order blocks", "steps": cfg.score_steps},
            "detector": self._detector_name(),
            "detection": {
                "detector": self._detector_name(),
                "settings": cfg.detection.as_meta(),
                "box_sources": list(BOX_SOURCES),
            },
            "device": str(self.mega.device),
            "precision": self.mega.precision,
            "warnings": warnings,
            "timings_ms": {k: round(v * 1e3, 1) for k, v in timings.items()},
        }

    def _detector_name(self) -> str:
        return str(getattr(self.detector, "name", type(self.detector).__name__))

    @staticmethod
    def _visibility(arrays: dict[str, np.ndarray], width: int, height: int) -> list[str]:
        camera = camera_meta(width, height)
        pp = camera["principal_point_px"]
        return visibility_warnings(
            arrays["vertices"], arrays["valid"], arrays["frame_indices"], camera["focal_px"], (pp[0], pp[1]),
            width, height,
        )  # fmt: skip

    def _assemble(
        self, per_frame: list[dict[int, tuple[np.ndarray, _PersonOutput, int, float]]], frame_indices: list[int]
    ) -> dict[str, np.ndarray]:
        track_ids = sorted({tid for frame in per_frame for tid in frame})
        f, p, h = len(per_frame), len(track_ids), self.config.num_hypotheses
        arrays: dict[str, np.ndarray] = {
            "faces": self.faces,
            "vertices": np.zeros((f, p, h, NUM_VERTICES, 3), np.float32),
            "cam_t": np.zeros((f, p, h, 3), np.float32),
            "tokens": np.zeros((f, p, h, NUM_TOKENS), np.int16),
            "log_likelihood": np.zeros((f, p, h), np.float32),
            "vertex_std": np.zeros((f, p, NUM_VERTICES), np.float32),
            "rotation": np.zeros((f, p, 3, 3), np.float32),
            "cam_crop": np.zeros((f, p, 3), np.float32),
            "boxes_xyxy": np.zeros((f, p, 4), np.float32),
            "track_ids": np.asarray(track_ids, np.int32),
            "valid": np.zeros((f, p), bool),
            "frame_indices": np.asarray(frame_indices, np.int32),
            "box_source": np.full((f, p), -1, np.int8),
            "box_score": np.zeros((f, p), np.float32),
        }
        column = {tid: j for j, tid in enumerate(track_ids)}
        for i, frame in enumerate(per_frame):
            for tid, (box, person, source, score) in frame.items():
                j = column[tid]
                arrays["boxes_xyxy"][i, j] = box
                arrays["box_source"][i, j] = source
                arrays["box_score"][i, j] = score
                arrays["valid"][i, j] = True
                for name in ("vertices", "cam_t", "tokens", "log_likelihood", "vertex_std", "rotation", "cam_crop"):
                    arrays[name][i, j] = getattr(person, name)
        return arrays

    @staticmethod
    def _stitched(
        per_frame: list[dict[int, tuple[np.ndarray, _PersonOutput, int, float]]],
        seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> list[dict[int, tuple[np.ndarray, _PersonOutput, int, float]]]:
        """Per-frame people relabelled by the offline stitching (appearance + hypothesis 0's body shape)."""
        shapes = [
            np.array([shape_descriptor(frame[int(t)][1].vertices[0]) for t in ids]).reshape(len(ids), SHAPE_DIM)
            for frame, (ids, _, _) in zip(per_frame, seen, strict=True)
        ]
        tracklets = tracklets_from_frames([s[0] for s in seen], [s[1] for s in seen], [s[2] for s in seen], shapes)
        identity = stitch_tracklets(tracklets)
        return [{identity[tid]: person for tid, person in frame.items()} for frame in per_frame]

    # -- public -----------------------------------------------------------------------------------
    def run_image(
        self,
        image_bgr: np.ndarray,
        boxes: Sequence[Sequence[float]] | None = None,
        source: dict | None = None,
        progress: StageProgress | None = None,
        boxes_mode: str = defaults.BOXES_MODE,
    ) -> Result:
        """One photo ((H, W, 3) uint8 BGR) → a one-frame result with every person found (or given).

        ``boxes`` (xyxy pixels) replace the detector, or with ``boxes_mode="add"`` join what it finds.

        ``progress``, when given, is called with (stage, done, total): ``detect`` 0/1 and 1/1 around finding
        the people, then ``model`` 0/N and, after each batch through the model, people done/N. It only
        reports: the result is the same with or without it.
        """
        report = progress or (lambda stage, done, total: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        report("detect", 0, 1)
        found, sources, scores = self._people_boxes(image_bgr, boxes, boxes_mode)
        report("detect", 1, 1)
        timings["detect"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        crops = self._crops(image_bgr, found)
        timings["preprocess"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        report("model", 0, len(crops))
        people = self._run_crops(crops, lambda done: report("model", done, len(crops)))
        timings["model"] = time.perf_counter() - t2
        warnings = [] if len(found) else ["no person was found in the image"]
        frame = {j: (found[j], person, int(sources[j]), float(scores[j])) for j, person in enumerate(people)}
        arrays = self._assemble([frame], [0])
        h, w = image_bgr.shape[:2]
        warnings += self._visibility(arrays, w, h)
        meta = self._meta({"kind": "image", **(source or {})}, w, h, timings, warnings)
        return Result(meta=meta, arrays=arrays)

    def run_image_file(self, path: Path | str, boxes: Sequence[Sequence[float]] | None = None) -> Result:
        return self.run_image(read_image(path), boxes, {"path": str(Path(path).resolve())})

    def run_video(
        self,
        path: Path | str,
        frames: FrameRange | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
        tracker: BoxTracker | None = None,
        checkpoint: Callable[[Result], None] | None = None,
        checkpoint_every_s: float = 10.0,
        boxes: Sequence[Sequence[float]] | None = None,
        frame_boxes: FrameBoxes | None = None,
        boxes_mode: str = defaults.BOXES_MODE,
        stitch: bool = defaults.STITCH,
        detect_every: int = defaults.DETECT_EVERY,
        prefetch: int = defaults.VIDEO_PREFETCH_FRAMES,
    ) -> Result:
        """A video file → one result frame per processed frame, people tracked with stable IDs.

        Frames are decoded sequentially and their crops batched through the model. ``progress`` is
        called with (frames done, frames expected or None); ``should_stop`` is polled per frame — when
        it returns True the frames done so far are returned with a warning. ``checkpoint``, when given, is
        called about every ``checkpoint_every_s`` seconds with a result of all the frames decoded so far — a
        part-filled batch is run first, so a checkpoint never waits for a full batch (so a caller can keep them
        should the process die before the end). Tracking uses the boxes and the colours of each person; with
        ``stitch`` (default) fragments of one person's track are merged after the pass by appearance and body
        shape (:func:`~mega_runtime.pipeline.reid.stitch_tracklets`; checkpoints hold the unstitched IDs).

        Given boxes (xyxy pixels of the frame): ``frame_boxes`` {source frame number: boxes} for the frames it
        lists, else ``boxes`` for every frame (a fixed box), else none; a frame with given boxes uses only them
        (``boxes_mode`` replace) or them and the detector's other people (``add``). Frames without given boxes
        use the detector.

        ``detect_every``: run the person detector on every k-th processed frame and move the boxes along by
        optical flow in between, re-detecting at once when a box is lost (:class:`CadencedDetector`; 1 = every
        frame, exact). ``prefetch``: frames decoded, and their people found, up to this many frames ahead on a
        reader thread while the model runs (0 = all in this thread); the result is the same either way.
        """
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1 frame, got {detect_every}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more frames, got {prefetch}")
        frames = frames or FrameRange()
        capture, info = open_video(path)
        capture.release()
        expected = None
        if info.num_frames and frames.start >= info.num_frames:
            raise MediaError(
                f"{Path(path).name} has {info.num_frames} frames, so the frame range starting at {frames.start} "
                "selects none",
                hint=f"choose a START below {info.num_frames}",
            )
        if info.num_frames:
            stop = min(info.num_frames, frames.stop) if frames.stop is not None else info.num_frames
            expected = max(0, -(-(stop - frames.start) // frames.step))
        tracker = tracker or BoxTracker()
        per_frame: list[dict[int, tuple[np.ndarray, _PersonOutput, int, float]]] = []
        indices: list[int] = []
        # (frame position, track id, box, crop, box source, score)
        pending: list[tuple[int, int, np.ndarray, Crop, int, float]] = []
        seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per frame: track ids, boxes, appearance
        warnings: list[str] = []
        timings = {"detect": 0.0, "preprocess": 0.0, "model": 0.0}

        def flush() -> None:
            t = time.perf_counter()
            outputs = self._run_crops([entry[3] for entry in pending])
            timings["model"] += time.perf_counter() - t
            for (pos, tid, box, _, code, score), person in zip(pending, outputs, strict=True):
                per_frame[pos][tid] = (box, person, code, score)
            pending.clear()

        source = {
            "kind": "video",
            "path": str(Path(path).resolve()),
            "fps": info.fps,
            "frame_start": frames.start,
            "frame_stop": frames.stop,
            "frame_step": frames.step,
            "num_frames_in_file": info.num_frames,
            "detect_every": detect_every,
        }
        last_checkpoint = time.perf_counter()
        skipped: list[int] = []
        people = CadencedDetector(self._detected, detect_every)

        def find(index: int, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """The frame's people: its given boxes, and the detector's (on the cadence) unless they replace it."""
            given = frame_boxes.get(index, boxes) if frame_boxes is not None else boxes
            if given is not None and boxes_mode == "replace":
                return self._people_boxes(image, given, boxes_mode)
            detected = people.boxes(image), people.scores
            return self._people_boxes(image, given, boxes_mode, detected=detected)

        found_people = _with_people(iter_frames(path, frames, skipped), find)
        # With prefetch, decoding and detection run on a reader thread, overlapping the model; same order, same boxes.
        video = Prefetched(found_people, prefetch, f"mega-frames-{Path(path).name}") if prefetch else found_people
        with closing(video):  # a cancel or an error stops the reader thread and releases the video
            for index, image, (found, sources, scores), detect_s in video:
                if should_stop is not None and should_stop():
                    warnings.append(f"cancelled after {len(indices)} frames")
                    break
                timings["detect"] += detect_s
                appearance = appearance_descriptors(image, found)
                ids = tracker.update(found, image_size=(image.shape[1], image.shape[0]), appearance=appearance)
                seen.append((ids, found, appearance))
                t = time.perf_counter()
                crops = self._crops(image, found)
                timings["preprocess"] += time.perf_counter() - t
                per_frame.append({})
                indices.append(index)
                pending.extend(
                    (len(per_frame) - 1, int(tid), box, crop, int(code), float(score))
                    for tid, box, crop, code, score in zip(ids, found, crops, sources, scores, strict=True)
                )
                # A due checkpoint flushes a part-filled batch: what it keeps must not wait for a full batch.
                due = checkpoint is not None and time.perf_counter() - last_checkpoint >= checkpoint_every_s
                if len(pending) >= self.config.batch_size or (due and pending):
                    flush()
                if due and checkpoint is not None:
                    partial = [f"partial: the first {len(indices)} frames"]
                    meta = self._meta(source, info.width, info.height, timings, partial)
                    checkpoint(Result(meta=meta, arrays=self._assemble(per_frame, indices)))
                    last_checkpoint = time.perf_counter()
                if progress is not None:
                    progress(len(indices), expected)
        if pending:
            flush()
        if stitch and per_frame:
            per_frame = self._stitched(per_frame, seen)
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (" …" if len(skipped) > 10 else "")
            warnings.append(f"{len(skipped)} frame(s) could not be decoded and were skipped: {shown}")
        if not indices:
            warnings.append("no frame was decoded in the requested range")
        arrays = self._assemble(per_frame, indices)
        warnings += self._visibility(arrays, info.width, info.height)
        meta = self._meta(source, info.width, info.height, timings, warnings)
        return Result(meta=meta, arrays=arrays)
