"""The live link's timer and stop in real Blender: a failing build ends its job as failed (and the next job still
works), and stopping the runtime never blocks the UI, even when the runtime ignores ``shutdown``.

The build test runs the real runtime (small seeded checkpoints, ResNet, given boxes are not needed: one photo);
the stop tests run the scripted stand-in runtime (tests/addon_pure/fake_runtime.py) through a custom command.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.blender.conftest import ADDON, BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)

from mega_blender import scene_build  # noqa: E402

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
FAKE = Path(__file__).resolve().parents[1] / "addon_pure" / "fake_runtime.py"
#: Longest a stop may keep Blender's UI waiting.
STOP_BUDGET_S = 0.5


@pytest.fixture
def live(live):
    """tests/blender/conftest.py's live add-on, asking for 2 hypotheses per person."""
    bpy.context.preferences.addons[ADDON].preferences.num_hypotheses = 2
    return live


@pytest.fixture
def fake(blender):
    """The add-on set up to run the stand-in runtime in ``mode`` (call the returned function with the mode)."""
    from mega_blender import jobs

    def use(mode: str):
        preferences = bpy.context.preferences.addons[ADDON].preferences
        preferences.runtime_mode = "COMMAND"
        preferences.custom_command = shlex.join([sys.executable, str(FAKE), mode])
        return jobs

    yield use
    jobs.stop()


def run_until(jobs, predicate, what: str, timeout_s: float = 180.0) -> None:
    """Call the add-on's timer function (as Blender's event loop does) until ``predicate()`` holds.

    Fails naming ``what`` when it does not within ``timeout_s``, or when the timer function unregisters itself
    (returns None) although ``predicate`` does not hold yet.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        interval = jobs.pump()
        if predicate():
            return
        if interval is None:
            pytest.fail(f"the timer stopped before {what}: {bpy.context.window_manager.mega.job_status}")
        time.sleep(0.02)
    pytest.fail(f"waited {timeout_s} s for {what}: {bpy.context.window_manager.mega.job_status}")


def gone_within(pid: int, timeout_s: float) -> bool:
    """Poll (every 10 ms) until no process ``pid`` exists any more, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def people() -> list:
    return [o for o in bpy.data.objects if scene_build.is_person(o)]


# -- a failing build --------------------------------------------------------------------------------------------


def test_ng_build_that_raises_fails_the_job_with_its_message_and_the_next_job_works(live, assets_dir, monkeypatch):
    from mega_blender import animation

    outcomes: list[tuple[str, str]] = []

    def listener(job_id: str, outcome: str) -> None:
        outcomes.append((job_id, outcome))

    def broken_build(context, result):
        raise RuntimeError("the scene refused the mesh (test)")

    live.add_listener(listener)
    try:
        image = bpy.data.images.load(str(assets_dir / "images" / PHOTO))
        bpy.context.scene.mega.source_kind = "IMAGE"
        bpy.context.scene.mega.image = image
        with monkeypatch.context() as patch:
            patch.setattr(animation, "build", broken_build)
            assert bpy.ops.mega.reconstruct() == {"FINISHED"}
            (first,) = live._state.jobs
            run_until(live, lambda: not live.is_running(first), "the first job to end")
        session = bpy.context.window_manager.mega
        assert outcomes == [(first, "failed")]
        assert live.outcome(first) is not None and live.outcome(first)[0] == "failed"
        assert "could not be built" in session.job_status and "the scene refused the mesh" in session.job_status
        assert "RuntimeError" in live.outcome(first)[1]
        assert not session.job_running and session.link_state == "READY"
        assert people() == [], "nothing half-built stays"
        assert bpy.app.timers.is_registered(live.pump), "the timer is still registered"
        assert live.pump() is not None, "the timer goes on after the failed build"

        assert bpy.ops.mega.reconstruct() == {"FINISHED"}
        (second,) = live._state.jobs
        run_until(live, lambda: not live.is_running(second), "the second job to end")
        assert outcomes == [(first, "failed"), (second, "done")], session.job_status
        assert len(people()) == 1 and "1 person" in session.job_status
    finally:
        live.remove_listener(listener)


def test_ng_listener_that_raises_does_not_stop_the_timer_or_the_other_listeners(fake, tmp_path):
    jobs = fake("normal")  # answers every job with an inline result that is not a valid result file
    source = tmp_path / "photo.png"
    source.write_bytes(b"not read by the stand-in")
    heard: list[str] = []

    def bad_listener(job_id: str, outcome: str) -> None:
        raise ValueError("a listener bug (test)")

    def good_listener(job_id: str, outcome: str) -> None:
        heard.append(outcome)

    jobs.add_listener(bad_listener)
    jobs.add_listener(good_listener)
    try:
        job = jobs.submit(bpy.context, source, tmp_path / "results", {}, label="photo")
        run_until(jobs, lambda: not jobs.is_running(job), "the stand-in's job to end", 30)
    finally:
        jobs.remove_listener(bad_listener)
        jobs.remove_listener(good_listener)
    assert heard == ["failed"]
    assert "could not be imported" in jobs.outcome(job)[1]
    assert jobs.pump() is not None, "the timer goes on"


def test_ok_runtime_started_without_online_access_downloads_nothing_implicitly(fake, monkeypatch):
    from mega_blender import preferences

    jobs = fake("normal")
    assert not bpy.app.online_access  # the bpy module starts offline
    link = jobs.ensure_link(bpy.context)
    assert link.client.env is not None and link.client.env["MEGA_OFFLINE"] == "1"
    jobs.stop()
    monkeypatch.setattr(preferences, "online_access", lambda: True)
    assert jobs.ensure_link(bpy.context).client.env is None  # the runtime inherits Blender's environment


# -- stopping ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["jobs.stop", "operator", "disable"])
def test_ok_stopping_a_runtime_that_ignores_shutdown_returns_at_once_and_it_is_gone_soon(fake, how):
    import addon_utils

    jobs = fake("ignore-shutdown")
    link = jobs.ensure_link(bpy.context)
    run_until(jobs, lambda: bpy.context.window_manager.mega.link_state == "READY", "the stand-in's handshake", 30)
    pid = link.client.pid
    assert pid is not None
    started = time.perf_counter()
    if how == "jobs.stop":
        jobs.stop()
    elif how == "operator":
        assert bpy.ops.mega.stop_runtime() == {"FINISHED"}
    else:
        addon_utils.disable(ADDON, default_set=True)  # unregister stops the runtime
    took_s = time.perf_counter() - started
    print(f"{how}: returned in {took_s * 1000:.1f} ms")
    assert took_s < STOP_BUDGET_S, f"{how} blocked the UI for {took_s:.3f} s"
    assert jobs.current_link() is None
    assert gone_within(pid, 20.0), f"the runtime (pid {pid}) was still there 20 s after {how}"
    if how == "disable":
        addon_utils.enable(ADDON, default_set=True)  # the fixture disables it again


def test_ok_exit_ends_a_runtime_that_ignores_shutdown_and_terminate_within_the_budget(fake):
    jobs = fake("stubborn")
    link = jobs.ensure_link(bpy.context)
    run_until(jobs, lambda: bpy.context.window_manager.mega.link_state == "READY", "the stand-in's handshake", 30)
    pid = link.client.pid
    assert pid is not None
    started = time.perf_counter()
    jobs._stop_at_exit()  # what atexit runs when Blender quits
    took_s = time.perf_counter() - started
    assert took_s < STOP_BUDGET_S, f"the exit handler blocked for {took_s:.3f} s"
    assert gone_within(pid, 5.0), f"the runtime (pid {pid}) survived Blender's exit handler"


def test_ok_download_progress_is_shown_in_megabytes(blender):
    from mega_blender import jobs
    from mega_blender.runtime_client import Progress

    jobs._handle(Progress("job", "download", 5_000_000, 10_000_000, "downloading checkpoint.tar.gz"))
    session = bpy.context.window_manager.mega
    assert session.job_status == "job: downloading checkpoint.tar.gz 5.0/10.0 MB"
    assert session.job_progress == pytest.approx(0.5)


def test_ok_photo_stages_are_shown_as_the_runtime_reports_them(blender):
    from mega_blender import jobs
    from mega_blender.runtime_client import Progress

    session = bpy.context.window_manager.mega
    shown = []
    for stage, done, total, message in (
        ("load", 0, 1, "loading mega_resnet on cpu"),
        ("detect", 0, 1, "finding people"),
        ("model", 0, 3, "reconstructing people"),
        ("model", 2, 3, "reconstructing people"),
        ("model", 3, 3, "reconstructed"),
    ):
        jobs._handle(Progress("job", stage, done, total, message))
        shown.append((session.job_status, round(session.job_progress, 3)))
    assert shown == [
        ("job: loading mega_resnet on cpu", 0.0),
        ("job: finding people", 0.0),
        ("job: reconstructing people 0/3", 0.0),
        ("job: reconstructing people 2/3", 0.667),
        ("job: reconstructed 3/3", 1.0),
    ]
