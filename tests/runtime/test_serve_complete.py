"""The ``generate`` and ``complete`` ops of ``serve`` (docs/protocol.md), through a real server process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mega_runtime.io.result import read_result
from tests.runtime.serve_helpers import ServeProcess

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
BOX = [264.0, 1453.0, 1609.0, 2661.0]
WAIT_S = 180.0


@pytest.fixture(scope="module")
def server(small_checkpoints, assets_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve-complete")
    made = ServeProcess(
        "--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir), "--work-dir", str(base / "work")
    )
    yield made
    assert made.close() == 0, made.stderr.decode()[-3000:]
    assert not made.non_json, f"stdout carried non-protocol lines: {made.non_json[:3]}"


def test_ok_generate_then_complete_a_generated_body(server, tmp_path):
    server.send("generate", "g1", count=2, seed=1, device="cpu", out_dir=str(tmp_path))
    replies = server.until("g1", timeout_s=WAIT_S)
    assert replies[0]["type"] == "accepted" and replies[-1]["type"] == "result", replies[-1]
    generated = replies[-1]
    assert (generated["num_people"], generated["num_hypotheses"]) == (2, 1)
    assert Path(generated["json_path"]) == tmp_path / "generated.json"

    server.send(
        "complete", "c1", result=generated["json_path"], person=1, keep="hands", count=3, device="cpu",
        out_dir=str(tmp_path),
    )  # fmt: skip
    replies = server.until("c1", timeout_s=WAIT_S)
    assert replies[-1]["type"] == "result", replies[-1]
    done = replies[-1]
    assert done["num_hypotheses"] == 3 and Path(done["json_path"]).name == "generated.completed.json"
    completed, source = read_result(done["json_path"]), read_result(generated["json_path"])
    kept = completed.meta["completion"]["kept_tokens"]
    assert np.all(completed.arrays["tokens"][0, 0][:, kept] == source.arrays["tokens"][0, 1, 0, kept])


def test_ok_complete_a_photo_result_with_vertex_indices_uses_the_image(server, assets_dir, tmp_path):
    photo = assets_dir / "images" / PHOTO
    server.send(
        "infer", "i1", source={"path": str(photo)}, model="resnet", hypotheses=1, device="cpu", boxes=[BOX],
        out_dir=str(tmp_path),
    )  # fmt: skip
    inferred = server.until("i1", timeout_s=WAIT_S)[-1]
    assert inferred["type"] == "result", inferred
    server.send(
        "complete", "c2", result=inferred["json_path"], keep=list(range(0, 400)), count=2, device="cpu", name="mine",
        out_dir=str(tmp_path),
    )  # fmt: skip
    done = server.until("c2", timeout_s=WAIT_S)[-1]
    assert done["type"] == "result", done
    assert Path(done["json_path"]) == tmp_path / "mine.json"
    assert read_result(done["json_path"]).meta["completion"]["conditioning"] == "image"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"result": "relative.json", "keep": "head"}, "bad_request"),
        ({"result": "/no/such/result.json", "keep": "head"}, "not_found"),
        ({"result": "/tmp/x.json", "keep": [6890]}, "bad_request"),
        ({"result": "/tmp/x.json", "keep": "head", "coverage": 0}, "bad_request"),
        ({"result": "/tmp/x.json", "keep": "head", "count": 0}, "bad_request"),
        ({"result": "/tmp/x.json", "keep": "head", "pin": "yes"}, "bad_request"),
        ({"result": "/tmp/x.json", "keep": "head", "falloff_m": -0.1}, "bad_request"),
    ],
)
def test_ng_bad_complete_requests(server, fields, code):
    server.send("complete", "bad", device="cpu", **fields)
    reply = server.until("bad", timeout_s=WAIT_S)[-1]
    assert reply["type"] == "error" and reply["code"] == code, reply


@pytest.mark.parametrize("fields", [{"count": 0}, {"stack": 1}])
def test_ng_bad_generate_request(server, fields):
    server.send("generate", "badg", **fields)
    reply = server.until("badg", timeout_s=WAIT_S)[-1]
    assert reply["type"] == "error" and reply["code"] == "bad_request", reply


def test_ok_generate_stacked_bodies_are_one_person(server, tmp_path):
    server.send("generate", "gs", count=3, seed=2, stack=True, device="cpu", out_dir=str(tmp_path), steps=2)
    done = server.until("gs", timeout_s=WAIT_S)[-1]
    assert done["type"] == "result", done
    assert (done["num_people"], done["num_hypotheses"]) == (1, 3)
