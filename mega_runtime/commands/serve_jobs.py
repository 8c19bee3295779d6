"""What ``serve``'s jobs do that needs no server state (torch-free at import): the ``complete`` and ``generate``
(shaping) jobs, a job's download progress, the final write of a job's result pair under its reserved name, and the
``infer`` job's video post-processing and partial-result message. The queue, the worker loop and the pipelines it
keeps are :mod:`mega_runtime.commands.serve`'s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import MegaError
from mega_runtime.io.protocol import CompleteRequest, GenerateRequest, InferRequest, ProtocolError, TemporalOptions
from mega_runtime.io.result import reserve_stem

#: Seconds between two ``download`` progress replies of one file (its first and last bytes are always reported).
DOWNLOAD_REPORT_S = 0.25


class JobCancelled(MegaError):
    code = "cancelled"


def download_reporter(cancel: threading.Event, progress: Callable[[str, int, int | None, str], None]):
    """The weights' progress callback of a job: ``download`` progress replies through ``progress(stage, done, total,
    message)`` (at most one per :data:`DOWNLOAD_REPORT_S` per file, plus its first and last), and
    :class:`JobCancelled` raised from inside the transfer once ``cancel`` is set (the download removes its temporary
    file; nothing is installed)."""
    last: dict[str, float] = {}

    def report(label: str, done: int, total: int | None) -> None:
        if cancel.is_set():
            raise JobCancelled(f"the job was cancelled while {label} was downloading")
        now = time.monotonic()
        finished = total is not None and done >= total
        if label in last and not finished and now - last[label] < DOWNLOAD_REPORT_S:
            return
        last[label] = now
        progress("download", done, total, f"downloading {label}")

    return report


def write_final(result, reservation):
    """Write the job's result under its reserved name; should a writer that reserves nothing (``infer``) have
    taken that name meanwhile, the next free name is reserved and used — never an overwrite."""
    from mega_runtime.io.result import OutputExistsError, write_result

    for _ in range(100):
        try:
            return write_result(result, reservation.folder / reservation.stem)
        except OutputExistsError:
            folder, name = reservation.folder, reservation.stem
            reservation.release()
            reservation = reserve_stem(folder, name)
    raise MegaError(f"no free result name in {reservation.folder}", hint="choose another out_dir")


def run_shaping_job(
    request: InferRequest | CompleteRequest | GenerateRequest,
    out_dir: Path,
    device: str,
    *,
    checkpoint_dir: Path | None,
    assets_dir: Path | None,
    progress: Callable[[str, int, int | None, str], None],
    download_progress: Callable[[str, int, int | None], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """A ``complete`` or ``generate`` job: no media, one result pair in ``out_dir`` (the job's folder, created).

    ``progress(stage, done, total, message)`` sends the job's ``progress`` replies; ``download_progress`` follows
    the assets' download; ``cancelled()`` is checked before anything is written. Returns the fields of the job's
    ``result`` reply."""
    import numpy as np

    from mega_runtime.io.result import read_result
    from mega_runtime.pipeline.complete import CompletionRequest, complete_person, keep_vertices
    from mega_runtime.pipeline.generate import generate_bodies
    from mega_runtime.weights import resolve_assets_dir

    assets = resolve_assets_dir(assets_dir, progress=download_progress)
    if isinstance(request, CompleteRequest):
        if not Path(request.result_path).is_file():
            raise ProtocolError(
                "not_found", f"{request.result_path} does not exist on the runtime's machine", "check the path"
            )
        source = read_result(request.result_path)
        keep = (
            keep_vertices(request.keep, assets)
            if isinstance(request.keep, str)
            else np.asarray(request.keep, dtype=np.int64)
        )
        progress("model", 0, 1, "completing")
        completion = CompletionRequest(
            request.person,
            request.hypothesis,
            keep,
            request.count,
            request.seed,
            request.coverage,
            pin=request.pin,
            falloff_m=request.falloff_m,
            use_image=request.use_image,
        )
        result = complete_person(source, completion, checkpoint_dir, assets, device)
        default_name = f"{Path(request.result_path).name.removesuffix('.json')}.completed"
    elif isinstance(request, GenerateRequest):
        progress("model", 0, 1, "generating")
        result = generate_bodies(
            request.count,
            seed=request.seed,
            checkpoint_dir=checkpoint_dir,
            assets_dir=assets,
            device=device,
            steps=request.steps or defaults.GENERATE_STEPS,
            temperature=request.temperature if request.temperature is not None else defaults.GENERATE_TEMPERATURE,
            stack=request.stack,
        )
        default_name = "generated"
    else:  # the server passes only these two kinds here
        raise TypeError(f"not a complete/generate request: {type(request).__name__}")
    progress("model", 1, 1, "done")
    if cancelled():
        raise JobCancelled("the job was cancelled")
    reservation = reserve_stem(out_dir, request.result_name or default_name)
    try:
        json_path, npz_path = write_final(result, reservation)
    finally:
        reservation.release()
    return {
        "json_path": str(json_path.resolve()),
        "npz_path": str(npz_path.resolve()),
        "cancelled": False,
        "num_frames": result.num_frames,
        "num_people": result.num_people,
        "num_hypotheses": result.num_hypotheses,
        "warnings": list(result.meta.get("warnings", [])),
    }


def apply_temporal_options(result, options: TemporalOptions):
    """The result with the request's ``temporal`` post-processing (checked by the protocol; see infer's)."""
    from mega_runtime.pipeline.temporal import OneEuroConfig, TemporalConfig, apply_temporal

    if not options.does_anything:
        return result
    try:
        config = TemporalConfig(
            path=options.path,
            smooth=options.smooth,
            one_euro=OneEuroConfig(
                min_cutoff=options.min_cutoff,
                beta=options.beta,
                d_cutoff=options.d_cutoff,
                two_sided=not options.causal,
            ),
            smoothness_weight=options.smoothness,
        )
    except ValueError as exc:
        raise ProtocolError("bad_request", f"'temporal': {exc}") from exc
    return apply_temporal(result, config)


def with_partial(exc: MegaError, partial_paths: list[Path]) -> MegaError:
    """``exc`` naming the partial result pair that was kept, when there is one."""
    if not partial_paths:
        return exc
    kept = MegaError(f"{exc.message} (the frames done before it are kept in {partial_paths[0]})", hint=exc.hint)
    kept.code = exc.code
    return kept
