"""The private-environment installer, without Blender: which PyTorch build, which commands, how far along.

Pure (standard library only), so it is unit-tested in plain CPython (``tests/addon_pure/test_installer.py``);
:mod:`mega_blender.preferences` is the bpy glue (operators, a timer, drawing).

* :func:`plan_install` — the named steps (create environment, install PyTorch, install the runtime, detector
  models, check), each a command with a weight in the overall progress.
* :class:`InstallJob` — runs a plan in child processes, polled from Blender's main thread; cancellable. While it
  runs, a marker file in the environment says "incomplete", so the next install recreates the environment.
* :func:`estimate_disk_bytes` / :func:`check_disk_space` — refuse up front when the disk is too full.

Beside it: :mod:`mega_blender.torch_builds` chooses the PyTorch build (the wheel index for the machine) and
defines :class:`~mega_blender.torch_builds.InstallerError`; :mod:`mega_blender.pip_progress` turns pip's output
into the running step's fraction.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import pip_progress, torch_builds

log = logging.getLogger(__name__)

#: Beside the environment folder (``venv`` → ``venv.mega-incomplete``), marks an install that has not finished:
#: written before the first step, removed after the last. Outside the folder, so ``venv --clear`` keeps it.
INCOMPLETE_SUFFIX = ".mega-incomplete"
#: What the last finished install recorded (build, check output): read by the preferences.
INSTALL_RECORD = "mega-install.json"
CHECK_PREFIX = "MEGA-CHECK "
#: Approximate sizes in MB (download, installed) of torch 2.x with its dependencies per build, rounded up from
#: the wheels on PyPI / download.pytorch.org (Linux x86-64: CPU torch ~190 MB; CUDA torch ~900 MB plus the
#: nvidia-* wheels, ~2.8 GB in all; Windows CUDA is one ~2.6 GB wheel; macOS arm64 ~80 MB).
TORCH_SIZES_MB = {"cpu": (250, 900), "cuda": (3000, 6500), "default-macos": (120, 450), "default": (3000, 6500)}
#: numpy, scipy, opencv-python-headless, ai-edge-litert, onnxruntime, mediapipe (no deps), the runtime itself and
#: the YOLOX person detector model (36 MB).
OTHER_SIZES_MB = (260, 700)
#: Head room on top of the estimate (pip's temporary files, byte-compiling).
DISK_MARGIN = 1.2
#: Weights of the steps in the overall fraction (PyTorch dominates).
STEP_WEIGHTS = {"environment": 0.05, "torch": 0.60, "runtime": 0.25, "detector": 0.05, "check": 0.05}
STEP_TITLES = {
    "environment": "Create environment",
    "torch": "Install PyTorch",
    "runtime": "Install the runtime",
    "detector": "Detector models",
    "check": "Check",
}
DETECTOR_REQUIREMENT = "mediapipe==0.10.14; python_version < '3.13'"
#: Fetches the BlazePose models where no mediapipe wheel has them (3.13) and the YOLOX person detector (the default
#: where it is present); a failed YOLOX download does not fail the install: the offline detector is used instead.
DETECTOR_FETCH = (
    "import sys\n"
    "from mega_runtime.errors import MegaError\n"
    "from mega_runtime.weights import fetch_detector_models\n"
    "from mega_runtime.weights.resolve import resolve_yolox_model\n"
    "if sys.version_info >= (3, 13):\n"
    "    print('detector models:', fetch_detector_models())\n"
    "try:\n"
    "    print('YOLOX person detector:', resolve_yolox_model(honour_offline=False))\n"
    "except MegaError as exc:\n"
    "    print('YOLOX person detector not downloaded (the offline detector will be used):', exc.message)\n"
)
#: Loads the runtime and torch in the new environment and prints one JSON line: versions and devices.
CHECK_SCRIPT = (
    "import json, torch, mega_runtime\n"
    "mps = getattr(torch.backends, 'mps', None)\n"
    "info = {'runtime': mega_runtime.__version__, 'torch': torch.__version__,\n"
    "        'cuda': torch.cuda.is_available(), 'mps': bool(mps and mps.is_available())}\n"
    "info['cuda_device'] = torch.cuda.get_device_name(0) if info['cuda'] else None\n"
    f"print({CHECK_PREFIX!r} + json.dumps(info))\n"
)


def env_python(env_dir: Path, platform: str) -> Path:
    """The interpreter of a virtual environment on ``platform`` (``sys.platform``)."""
    return env_dir / ("Scripts/python.exe" if platform == "win32" else "bin/python")


def torch_requirement(runtime_source: Path) -> str:
    """The runtime's torch requirement (``torch==2.13.0``) from its ``pyproject.toml``."""
    pyproject = runtime_source / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise torch_builds.InstallerError(f"cannot read {pyproject}: {exc}; reinstall the extension") from exc
    for requirement in data.get("project", {}).get("dependencies", []):
        if re.match(r"torch\s*($|[=<>!~;\[])", requirement):
            return str(requirement)
    raise torch_builds.InstallerError(f"{pyproject} lists no torch dependency; reinstall the extension")


def incomplete_marker(env_dir: Path) -> Path:
    """The file beside ``env_dir`` that marks an unfinished install."""
    return env_dir.with_name(env_dir.name + INCOMPLETE_SUFFIX)


def env_state(env_dir: Path, platform: str) -> str:
    """``missing``, ``incomplete`` (an install was cancelled or failed half-way) or ``ready``."""
    if incomplete_marker(env_dir).exists():
        return "incomplete"
    return "ready" if env_python(env_dir, platform).is_file() else "missing"


@dataclass(frozen=True)
class Step:
    """One named step of an install: a command, its share of the progress, and whether pip prints progress."""

    key: str
    title: str
    command: list[str]
    weight: float
    pip: bool = False
    expected_mb: float = 0.0


@dataclass(frozen=True)
class InstallPlan:
    env_dir: Path
    build: torch_builds.TorchBuild
    steps: list[Step]
    action: str  # "create", "recreate", "repair"
    needed_bytes: int


def estimate_disk_bytes(build: torch_builds.TorchBuild, platform: str) -> int:
    """Bytes an install needs (downloads kept in pip's cache plus the installed files, with head room)."""
    key = "default-macos" if build.kind == "default" and platform == "darwin" else build.kind
    download, installed = TORCH_SIZES_MB[key]
    total_mb = (download + installed + OTHER_SIZES_MB[0] + OTHER_SIZES_MB[1]) * DISK_MARGIN
    return int(total_mb * 1_000_000)


def check_disk_space(
    env_dir: Path, needed_bytes: int, disk_usage: Callable[[Path], shutil._ntuple_diskusage] = shutil.disk_usage
) -> int:
    """Free bytes where ``env_dir`` goes; raises :class:`~mega_blender.torch_builds.InstallerError` when fewer
    than ``needed_bytes``."""
    probe = env_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = disk_usage(probe).free
    if free < needed_bytes:
        raise torch_builds.InstallerError(
            f"not enough disk space for the runtime: it needs about {needed_bytes / 1e9:.1f} GB and {probe} has "
            f"{free / 1e9:.1f} GB free; free some space, or choose the CPU build (smaller), then Install again"
        )
    return free


def plan_install(
    base_python: str,
    env_dir: Path,
    runtime_source: Path,
    build: torch_builds.TorchBuild,
    platform: str,
    action: str = "auto",
) -> InstallPlan:
    """The steps that create (or repair) the environment and install the runtime with ``build``'s torch.

    ``action``: ``auto`` (create when missing, recreate a half-made one, repair a ready one), ``repair`` (re-run
    into the existing environment, upgrading the runtime), ``recreate`` (start from an empty environment).
    """
    state = env_state(env_dir, platform)
    if action == "auto":
        action = {"missing": "create", "incomplete": "recreate", "ready": "repair"}[state]
    elif action == "repair" and state != "ready":
        action = "recreate" if state == "incomplete" else "create"
    if action not in ("create", "recreate", "repair"):
        raise torch_builds.InstallerError(f"unknown install action '{action}': use auto, repair or recreate")
    python = str(env_python(env_dir, platform))
    index = ["--extra-index-url", build.index_url] if build.index_url else []
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "raw"]
    torch_mb = TORCH_SIZES_MB["default-macos" if platform == "darwin" and build.kind == "default" else build.kind][0]
    upgrade_pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip>=24.1"]
    # pip ≥ 24.1 prints "Progress N of M" with --progress-bar raw; a venv's bundled pip may be older, so upgrade it
    env_weight = STEP_WEIGHTS["environment"]
    if action == "repair":
        steps = [Step("environment", STEP_TITLES["environment"] + " (pip)", upgrade_pip, env_weight)]
    else:
        venv = [base_python, "-m", "venv", *(["--clear"] if action == "recreate" else []), str(env_dir)]
        steps = [
            Step("environment", STEP_TITLES["environment"], venv, env_weight / 2),
            Step("environment", STEP_TITLES["environment"] + " (pip)", upgrade_pip, env_weight / 2),
        ]
    steps += [
        Step(
            "torch",
            STEP_TITLES["torch"] + f" ({build.label})",
            [*pip, *index, torch_requirement(runtime_source)],
            STEP_WEIGHTS["torch"],
            pip=True,
            expected_mb=torch_mb,
        ),
        Step(
            "runtime",
            STEP_TITLES["runtime"],
            [*pip, *index, *(["--upgrade"] if action == "repair" else []), str(runtime_source)],
            STEP_WEIGHTS["runtime"],
            pip=True,
            expected_mb=OTHER_SIZES_MB[0],
        ),
        Step(
            "detector",
            STEP_TITLES["detector"],
            [*pip, "--no-deps", DETECTOR_REQUIREMENT],
            STEP_WEIGHTS["detector"] * 0.6,
            pip=True,
            expected_mb=35,
        ),
        Step(
            "detector",
            STEP_TITLES["detector"] + " (fetch)",
            [python, "-c", DETECTOR_FETCH],
            STEP_WEIGHTS["detector"] * 0.4,
        ),
        Step("check", STEP_TITLES["check"], [python, "-c", CHECK_SCRIPT], STEP_WEIGHTS["check"]),
    ]
    return InstallPlan(env_dir, build, steps, action, estimate_disk_bytes(build, platform))


def describe_check(info: dict[str, object]) -> str:
    """One line for the preferences from the check step's output."""
    if info.get("cuda"):
        device = f"CUDA GPU {info.get('cuda_device') or ''}".rstrip()
    elif info.get("mps"):
        device = "Apple GPU (MPS)"
    else:
        device = "CPU only"
    return f"runtime {info.get('runtime', '?')}, torch {info.get('torch', '?')}: {device}"


def read_install_record(env_dir: Path) -> dict[str, object] | None:
    """What the last finished install wrote into ``env_dir`` (build, check), or None."""
    try:
        data = json.loads((env_dir / INSTALL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


#: Seconds a non-pip step takes to reach half of its share (its fraction creeps towards 90 % meanwhile).
CREEP_HALF_LIFE_S = 10.0
#: Seconds cancel waits for a terminated process before killing it.
CANCEL_WAIT_S = 5.0


@dataclass
class InstallJob:
    """Runs an install's steps one after another in child processes; poll it from the main thread.

    Output lines are read by a thread into a queue, so :meth:`poll` never blocks. With ``env_dir``, the
    incomplete-marker beside it exists from the first step until the last has succeeded, and the check's output
    is recorded in the environment (:func:`read_install_record`).
    """

    steps: list[Step]
    env_dir: Path | None = None
    build: torch_builds.TorchBuild | None = None
    clock: Callable[[], float] = time.monotonic
    index: int = 0
    status: str = "waiting"
    error: str | None = None
    done: bool = False
    check: dict[str, object] | None = None
    tail: list[str] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)
    _pip: pip_progress.PipProgress | None = None
    _started: float = 0.0
    _fraction: float = 0.0

    @classmethod
    def from_commands(cls, commands: Sequence[Sequence[str]]) -> InstallJob:
        """A job of plain commands with equal weights (no pip parsing, no marker)."""
        weight = 1.0 / max(len(commands), 1)
        return cls([Step(f"step{i}", f"Step {i + 1}", list(c), weight) for i, c in enumerate(commands)])

    @property
    def progress(self) -> float:
        """Overall fraction (0…1): finished steps plus the running step's share; never goes back."""
        total = sum(step.weight for step in self.steps) or 1.0
        finished = sum(step.weight for step in self.steps[: self.index])
        if self.done and self.error is None:
            return 1.0
        if self._process is not None and self.index < len(self.steps):
            finished += self.steps[self.index].weight * self._step_fraction()
        self._fraction = max(self._fraction, min(finished / total, 1.0))
        return self._fraction

    def _step_fraction(self) -> float:
        if self._pip is not None and (self._pip.collected or self._pip.seen_bytes or self._pip.installing):
            return self._pip.fraction
        elapsed = max(self.clock() - self._started, 0.0)
        return 0.9 * (1 - 0.5 ** (elapsed / CREEP_HALF_LIFE_S))

    def _start(self) -> None:
        step = self.steps[self.index]
        if self.env_dir is not None:
            marker = incomplete_marker(self.env_dir)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("an install of the MEGA runtime did not finish; Install again repairs it\n")
        self._pip = pip_progress.PipProgress(int(step.expected_mb * 1e6)) if step.pip else None
        self._started = self.clock()
        self.tail = []
        self.status = f"{self.index + 1}/{len(self.steps)} {step.title}…"
        log.info("install step %s: %s", step.title, shlex.join(step.command[:6]))
        options: dict[str, object] = {}
        if os.name == "nt":
            options["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            options["start_new_session"] = True  # cancel ends pip and the build processes it starts
        try:
            self._process = subprocess.Popen(
                step.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1"},
                **options,  # type: ignore[call-overload]
            )
        except OSError as exc:
            self._finish(f"cannot run {step.command[0]}: {exc}; check that it exists and can be executed")
            return
        threading.Thread(target=self._read, args=(self._process, self._lines), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        if process.stdout is None:
            return
        for line in process.stdout:
            lines.put(line.rstrip())

    def _finish(self, error: str | None) -> None:
        self.error = error
        self.done = True
        self._process = None
        self.status = f"failed: {error}" if error else "done"
        if error == "cancelled":
            self.status = "cancelled: the next Install recreates the unfinished environment"
        if error is None and self.env_dir is not None:
            record = {"build": self.build.__dict__ if self.build else None, "check": self.check}
            try:
                (self.env_dir / INSTALL_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
            except OSError as exc:
                log.warning("cannot record the install in %s: %s", self.env_dir, exc)
            incomplete_marker(self.env_dir).unlink(missing_ok=True)
            if self.check:
                self.status = "done: " + describe_check(self.check)

    def _drain(self) -> None:
        step = self.steps[self.index]
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if not line:
                continue
            if line.startswith(CHECK_PREFIX):
                try:
                    self.check = json.loads(line[len(CHECK_PREFIX) :])
                except ValueError:
                    log.warning("unreadable check output: %s", line)
            if self._pip is not None:
                self._pip.feed(line)
            if not pip_progress.RAW_PROGRESS.match(line):
                self.tail = [*self.tail[-19:], line]
            detail = self._pip.message if self._pip is not None else line[:100]
            self.status = f"{self.index + 1}/{len(self.steps)} {step.title}: {detail}"

    def poll(self) -> bool:
        """Advance the job; returns True while it is still running."""
        if self.done:
            return False
        if self._process is None:
            self._start()
            return not self.done
        self._drain()
        code = self._process.poll()
        if code is None:
            return True
        self._drain()
        if code != 0:
            last = self.tail[-1] if self.tail else ""
            step = self.steps[self.index]
            self._finish(f"{step.title} failed (exit status {code}): {last}; see the console, then Install again")
            return False
        self.index += 1
        self._process = None
        if self.index == len(self.steps):
            self._finish(None)
            return False
        self._start()
        return not self.done

    def cancel(self) -> None:
        """Stop the running step and its child processes; the environment stays marked incomplete, and the next
        install recreates it."""
        process = self._process
        if process is not None and process.poll() is None:
            _terminate_tree(process)
        self._finish("cancelled")


def _terminate_tree(process: subprocess.Popen[str]) -> None:
    """Terminate a process started in its own session / process group, then kill it if it lingers."""
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
        else:
            os.killpg(process.pid, signal.SIGTERM)
    except OSError as exc:
        log.info("terminating the install step: %s", exc)
        process.terminate()
    try:
        process.wait(timeout=CANCEL_WAIT_S)
    except subprocess.TimeoutExpired:
        if os.name != "nt":
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError as exc:
                log.info("killing the install step: %s", exc)
        process.kill()
        process.wait(timeout=CANCEL_WAIT_S)
