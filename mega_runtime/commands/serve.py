"""``mega-runtime serve``: the persistent runtime the Blender add-on talks to (docs/protocol.md).

Threads: a reader thread reads requests from stdin and answers ``hello``, ``cancel`` and ``shutdown`` at once;
the main thread runs ``infer`` jobs one at a time, in arrival order (PyTorch and OpenCV run faster there).
Pipelines are loaded on first use, one per (model, device), and kept. Every reply goes through one
:class:`~mega_runtime.io.protocol.ReplyWriter` on the original stdout; file descriptor 1 itself is pointed at
stderr, so nothing else can write into the protocol.

Jobs write only inside their output folder: the request's ``out_dir``, or ``<work dir>/jobs/<n>-<id>`` (removed
after an inline reply; the client's id names it only after every character but letters, digits, ``.``, ``-``
and ``_`` was replaced). An inline video is stored there while it is read, then deleted.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mega_runtime import __version__, defaults
from mega_runtime.commands.serve_jobs import (
    JobCancelled,
    apply_temporal_options,
    download_reporter,
    run_shaping_job,
    with_partial,
    write_final,
)
from mega_runtime.errors import MegaError
from mega_runtime.io.detection import DetectionSettings
from mega_runtime.io.protocol import (
    MAX_INLINE_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    CompleteRequest,
    GenerateRequest,
    InferRequest,
    LineReader,
    ProtocolError,
    ReplyWriter,
    Request,
    infer_defaults,
    parse_request,
)
from mega_runtime.io.result import reserve_stem

log = logging.getLogger(__name__)

#: Characters of a client's text that may appear in a file name the server makes.
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``serve``; folders None = the runtime's usual resolution (environment, cache)."""

    checkpoint_dir: Path | None = None
    assets_dir: Path | None = None
    work_dir: Path | None = None
    device: str = defaults.DEVICE
    #: Default precision of infer jobs that name none (fp32, bf16, int8, auto).
    precision: str = defaults.PRECISION
    detector: str = defaults.DETECTOR
    #: The server's detection settings (threshold, minimum height, maximum people); None: ``detector`` with the
    #: shared defaults. A request's ``detection`` object overrides them key by key.
    detection: DetectionSettings | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_inline_bytes: int = MAX_INLINE_BYTES
    #: Seconds between two partial result pairs of a video job (kept should the process die).
    checkpoint_every_s: float = defaults.CHECKPOINT_EVERY_S
    #: Fast kernels for every model the server loads (:meth:`mega_runtime.mega.Mega.compile_models`); the first
    #: job of each model builds or loads the compiled backbone (on the CPU built once per machine and weights), later
    #: jobs reuse it.
    compile: bool = False


@dataclass
class _Job:
    """A queued or running ``infer``; ``number`` counts jobs from 1 (it names the job's private folder)."""

    request: InferRequest | CompleteRequest | GenerateRequest
    number: int
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)


def protect_stdout() -> IO[bytes]:
    """A private binary stream on the original stdout; fd 1 and ``sys.stdout`` then lead to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


class Server:
    """Reads requests from ``input_stream`` and answers on ``writer`` until ``shutdown`` or end of input."""

    def __init__(self, config: ServeConfig, input_stream: IO[bytes], writer: ReplyWriter) -> None:
        self.config = config
        self.input = input_stream
        self.writer = writer
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._waiting: dict[str, _Job] = {}
        self._running: _Job | None = None
        self._lock = threading.Lock()
        #: Held while a job's final reply is sent and while ``cancel`` flags the running job and acks: a client
        #: that has read the ``ack`` knows the flag is set, and the job's end never overtakes the ``ack``.
        self._end_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._pipelines: dict[tuple[str, str, str], Any] = {}
        self._detectors: dict[tuple[str, float], Any] = {}
        self._smpl_models: dict[str, Any] = {}
        self._own_work_dir = config.work_dir is None
        self.work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="mega-serve-")).resolve()

    # -- main loop ----------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until ``shutdown`` or end of input; returns the exit status (0).

        Jobs run on the calling (main) thread and requests are read on a helper thread: PyTorch's and OpenCV's
        thread pools are measurably slower when driven from a second thread (docs/protocol.md, benchmarks).
        """
        reader = threading.Thread(target=self._read, name="mega-serve-reader", daemon=True)
        reader.start()
        log.info("serving protocol %d (runtime %s); work folder %s", PROTOCOL_VERSION, __version__, self.work_dir)
        try:
            self._work()
        finally:
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            log.info("stopped")
        return 0

    def _read(self) -> None:
        try:
            for line in LineReader(self.input, self.config.max_message_bytes):
                if line is None:
                    self.writer.error(
                        None,
                        "too_large",
                        f"the request is longer than the limit of {self.config.max_message_bytes} bytes",
                        "send large videos by path, or split the work",
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    if self._handle(line) == "shutdown":
                        break
                except Exception as exc:  # e.g. hello's torch import: answer it, keep serving
                    log.error("request failed:\n%s", traceback.format_exc())
                    self.writer.error(
                        None, "internal", f"{type(exc).__name__}: {exc}", "see the runtime's log (stderr)"
                    )
        except Exception:  # a broken input must still stop the worker, never leave the process hanging
            log.error("reading requests failed:\n%s", traceback.format_exc())
        finally:
            self._stop()

    def _handle(self, line: bytes) -> str | None:
        try:
            request = parse_request(line, self.config.max_inline_bytes)
        except ProtocolError as exc:
            self.writer.error(exc.request_id, exc.code, exc.message, exc.hint)
            return None
        if isinstance(request, InferRequest | CompleteRequest | GenerateRequest):
            rid = request.request_id
            with self._lock:
                busy = rid in self._waiting or (self._running is not None and self._running.request.request_id == rid)
                if not busy:
                    ahead = len(self._waiting) + (self._running is not None)
                    job = _Job(request, next(self._numbers))
                    self._waiting[rid] = job
            if busy:
                self.writer.error(
                    rid, "bad_request", f"the id {rid!r} is already used by a queued or running job", "use a new id"
                )
                return None
            self.writer.send("accepted", rid, queued=ahead)
            self._queue.put(job)
            return None
        if request.op == "hello":
            self._hello(request)
        elif request.op == "cancel":
            self._cancel(request)
        elif request.op == "shutdown":
            self.writer.send("ack", request.request_id)
            return "shutdown"
        return None

    def stop(self) -> None:
        """Stop as ``shutdown`` does (used by the signal handlers)."""
        self._stop()

    def _stop(self) -> None:
        """Answer the queued jobs with ``cancelled``, cancel the running one and let the worker loop end."""
        with self._lock:
            dropped = list(self._waiting.values())
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel.set()
        for job in dropped:
            self.writer.error(job.request.request_id, "cancelled", "the runtime is shutting down", None)
        self._queue.put(None)

    # -- immediate requests ---------------------------------------------------------------------------------------
    def _hello(self, request: Request) -> None:
        import torch

        from mega_runtime.weights.state import status

        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append("mps")
        try:
            rows = status(self.config.assets_dir, self.config.checkpoint_dir)
        except MegaError as exc:
            rows, missing = [], [{"what": exc.message, "fix": exc.hint}]
        else:
            missing = [{"what": f"{r.name}: {r.problem}", "fix": r.fix} for r in rows if not r.ok]
        models = [r.name for r in rows if r.kind == "checkpoint" and r.ok]
        self.writer.send(
            "hello",
            request.request_id,
            protocol=PROTOCOL_VERSION,
            runtime_version=__version__,
            python=sys.version.split()[0],
            torch=torch.__version__,
            devices=devices,
            models=models,
            missing=missing,
            limits={
                "max_message_bytes": self.config.max_message_bytes,
                "max_inline_bytes": self.config.max_inline_bytes,
            },
            defaults={**infer_defaults(), "detection": self._settings(None).as_request()},
        )

    def _cancel(self, request: Request) -> None:
        """``ack`` first, then the job's end: a queued job's ``error`` at once, the running job's when it stops."""
        with self._lock:
            queued = self._waiting.pop(request.job or "", None)
            running = self._running if self._running and self._running.request.request_id == request.job else None
        with self._end_lock:
            if running is not None:
                running.cancel.set()
            self.writer.send("ack", request.request_id, found=queued is not None or running is not None)
        if queued is not None:  # the worker skips it: it is no longer waiting
            self.writer.error(queued.request.request_id, "cancelled", "the job was cancelled before it started")

    # -- the worker -------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            rid = job.request.request_id
            with self._lock:
                if self._waiting.get(rid) is not job:
                    continue  # cancelled while queued, and already answered
                del self._waiting[rid]
                self._running = job
            try:
                self._run(job)
            except MegaError as exc:
                with self._end_lock:
                    self.writer.error(rid, exc.code, exc.message, exc.hint)
            except OSError as exc:  # a file-system fault (read-only folder, full disk): one sentence
                where = f" ({exc.filename})" if exc.filename else ""
                with self._end_lock:
                    self.writer.error(
                        rid,
                        "write_failed",
                        f"{exc.strerror or exc}{where}",
                        "check the folder, free space, permissions",
                    )
            except MemoryError:
                with self._end_lock:
                    self.writer.error(rid, "out_of_memory", "the job ran out of memory", "use fewer hypotheses")
            except Exception as exc:
                log.error("job %s failed:\n%s", rid, traceback.format_exc())
                with self._end_lock:
                    self.writer.error(rid, "internal", f"{type(exc).__name__}: {exc}", "see the runtime's log (stderr)")
            finally:
                with self._lock:
                    self._running = None

    def _progress(self, rid: str, stage: str, done: int, total: int | None, message: str = "") -> None:
        self.writer.send("progress", rid, stage=stage, done=done, total=total, message=message)

    def _image_progress(self, rid: str, stage: str, done: int, total: int | None) -> None:
        """A photo's ``detect`` / ``model`` progress (from :meth:`Pipeline.run_image`) as a reply."""
        if stage == "detect":
            message = "finding people" if done < (total or 1) else "found the people"
        else:
            message = "reconstructing people" if done < (total or 0) else "reconstructed"
        self._progress(rid, stage, done, total, message)

    def _download_progress(self, job: _Job):
        """``job``'s download progress callback (:func:`~mega_runtime.commands.serve_jobs.download_reporter`)."""
        rid = job.request.request_id
        return download_reporter(job.cancel, lambda *at: self._progress(rid, *at))

    def _settings(self, request: InferRequest | None) -> DetectionSettings:
        """The server's detection settings with the request's ``detection`` keys applied."""
        base = self.config.detection or DetectionSettings(detector=self.config.detector)
        return dataclasses.replace(base, **request.detection) if request is not None else base

    def _detector(self, settings: DetectionSettings, job: _Job):
        """One detector per (name, threshold), built on first use and kept; a YOLOX download on first use reports
        its progress as ``job``'s."""
        from mega_runtime.pipeline.chain import build_detector
        from mega_runtime.pipeline.detect import DOWNLOADING_DETECTORS

        key = (settings.detector, settings.conf)
        if key not in self._detectors:
            options = {"progress": self._download_progress(job)} if settings.detector in DOWNLOADING_DETECTORS else {}
            self._detectors[key] = build_detector(settings, **options)
        return self._detectors[key]

    def _pipeline(self, job: _Job):
        request = job.request
        if not isinstance(request, InferRequest):  # only infer jobs run the image pipeline
            raise TypeError(f"not an infer request: {type(request).__name__}")
        from mega_runtime.decoding.schedule import CVQMAE_SAMPLING, SamplingConfig
        from mega_runtime.mega import resolve_device
        from mega_runtime.pipeline.chain import Pipeline, PipelineConfig

        settings = self._settings(request)
        try:
            detector = self._detector(settings, job)
        except MegaError as exc:
            raise ProtocolError("bad_request", f"detector {settings.detector!r}: {exc.message}", exc.hint) from exc
        device = resolve_device(request.device or self.config.device)
        precision = request.precision or self.config.precision
        key = (request.model, device, precision)
        base = self._pipelines.get(key)
        if base is None:
            self._progress(request.request_id, "load", 0, 1, f"loading {request.model} on {device} ({precision})")
            config = PipelineConfig(
                model=request.model, device=device, precision=precision, compile=self.config.compile
            )
            base = Pipeline.load(
                config,
                self.config.checkpoint_dir,
                self.config.assets_dir,
                detector,
                progress=self._download_progress(job),
            )
            self._pipelines[key] = base  # kept even when the job was cancelled meanwhile: the next job needs it
            self._progress(request.request_id, "load", 1, 1, f"loaded {request.model}")
        try:
            sampling = SamplingConfig(
                steps=request.steps or CVQMAE_SAMPLING.steps,
                temperature=request.temperature if request.temperature is not None else CVQMAE_SAMPLING.temperature,
            )
            config = dataclasses.replace(
                base.config,
                num_hypotheses=request.hypotheses,
                sampling=sampling,
                sampler=request.sampler,
                seed=request.seed,
                detection=settings,
                score_steps=request.score_steps,
            )
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from exc
        return Pipeline(base.mega, detector, base.faces, config, base.model_info)

    def _fit_smpl(self, result, model_path: str):
        """The result with an SMPL fit per person (the user's model file, loaded once and kept)."""
        from mega_runtime.smpl.fit import fit_result
        from mega_runtime.smpl.model import load_smpl_model

        model = self._smpl_models.get(model_path)
        if model is None:
            model = self._smpl_models[model_path] = load_smpl_model(model_path)
        return fit_result(result, model)

    def _out_dir(self, job: _Job) -> tuple[Path, bool]:
        """The job's output folder (created) and whether it is the job's private folder under the work dir."""
        request = job.request
        private = request.out_dir is None or request.inline_result
        if private:
            folder = self.work_dir / "jobs" / f"{job.number}-{_SAFE.sub('_', request.request_id)[:48]}"
        else:
            folder = Path(request.out_dir or "")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MegaError(
                f"cannot create the output folder {folder}: {exc.strerror}", hint="choose another out_dir"
            ) from exc
        return folder, private

    def _run_model_job(self, job: _Job) -> None:
        """A ``complete`` or ``generate`` job (:func:`~mega_runtime.commands.serve_jobs.run_shaping_job`)."""
        from mega_runtime.mega import resolve_device

        request, rid = job.request, job.request.request_id
        device = resolve_device(request.device or self.config.device)
        out_dir, _ = self._out_dir(job)
        reply = run_shaping_job(
            request,
            out_dir,
            device,
            checkpoint_dir=self.config.checkpoint_dir,
            assets_dir=self.config.assets_dir,
            progress=lambda *at: self._progress(rid, *at),
            download_progress=self._download_progress(job),
            cancelled=job.cancel.is_set,
        )
        with self._end_lock:
            self.writer.send("result", rid, **reply)

    def _run(self, job: _Job) -> None:
        from mega_runtime.io.result import result_paths, write_result
        from mega_runtime.pipeline.media import FrameRange, decode_image, read_image

        if not isinstance(job.request, InferRequest):
            self._run_model_job(job)
            return
        request, rid = job.request, job.request.request_id
        if request.path is not None and not Path(request.path).is_file():
            raise ProtocolError(
                "not_found", f"{request.path} does not exist on the runtime's machine", "check the path"
            )
        out_dir, private = self._out_dir(job)
        temporary: Path | None = None
        reservation = reserve_stem(out_dir, request.result_name or Path(request.name).stem or "result")
        stem = reservation.stem
        partial_paths: list[Path] = []
        stopped: list[bool] = []  # one entry once run_video has stopped early for a cancel

        def should_stop() -> bool:
            if job.cancel.is_set():
                stopped.append(True)
                return True
            return False

        try:
            pipeline = self._pipeline(job)
            if job.cancel.is_set():  # cancelled while the model loaded: stop before the first frame
                raise JobCancelled("the job was cancelled while the model was loading")
            if request.is_video:
                source = Path(request.path) if request.path is not None else None
                if source is None:  # kept in the work folder, never in the user's out_dir
                    inline_dir = self.work_dir / "inline"
                    inline_dir.mkdir(parents=True, exist_ok=True)
                    temporary = inline_dir / f"{job.number}{_SAFE.sub('_', Path(request.name).suffix)}"
                    temporary.write_bytes(request.data or b"")
                    source = temporary
                frames = FrameRange(request.frame_start, request.frame_stop, request.frame_step)
                partial_stem = f"{stem}.partial"

                def keep(partial_result) -> None:  # frames done so far, in case the process dies
                    json_path, _ = write_result(partial_result, out_dir / partial_stem, overwrite=True)
                    partial_paths.extend(result_paths(out_dir / partial_stem))
                    self.writer.send(
                        "progress",
                        rid,
                        stage="frames",
                        done=partial_result.num_frames,
                        total=None,
                        message="frames kept",
                        partial_json_path=str(json_path.resolve()),
                    )

                try:
                    result = pipeline.run_video(
                        source,
                        frames,
                        progress=lambda done, total: self._progress(rid, "frames", done, total, "frames"),
                        should_stop=should_stop,
                        checkpoint=None if request.inline_result else keep,
                        checkpoint_every_s=self.config.checkpoint_every_s,
                        boxes=request.boxes,
                        frame_boxes=request.frame_boxes,
                        boxes_mode=request.boxes_mode,
                        stitch=request.stitch,
                        detect_every=request.detect_every,
                    )
                except MegaError as exc:
                    raise with_partial(exc, partial_paths) from exc
                if stopped and result.num_frames == 0:
                    raise JobCancelled("the job was cancelled before its first frame")
                if request.path is None:
                    result.meta["source"]["path"] = request.name
                if request.temporal and result.num_frames > 0:
                    result = apply_temporal_options(result, request.temporal)
            else:
                if request.path is not None:
                    image = read_image(request.path)
                    meta_source = {"path": str(Path(request.path).resolve())}
                else:
                    image = decode_image(request.data or b"", request.name)
                    meta_source = {"path": request.name}
                frame0 = (request.frame_boxes or {}).get(0)
                result = pipeline.run_image(
                    image,
                    frame0 if frame0 is not None else request.boxes,
                    meta_source,
                    progress=lambda *at: self._image_progress(rid, *at),
                    boxes_mode=request.boxes_mode,
                )
                if job.cancel.is_set():
                    raise JobCancelled("the job was cancelled")
            if request.smpl_model:
                self._progress(rid, "smpl", 0, 1, "fitting SMPL")
                result = self._fit_smpl(result, request.smpl_model)
                self._progress(rid, "smpl", 1, 1, "fitted SMPL")
            if temporary is not None:
                temporary.unlink(missing_ok=True)
                temporary = None
            json_path, npz_path = write_final(result, reservation)
            for path in set(partial_paths):
                path.unlink(missing_ok=True)
            summary = {
                "cancelled": bool(stopped),
                "num_frames": result.num_frames,
                "num_people": result.num_people,
                "num_hypotheses": result.num_hypotheses,
                "warnings": list(result.meta.get("warnings", [])),
            }
            if request.inline_result:
                meta = json.loads(json_path.read_text(encoding="utf-8"))
                npz = base64.b64encode(npz_path.read_bytes()).decode("ascii")
                reply = {"meta": meta, "npz": npz, **summary}
            else:
                reply = {"json_path": str(json_path.resolve()), "npz_path": str(npz_path.resolve()), **summary}
        finally:
            reservation.release()
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            if private and request.inline_result:
                shutil.rmtree(out_dir, ignore_errors=True)
        with self._end_lock:
            self.writer.send("result", rid, **reply)  # after the clean-up: what the client sees is final


def serve(config: ServeConfig) -> int:
    """Run the server on this process's stdin/stdout until ``shutdown`` or end of input."""
    protocol_out = protect_stdout()
    writer = ReplyWriter(protocol_out)
    server = Server(config, sys.stdin.buffer, writer)
    signalled = _stop_on_signals(server)
    code = server.run()
    if signalled.is_set():
        # The reader thread is still blocked reading stdin and holds its lock, which the interpreter's own exit
        # would wait for and then abort on; everything is answered, written and removed by now, so leave at once.
        logging.shutdown()
        for stream in (protocol_out, sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    return code


def _stop_on_signals(server: Server) -> threading.Event:
    """SIGTERM and SIGINT end the server as ``shutdown`` does: queued jobs are answered ``cancelled``, a running
    video stops and writes the frames it has, the work folder is removed. The stop runs on its own thread, as the
    handler may interrupt the main thread while it holds the server's locks. Returns the event set by a signal."""
    import signal

    signalled = threading.Event()

    def stop(signum, frame) -> None:
        log.info("signal %d: shutting down", signum)
        signalled.set()
        threading.Thread(target=server.stop, name="mega-serve-signal", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    return signalled
