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
from mega_runtime.io.result import Result
from mega_runtime.pipeline.cadence import CadencedDetector
from mega_runtime.pipeline.media import FrameRange, MediaError, Prefetched, iter_frames, open_video, read_image
from mega_runtime.pipeline.preprocess import Crop, crop_person, focal_length_px
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

    def __post_init__(self) -> None:
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be at least 1, got {self.num_hypotheses}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


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
    video: Iterator[tuple[int, np.ndarray]], people: CadencedDetector
) -> Generator[tuple[int, np.ndarray, np.ndarray, float], None, None]:
    """(frame index, BGR frame, (N, 4) person boxes, seconds spent finding them) for each frame of ``video``."""
    try:
        for index, image in video:
            t = time.perf_counter()
            boxes = people.boxes(image)
            yield index, image, boxes, time.perf_counter() - t
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
        from mega_runtime.pipeline.detect import make_detector
        from mega_runtime.weights import resolve_assets_dir, resolve_checkpoint_dir
        from mega_runtime.weights.loaders import CHECKPOINT_FILES

        assets = resolve_assets_dir(assets_dir, progress=progress)
        checkpoints = resolve_checkpoint_dir(
            [config.model, defaults.TOKENIZER_MODEL], checkpoint_dir, progress=progress, assets_dir=assets
        )
        device = resolve_device(config.device)
        mega = Mega.from_checkpoints(checkpoints, config.model, assets_dir=assets, device=device)
        template = read_template_ply(assets / "template.ply")
        model_file = checkpoints / CHECKPOINT_FILES[config.model]
        info = {
            "name": config.model,
            "backbone": mega.cvqmae.config.backbone.type,
            "checkpoint": str(model_file),
            "checkpoint_sha256": file_sha256(model_file),
            "input_size": list(mega.cvqmae.config.backbone.input_size),
        }
        return cls(mega, detector if detector is not None else make_detector("default"), template.faces, config, info)

    # -- core -----------------------------------------------------------------------------------
    def _people_boxes(self, image: np.ndarray, boxes: Sequence[Sequence[float]] | None) -> np.ndarray:
        if boxes is not None:
            from mega_runtime.pipeline.detect import make_detector

            detections = make_detector("boxes", boxes=boxes).detect(image)
        else:
            detections = self.detector.detect(image)
        out = np.array([d.box_xyxy for d in detections], dtype=np.float32).reshape(-1, 4)
        return out[np.argsort((out[:, 0] + out[:, 2]) / 2, kind="stable")]  # left to right

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
            res = self.mega.reconstruct(images, cfg.num_hypotheses, gen, cfg.sampling, cfg.sampler)
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
            "detector": getattr(self.detector, "name", type(self.detector).__name__),
            "device": str(self.mega.device),
            "warnings": warnings,
            "timings_ms": {k: round(v * 1e3, 1) for k, v in timings.items()},
        }

    @staticmethod
    def _visibility(arrays: dict[str, np.ndarray], width: int, height: int) -> list[str]:
        camera = camera_meta(width, height)
        pp = camera["principal_point_px"]
        return visibility_warnings(
            arrays["vertices"], arrays["valid"], arrays["frame_indices"], camera["focal_px"], (pp[0], pp[1]),
            width, height,
        )  # fmt: skip

    def _assemble(
        self, per_frame: list[dict[int, tuple[np.ndarray, _PersonOutput]]], frame_indices: list[int]
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
        }
        column = {tid: j for j, tid in enumerate(track_ids)}
        for i, frame in enumerate(per_frame):
            for tid, (box, person) in frame.items():
                j = column[tid]
                arrays["boxes_xyxy"][i, j] = box
                arrays["valid"][i, j] = True
                for name in ("vertices", "cam_t", "tokens", "log_likelihood", "vertex_std", "rotation", "cam_crop"):
                    arrays[name][i, j] = getattr(person, name)
        return arrays

    # -- public -----------------------------------------------------------------------------------
    def run_image(
        self,
        image_bgr: np.ndarray,
        boxes: Sequence[Sequence[float]] | None = None,
        source: dict | None = None,
        progress: StageProgress | None = None,
    ) -> Result:
        """One photo ((H, W, 3) uint8 BGR) → a one-frame result with every person found (or given).

        ``progress``, when given, is called with (stage, done, total): ``detect`` 0/1 and 1/1 around finding
        the people, then ``model`` 0/N and, after each batch through the model, people done/N. It only
        reports: the result is the same with or without it.
        """
        report = progress or (lambda stage, done, total: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        report("detect", 0, 1)
        found = self._people_boxes(image_bgr, boxes)
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
        frame = {j: (found[j], person) for j, person in enumerate(people)}
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
        detect_every: int = defaults.DETECT_EVERY,
        prefetch: int = defaults.VIDEO_PREFETCH_FRAMES,
    ) -> Result:
        """A video file → one result frame per processed frame, people tracked with stable IDs.

        Frames are decoded sequentially and their crops batched through the model. ``progress`` is
        called with (frames done, frames expected or None); ``should_stop`` is polled per frame — when
        it returns True the frames done so far are returned with a warning. ``checkpoint``, when given, is
        called about every ``checkpoint_every_s`` seconds with a result of all the frames decoded so far — a
        part-filled batch is run first, so a checkpoint never waits for a full batch (so a caller can keep them
        should the process die before the end).

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
        per_frame: list[dict[int, tuple[np.ndarray, _PersonOutput]]] = []
        indices: list[int] = []
        pending: list[tuple[int, int, np.ndarray, Crop]] = []  # (frame position, track id, box, crop)
        warnings: list[str] = []
        timings = {"detect": 0.0, "preprocess": 0.0, "model": 0.0}

        def flush() -> None:
            t = time.perf_counter()
            outputs = self._run_crops([c for *_, c in pending])
            timings["model"] += time.perf_counter() - t
            for (pos, tid, box, _), person in zip(pending, outputs, strict=True):
                per_frame[pos][tid] = (box, person)
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
        people = CadencedDetector(lambda image: self._people_boxes(image, None), detect_every)
        found = _with_people(iter_frames(path, frames, skipped), people)
        # With prefetch, decoding and detection run on a reader thread, overlapping the model; same order, same boxes.
        video = Prefetched(found, prefetch, f"mega-frames-{Path(path).name}") if prefetch else found
        with closing(video):  # a cancel or an error stops the reader thread and releases the video
            for index, image, boxes, detect_s in video:
                if should_stop is not None and should_stop():
                    warnings.append(f"cancelled after {len(indices)} frames")
                    break
                timings["detect"] += detect_s
                ids = tracker.update(boxes, image_size=(image.shape[1], image.shape[0]))
                t = time.perf_counter()
                crops = self._crops(image, boxes)
                timings["preprocess"] += time.perf_counter() - t
                per_frame.append({})
                indices.append(index)
                pending.extend(
                    (len(per_frame) - 1, int(tid), box, crop) for tid, box, crop in zip(ids, boxes, crops, strict=True)
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
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (" …" if len(skipped) > 10 else "")
            warnings.append(f"{len(skipped)} frame(s) could not be decoded and were skipped: {shown}")
        if not indices:
            warnings.append("no frame was decoded in the requested range")
        arrays = self._assemble(per_frame, indices)
        warnings += self._visibility(arrays, info.width, info.height)
        meta = self._meta(source, info.width, info.height, timings, warnings)
        return Result(meta=meta, arrays=arrays)
