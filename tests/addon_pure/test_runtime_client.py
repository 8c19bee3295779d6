"""The live link's transport in plain CPython, against a scripted stand-in runtime (tests/addon_pure/fake_runtime.py).

The real runtime behind the same client is tested in tests/contract/test_live_link.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module

client_mod = load_pure_module("runtime_client")
transport = load_pure_module("runtime_transport")
FAKE = Path(__file__).with_name("fake_runtime.py")


def fake_link(mode: str, *, inline: bool = False, timeout_s: float = 30.0):
    return client_mod.Link([sys.executable, str(FAKE), mode], inline=inline, handshake_timeout_s=timeout_s)


def pump_until(link, predicate, timeout_s: float = 20.0) -> list:
    """Pump events until ``predicate(events)`` holds; returns all events seen."""
    seen: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen += link.pump()
        if predicate(seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"timed out; events so far: {seen}")


def has(kind):
    return lambda events: any(isinstance(e, kind) for e in events)


def test_ok_handshake_then_job_with_progress_and_result_files(tmp_path):
    link = fake_link("normal")
    link.start()
    try:
        events = pump_until(link, has(client_mod.Ready))
        assert link.ready and events[0].hello["runtime_version"] == "9.9.9"
        job = link.submit(tmp_path / "photo.jpg", tmp_path / "out", options={"hypotheses": 2})
        events = pump_until(link, has(client_mod.JobDone))
        progress = [e for e in events if isinstance(e, client_mod.Progress)]
        assert progress and (progress[0].done, progress[0].total, progress[0].stage) == (1, 2, "model")
        done = events[-1]
        assert (done.job, done.json_path, done.npz_path, done.warnings) == (
            job,
            Path("/r/a.json"),
            Path("/r/a.npz"),
            ("w",),
        )
        assert not link.busy
    finally:
        link.stop()
    assert link.client.wait_exited(10.0), "the runtime did not exit within 10 s of stop()"
    assert not link.client.running


def test_ok_inline_result_is_written_beside_existing_results_without_overwriting(tmp_path):
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"jpeg bytes")
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.json").write_text("{}")  # a user's file: must survive
    link = fake_link("normal", inline=True)
    link.start()
    try:
        pump_until(link, has(client_mod.Ready))
        link.submit(source, out)
        done = next(e for e in pump_until(link, has(client_mod.JobDone)) if isinstance(e, client_mod.JobDone))
    finally:
        link.stop()
    assert done.json_path == out / "photo-2.json"
    assert (out / "photo.json").read_text() == "{}"
    meta = json.loads(done.json_path.read_text())
    assert meta["arrays_file"] == "photo-2.npz" and meta["schema"] == "mega-result"
    with np.load(done.npz_path) as npz:
        assert npz["faces"].shape == (1, 3)
    assert not list(out.glob(".*.tmp"))


def test_ng_runtime_that_exits_before_the_handshake_is_reported_with_its_stderr():
    link = fake_link("exit-early")
    link.start()
    events = pump_until(link, has(client_mod.RuntimeFailed))
    failed = events[-1]
    assert "exited with code 3 before its handshake" in failed.reason
    assert "No module named 'torch'" in failed.reason and "Traceback" in failed.stderr
    with pytest.raises(client_mod.LinkError):
        link.submit(Path("x.jpg"), Path("out"))


def test_ng_protocol_mismatch_names_both_versions_and_stops_the_runtime():
    link = fake_link("protocol-2")
    link.start()
    failed = pump_until(link, has(client_mod.RuntimeFailed))[-1]
    assert "protocol 1" in failed.reason and "protocol 2" in failed.reason and "9.9.9" in failed.reason
    deadline = time.monotonic() + 10
    while link.client.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not link.client.running


def test_ng_runtime_dying_mid_job_fails_the_job_with_the_reason(tmp_path):
    link = fake_link("die-mid-job")
    link.start()
    pump_until(link, has(client_mod.Ready))
    job = link.submit(tmp_path / "a.jpg", tmp_path)
    failed = next(e for e in pump_until(link, has(client_mod.RuntimeFailed)) if isinstance(e, client_mod.RuntimeFailed))
    assert failed.jobs == (job,)
    assert "code 9 while it was running" in failed.reason and "Killed while reconstructing" in failed.reason
    assert not link.busy


def test_ok_noise_on_stdout_is_kept_out_of_the_protocol():
    link = fake_link("noise")
    link.start()
    try:
        pump_until(link, has(client_mod.Ready))
    finally:
        link.stop()
    assert any("a library printed this" in line for line in link.client.stderr_tail)


def test_ng_command_that_cannot_run_raises_a_link_error_naming_it():
    link = client_mod.Link(["/nonexistent/python3", "-m", "mega_runtime"])
    with pytest.raises(client_mod.LinkError, match="cannot start the runtime '/nonexistent/python3'"):
        link.start()


def test_ng_empty_command_is_refused():
    with pytest.raises(client_mod.LinkError, match="empty"):
        transport.RuntimeClient([])


def test_ng_silent_runtime_fails_the_handshake_after_the_timeout():
    link = client_mod.Link([sys.executable, "-c", "import time; time.sleep(30)"], handshake_timeout_s=0.3)
    link.start()
    failed = pump_until(link, has(client_mod.RuntimeFailed), timeout_s=15)[-1]
    assert "did not answer within" in failed.reason


# -- stopping never blocks the caller ----------------------------------------------------------------------------


def _gone_within(pid: int, timeout_s: float) -> bool:
    """Poll (every 10 ms) until no process ``pid`` exists any more (reaped), or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize(
    ("mode", "escalation"), [("ignore-shutdown", "terminate"), ("stubborn", "kill")], ids=["terminate", "kill"]
)
def test_ok_stop_returns_at_once_and_a_runtime_that_ignores_shutdown_is_gone_soon_after(mode, escalation, caplog):
    link = fake_link(mode)
    link.start()
    pump_until(link, has(client_mod.Ready))
    pid = link.client.pid
    started = time.perf_counter()
    stopper = link.client.stop(grace_s=0.3)
    took_s = time.perf_counter() - started
    print(f"stop() returned in {took_s * 1000:.1f} ms ({mode})")
    assert took_s < 0.5, f"stop() blocked the caller for {took_s:.3f} s"
    assert stopper is not None and link.client.stop(grace_s=0.3) is stopper, "a second stop joins the first"
    assert _gone_within(pid, 15.0), f"the runtime (pid {pid}, {mode}) was still there 15 s after stop()"
    assert link.client.wait_stopped(5.0) and link.client.wait_exited(5.0)
    assert not link.client.running
    words = {"terminate": "terminating it", "kill": "killing it"}[escalation]
    assert any(words in record.getMessage() for record in caplog.records), "the escalation is logged"


def test_ok_stop_now_at_exit_ends_a_stubborn_runtime_within_its_budget():
    link = fake_link("stubborn")
    link.start()
    pump_until(link, has(client_mod.Ready))
    pid = link.client.pid
    started = time.perf_counter()
    link.client.stop_now(budget_s=0.4)
    took_s = time.perf_counter() - started
    assert took_s < 0.5, f"stop_now() blocked for {took_s:.3f} s"
    assert _gone_within(pid, 5.0), f"the runtime (pid {pid}) survived stop_now()"


def test_ok_stop_of_a_runtime_that_is_not_running_does_nothing():
    client = transport.RuntimeClient([sys.executable, str(FAKE), "normal"])
    assert client.stop() is None and client.wait_stopped(0.1)
    client.stop_now()
