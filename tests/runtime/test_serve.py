"""``mega_runtime serve`` with real processes over pipes: the protocol, its failures, limits and resource use.

Small seeded checkpoints, the ResNet model, one or two hypotheses and given boxes keep it fast. Most tests share
one warm server (``server``): each starts with :meth:`ServeProcess.sync`, so replies left from an earlier test
never leak into it, and the server must survive every one of them. Tests that need a fresh process (other
limits, an empty checkpoint folder, a kill, a shutdown, a noisy library) start their own.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from mega_runtime.io.protocol import LineReader
from mega_runtime.io.result import read_result
from tests.runtime.serve_helpers import NOISY_SERVE, ServeProcess

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
BOX = [264.0, 1453.0, 1609.0, 2661.0]
NUM_VIDEO_FRAMES = 60
#: Resident-memory growth allowed between the medians of jobs 6–15, 26–35 and 41–50 (docs/protocol.md): the smaller
#: of the two steps (a leak lifts both, in proportion to the jobs between the windows; one re-mapping by glibc lifts
#: one) and the whole rise.
RSS_STEP_BOUND_MIB = 16
RSS_BOUND_MIB = 64


@pytest.fixture(scope="module")
def photo(assets_dir) -> Path:
    return assets_dir / "images" / PHOTO


@pytest.fixture(scope="module")
def video(photo, tmp_path_factory) -> Path:
    """A 60-frame MJPG clip (250 × 375 px) panning over the photo."""
    image = cv2.imread(str(photo))
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (small.shape[1], small.shape[0]))
    for i in range(NUM_VIDEO_FRAMES):
        writer.write(np.roll(small, i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def serve_args(small_checkpoints, assets_dir) -> list[str]:
    return ["--checkpoint-dir", str(small_checkpoints), "--assets-dir", str(assets_dir)]


@pytest.fixture(scope="module")
def warm_server(serve_args, tmp_path_factory):
    """One server for the module, its work folder in a temp folder of its own (``made.work_dir``)."""
    base = tmp_path_factory.mktemp("warm")
    made = ServeProcess(*serve_args, "--work-dir", str(base / "work"))
    made.work_dir = base / "work"
    yield made
    assert made.close() == 0, made.stderr.decode()[-3000:]
    assert not made.non_json, f"stdout carried non-protocol lines: {made.non_json[:3]}"


@pytest.fixture
def server(warm_server):
    warm_server.sync()
    return warm_server


@pytest.fixture
def fresh_server(serve_args, tmp_path):
    made = ServeProcess(*serve_args, "--work-dir", str(tmp_path / "work"))
    yield made
    made.close()
    assert not made.non_json, f"stdout carried non-protocol lines: {made.non_json[:3]}"


def infer(server, request_id, source, out_dir, **fields):
    fields = {"model": "resnet", "hypotheses": 1, "device": "cpu", "boxes": [BOX], **fields}
    server.send("infer", request_id, source=source, out_dir=str(out_dir), **fields)


def inline(path: Path) -> dict[str, str]:
    return {"data": base64.b64encode(path.read_bytes()).decode(), "name": path.name}


# -- handshake ------------------------------------------------------------------------------------------------------


def test_ok_hello_reports_versions_devices_models_and_limits(server):
    server.send("hello", "h")
    reply = server.until("h", ("hello",))[-1]
    assert reply["protocol"] == 1 and reply["v"] == 1 and reply["type"] == "hello"
    assert reply["runtime_version"] and reply["python"].startswith("3.")
    assert "cpu" in reply["devices"] and reply["torch"].startswith("2.")
    assert "mega_resnet" in reply["models"] and "mesh_vqvae_54" in reply["models"]
    assert reply["limits"] == {"max_message_bytes": 96 * 2**20, "max_inline_bytes": 64 * 2**20}


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
    assert {"mega_resnet", "mega_hrnet", "mega_vit"} <= set(missing)
    assert str(empty) in missing["mega_hrnet"], "the fix names the folder the file belongs in"
    assert not list(empty.iterdir()), "hello downloads nothing"


# -- jobs -----------------------------------------------------------------------------------------------------------


def test_ok_photo_reports_progress_per_stage(server, photo, tmp_path):
    second = [b + 20.0 for b in BOX]  # two people: one model step each
    infer(server, "jp", {"path": str(photo)}, tmp_path / "out", boxes=[BOX, second])
    replies = server.until("jp")
    assert replies[-1]["type"] == "result" and replies[-1]["num_people"] == 2
    steps = [(r["stage"], r["done"], r["total"]) for r in replies if r["type"] == "progress" and r["stage"] != "load"]
    assert steps[:2] == [("detect", 0, 1), ("detect", 1, 1)]
    model = [s for s in steps if s[0] == "model"]
    assert model[0] == ("model", 0, 2) and model[-1] == ("model", 2, 2)
    assert [done for _, done, _ in model] == sorted(done for _, done, _ in model)
    messages = [r["message"] for r in replies if r["type"] == "progress" and r["stage"] in ("detect", "model")]
    assert all(messages)


def test_ok_photo_by_path_writes_a_readable_result_pair(server, photo, tmp_path):
    infer(server, "j1", {"path": str(photo)}, tmp_path / "out", hypotheses=2)
    replies = server.until("j1")
    kinds = [r["type"] for r in replies]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert {r["stage"] for r in replies if r["type"] == "progress"} >= {"model"}
    result = replies[-1]
    assert (result["num_people"], result["num_hypotheses"], result["cancelled"]) == (1, 2, False)
    assert Path(result["json_path"]).is_absolute() and Path(result["json_path"]).parent == tmp_path / "out"
    loaded = read_result(result["json_path"])
    assert loaded.arrays["vertices"].shape == (1, 1, 2, 6890, 3)
    assert loaded.meta["source"]["path"] == str(photo.resolve())


def test_ok_inline_photo_and_inline_result_leave_nothing_behind(server, photo):
    server.send("infer", "j", source=inline(photo), model="resnet", hypotheses=1, boxes=[BOX], **{"return": "inline"})
    result = server.until("j")[-1]
    assert result["type"] == "result", result
    arrays = np.load(io.BytesIO(base64.b64decode(result["npz"])), allow_pickle=False)
    assert arrays["vertices"].shape == (1, 1, 1, 6890, 3)
    assert result["meta"]["schema"] and result["meta"]["source"]["path"] == PHOTO
    assert "json_path" not in result
    leftovers = [p for p in (server.work_dir / "jobs").glob("*") if p.name.endswith("-j")]  # this job's folder
    assert not leftovers, "the private job folder was not removed"


def test_ok_inline_video_is_read_from_a_temporary_copy_that_is_removed(server, video):
    server.send(
        "infer", "iv", source=inline(video), model="resnet", hypotheses=1, frames={"stop": 2}, **{"return": "inline"}
    )
    result = server.until("iv")[-1]
    assert result["type"] == "result" and result["num_frames"] == 2 and not result["cancelled"], result
    assert result["meta"]["source"]["path"] == video.name
    leftovers = [p for p in (server.work_dir / "jobs").glob("*") if p.name.endswith("-iv")]  # this job's folder
    assert not leftovers, "the private job folder and the copy were not removed"


def test_ok_killed_inline_video_job_leaves_no_temporary_in_the_users_folder(fresh_server, video, tmp_path):
    """The inline clip's temporary copy lives in the server's own job folder, never beside the user's results: a
    SIGKILL (no clean-up runs) must leave nothing hidden or half-written in ``out_dir``."""
    import signal

    server, out = fresh_server, tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    infer(server, "ik", inline(video), out, boxes=None)  # the photo's box lies outside the clip
    while True:  # each call waits (bounded) for the job's next reply; frames being read means the clip was written
        reply = server.until("ik", ("progress", "result", "error"))[-1]
        assert reply["type"] == "progress", f"the job ended before a frame was read: {reply}"
        if reply.get("stage") == "frames":
            break
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.process.poll() is not None, "the killed runtime did not exit within 30 s"
    left = sorted(p.name for p in out.iterdir())
    assert "mine.txt" in left and (out / "mine.txt").read_text() == "a user's file"
    strays = [name for name in left if name.startswith(".") or "inline" in name or name.endswith((".tmp", ".avi"))]
    assert not strays, f"the killed job left temporaries in the user's folder: {strays}"


def test_ok_existing_results_are_never_overwritten(server, photo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{photo.stem}.json").write_text("mine")
    (out / "named.partial.json").write_text("a partial pair kept from a crash")
    infer(server, "j", {"path": str(photo)}, out)
    infer(server, "k", {"path": str(photo)}, out, name="named")
    replies = server.until("k")
    results = {r["id"]: r for r in replies if r["type"] == "result"}
    assert Path(results["j"]["json_path"]).name == f"{photo.stem}-2.json"
    assert Path(results["k"]["json_path"]).name == "named-2.json"
    assert (out / f"{photo.stem}.json").read_text() == "mine"
    assert (out / "named.partial.json").read_text() == "a partial pair kept from a crash"


def test_ok_two_jobs_queue_and_run_in_arrival_order_and_a_queued_one_is_cancelled_at_once(server, photo, tmp_path):
    for rid in ("first", "second", "third"):
        infer(server, rid, {"path": str(photo)}, tmp_path / rid)
    server.send("cancel", "c", job="third")
    replies = server.until("second")
    assert [r["queued"] for r in replies if r["type"] == "accepted"] == [0, 1, 2]
    ends = [(r["id"], r["type"]) for r in replies if r["type"] in ("result", "error", "ack")]
    assert ends == [("c", "ack"), ("third", "error"), ("first", "result"), ("second", "result")]
    assert next(r for r in replies if r["id"] == "c" and r["type"] == "ack")["found"] is True
    assert next(r for r in replies if r["id"] == "third" and r["type"] == "error")["code"] == "cancelled"
    assert not (tmp_path / "third").exists(), "a cancelled queued job writes nothing"


def test_ok_cancel_of_a_running_photo_job_ends_it_with_cancelled_and_no_files(server, photo, tmp_path):
    request = {"v": 1, "id": "p", "op": "infer", "source": {"path": str(photo)}, "out_dir": str(tmp_path / "out")}
    request.update(model="resnet", hypotheses=1, boxes=[BOX])
    cancel = {"v": 1, "id": "c", "op": "cancel", "job": "p"}
    server.send_raw((json.dumps(request) + "\n" + json.dumps(cancel) + "\n").encode())
    replies = server.until("p")
    assert replies[-1]["type"] == "error" and replies[-1]["code"] == "cancelled", replies[-1]
    assert not list((tmp_path / "out").glob("*.json"))


def test_ok_cancel_in_the_middle_of_a_video_returns_the_frames_done(server, video, tmp_path):
    server.send("infer", "v", source={"path": str(video)}, out_dir=str(tmp_path / "out"), model="resnet", hypotheses=1)
    while True:
        reply = server.next()
        if reply["type"] == "progress" and reply["stage"] == "frames" and reply["done"] >= 3:
            break
        assert reply["type"] not in ("result", "error"), reply
    server.send("cancel", "c", job="v")
    replies = server.until("v")
    assert [r["type"] for r in replies if r["id"] == "c"] == ["ack"], "the ack comes before the job's end"
    result = replies[-1]
    assert result["type"] == "result" and result["cancelled"]
    assert 3 <= result["num_frames"] < NUM_VIDEO_FRAMES
    assert any("cancelled after" in w for w in result["warnings"])
    assert read_result(result["json_path"]).arrays["vertices"].shape[0] == result["num_frames"]
    assert not list((tmp_path / "out").glob("*.partial.*")), "the partial pair must go once the result is written"


@pytest.mark.slow
def test_ok_fifty_jobs_in_a_row_keep_memory_flat(fresh_server, photo, tmp_path):
    """On a server of its own: after other work (videos) the allocator may hand memory back and regrow it to its
    earlier peak, which is not a leak but would blur the measure. One reading can sit ~40 MiB off its neighbours
    (glibc trimming and re-mapping), and the resident set can also step up ~40 MiB once and stay there, so three
    windows are compared by their medians (jobs 6–15, 26–35, 41–50): a leak lifts both steps between them, in
    proportion to the jobs in between, while a lone spike lifts no median and a one-off step lifts only one."""
    server = fresh_server
    rss = {}
    for i in range(1, 51):
        infer(server, f"j{i}", {"path": str(photo)}, tmp_path / "out", **{"return": "inline"})
        assert server.until(f"j{i}")[-1]["type"] == "result"
        rss[i] = server.rss_mib()
    warm, middle, late = (float(np.median([rss[i] for i in range(a, a + 10)])) for a in (6, 26, 41))
    print(f"resident memory, medians of jobs 6-15 / 26-35 / 41-50: {warm:.0f} / {middle:.0f} / {late:.0f} MiB")
    later = [rss[i] for i in range(6, 51)]
    print(f"  range over jobs 6-50: {min(later):.0f}-{max(later):.0f} MiB")
    assert min(middle - warm, late - middle) < RSS_STEP_BOUND_MIB, "memory grows from window to window: a leak"
    assert late - warm < RSS_BOUND_MIB


# -- what the runtime touches ---------------------------------------------------------------------------------------


def test_ok_runtime_opens_no_socket_and_writes_only_in_the_job_folder(server, photo, tmp_path):
    before = set(tmp_path.rglob("*"))
    work_before = set(server.work_dir.rglob("*"))
    infer(server, "j", {"path": str(photo)}, tmp_path / "out")
    result = server.until("j")[-1]
    links = [os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.pid}/fd")]
    assert not [link for link in links if link.startswith("socket:")], links
    assert "LISTEN" not in _tcp_states(server.pid)
    made = set(tmp_path.rglob("*")) - before
    assert made == {tmp_path / "out", Path(result["json_path"]), Path(result["npz_path"])}
    assert set(server.work_dir.rglob("*")) == work_before


def _tcp_states(pid: int) -> set[str]:
    """States of the TCP sockets in the process's network namespace (0A = LISTEN)."""
    states = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                # a listening socket in the namespace may belong to another process: only ours matter,
                # and those would also have shown as socket: links above
                states.add("LISTEN" if fields[3] == "0A" and _owned(pid, fields[9]) else fields[3])
    return states


def _owned(pid: int, inode: str) -> bool:
    return any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd"))


def test_ng_request_ids_never_become_paths(server, photo):
    parent = server.work_dir.parent
    before = set(parent.iterdir())
    for rid in ("../..", "../escape", "a/b"):
        server.send(
            "infer", rid, source=inline(photo), model="resnet", hypotheses=1, boxes=[BOX], **{"return": "inline"}
        )
        assert server.until(rid)[-1]["type"] == "result"
    assert set(parent.iterdir()) == before and server.work_dir.is_dir()
    assert not (server.work_dir / "escape").exists()


@pytest.mark.slow
def test_ok_stdout_stays_pure_protocol_when_a_library_prints(serve_args, photo, tmp_path):
    server = ServeProcess(*serve_args, launcher=[sys.executable, "-c", NOISY_SERVE])
    try:
        infer(server, "j", {"path": str(photo)}, tmp_path / "out")
        assert server.until("j")[-1]["type"] == "result"
    finally:
        assert server.close() == 0
    assert not server.non_json
    assert b"stray print from a library" in server.stderr and b"stray bytes on file descriptor 1" in server.stderr


# -- bad requests and limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b"this is not json\n", "bad_json", "not valid JSON"),
        (b"[1, 2]\n", "bad_json", "not a JSON object"),
        (b"\xff\xfe\n", "bad_json", "not valid JSON"),
        (b'{"v": 1, "id": "x", "op": "dance"}\n', "unknown_op", "unknown op 'dance'"),
        (b'{"v": 7, "id": "x", "op": "hello"}\n', "protocol_version", "speaks protocol 1; the request is protocol 7"),
        (b'{"id": "x", "op": "hello"}\n', "protocol_version", "the request is protocol None"),
        (b'{"v": 1, "op": "hello"}\n', "bad_request", "no 'id'"),
        (b'{"v": 1, "id": "x", "op": "cancel"}\n', "bad_request", "'job'"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {}}\n', "bad_request", "exactly one of 'path' or 'data'"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "hypotheses": 0}\n', "bad_request", "≥ 1"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "name": "../x"}\n', "bad_request", "plain"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "out_dir": "rel"}\n', "bad_request", "abs"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"data": "", "name": ".."}}\n', "bad_request", "file name"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"data": "!!", "name": "a.jpg"}}\n', "bad_request", "base64"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a.jpg"}, "model": "big"}\n', "bad_request", "big"),
        (b'{"v": 1, "id": "x", "op": "infer", "source": {"path": "/a"}, "temperature": -1}\n', "bad_request", "≥ 0"),
    ],
)
def test_ng_bad_requests_get_an_error_and_the_server_keeps_going(server, line, code, words):
    server.send_raw(line)
    reply = server.next()
    assert reply["type"] == "error" and reply["code"] == code and words in reply["message"], reply
    assert reply["id"] == (None if code == "bad_json" or b'"id"' not in line else "x")
    server.send("hello", "after")
    assert server.until("after", ("hello",))[-1]["protocol"] == 1


def test_ng_reused_id_of_a_pending_job_is_refused(server, photo, tmp_path):
    infer(server, "dup", {"path": str(photo)}, tmp_path / "out")
    infer(server, "dup", {"path": str(photo)}, tmp_path / "out")
    replies = server.until("dup", ("result",))
    errors = [r for r in replies if r["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "bad_request" and "already used" in errors[0]["message"]
    assert len(list((tmp_path / "out").glob("*.json"))) == 1


@pytest.fixture(scope="module")
def limited_server(small_checkpoints):
    made = ServeProcess(
        "--checkpoint-dir", str(small_checkpoints), "--max-message-bytes", "4096", "--max-inline-bytes", "1000"
    )
    yield made
    assert made.close() == 0


def test_ng_oversized_message_is_refused_and_skipped_to_its_end(limited_server):
    server = limited_server
    server.send("infer", "big", source={"data": "A" * 20000, "name": "x.png"})
    reply = server.next()
    assert reply["code"] == "too_large" and "4096" in reply["message"] and reply["id"] is None
    server.send("hello", "after")
    hello = server.until("after", ("hello",))[-1]
    assert hello["limits"] == {"max_message_bytes": 4096, "max_inline_bytes": 1000}


def test_ng_inline_payload_over_its_limit_is_refused(limited_server):
    server = limited_server
    server.send("infer", "big", source={"data": base64.b64encode(b"x" * 3000).decode(), "name": "x.png"})
    reply = server.until("big")[-1]
    assert reply["code"] == "too_large" and "1000 bytes" in reply["message"]


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


# -- the end of a server ----------------------------------------------------------------------------------------------


def test_ok_killed_runtime_ends_its_output_cleanly(fresh_server, photo, tmp_path):
    server = fresh_server
    infer(server, "j", {"path": str(photo)}, tmp_path / "out")
    assert server.next()["type"] == "accepted"
    server.process.kill()
    while (reply := server.next(30)) is not None:  # None: the harness saw end of output
        assert reply["type"] in ("progress", "result")
    assert server.process.wait(10) == -9


@pytest.mark.slow
def test_ok_shutdown_cancels_the_running_job_answers_the_queued_ones_and_exits_0(fresh_server, video, photo, tmp_path):
    server = fresh_server
    server.send("infer", "v", source={"path": str(video)}, out_dir=str(tmp_path / "v"), model="resnet", hypotheses=1)
    infer(server, "queued", {"path": str(photo)}, tmp_path / "q")
    server.send("shutdown", "s")
    replies = []
    while (reply := server.next(60)) is not None:
        replies.append(reply)
    ends = {r["id"]: r for r in replies if r["type"] in ("result", "error", "ack")}
    assert ends["s"]["type"] == "ack"
    assert ends["queued"]["type"] == "error" and ends["queued"]["code"] == "cancelled"
    video_end = ends["v"]  # cancelled while the model loaded (error), or after some frames (their result)
    if video_end["type"] == "error":
        assert video_end["code"] == "cancelled"
    else:
        assert video_end["cancelled"] and 0 < video_end["num_frames"] < NUM_VIDEO_FRAMES
    assert server.process.wait(30) == 0


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


# -- framing (in process) -------------------------------------------------------------------------------------------


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read1(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_ok_line_reader_splits_lines_across_chunks_and_skips_long_ones():
    reader = LineReader(_Chunks(b'{"a"', b": 1}\n" + b"x" * 50, b"y" * 50 + b"\nshort\n", b"tail"), limit=40)
    assert list(reader) == [b'{"a": 1}', None, b"short", b"tail"]


def test_ok_line_reader_skips_a_huge_line_in_bounded_memory():
    class Huge:
        """A 6.4 MB line, then a short one."""

        def __init__(self) -> None:
            self.sent = 0

        def read1(self, size: int) -> bytes:
            self.sent += 1
            return b"x" * size if self.sent <= 100 else (b"\nok\n" if self.sent == 101 else b"")

    tracemalloc.start()
    try:
        lines = list(LineReader(Huge(), limit=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [None, b"ok"]
    assert peak < 4 * 65536, f"peak {peak} bytes: the reader buffered the long line"


def test_ok_video_boxes_per_frame_and_detection_settings_reach_the_result(server, video, tmp_path):
    boxes = {str(f): [[10.0, 20.0, 120.0, 300.0]] for f in range(2)}
    detection = {"conf": 0.3, "max_people": 2}
    infer(
        server,
        "bp",
        {"path": str(video)},
        tmp_path,
        boxes=None,
        boxes_per_frame=boxes,
        frames={"stop": 2},
        detection=detection,
    )
    result = server.until("bp")[-1]
    assert result["type"] == "result", result
    loaded = read_result(result["json_path"])
    assert loaded.arrays["box_source"].tolist() == [[1], [1]]
    np.testing.assert_allclose(loaded.arrays["boxes_xyxy"][:, 0], [[10, 20, 120, 300]] * 2)
    assert loaded.meta["detection"]["settings"] == {"conf": 0.3, "min_height_px": 0.0, "max_people": 2}


def test_ok_score_steps_reach_the_result_and_bad_ones_are_refused(server, photo, tmp_path):
    infer(server, "s1", {"path": str(photo)}, tmp_path / "out", hypotheses=2, score_steps=1)
    result = server.until("s1")[-1]
    assert result["type"] == "result", result
    assert read_result(result["json_path"]).meta["scoring"] == {"estimator": "fixed-order blocks", "steps": 1}
    infer(server, "s2", {"path": str(photo)}, tmp_path / "out2", score_steps=0)
    refused = server.until("s2")[-1]
    assert refused["type"] == "error" and refused["code"] == "bad_request" and "score_steps" in refused["message"]


#: Runs ``serve --compile`` with ``Mega.compile_models`` recording each call in a file (argv[1]) instead of
#: compiling (compiling the backbone for real takes minutes); the remaining arguments go to serve.
RECORDING_COMPILE_SERVE = """
import sys
from pathlib import Path
from mega_runtime.mega import Mega
from mega_runtime.commands.cli import main
record = Path(sys.argv[1])
def recording_compile(self, backbone=True, transformers=None):
    with record.open("a") as out:
        out.write(f"{self.precision}\\n")
    return True
Mega.compile_models = recording_compile
sys.exit(main(["serve", "--compile", *sys.argv[2:]]))
"""


def test_ok_serve_compile_gives_each_loaded_model_its_fast_kernels_once(serve_args, photo, tmp_path):
    record = tmp_path / "compiled.txt"
    server = ServeProcess(
        str(record), *serve_args, "--work-dir", str(tmp_path / "work"),
        launcher=[sys.executable, "-c", RECORDING_COMPILE_SERVE],
    )  # fmt: skip
    try:
        for rid in ("a", "b"):
            infer(server, rid, {"path": str(photo)}, tmp_path / rid)
            assert server.until(rid)[-1]["type"] == "result"
        infer(server, "c", {"path": str(photo)}, tmp_path / "c", precision="bf16")  # another model: compiled too
        assert server.until("c")[-1]["type"] == "result"
    finally:
        assert server.close() == 0, server.stderr.decode()[-3000:]
    assert record.read_text().split() == ["fp32", "bf16"]
