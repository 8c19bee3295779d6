"""The add-on's side of the live link: start a MEGA runtime and talk to it (pure Python, no ``bpy``).

The runtime runs as a child process (``<runtime command> serve``) speaking the JSON-Lines protocol of
``docs/protocol.md`` on its stdin/stdout. Two daemon threads read its stdout (parsed replies go to a queue)
and its stderr (the last lines are kept for error messages); nothing here ever blocks on the runtime (even
:meth:`RuntimeClient.stop` returns at once: a third thread sends ``shutdown`` and escalates to terminate and
kill), and nothing here touches Blender. The Blender side (:mod:`mega_blender.jobs`)
calls :meth:`Link.pump` from a ``bpy.app.timers`` function on the main thread and acts on the events it returns.

:class:`RuntimeClient` is the transport (process, lines, ids); :class:`Link` adds the handshake, the jobs and
their outcome as small event objects, and writes inline results (from a runtime on another machine) to disk.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The protocol version this add-on speaks (docs/protocol.md).
PROTOCOL_VERSION = 1
#: Lines of the runtime's stderr kept for error messages.
STDERR_LINES = 40
#: Seconds the runtime gets to answer ``hello`` after it started (it imports torch first).
HANDSHAKE_TIMEOUT_S = 120.0
#: Seconds the stopping thread waits after ``shutdown`` before it terminates the process (and again before kill).
STOP_GRACE_S = 3.0
#: Seconds :meth:`RuntimeClient.stop_now` may block in all (at Blender's exit, where no thread outlives it).
STOP_NOW_BUDGET_S = 0.4


class LinkError(Exception):
    """The runtime cannot be started or talked to; the message is one sentence for the user."""


# ---------------------------------------------------------------------------------------------------------------
# transport


class RuntimeClient:
    """A runtime child process and its JSON-Lines pipes.

    ``command`` starts the runtime's command-line entry (e.g. ``[python, "-m", "mega_runtime"]`` or
    ``["ssh", "gpu", "mega-runtime"]``); ``serve`` and ``serve_args`` are appended.
    """

    def __init__(
        self,
        command: Sequence[str],
        serve_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        if not command:
            raise LinkError("the runtime command is empty: set it in the add-on's preferences")
        self.argv = [*command, "serve", *serve_args]
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._write_lock = threading.Lock()
        self._exited = threading.Event()
        self._stderr_thread: threading.Thread | None = None
        self._stopper: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process; raises :class:`LinkError` when it cannot be run at all."""
        try:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl+C in Blender's terminal does not kill the runtime mid-write
            )
        except OSError as exc:
            raise LinkError(f"cannot start the runtime '{self.argv[0]}': {exc.strerror or exc}") from exc
        log.info("started the MEGA runtime (pid %d): %s", self._process.pid, " ".join(self.argv))
        threading.Thread(target=self._read_stdout, name="mega-runtime-stdout", daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="mega-runtime-stderr", daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and not self._exited.is_set()

    def stop(self, grace_s: float = STOP_GRACE_S) -> threading.Thread | None:
        """Stop the runtime without waiting for it; returns the thread doing it (None when nothing runs).

        The thread sends ``shutdown`` and closes the runtime's input, waits ``grace_s`` for it to exit, then
        terminates it, waits ``grace_s`` again and kills it. Calling this again while it works joins in.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return None
        with self._stop_lock:
            if self._stopper is None:
                self._stopper = threading.Thread(
                    target=self._shut_down, args=(process, grace_s), name="mega-runtime-stop", daemon=True
                )
                self._stopper.start()
            return self._stopper

    def stop_now(self, budget_s: float = STOP_NOW_BUDGET_S) -> None:
        """Stop the runtime within ``budget_s`` seconds, blocking (for interpreter exit, where threads die).

        ``shutdown`` and end of input first; half the budget to exit; then terminate, the rest of the budget,
        then kill (which needs no wait: the process is gone once the signal is delivered).
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._ask_to_exit()
        for escalate in (process.terminate, process.kill):
            try:
                process.wait(timeout=budget_s / 2)
            except subprocess.TimeoutExpired:
                log.warning("the MEGA runtime (pid %d) did not exit in time; %s", process.pid, escalate.__name__)
                escalate()
            else:
                return

    def _ask_to_exit(self) -> None:
        """Send ``shutdown`` and close the runtime's input (its end of input is a shutdown, too)."""
        process = self._process
        if process is None:
            return
        try:
            self.send("shutdown")
        except LinkError:
            log.debug("no shutdown sent: the runtime's input is already closed")
        if process.stdin is not None:
            try:
                with self._write_lock:
                    process.stdin.close()
            except OSError as exc:  # a broken pipe while flushing: it is on its way out
                log.debug("closing the runtime's input: %s", exc)

    def _shut_down(self, process: subprocess.Popen[bytes], grace_s: float) -> None:
        self._ask_to_exit()
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("the MEGA runtime did not stop within %.1f s; terminating it", grace_s)
        process.terminate()
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("the MEGA runtime ignored terminate for %.1f s; killing it", grace_s)
        process.kill()
        process.wait()

    def wait_stopped(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a :meth:`stop` to finish; True when the process is gone (or never ran)."""
        stopper = self._stopper
        if stopper is not None:
            stopper.join(timeout_s)
        return self._process is None or self._process.poll() is not None

    # -- messages --------------------------------------------------------------------------------------------
    def send(self, op: str, request_id: str | None = None, **fields: Any) -> str:
        """Write one request line; returns its id. Raises :class:`LinkError` when the pipe is closed."""
        process = self._process
        if process is None or process.stdin is None:
            raise LinkError("the runtime is not running")
        request_id = request_id or uuid.uuid4().hex[:12]
        line = json.dumps({"v": PROTOCOL_VERSION, "id": request_id, "op": op, **fields}, separators=(",", ":"))
        try:
            with self._write_lock:
                process.stdin.write(line.encode("utf-8") + b"\n")
                process.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise LinkError("the runtime is not running (its input is closed)") from exc
        return request_id

    def _read_stdout(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for raw in process.stdout:
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                message = None
            if not isinstance(message, dict):
                self.stderr_tail.append(f"[not protocol] {text[:200]}")
                continue
            self.replies.put(message)
        self.returncode = process.wait()
        self._exited.set()
        self.replies.put({"type": "_exit", "returncode": self.returncode})

    def _read_stderr(self) -> None:
        process = self._process
        if process is None or process.stderr is None:
            return
        for raw in process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.debug("runtime: %s", line)

    def wait_exited(self, timeout_s: float) -> bool:
        """Wait until the process has exited and its output is read; True when it has."""
        if self._process is None:
            return True
        exited = self._exited.wait(timeout_s)
        if exited and self._stderr_thread is not None:
            self._stderr_thread.join(timeout_s)  # its last words, too
        return exited

    def drain(self, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Every reply that has arrived; with ``wait_s`` > 0, first wait up to that long for one."""
        out = []
        if wait_s > 0:
            try:
                out.append(self.replies.get(timeout=wait_s))
            except queue.Empty:
                return out
        while True:
            try:
                out.append(self.replies.get_nowait())
            except queue.Empty:
                return out

    def last_stderr(self, count: int = 5) -> str:
        """The last ``count`` lines of the runtime's stderr, joined by newlines."""
        return "\n".join(list(self.stderr_tail)[-count:])


# ---------------------------------------------------------------------------------------------------------------
# events handed to the Blender side


@dataclass(frozen=True)
class Ready:
    """The handshake succeeded; ``hello`` is the runtime's reply (versions, devices, models, missing)."""

    hello: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """A job advanced: ``done`` of ``total`` (None when unknown) in ``stage``."""

    job: str
    stage: str
    done: int
    total: int | None
    message: str = ""


@dataclass(frozen=True)
class JobDone:
    """A job finished (or was cancelled with partial frames); the result pair is on this machine."""

    job: str
    json_path: Path
    npz_path: Path
    cancelled: bool
    num_frames: int
    num_people: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobFailed:
    """A job ended with an error reply (the runtime is still running)."""

    job: str
    code: str
    message: str
    hint: str | None = None

    @property
    def sentence(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class RuntimeFailed:
    """The runtime could not start, failed the handshake or died; ``stderr`` holds its last lines.

    ``partials`` maps the ids of video jobs that were running to the partial result (.json) the runtime had
    kept of their first frames, when it had kept one.
    """

    reason: str
    stderr: str = ""
    jobs: tuple[str, ...] = ()
    partials: dict[str, Path] = field(default_factory=dict)


Event = Ready | Progress | JobDone | JobFailed | RuntimeFailed


@dataclass
class _Job:
    job_id: str
    out_dir: Path
    name: str
    inline: bool
    cancel_requested: bool = False
    partial: Path | None = None
    started_s: float = field(default_factory=time.monotonic)


# ---------------------------------------------------------------------------------------------------------------
# the link


class Link:
    """One runtime and its jobs: start, handshake, submit, cancel, pump events, stop.

    ``inline`` sends sources as bytes and asks for results inline (a runtime on another machine); otherwise
    paths are sent and the runtime writes the result pair straight into the job's ``out_dir``.
    """

    def __init__(
        self,
        command: Sequence[str],
        serve_args: Sequence[str] = (),
        *,
        inline: bool = False,
        env: Mapping[str, str] | None = None,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.client = RuntimeClient(command, serve_args, env=env)
        self.inline = inline
        self.handshake_timeout_s = handshake_timeout_s
        self.hello: dict[str, Any] | None = None
        self.failed: RuntimeFailed | None = None
        self.jobs: dict[str, _Job] = {}
        self._hello_id: str | None = None
        self._started_s: float | None = None

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.hello is not None and self.failed is None

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def start(self) -> None:
        """Start the runtime and send ``hello``; the reply arrives through :meth:`pump`.

        Raises :class:`LinkError` when the process cannot be started.
        """
        self.client.start()
        self._started_s = time.monotonic()
        try:
            self._hello_id = self.client.send("hello")
        except LinkError:
            raise LinkError(self._exit_reason()) from None

    def stop(self) -> threading.Thread | None:
        """Stop the runtime without waiting (see :meth:`RuntimeClient.stop`)."""
        return self.client.stop()

    def wait_stopped(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a :meth:`stop` to finish; True when the runtime is gone."""
        return self.client.wait_stopped(timeout_s)

    # -- jobs ------------------------------------------------------------------------------------------------
    def submit(
        self,
        source: Path,
        out_dir: Path,
        *,
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a reconstruction of ``source`` (an image or video file on this machine); returns the job id.

        ``options`` are the protocol's ``infer`` fields (model, hypotheses, steps, seed, frames, …). The result
        pair ends up in ``out_dir`` as ``<name>.json`` / ``.npz`` (never overwriting an existing pair).
        """
        if self.failed is not None:
            raise LinkError(self.failed.reason)
        source = Path(source)
        name = name or source.stem
        fields: dict[str, Any] = dict(options or {})
        if self.inline:
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise LinkError(f"cannot read {source}: {exc.strerror or exc}") from exc
            fields["source"] = {"data": base64.b64encode(data).decode("ascii"), "name": source.name}
            fields["return"] = "inline"
        else:
            fields["source"] = {"path": str(source.resolve())}
        return self._send_job("infer", Path(out_dir), name, fields)

    def submit_model_job(self, op: str, out_dir: Path, name: str, fields: Mapping[str, Any]) -> str:
        """Queue a ``complete`` or ``generate`` (docs/protocol.md: ``fields`` are the op's own); returns the job id.

        These ops read and write files on the runtime's machine, so they need a runtime on this machine: with an
        inline (remote) runtime a :class:`LinkError` says so.
        """
        if op not in ("complete", "generate"):
            raise ValueError(f"not a model job: {op!r}")
        if self.failed is not None:
            raise LinkError(self.failed.reason)
        if self.inline:
            raise LinkError(
                f"'{op}' needs the MEGA runtime on this machine (it reads and writes result files there); "
                "set the runtime mode to Interpreter in the add-on's preferences"
            )
        return self._send_job(op, Path(out_dir), name, dict(fields))

    def _send_job(self, op: str, out_dir: Path, name: str, fields: dict[str, Any]) -> str:
        out_dir = out_dir.resolve()
        if not self.inline:
            fields["out_dir"] = str(out_dir)
            fields["name"] = name
        job_id = uuid.uuid4().hex[:12]
        self.jobs[job_id] = _Job(job_id, out_dir, name, self.inline)
        try:
            self.client.send(op, job_id, **fields)
        except LinkError:
            del self.jobs[job_id]
            raise LinkError(self._exit_reason()) from None
        return job_id

    def cancel(self, job_id: str | None = None) -> None:
        """Cancel one job, or every job when ``job_id`` is None."""
        targets = [job_id] if job_id is not None else list(self.jobs)
        for target in targets:
            job = self.jobs.get(target)
            if job is None or job.cancel_requested:
                continue
            job.cancel_requested = True
            try:
                self.client.send("cancel", job=target)
            except LinkError:
                log.info("cancel of %s not sent: the runtime is gone", target)

    # -- events ----------------------------------------------------------------------------------------------
    def pump(self, wait_s: float = 0.0) -> list[Event]:
        """Turn every reply that arrived into events (call it from one thread only, e.g. Blender's main one).

        Never blocks by default (Blender's timers); scripts may wait up to ``wait_s`` for the next reply.
        """
        events: list[Event] = []
        for message in self.client.drain(wait_s):
            event = self._handle(message)
            if event is not None:
                events.append(event)
        if (
            self.hello is None
            and self.failed is None
            and self._started_s is not None
            and time.monotonic() - self._started_s > self.handshake_timeout_s
        ):
            events.append(self._fail(f"the runtime did not answer within {self.handshake_timeout_s:.0f} s"))
            self.client.stop(grace_s=0.5)
        return events

    def _exit_reason(self, wait_s: float = 2.0) -> str:
        """Why the runtime's input closed: it exited (with its code and last stderr line), once it has."""
        self.client.wait_exited(wait_s)
        if self.client.returncode is None:
            return "the runtime is not accepting requests (its input is closed)"
        when = "before its handshake" if self.hello is None else "while it was running"
        last = self.client.last_stderr(1)
        return f"the MEGA runtime exited with code {self.client.returncode} {when}" + (f": {last}" if last else "")

    def _fail(self, reason: str) -> RuntimeFailed:
        partials = {job_id: job.partial for job_id, job in self.jobs.items() if job.partial is not None}
        failed = RuntimeFailed(reason, self.client.last_stderr(), tuple(self.jobs), partials)
        self.failed = failed
        self.jobs.clear()
        return failed

    def _handle(self, message: dict[str, Any]) -> Event | None:
        kind = message.get("type")
        request_id = message.get("id")
        if kind == "_exit":
            if self.failed is not None:
                return None
            return self._fail(self._exit_reason())
        if request_id == self._hello_id and self.hello is None:
            return self._handshake(message)
        job = self.jobs.get(request_id) if isinstance(request_id, str) else None
        if kind == "error" and job is None:
            log.warning("runtime error for request %s: %s", request_id, message.get("message"))
            return None
        if job is None:
            return None
        if kind == "progress":
            partial = message.get("partial_json_path")
            if isinstance(partial, str) and partial:
                job.partial = Path(partial)
            total = message.get("total")
            return Progress(
                job.job_id,
                str(message.get("stage", "")),
                int(message.get("done") or 0),
                int(total) if isinstance(total, int) else None,
                str(message.get("message") or ""),
            )
        if kind == "error":
            del self.jobs[job.job_id]
            return JobFailed(
                job.job_id, str(message.get("code")), str(message.get("message")), message.get("hint") or None
            )
        if kind == "result":
            del self.jobs[job.job_id]
            try:
                json_path, npz_path = self._result_files(job, message)
            except LinkError as exc:
                return JobFailed(job.job_id, "result_unusable", str(exc))
            return JobDone(
                job.job_id,
                json_path,
                npz_path,
                bool(message.get("cancelled")),
                int(message.get("num_frames") or 0),
                int(message.get("num_people") or 0),
                tuple(str(w) for w in message.get("warnings") or ()),
            )
        return None  # accepted / ack

    def _handshake(self, message: dict[str, Any]) -> Event:
        if message.get("type") == "error":
            reason = f"the runtime refused the handshake: {message.get('message')}"
            self.client.stop(grace_s=0.5)
            return self._fail(reason)
        protocol = message.get("protocol")
        if protocol != PROTOCOL_VERSION:
            self.client.stop(grace_s=0.5)
            return self._fail(
                f"protocol mismatch: this add-on speaks protocol {PROTOCOL_VERSION}, the runtime "
                f"{message.get('runtime_version', '?')} speaks protocol {protocol}; install the runtime that "
                "matches the add-on (preferences › Install, or pip install the bundled runtime)"
            )
        self.hello = message
        return Ready(message)

    def _result_files(self, job: _Job, message: dict[str, Any]) -> tuple[Path, Path]:
        if not job.inline:
            json_path, npz_path = message.get("json_path"), message.get("npz_path")
            if not isinstance(json_path, str) or not isinstance(npz_path, str):
                raise LinkError("the runtime's result names no files")
            return Path(json_path), Path(npz_path)
        meta, npz = message.get("meta"), message.get("npz")
        if not isinstance(meta, dict) or not isinstance(npz, str):
            raise LinkError("the runtime's inline result lacks its meta or arrays")
        try:
            npz_bytes = base64.b64decode(npz, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LinkError("the runtime's inline arrays are not valid base64") from exc
        return write_result_pair(job.out_dir, job.name, meta, npz_bytes)


def unique_stem(out_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, … — the first whose ``.json`` and ``.npz`` are both free."""
    candidate, n = name, 1
    while (out_dir / f"{candidate}.json").exists() or (out_dir / f"{candidate}.npz").exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def write_result_pair(out_dir: Path, name: str, meta: Mapping[str, Any], npz_bytes: bytes) -> tuple[Path, Path]:
    """Write an inline result as ``<name>.json`` + ``<name>.npz`` in ``out_dir``: never overwriting (a free
    ``-N`` suffix is chosen; the JSON's ``arrays_file`` names the npz), each file written to a temporary name
    first and then renamed."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = unique_stem(out_dir, name)
        json_path, npz_path = out_dir / f"{stem}.json", out_dir / f"{stem}.npz"
        text = json.dumps({**meta, "arrays_file": npz_path.name}, indent=1)
        for path, data in ((npz_path, npz_bytes), (json_path, text.encode("utf-8"))):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
    except OSError as exc:
        raise LinkError(f"cannot write the result into {out_dir}: {exc.strerror or exc}") from exc
    return json_path, npz_path
