"""A loopback HTTP server and small synthetic files for the tests of ``mega_runtime.weights``.

The server serves files under its root on 127.0.0.1 and misbehaves on request (corrupt, truncate, stall), and
emulates the Zenodo record API; the fixtures that start it are in this folder's ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mega_runtime.weights import AssetFile

RECORD_PATH = "/api/records/14974141"
TINY_TEMPLATE = b"ply\nformat ascii 1.0\ncomment tiny test file\nend_header\n"
TINY_POOL0 = bytes(range(256)) * 9


class Handler(BaseHTTPRequestHandler):
    """Serves files under the server's root; misbehaves on request (see ``Server.modes``)."""

    server: Server

    def do_GET(self) -> None:
        srv = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with srv.lock:
            srv.requests.append(path)
        if path in srv.json_routes:
            self._send(json.dumps(srv.json_routes[path]).encode(), "application/json")
            return
        file = (srv.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(srv.root.resolve()) or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        mode = srv.modes.get(path)
        if mode == "stall":  # hold the answer until the test is over: the client's timeout must fire first
            srv.release.wait(30)
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(data, "application/octet-stream")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.modes: dict[str, str] = {}  # URL path -> "corrupt" | "truncate" | "stall"
        self.json_routes: dict[str, object] = {}
        self.release = threading.Event()  # set at teardown: ends every stalled answer

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def publish(self, relative: str, data: bytes) -> str:
        """Serve ``data`` at ``/relative``; returns its URL."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{urllib.parse.quote(relative)}"

    def publish_record(self, files: dict[str, bytes], shape: str = "current", md5: dict[str, str] | None = None):
        """Emulate the Zenodo record API: a JSON listing whose links point back at this server."""
        entries = []
        for key, data in files.items():
            url = self.publish(f"records/{key}", data)
            digest = (md5 or {}).get(key, hashlib.md5(data).hexdigest())
            if shape == "current":
                entries.append({"key": key, "size": len(data), "checksum": f"md5:{digest}", "links": {"self": url}})
            elif shape == "rdm":
                meta = f"{self.url}{RECORD_PATH}/files/{key}"
                entries.append(
                    {
                        "key": key,
                        "size": len(data),
                        "checksum": f"md5:{digest}",
                        "links": {"self": meta, "content": url},
                    }
                )
            else:  # legacy
                entries.append({"filename": key, "filesize": len(data), "checksum": digest, "links": {"download": url}})
        listing = {"entries": {e["key"]: e for e in entries}} if shape == "rdm" else entries
        self.json_routes[RECORD_PATH] = {"id": 14974141, "files": listing}


def asset(name: str, source: str, data: bytes) -> AssetFile:
    return AssetFile(name, source, hashlib.sha256(data).hexdigest(), len(data))


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def write_tiny_config(folder: Path, tiny_models: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(tiny_models["config.json"])


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")] if folder.exists() else []
