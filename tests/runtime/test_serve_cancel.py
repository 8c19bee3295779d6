"""``mega_runtime serve``: a cancel is honoured while the model loads and while its weights download.

Real server processes over pipes (tests/runtime/serve_helpers.py). The slow model load is a launcher that wraps
``Pipeline.load`` so it waits until the test creates a file; the slow download is a loopback HTTP server that
emulates the Zenodo record and trickles a large checkpoint archive until the test lets it go. Nothing here
reaches the real network, and every wait is bounded with a message naming what it waited for.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.runtime.serve_helpers import ServeProcess

PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
BOX = [264.0, 1453.0, 1609.0, 2661.0]
RECORD_PATH = "/api/records/14974141"
ARCHIVE = "checkpoint.tar.gz"
#: Declared size of the trickled archive: far more than the test ever lets through.
ARCHIVE_BYTES = 256 * 2**20
#: Bytes per trickled piece, and the longest pause between two pieces (a slow link, not a test's wait).
PIECE_BYTES = 16 * 1024
PIECE_PAUSE_S = 0.02
#: Seconds a cancelled job gets to end once its cancel was acknowledged.
PROMPT_S = 15.0

#: Runs ``mega_runtime serve`` with ``Pipeline.load`` waiting for a file (argv[1]) to exist before it loads;
#: it first creates argv[1] + ".loading", so the test knows the load has begun. The remaining arguments go to serve.
SLOW_LOAD_SERVE = """
import sys, time
from pathlib import Path
from mega_runtime.pipeline import chain
from mega_runtime.commands.cli import main
release = Path(sys.argv[1])
original = chain.Pipeline.load.__func__
def slow_load(cls, *args, **kwargs):
    Path(str(release) + ".loading").touch()
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return original(cls, *args, **kwargs)
chain.Pipeline.load = classmethod(slow_load)
sys.exit(main(["serve", *sys.argv[2:]]))
"""


def wait_for(predicate, what: str, timeout_s: float = 60.0, server: ServeProcess | None = None) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail naming ``what`` (and the server's log) otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    log = server.stderr.decode()[-3000:] if server is not None else ""
    pytest.fail(f"waited {timeout_s} s for {what}; server log:\n{log}")


def infer(server: ServeProcess, request_id: str, photo: Path, out_dir: Path) -> None:
    server.send(
        "infer",
        request_id,
        source={"path": str(photo)},
        out_dir=str(out_dir),
        model="resnet",
        hypotheses=1,
        device="cpu",
        boxes=[BOX],
    )


def first(server: ServeProcess, request_id: str, predicate, what: str, timeout_s: float = 120.0) -> list[dict]:
    """Replies up to the first one of ``request_id`` that satisfies ``predicate``."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no reply within {timeout_s} s for {what}; replies: {seen[-5:]}")
        message = server.next(left)
        if message is None:
            pytest.fail(f"the server ended while waiting for {what}; stderr:\n{server.stderr.decode()[-3000:]}")
        seen.append(message)
        if message.get("id") == request_id and predicate(message):
            return seen


# -- cancel while the model loads ---------------------------------------------------------------------------------


def test_ok_cancel_while_the_model_loads_ends_the_job_cancelled_and_the_next_job_runs(
    small_checkpoints, assets_dir, tmp_path
):
    release = tmp_path / "release-load"
    server = ServeProcess(
        release.as_posix(),
        "--checkpoint-dir",
        str(small_checkpoints),
        "--assets-dir",
        str(assets_dir),
        launcher=[sys.executable, "-c", SLOW_LOAD_SERVE],
    )
    photo = assets_dir / "images" / PHOTO
    try:
        infer(server, "slow", photo, tmp_path / "out")
        first(server, "slow", lambda m: m["type"] == "progress" and m["stage"] == "load", "the 'load' progress")
        wait_for(Path(f"{release}.loading").exists, "the model load to begin", server=server)
        server.send("cancel", "c", job="slow")
        acked = first(server, "c", lambda m: m["type"] == "ack", "the cancel's ack")
        assert acked[-1]["found"] is True
        assert not any(m.get("id") == "slow" and m["type"] in ("result", "error") for m in acked), "ack comes first"
        release.touch()  # the load finishes now; the job must stop before reconstructing
        started = time.monotonic()
        end = first(server, "slow", lambda m: m["type"] in ("result", "error"), "the cancelled job's end", PROMPT_S)
        took = time.monotonic() - started
        assert end[-1]["type"] == "error" and end[-1]["code"] == "cancelled", end[-1]
        assert "loading" in end[-1]["message"]
        assert not any(m.get("stage") == "model" for m in end if m.get("id") == "slow"), "no frame was started"
        assert took < PROMPT_S
        assert not list((tmp_path / "out").glob("*.json")), "a job cancelled while loading writes no result"

        infer(server, "next", photo, tmp_path / "out")  # the pipeline loaded meanwhile is kept and used
        replies = first(server, "next", lambda m: m["type"] in ("result", "error"), "the next job's end")
        assert replies[-1]["type"] == "result", replies[-1]
        assert not any(m.get("stage") == "load" for m in replies if m.get("id") == "next"), "loaded once"
    finally:
        release.touch()
        assert server.close() == 0, server.stderr.decode()[-3000:]


# -- cancel while the weights download ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _RecordServer

    def do_GET(self) -> None:
        srv = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path == RECORD_PATH:
            url = f"{srv.url}/records/{ARCHIVE}"
            listing = [{"key": ARCHIVE, "size": ARCHIVE_BYTES, "checksum": "md5:" + "0" * 32, "links": {"self": url}}]
            body = json.dumps({"id": 14974141, "files": listing}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path != f"/records/{ARCHIVE}":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(ARCHIVE_BYTES))
        self.end_headers()
        srv.download_started.set()
        sent = 0
        try:
            while sent < ARCHIVE_BYTES and not srv.stopping.is_set():
                self.wfile.write(b"\0" * PIECE_BYTES)
                self.wfile.flush()
                sent += PIECE_BYTES
                srv.stopping.wait(PIECE_PAUSE_S)  # a slow link: the download can only end by a cancel
        except (BrokenPipeError, ConnectionResetError):
            srv.client_hung_up.set()  # the runtime closed the connection: the cancel stopped the transfer
            return
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _RecordServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.download_started = threading.Event()
        self.client_hung_up = threading.Event()
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture
def record_server() -> Iterator[_RecordServer]:
    srv = _RecordServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(120.0, srv.stopping.set)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield srv
    finally:
        watchdog.cancel()
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_ok_cancel_during_a_weights_download_ends_the_job_cancelled_and_keeps_nothing(
    record_server, assets_dir, tmp_path, monkeypatch
):
    home = tmp_path / "mega-home"
    monkeypatch.delenv("MEGA_CHECKPOINTS_DIR", raising=False)
    monkeypatch.setenv("MEGA_HOME", str(home))
    monkeypatch.setenv("MEGA_ZENODO_URL", f"{record_server.url}{RECORD_PATH}")
    monkeypatch.setenv("MEGA_ASSETS_URL", "http://127.0.0.1:9/closed")  # assets are local; never fetched
    server = ServeProcess("--assets-dir", str(assets_dir), "--work-dir", str(tmp_path / "work"))
    try:
        infer(server, "dl", assets_dir / "images" / PHOTO, tmp_path / "out")
        replies = first(
            server,
            "dl",
            lambda m: m["type"] == "progress" and m["stage"] == "download" and m["done"] > 0,
            "a 'download' progress reply with bytes received",
        )
        downloads = [m for m in replies if m.get("stage") == "download"]
        assert downloads[-1]["total"] == ARCHIVE_BYTES
        assert ARCHIVE in downloads[-1]["message"], downloads[-1]
        assert record_server.download_started.is_set()
        more = first(
            server,
            "dl",
            lambda m: m.get("stage") == "download" and m["done"] > downloads[-1]["done"],
            "a second 'download' progress reply (the bytes advance)",
        )
        assert [m["done"] for m in more if m.get("stage") == "download"] == sorted(
            m["done"] for m in more if m.get("stage") == "download"
        )

        server.send("cancel", "c", job="dl")
        first(server, "c", lambda m: m["type"] == "ack", "the cancel's ack")
        started = time.monotonic()
        end = first(server, "dl", lambda m: m["type"] in ("result", "error"), "the cancelled download's end", PROMPT_S)
        took = time.monotonic() - started
        assert end[-1]["type"] == "error" and end[-1]["code"] == "cancelled", end[-1]
        assert ARCHIVE in end[-1]["message"], "the message names the file that was downloading"
        assert took < PROMPT_S
        wait_for(record_server.client_hung_up.is_set, "the runtime to close the download's connection", PROMPT_S)
        left = [p for p in home.rglob("*") if p.is_file()]
        assert not left, f"a cancelled download leaves nothing in the cache: {left}"

        server.send("hello", "h")  # the server is still serving
        assert first(server, "h", lambda m: m["type"] == "hello", "hello after the cancel")[-1]["protocol"] == 1
    finally:
        assert server.close() == 0, server.stderr.decode()[-3000:]
