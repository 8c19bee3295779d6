"""Preferences (how to run the runtime, the private-environment install) and the sidebar's registration."""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON, REPO_ROOT

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

import mega_blender  # noqa: E402
from mega_blender import installer, panels, preferences, torch_builds  # noqa: E402


def _prefs():
    found = preferences.get_preferences(bpy.context)
    assert found is not None
    return found


def test_ok_preferences_have_the_runtime_and_reconstruction_settings(blender):
    prefs = _prefs()
    assert preferences.MEGA_AddonPreferences.bl_idname == "mega_blender"
    assert bpy.context.preferences.addons["mega_blender"].preferences == prefs
    assert prefs.runtime_mode == "PRIVATE"
    assert (prefs.device, prefs.model, prefs.num_hypotheses, prefs.num_steps, prefs.seed) == ("AUTO", "hrnet", 8, 5, 0)
    assert prefs.weights_dir == "" and prefs.python_path == "" and prefs.custom_command == ""


def test_ok_runtime_command_follows_the_mode(blender, tmp_path):
    prefs = _prefs()
    prefs.runtime_mode = "COMMAND"
    prefs.custom_command = "ssh gpu-host 'mega-runtime' --device cuda"
    assert preferences.runtime_command(prefs) == ["ssh", "gpu-host", "mega-runtime", "--device", "cuda"]
    prefs.runtime_mode = "INTERPRETER"
    prefs.python_path = sys.executable
    assert preferences.runtime_command(prefs) == [sys.executable, "-m", "mega_runtime"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [("COMMAND", "custom runtime command is empty"), ("INTERPRETER", "does not exist"), ("PRIVATE", "not installed")],
)
def test_ng_runtime_command_names_what_to_set(blender, mode, message):
    prefs = _prefs()
    prefs.runtime_mode = mode
    prefs.python_path = "/no/such/python"
    with pytest.raises(ValueError, match=message):
        preferences.runtime_command(prefs)


def test_ng_install_refuses_when_online_access_is_off(blender):
    assert not bpy.app.online_access  # the bpy module starts offline
    with pytest.raises(RuntimeError, match="Online access is off") as error:
        bpy.ops.mega.install_runtime()
    assert "Allow Online Access" in str(error.value)
    assert preferences._job is None
    assert not bpy.app.timers.is_registered(preferences._poll_install)


def test_ok_user_folder_falls_back_for_a_legacy_add_on(blender):
    folder = preferences.private_env_dir()
    assert folder.is_dir()
    assert folder.is_relative_to(Path(bpy.utils.resource_path("USER")))  # inside BLENDER_USER_RESOURCES
    assert folder.parts[-2:] == ("mega_blender", "venv")


def test_ok_install_plan_uses_the_bundled_runtime_and_the_preferred_build(blender):
    source = preferences.bundled_runtime_source()
    assert source == REPO_ROOT  # a development checkout: the repository root
    prefs = _prefs()
    assert prefs.torch_build == "AUTO"
    prefs.torch_build = "CPU"
    plan = preferences.plan_for(bpy.context, "auto")
    env = preferences.private_env_dir()
    assert plan.env_dir == env and plan.action == "create" and plan.build.label == "CPU"
    assert plan.steps[0].command == [sys.executable, "-m", "venv", str(env)]
    torch_step = next(step for step in plan.steps if step.key == "torch")
    assert torch_step.command[:4] == [str(env / "bin" / "python"), "-m", "pip", "install"]
    assert torch_builds.TORCH_INDEX_BASE + "cpu" in torch_step.command
    assert next(step for step in plan.steps if step.key == "runtime").command[-1] == str(source)
    assert [step.title for step in plan.steps][-1] == "Check"


def _fake_plan(env: Path, steps: list, needed_bytes: int = 1) -> installer.InstallPlan:
    build = torch_builds.choose_torch_build("linux", "x86_64", None, "CPU")
    return installer.InstallPlan(env, build, steps, "create", needed_bytes)


def _py_step(key: str, code: str, weight: float, pip: bool = False) -> installer.Step:
    return installer.Step(key, installer.STEP_TITLES[key], [sys.executable, "-c", code], weight, pip=pip)


def _poll_until_done(timeout_s: float = 30.0) -> list[float]:
    """Call the timer function as Blender would, until it unregisters itself; bounded."""
    session = bpy.context.window_manager.mega
    seen = []
    deadline = time.monotonic() + timeout_s
    while preferences._poll_install() is not None:
        seen.append(session.install_progress)
        assert time.monotonic() < deadline, session.install_status
        time.sleep(0.01)
    return seen


@pytest.fixture
def fake_install(blender, monkeypatch, tmp_path):
    """The install operator with online access on and a plan of fake commands (nothing downloads)."""
    monkeypatch.setattr(preferences, "online_access", lambda: True)
    monkeypatch.setattr(preferences, "_job", None)
    plans: list = []
    monkeypatch.setattr(preferences, "plan_for", lambda context, action: plans.pop(0))
    yield plans, tmp_path / "venv"
    if preferences._job is not None and not preferences._job.done:
        preferences._job.cancel()
    if bpy.app.timers.is_registered(preferences._poll_install):
        bpy.app.timers.unregister(preferences._poll_install)


def test_ok_install_operator_runs_the_steps_and_shows_the_check(fake_install):
    plans, env = fake_install
    pip_lines = "Collecting torch|  Downloading torch-2.13.0-cp311.whl (100.0 MB)|Progress 0 of 100000000|"
    pip_lines += "Progress 50000000 of 100000000|Progress 100000000 of 100000000|Installing collected packages: torch"
    check = 'print(\'MEGA-CHECK {"runtime": "0.1.0", "torch": "2.13.0+cpu", "cuda": false, "mps": false}\')'
    plans.append(
        _fake_plan(
            env,
            [
                _py_step("environment", f"import os; os.makedirs({str(env / 'bin')!r})", 0.1),
                _py_step("torch", f"for l in {pip_lines!r}.split('|'): print(l, flush=True)", 0.7, pip=True),
                _py_step("check", f"open({str(env / 'bin' / 'python')!r}, 'w'); {check}", 0.2),
            ],
        )
    )
    assert bpy.ops.mega.install_runtime() == {"FINISHED"}
    assert bpy.app.timers.is_registered(preferences._poll_install)
    progress = _poll_until_done()
    session = bpy.context.window_manager.mega
    assert progress == sorted(progress)
    assert not session.install_running and session.install_progress == pytest.approx(1.0)
    assert session.install_status == "done: runtime 0.1.0, torch 2.13.0+cpu: CPU only"
    assert installer.env_state(env, "linux") == "ready"
    assert installer.read_install_record(env)["check"]["torch"] == "2.13.0+cpu"


def test_ok_install_operator_can_be_cancelled_and_leaves_the_environment_marked(fake_install):
    plans, env = fake_install
    plans.append(
        _fake_plan(
            env,
            [_py_step("torch", "print('Collecting torch', flush=True); import time; time.sleep(60)", 1.0, pip=True)],
        )
    )
    assert bpy.ops.mega.install_runtime() == {"FINISHED"}
    assert preferences._poll_install() is not None  # started
    session = bpy.context.window_manager.mega
    assert session.install_running
    assert bpy.ops.mega.install_runtime() == {"CANCELLED"}  # one at a time
    assert bpy.ops.mega.cancel_install() == {"FINISHED"}
    assert preferences._poll_install() is None
    assert not session.install_running and "cancelled" in session.install_status
    assert installer.env_state(env, "linux") == "incomplete"


def test_ng_install_operator_refuses_without_disk_space(fake_install):
    plans, env = fake_install
    plans.append(_fake_plan(env, [_py_step("check", "pass", 1.0)], needed_bytes=10**18))
    with pytest.raises(RuntimeError, match=r"not enough disk space.*free some space"):
        bpy.ops.mega.install_runtime()
    assert preferences._job is None


def test_ng_install_operator_reports_a_build_the_machine_has_no_wheels_for(fake_install, monkeypatch):
    def refuse(context, action):
        raise torch_builds.InstallerError("there is no CUDA PyTorch for macOS: choose Automatic instead of cu128")

    monkeypatch.setattr(preferences, "plan_for", refuse)
    with pytest.raises(RuntimeError, match="no CUDA PyTorch for macOS"):
        bpy.ops.mega.install_runtime(action="REPAIR")


def test_ok_sidebar_panels_are_registered_in_the_mega_tab(blender):
    for cls in panels.CLASSES[1:]:
        registered = getattr(bpy.types, cls.bl_idname)
        assert registered.bl_category == "MEGA"
        assert registered.bl_space_type == "VIEW_3D" and registered.bl_region_type == "UI"
    assert hasattr(bpy.types, "MEGA_UL_hypotheses")
    assert not panels.MEGA_PT_person.poll(bpy.context)  # no MEGA person is active


def test_ok_file_import_menu_has_the_entry(blender):
    from mega_blender import operators

    draw_funcs = bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    assert operators.menu_import in draw_funcs


def test_ok_operator_ids_and_class_names_carry_the_prefix(blender):
    from mega_blender import operators

    for cls in (*operators.CLASSES, preferences.MEGA_OT_install_runtime, preferences.MEGA_OT_cancel_install):
        assert cls.__name__.startswith("MEGA_OT_") and cls.bl_idname.startswith("mega.")
    for cls in panels.CLASSES:
        assert cls.__name__.startswith(("MEGA_PT_", "MEGA_UL_"))


def test_ok_unregister_removes_everything(blender):
    import addon_utils

    addon_utils.disable("mega_blender")
    assert not hasattr(bpy.types, "MEGA_PT_main")
    assert not hasattr(bpy.types.Scene, "mega")
    assert mega_blender._cli_handle is None
    addon_utils.enable("mega_blender")  # the fixture disables it again
    assert hasattr(bpy.types, "MEGA_PT_main")


def test_ok_bl_info_matches_the_manifest():
    manifest = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())
    assert ".".join(map(str, mega_blender.bl_info["version"])) == manifest["version"]
    assert ".".join(map(str, mega_blender.bl_info["blender"])) == manifest["blender_version_min"]
    assert mega_blender.bl_info["name"] == manifest["name"]


class _Layout:
    """Stands in for ``UILayout`` outside a redraw: records every call, returns itself for nesting."""

    def __init__(self, calls: list) -> None:
        self.__dict__["calls"] = calls

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return call

    def __setattr__(self, name: str, value) -> None:
        self.calls.append(("set " + name, (value,), {}))


def _texts(calls: list) -> list[str]:
    return [str(kwargs.get("text", "")) for _, _, kwargs in calls]


def test_ok_panels_draw_for_a_person_and_without_one(blender, tmp_path):
    from types import SimpleNamespace

    from tests.blender.make_result import make_arrays, write_result

    calls: list = []
    layout = _Layout(calls)
    panels.MEGA_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    assert ("operator", ("mega.reconstruct",)) in [(n, a) for n, a, _ in calls]
    assert ("operator", ("mega.import_result",)) in [(n, a) for n, a, _ in calls]
    session = bpy.context.window_manager.mega
    session.link_state, session.link_message, session.link_stderr = "FAILED", "the runtime exited", "a\nlast line"
    session.job_running, session.job_progress, session.job_status = True, 0.5, "photo: frames 5/10"
    calls.clear()
    panels.MEGA_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    texts = _texts(calls)
    assert {"the runtime exited", "last line", "photo: frames 5/10"} <= set(texts)
    assert ("operator", ("mega.restart_runtime",)) in [(n, a) for n, a, _ in calls]
    assert ("operator", ("mega.cancel_reconstruct",)) in [(n, a) for n, a, _ in calls]
    session.link_state, session.job_running = "STOPPED", False
    calls.clear()
    panels.MEGA_PT_view.draw(SimpleNamespace(layout=layout), bpy.context)
    assert "Select a MEGA person or camera" in _texts(calls)

    bpy.ops.mega.import_result(filepath=str(write_result(tmp_path, "photo", make_arrays(1, 3))))
    obj = bpy.context.active_object
    assert panels.MEGA_PT_person.poll(bpy.context)
    calls.clear()
    panels.MEGA_PT_person.draw(SimpleNamespace(layout=layout), bpy.context)
    names = [name for name, _, _ in calls]
    assert "template_list" in names and ("prop", (obj, '["mega_hypothesis"]')) in [(n, a) for n, a, _ in calls]
    calls.clear()
    panels.MEGA_PT_view.draw(SimpleNamespace(layout=layout), bpy.context)
    assert {"Show Uncertainty", "Camera View", "Photo Behind"} <= set(_texts(calls))
    for index, key_block in enumerate(obj.data.shape_keys.key_blocks):
        calls.clear()
        panels.MEGA_UL_hypotheses.draw_item(None, bpy.context, layout, None, key_block, 0, None, "", index)
        ll = obj["mega_log_likelihood"][index]
        assert f"log L {ll:.2f}" in _texts(calls)
        assert ("set index", (index,), {}) in calls


def test_ok_view_panel_shows_the_uncertainty_legend_with_its_range(blender, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from mega_blender import scene_build
    from tests.blender.make_result import make_arrays, write_result

    bpy.ops.mega.import_result(filepath=str(write_result(tmp_path, "photo", make_arrays(1, 3))))
    obj = bpy.context.active_object
    obj[scene_build.UNCERTAINTY_RANGE_PROP] = 0.042
    calls: list = []
    layout = _Layout(calls)
    panels.MEGA_PT_view.draw(SimpleNamespace(layout=layout), bpy.context)
    assert "≥ 42 mm" not in _texts(calls)  # no legend while the colours are hidden
    monkeypatch.setattr(panels, "uncertainty_shown", lambda context: True)
    calls.clear()
    panels.MEGA_PT_view.draw(SimpleNamespace(layout=layout), bpy.context)
    texts = _texts(calls)
    assert {"0 mm", "≥ 42 mm", "Hide Uncertainty"} <= set(texts)
    legend = bpy.context.window_manager.mega_legend
    swatches = [a[1] for n, a, _ in calls if n == "prop" and a[0] == legend]
    assert swatches == [f"swatch_{i}" for i in range(panels.LEGEND_SWATCHES)]
    first, last = tuple(legend.swatch_0), tuple(getattr(legend, f"swatch_{panels.LEGEND_SWATCHES - 1}"))
    expected = scene_build.uncertainty_colors(np.array([0.0, 1.0]), 1.0)[:, :3]
    np.testing.assert_allclose([first, last], expected, atol=1e-6)  # blue → red, as the meshes are coloured


def test_ok_help_opens_the_docs(blender, tmp_path):
    from types import SimpleNamespace

    url = panels.help_url()
    assert url is not None and url.startswith("file:") and url.endswith("docs/blender-addon.md")
    calls: list = []
    panels.MEGA_PT_main.draw(SimpleNamespace(layout=_Layout(calls)), bpy.context)
    assert ("operator", ("wm.url_open",)) in [(n, a) for n, a, _ in calls]
    assert ("set url", (url,), {}) in calls
    (tmp_path / "blender_manifest.toml").write_text('website = "https://example.org/docs"\n')
    assert panels.help_url(tmp_path) == "https://example.org/docs"  # a manifest's website wins
    empty = tmp_path / "empty" / "pkg"
    empty.mkdir(parents=True)
    assert panels.help_url(empty) is None


@pytest.mark.parametrize("mode", ["INTERPRETER", "PRIVATE", "COMMAND"])
def test_ok_preferences_draw_in_every_mode(blender, mode):
    from types import SimpleNamespace

    prefs = _prefs()
    calls: list = []
    keys = ("runtime_mode", "device", "torch_build")
    stub = SimpleNamespace(layout=_Layout(calls), **{k: getattr(prefs, k) for k in keys})
    stub.runtime_mode = mode
    preferences.MEGA_AddonPreferences.draw(stub, bpy.context)
    drawn = {args[1] for name, args, _ in calls if name == "prop" and len(args) > 1}
    assert {"runtime_mode", "weights_dir", "device", "model", "num_hypotheses", "num_steps", "seed"} <= drawn
    expected = {"INTERPRETER": "python_path", "COMMAND": "custom_command"}.get(mode)
    if expected:
        assert expected in drawn
    else:
        assert any(name == "operator" and args[0] == "mega.install_runtime" for name, args, _ in calls)
        assert "Online access is off (Preferences › System › Network)" in _texts(calls)
        assert "torch_build" in drawn
        assert "Automatic: decided from the NVIDIA driver when you press Install" in _texts(calls)


def test_ok_folder_on_the_scripts_path_is_listed_as_a_legacy_add_on(blender, tmp_path):
    """Development mode: Blender lists ``<script dir>/addons/mega_blender`` by its ``bl_info``."""
    import addon_utils

    (tmp_path / "addons").mkdir()
    (tmp_path / "addons" / "mega_blender").symlink_to(REPO_ROOT / "mega_blender", target_is_directory=True)
    script_dir = bpy.context.preferences.filepaths.script_directories.new()
    script_dir.directory = str(tmp_path)
    try:
        bpy.utils.refresh_script_paths()
        found = [m for m in addon_utils.modules(refresh=True) if m.__name__ == "mega_blender"]
        assert found and Path(found[0].__file__).is_relative_to(tmp_path)
        assert found[0].bl_info["name"] == "MEGA Human Mesh Recovery"
    finally:
        bpy.context.preferences.filepaths.script_directories.remove(script_dir)
        bpy.utils.refresh_script_paths()
