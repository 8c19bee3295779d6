"""Speed and memory of importing a *video* result into Blender as animated people (issue 6).

Hand-made results (random bodies, no clip), each case in a fresh bpy process. Prints: reading the result pair,
building (``animation.build_animation``: point caches, modifiers, drivers, first evaluation), the resident-set
growth of the build, the size of the caches written, the .blend size, and playback (``frame_set`` + evaluation
of every person) in frames per second.

    python benchmarks/bench_video_import.py                       # 300 frames × 2 people × 16, 1000 × 1 × 8
    python benchmarks/bench_video_import.py --case 1000x1x16
    python benchmarks/bench_video_import.py --case 1000x1x16c     # c: a compact (format 2.0) result of moving
                                                                  # synthetic bodies, written by the runtime

Target (issue 6): 1,000 frames imported in under 10 s. Needs the bpy module; never run as a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ["300x2x16", "1000x1x8"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _case(frames: int, people: int, hypotheses: int, compact: bool = False) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    import bpy
    import numpy as np

    from mega_blender import animation
    from mega_blender.result_reader import read_result
    from tests.blender.make_result import make_arrays, make_meta, write_result

    addon_utils = importlib.import_module("addon_utils")
    folder = Path(tempfile.mkdtemp(prefix="mega-bench-video-"))
    try:
        arrays = make_arrays(people, hypotheses, frames)
        arrays["frame_indices"] = np.arange(frames, dtype=np.int32)
        meta = make_meta(1920, 1080, source_path=None)
        meta["source"].update(kind="video", fps=30.0)
        if compact:  # random offsets do not compress: bodies that move like people, encoded by the runtime
            from mega_runtime.io.result import Result
            from mega_runtime.io.result import write_result as write_runtime_result
            from tests.runtime.synthetic_bodies import make_video

            video = make_video(frames, people, hypotheses)
            arrays.update(vertices=video["vertices"], rotation=video["rotation"], cam_t=video["cam_t"])
            del video
            path, _ = write_runtime_result(Result(meta=meta, arrays=arrays), folder / "clip", compact=True)
        else:
            path = write_result(folder, "clip", arrays, meta)
        del arrays
        bpy.ops.wm.read_factory_settings(use_empty=True)
        addon_utils.enable("mega_blender")
        start = time.perf_counter()
        result = read_result(path)
        read_s = time.perf_counter() - start
        rss = _rss_mb()
        start = time.perf_counter()
        built = animation.build_animation(bpy.context, result, folder / "cache")
        bpy.context.view_layer.update()
        build_s = time.perf_counter() - start
        rss_build = _rss_mb() - rss
        cache_mb = sum(p.stat().st_size for p in (folder / "cache").iterdir()) / 2**20
        blend = folder / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
        scene = bpy.context.scene
        played = min(frames, 200)
        start = time.perf_counter()
        for frame in range(1, played + 1):
            scene.frame_set(frame)
            for obj in built.people:
                obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        play_fps = played / (time.perf_counter() - start)
        addon_utils.disable("mega_blender")
        return {
            "read_s": read_s,
            "build_s": build_s,
            "rss_mb": rss_build,
            "cache_mb": cache_mb,
            "blend_mb": blend.stat().st_size / 2**20,
            "result_mb": (folder / "clip.npz").stat().st_size / 2**20,
            "play_fps": play_fps,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="FRAMESxPEOPLExHYPOTHESES (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        compact = args.child.endswith("c")
        sizes = (int(v) for v in args.child.removesuffix("c").split("x"))
        print("RESULT " + json.dumps(_case(*sizes, compact=compact)))
        sys.stdout.flush()
        os._exit(0)  # bpy's threads can keep the interpreter from exiting
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for case in args.case or CASES:
        env = {**os.environ, "BLENDER_USER_RESOURCES": tempfile.mkdtemp(prefix="mega-bench-user-")}
        run = subprocess.run(
            [sys.executable, __file__, "--child", case], capture_output=True, text=True, env=env, check=False
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{case}: failed\n{run.stderr[-2000:]}")
            continue
        r = json.loads(lines[0][7:])
        frames, people, hypotheses = case.removesuffix("c").split("x")
        print(
            f"{frames} frames × {people} people × {hypotheses} hypotheses{' compact' if case.endswith('c') else ''} "
            f"(result {r['result_mb']:.1f} MiB): "
            f"read {r['read_s']:.2f} s, build {r['build_s']:.2f} s, RSS +{r['rss_mb']:.0f} MiB, caches "
            f"{r['cache_mb']:.0f} MiB, .blend {r['blend_mb']:.1f} MiB, playback {r['play_fps']:.0f} frames/s"
        )


if __name__ == "__main__":
    main()
