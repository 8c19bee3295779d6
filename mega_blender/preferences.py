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

The install's logic (the named steps, the disk check, cancelling) is in the pure :mod:`mega_blender.installer`,
with :mod:`mega_blender.torch_builds` (which PyTorch build) and :mod:`mega_blender.pip_progress` (pip's
progress); this module is the bpy glue: it runs an :class:`installer.InstallJob` polled by a ``bpy.app.timers``
function and shows its progress in the preferences. The live link (:mod:`mega_blender.jobs`)
starts the runtime with :func:`runtime_command`.
"""

from __future__ import annotations

import logging
import platform
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import installer, torch_builds
from . import runtime_defaults as defaults
from .installer import InstallJob, InstallPlan
from .torch_builds import InstallerError, TorchBuild

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, OperatorTypeFlagItems

log = logging.getLogger(__name__)

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
    """The Python interpreter of a virtual environment on this platform."""
    return installer.env_python(env_dir, sys.platform)


def bundled_runtime_source() -> Path | None:
    """The runtime source of this add-on's version: ``runtime/`` in an installed extension, else the repository
    root of a development checkout; None when neither is there."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "runtime", here.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "mega_runtime" / "__init__.py").is_file():
            return candidate
    return None


_driver: list[str | None] = []


def nvidia_driver(refresh: bool = False) -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), asked once per session (None without one)."""
    if refresh or not _driver:
        _driver[:] = [torch_builds.detect_nvidia_driver()]
        log.info("NVIDIA driver: %s", _driver[0] or "none found")
    return _driver[0]


def known_nvidia_driver() -> tuple[bool, str | None]:
    """(asked already, the driver version) without running ``nvidia-smi`` (for drawing)."""
    return (bool(_driver), _driver[0] if _driver else None)


def chosen_torch_build(override: str) -> TorchBuild:
    """The PyTorch build for this machine and the preference (``AUTO`` asks ``nvidia-smi`` once); raises
    :class:`InstallerError`."""
    driver = nvidia_driver() if override == "AUTO" and sys.platform != "darwin" else None
    return torch_builds.choose_torch_build(sys.platform, platform.machine(), driver, override)


def plan_for(context: bpy.types.Context, action: str) -> InstallPlan:
    """The install plan for the preferences' PyTorch build and ``action`` (``auto``, ``repair``, ``recreate``);
    raises :class:`InstallerError` with a message that names the fix."""
    source = bundled_runtime_source()
    if source is None:
        raise InstallerError("the runtime's source is not bundled with this add-on: reinstall the extension")
    preferences = get_preferences(context)
    build = chosen_torch_build(preferences.torch_build if preferences is not None else "AUTO")
    return installer.plan_install(sys.executable, private_env_dir(), source, build, sys.platform, action)


def check_free_space(plan: InstallPlan) -> int:
    """Free bytes for the environment; raises :class:`InstallerError` when there is not enough for ``plan``."""
    return installer.check_disk_space(plan.env_dir, plan.needed_bytes)


def online_access() -> bool:
    """Blender's *Allow Online Access* (a function, so tests can stand in for it)."""
    return bool(bpy.app.online_access)


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
    torch_build: EnumProperty(
        name="PyTorch Build",
        description="Which PyTorch the private environment installs",
        items=(
            ("AUTO", "Automatic", "CUDA matching the NVIDIA driver, the Apple GPU build on macOS, else CPU"),
            ("DEFAULT", "PyPI default", "PyTorch's default build from PyPI"),
            ("CPU", "CPU only", "The small CPU-only build (download.pytorch.org/whl/cpu)"),
            ("cu130", "CUDA 13.0", "NVIDIA driver 580 or newer"),
            ("cu128", "CUDA 12.8", "NVIDIA driver 570 or newer"),
            ("cu126", "CUDA 12.6", "NVIDIA driver 525.60 (Windows 527.41) or newer"),
        ),
        default="AUTO",
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
    precision: EnumProperty(
        name="Precision",
        items=(
            ("fp32", "Exact (fp32)", "Full float32: reproducible, the reference results"),
            ("bf16", "bfloat16", "Faster on GPUs and recent CPUs; hypotheses differ slightly from fp32"),
            ("int8", "int8 (CPU)", "Quantised transformer layers on the CPU; hypotheses differ slightly"),
            ("auto", "Automatic", "The fastest mode this machine supports natively"),
        ),
        default=defaults.PRECISION,
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
    fast_kernels: BoolProperty(
        name="Fast kernels",
        description="Start the runtime with --compile: the backbone compiled (on a CPU the first reconstruction of "
        "each model on this computer builds it for a minute or more, later ones load it), oneDNN products on "
        "Intel/AMD CPUs, CUDA graphs on NVIDIA GPUs. The same tokens "
        "as exact fp32, not the same bits. Takes effect when the runtime (re)starts",
        default=False,
    )
    score_steps: IntProperty(
        name="Scoring steps",
        description="How finely each hypothesis is scored (the order of the shape keys): 2 costs one more model pass; "
        "1 is free but coarser, and the deterministic body then always scores highest",
        default=defaults.SCORE_STEPS,
        min=1,
        max=defaults.MAX_SCORE_STEPS,
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
            draw_private_environment(self, box, context)
            if not online_access():
                box.label(text="Online access is off (Preferences › System › Network)", icon="ERROR")
        box = layout.box()
        box.label(text="Reconstruction", icon="OUTLINER_OB_ARMATURE")
        box.prop(self, "weights_dir")
        box.prop(self, "results_dir")
        box.prop(self, "smpl_model_path")
        row = box.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        row.prop(self, "model")
        row = box.row()
        row.prop(self, "num_hypotheses")
        row.prop(self, "num_steps")
        row.prop(self, "seed")
        row.prop(self, "score_steps")
        box.prop(self, "fast_kernels")


ENV_STATE_TEXT = {
    "ready": "Ready",
    "missing": "Not installed",
    "incomplete": "Unfinished install (Install recreates it)",
}


def build_preview(override: str) -> str:
    """What the PyTorch preference means on this machine, without running ``nvidia-smi`` in a redraw."""
    asked, driver = known_nvidia_driver()
    if override == "AUTO" and not asked and sys.platform != "darwin":
        return "Automatic: decided from the NVIDIA driver when you press Install"
    try:
        build = torch_builds.choose_torch_build(sys.platform, platform.machine(), driver, override)
    except InstallerError as exc:
        return str(exc)
    size = installer.estimate_disk_bytes(build, sys.platform) / 1e9
    return f"{build.label} ({build.reason}); needs about {size:.1f} GB of disk"


def draw_private_environment(
    preferences: MEGA_AddonPreferences, box: bpy.types.UILayout, context: bpy.types.Context
) -> None:
    """The private environment's part of the preferences: state, build, progress, last check, buttons."""
    env_dir = private_env_dir()
    state = installer.env_state(env_dir, sys.platform)
    text = f"{ENV_STATE_TEXT[state]}: {env_dir}"
    if state == "ready":
        box.label(text=text, icon="CHECKMARK")
    elif state == "missing":
        box.label(text=text, icon="INFO")
    else:
        box.label(text=text, icon="ERROR")
    box.prop(preferences, "torch_build")
    box.label(text=build_preview(preferences.torch_build))
    record = installer.read_install_record(env_dir) if state == "ready" else None
    check = record.get("check") if record else None
    if isinstance(check, dict):
        box.label(text="Check: " + installer.describe_check(check), icon="CHECKMARK")
    session = getattr(context.window_manager, "mega", None)
    row = box.row(align=True)
    if session is not None and session.install_running:
        row.progress(factor=session.install_progress, text=session.install_status or "Installing…")
        row.operator("mega.cancel_install", text="", icon="CANCEL")
        return
    if state == "ready":
        row.operator("mega.install_runtime", text="Repair / Update", icon="FILE_REFRESH").action = "REPAIR"
        row.operator("mega.install_runtime", text="Recreate", icon="TRASH").action = "RECREATE"
    else:
        row.operator("mega.install_runtime", icon="IMPORT").action = "AUTO"
    if session is not None and session.install_status:
        box.label(text=session.install_status)


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
    """Create (or repair) a private environment in the add-on's user folder and install the runtime (downloads)"""

    bl_idname = "mega.install_runtime"
    bl_label = "Install Runtime"
    bl_options = NOT_UNDOABLE

    action: EnumProperty(
        name="Action",
        items=(
            ("AUTO", "Install", "Create the environment, or recreate an unfinished one, or repair a ready one"),
            ("REPAIR", "Repair / Update", "Re-run the install into the existing environment, upgrading the runtime"),
            ("RECREATE", "Recreate", "Empty the environment and install everything again"),
        ),
        default="AUTO",
    )

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        global _job
        if not online_access():
            self.report({"ERROR"}, ONLINE_ACCESS_OFF)
            return {"CANCELLED"}
        if _job is not None and not _job.done:
            self.report({"WARNING"}, "An install is already running: wait for it, or cancel it first")
            return {"CANCELLED"}
        try:
            plan = plan_for(context, self.action.lower())
            free = check_free_space(plan)
        except InstallerError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _job = InstallJob(plan.steps, env_dir=plan.env_dir, build=plan.build)
        bpy.app.timers.register(_poll_install, first_interval=0.0)
        self.report(
            {"INFO"},
            f"{plan.action.capitalize()} the MEGA runtime in {plan.env_dir}: PyTorch {plan.build.label} "
            f"({plan.build.reason}); needs about {plan.needed_bytes / 1e9:.1f} GB, {free / 1e9:.1f} GB free",
        )
        return {"FINISHED"}


class MEGA_OT_cancel_install(bpy.types.Operator):
    """Stop the running private-environment install (the next Install recreates the unfinished environment)"""

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
