"""The whole chain on the small seeded checkpoints: photos, videos, result files, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mega_runtime.commands.cli import main
from mega_runtime.io.result import read_result
from mega_runtime.pipeline.chain import Pipeline, PipelineConfig
from mega_runtime.pipeline.detect import Detection
from mega_runtime.pipeline.media import FrameRange

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


@pytest.fixture(scope="module")
def checkpoints(small_checkpoints):
    return small_checkpoints


class MovingBox:
    """A fake detector: one box that moves right by ``step`` pixels per call (for video tests)."""

    name = "fake"

    def __init__(self, box, step=4.0):
        self.box, self.step, self.calls = np.asarray(box, float), step, 0

    def detect(self, image_bgr):
        box = self.box + np.array([self.step, 0, self.step, 0]) * self.calls
        self.calls += 1
        return [Detection(tuple(float(v) for v in box), 0.9)]


@pytest.fixture(scope="module")
def pipeline(checkpoints, assets_dir):
    config = PipelineConfig(model="mega_resnet", num_hypotheses=3, batch_size=4)
    return Pipeline.load(config, checkpoints, assets_dir, detector=MovingBox((10, 10, 100, 200)))


def test_photo_chain_matches_the_official_demo_camera_and_tokens(pipeline, fixtures_dir, assets_dir):
    ref = np.load(fixtures_dir / "pipeline_demo" / "reference.npz")
    result = pipeline.run_image_file(assets_dir / "images" / PHOTO, boxes=[ref["boxes_xyxy"][0].tolist()])
    arrays = result.arrays
    assert result.num_people == 1 and result.num_hypotheses == 3
    np.testing.assert_allclose(arrays["cam_t"][0, 0, 0], ref["cam_t"][0], atol=1e-4, rtol=1e-4)
    # hypothesis 0 is the plain argmax (the official demo additionally zeroes one RNG-chosen token)
    assert np.array_equal(arrays["tokens"][0, 0, 0], ref["logits"][0].argmax(-1))
    posed = arrays["vertices"][0, 0, 0] - arrays["cam_t"][0, 0, 0]
    canonical = pipeline.mega.decode_meshes(torch.from_numpy(ref["logits"][0].argmax(-1))[None])[0]
    np.testing.assert_allclose(posed, (canonical @ torch.from_numpy(ref["rotmat"][0]).T).numpy(), atol=2e-5)
    assert result.meta["camera"]["focal_px"] == pytest.approx(float(ref["focal_length"][0]))
    assert result.meta["source"]["width"] == 2000 and result.meta["source"]["height"] == 3000
    assert arrays["faces"].shape == (13776, 3) and arrays["valid"].all()


def test_photo_progress_reports_each_stage_and_leaves_the_result_unchanged(pipeline):
    image = np.random.default_rng(0).integers(0, 255, (240, 180, 3), dtype=np.uint8)
    boxes = [[10.0, 10.0, 90.0, 200.0], [60.0, 20.0, 170.0, 230.0]] * 3  # 6 people: two batches of up to 4
    steps: list[tuple[str, int, int | None]] = []
    reported = pipeline.run_image(image, boxes, progress=lambda *step: steps.append(step))
    plain = pipeline.run_image(image, boxes)
    assert steps == [("detect", 0, 1), ("detect", 1, 1), ("model", 0, 6), ("model", 4, 6), ("model", 6, 6)]
    for name, values in plain.arrays.items():
        np.testing.assert_array_equal(reported.arrays[name], values, err_msg=name)


def test_photo_without_people_gives_an_empty_result_with_a_warning(pipeline):
    class Nobody:
        name = "none"

        def detect(self, image_bgr):
            return []

    empty = Pipeline(pipeline.mega, Nobody(), pipeline.faces, pipeline.config, pipeline.model_info)
    result = empty.run_image(np.zeros((64, 64, 3), np.uint8))
    assert result.num_people == 0 and "no person" in result.meta["warnings"][0]


def _clip(path, photo, frames=6):
    """A synthetic clip: a window sliding across a real photo."""
    h, w = 240, 160
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (w, h))
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8))
    for i in range(frames):
        writer.write(np.ascontiguousarray(small[60 : 60 + h, 20 + 3 * i : 20 + 3 * i + w]))
    writer.release()


def test_video_gives_tracked_people_per_frame_with_progress(pipeline, assets_dir, tmp_path):
    from mega_runtime.pipeline.media import read_image

    clip = tmp_path / "clip.avi"
    _clip(clip, read_image(assets_dir / "images" / PHOTO))
    pipeline.detector.calls = 0
    seen = []
    result = pipeline.run_video(clip, FrameRange(0, None, 2), progress=lambda d, t: seen.append((d, t)))
    assert result.arrays["frame_indices"].tolist() == [0, 2, 4]
    assert result.arrays["track_ids"].tolist() == [0] and result.arrays["valid"].all()
    assert result.meta["source"]["fps"] == pytest.approx(12.0)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result.arrays["vertices"].shape == (3, 1, 3, 6890, 3)


def test_cancelled_video_keeps_the_frames_done(pipeline, assets_dir, tmp_path):
    from mega_runtime.pipeline.media import read_image

    clip = tmp_path / "clip.avi"
    _clip(clip, read_image(assets_dir / "images" / PHOTO))
    pipeline.detector.calls = 0
    calls = iter(range(100))
    result = pipeline.run_video(clip, should_stop=lambda: next(calls) >= 2)
    assert result.num_frames == 2 and result.meta["warnings"][0] == "cancelled after 2 frames"


def _infer(checkpoints, assets_dir, *extra):
    return [
        "infer",
        "--checkpoint-dir",
        str(checkpoints),
        "--assets-dir",
        str(assets_dir),
        "--model",
        "resnet",
        "--device",
        "cpu",
        *extra,
    ]


def test_infer_writes_a_result_pair_and_previews_per_input(checkpoints, assets_dir, tmp_path, capsys):
    out = tmp_path / "out"
    photo = assets_dir / "images" / PHOTO
    args = _infer(
        checkpoints,
        assets_dir,
        str(photo),
        "--out",
        str(out),
        "--hypotheses",
        "2",
        "--preview",
        "--boxes",
        "270,1470,1590,2625",
    )
    assert main(args) == 0
    stem = photo.stem
    result = read_result(out / f"{stem}.json")
    assert result.num_people == 1 and result.num_hypotheses == 2
    for suffix in ("preview.png", "uncertainty.png"):
        assert (out / f"{stem}.{suffix}").stat().st_size > 0
    assert "1 people" in capsys.readouterr().out
    before = (out / f"{stem}.json").read_bytes()
    assert main(args) == 2  # never overwrites
    assert "--overwrite" in capsys.readouterr().err
    assert (out / f"{stem}.json").read_bytes() == before
    assert json.loads(before)["model"]["name"] == "mega_resnet"


def test_infer_reports_a_bad_input_processes_the_rest_and_leaves_nothing_for_it(
    checkpoints, assets_dir, tmp_path, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not a photo")
    cv2.imwrite(str(folder / "blank.png"), np.full((200, 300, 3), 127, np.uint8))
    out = tmp_path / "out"
    assert main(_infer(checkpoints, assets_dir, str(folder), "--out", str(out), "--hypotheses", "1")) == 2
    err = capsys.readouterr()
    assert "empty.jpg" in err.err and "is empty" in err.err
    assert "corrupt.png" in err.err and "not an image OpenCV can decode" in err.err
    assert "2 of 3 input(s) failed" in err.err  # notes.txt is not media and is not picked up
    assert sorted(p.name for p in out.iterdir()) == ["blank.json", "blank.npz"]
    blank = read_result(out / "blank.json")
    assert blank.num_people == 0 and "no person" in blank.meta["warnings"][0]


def test_infer_names_missing_weights_and_the_fetch_command(assets_dir, tmp_path, capsys):
    photo = assets_dir / "images" / PHOTO
    code = main(_infer(tmp_path / "no-weights", assets_dir, str(photo), "--out", str(tmp_path / "out")))
    assert code == 2
    err = capsys.readouterr().err
    assert "mega_resnet" in err and "weights fetch" in err
    assert not (tmp_path / "out").exists()


def test_video_with_undecodable_frames_keeps_the_rest(pipeline, assets_dir, tmp_path):
    from mega_runtime.pipeline.media import read_image

    clip = tmp_path / "clip.avi"
    _clip(clip, read_image(assets_dir / "images" / PHOTO), frames=6)
    data = bytearray(clip.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) >= 6
    for j in range(starts[2] + 2, starts[2] + 600):  # wreck frame 2's JPEG data
        data[j] = 0
    clip.write_bytes(bytes(data))
    pipeline.detector.calls = 0
    result = pipeline.run_video(clip)
    assert 2 not in result.arrays["frame_indices"].tolist() and result.num_frames == 5
    assert any("could not be decoded" in w for w in result.meta["warnings"])


def test_cli_rejects_bad_usage_before_loading_the_model(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.zeros((10, 10, 3), np.uint8))
    assert main(["infer", str(photo), "--out", str(tmp_path), "--boxes", "1,2,3"]) == 2
    assert "4 numbers" in capsys.readouterr().err
    assert main(["infer", str(photo), "--out", str(tmp_path), "--frames", "x"]) == 2
    assert "START:STOP:STEP" in capsys.readouterr().err


def test_score_steps_change_only_the_log_likelihood_and_are_recorded(pipeline, assets_dir, tmp_path, checkpoints):
    image = np.random.default_rng(1).integers(0, 255, (240, 180, 3), dtype=np.uint8)
    boxes = [[10.0, 10.0, 90.0, 200.0]]
    free = Pipeline(
        pipeline.mega, pipeline.detector, pipeline.faces, replace(pipeline.config, score_steps=1), pipeline.model_info
    )
    default, cheap = pipeline.run_image(image, boxes), free.run_image(image, boxes)
    assert default.meta["scoring"] == {"estimator": "fixed-order blocks", "steps": 2}
    assert cheap.meta["scoring"] == {"estimator": "fixed-order blocks", "steps": 1}
    for name, values in default.arrays.items():
        if name != "log_likelihood":
            np.testing.assert_array_equal(cheap.arrays[name], values, err_msg=name)
    assert not np.array_equal(cheap.arrays["log_likelihood"], default.arrays["log_likelihood"])
    assert np.isfinite(cheap.arrays["log_likelihood"]).all() and (cheap.arrays["log_likelihood"] < 0).all()
    with pytest.raises(ValueError, match="score_steps"):
        replace(pipeline.config, score_steps=0)
    out = tmp_path / "out"
    args = _infer(checkpoints, assets_dir, str(assets_dir / "images" / PHOTO), "--out", str(out))
    assert main([*args, "--hypotheses", "1", "--boxes", "270,1470,1590,2625", "--score-steps", "1"]) == 0
    assert read_result(out / f"{Path(PHOTO).stem}.json").meta["scoring"]["steps"] == 1
    with pytest.raises(SystemExit) as refused:
        main([*args, "--score-steps", "0"])
    assert refused.value.code == 2
