"""Detection controls (threshold, minimum height, maximum people, detector) and given boxes, from the command line
and the protocol down to the result's provenance; boxes for videos (fixed and per frame); video previews."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mega_runtime import defaults
from mega_runtime.commands.cli import build_parser, main
from mega_runtime.io.detection import (
    DetectionSettings,
    DetectionSettingsError,
    check_boxes,
    detection_settings,
    parse_frame_boxes,
    read_boxes_file,
)
from mega_runtime.io.protocol import ProtocolError, parse_request
from mega_runtime.io.result import read_result
from mega_runtime.pipeline.chain import Pipeline, PipelineConfig, filter_detections
from mega_runtime.pipeline.detect import Detection

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


# -- settings and boxes, checked once ---------------------------------------------------------------------------


def test_ok_default_settings_come_from_the_shared_defaults():
    settings = detection_settings()
    assert settings == DetectionSettings()
    assert (settings.detector, settings.conf, settings.min_height_px, settings.max_people) == (
        defaults.DETECTOR,
        defaults.DETECTOR_CONF,
        defaults.DETECTOR_MIN_HEIGHT_PX,
        defaults.DETECTOR_MAX_PEOPLE,
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"detector": "nope"}, "unknown detector"),
        ({"conf": 1.5}, "threshold"),
        ({"conf": float("nan")}, "threshold"),
        ({"conf": True}, "threshold"),
        ({"min_height_px": -1}, "minimum person height"),
        ({"max_people": 0}, "maximum number of people"),
        ({"max_people": 2.0}, "maximum number of people"),
    ],
)
def test_ng_bad_detection_settings_name_the_setting_and_a_fix(fields, words):
    with pytest.raises(DetectionSettingsError, match=words) as info:
        detection_settings(**fields)
    assert info.value.hint


def test_ng_bad_boxes_name_the_box(tmp_path):
    with pytest.raises(DetectionSettingsError, match=r"boxes\[1\].*reversed"):
        check_boxes([[0, 0, 10, 10], [5, 5, 1, 9]])
    with pytest.raises(DetectionSettingsError, match="not a frame number"):
        parse_frame_boxes({"first": [[0, 0, 1, 1]]})
    with pytest.raises(DetectionSettingsError, match=r"frame 3.*not 4 finite"):
        parse_frame_boxes({"3": [[0, 0, 1]]})
    bad = tmp_path / "boxes.json"
    bad.write_text("{not json")
    with pytest.raises(DetectionSettingsError, match="not valid JSON"):
        read_boxes_file(bad)
    with pytest.raises(DetectionSettingsError, match="does not exist"):
        read_boxes_file(tmp_path / "missing.json")


def test_ok_boxes_file_maps_frames_to_boxes_sorted(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"5": [[1, 2, 30, 40]], "0": [], "2": [[0, 0, 10, 20], [20, 0, 30, 20]]}))
    assert read_boxes_file(path) == {0: (), 2: ((0, 0, 10, 20), (20, 0, 30, 20)), 5: ((1, 2, 30, 40),)}


# -- command line ---------------------------------------------------------------------------------------------------


def _parse(*extra: str):
    return build_parser().parse_args(["infer", "photo.jpg", "--out", "out", *extra])


def test_ok_cli_detection_options_parse_with_the_shared_defaults():
    args = _parse()
    assert (args.detector, args.detect_threshold, args.min_height, args.max_people, args.boxes_mode) == (
        defaults.DETECTOR,
        defaults.DETECTOR_CONF,
        defaults.DETECTOR_MIN_HEIGHT_PX,
        defaults.DETECTOR_MAX_PEOPLE,
        defaults.BOXES_MODE,
    )
    args = _parse("--detect-threshold", "0.3", "--min-height", "60", "--max-people", "4", "--boxes-mode", "add")
    assert (args.detect_threshold, args.min_height, args.max_people, args.boxes_mode) == (0.3, 60.0, 4, "add")
    serve = build_parser().parse_args(["serve", "--detect-threshold", "0.2", "--max-people", "2"])
    assert (serve.detect_threshold, serve.max_people) == (0.2, 2)


@pytest.mark.parametrize(
    "extra",
    [
        ("--detect-threshold", "1.2"),
        ("--detect-threshold", "nan"),
        ("--min-height", "-3"),
        ("--max-people", "0"),
        ("--detector", "nope"),
        ("--boxes-mode", "merge"),
    ],
)
def test_ng_cli_refuses_out_of_range_detection_options(extra, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(*extra)
    assert info.value.code == 2
    assert extra[0] in capsys.readouterr().err


def test_ng_cli_refuses_a_bad_boxes_file_before_loading_anything(tmp_path, capsys):
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({"0": [[10, 10, 5, 20]]}))
    assert main(["infer", str(photo), "--out", str(tmp_path / "out"), "--boxes-file", str(boxes)]) == 2
    err = capsys.readouterr().err
    assert "frame 0" in err and "fix:" in err
    assert not (tmp_path / "out").exists()


# -- protocol --------------------------------------------------------------------------------------------------------


def _infer_line(**fields) -> bytes:
    return json.dumps({"v": 1, "id": "j", "op": "infer", "source": {"path": "/x/clip.mp4"}, **fields}).encode()


def test_ok_protocol_detection_keys_boxes_per_frame_and_mode_are_parsed():
    request = parse_request(
        _infer_line(
            detection={"conf": 0.25, "max_people": 3},
            boxes_per_frame={"0": [[1, 2, 3, 4]], "7": []},
            boxes_mode="add",
        )
    )
    assert request.detection == {"conf": 0.25, "max_people": 3}
    assert request.frame_boxes == {0: ((1.0, 2.0, 3.0, 4.0),), 7: ()}
    assert request.boxes_mode == "add"
    plain = parse_request(_infer_line())
    assert (plain.detection, plain.frame_boxes, plain.boxes_mode) == ({}, None, defaults.BOXES_MODE)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"detection": {"conf": 2}}, "threshold"),
        ({"detection": {"min_height_px": "tall"}}, "minimum person height"),
        ({"detection": {"max_people": 0}}, "maximum number of people"),
        ({"detection": {"detector": "nope"}}, "unknown detector"),
        ({"detection": {"speed": 1}}, "unknown key"),
        ({"detection": [0.5]}, "must be an object"),
        ({"boxes_per_frame": {"x": []}}, "not a frame number"),
        ({"boxes_per_frame": {"2": [[0, 0, 0, 0]]}}, "frame 2"),
        ({"boxes_mode": "merge"}, "boxes_mode"),
        ({"boxes": [[0, 0, 1]]}, "'boxes'"),
    ],
)
def test_ng_protocol_refuses_bad_detection_fields_with_bad_request(fields, words):
    with pytest.raises(ProtocolError, match=words) as info:
        parse_request(_infer_line(**fields))
    assert info.value.code == "bad_request" and info.value.request_id == "j"


# -- the chain: filters, given boxes, provenance -------------------------------------------------------------------


def test_ok_filters_keep_scores_above_the_threshold_tall_enough_best_first():
    found = [
        Detection((0, 0, 10, 100), 0.9),
        Detection((0, 0, 10, 40), 0.95),  # too short
        Detection((0, 0, 10, 100), 0.4),  # below the threshold
        Detection((0, 0, 10, 80), 0.7),
        Detection((0, 0, 10, 90), 0.8),
    ]
    kept = filter_detections(found, DetectionSettings(conf=0.5, min_height_px=60, max_people=2))
    assert [d.score for d in kept] == [0.9, 0.8]


class Scripted:
    """A fake detector: the same detections for every frame (counts its calls)."""

    name = "scripted"

    def __init__(self, detections):
        self.detections, self.calls = detections, 0

    def detect(self, image_bgr):
        self.calls += 1
        return list(self.detections)


@pytest.fixture(scope="module")
def pipeline(small_checkpoints, assets_dir):
    detector = Scripted([Detection((10, 10, 60, 150), 0.9), Detection((90, 20, 150, 220), 0.8)])
    settings = DetectionSettings(detector="default", conf=0.5, min_height_px=0.0, max_people=None)
    config = PipelineConfig(model="mega_resnet", num_hypotheses=1, batch_size=8, detection=settings)
    return Pipeline.load(config, small_checkpoints, assets_dir, detector=detector)


@pytest.fixture(scope="module")
def clip(assets_dir, tmp_path_factory):
    """A 3-frame MJPG clip, 160 × 240 px, panning over the photo."""
    photo = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 12.0, (160, 240))
    for i in range(3):
        writer.write(np.ascontiguousarray(small[60:300, 20 + 3 * i : 180 + 3 * i]))
    writer.release()
    return path


def test_ok_fixed_boxes_apply_to_every_video_frame_instead_of_the_detector(pipeline, clip):
    pipeline.detector.calls = 0
    result = pipeline.run_video(clip, boxes=[[20, 30, 100, 200]])
    assert pipeline.detector.calls == 0
    assert result.num_people == 1 and result.arrays["valid"].all()
    np.testing.assert_allclose(result.arrays["boxes_xyxy"][:, 0], [[20, 30, 100, 200]] * 3)
    assert (result.arrays["box_source"] == 1).all() and (result.arrays["box_score"] == 1.0).all()


def test_ok_boxes_per_frame_replace_or_add_to_the_detector_and_each_box_records_its_source(pipeline, clip):
    frame_boxes = {1: ((12, 12, 58, 148),), 2: ()}
    replaced = pipeline.run_video(clip, frame_boxes=frame_boxes)
    assert replaced.arrays["valid"].sum(axis=1).tolist() == [2, 1, 0]
    codes = [sorted(int(c) for c in row if c >= 0) for row in replaced.arrays["box_source"]]
    assert codes == [[0, 0], [1], []]
    block = replaced.meta["detection"]  # frame 0 was detected: by which detector, with which settings
    assert block["detector"] == "scripted" and block["box_sources"] == ["detected", "given"]
    assert block["settings"] == {"conf": 0.5, "min_height_px": 0.0, "max_people": None}
    np.testing.assert_allclose(sorted(replaced.arrays["box_score"][0]), [0.8, 0.9])
    added = pipeline.run_video(
        clip, frame_boxes={1: ((12, 12, 58, 148),), 2: ((100, 230, 140, 240),)}, boxes_mode="add"
    )
    # frame 1: the given box covers the first detection (IoU ≥ 0.5), which is dropped; frame 2: nothing overlaps
    codes = [sorted(int(c) for c in row if c >= 0) for row in added.arrays["box_source"]]
    assert codes == [[0, 0], [0, 1], [0, 0, 1]]


def test_ok_photo_given_boxes_are_recorded_as_given(pipeline, assets_dir):
    image = cv2.imread(str(assets_dir / "images" / PHOTO))
    result = pipeline.run_image(image, [[264.0, 1453.0, 1609.0, 2661.0]])
    assert result.arrays["box_source"].tolist() == [[1]]
    assert result.meta["detection"]["box_sources"][1] == "given"


# -- infer end to end: a video's boxes file, settings in the result, and its previews ------------------------------


def test_ok_infer_video_with_boxes_file_writes_provenance_and_a_preview_clip_and_sheet(
    small_checkpoints, assets_dir, clip, tmp_path, capsys
):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({str(f): [[15, 20, 95, 230]] for f in range(3)}))
    out = tmp_path / "out"
    argv = ["infer", str(clip), "--out", str(out), "--checkpoint-dir", str(small_checkpoints)]
    argv += ["--assets-dir", str(assets_dir), "--model", "resnet", "--device", "cpu", "--hypotheses", "1"]
    argv += ["--boxes-file", str(boxes), "--detect-threshold", "0.35", "--max-people", "3", "--preview"]
    assert main(argv) == 0, capsys.readouterr().err
    result = read_result(out / "clip.json")
    assert result.meta["version"] == "1.2"
    assert result.meta["detection"]["settings"] == {"conf": 0.35, "min_height_px": 0.0, "max_people": 3}
    assert (result.arrays["box_source"] == 1).all() and result.num_frames == 3
    preview, sheet = out / "clip.preview.mp4", out / "clip.contact.png"
    assert preview.stat().st_size > 0 and sheet.stat().st_size > 0
    capture = cv2.VideoCapture(str(preview))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 3
    assert cv2.imread(str(sheet)).shape[1] == 4 * 480
    assert "clip.preview.mp4 (3 frames)" in capsys.readouterr().out


# -- previews ---------------------------------------------------------------------------------------------------------


def test_ok_contact_sheet_spreads_its_frames_over_the_clip_first_and_last_included():
    from mega_runtime.io.preview import contact_sheet_frames

    assert contact_sheet_frames(5) == [0, 1, 2, 3, 4]
    picked = contact_sheet_frames(100)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 99
    assert contact_sheet_frames(0) == []


def test_ok_video_preview_frame_shows_each_mesh_and_box_in_its_track_colour(assets_dir):
    from mega_runtime.io.preview import draw_result_frame, track_colour
    from mega_runtime.io.result import Result
    from mega_runtime.models.assets import read_template_ply

    template = read_template_ply(assets_dir / "template.ply")
    body = np.asarray(template.vertices, np.float32)
    body = body - body.mean(axis=0)
    body[:, 1] *= -1  # the template is y up; the camera frame is y down
    width, height, focal = 320, 240, 300.0
    offsets = np.array([[-0.6, 0.0, 5.0], [0.6, 0.0, 5.0]], np.float32)
    vertices = (body[None] + offsets[:, None])[None, :, None]  # (1, 2, 1, V, 3)
    arrays = {
        "vertices": vertices.astype(np.float32),
        "faces": np.asarray(template.faces, np.int32),
        "valid": np.ones((1, 2), bool),
        "track_ids": np.array([0, 1], np.int32),
        "frame_indices": np.array([7], np.int32),
        "boxes_xyxy": np.array([[[90, 60, 150, 180], [170, 60, 230, 180]]], np.float32),
        "box_source": np.array([[0, 1]], np.int8),
        "box_score": np.array([[0.87, 1.0]], np.float32),
    }
    result = Result(meta={"camera": {"focal_px": focal, "principal_point_px": [160.0, 120.0]}}, arrays=arrays)
    grey = np.full((height, width, 3), 90, np.uint8)
    drawn = draw_result_frame(result, 0, grey)
    changed = np.any(drawn != grey, axis=2)
    for x in (124, 196):  # each body's middle (±0.6 m at 5 m, f = 300 px: 36 px either side of the centre)
        assert changed[110:130, x - 5 : x + 5].mean() > 0.9
    assert not changed[40:, :40].any() and not changed[40:, 280:].any()  # (the top left holds "frame 7")
    assert tuple(drawn[60, 120]) == track_colour(0)  # the top edge of the first box
    assert tuple(drawn[60, 200]) == track_colour(1)
