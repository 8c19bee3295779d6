"""The video loop with prefetching and a detection cadence, on the small seeded checkpoints: the same result with and
without prefetch, the same people as every-frame detection on the frames where the detector runs."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mega_runtime.pipeline.chain import Pipeline, PipelineConfig
from mega_runtime.pipeline.detect import Detection
from tests.runtime.test_video_speed import PatchDetector, write_clip


class PatchPeople:
    """The chain's detector interface around :class:`PatchDetector`."""

    name = "patch"

    def __init__(self) -> None:
        self.find = PatchDetector()

    def detect(self, image_bgr):
        return [Detection(tuple(float(v) for v in box), 0.9) for box in self.find(image_bgr)]


@pytest.fixture(scope="module")
def pipeline(small_checkpoints, assets_dir):
    config = PipelineConfig(model="mega_resnet", num_hypotheses=2, batch_size=2)
    return Pipeline.load(config, small_checkpoints, assets_dir, detector=PatchPeople())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    write_clip(path, frames=6)
    return path


@pytest.fixture(scope="module")
def plain(pipeline, clip):
    """The clip's result without prefetching, the detector on every frame."""
    pipeline.detector.find.calls = 0
    result = pipeline.run_video(clip, prefetch=0)
    assert pipeline.detector.find.calls == 6
    return result


def _same(a, b, frames=slice(None)):
    assert a.arrays.keys() == b.arrays.keys()
    for name, values in a.arrays.items():
        if name in ("faces", "track_ids"):
            np.testing.assert_array_equal(values, b.arrays[name], err_msg=name)
        else:
            np.testing.assert_array_equal(values[frames], b.arrays[name][frames], err_msg=name)


def test_prefetching_leaves_the_video_result_unchanged(pipeline, clip, plain):
    ahead = pipeline.run_video(clip, prefetch=2)
    _same(plain, ahead)
    assert plain.num_frames == 6 and plain.arrays["valid"].all()
    assert not [t for t in threading.enumerate() if t.name.startswith("mega-")]


def test_detecting_every_third_frame_matches_every_frame_where_the_detector_runs(pipeline, clip, plain):
    pipeline.detector.find.calls = 0
    third = pipeline.run_video(clip, detect_every=3)
    assert pipeline.detector.find.calls == 2 and third.meta["source"]["detect_every"] == 3
    assert plain.meta["source"]["detect_every"] == 1
    _same(plain, third, frames=slice(0, None, 3))
    assert third.arrays["valid"].all() and third.arrays["track_ids"].tolist() == [0]
    moved = np.abs(third.arrays["boxes_xyxy"] - plain.arrays["boxes_xyxy"]).max()
    assert moved < 3.0  # the propagated boxes stay on the person


def test_a_cancelled_prefetched_video_stops_its_reader(pipeline, clip):
    calls = iter(range(100))
    result = pipeline.run_video(clip, should_stop=lambda: next(calls) >= 2, prefetch=1)
    assert result.num_frames == 2 and result.meta["warnings"][0] == "cancelled after 2 frames"
    assert not [t for t in threading.enumerate() if t.name.startswith("mega-")]
