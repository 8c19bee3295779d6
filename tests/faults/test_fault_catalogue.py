"""The fault catalogue: hostile and unlucky inputs run through the real CLI, server and batch, each in a child.

Each :class:`Case` runs one command as a subprocess with a wall-clock timeout and an address-space limit
(``RLIMIT_AS``, set in the child before it starts) and asserts: no Python traceback on stderr, the exit code,
one clear message fragment, and which files must still exist, must not exist, must be unchanged, or must be
empty folders afterwards. docs/reliability.md lists the totals and the limits these cases hold the code to.

Memory limit: a normal ``infer`` of one photo with the small seeded checkpoints (the largest allowed job:
``--hypotheses 128 --batch-size 256``) needs between 1.2 and 1.5 GiB of address space on CPU (measured by
lowering ``RLIMIT_AS`` until it fails); every child here gets :data:`MEMORY_LIMIT_BYTES` = 4 GiB, ~2.7× that.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mega_runtime import defaults
from tests.faults import builders as b

#: Address-space limit of every child (see the module docstring for how it was chosen).
MEMORY_LIMIT_BYTES = 4 * 2**30
#: Wall-clock limit of a child that never loads a model, and of one that does.
QUICK_TIMEOUT_S = 60.0
MODEL_TIMEOUT_S = 240.0

REPO_ROOT = Path(__file__).resolve().parents[2]
RT = ("{py}", "-m", "mega_runtime")
BATCH = ("{py}", "-m", "mega_blender.batch")
PHOTO_ARGS = ("infer", "{tmp}/p.png", "--out", "{tmp}/out", "--boxes", "10,10,200,200")
MODEL_ARGS = ("--checkpoint-dir", "{ck}", "--assets-dir", "{assets}", "--model", "resnet", "--device", "cpu")
FIT = (*RT, "fit-smpl", "{tmp}/r.json", "--smpl-model", "{tmp}/no-smpl.pkl")
IMPORT = (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/x.blend")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    """One fault: the command (``{py}``, ``{tmp}``, ``{ck}``, ``{assets}`` are filled in), how to set it up, what
    must come out. ``needs``: ``checkpoints`` (small seeded weights), ``bomb`` (the session's zip bomb),
    ``mount`` (a tmpfs at ``{tmp}/mnt``: ``ro`` or ``full``), ``no-dac`` (the child may not bypass permissions)."""

    id: str
    argv: tuple[str, ...]
    exit: int
    message: str
    setup: Callable[[Path], None] | None = None
    exists: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    stdin: str | None = None
    needs: frozenset[str] = frozenset()
    mount: str = ""
    driver: Callable[[Case, Path, dict[str, str]], Outcome] | None = None
    timeout_s: float = QUICK_TIMEOUT_S
    extra: Callable[[Path, Outcome], None] | None = field(default=None, compare=False)


# -- set-ups ---------------------------------------------------------------------------------------------------------


def photo(tmp: Path) -> None:
    b.photo(tmp / "p.png")


def video(tmp: Path) -> None:
    b.small_video(tmp / "v.avi", frames=4)


def write(name: str, text: str, then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        if then is not None:
            then(tmp)
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return setup


def result(tamper=None, name: str = "r") -> Callable[[Path], None]:
    return lambda tmp: b.result(tmp, name, tamper)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for one in setups:
            one(tmp)

    return setup


def deep_result(tmp: Path) -> None:
    b.result(tmp)
    b.deep_json(tmp / "r.json")


def sparse_json(tmp: Path) -> None:
    b.result(tmp)
    with (tmp / "r.json").open("r+b") as handle:
        handle.truncate(defaults.MAX_RESULT_JSON_BYTES + 1)


def huge_pngs(tmp: Path) -> None:
    b.png_header_only(tmp / "huge.png", 30000, 30000)
    photo(tmp)


def same_stems(tmp: Path) -> None:
    for folder in ("a", "c"):
        (tmp / folder).mkdir()
        b.photo(tmp / folder / "p.png")


def unreadable(tmp: Path) -> None:
    photo(tmp)
    (tmp / "p.png").chmod(0)


def two_photos(tmp: Path) -> None:
    photo(tmp)
    b.photo(tmp / "q.png")


# -- drivers for the server and for concurrent writers ---------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """This environment, with the repository on the path (the add-on package is not installed, only found)."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _fill(text: str, ctx: dict[str, str]) -> str:
    return text.format(**ctx)


def _argv(case: Case, ctx: dict[str, str]) -> list[str]:
    argv = [_fill(a, ctx) for a in case.argv]
    if "no-dac" in case.needs and os.geteuid() == 0:  # root reads any file: take that power away from the child
        argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]
    return argv


def run_command(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    stdin = _fill(case.stdin, ctx) if case.stdin is not None else None
    try:
        done = subprocess.run(
            _argv(case, ctx),
            cwd=tmp,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=case.timeout_s,
            preexec_fn=_limit_memory,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{case.id}: hung — no exit within {case.timeout_s} s; stderr: {exc.stderr!r}")
    return Outcome(done.returncode, done.stdout, done.stderr)


def _line_reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _signal_serve(sig: int) -> Callable[[Case, Path, dict[str, str]], Outcome]:
    """Start ``serve``, wait (bounded) for its ``hello`` reply, queue a job that waits behind nothing runnable,
    send ``sig`` and wait (bounded) for the exit; the work folder it logged must be gone."""

    def drive(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
        child = subprocess.Popen(
            _argv(case, ctx),
            cwd=tmp,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limit_memory,
            env=_child_env(),
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


def clip(tmp: Path) -> None:
    """A 120-frame video of a real photo (../shared, read only) scrolling sideways, an eighth of its size."""
    import cv2
    import numpy as np

    from tests.conftest import ASSETS_DIR

    image = cv2.imread(str(ASSETS_DIR / "images" / "pexels-polina-tankilevitch-6739044.jpg"))
    if image is None:
        pytest.skip(f"{ASSETS_DIR / 'images'} is absent")
    small = cv2.resize(image, (image.shape[1] // 8, image.shape[0] // 8))
    writer = cv2.VideoWriter(str(tmp / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, small.shape[1::-1])
    for i in range(120):
        writer.write(np.roll(small, i, axis=1))
    writer.release()


def interrupt_infer(case: Case, tmp: Path, ctx: dict[str, str]) -> Outcome:
    """Run ``infer`` on a video with stderr on a terminal (so its progress bar counts frames), send SIGINT once
    the bar shows a finished frame, and collect everything until it exits — each wait bounded by the timeout."""
    import pty
    import select

    master, slave = pty.openpty()
    child = subprocess.Popen(
        _argv(case, ctx),
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        preexec_fn=_limit_memory,
        env=_child_env(),
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
        _argv(case, ctx),
        cwd=tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_memory,
        env=_child_env(),
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


def _sigterm_video_kept(tmp: Path, outcome: Outcome) -> None:
    from mega_runtime.io.result import read_result

    if "a: result cancelled=True" not in outcome.stdout or "b: error cancelled" not in outcome.stdout:
        pytest.fail(f"unexpected job ends: {outcome.stdout}")
    kept = read_result(tmp / "out" / "clip.json")
    if not 1 <= kept.num_frames < 120:
        pytest.fail(f"the stopped video kept {kept.num_frames} frames, expected 1 … 119")
    left = sorted(p.name for p in (tmp / "out").iterdir() if p.name.startswith("."))
    if left:
        pytest.fail(f"serve left hidden files in the output folder: {left}")


def _partial_clip(tmp: Path, outcome: Outcome) -> None:
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
            preexec_fn=_limit_memory,
            env=_child_env(),
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


# -- the catalogue ---------------------------------------------------------------------------------------------------

NEEDS_CK = frozenset({"checkpoints"})
SERVE_END = '{"v": 1, "id": "end", "op": "shutdown"}\n'


def serve_line(payload: str, id_: str = "a") -> str:
    return '{"v": 1, "id": "' + id_ + '", "op": "infer", "source": {"path": "{tmp}/p.png"}' + payload + "}\n"


def serve_case(id_: str, line: str, message: str, args: tuple[str, ...] = ()) -> Case:
    # {tmp} in the request is filled in; braces of the JSON itself are doubled for str.format
    text = line.replace("{", "{{").replace("}", "}}").replace("{{tmp}}", "{tmp}")
    return Case(
        id_,
        (*RT, "serve", *args),
        0,
        message,
        setup=photo,
        stdin=text + SERVE_END.replace("{", "{{").replace("}", "}}"),
    )


CASES: list[Case] = [
    # --- infer: values refused at the edge, with the allowed range -------------------------------------------------
    Case("infer-seed-2**70", (*RT, *PHOTO_ARGS, "--seed", str(2**70)), 2, "use 0 … 4294967295", photo, absent=("out",)),
    Case("infer-seed-negative", (*RT, *PHOTO_ARGS, "--seed=-1"), 2, "use 0 … 4294967295", photo, absent=("out",)),
    Case("infer-seed-text", (*RT, *PHOTO_ARGS, "--seed", "abc"), 2, "is not a whole number", photo),
    Case("infer-batch-size-0", (*RT, *PHOTO_ARGS, "--batch-size", "0"), 2, "use 1 … 256", photo, absent=("out",)),
    Case("infer-batch-size-1e6", (*RT, *PHOTO_ARGS, "--batch-size", "1000000"), 2, "use 1 … 256", photo),
    Case("infer-hypotheses-100000", (*RT, *PHOTO_ARGS, "--hypotheses", "100000"), 2, "use 1 … 128", photo),
    Case("infer-hypotheses-0", (*RT, *PHOTO_ARGS, "--hypotheses", "0"), 2, "use 1 … 128", photo),
    Case("infer-steps-0", (*RT, *PHOTO_ARGS, "--steps", "0"), 2, "use 1 … 1000", photo),
    Case("infer-temperature-nan", (*RT, *PHOTO_ARGS, "--temperature", "nan"), 2, "finite number", photo),
    Case("infer-temperature-inf", (*RT, *PHOTO_ARGS, "--temperature", "inf"), 2, "finite number", photo),
    Case("infer-temperature-negative", (*RT, *PHOTO_ARGS, "--temperature=-1"), 2, "at least 0", photo),
    Case("infer-path-smoothness-nan", (*RT, *PHOTO_ARGS, "--path-smoothness", "nan"), 2, "finite number", photo),
    Case("infer-one-euro-min-cutoff-0", (*RT, *PHOTO_ARGS, "--one-euro-min-cutoff", "0"), 2, "more than 0", photo),
    Case("infer-one-euro-beta-inf", (*RT, *PHOTO_ARGS, "--one-euro-beta", "inf"), 2, "finite number", photo),
    Case(
        "infer-frames-step-0",
        (*RT, "infer", "{tmp}/v.avi", "--out", "{tmp}/out", "--frames", "0:4:0"),
        2,
        "STEP >= 1",
        video,
        absent=("out",),
    ),
    Case(
        "infer-frames-past-the-end",
        (*RT, "infer", "{tmp}/v.avi", "--out", "{tmp}/out", "--frames", "5000:6000"),
        2,
        "has 4 frames",
        video,
        absent=("out/v.json",),
    ),
    Case(
        "infer-frames-reversed",
        (*RT, "infer", "{tmp}/v.avi", "--out", "{tmp}/o", "--frames", "5:2"),
        2,
        "0 <= START < STOP",
        video,
    ),
    Case(
        "infer-frames-text",
        (*RT, "infer", "{tmp}/v.avi", "--out", "{tmp}/o", "--frames", "a:b"),
        2,
        "is not START:STOP:STEP",
        video,
    ),
    Case(
        "infer-frames-four-parts",
        (*RT, "infer", "{tmp}/v.avi", "--out", "{tmp}/o", "--frames", "1:2:3:4"),
        2,
        "more than three parts",
        video,
    ),
    Case(
        "infer-boxes-nan",
        (*RT, "infer", "{tmp}/p.png", "--out", "{tmp}/o", "--boxes", "nan,0,10,10"),
        2,
        "non-finite",
        photo,
    ),
    Case(
        "infer-boxes-three-numbers",
        (*RT, "infer", "{tmp}/p.png", "--out", "{tmp}/o", "--boxes", "1,2,3"),
        2,
        "4 numbers per box",
        photo,
    ),
    Case(
        "infer-boxes-empty-box",
        (*RT, "infer", "{tmp}/p.png", "--out", "{tmp}/o", "--boxes", "10,10,5,5"),
        2,
        "empty box",
        photo,
    ),
    # --- infer: the environment --------------------------------------------------------------------------------------
    Case(
        "infer-out-is-a-file",
        (*RT, *PHOTO_ARGS),
        2,
        "is an existing file",
        write("out", "user data", photo),
        unchanged=("out",),
    ),
    Case(
        "infer-out-under-a-file",
        (*RT, "infer", "{tmp}/p.png", "--out", "{tmp}/f/sub", "--boxes", "10,10,200,200"),
        2,
        "lies under the file",
        write("f", "user data", photo),
        unchanged=("f",),
    ),
    Case(
        "infer-out-read-only",
        (*RT, "infer", "{tmp}/p.png", "--out", "{tmp}/mnt/out", "--boxes", "10,10,200,200"),
        2,
        "cannot be written",
        photo,
        mount="ro",
        needs=frozenset({"mount"}),
    ),
    Case(
        "infer-disk-full",
        (*RT, "infer", "{tmp}/p.png", "{tmp}/q.png", "--out", "{tmp}/mnt", "--boxes", "10,10,200,200", *MODEL_ARGS),
        2,
        "2 of 2 input(s) failed",
        two_photos,
        mount="full",
        empty=("mnt",),
        needs=frozenset({"mount", "checkpoints"}),
        timeout_s=MODEL_TIMEOUT_S,
        extra=lambda tmp, out: None if "No space left on device" in out.stderr else pytest.fail("ENOSPC not named"),
    ),
    Case("infer-missing-input", (*RT, "infer", "{tmp}/nope.jpg", "--out", "{tmp}/o"), 2, "does not exist"),
    Case(
        "infer-unreadable-input",
        (*RT, *PHOTO_ARGS),
        2,
        "Permission denied",
        unreadable,
        needs=frozenset({"no-dac"}),
        absent=("out/p.json",),
    ),
    Case("infer-empty-image", (*RT, *PHOTO_ARGS), 2, "is empty", write("p.png", "")),
    Case(
        "infer-png-30000x30000",
        (*RT, "infer", "{tmp}/huge.png", "--out", "{tmp}/out", "--boxes", "1,1,9,9"),
        2,
        "declares 30000×30000 pixels",
        lambda tmp: b.png_header_only(tmp / "huge.png", 30000, 30000),
        absent=("out/huge.json",),
    ),
    Case(
        "infer-jpeg-40000x40000",
        (*RT, "infer", "{tmp}/huge.jpg", "--out", "{tmp}/out"),
        2,
        "declares 40000×40000 pixels",
        lambda tmp: b.jpeg_header_only(tmp / "huge.jpg", 40000, 40000),
    ),
    Case(
        "infer-huge-png-then-a-good-photo",
        (*RT, "infer", "{tmp}/huge.png", "{tmp}/p.png", "--out", "{tmp}/out", "--boxes", "10,10,200,200", *MODEL_ARGS),
        2,
        "1 of 2 input(s) failed",
        huge_pngs,
        exists=("out/p.json", "out/p.npz"),
        absent=("out/huge.json", "out/huge.npz"),
        needs=NEEDS_CK,
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-same-stem-twice",
        (*RT, "infer", "{tmp}/a/p.png", "{tmp}/c/p.png", "--out", "{tmp}/o"),
        2,
        "share the name",
        same_stems,
    ),
    Case(
        "infer-output-exists",
        (*RT, *PHOTO_ARGS),
        2,
        "not overwriting existing",
        write("out/p.json", "user data", photo),
        unchanged=("out/p.json",),
    ),
    Case(
        "infer-empty-folder",
        (*RT, "infer", "{tmp}/empty", "--out", "{tmp}/o"),
        2,
        "holds no photo or video",
        write("empty/notes.txt", "x"),
    ),
    Case(
        "infer-config-json-is-a-list",
        (
            *RT,
            *PHOTO_ARGS,
            "--checkpoint-dir",
            "{tmp}/ck",
            "--assets-dir",
            "{assets}",
            "--model",
            "resnet",
            "--device",
            "cpu",
        ),
        2,
        "holds a JSON list, not an object",
        None,  # filled in by the test (needs the session's checkpoints)
        needs=NEEDS_CK | {"config:[1, 2]"},
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-config-json-nan",
        (
            *RT,
            *PHOTO_ARGS,
            "--checkpoint-dir",
            "{tmp}/ck",
            "--assets-dir",
            "{assets}",
            "--model",
            "resnet",
            "--device",
            "cpu",
        ),
        2,
        "NaN is not allowed",
        None,
        needs=NEEDS_CK | {'config:{"format": NaN}'},
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-config-json-deep",
        (
            *RT,
            *PHOTO_ARGS,
            "--checkpoint-dir",
            "{tmp}/ck",
            "--assets-dir",
            "{assets}",
            "--model",
            "resnet",
            "--device",
            "cpu",
        ),
        2,
        "nests too deeply",
        None,
        needs=NEEDS_CK | {"config:" + "[" * 200_000 + "]" * 200_000},
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-pickle-checkpoint",
        (
            *RT,
            *PHOTO_ARGS,
            "--checkpoint-dir",
            "{tmp}/ck",
            "--assets-dir",
            "{assets}",
            "--model",
            "resnet",
            "--device",
            "cpu",
        ),
        2,
        "weights_only",
        None,
        absent=("PWNED", "out/p.json"),
        needs=NEEDS_CK | {"pickle-checkpoint"},
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-largest-allowed-job-under-the-memory-limit",
        (
            *RT,
            *PHOTO_ARGS,
            *MODEL_ARGS,
            "--hypotheses",
            str(defaults.MAX_HYPOTHESES),
            "--batch-size",
            str(defaults.MAX_BATCH_SIZE),
        ),
        0,
        "128 hypotheses",
        photo,
        exists=("out/p.json", "out/p.npz"),
        needs=NEEDS_CK,
        timeout_s=MODEL_TIMEOUT_S,
    ),
    Case(
        "infer-ctrl-c-keeps-the-finished-frames",
        (*RT, "infer", "{tmp}/clip.avi", "--out", "{tmp}/out", *MODEL_ARGS, "--hypotheses", "1"),
        130,
        "the frames finished so far were kept",
        clip,
        exists=("out/clip.json", "out/clip.npz"),
        needs=NEEDS_CK,
        driver=interrupt_infer,
        timeout_s=MODEL_TIMEOUT_S,
        extra=_partial_clip,
    ),
    # --- generate and serve options ----------------------------------------------------------------------------------
    Case("generate-steps-0", (*RT, "generate", "--out", "{tmp}/o", "--steps", "0"), 2, "use 1 … 1000"),
    Case("generate-count-0", (*RT, "generate", "--out", "{tmp}/o", "--count", "0"), 2, "use 1 … 1024"),
    Case("generate-count-1e9", (*RT, "generate", "--out", "{tmp}/o", "--count", "1000000000"), 2, "use 1 … 1024"),
    Case("generate-temperature-nan", (*RT, "generate", "--out", "{tmp}/o", "--temperature", "nan"), 2, "finite number"),
    Case(
        "generate-name-with-folders",
        (*RT, "generate", "--out", "{tmp}/o", "--name", "../x"),
        2,
        "not a plain file name",
        absent=("x.json",),
    ),
    Case(
        "serve-checkpoint-every-nan", (*RT, "serve", "--checkpoint-every-s", "nan"), 2, "--checkpoint-every-s must be"
    ),
    # --- fit-smpl: the runtime's result reader -----------------------------------------------------------------------
    Case("fit-smpl-json-400k-deep", FIT, 2, "nests deeper than the result limit", deep_result),
    Case("fit-smpl-npy-header-147-PiB", FIT, 2, "would need more than", lambda tmp: b.result_with_huge_header(tmp)),
    Case(
        "fit-smpl-npy-header-differs-from-json",
        FIT,
        2,
        "the .json declares",
        lambda tmp: b.result_with_huge_header(tmp, declare_in_json=False),
    ),
    Case("fit-smpl-zip-bomb", FIT, 2, "would need more than", None, needs=frozenset({"bomb"})),
    Case("fit-smpl-nan-cam-t", FIT, 2, "NaN or infinite", result(b.nan_cam_t)),
    Case("fit-smpl-inf-vertices", FIT, 2, "NaN or infinite", result(b.inf_vertices)),
    Case("fit-smpl-nan-literal-in-json", FIT, 2, "NaN is not allowed", lambda tmp: b.nan_literal_json(tmp / "r.json")),
    Case(
        "fit-smpl-pickle-in-npz",
        FIT,
        2,
        "holds Python objects",
        lambda tmp: b.result_with_pickle(tmp),
        absent=("PWNED", "r.smpl.json"),
    ),
    Case("fit-smpl-json-is-a-list", FIT, 2, "is not a MEGA result", write("r.json", "[1]", result())),
    Case("fit-smpl-json-too-large", FIT, 2, "more than the result limit", sparse_json),
    Case(
        "fit-smpl-out-is-its-input",
        (*FIT, "--out", "{tmp}/r"),
        2,
        "not overwriting existing",
        result(),
        unchanged=("r.json", "r.npz"),
    ),
    # --- the add-on's batch: collisions, then its own reader ---------------------------------------------------------
    Case(
        "batch-report-is-the-export-with-overwrite",
        (*IMPORT, "--report", "{tmp}/x.blend", "--overwrite"),
        1,
        "name the same file",
        write("x.blend", "user data", result()),
        unchanged=("x.blend",),
    ),
    Case(
        "batch-report-is-the-input-json",
        (*IMPORT, "--report", "{tmp}/r.json", "--overwrite"),
        1,
        "is the result being read",
        result(),
        unchanged=("r.json", "r.npz"),
        absent=("x.blend",),
    ),
    Case(
        "batch-report-is-the-input-npz",
        (*IMPORT, "--report", "{tmp}/r.npz", "--overwrite"),
        1,
        "is the result being read",
        result(),
        unchanged=("r.json", "r.npz"),
    ),
    Case(
        "batch-export-links-to-the-input",
        (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/link.blend", "--overwrite"),
        1,
        "is the result being read",
        both(result(), lambda tmp: (tmp / "link.blend").symlink_to(tmp / "r.npz")),
        unchanged=("r.npz",),
    ),
    Case("batch-nan-cam-t", IMPORT, 1, "non-finite value", result(b.nan_cam_t), absent=("x.blend",)),
    Case("batch-json-400k-deep", IMPORT, 1, "nests deeper than the limit", deep_result, absent=("x.blend",)),
    Case("batch-npy-header-147-PiB", IMPORT, 1, "would need more than", lambda tmp: b.result_with_huge_header(tmp)),
    Case("batch-zip-bomb", IMPORT, 1, "would need more than", None, needs=frozenset({"bomb"}), absent=("x.blend",)),
    Case(
        "batch-pickle-in-npz",
        IMPORT,
        1,
        "holds Python objects",
        lambda tmp: b.result_with_pickle(tmp),
        absent=("PWNED",),
    ),
    Case("batch-nan-literal-in-json", IMPORT, 1, "NaN is not allowed", lambda tmp: b.nan_literal_json(tmp / "r.json")),
    Case("batch-json-too-large", IMPORT, 1, "more than the limit", sparse_json, absent=("x.blend",)),
    Case(
        "batch-export-exists",
        IMPORT,
        1,
        "already exists",
        write("x.blend", "user data", result()),
        unchanged=("x.blend",),
    ),
    Case(
        "batch-unknown-export-format",
        (*BATCH, "import", "{tmp}/r.json", "--export", "{tmp}/x.txt"),
        1,
        "cannot export",
        result(),
    ),
    Case("batch-negative-hypothesis", (*IMPORT, "--hypothesis=-1"), 1, "--hypothesis must be 0 or more", result()),
    Case(
        "batch-reconstruct-frames-step-0",
        (*BATCH, "reconstruct", "{tmp}/v.avi", "--export", "{tmp}/x.blend", "--frames", "0:4:0"),
        1,
        "selects no frame",
        video,
        absent=("x.blend", "x results"),
    ),
    Case(
        "batch-reconstruct-missing-media",
        (*BATCH, "reconstruct", "{tmp}/nope.mp4", "--export", "{tmp}/x.blend"),
        1,
        "no such file",
        absent=("x.blend",),
    ),
    Case(
        "batch-overwrite-keeps-blenders-backup",
        (*IMPORT, "--overwrite"),
        0,
        "wrote",
        write("x.blend", "user data", result()),
        exists=("x.blend", "x.blend1"),
        extra=lambda tmp, out: (
            None
            if (tmp / "x.blend1").read_text() == "user data"
            else pytest.fail("x.blend1 does not hold the user's old file")
        ),
    ),
    # --- serve: the protocol ----------------------------------------------------------------------------------------
    serve_case("serve-malformed-line", "{not json\n", "bad_json"),
    serve_case("serve-temperature-nan", serve_line(', "temperature": NaN'), "'temperature' must be a number"),
    serve_case("serve-seed-2**70", serve_line(f', "seed": {2**70}'), "0 and \\u2264 4294967295"),
    serve_case("serve-hypotheses-100000", serve_line(', "hypotheses": 100000'), "1 and \\u2264 128"),
    serve_case("serve-frames-select-nothing", serve_line(', "frames": {"start": 10, "stop": 5}'), "selects no frame"),
    serve_case(
        "serve-temporal-beta-infinity", serve_line(', "temporal": {"beta": Infinity}'), "'temporal.beta' must be"
    ),
    serve_case("serve-boxes-nan", serve_line(', "boxes": [[NaN, 0, 10, 10]]'), "boxes"),
    serve_case("serve-temporal-zero-cutoff", serve_line(', "temporal": {"min_cutoff": 0}'), "must be a number > 0"),
    serve_case("serve-request-nested-200k-deep", "[" * 200_000 + "]" * 200_000 + "\n", "nests too deeply"),
    serve_case(
        "serve-request-over-the-limit",
        serve_line(', "pad": "' + "x" * 4000 + '"'),
        "longer than the limit",
        ("--max-message-bytes", "2048"),
    ),
    serve_case("serve-request-not-an-object", "[1, 2]\n", "not a JSON object"),
    serve_case(
        "serve-inline-not-base64",
        '{"v": 1, "id": "a", "op": "infer", "source": {"data": "%%%", "name": "a.png"}}\n',
        "base64",
    ),
    Case(
        "serve-sigterm-during-a-video-keeps-its-frames",
        (*RT, "serve", "--checkpoint-dir", "{ck}", "--assets-dir", "{assets}"),
        0,
        "shutting down",
        clip,
        exists=("out/clip.json", "out/clip.npz"),
        needs=NEEDS_CK,
        driver=sigterm_during_video,
        timeout_s=MODEL_TIMEOUT_S,
        extra=_sigterm_video_kept,
    ),
    Case("serve-sigterm-stops-like-shutdown", (*RT, "serve"), 0, "shutting down", driver=_signal_serve(signal.SIGTERM)),
    Case("serve-sigint-stops-like-shutdown", (*RT, "serve"), 0, "shutting down", driver=_signal_serve(signal.SIGINT)),
    Case(
        "two-serve-writers-and-an-infer-writer-share-a-name", ("{py}",), 0, "pairs", driver=two_writers, timeout_s=120
    ),
]


# -- the test --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, ...]]:
    path = tmp_path_factory.mktemp("zip-bomb") / "bomb.npz"
    return path, b.zip_bomb_npz(path)


def _mount(point: Path, kind: str) -> None:
    point.mkdir()
    options = "ro,size=1m" if kind == "ro" else "size=64k"
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True, capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the full-disk and read-only cases need one")


def _snapshot(tmp: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (tmp / name).read_bytes() for name in names}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, tmp_path: Path, request: pytest.FixtureRequest, assets_dir: Path) -> None:
    ctx = {"py": sys.executable, "tmp": str(tmp_path), "assets": str(assets_dir), "ck": ""}
    if "checkpoints" in case.needs:
        ctx["ck"] = str(request.getfixturevalue("small_checkpoints"))
    if "no-dac" in case.needs and os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a chmod 000 file stays readable")
    mounted = False
    try:
        if case.mount:
            _mount(tmp_path / "mnt", case.mount)
            mounted = True
        if case.setup is not None:
            case.setup(tmp_path)
        for need in case.needs:
            if need.startswith("config:"):
                photo(tmp_path)
                b.checkpoints_with_config(tmp_path / "ck", Path(ctx["ck"]), need[len("config:") :])
            elif need == "pickle-checkpoint":
                photo(tmp_path)
                b.checkpoints_with_pickle(tmp_path / "ck", Path(ctx["ck"]), tmp_path / "PWNED")
            elif need == "bomb":
                bomb, shape = request.getfixturevalue("zip_bomb")
                b.result_with_bomb(tmp_path, bomb, shape)
        before = _snapshot(tmp_path, case.unchanged)
        started = time.monotonic()
        outcome = (case.driver or run_command)(case, tmp_path, ctx)
        elapsed = time.monotonic() - started
        said = outcome.stdout + outcome.stderr
        assert "Traceback" not in outcome.stderr, f"{case.id} printed a traceback:\n{outcome.stderr[-3000:]}"
        assert outcome.returncode == case.exit, (
            f"{case.id}: exit {outcome.returncode}, expected {case.exit} ({elapsed:.1f} s)\n{said[-3000:]}"
        )
        assert case.message.lower() in said.lower(), f"{case.id}: {case.message!r} not said:\n{said[-3000:]}"
        for name in case.exists:
            assert (tmp_path / name).exists(), f"{case.id}: {name} should exist"
        for name in case.absent:
            assert not (tmp_path / name).exists(), f"{case.id}: {name} should not exist"
        for name, data in before.items():
            assert (tmp_path / name).read_bytes() == data, f"{case.id}: {name} was changed"
        for name in case.empty:
            left = sorted(p.name for p in (tmp_path / name).iterdir())
            assert not left, f"{case.id}: {name} should be empty, holds {left}"
        if case.extra is not None:
            case.extra(tmp_path, outcome)
    finally:
        if mounted:
            subprocess.run(["umount", str(tmp_path / "mnt")], capture_output=True, timeout=30)


def test_the_catalogue_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60
