"""The live link's transport: a MEGA runtime child process and its JSON-Lines pipes (pure Python, no ``bpy``).

:class:`RuntimeClient` starts ``<runtime command> serve`` and speaks the protocol of ``docs/protocol.md`` on its
stdin/stdout: requests are written one line each with a version and an id; two daemon threads read its stdout
(parsed replies go to a queue) and its stderr (the last lines are kept for error messages). Nothing here ever
blocks on the runtime (even :meth:`RuntimeClient.stop` returns at once: a third thread sends ``shutdown`` and
escalates to terminate and kill), and nothing here touches Blender. :class:`mega_blender.runtime_client.Link`
builds the handshake, the jobs and their events on it.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import subprocess
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The protocol version this add-on speaks (docs/protocol.md).
PROTOCOL_VERSION = 1
#: Lines of the runtime's stderr kept for error messages.
STDERR_LINES = 40
#: Seconds the stopping thread waits after ``shutdown`` before it terminates the process (and again before kill).
STOP_GRACE_S = 3.0
#: Seconds :meth:`RuntimeClient.stop_now` may block in all (at Blender's exit, where no thread outlives it).
STOP_NOW_BUDGET_S = 0.4


class LinkError(Exception):
    """The runtime cannot be started or talked to; the message is one sentence for the user."""


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
