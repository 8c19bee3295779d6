"""Hashing and HTTP downloads: every transfer streams into a temporary file, is checked, then renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from mega_runtime.errors import WeightsError
from mega_runtime.weights.registry import (
    CHUNK_BYTES,
    DEFAULT_TIMEOUT_S,
    ENV_HOME,
    FETCH_COMMAND,
    MAX_JSON_BYTES,
    USER_AGENT,
    ProgressCallback,
)

log = logging.getLogger(__package__)  # one logger for the package: mega_runtime.weights


def file_digests(path: Path | str, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, ``{algorithm: hex}``, computed in one pass."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _expected(sha256: str | None, md5: str | None) -> dict[str, str]:
    return {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5)) if v}


def present_and_valid(path: Path, sha256: str | None, md5: str | None, size: int | None) -> bool:
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    expected = _expected(sha256, md5)
    if not expected:
        return True
    return file_digests(path, expected) == expected


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    label: str | None = None,
    hint: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless a file with the expected hash is already there.

    The body streams into a temporary file in ``dest``'s folder, is checked against the
    Content-Length, ``size``, ``sha256`` and ``md5`` (those given), and is then renamed onto
    ``dest`` with :func:`os.replace`. On any failure the temporary file is removed, nothing is
    left at ``dest``, and a :class:`WeightsError` naming the URL is raised (``hint`` is its fix).

    ``progress(label, done_bytes, total_bytes_or_None)`` is called once before the first byte and after every
    read from the connection (each returns as soon as some bytes arrived, so a slow link still reports often).
    It may raise to abort the transfer (e.g. a cancelled job): the exception propagates unchanged and, as on any
    failure, the temporary file is removed. While the server sends nothing at all, the next call waits for data
    or for ``timeout``.
    """
    dest = Path(dest)
    label = label or dest.name
    hint = hint or f"check the network connection and run `{FETCH_COMMAND}` again"
    if present_and_valid(dest, sha256, md5, size):
        log.debug("%s is already present and verified; not downloading it again", dest)
        return dest
    try:
        if dest.is_file() or dest.is_symlink():
            log.warning("%s does not match its expected size or hash; downloading it again", dest)
            dest.unlink()
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise WeightsError(
            f"cannot write the download of {url} to {dest}: {exc.strerror or exc}",
            hint=f"make the folder writable, or set ${ENV_HOME} to a writable folder for the download cache",
        ) from exc
    tmp = Path(tmp_name)
    expected = _expected(sha256, md5)
    started = time.monotonic()
    log.info("downloading %s -> %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out:
            received, total, digests = _transfer(url, out, expected.keys(), progress, timeout, label, hint)
        if total is not None and received != total:
            raise WeightsError(
                f"the download of {url} was interrupted: received {received} of {total} bytes "
                "(the connection closed early)",
                hint=hint,
            )
        if size is not None and received != size:
            raise WeightsError(f"the download of {url} has {received} bytes, expected {size}", hint=hint)
        for algorithm, want in expected.items():
            if digests[algorithm] != want:
                raise WeightsError(
                    f"the download of {url} is corrupted: its {algorithm} is {digests[algorithm]}, expected {want}",
                    hint=hint,
                )
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise WeightsError(f"cannot move the download of {url} to {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    log.info("downloaded %s (%s in %.1f s)", dest.name, human_size(received), time.monotonic() - started)
    return dest


def _transfer(
    url: str,
    out: IO[bytes],
    algorithms: Iterable[str],
    progress: ProgressCallback | None,
    timeout: float,
    label: str,
    hint: str,
) -> tuple[int, int | None, dict[str, str]]:
    """Stream ``url`` into ``out``; (bytes received, Content-Length or None, hex digests)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            if progress is not None:
                progress(label, 0, total)
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived, up to CHUNK_BYTES: progress on slow links
                out.write(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(label, received, total)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}", hint=hint) from exc
    except http.client.IncompleteRead as exc:
        raise WeightsError(
            f"the download of {url} was interrupted after {received + len(exc.partial)} bytes "
            "(the connection closed early)",
            hint=hint,
        ) from exc
    except TimeoutError as exc:
        raise WeightsError(f"downloading {url} timed out after {timeout:g} s without data", hint=hint) from exc
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot reach {url}: {exc.reason}", hint=hint) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsError(
            f"downloading {url} failed after {received} bytes: {type(exc).__name__}: {exc}", hint=hint
        ) from exc
    return received, total, {name: hasher.hexdigest() for name, hasher in hashers.items()}


def fetch_json(url: str, timeout: float, hint: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_JSON_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"listing {url} failed: HTTP {exc.code} {exc.reason}", hint=hint) from exc
    except TimeoutError as exc:
        raise WeightsError(f"listing {url} timed out after {timeout:g} s", hint=hint) from exc
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot reach {url}: {exc.reason}", hint=hint) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsError(f"listing {url} failed: {type(exc).__name__}: {exc}", hint=hint) from exc
    if len(body) > MAX_JSON_BYTES:
        raise WeightsError(f"the listing at {url} is larger than {MAX_JSON_BYTES} bytes", hint=hint)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"the listing at {url} is not valid JSON: {exc}", hint=hint) from exc


def human_size(n: int | None) -> str:
    if n is None:
        return "unknown size"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
