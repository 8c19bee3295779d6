"""Reconstruct through the live link, end to end in real Blender: the add-on starts the real runtime
(``python -m mega_runtime serve`` with the small seeded checkpoints), sends an Image datablock, a generated image
or a Movie Clip, and builds the people once the timer function has handed the result to the main thread."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON
from tests.blender.helpers import counts, run_jobs

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)
cv2 = pytest.importorskip("cv2", reason="the video test writes its clip with opencv (installed with the runtime)")
from mega_blender import scene_build  # noqa: E402

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


def people() -> list:
    return sorted((o for o in bpy.data.objects if scene_build.is_person(o)), key=lambda o: o.name)


@pytest.mark.slow
def test_ok_reconstruct_active_image_builds_the_person_over_the_photo(live, assets_dir, tmp_path):
    image = bpy.data.images.load(str(assets_dir / "images" / PHOTO))
    bpy.context.scene.mega.source_kind = "IMAGE"
    bpy.context.scene.mega.image = image
    assert bpy.ops.mega.reconstruct() == {"FINISHED"}
    assert bpy.context.window_manager.mega.job_running
    run_jobs(live)
    session = bpy.context.window_manager.mega
    assert session.link_state == "READY", session.link_message
    (person,) = people()
    assert len(person.data.vertices) == 6890 and len(person.data.polygons) == 13776
    assert len(person.data.shape_keys.key_blocks) == 3  # Basis + 2 hypotheses
    assert person.data.color_attributes.active_color.name == "MEGA Uncertainty"
    camera = next(o for o in bpy.data.objects if o.type == "CAMERA")
    assert bpy.context.scene.render.resolution_x == image.size[0]
    background = camera.data.background_images[0].image
    assert Path(bpy.path.abspath(background.filepath)).resolve() == (assets_dir / "images" / PHOTO).resolve()
    assert "1 person" in session.job_status
    assert len(list((tmp_path / "results").glob("*.json"))) == 1


@pytest.mark.slow
def test_ok_generated_image_is_sent_as_a_temporary_png_that_is_removed(live, assets_dir, tmp_path):
    photo = bpy.data.images.load(str(assets_dir / "images" / PHOTO))
    width, height = photo.size
    pixels = np.empty(width * height * 4, np.float32)
    photo.pixels.foreach_get(pixels)
    painted = bpy.data.images.new("Painted", width, height)
    painted.pixels.foreach_set(pixels)
    bpy.context.scene.mega.image = painted
    temp_folders = set(Path(bpy.app.tempdir or "/tmp").parent.glob("mega-image-*"))
    assert bpy.ops.mega.reconstruct() == {"FINISHED"}
    (info,) = live._state.jobs.values()
    (folder,) = info.cleanup
    assert folder.is_dir() and folder not in temp_folders
    run_jobs(live)
    assert len(people()) == 1
    assert not folder.exists()


@pytest.mark.slow
def test_ok_clip_job_reports_progress_and_cancel_keeps_the_frames_done(live, assets_dir, tmp_path):
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(80):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
    clip = bpy.data.movieclips.load(str(video))
    scene = bpy.context.scene
    scene.mega.source_kind = "CLIP"
    scene.mega.clip = clip
    scene.frame_start, scene.frame_end = 1, 80
    assert bpy.ops.mega.reconstruct(hypotheses=1) == {"FINISHED"}
    seen: list[float] = []

    def cancel_after_progress() -> None:
        session = bpy.context.window_manager.mega
        if "frames" in session.job_status and session.job_progress > 0 and not seen:
            seen.append(session.job_progress)
            assert bpy.ops.mega.cancel_reconstruct() == {"FINISHED"}

    run_jobs(live, on_progress=cancel_after_progress)
    status = bpy.context.window_manager.mega.job_status
    assert seen and 0 < seen[0] < 1
    assert "cancelled after" in status and "kept them" in status, status
    assert len(people()) == 1


def test_ng_runtime_that_cannot_start_is_reported_with_its_stderr_and_builds_nothing(live, assets_dir, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    bpy.context.preferences.addons["mega_blender"].preferences.python_path = str(fake)
    bpy.context.scene.mega.image = bpy.data.images.load(str(assets_dir / "images" / PHOTO))
    before = counts(bpy)
    try:  # the runtime dies at once: while the job is sent (reported here) or just after (reported by the timer)
        bpy.ops.mega.reconstruct()
    except RuntimeError as exc:
        assert "exited with code 1 before its handshake" in str(exc)
    run_jobs(live, timeout_s=30)
    session = bpy.context.window_manager.mega
    assert session.link_state == "FAILED"
    assert "exited with code 1 before its handshake" in session.link_message
    assert "No module named 'torch'" in session.link_stderr
    assert counts(bpy) == before


def test_ng_missing_interpreter_is_cancelled_with_the_fix(live):
    bpy.context.preferences.addons["mega_blender"].preferences.python_path = "/nonexistent/python"
    bpy.context.scene.mega.source_kind = "FILE"
    bpy.context.scene.mega.filepath = __file__
    with pytest.raises(RuntimeError, match="does not exist: set it in the add-on's preferences"):
        bpy.ops.mega.reconstruct()


@pytest.mark.parametrize(
    ("kind", "message"),
    [("IMAGE", "no image: open one in an Image Editor"), ("CLIP", "no movie clip"), ("FILE", "no file")],
)
def test_ng_missing_source_is_cancelled_saying_what_to_pick(live, kind, message):
    bpy.context.scene.mega.source_kind = kind
    before = counts(bpy)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.mega.reconstruct()
    assert counts(bpy) == before
    assert live.current_link() is None  # no runtime was started for nothing


@pytest.mark.slow
def test_ng_runtime_dying_mid_clip_keeps_the_frames_done_and_says_how_many(live, assets_dir, tmp_path, monkeypatch):
    import os
    import signal

    settings = live.link_settings

    def frequent_checkpoints(context):
        command, serve_args, inline = settings(context)
        return command, [*serve_args, "--checkpoint-every-s", "0"], inline

    monkeypatch.setattr(live, "link_settings", frequent_checkpoints)
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(150):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
    scene = bpy.context.scene
    scene.mega.source_kind = "FILE"
    scene.mega.filepath = str(video)
    assert bpy.ops.mega.reconstruct(hypotheses=1) == {"FINISHED"}
    killed: list[int] = []

    def kill_once_frames_are_kept() -> None:
        link = live.current_link()
        job = next(iter(link.jobs.values()), None) if link is not None else None
        if job is not None and job.partial is not None and not killed:
            killed.append(link.client.pid)
            os.kill(link.client.pid, signal.SIGKILL)

    run_jobs(live, on_progress=kill_once_frames_are_kept)
    session = bpy.context.window_manager.mega
    assert killed and session.link_state == "FAILED"
    assert "exited with code -9" in session.job_status and "kept the" in session.job_status, session.job_status
    assert len(people()) == 1


@pytest.mark.slow
def test_ok_clip_becomes_an_animated_tracked_smoothed_person_with_an_armature(live, assets_dir, tmp_path):
    from mega_blender import animation
    from mega_blender.result_reader import read_result

    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 24, (small.shape[1], small.shape[0]))
    for i in range(8):
        writer.write(np.roll(small, 2 * i, axis=1))
    writer.release()
    scene = bpy.context.scene
    scene.mega.source_kind = "CLIP"
    scene.mega.clip = bpy.data.movieclips.load(str(video))
    scene.frame_start, scene.frame_end = 1, 8
    scene.mega.temporal_path, scene.mega.smooth = "coherent", True
    scene.mega.detect_every = 3
    smplx = __import__("importlib").util.find_spec("smplx")
    if smplx is not None:  # with the user's SMPL model (here a synthetic one) the person also gets an armature
        from tests.runtime.smpl_synthetic import synthetic_smpl_arrays, write_synthetic_smpl

        model = write_synthetic_smpl(tmp_path / "SMPL_SYNTHETIC.npz", synthetic_smpl_arrays())
        bpy.context.preferences.addons["mega_blender"].preferences.smpl_model_path = str(model)
    assert bpy.ops.mega.reconstruct(hypotheses=2) == {"FINISHED"}
    run_jobs(live)
    if smplx is not None:
        (rig,) = [o for o in bpy.data.objects if o.type == "ARMATURE"]
        assert len(rig.data.bones) == 24 and rig.animation_data.action is not None
    (person,) = people()
    assert animation.is_animated(person) and (scene.frame_start, scene.frame_end) == (1, 8)
    result = read_result(person["mega_result_path"])
    assert result.meta["temporal"]["path"] == "coherent" and "smoothed_vertices" in result.extra_arrays
    assert result.meta["source"]["detect_every"] == 3  # the panel's detection cadence reached the runtime
    scene.frame_set(5)  # what plays is the smoothed path
    from tests.blender.helpers import world_vertices

    expected = animation.opencv_to_blender_world(result.extra_arrays["smoothed_vertices"][4, 0])
    np.testing.assert_allclose(world_vertices(person), expected, atol=1e-4)
