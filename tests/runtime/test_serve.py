"""``mega_runtime serve`` with real processes over pipes: the protocol, its failures, limits and resource use.

Small seeded checkpoints, the ResNet model, one or two hypotheses and given boxes keep it fast.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_runtime.protocol import LineReader
from mega_runtime.result import read_result
from tests.runtime.serve_helpers import ServeProcess

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
BOX = [264.0, 1453.0, 1609.0, 2661.0]
#: Growth of the server's resident memory allowed between job 10 (warm) and job 50 (docs/protocol.md).
RSS_BOUND_MIB = 32


@pytest.fixture
def photo(assets_dir) -> Path:
    return assets_dir / "images" / PHOTO


@pytest.fixture
def server(small_checkpoints, assets_dir, tmp_path):
    made = ServeProcess(
        "--checkpoint-dir",
        str(small_checkpoints),
        "--assets-dir",
        str(assets_dir),
        "--work-dir",
        str(tmp_path / "work"),
    )
    yield made
    made.close()
    assert not made.non_json, f"stdout carried non-protocol lines: {made.non_json[:3]}"


@pytest.fixture(scope="module")
def shared_server(small_checkpoints, assets_dir):
    """One server for the tests that only exchange small messages (it must survive each of them)."""
    made = ServeProcess("--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir))
    yield made
    assert made.close() == 0
    assert not made.non_json


def infer(server, request_id, source, out_dir, **fields):
    fields = {"model": "resnet", "hypotheses": 1, "device": "cpu", "boxes": [BOX], **fields}
    server.send("infer", request_id, source=source, out_dir=str(out_dir), **fields)


def test_ok_hello_reports_versions_devices_models_and_limits(server):
    server.send("hello", "h")
    reply = server.until("h", ("hello",))[-1]
    assert reply["protocol"] == 1 and reply["v"] == 1 and reply["type"] == "hello"
    assert "cpu" in reply["devices"] and reply["torch"].startswith("2.")
    assert "mega_resnet" in reply["models"] and "mesh_vqvae_54" in reply["models"]
    assert reply["limits"]["max_inline_bytes"] > 0


def test_ok_hello_names_missing_checkpoints_with_the_fix(assets_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    server = ServeProcess("--checkpoint-dir", str(empty), "--assets-dir", str(assets_dir))
    try:
        server.send("hello", "h")
        reply = server.until("h", ("hello",))[-1]
    finally:
        assert server.close() == 0
    assert reply["models"] == []
    missing = {m["what"].split(":")[0]: m["fix"] for m in reply["missing"]}
    assert missing.get("mega_hrnet")


def test_ok_photo_by_path_writes_a_readable_result_pair(server, photo, tmp_path):
    infer(server, "j1", {"path": str(photo)}, tmp_path / "out", hypotheses=2)
    replies = server.until("j1")
    kinds = [r["type"] for r in replies]
    assert kinds[0] == "accepted" and "progress" in kinds and kinds[-1] == "result"
    result = replies[-1]
    assert (result["num_people"], result["num_hypotheses"], result["cancelled"]) == (1, 2, False)
    loaded = read_result(result["json_path"])
    assert loaded.arrays["vertices"].shape == (1, 1, 2, 6890, 3)
    assert loaded.meta["source"]["path"] == str(photo.resolve())


def test_ok_inline_photo_and_inline_result_leave_nothing_behind(server, photo, tmp_path):
    data = base64.b64encode(photo.read_bytes()).decode()
    server.send(
        "infer",
        "j",
        source={"data": data, "name": PHOTO},
        model="resnet",
        hypotheses=1,
        boxes=[BOX],
        **{"return": "inline"},
    )
    result = server.until("j")[-1]
    assert result["type"] == "result", result
    arrays = np.load(__import__("io").BytesIO(base64.b64decode(result["npz"])), allow_pickle=False)
    assert arrays["vertices"].shape == (1, 1, 1, 6890, 3)
    assert result["meta"]["schema"] and result["meta"]["source"]["path"] == PHOTO
    assert not any((tmp_path / "work" / "jobs").glob("*/*")), "the private job folder was not removed"


def test_ok_existing_results_are_never_overwritten(server, photo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{photo.stem}.json").write_text("mine")
    infer(server, "j", {"path": str(photo)}, out)
    result = server.until("j")[-1]
    assert Path(result["json_path"]).name == f"{photo.stem}-2.json"
    assert (out / f"{photo.stem}.json").read_text() == "mine"


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b"this is not json\n", "bad_json", "not valid JSON"),
        (b"[1, 2]\n", "bad_json", "not a JSON object"),
        (b'{"v": 1, "id": "x", "op": "dance"}\n', "unknown_op", "unknown op 'dance'"),
        (b'{"v": 7, "id": "x", "op": "hello"}\n', "protocol_version", "speaks protocol 1; the request is protocol 7"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {}}\n', "bad_request", "exactly one of 'path' or 'data'"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "hypotheses": 0}\n', "bad_request", "≥ 1"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "name": "../x"}\n', "bad_request", "plain"),
    ],
)
def test_ng_bad_requests_get_an_error_and_the_server_keeps_going(shared_server, line, code, words):
    server = shared_server
    server.send_raw(line)
    reply = server.next()
    assert reply["type"] == "error" and reply["code"] == code and words in reply["message"], reply
    server.send("hello", "after")
    assert server.until("after", ("hello",))[-1]["protocol"] == 1


def test_ng_oversized_message_is_refused_and_skipped_to_its_end(small_checkpoints, assets_dir):
    server = ServeProcess("--checkpoint-dir", str(small_checkpoints), "--max-message-bytes", "4096")
    try:
        server.send("infer", "big", source={"data": "A" * 20000, "name": "x.png"})
        reply = server.next()
        assert reply["code"] == "too_large" and "4096" in reply["message"]
        server.send("hello", "after")
        assert server.until("after", ("hello",))[-1]["type"] == "hello"
    finally:
        assert server.close() == 0


def test_ng_inline_payload_over_its_limit_is_refused(small_checkpoints):
    server = ServeProcess("--checkpoint-dir", str(small_checkpoints), "--max-inline-bytes", "1000")
    try:
        server.send("infer", "big", source={"data": base64.b64encode(b"x" * 3000).decode(), "name": "x.png"})
        reply = server.until("big")[-1]
        assert reply["code"] == "too_large" and "1000 bytes" in reply["message"]
    finally:
        server.close()


def test_ng_missing_path_is_not_found(server, tmp_path):
    infer(server, "j", {"path": str(tmp_path / "nope.jpg")}, tmp_path / "out")
    reply = server.until("j")[-1]
    assert reply["code"] == "not_found" and "nope.jpg" in reply["message"]


def test_ng_unreadable_image_is_a_job_error_with_a_hint(server, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    infer(server, "j", {"path": str(bad)}, tmp_path / "out")
    reply = server.until("j")[-1]
    assert reply["type"] == "error" and reply["code"] == "media_unreadable" and reply["hint"]


def test_ok_two_jobs_queue_and_run_in_arrival_order_and_a_queued_one_can_be_cancelled(server, photo, tmp_path):
    for rid in ("first", "second", "third"):
        infer(server, rid, {"path": str(photo)}, tmp_path / rid)
    server.send("cancel", "c", job="third")
    replies = server.until("third")
    accepted = [r["queued"] for r in replies if r["type"] == "accepted"]
    assert accepted == [0, 1, 2]
    ends = [(r["id"], r["type"]) for r in replies if r["type"] in ("result", "error")]
    assert ends == [("first", "result"), ("second", "result"), ("third", "error")]
    assert replies[-1]["code"] == "cancelled"


def test_ok_cancel_in_the_middle_of_a_video_returns_the_frames_done(server, photo, tmp_path):
    image = cv2.imread(str(photo))
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(60):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
    server.send("infer", "v", source={"path": str(video)}, out_dir=str(tmp_path / "out"), model="resnet", hypotheses=1)
    while True:
        reply = server.next()
        if reply["type"] == "progress" and reply["stage"] == "frames" and reply["done"] >= 3:
            break
        assert reply["type"] not in ("result", "error"), reply
    server.send("cancel", "c", job="v")
    result = server.until("v")[-1]
    assert result["type"] == "result" and result["cancelled"]
    assert 3 <= result["num_frames"] < 60
    assert any("cancelled after" in w for w in result["warnings"])
    assert read_result(result["json_path"]).arrays["vertices"].shape[0] == result["num_frames"]
    assert not list((tmp_path / "out").glob("*.partial.*")), "the partial pair must go once the result is written"


def test_ok_killed_runtime_ends_its_output_cleanly(server, photo, tmp_path):
    infer(server, "j", {"path": str(photo)}, tmp_path / "out")
    assert server.next()["type"] == "accepted"
    server.process.kill()
    while (reply := server.next(30)) is not None:
        assert reply["type"] in ("progress", "result")
    assert server.process.wait(10) == -9


def test_ok_fifty_jobs_in_a_row_keep_memory_flat(server, photo, tmp_path):
    rss = {}
    for i in range(1, 51):
        infer(server, f"j{i}", {"path": str(photo)}, tmp_path / "out", **{"return": "inline"})
        assert server.until(f"j{i}")[-1]["type"] == "result"
        if i in (10, 50):
            rss[i] = server.rss_mib()
    growth = rss[50] - rss[10]
    print(f"resident memory after job 10: {rss[10]:.0f} MiB, after job 50: {rss[50]:.0f} MiB ({growth:+.1f} MiB)")
    assert growth < RSS_BOUND_MIB


def test_ok_runtime_opens_no_socket_and_writes_only_in_the_job_folder(server, photo, tmp_path):
    before = {p for p in tmp_path.rglob("*")}
    infer(server, "j", {"path": str(photo)}, tmp_path / "out")
    result = server.until("j")[-1]
    links = [os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.pid}/fd")]
    assert not [link for link in links if link.startswith("socket:")], links
    made = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in made if not p.is_relative_to(tmp_path / "out") and not p.is_relative_to(tmp_path / "work")]
    assert not outside
    assert {Path(result["json_path"]), Path(result["npz_path"])} <= made


def test_ok_end_of_input_shuts_the_server_down(small_checkpoints):
    run = subprocess.run(
        [sys.executable, "-m", "mega_runtime", "serve", "--checkpoint-dir", str(small_checkpoints)],
        input=b'{"v": 1, "id": "a", "op": "cancel", "job": "none"}\n',
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert [json.loads(line)["type"] for line in run.stdout.splitlines()] == ["ack"]


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read1(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_ok_line_reader_splits_lines_across_chunks_and_skips_long_ones():
    reader = LineReader(_Chunks(b'{"a"', b": 1}\n" + b"x" * 50, b"y" * 50 + b"\nshort\n", b"tail"), limit=40)
    assert list(reader) == [b'{"a": 1}', None, b"short", b"tail"]
