"""Drivers of the fault catalogue for what one plain run cannot show: the server stopped by a signal, ``infer``
interrupted mid-video, and several writers sharing one output name. Each wait is bounded by the case's timeout."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import REPO_ROOT, Case, Outcome, argv_of, child_env, limit_memory


def _line_reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def signal_serve(sig: int) -> Callable[[Case, Path, dict[str, str]], Outcome]:
    """Start ``serve``, wait (bounded) for its ``hello`` reply, queue a job that waits behind nothing runnable,
    send ``sig`` and wait (bounded) for the exit; the work folder it logged must be gone."""

    def drive(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
        child = subprocess.Popen(
            argv_of(case, ctx),
            cwd=tmp,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_memory,
            env=child_env(),
        )
        replies: queue.Queue = queue.Queue()
        threading.Thread(target=_line_reader, args=(child.stdout, replies), daemon=True).start()
        try:
            child.stdin.write('{"v": 1, "id": "h", "op": "hello"}\n')
            child.stdin.flush()
            deadline = time.monotonic() + case.timeout_s
            while True:
                line = replies.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None or json.loads(line).get("id") == "h":
                    break
            child.send_signal(sig)
            child.wait(timeout=case.timeout_s)
        except (queue.Empty, subprocess.TimeoutExpired):
            child.kill()
            child.wait(timeout=10)
            pytest.fail(f"{case.id}: serve did not answer or stop within {case.timeout_s} s")
        stderr = child.stderr.read()
        rest = []
        while (line := replies.get(timeout=5)) is not None:
            rest.append(line)
        found = re.search(r"work folder (\S+)", stderr)
        assert found, f"serve did not log its work folder: {stderr}"
        assert not Path(found.group(1)).exists(), f"the work folder {found.group(1)} was left behind"
        return Outcome(child.returncode, "".join(rest), stderr)

    return drive


def interrupt_infer(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    """Run ``infer`` on a video with stderr on a terminal (so its progress bar counts frames), send SIGINT once
    the bar shows a finished frame, and collect everything until it exits — each wait bounded by the timeout."""
    import pty
    import select

    master, slave = pty.openpty()
    child = subprocess.Popen(
        argv_of(case, ctx),
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        preexec_fn=limit_memory,
        env=child_env(),
    )
    os.close(slave)
    seen, interrupted = b"", False
    deadline = time.monotonic() + case.timeout_s
    try:
        while True:
            if not interrupted and re.search(rb" [1-9][0-9]*/120", seen):
                child.send_signal(signal.SIGINT)
                interrupted = True
            left = deadline - time.monotonic()
            if left <= 0:
                child.kill()
                child.wait(timeout=10)
                pytest.fail(f"{case.id}: no exit within {case.timeout_s} s; stderr so far: {seen[-2000:]!r}")
            ready, _, _ = select.select([master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk and child.poll() is not None:
                    break
                seen += chunk
            elif child.poll() is not None:
                break
        stdout = child.stdout.read().decode() if child.stdout else ""
        child.wait(timeout=case.timeout_s)
    finally:
        os.close(master)
    if not interrupted:
        pytest.fail(f"{case.id}: the run ended before a frame was shown: {seen[-2000:]!r}")
    return Outcome(child.returncode, stdout, seen.decode(errors="replace").replace("\r", "\n"))


def sigterm_during_video(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    """``serve`` runs a video job with a second job queued behind it; SIGTERM once a frame is done. The running
    job must answer with its frames so far, the queued one ``cancelled``, and the process exit 0 (bounded waits)."""
    child = subprocess.Popen(
        argv_of(case, ctx),
        cwd=tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_memory,
        env=child_env(),
    )
    replies: queue.Queue = queue.Queue()
    threading.Thread(target=_line_reader, args=(child.stdout, replies), daemon=True).start()
    errors: queue.Queue = queue.Queue()
    threading.Thread(target=_line_reader, args=(child.stderr, errors), daemon=True).start()
    options = ', "model": "resnet", "hypotheses": 1, "device": "cpu", "out_dir": "' + str(tmp / "out") + '"'
    for rid in ("a", "b"):
        line = '{"v": 1, "id": "' + rid + '", "op": "infer", "source": {"path": "' + str(tmp / "clip.avi") + '"}'
        child.stdin.write(line + options + "}\n")
    child.stdin.flush()
    seen: list[dict] = []
    deadline = time.monotonic() + case.timeout_s
    try:
        while not any(r.get("type") == "progress" and r.get("stage") == "frames" and r.get("done") for r in seen):
            line = replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            seen.append(json.loads(line))
        child.send_signal(signal.SIGTERM)
        while (line := replies.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
            seen.append(json.loads(line))
        child.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (queue.Empty, subprocess.TimeoutExpired):
        child.kill()
        child.wait(timeout=10)
        pytest.fail(f"{case.id}: serve did not finish within {case.timeout_s} s; replies {seen[-5:]}")
    stderr = []
    while (line := errors.get(timeout=10)) is not None:
        stderr.append(line)
    ends = {r["id"]: r for r in seen if r.get("type") in ("result", "error")}
    summary = f"a: {ends.get('a', {}).get('type')} cancelled={ends.get('a', {}).get('cancelled')}; "
    summary += f"b: {ends.get('b', {}).get('type')} {ends.get('b', {}).get('code')}"
    return Outcome(child.returncode, summary, "".join(stderr))


def sigterm_video_kept(tmp: Path, outcome: Outcome) -> None:
    from mega_runtime.io.result import read_result

    if "a: result cancelled=True" not in outcome.stdout or "b: error cancelled" not in outcome.stdout:
        pytest.fail(f"unexpected job ends: {outcome.stdout}")
    kept = read_result(tmp / "out" / "clip.json")
    if not 1 <= kept.num_frames < 120:
        pytest.fail(f"the stopped video kept {kept.num_frames} frames, expected 1 … 119")
    left = sorted(p.name for p in (tmp / "out").iterdir() if p.name.startswith("."))
    if left:
        pytest.fail(f"serve left hidden files in the output folder: {left}")


def partial_clip(tmp: Path, outcome: Outcome) -> None:
    from mega_runtime.io.result import read_result

    kept = read_result(tmp / "out" / "clip.json")
    if not 1 <= kept.num_frames < 120:
        pytest.fail(f"the interrupted run kept {kept.num_frames} frames, expected 1 … 119")


_WRITER = """
import sys
from pathlib import Path
from mega_runtime.io.result import OutputExistsError, Result, read_result, reserve_stem, write_result
from tests.blender.make_result import make_arrays, make_meta
tag, folder, count, reserving = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
arrays = make_arrays(num_hypotheses=1)
arrays["frame_indices"] = arrays["frame_indices"].astype("int32")
for i in range(count):
    meta = {**make_meta(), "writer": f"{tag}-{i}"}
    meta.pop("schema"); meta.pop("version")
    if reserving:  # as serve does
        held = reserve_stem(folder, "shared")
        try:
            write_result(Result(meta, arrays), folder / held.stem)
        finally:
            held.release()
    else:  # as infer does: never overwrite; a taken name is an error for that input
        try:
            write_result(Result(meta, arrays), folder / "shared")
        except OutputExistsError:
            print("refused", flush=True)
            continue
    print("wrote", flush=True)
"""


def two_writers(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    """Two serve-style writers and one infer-style writer share a folder and a name: none may replace another's
    result, every write either lands under its own name or is refused, and every pair read back is complete."""
    folder = tmp / "out"
    folder.mkdir()
    count = 12
    children = [
        subprocess.Popen(
            [ctx["py"], "-c", _WRITER, tag, str(folder), str(count), reserving],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_memory,
            env=child_env(),
        )
        for tag, reserving in (("a", "1"), ("b", "1"), ("c", "0"))
    ]
    outs = []
    for child in children:
        try:
            outs.append(child.communicate(timeout=case.timeout_s))
        except subprocess.TimeoutExpired:
            for other in children:
                other.kill()
            pytest.fail(f"{case.id}: a writer hung for {case.timeout_s} s")
    from mega_runtime.io.result import read_result

    written = sum(out.count("wrote") for out, _ in outs)
    tags = [read_result(p).meta["writer"] for p in sorted(folder.glob("*.json"))]
    leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    code = max(child.returncode for child in children)
    summary = f"{written} written, {len(tags)} pairs, {len(set(tags))} distinct, leftovers {leftovers}"
    if len(tags) != written or len(set(tags)) != written or leftovers:
        code = 99
    return Outcome(code, summary, "".join(err for _, err in outs))
