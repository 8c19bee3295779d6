"""Detection controls in real Blender: the panel's settings become the job's ``detection`` object, person tracks
of a Movie Clip become ``boxes_per_frame``, the Movie Clip editor's overlay computes the boxes of the current frame,
and the headless batch turns its options into the same protocol fields. No runtime runs: the job is captured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.blender.conftest import BPY_SKIP_REASON

bpy = pytest.importorskip("bpy", reason=BPY_SKIP_REASON)
cv2 = pytest.importorskip("cv2", reason="the clip is written with opencv (installed with the runtime)")
from mega_blender import runtime_defaults as defaults  # noqa: E402

PATTERN = ((-0.1, -0.2), (0.1, -0.2), (0.1, 0.2), (-0.1, 0.2))


def _clip(path: Path, frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (200, 100))
    for i in range(frames):
        writer.write(np.full((100, 200, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _person_track(clip, name: str, frames_co: dict[int, tuple[float, float]]):
    track = clip.tracking.tracks.new(name=name, frame=min(frames_co))
    for frame, co in frames_co.items():
        marker = track.markers.find_frame(frame) or track.markers.insert_frame(frame, co=co)
        marker.co = co
        marker.pattern_corners = PATTERN
    return track


def test_ok_panel_detection_settings_start_at_the_runtime_defaults_and_offer_its_detectors(blender):
    from mega_blender.reconstruct import detection_options

    settings = bpy.context.scene.mega
    items = [item.identifier for item in settings.bl_rna.properties["detector"].enum_items]
    assert items == list(defaults.DETECTOR_CHOICES)
    assert detection_options(settings) == {
        "detector": defaults.DETECTOR,
        "conf": defaults.DETECTOR_CONF,
        "min_height_px": defaults.DETECTOR_MIN_HEIGHT_PX,
        "max_people": defaults.DETECTOR_MAX_PEOPLE,
    }
    settings.detect_threshold, settings.min_height_px, settings.max_people = 0.3, 60.0, 4
    assert detection_options(settings) == {
        "detector": defaults.DETECTOR,
        "conf": 0.3,
        "min_height_px": 60.0,
        "max_people": 4,
    }


def test_ok_reconstruct_sends_the_panel_settings_and_the_clips_person_tracks_as_boxes(blender, tmp_path, monkeypatch):
    from mega_blender import reconstruct

    clip = bpy.data.movieclips.load(str(_clip(tmp_path / "walk.avi")))
    _person_track(clip, "MEGA missed", {2: (0.5, 0.5), 3: (0.55, 0.5)})
    _person_track(clip, "corner feature", {2: (0.1, 0.1)})  # not a person: another name
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 5
    scene.mega.source_kind, scene.mega.clip = "CLIP", clip
    scene.mega.detect_threshold, scene.mega.max_people = 0.25, 3
    sent: list[dict] = []

    def submit(context, path, out_dir, options, **kwargs):
        sent.append({"path": Path(path), **options})
        return "job"

    monkeypatch.setattr(reconstruct.jobs, "submit", submit)
    assert bpy.ops.mega.reconstruct() == {"FINISHED"}
    (options,) = sent
    assert options["detection"]["conf"] == 0.25 and options["detection"]["max_people"] == 3
    assert options["boxes_per_frame"] == {"1": [[80.0, 30.0, 120.0, 70.0]], "2": [[90.0, 30.0, 130.0, 70.0]]}
    assert options["boxes_mode"] == defaults.PANEL_BOXES_MODE == "add"
    assert options["frames"] == {"start": 0, "stop": 5, "step": 1}
    scene.mega.use_tracks = False
    assert bpy.ops.mega.reconstruct() == {"FINISHED"}
    assert "boxes_per_frame" not in sent[-1] and "detection" in sent[-1]


def test_ok_overlay_is_registered_and_gives_the_boxes_of_the_current_frame_of_results_from_the_clip(blender, tmp_path):
    from mega_blender import overlay

    assert overlay.is_registered()
    video = _clip(tmp_path / "walk.avi")
    clip = bpy.data.movieclips.load(str(video))
    arrays = {
        "boxes_xyxy": np.array([[[10, 20, 50, 90]], [[12, 20, 52, 90]]], np.float32),
        "valid": np.ones((2, 1), bool),
        "track_ids": np.array([2], np.int32),
        "frame_indices": np.array([0, 1], np.int32),
        "box_source": np.array([[0], [1]], np.int8),
    }
    np.savez(tmp_path / "walk.npz", **arrays)
    meta = {"arrays_file": "walk.npz", "source": {"path": str(video.resolve()), "width": 200, "height": 100}}
    (tmp_path / "walk.json").write_text(json.dumps(meta))
    person = bpy.data.objects.new("MEGA person", None)
    person["mega_result_path"] = str(tmp_path / "walk.json")
    bpy.context.scene.collection.objects.link(person)
    scene = bpy.context.scene
    scene.frame_set(1)  # clip frame 1 = file frame 0: detected
    (rect,) = overlay.overlay_rects_for(scene, clip)
    assert (rect.x1, rect.y1, rect.x2, rect.y2, rect.track_id, rect.given) == (10, 10, 50, 80, 2, False)
    scene.frame_set(2)  # file frame 1: the box the user gave
    (rect,) = overlay.overlay_rects_for(scene, clip)
    assert rect.given and rect.x1 == 12
    scene.frame_set(4)  # not in the result
    assert overlay.overlay_rects_for(scene, clip) == []
    other = bpy.data.movieclips.load(str(_clip(tmp_path / "other.avi", 2)))
    scene.frame_set(1)
    assert overlay.overlay_rects_for(scene, other) == []  # results of another clip are not drawn over it


def test_ok_batch_reconstruct_detection_options_become_protocol_fields(blender, tmp_path):
    from mega_blender import batch

    parser = batch.build_parser()
    base = ["reconstruct", "clip.mp4", "--export", "out.blend"]
    assert batch.detection_fields(parser.parse_args(base)) == {}
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [[1, 2, 30, 40]]}))
    detection = ["--detect-threshold", "0.4", "--min-height", "50", "--max-people", "2", "--detector", "default"]
    given = ["--boxes", "1,2,3,4", "--boxes-file", str(boxes), "--boxes-mode", "add"]
    args = parser.parse_args([*base, *detection, *given])
    assert batch.detection_fields(args) == {
        "detection": {"detector": "default", "conf": 0.4, "min_height_px": 50.0, "max_people": 2},
        "boxes": [[1.0, 2.0, 3.0, 4.0]],
        "boxes_per_frame": {"0": [[1, 2, 30, 40]]},
        "boxes_mode": "add",
    }
    for bad in (["--detect-threshold", "2"], ["--max-people", "0"], ["--boxes", "3,3,1,1"]):
        with pytest.raises(batch.BatchError, match=bad[0]):
            batch.detection_fields(parser.parse_args([*base, *bad]))


class _Layout:
    """Records ``UILayout`` calls outside a redraw; returns itself for nesting."""

    def __init__(self, calls: list) -> None:
        self.__dict__["calls"] = calls

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return call

    def __setattr__(self, name: str, value) -> None:
        self.calls.append(("set " + name, (value,), {}))


def test_ok_panel_shows_the_detection_settings_and_for_a_clip_the_track_and_overlay_switches(blender):
    from types import SimpleNamespace

    from mega_blender import panels

    def drawn_props() -> set[str]:
        calls: list = []
        panels.MEGA_PT_main.draw(SimpleNamespace(layout=_Layout(calls)), bpy.context)
        return {args[1] for name, args, _ in calls if name == "prop" and len(args) > 1}

    detection = {"detector", "detect_threshold", "min_height_px", "max_people"}
    tracks = {"use_tracks", "track_prefix", "boxes_mode", "show_boxes"}
    bpy.context.scene.mega.source_kind = "IMAGE"
    assert detection <= drawn_props() and not tracks & drawn_props()
    bpy.context.scene.mega.source_kind = "CLIP"
    assert detection | tracks <= drawn_props()
