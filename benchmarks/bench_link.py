"""Cost of the live link: a job through ``mega_runtime serve`` versus the same call in-process.

Prints, for one photo with given boxes (so detection does not blur the comparison):

* first-job start-up: process start → handshake answered, and → first result (model loading included);
* per-image median over ``--repeats`` jobs: in-process ``Pipeline.run_image_file`` + ``write_result``, the same
  through the link with paths (the runtime writes the pair), and inline (the image's bytes sent as base64, the
  pair sent back as base64 and written by the client) — the differences are the link's overhead.

    python benchmarks/bench_link.py --checkpoint-dir checkpoints-small [--repeats 20] [--hypotheses 1]

Uses the add-on's own client (mega_blender/runtime_client.py, loaded from its file without Blender).
Target (issue 5): overhead under 20 ms per image plus payload transfer. Never run as a test.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "pexels-polina-tankilevitch-6739044.jpg"
BOX = [264.0, 1453.0, 1609.0, 2661.0]  # the person, as the default detector finds them


def _client_module():
    """The add-on's ``runtime_client`` in plain CPython: a member of a stand-in package over ``mega_blender/`` (the
    package's ``__init__`` needs bpy)."""
    if "bench_addon" not in sys.modules:
        package = types.ModuleType("bench_addon")
        package.__path__ = [str(ROOT / "mega_blender")]
        sys.modules["bench_addon"] = package
    return importlib.import_module("bench_addon.runtime_client")


def _wait(link, client, kinds, timeout_s: float = 300.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in link.pump(wait_s=0.5):  # blocking: a polling loop would steal CPU from the runtime
            if isinstance(event, client.RuntimeFailed | client.JobFailed):
                raise SystemExit(f"link failed: {event}\n{link.client.last_stderr(10)}")
            if isinstance(event, kinds):
                return event
    raise SystemExit("timed out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--assets-dir", default=os.environ.get("MEGA_ASSETS_DIR", str(ROOT.parent / "shared/assets")))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--hypotheses", type=int, default=1)
    parser.add_argument("--model", default="resnet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    client = _client_module()
    photo = Path(args.assets_dir) / "images" / PHOTO
    options = {"model": args.model, "hypotheses": args.hypotheses, "device": "cpu", "boxes": [BOX]}
    serve_args = ["--checkpoint-dir", args.checkpoint_dir, "--assets-dir", args.assets_dir]
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {photo.name}, "
        f"model {args.model}, {args.hypotheses} hypotheses, {args.repeats} repeats"
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # -- start-up ---------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        link = client.Link([sys.executable, "-m", "mega_runtime"], serve_args)
        link.start()
        _wait(link, client, client.Ready)
        t_ready = time.perf_counter() - t0
        link.submit(photo, out / "first", options=options)
        _wait(link, client, client.JobDone)
        t_first = time.perf_counter() - t0
        print(f"start-up: handshake {t_ready * 1000:.0f} ms, first result {t_first * 1000:.0f} ms (model load incl.)")

        # -- per image through the link -----------------------------------------------------------------------
        def through(link_) -> list[float]:
            times = []
            for i in range(args.repeats):
                t = time.perf_counter()
                link_.submit(photo, out / f"link{i}", options=options)
                _wait(link_, client, client.JobDone)
                times.append(time.perf_counter() - t)
            return times

        link_times = through(link)
        link.stop()
        inline = client.Link([sys.executable, "-m", "mega_runtime"], serve_args, inline=True)
        inline.start()
        _wait(inline, client, client.Ready)
        inline.submit(photo, out / "warm", options=options)
        _wait(inline, client, client.JobDone)
        inline_times = through(inline)
        inline.stop()

        # -- in-process ---------------------------------------------------------------------------------------
        from mega_runtime.commands.reconstruct import MODEL_NAMES
        from mega_runtime.io.result import write_result
        from mega_runtime.pipeline.chain import Pipeline, PipelineConfig

        config = PipelineConfig(
            model=MODEL_NAMES.get(args.model, args.model), num_hypotheses=args.hypotheses, device="cpu"
        )
        pipeline = Pipeline.load(config, args.checkpoint_dir, args.assets_dir)
        pipeline.run_image_file(photo, [BOX])
        local_times = []
        for i in range(args.repeats):
            t = time.perf_counter()
            write_result(pipeline.run_image_file(photo, [BOX]), out / f"local{i}" / photo.stem)
            local_times.append(time.perf_counter() - t)

    size_mb = photo.stat().st_size / 2**20
    local, via_path, via_inline = (statistics.median(t) * 1000 for t in (local_times, link_times, inline_times))
    print(f"in-process: {local:.1f} ms per image (run_image_file + write_result)")
    print(f"link, paths: {via_path:.1f} ms → overhead {via_path - local:+.1f} ms")
    print(
        f"link, inline ({size_mb:.1f} MiB photo up, result pair down): {via_inline:.1f} ms → overhead "
        f"{via_inline - local:+.1f} ms"
    )


if __name__ == "__main__":
    main()
