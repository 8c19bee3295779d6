"""The add-on's live-link client (mega_blender/runtime_client.py) against the real ``mega_runtime serve``.

Real processes over pipes, the small seeded checkpoints, the shared photo. Blender is not needed: the client is
pure Python; the bpy side is tested in tests/blender/test_reconstruct.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.addon_pure.helpers import load_pure_module

client_mod = load_pure_module("runtime_client")
transport = load_pure_module("runtime_transport")
reader = load_pure_module("result_reader")
PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
OPTIONS = {"model": "resnet", "hypotheses": 2, "device": "cpu"}


@pytest.fixture
def link(small_checkpoints, assets_dir):
    made = client_mod.Link(
        [sys.executable, "-m", "mega_runtime"],
        ["--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir)],
    )
    made.start()
    yield made
    made.stop()


def pump_until(link, predicate, timeout_s: float = 120.0) -> list:
    seen: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen += link.pump()
        if predicate(seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"timed out; events: {seen}; stderr: {link.client.last_stderr(10)}")


def finished(events) -> bool:
    return any(isinstance(e, client_mod.JobDone | client_mod.JobFailed | client_mod.RuntimeFailed) for e in events)


@pytest.mark.slow
def test_ok_photo_by_path_comes_back_as_a_result_the_addon_reads(link, assets_dir, tmp_path):
    hello = pump_until(link, lambda ev: any(isinstance(e, client_mod.Ready) for e in ev), 60)[-1].hello
    assert hello["protocol"] == transport.PROTOCOL_VERSION and "cpu" in hello["devices"]
    link.submit(assets_dir / "images" / PHOTO, tmp_path / "out", options=OPTIONS)
    events = pump_until(link, finished)
    done = events[-1]
    assert isinstance(done, client_mod.JobDone), done
    assert any(isinstance(e, client_mod.Progress) for e in events)
    result = reader.read_result(done.json_path)
    assert done.json_path.parent == tmp_path / "out"
    assert result.num_people == 1 and result.num_hypotheses == 2
    assert result.vertices.shape == (1, 1, 2, 6890, 3)


@pytest.mark.slow
def test_ok_inline_transfer_as_for_a_runtime_on_another_machine(small_checkpoints, assets_dir, tmp_path):
    link = client_mod.Link(
        [sys.executable, "-m", "mega_runtime"],
        ["--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir)],
        inline=True,
    )
    link.start()
    try:
        link.submit(assets_dir / "images" / PHOTO, tmp_path, options=OPTIONS)
        done = pump_until(link, finished)[-1]
    finally:
        link.stop()
    assert isinstance(done, client_mod.JobDone), done
    assert done.json_path == tmp_path / f"{Path(PHOTO).stem}.json"
    assert reader.read_result(done.json_path).num_people == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([done.json_path.name, done.npz_path.name])


@pytest.mark.slow
def test_ok_cancel_in_the_middle_of_a_video_keeps_the_frames_done(link, assets_dir, tmp_path):
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(60):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
    job = link.submit(video, tmp_path / "out", options={**OPTIONS, "hypotheses": 1})

    def two_frames_done(events) -> bool:
        return any(isinstance(e, client_mod.Progress) and e.stage == "frames" and e.done >= 2 for e in events)

    pump_until(link, lambda ev: two_frames_done(ev) or finished(ev))
    link.cancel(job)
    done = pump_until(link, finished)[-1]
    assert isinstance(done, client_mod.JobDone), done
    assert done.cancelled and 2 <= done.num_frames < 60
    assert any("cancelled" in w for w in done.warnings)
    assert reader.read_result(done.json_path).num_frames == done.num_frames


def test_ng_runtime_killed_mid_job_fails_the_job_with_the_reason(link, assets_dir, tmp_path):
    job = link.submit(assets_dir / "images" / PHOTO, tmp_path / "out", options=OPTIONS)
    pump_until(link, lambda ev: any(isinstance(e, client_mod.Progress) for e in ev))
    os.kill(link.client.pid, signal.SIGKILL)
    failed = pump_until(link, finished)[-1]
    assert isinstance(failed, client_mod.RuntimeFailed), failed
    assert failed.jobs == (job,) and "exited with code -9 while it was running" in failed.reason
    assert not link.busy and not list((tmp_path / "out").glob("*.json"))


@pytest.mark.slow
def test_ng_runtime_dying_mid_video_keeps_the_frames_it_had_saved(small_checkpoints, assets_dir, tmp_path):
    link = client_mod.Link(
        [sys.executable, "-m", "mega_runtime"],
        ["--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir), "--checkpoint-every-s", "0"],
    )
    link.start()
    try:
        photo = cv2.imread(str(assets_dir / "images" / PHOTO))
        small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
        video = tmp_path / "clip.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
        for i in range(120):
            writer.write(np.roll(small, i, axis=1))
        writer.release()
        job = link.submit(video, tmp_path / "out", options={**OPTIONS, "hypotheses": 1})
        pump_until(link, lambda ev: any(isinstance(e, client_mod.Progress) and e.message == "frames kept" for e in ev))
        os.kill(link.client.pid, signal.SIGKILL)
        failed = pump_until(link, finished)[-1]
    finally:
        link.stop()
    assert isinstance(failed, client_mod.RuntimeFailed)
    kept = failed.partials[job]
    assert kept.name == "clip.partial.json"
    result = reader.read_result(kept)
    assert 1 <= result.num_frames < 120 and result.vertices.shape[0] == result.num_frames
