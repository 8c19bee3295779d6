# mypy: disable-error-code="valid-type"
"""Add-on preferences: how to run the MEGA runtime, and the defaults a reconstruction uses.

The runtime (PyTorch) never runs inside Blender's Python. It runs as a separate process started by one of:

* ``INTERPRETER`` — a Python interpreter the user already has, with the runtime installed
  (``<python> -m mega_runtime``);
* ``PRIVATE`` — a private virtual environment under the extension's user folder
  (``bpy.utils.extension_path_user(__package__, path="venv")``), created by the *Install* button, which
  pip-installs the runtime of exactly this add-on's version (bundled in the extension under ``runtime/``, or the
  repository root in a development checkout) — only when Blender's *Allow Online Access* is on;
* ``COMMAND`` — any command line (for example one that runs the runtime on another machine over ssh).

The install runs in a background process; a ``bpy.app.timers`` function polls it and shows progress in the
preferences. The live link (:mod:`mega_blender.jobs`) starts the runtime with :func:`runtime_command`.
"""

from __future__ import annotations

import logging
import queue
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import runtime_defaults as defaults

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, OperatorTypeFlagItems

log = logging.getLogger(__name__)

#: Extra pip arguments per device: a CPU-only PyTorch keeps the private environment small.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: The person detector's models: from the mediapipe wheel, installed without its (large, unused) dependencies, where
#: one with them exists (Python 3.11/3.12; pip skips the line elsewhere), else downloaded into the runtime's cache
#: (SHA-256 checked) by :data:`DETECTOR_FETCH` (docs/detection.md).
DETECTOR_REQUIREMENT = "mediapipe==0.10.14; python_version < '3.13'"
DETECTOR_FETCH = (
    "import sys\n"
    "if sys.version_info >= (3, 13):\n"
    "    from mega_runtime.weights import fetch_detector_models\n"
    "    print('detector models:', fetch_detector_models())\n"
)
INSTALL_POLL_S = 0.5
#: ``bl_options`` of the install operators (they change no data, so no undo step).
NOT_UNDOABLE: set[OperatorTypeFlagItems] = {"REGISTER"}
ONLINE_ACCESS_OFF = (
    "Online access is off, so the add-on may not download the runtime's dependencies. Turn on Edit › "
    "Preferences › System › Network › Allow Online Access (or start Blender with --online-mode), then press "
    "Install again — or choose 'Python interpreter' and point it at a Python that has mega-runtime installed"
)


def addon_user_dir(*parts: str) -> Path:
    """A writable folder of this add-on (created): the extension's user folder, or for a legacy add-on folder
    ``<user scripts>/mega_blender``."""
    try:
        base = Path(bpy.utils.extension_path_user(__package__ or "mega_blender", create=True))
    except ValueError:  # not installed as an extension (legacy add-on folder, or a package on sys.path)
        base = Path(bpy.utils.user_resource("SCRIPTS", path="mega_blender", create=True))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def private_env_dir() -> Path:
    """The private environment's folder (``venv`` in the add-on's user folder)."""
    return addon_user_dir("venv")


def env_python(env_dir: Path) -> Path:
    """The Python interpreter of a virtual environment."""
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def bundled_runtime_source() -> Path | None:
    """The runtime source of this add-on's version: ``runtime/`` in an installed extension, else the repository
    root of a development checkout; None when neither is there."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "runtime", here.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "mega_runtime" / "__init__.py").is_file():
            return candidate
    return None


def install_commands(base_python: str, env_dir: Path, runtime_source: Path, device: str) -> list[list[str]]:
    """The commands that create the private environment and install the runtime into it, in order."""
    python = str(env_python(env_dir))
    torch_index = ["--extra-index-url", CPU_TORCH_INDEX] if device == "CPU" else []
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    return [
        [base_python, "-m", "venv", str(env_dir)],
        [*pip, *torch_index, str(runtime_source)],
        [*pip, "--no-deps", DETECTOR_REQUIREMENT],
        [python, "-c", DETECTOR_FETCH],
    ]


class InstallJob:
    """Runs a list of commands one after another in a background process; poll it from the main thread.

    Output lines are read by a thread into a queue, so :meth:`poll` never blocks Blender's UI.
    """

    def __init__(self, commands: Sequence[Sequence[str]]) -> None:
        self.commands = [list(c) for c in commands]
        self.step = 0
        self.status = "waiting"
        self.error: str | None = None
        self.done = False
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._tail: list[str] = []

    @property
    def progress(self) -> float:
        """Fraction of the commands finished (0…1)."""
        return self.step / max(len(self.commands), 1)

    def _start(self) -> None:
        command = self.commands[self.step]
        self.status = f"step {self.step + 1}/{len(self.commands)}: {shlex.join(command[:4])} …"
        try:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
            )
        except OSError as exc:
            self._finish(f"cannot run {command[0]}: {exc}")
            return
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        if process.stdout is None:
            return
        for line in process.stdout:
            self._lines.put(line.rstrip())

    def _finish(self, error: str | None) -> None:
        self.error = error
        self.done = True
        self.status = f"failed: {error}" if error else "done"

    def poll(self) -> bool:
        """Advance the job; returns True while it is still running."""
        if self.done:
            return False
        if self._process is None:
            self._start()
            return not self.done
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line:
                self._tail = [*self._tail[-19:], line]
                self.status = f"step {self.step + 1}/{len(self.commands)}: {line[:120]}"
        code = self._process.poll()
        if code is None:
            return True
        if code != 0:
            last = self._tail[-1] if self._tail else ""
            self._finish(f"{shlex.join(self.commands[self.step][:4])} … exited with {code}: {last}")
            return False
        self.step += 1
        self._process = None
        self._tail = []
        if self.step == len(self.commands):
            self._finish(None)
            return False
        self._start()
        return not self.done

    def cancel(self) -> None:
        """Stop the running command (the environment may be left half-installed; Install again repairs it)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._finish("cancelled")


class MEGA_AddonPreferences(bpy.types.AddonPreferences):
    """Runtime and reconstruction settings of the MEGA add-on."""

    bl_idname = __package__ or "mega_blender"

    runtime_mode: EnumProperty(
        name="Run the Runtime With",
        items=(
            ("INTERPRETER", "Python interpreter", "A Python that has mega-runtime and its dependencies installed"),
            ("PRIVATE", "Private environment", "An environment in the add-on's user folder, set up by Install"),
            ("COMMAND", "Custom command", "Any command line that starts the runtime (e.g. over ssh on a GPU host)"),
        ),
        default="PRIVATE",
    )
    python_path: StringProperty(
        name="Python Interpreter",
        description="Python executable with mega-runtime installed (python -m mega_runtime must work)",
        subtype="FILE_PATH",
        default="",
    )
    custom_command: StringProperty(
        name="Command",
        description="Command line that starts the runtime, e.g. 'ssh gpu-host mega-runtime' (split like a shell)",
        default="",
    )
    weights_dir: StringProperty(
        name="Weights Folder",
        description="Folder with the checkpoints in the official layout; empty = the runtime's cache",
        subtype="DIR_PATH",
        default="",
    )
    results_dir: StringProperty(
        name="Results Folder",
        description="Where Reconstruct keeps result files; empty = 'MEGA results' beside the saved .blend "
        "(or the add-on's user folder for an unsaved file)",
        subtype="DIR_PATH",
        default="",
    )
    smpl_model_path: StringProperty(
        name="SMPL Model",
        description="Your SMPL model file (.pkl or .npz, from smpl.is.tue.mpg.de; never bundled): when set, "
        "Reconstruct also fits SMPL and builds an armature per person",
        subtype="FILE_PATH",
        default="",
    )
    device: EnumProperty(
        name="Device",
        items=(
            ("AUTO", "Automatic", "A GPU when one is available, else the CPU"),
            ("CPU", "CPU", "Run on the CPU"),
            ("CUDA", "CUDA", "Run on an NVIDIA GPU"),
            ("MPS", "Apple Metal", "Run on an Apple GPU"),
        ),
        default=defaults.DEVICE.upper(),
    )
    model: EnumProperty(
        name="Model",
        items=(
            ("hrnet", "HRNet", "MEGA with the HRNet backbone (the runtime's default)"),
            ("resnet", "ResNet", "MEGA with the ResNet backbone"),
            ("vit", "ViT", "MEGA with the ViT backbone"),
        ),
        default=defaults.DEFAULT_MODEL,
    )
    num_hypotheses: IntProperty(
        name="Hypotheses",
        description="Hypotheses per person, including the deterministic one (the Basis)",
        default=defaults.NUM_HYPOTHESES,
        min=1,
        soft_max=32,
        max=256,
    )
    num_steps: IntProperty(
        name="Steps", description="Sampling steps (official: 5)", default=defaults.SAMPLING_STEPS, min=1, max=64
    )
    seed: IntProperty(
        name="Seed", description="Seed of the sampler (same seed, same hypotheses)", default=defaults.SEED, min=0
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        box = layout.box()
        box.label(text="Runtime", icon="CONSOLE")
        box.prop(self, "runtime_mode", expand=True)
        if self.runtime_mode == "INTERPRETER":
            box.prop(self, "python_path")
        elif self.runtime_mode == "COMMAND":
            box.prop(self, "custom_command")
        else:
            env_dir = private_env_dir()
            ready = env_python(env_dir).is_file()
            box.label(text=f"{'Ready' if ready else 'Not installed'}: {env_dir}", icon="CHECKMARK" if ready else "INFO")
            session = getattr(context.window_manager, "mega", None)
            row = box.row(align=True)
            if session is not None and session.install_running:
                row.progress(factor=session.install_progress, text=session.install_status or "Installing…")
                row.operator("mega.cancel_install", text="", icon="CANCEL")
            else:
                row.operator("mega.install_runtime", icon="IMPORT")
                if session is not None and session.install_status:
                    box.label(text=session.install_status)
            if not bpy.app.online_access:
                box.label(text="Online access is off (Preferences › System › Network)", icon="ERROR")
        box = layout.box()
        box.label(text="Reconstruction", icon="OUTLINER_OB_ARMATURE")
        box.prop(self, "weights_dir")
        box.prop(self, "results_dir")
        box.prop(self, "smpl_model_path")
        row = box.row()
        row.prop(self, "device")
        row.prop(self, "model")
        row = box.row()
        row.prop(self, "num_hypotheses")
        row.prop(self, "num_steps")
        row.prop(self, "seed")


def get_preferences(context: bpy.types.Context) -> MEGA_AddonPreferences | None:
    """This add-on's preferences, or None when it is not enabled (e.g. scene building from a script)."""
    preferences = context.preferences
    addon = preferences.addons.get(MEGA_AddonPreferences.bl_idname) if preferences is not None else None
    found = addon.preferences if addon is not None else None
    return found if isinstance(found, MEGA_AddonPreferences) else None


def runtime_command(preferences: MEGA_AddonPreferences) -> list[str]:
    """The command line that starts the runtime, per the preferences (subcommands are appended by the caller).

    Raises ValueError naming what to set when the preferences do not name a runnable runtime.
    """
    if preferences.runtime_mode == "COMMAND":
        command = shlex.split(preferences.custom_command)
        if not command:
            raise ValueError("the custom runtime command is empty: set it in the add-on's preferences")
        return command
    if preferences.runtime_mode == "INTERPRETER":
        python = bpy.path.abspath(preferences.python_path) if preferences.python_path else ""
        if not python or not Path(python).is_file():
            raise ValueError(f"the Python interpreter '{python}' does not exist: set it in the add-on's preferences")
        return [python, "-m", "mega_runtime"]
    env_interpreter = env_python(private_env_dir())
    if not env_interpreter.is_file():
        raise ValueError("the private environment is not installed: press Install in the add-on's preferences")
    return [str(env_interpreter), "-m", "mega_runtime"]


_job: InstallJob | None = None


def _poll_install() -> float | None:
    """``bpy.app.timers`` callback: advance the install job and mirror its state into ``WindowManager.mega``."""
    job = _job
    if job is None:
        return None
    running = job.poll()
    wm = bpy.context.window_manager
    session = getattr(wm, "mega", None) if wm is not None else None
    if session is not None:
        session.install_running = running
        session.install_status = job.status
        session.install_progress = job.progress
    if wm is not None:
        for window in wm.windows:
            for area in window.screen.areas:
                if area.type == "PREFERENCES":
                    area.tag_redraw()
    if not running:
        log.info("private environment install: %s", job.status)
        return None
    return INSTALL_POLL_S


class MEGA_OT_install_runtime(bpy.types.Operator):
    """Create a private environment in the add-on's user folder and install the runtime into it (downloads)"""

    bl_idname = "mega.install_runtime"
    bl_label = "Install Runtime"
    bl_options = NOT_UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        global _job
        if not bpy.app.online_access:
            self.report({"ERROR"}, ONLINE_ACCESS_OFF)
            return {"CANCELLED"}
        if _job is not None and not _job.done:
            self.report({"WARNING"}, "An install is already running")
            return {"CANCELLED"}
        source = bundled_runtime_source()
        if source is None:
            self.report({"ERROR"}, "The runtime's source is not bundled with this add-on; reinstall the extension")
            return {"CANCELLED"}
        preferences = get_preferences(context)
        device = preferences.device if preferences is not None else "AUTO"
        _job = InstallJob(install_commands(sys.executable, private_env_dir(), source, device))
        bpy.app.timers.register(_poll_install, first_interval=0.0)
        self.report({"INFO"}, f"Installing the MEGA runtime into {private_env_dir()}")
        return {"FINISHED"}


class MEGA_OT_cancel_install(bpy.types.Operator):
    """Stop the running private-environment install"""

    bl_idname = "mega.cancel_install"
    bl_label = "Cancel Install"
    bl_options = NOT_UNDOABLE

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        if _job is None or _job.done:
            return {"CANCELLED"}
        _job.cancel()
        return {"FINISHED"}


CLASSES = (MEGA_AddonPreferences, MEGA_OT_install_runtime, MEGA_OT_cancel_install)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    if _job is not None and not _job.done:
        _job.cancel()
    if bpy.app.timers.is_registered(_poll_install):
        bpy.app.timers.unregister(_poll_install)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
