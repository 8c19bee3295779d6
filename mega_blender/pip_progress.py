"""pip's output as a fraction of an install step that only moves forward (pure, standard library only).

Used by :class:`mega_blender.installer.InstallJob` for the steps that run pip; unit-tested in plain CPython
(``tests/addon_pure/test_installer.py``).
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"bytes": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
#: A ``--progress-bar raw`` line of pip (≥ 24.1): ``Progress CURRENT of TOTAL``.
RAW_PROGRESS = re.compile(r"^\s*Progress (\d+) of (\d+)\s*$")
_FILE_WITH_SIZE = re.compile(r"^\s*(Downloading|Using cached)\s+(\S+)(?:\s+\(([\d.]+)\s*([a-zA-Z]+)\))?")


def parse_size(number: str, unit: str) -> int:
    """Bytes of pip's ``12.3 MB`` (pip counts in powers of 1000)."""
    return int(float(number) * _SIZE_UNITS.get(unit.lower(), 1))


class PipProgress:
    """Reads pip's output line by line and keeps a fraction (0…1) of the step that never goes back.

    * ``--progress-bar raw`` (pip ≥ 24.1) prints ``Progress CURRENT of TOTAL`` for each download;
    * every pip prints ``Downloading NAME (NN MB)`` (older pips a URL as NAME) and ``Using cached NAME (NN MB)``,
      which are counted when the next line arrives (or at once for a cached file);
    * ``Collecting`` lines nudge the fraction while pip resolves; ``Installing collected packages`` means every
      download is done.

    Downloads fill 5 %…90 % in proportion to ``expected_bytes`` (the build's estimated download; raised when pip
    announces more), installing the last 10 %.
    """

    RESOLVE_SHARE = 0.05
    DOWNLOAD_SHARE = 0.85

    def __init__(self, expected_bytes: int) -> None:
        self.expected_bytes = max(int(expected_bytes), 1)
        self.done_bytes = 0
        self.current_bytes = 0
        self.current_total = 0
        self.pending_bytes = 0  # announced by a Downloading line, not (yet) followed by raw progress
        self.collected = 0
        self.installing = False
        self.file = ""
        self._fraction = 0.0

    def _close_file(self) -> None:
        self.done_bytes += max(self.current_bytes, self.pending_bytes)
        self.current_bytes = self.current_total = self.pending_bytes = 0

    def feed(self, line: str) -> None:
        raw = RAW_PROGRESS.match(line)
        if raw:
            current, total = int(raw.group(1)), int(raw.group(2))
            if current < self.current_bytes:  # a new file without a Downloading line
                self._close_file()
            self.pending_bytes = 0
            self.current_bytes, self.current_total = current, total
        elif match := _FILE_WITH_SIZE.match(line):
            self._close_file()
            self.file = match.group(2).rsplit("/", 1)[-1]
            size = parse_size(match.group(3), match.group(4)) if match.group(3) else 0
            if match.group(1) == "Using cached":
                self.done_bytes += size
            else:
                self.pending_bytes = size
                self.current_total = size
        elif line.lstrip().startswith("Collecting"):
            self._close_file()
            self.collected += 1
        elif line.lstrip().startswith(("Installing collected packages", "Successfully installed")):
            self._close_file()
            self.installing = True
        self._update()

    @property
    def seen_bytes(self) -> int:
        return self.done_bytes + self.current_bytes

    def _update(self) -> None:
        total = max(self.expected_bytes, self.done_bytes + max(self.current_total, self.pending_bytes))
        fraction = self.RESOLVE_SHARE * (1 - 0.5**self.collected)
        fraction += self.DOWNLOAD_SHARE * min(self.seen_bytes / total, 1.0)
        if self.installing:
            fraction = max(fraction, self.RESOLVE_SHARE + self.DOWNLOAD_SHARE)
        self._fraction = max(self._fraction, min(fraction, 0.99))

    @property
    def fraction(self) -> float:
        return self._fraction

    @property
    def message(self) -> str:
        """What pip is doing, e.g. ``torch-2.13.0-….whl 412/915 MB``."""
        if self.installing:
            return "installing packages"
        if self.current_total:
            return f"{self.file} {self.current_bytes / 1e6:.0f}/{self.current_total / 1e6:.0f} MB"
        if self.file:
            return self.file
        return f"resolving ({self.collected} packages)" if self.collected else "starting pip"
