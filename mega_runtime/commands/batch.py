"""``mega-runtime batch``: many photos and videos → one result pair each, with a manifest; resumable.

Inputs are files, folders (searched recursively for photos and videos), globs (``shoot/**/*.jpg``) and list
files (``@inputs.txt``: one path per line, ``#`` comments, relative to the list's folder). Each input gets a
result name that stays unique when stems collide (``a/take.mp4``, ``b/take.mp4`` → ``take``, ``b_take``) and is
kept in the manifest ``<out>/batch-manifest.json`` with its status (``pending``, ``running``, ``done``,
``failed``). A second run with the same settings skips the inputs that are done (their result pair is present and
whole), and redoes the rest; an input that fails is recorded and never stops the others.

Every input runs exactly what ``infer`` runs (:func:`mega_runtime.commands.reconstruct.reconstruct`), so its arrays are
byte for byte those of ``mega-runtime infer INPUT`` with the same options. ``--workers N`` runs N local worker
processes (spawn), each loading the model once; ``--ray`` / ``--ray-address`` run on Ray
(:mod:`mega_runtime.commands.batch_ray`). Torch-free at import; docs/batch.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import glob
import json
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mega_runtime import defaults
from mega_runtime.errors import MegaError

log = logging.getLogger(__name__)

MANIFEST_NAME = "batch-manifest.json"
MANIFEST_SCHEMA = "mega-batch-manifest"
MANIFEST_VERSION = 1
MEDIA_SUFFIXES = defaults.IMAGE_SUFFIXES | defaults.VIDEO_SUFFIXES
#: The options that change a result: a manifest written with other values is not resumed.
SETTING_KEYS = (
    "model",
    "hypotheses",
    "steps",
    "temperature",
    "sampler",
    "seed",
    "detector",
    "boxes",
    "frames",
    "path",
    "path_smoothness",
    "smooth",
    "one_euro_min_cutoff",
    "one_euro_beta",
    "one_euro_d_cutoff",
    "one_euro_causal",
    "compact",
    "detect_threshold",
    "min_height",
    "max_people",
    "boxes_file",
    "boxes_mode",
    "stitch",
    "detect_every",
    "precision",
    "score_steps",
)
#: Seconds between two writes of the manifest while inputs finish (it is always written at the end).
MANIFEST_EVERY_S = 1.0
#: Seconds between two progress lines of one video.
PROGRESS_EVERY_S = 5.0
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 130


class BatchError(MegaError):
    """The batch cannot start: no inputs, an unreadable list file, or a manifest of other settings."""

    code = "batch_invalid"


# --- inputs and names ------------------------------------------------------------------------------------------


def _media_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)


def _list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(
            f"cannot read the list file {path} ({exc})", hint="give a UTF-8 text file, one path a line"
        ) from exc
    items = []
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            items.append(str(path.parent / text) if not Path(text).is_absolute() else text)
    return items


def collect_inputs(items: Iterable[str]) -> list[Path]:
    """Resolved, de-duplicated input files in the order given: files, folders (recursively), globs, ``@lists``.

    Raises :class:`BatchError` for a path that does not exist, a glob or folder that matches nothing, or when
    nothing at all is found.
    """
    found: list[Path] = []
    pending = list(items)
    while pending:
        item = pending.pop(0)
        if item.startswith("@"):
            pending[:0] = _list_file(Path(item[1:]))
            continue
        path = Path(item)
        if path.is_dir():
            media = _media_in(path)
            if not media:
                raise BatchError(f"folder {path} holds no photo or video", hint="pass image or video files")
            found.extend(media)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(item):
            media = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).suffix.lower() in MEDIA_SUFFIXES)
            if not media:
                raise BatchError(f"the pattern {item} matches no photo or video", hint="check the pattern")
            found.extend(m for m in media if m.is_file())
        else:
            raise BatchError(f"input {path} does not exist", hint="check the path")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    if not unique:
        raise BatchError("no inputs", hint="pass photos, videos, folders, globs or @list files")
    return list(unique)


def _taken(out_dir: Path, name: str) -> bool:
    return any((out_dir / f"{name}{end}").exists() for end in (".json", ".npz"))


def assign_names(paths: list[Path], out_dir: Path, known: dict[str, str]) -> dict[str, str]:
    """A unique result name per input (resolved path string → name); ``known`` names (from a manifest) are kept.

    A new name is the file's stem; when another input has the same stem, its parent folders are prefixed
    (``a_take``, ``b_take``) until it is unique, then ``-2``, ``-3``…. A name whose files already exist in
    ``out_dir`` (and that no manifest entry owns) is never used, so a user's files are never overwritten.
    """
    names = dict(known)
    used = set(names.values())
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    for path in paths:
        key = str(path)
        if key in names:
            continue
        candidates = [path.stem]
        if stems[path.stem] > 1:
            parts = path.parent.parts[1:] if path.parent.is_absolute() else path.parent.parts
            candidates = ["_".join([*parts[-depth:], path.stem]) for depth in range(1, len(parts) + 1)]
            candidates = candidates or [path.stem]
        base = candidates[-1]
        candidates += [f"{base}-{n}" for n in range(2, 100_000)]
        for name in candidates:
            if name not in used and not _taken(out_dir, name):
                names[key] = name
                used.add(name)
                break
    return names


# --- the manifest ----------------------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args`` that change a result (:data:`SETTING_KEYS`), JSON-ready."""
    return {key: getattr(args, key, None) for key in SETTING_KEYS}


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when there is none. Raises :class:`BatchError` for a broken one."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BatchError(f"cannot read the batch manifest {path} ({exc})", hint="use another --out folder") from exc
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA or not isinstance(data.get("inputs"), list):
        raise BatchError(f"{path} is not a batch manifest", hint="use another --out folder")
    return data


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def result_is_whole(out_dir: Path, name: str) -> bool:
    """Whether ``<name>.json`` exists and its ``.npz`` has the size the ``.json`` records (a finished pair)."""
    json_path = out_dir / f"{name}.json"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        npz_path = out_dir / str(meta.get("arrays_file", f"{name}.npz"))
        return npz_path.stat().st_size == meta.get("arrays_file_size")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


# --- running one input -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input to run: its resolved ``path`` and result ``name`` in ``out``."""

    path: str
    name: str


ProgressSink = Callable[[str, int, int | None], None]


def run_job(args: argparse.Namespace, pipeline: Any, job: Job, progress: ProgressSink | None = None) -> dict:
    """Reconstruct ``job`` exactly as ``infer`` does and write its pair (replacing a partial one of this batch).

    Returns the manifest fields of a finished input: ``status`` ``done`` or ``failed`` (with ``error``),
    ``people``, ``frames``, ``hypotheses``, ``seconds``. Never raises for a failure of this input.
    """
    from mega_runtime.commands.reconstruct import reconstruct
    from mega_runtime.io.result import write_result

    start = time.perf_counter()
    path = Path(job.path)
    try:
        result, _ = reconstruct(
            args,
            pipeline,
            path,
            frame_progress=(lambda done, total: progress(job.name, done, total)) if progress else None,
        )
        write_result(result, Path(args.out) / job.name, overwrite=True, compact=args.compact)
    except MegaError as exc:
        return {"status": "failed", "error": str(exc), "seconds": time.perf_counter() - start}
    except OSError as exc:
        return {"status": "failed", "error": f"{exc.strerror or exc}", "seconds": time.perf_counter() - start}
    except Exception as exc:  # any other fault (model, decoder) fails this input only
        log.exception("%s failed", path)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    return {
        "status": "done",
        "error": None,
        "people": result.num_people,
        "frames": result.num_frames,
        "hypotheses": result.num_hypotheses,
        "seconds": round(time.perf_counter() - start, 3),
    }


# --- local worker processes ------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(args: argparse.Namespace, progress_queue: Any) -> None:
    """In each worker process: torch with the thread count of the process that started the batch (float sums, and
    so the results, depend on it: this keeps them equal to ``infer``'s), then the pipeline, loaded once."""
    import torch

    from mega_runtime.commands.reconstruct import load_pipeline

    threads = getattr(args, "torch_threads", None)
    if threads:
        torch.set_num_threads(threads)
    _WORKER["args"] = args
    _WORKER["pipeline"] = load_pipeline(args)
    _WORKER["queue"] = progress_queue


def _worker_run(job: Job) -> dict:
    sink = _WORKER["queue"]
    return run_job(_WORKER["args"], _WORKER["pipeline"], job, lambda n, d, t: sink.put((n, d, t)))


# --- the command -----------------------------------------------------------------------------------------------


class _Progress:
    """Overall and per-input progress lines on ``stream`` (a video's frames at most every few seconds)."""

    def __init__(self, stream: Any, total: int, skipped: int) -> None:
        self.stream, self.total, self.finished = stream, total, skipped
        self.last: dict[str, float] = {}

    def frames(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last.get(name, 0.0) >= PROGRESS_EVERY_S or done == total:
            self.last[name] = now
            print(f"  {name}: {done}/{total if total else '?'} frames", file=self.stream, flush=True)

    def finish(self, name: str, entry: dict) -> None:
        self.finished += 1
        what = entry["status"] if entry["status"] != "failed" else f"failed: {entry.get('error')}"
        print(f"[{self.finished}/{self.total}] {name}: {what}", file=self.stream, flush=True)


def _cmd_batch(args: argparse.Namespace) -> int:
    from mega_runtime.commands.options import check_output_folder

    out_dir = Path(args.out)
    check_output_folder(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    settings = settings_of(args)
    import torch

    # Every worker (process or Ray actor) runs torch with this process's thread count: float sums, and so the
    # results, depend on it, and with it they equal what `infer` gives here.
    args.torch_threads = torch.get_num_threads()
    manifest = read_manifest(manifest_path)
    if manifest is not None and manifest.get("settings") != settings:
        raise BatchError(
            f"{manifest_path} was written with other settings ({manifest.get('settings')})",
            hint="resume with the same options, or choose another --out folder",
        )
    entries: dict[str, dict] = {e["input"]: e for e in (manifest or {}).get("inputs", []) if isinstance(e, dict)}
    paths = collect_inputs(args.inputs)
    names = assign_names(paths, out_dir, {k: e["name"] for k, e in entries.items() if "name" in e})
    jobs: list[Job] = []
    for path in paths:
        key = str(path)
        entry = entries.setdefault(key, {"input": key, "name": names[key], "status": "pending"})
        if entry.get("status") == "done" and result_is_whole(out_dir, entry["name"]):
            continue
        entry.update(status="pending", error=None)
        jobs.append(Job(key, entry["name"]))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "version": MANIFEST_VERSION,
        "settings": settings,
        "inputs": list(entries.values()),
    }
    write_manifest(manifest_path, manifest)
    last_write = [time.monotonic()]

    def save(force: bool = False) -> None:  # at most once a second: a big manifest is not rewritten per input
        if force or time.monotonic() - last_write[0] >= MANIFEST_EVERY_S:
            write_manifest(manifest_path, manifest)
            last_write[0] = time.monotonic()

    skipped = len(paths) - len(jobs)
    if skipped:
        print(f"{skipped} of {len(paths)} input(s) already done (skipped)", file=sys.stderr)
    progress = _Progress(sys.stderr, len(paths), skipped)

    def started(job: Job) -> None:
        entries[job.path]["status"] = "running"
        save()

    def finished(job: Job, outcome: dict) -> None:
        entries[job.path].update(outcome)
        save()
        progress.finish(job.name, entries[job.path])

    try:
        if args.ray or args.ray_address:
            from mega_runtime.commands.batch_ray import run_on_ray

            run_on_ray(args, jobs, started, finished, progress.frames)
        elif args.workers > 1 and len(jobs) > 1:
            _run_processes(args, jobs, started, finished, progress.frames)
        elif jobs:
            from mega_runtime.commands.reconstruct import load_pipeline

            pipeline = load_pipeline(args)
            for job in jobs:
                started(job)
                finished(job, run_job(args, pipeline, job, progress.frames))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        save(force=True)
    failed = sum(1 for path in paths if entries[str(path)]["status"] != "done")
    print(f"{len(paths) - failed} of {len(paths)} input(s) done → {manifest_path}")
    return EXIT_FAILED if failed else EXIT_OK


def _run_processes(
    args: argparse.Namespace,
    jobs: list[Job],
    started: Callable[[Job], None],
    finished: Callable[[Job, dict], None],
    frames: ProgressSink,
) -> None:
    """Run ``jobs`` on ``args.workers`` spawned processes; a worker that dies fails only its own input."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        sink = manager.Queue()
        remaining = list(jobs)
        attempts: dict[str, int] = {}
        while remaining:
            with futures.ProcessPoolExecutor(
                max_workers=min(args.workers, len(remaining)),
                mp_context=context,
                initializer=_worker_init,
                initargs=(args, sink),
            ) as pool:
                pending = {}
                for job in remaining:
                    started(job)
                    pending[pool.submit(_worker_run, job)] = job
                remaining = []
                while pending:
                    done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
                    _drain(sink, frames)
                    for future in done:
                        job = pending.pop(future)
                        try:
                            finished(job, future.result())
                        except futures.process.BrokenProcessPool:  # a worker died: its jobs are run once more
                            attempts[job.path] = attempts.get(job.path, 0) + 1
                            if attempts[job.path] < 2:
                                remaining.append(job)
                            else:
                                finished(job, {"status": "failed", "error": "its worker process died twice"})
            _drain(sink, frames)


def _drain(sink: Any, frames: ProgressSink) -> None:
    while True:
        try:
            name, done, total = sink.get_nowait()
        except queue.Empty:
            return
        frames(name, done, total)


def add_batch_command(sub: argparse._SubParsersAction) -> None:
    """Register ``batch``: every ``infer`` option, plus ``--workers``, ``--ray`` and ``--ray-address``."""
    from mega_runtime.commands.infer import add_infer_commands
    from mega_runtime.commands.options import bounded_int

    scratch = argparse.ArgumentParser(add_help=False).add_subparsers()
    add_infer_commands(scratch)
    infer_parser = scratch.choices["infer"]
    p = sub.add_parser(
        "batch",
        parents=[infer_parser],
        add_help=False,
        help="reconstruct many photos and videos (resumable, local processes or Ray)",
        description="Run infer on every input (files, folders searched recursively, globs, @list files): one "
        f"result pair per input in --out with unique names, and {MANIFEST_NAME} with the status of each. Run "
        "it again to resume: finished inputs are skipped, the others redone. Exit codes: 0 all done; 2 an "
        "input failed or a usage error; 130 interrupted (docs/batch.md).",
    )
    p.add_argument(
        "--workers",
        type=bounded_int(1, 256),
        default=1,
        metavar="N",
        help="local worker processes, each with its own model (default %(default)s)",
    )
    p.add_argument("--ray", action="store_true", help="run on Ray on this machine (pip install mega-blender[ray])")
    p.add_argument("--ray-address", metavar="ADDR", help="run on the Ray cluster at ADDR (e.g. 10.0.0.1:6379 or auto)")
    p.set_defaults(func=_cmd_batch)
