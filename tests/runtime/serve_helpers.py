"""A bare test harness for ``mega_runtime serve``: a real child process, raw JSON lines, a reader thread.

Kept apart from the add-on's client on purpose: these tests check the runtime side of docs/protocol.md byte by
byte (every stdout line must parse as a reply), while tests/contract/test_live_link.py runs the add-on's client.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Python code that runs ``mega_runtime serve`` after making every photo job print to ``sys.stdout`` and write
#: straight to file descriptor 1, as a careless library would (arguments: the serve options).
NOISY_SERVE = """
import os, sys
from mega_runtime.pipeline import chain as pipeline
from mega_runtime.commands.cli import main
original = pipeline.Pipeline.run_image
def noisy(self, *args, **kwargs):
    print("stray print from a library")
    sys.stdout.flush()
    os.write(1, b"stray bytes on file descriptor 1\\n")
    return original(self, *args, **kwargs)
pipeline.Pipeline.run_image = noisy
sys.exit(main(["serve", *sys.argv[1:]]))
"""


class ServeProcess:
    """``python -m mega_runtime serve ARGS`` with its replies parsed by a thread into a queue.

    ``launcher`` replaces ``python -m mega_runtime serve`` (e.g. ``[python, -c, NOISY_SERVE]``).
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, launcher: Sequence[str] | None = None) -> None:
        command = list(launcher) if launcher else [sys.executable, "-m", "mega_runtime", "serve"]
        self._sync_count = 0
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.non_json: list[bytes] = []
        self.stderr = bytearray()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self.non_json.append(line)
                continue
            self.replies.put(message)
        self.replies.put(None)  # end of output

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, op: str, request_id: str, **fields: Any) -> None:
        self.send_raw(json.dumps({"v": 1, "id": request_id, "op": op, **fields}).encode() + b"\n")

    def next(self, timeout_s: float = 120.0) -> dict[str, Any] | None:
        try:
            return self.replies.get(timeout=timeout_s)
        except queue.Empty as exc:
            raise AssertionError(f"no reply within {timeout_s} s; stderr:\n{self.stderr.decode()[-3000:]}") from exc

    def until(self, request_id: str, types: tuple[str, ...] = ("result", "error"), timeout_s: float = 120.0) -> list:
        """Replies up to and including the first of ``types`` for ``request_id``."""
        seen = []
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if message is None:
                raise AssertionError(f"the server ended; stderr:\n{self.stderr.decode()[-3000:]}")
            seen.append(message)
            if message.get("id") == request_id and message.get("type") in types:
                return seen

    def sync(self) -> None:
        """Consume every reply to earlier requests (a ``cancel`` of no job is answered after them, in order)."""
        self._sync_count += 1
        request_id = f"sync-{self._sync_count}"
        self.send("cancel", request_id, job=f"no-such-job-{self._sync_count}")
        self.until(request_id, ("ack",))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def close(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            try:
                self.send("shutdown", "bye")
                assert self.process.stdin is not None
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
