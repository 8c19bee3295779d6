"""``serve`` applies every temporal option of the protocol (as ``infer`` does) and reports its defaults in hello."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_runtime import defaults
from mega_runtime.io.protocol import infer_defaults
from tests.runtime.serve_helpers import ServeProcess

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"


@pytest.fixture(scope="module")
def video(assets_dir, tmp_path_factory) -> Path:
    """A 6-frame MJPG clip panning over the photo."""
    image = cv2.imread(str(assets_dir / "images" / PHOTO))
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(6):
        writer.write(np.roll(small, 2 * i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def server(small_checkpoints, assets_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve-temporal")
    made = ServeProcess(
        "--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir), "--work-dir", str(work)
    )
    yield made
    assert made.close() == 0, made.stderr.decode()[-3000:]
    assert not made.non_json, f"stdout carried non-protocol lines: {made.non_json[:3]}"


def test_ok_hello_reports_the_infer_defaults(server):
    server.sync()
    server.send("hello", "h")
    reply = server.until("h", ("hello",))[-1]
    assert reply["defaults"] == json.loads(json.dumps(infer_defaults()))
    assert reply["defaults"]["hypotheses"] == defaults.NUM_HYPOTHESES
    assert reply["defaults"]["temporal"]["causal"] is defaults.ONE_EURO_CAUSAL


def test_ok_d_cutoff_and_causal_reach_the_temporal_filter(server, video, tmp_path):
    server.sync()
    temporal = {"path": "coherent", "smooth": True, "beta": 1.5, "d_cutoff": 2.5, "causal": True, "smoothness": 3.0}
    server.send(
        "infer",
        "t1",
        source={"path": str(video)},
        out_dir=str(tmp_path),
        model="resnet",
        hypotheses=2,
        device="cpu",
        frames={"stop": 4},
        temporal=temporal,
    )
    reply = server.until("t1")[-1]
    assert reply["type"] == "result", reply
    if reply["num_people"] == 0:
        pytest.skip("the detector found nobody in the small clip; nothing to smooth")
    meta = json.loads(Path(reply["json_path"]).read_text(encoding="utf-8"))
    assert meta["temporal"]["path"] == "coherent" and meta["temporal"]["smooth"] is True
    assert meta["temporal"]["smoothness_weight"] == 3.0
    assert meta["temporal"]["one_euro"] == {
        "min_cutoff": defaults.ONE_EURO_MIN_CUTOFF_HZ,
        "beta": 1.5,
        "d_cutoff": 2.5,
        "two_sided": False,
    }


def test_ng_bad_temporal_is_refused_before_the_job_runs(server, video, tmp_path):
    server.sync()
    server.send("infer", "t2", source={"path": str(video)}, out_dir=str(tmp_path), temporal={"causal": "yes"})
    reply = server.until("t2")[-1]
    assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    assert "'temporal.causal' must be true or false" in reply["message"]
    assert not list(tmp_path.iterdir())
