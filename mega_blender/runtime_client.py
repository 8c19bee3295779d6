"""The add-on's side of the live link: start a MEGA runtime and talk to it (pure Python, no ``bpy``).

The runtime runs as a child process (``<runtime command> serve``) speaking the JSON-Lines protocol of
``docs/protocol.md`` on its stdin/stdout; :class:`~mega_blender.runtime_transport.RuntimeClient` (in
:mod:`mega_blender.runtime_transport`) is that transport: the process, its lines and request ids, read by daemon
threads so that nothing here ever blocks on the runtime, and nothing here touches Blender. The Blender side
(:mod:`mega_blender.jobs`) calls :meth:`Link.pump` from a ``bpy.app.timers`` function on the main thread and acts
on the events it returns.

:class:`Link` adds to the transport the handshake, the jobs and their outcome as small event objects, and writes
inline results (from a runtime on another machine) to disk.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runtime_transport

log = logging.getLogger(__name__)

#: The transport's error is the link's: :class:`Link` raises it, the Blender side catches it from here.
LinkError = runtime_transport.LinkError

#: Seconds the runtime gets to answer ``hello`` after it started (it imports torch first).
HANDSHAKE_TIMEOUT_S = 120.0


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
        self.client = runtime_transport.RuntimeClient(command, serve_args, env=env)
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
        """Stop the runtime without waiting (see :meth:`~mega_blender.runtime_transport.RuntimeClient.stop`)."""
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
        if protocol != runtime_transport.PROTOCOL_VERSION:
            self.client.stop(grace_s=0.5)
            return self._fail(
                f"protocol mismatch: this add-on speaks protocol {runtime_transport.PROTOCOL_VERSION}, the runtime "
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
