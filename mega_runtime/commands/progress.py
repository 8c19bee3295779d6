"""A one-line progress bar for the command line (torch-free; the library itself only logs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO


class ProgressBar:
    """A one-line progress bar on a terminal stream; start lines only when the stream is not a terminal."""

    def __init__(
        self, stream: IO[str], width: int = 30, fmt: Callable[[int | None], str] = str, verb: str = "progress:"
    ) -> None:
        self.stream = stream
        self.width = width
        self.fmt = fmt
        self.verb = verb
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.label: str | None = None
        self.last_draw = 0.0
        self.open_line = False

    def __call__(self, label: str, done: int, total: int | None) -> None:
        """Show ``done`` of ``total`` (None: unknown) for ``label``; a new label starts a new line."""
        if label != self.label:
            self.close()
            self.label = label
            self.last_draw = 0.0
            if not self.tty:
                print(f"{self.verb} {label} ({self.fmt(total)})", file=self.stream, flush=True)
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last_draw < 0.1 and done != total:
            return
        self.last_draw = now
        if total:
            filled = int(self.width * min(done, total) / total)
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"\r{label[:32]:<32} [{bar}] {100 * done / total:5.1f}% {self.fmt(done)}/{self.fmt(total)}"
        else:
            text = f"\r{label[:32]:<32} {self.fmt(done)}"
        self.stream.write(text)
        self.stream.flush()
        self.open_line = True

    def close(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
