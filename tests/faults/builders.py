"""Hostile and unlucky inputs for the fault catalogue, built in a test's own folder (numpy, zlib, cv2 only).

Every builder takes the case's folder and writes what the case needs there; none copies anything from
``../shared``. Results are written with ``tests/blender/make_result.py`` (a valid synthetic result, no model).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.blender.make_result import make_arrays, make_meta, write_photo
from tests.blender.make_result import write_result as write_synthetic_result

Builder = Callable[[Path], None]


def png_header_only(path: Path, width: int, height: int, filler_bytes: int = 150_000) -> Path:
    """A small PNG whose header declares ``width`` × ``height`` pixels (its data is a short zero stream)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(bytes(filler_bytes * 50), 9)[:filler_bytes]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def jpeg_header_only(path: Path, width: int, height: int) -> Path:
    """A JPEG start (SOI, APP0, SOF0) declaring ``width`` × ``height`` pixels and nothing decodable after it."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    path.write_bytes(b"\xff\xd8" + app0 + sof0 + bytes(1000) + b"\xff\xd9")
    return path


def small_video(path: Path, frames: int = 4, size: int = 64) -> Path:
    """A tiny MJPG AVI of ``frames`` grey frames."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size, size))
    for i in range(frames):
        writer.write(np.full((size, size, 3), 40 * i, np.uint8))
    writer.release()
    return path


def result(folder: Path, name: str = "r", tamper: Callable[[dict, dict], None] | None = None) -> Path:
    """A valid synthetic result pair ``folder/name``; ``tamper(meta, arrays)`` may change it before writing."""
    arrays, meta = make_arrays(), make_meta()
    if tamper is not None:
        tamper(meta, arrays)
    return write_synthetic_result(folder, name, arrays, meta)


def nan_cam_t(meta: dict, arrays: dict) -> None:
    arrays["cam_t"][..., 2] = np.nan


def inf_vertices(meta: dict, arrays: dict) -> None:
    arrays["vertices"][0, 0, 0, 0, 0] = np.inf


def deep_json(path: Path, depth: int = 400_000) -> Path:
    """A ``.json`` whose value is a list nested ``depth`` deep (Python's json recurses once per level)."""
    path.write_text('{"schema": "mega-result", "version": "1.0", "x": ' + "[" * depth + "]" * depth + "}")
    return path


def nan_literal_json(path: Path) -> Path:
    """A valid synthetic result whose JSON holds a bare ``NaN`` focal length."""
    json_path = result(path.parent, path.stem)
    text = json_path.read_text()
    meta = json.loads(text)
    meta["camera"]["focal_px"] = float("nan")
    json_path.write_text(json.dumps(meta))  # json writes NaN as the bare literal
    return json_path


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def result_with_huge_header(folder: Path, name: str = "r", declare_in_json: bool = True) -> Path:
    """A result whose ``vertices.npy`` header declares about 147 PiB (the member itself is a few bytes)."""
    json_path = result(folder, name)
    npz_path = json_path.with_suffix(".npz")
    shape = (2**22, 2**10, 8, 6890, 3)
    rewrite_npz_member(npz_path, "vertices.npy", npy_header(shape) + bytes(64))
    if declare_in_json:
        meta = json.loads(json_path.read_text())
        meta["arrays"]["vertices"]["shape"] = list(shape)
        json_path.write_text(json.dumps(meta))
    return json_path


def result_with_pickle(folder: Path, name: str = "r", marker: Path | None = None) -> Path:
    """A result whose ``track_ids.npy`` is an object array: a pickle that would create ``marker`` if loaded."""
    json_path = result(folder, name)

    command = f"touch {marker or folder / 'PWNED'}"

    class Payload:
        def __reduce__(self):
            return (os.system, (command,))

    body = pickle.dumps(np.array([Payload()], dtype=object), protocol=2)
    rewrite_npz_member(json_path.with_suffix(".npz"), "track_ids.npy", npy_header((1,), "|O") + body)
    return json_path


def rewrite_npz_member(npz_path: Path, member: str, data: bytes) -> None:
    """Replace one member of an ``.npz`` (the other members are copied as they are)."""
    with zipfile.ZipFile(npz_path) as archive:
        kept = {info.filename: archive.read(info) for info in archive.infolist() if info.filename != member}
    with zipfile.ZipFile(npz_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, body in kept.items():
            archive.writestr(name, body)
        archive.writestr(member, data)


def zip_bomb_npz(path: Path, gib: float = 1.85) -> tuple[int, ...]:
    """A real zip bomb: ``vertices.npy`` of ``gib`` GiB of zeros, deflated to a few MB (written in chunks)."""
    frames = int(gib * 2**30 / (8 * 6890 * 3 * 4))
    shape = (frames, 1, 8, 6890, 3)
    left = int(np.prod(shape)) * 4
    chunk = bytes(64 << 20)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("vertices.npy", "w", force_zip64=True) as member,
    ):
        member.write(npy_header(shape))
        while left:
            size = min(left, len(chunk))
            member.write(chunk if size == len(chunk) else chunk[:size])
            left -= size
    return shape


def result_with_bomb(folder: Path, bomb: Path, shape: tuple[int, ...], name: str = "r") -> Path:
    """A result whose ``.npz`` holds the zip bomb's vertices (copied compressed, never inflated) and whose
    ``.json`` declares them consistently, so only the memory limit can refuse it."""
    import shutil

    json_path = result(folder, name)
    npz_path = json_path.with_suffix(".npz")
    with zipfile.ZipFile(npz_path) as archive:
        kept = {i.filename: archive.read(i) for i in archive.infolist() if i.filename != "vertices.npy"}
    shutil.copyfile(bomb, npz_path)
    with zipfile.ZipFile(npz_path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for member_name, body in kept.items():
            archive.writestr(member_name, body)
    meta = json.loads(json_path.read_text())
    meta["arrays"]["vertices"]["shape"] = list(shape)
    json_path.write_text(json.dumps(meta))
    return json_path


def checkpoints_with_config(folder: Path, checkpoints: Path, config_text: str) -> Path:
    """``folder`` laid out like ``checkpoints`` (files linked, not copied) with ``config.json`` = ``config_text``."""
    for source in checkpoints.rglob("*"):
        if source.is_file() and source.name != "config.json":
            target = folder / source.relative_to(checkpoints)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    (folder / "config.json").write_text(config_text)
    return folder


def checkpoints_with_pickle(folder: Path, checkpoints: Path, marker: Path) -> Path:
    """``folder`` like ``checkpoints``, but the ResNet model is a pickle whose loading would create ``marker``."""
    checkpoints_with_config(folder, checkpoints, (checkpoints / "config.json").read_text())
    target = folder / "CVQMAE" / "mega_resnet"
    target.unlink()

    command = f"touch {marker}"

    class Payload:
        def __reduce__(self):
            return (os.system, (command,))

    import torch

    torch.save({"model": Payload()}, target)
    return folder


def photo(path: Path) -> Path:
    """A small valid PNG."""
    return write_photo(path, 320, 240)
