"""The live link inside Blender: one runtime per session, its jobs, and their hand-off to the main thread.

:class:`~mega_blender.runtime_client.Link` reads the runtime's replies on background threads; here a
``bpy.app.timers`` function (:func:`pump`) takes them on Blender's main thread — the only place that touches
``bpy`` — mirrors progress into ``WindowManager.mega`` (panel, status bar) and, when a job's result has arrived,
builds the scene with :func:`mega_blender.scene_build.build_result` (which removes what it made if it fails, so
nothing half-built stays) and pushes one undo step.

The timer function never raises: an exception while a job's result is read or built ends that job as
*failed* (its message in the panel, the log and the operator's report), and the timer goes on for the next job.

The runtime is started on the first Reconstruct with the command from the preferences, kept running between
jobs (the model stays loaded) and stopped on unregister and when Blender quits (``atexit``; the runtime also
exits on its own when its stdin closes). Stopping never blocks the UI: a background thread sends ``shutdown``
and escalates to terminate and kill; at exit, where no thread survives, it is done within a bounded 0.4 s.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import animation
from . import preferences as addon_preferences
from .preferences import get_preferences, runtime_command
from .result_reader import ResultFormatError, read_result
from .runtime_client import Event, JobDone, JobFailed, Link, LinkError, Progress, Ready, RuntimeFailed

log = logging.getLogger(__name__)

#: Seconds between two polls of the runtime while it starts or works.
POLL_S = 0.1
#: Lines of the runtime's stderr shown in the panel when it failed.
STDERR_SHOWN = 8
#: Seconds between two polls while the runtime waits for work (to notice it dying).
IDLE_POLL_S = 1.0
#: Outcomes of finished jobs remembered for :func:`outcome` (the oldest are forgotten first).
OUTCOMES_KEPT = 64


#: Builds a finished job's result into Blender: (event, label) → (panel message, undo step name, names built).
Builder = Callable[[JobDone, str], tuple[str, str, list[str]]]


@dataclass
class JobInfo:
    """What the main thread remembers of a submitted job (``builder`` None: import the result as a scene)."""

    job_id: str
    label: str
    cleanup: list[Path] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    builder: Builder | None = None


@dataclass
class _State:
    link: Link | None = None
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    #: Called with each finished job's outcome (tests and the modal operator listen here).
    listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    #: (outcome, message) of the last finished jobs, by job id.
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Links being stopped in the background (finished at exit if they are still running then).
    retiring: list[Link] = field(default_factory=list)


_state = _State()


def _session() -> Any:
    wm = bpy.context.window_manager
    return getattr(wm, "mega", None) if wm is not None else None


def _set_session(**values: Any) -> None:
    session = _session()
    if session is None:
        return
    for key, value in values.items():
        setattr(session, key, value)
    _redraw()


def _redraw() -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "CLIP_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


def _status_bar(text: str | None) -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        workspace = window.workspace
        if workspace is not None:
            workspace.status_text_set(text)


# -- the runtime ------------------------------------------------------------------------------------------------


def link_settings(context: bpy.types.Context) -> tuple[list[str], list[str], bool]:
    """(runtime command, ``serve`` arguments, inline?) from the preferences; ValueError names what to set."""
    preferences = get_preferences(context)
    if preferences is None:
        raise ValueError("the MEGA add-on is not enabled, so it has no runtime settings")
    command = runtime_command(preferences)
    serve_args: list[str] = []
    if preferences.weights_dir:
        serve_args += ["--checkpoint-dir", bpy.path.abspath(preferences.weights_dir)]
    if preferences.fast_kernels:
        serve_args.append("--compile")
    return command, serve_args, preferences.runtime_mode == "COMMAND"


def ensure_link(context: bpy.types.Context) -> Link:
    """The running link, started now if there is none (or the last one failed). Raises LinkError/ValueError."""
    link = _state.link
    if link is not None and link.failed is None and link.client.running:
        return link
    if link is not None:
        _retire(link)
    command, serve_args, inline = link_settings(context)
    # Blender's "Allow Online Access" off: the runtime downloads nothing implicitly (the default detector then
    # keeps to a YOLOX model already on disk, else uses the offline one; docs/detection.md)
    env = None if addon_preferences.online_access() else {**os.environ, "MEGA_OFFLINE": "1"}
    link = Link(command, serve_args, inline=inline, env=env)
    _state.link = link
    _set_session(link_state="STARTING", link_message="Starting the MEGA runtime…", link_stderr="")
    try:
        link.start()
    except LinkError as exc:
        _state.link = None
        record_failure(str(exc), link.client.last_stderr(STDERR_SHOWN))
        raise
    _ensure_timer()
    return link


def record_failure(reason: str, stderr: str = "") -> None:
    """Show in the panel that the runtime could not be started, and why."""
    _set_session(link_state="FAILED", link_message=reason, link_stderr=stderr)


def restart(context: bpy.types.Context) -> None:
    """Stop the runtime (cancelling its jobs) and start a fresh one."""
    stop()
    ensure_link(context)


def stop() -> None:
    """Stop the runtime, if any, without waiting for it; forget its jobs (their temporary files are removed)."""
    link, _state.link = _state.link, None
    if link is not None:
        _retire(link)
    for info in _state.jobs.values():
        _cleanup(info)
    _state.jobs.clear()
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    _set_session(link_state="STOPPED", link_message="", job_running=False, job_progress=0.0)
    _status_bar(None)


def _retire(link: Link) -> None:
    """Stop ``link``'s runtime in the background (returns at once) and remember it until its process is gone."""
    _state.retiring = [old for old in _state.retiring if old.client.running]
    if link.stop() is not None:
        _state.retiring.append(link)


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=POLL_S, persistent=True)


# -- jobs -------------------------------------------------------------------------------------------------------


def submit(
    context: bpy.types.Context,
    source: Path,
    out_dir: Path,
    options: Mapping[str, Any],
    *,
    label: str,
    cleanup: list[Path] | None = None,
) -> str:
    """Send one reconstruction to the runtime (starting it if needed); returns the job id."""
    link = ensure_link(context)
    try:
        job_id = link.submit(source, out_dir, name=Path(source).stem, options=options)
    except LinkError as exc:
        record_failure(str(exc), link.client.last_stderr(STDERR_SHOWN))
        raise
    _state.jobs[job_id] = JobInfo(job_id, label, list(cleanup or []))
    _set_session(job_running=True, job_progress=0.0, job_status=f"{label}: queued")
    _status_bar(f"MEGA: {label} queued")
    _ensure_timer()
    return job_id


def submit_model_job(
    context: bpy.types.Context,
    op: str,
    fields: Mapping[str, Any],
    out_dir: Path,
    *,
    name: str,
    label: str,
    builder: Builder | None = None,
) -> str:
    """Send a ``complete`` or ``generate`` to the runtime (starting it if needed); returns the job id.

    ``builder`` turns the finished result into Blender data (default: import it like a reconstruction).
    """
    link = ensure_link(context)
    try:
        job_id = link.submit_model_job(op, out_dir, name, fields)
    except LinkError as exc:
        record_failure(str(exc), link.client.last_stderr(STDERR_SHOWN))
        raise
    _state.jobs[job_id] = JobInfo(job_id, label, builder=builder)
    _set_session(job_running=True, job_progress=0.0, job_status=f"{label}: queued")
    _status_bar(f"MEGA: {label} queued")
    _ensure_timer()
    return job_id


def cancel(job_id: str | None = None) -> bool:
    """Cancel one job or all of them; False when nothing was running."""
    link = _state.link
    if link is None or not link.busy:
        return False
    link.cancel(job_id)
    _set_session(job_status="Cancelling…")
    return True


def is_running(job_id: str) -> bool:
    return job_id in _state.jobs


def current_link() -> Link | None:
    return _state.link


def outcome(job_id: str) -> tuple[str, str] | None:
    """('done' | 'cancelled' | 'failed', the message shown in the panel) of a finished job; None while it runs."""
    return _state.outcomes.get(job_id)


def add_listener(listener: Callable[[str, str], None]) -> None:
    """Call ``listener(job_id, outcome)`` when a job ends; outcome is 'done', 'cancelled' or 'failed'."""
    _state.listeners.append(listener)


def remove_listener(listener: Callable[[str, str], None]) -> None:
    if listener in _state.listeners:
        _state.listeners.remove(listener)


def remove_path(path: Path) -> None:
    """Remove a temporary file or folder this add-on made for a job (never anything else)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _cleanup(info: JobInfo) -> None:
    for path in info.cleanup:
        try:
            remove_path(path)
        except OSError as exc:
            log.warning("could not remove the temporary %s: %s", path, exc)


def _finish(job_id: str, outcome: str, message: str) -> None:
    """End a job: forget it, remove its temporary files, show ``message`` and tell the listeners."""
    info = _state.jobs.pop(job_id, None)
    if info is not None:
        _cleanup(info)
    _state.outcomes[job_id] = (outcome, message)
    while len(_state.outcomes) > OUTCOMES_KEPT:
        del _state.outcomes[next(iter(_state.outcomes))]
    running = bool(_state.jobs)
    _set_session(job_running=running, job_progress=0.0 if not running else _session_progress(), job_status=message)
    _status_bar(None if not running else f"MEGA: {len(_state.jobs)} job(s) running")
    if outcome == "failed":
        log.error("MEGA job %s failed: %s", job_id, message)
    else:
        log.info("job %s %s: %s", job_id, outcome, message)
    for listener in list(_state.listeners):
        try:
            listener(job_id, outcome)
        except Exception:  # a listener's bug must not stop the timer or the other listeners
            log.exception("a MEGA job listener failed for job %s", job_id)


def _session_progress() -> float:
    session = _session()
    return float(session.job_progress) if session is not None else 0.0


def _build(event: JobDone) -> str:
    """Build the result of a finished job (into the current scene, or with the job's builder); returns the
    message for the panel. One undo step holds what was built."""
    info = _state.jobs.get(event.job)
    label = info.label if info is not None else event.json_path.stem
    builder = info.builder if info is not None and info.builder is not None else import_result
    message, undo_name, built = builder(event, label)
    if info is not None:
        info.built = built
    try:
        bpy.ops.ed.undo_push(message=undo_name)
    except RuntimeError as exc:  # no undo stack (background mode) or no window context
        log.debug("no undo step pushed: %s", exc)
    return message


def import_result(event: JobDone, label: str) -> tuple[str, str, list[str]]:
    """The default :data:`Builder`: import the result pair like File › Import (a scene with its people)."""
    try:
        result = read_result(event.json_path)
        built = animation.build(bpy.context, result)
    except (ResultFormatError, OSError) as exc:
        raise LinkError(f"the result of {label} could not be imported: {exc}") from exc
    for warning in built.warnings:
        log.warning("%s", warning)
    people = f"{len(built.people)} {'person' if len(built.people) == 1 else 'people'}"
    names = [obj.name for obj in built.people]
    if event.cancelled:
        message = f"{label}: cancelled after {event.num_frames} frame(s); kept them — {people}"
    else:
        message = f"{label}: {people} into '{built.collection.name}'"
    return message, f"MEGA Reconstruct {label}", names


def _build_partial(job_id: str, json_path: Path) -> str:
    """Build the frames a dead runtime had kept of a video job; returns what to tell the user."""
    info = _state.jobs.get(job_id)
    label = info.label if info is not None else json_path.stem
    try:
        result = read_result(json_path)
        built = animation.build(bpy.context, result)
    except (ResultFormatError, OSError) as exc:
        raise LinkError(f"the frames it had kept could not be imported: {exc}") from exc
    try:
        bpy.ops.ed.undo_push(message=f"MEGA Reconstruct {label} (partial)")
    except RuntimeError as exc:
        log.debug("no undo step pushed: %s", exc)
    return f"kept the {result.num_frames} frame(s) done before it stopped ({len(built.people)} people)"


def pump() -> float | None:
    """``bpy.app.timers`` callback: act on every event from the runtime; returns the next interval or None.

    Never raises (Blender unregisters a timer that does, which would leave a job shown running forever): an
    event that cannot be handled ends its job as failed, with the reason in the panel and the log.
    """
    link = _state.link
    if link is None:
        return None
    try:
        events = link.pump()
    except Exception as exc:  # the timer must survive anything; the link is pure Python and should not raise
        log.exception("reading the MEGA runtime's replies failed")
        events = [_link_failure(link, f"reading the runtime's replies failed: {type(exc).__name__}: {exc}")]
    for event in events:
        try:
            _handle(event)
        except Exception as exc:  # e.g. a bpy error while building: fail the job, keep the timer
            _handle_failed(event, exc)
    if link.failed is not None and not _state.jobs:
        return None
    return POLL_S if (_state.jobs or not link.ready) else IDLE_POLL_S


def _link_failure(link: Link, reason: str) -> RuntimeFailed:
    """A :class:`RuntimeFailed` for ``link``'s jobs when the link itself broke; the runtime is stopped."""
    failed = RuntimeFailed(reason, link.client.last_stderr(), tuple(link.jobs))
    link.failed = failed
    link.jobs.clear()
    link.stop()
    return failed


def _label(job_id: str) -> str:
    info = _state.jobs.get(job_id)
    return info.label if info is not None else job_id


def _handle(event: Event) -> None:
    """Act on one event on the main thread (may raise; :func:`pump` turns that into a failed job)."""
    if isinstance(event, Ready):
        missing = event.hello.get("missing") or []
        note = f" — missing: {missing[0].get('what')} ({missing[0].get('fix')})" if missing else ""
        version = event.hello.get("runtime_version", "?")
        devices = ", ".join(event.hello.get("devices") or [])
        _set_session(link_state="READY", link_message=f"Runtime {version} ready on {devices}{note}")
    elif isinstance(event, Progress):
        label = _label(event.job)
        fraction = event.done / event.total if event.total else 0.0
        if event.stage == "download":  # bytes: shown in MB
            size = f"/{event.total / 1e6:.1f}" if event.total else ""
            count = f" {event.done / 1e6:.1f}{size} MB"
        elif event.total == 1:  # one-step stages (load, detect, smpl): the message says where it is
            count = ""
        else:  # frames of a video, people of a photo (model)
            count = f" {event.done}/{event.total}" if event.total else (f" {event.done}" if event.done else "")
        text = f"{label}: {event.message or event.stage}{count}"
        _set_session(job_progress=min(max(fraction, 0.0), 1.0), job_status=text)
        _status_bar(f"MEGA: {text} (Esc cancels)")
    elif isinstance(event, JobDone):
        try:
            message = _build(event)
        except LinkError as exc:
            _finish(event.job, "failed", str(exc))
        else:
            _finish(event.job, "cancelled" if event.cancelled else "done", message)
    elif isinstance(event, JobFailed):
        outcome = "cancelled" if event.code == "cancelled" else "failed"
        _finish(event.job, outcome, event.sentence)
    elif isinstance(event, RuntimeFailed):
        _set_session(link_state="FAILED", link_message=event.reason, link_stderr=event.stderr)
        for job_id in event.jobs:
            partial = event.partials.get(job_id)
            if partial is None:
                _finish(job_id, "failed", event.reason)
                continue
            try:
                message = _build_partial(job_id, partial)
            except LinkError as exc:
                _finish(job_id, "failed", f"{event.reason}; {exc}")
            except Exception as exc:
                log.exception("building the kept frames of job %s failed", job_id)
                _finish(job_id, "failed", f"{event.reason}; its kept frames could not be built: {_what(exc)}")
            else:
                _finish(job_id, "failed", f"{event.reason}; {message}")


def _what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _handle_failed(event: Event, exc: Exception) -> None:
    """``event`` could not be handled: end the job(s) it concerns as failed, saying why; never raises."""
    log.exception("handling %s from the MEGA runtime failed", type(event).__name__)
    try:
        if isinstance(event, JobDone):
            _finish(event.job, "failed", f"{_label(event.job)}: the result could not be built: {_what(exc)}")
        elif isinstance(event, (Progress, JobFailed)):
            if event.job in _state.jobs:
                _finish(event.job, "failed", f"{_label(event.job)}: {_what(exc)}")
        elif isinstance(event, RuntimeFailed):
            for job_id in event.jobs:
                if job_id in _state.jobs:
                    _finish(job_id, "failed", f"{event.reason}; {_what(exc)}")
    except Exception:  # the panel itself cannot be updated: the log has it; the timer must go on
        log.exception("could not record the failure in the panel")


@atexit.register
def _stop_at_exit() -> None:
    """At Blender's exit: end every runtime still running within a bounded time (no thread outlives exit)."""
    links = [*_state.retiring, *([_state.link] if _state.link is not None else [])]
    for link in links:
        link.client.stop_now()
