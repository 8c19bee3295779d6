"""Speed and memory of importing MEGA results into Blender (the bpy module), hand-made results, no image.

Prints one line per case: median time of reading the result pair, of building the scene
(``scene_build.build_result`` plus the first depsgraph evaluation) and of the whole ``bpy.ops.mega.import_result``
call, over repeats on an empty factory scene; and memory: the process's resident set after the build minus before
(Blender has no Python API for its allocator), next to the size of the vertex data the scene holds (positions of
every shape, colours, spreads). Each case runs in a fresh subprocess so memory figures do not leak between cases.

    python benchmarks/bench_import.py                 # 1 × 16 and 4 × 16 (people × hypotheses)
    python benchmarks/bench_import.py --repeats 20

Target (issue 4): under 100 ms for 1 person × 16 hypotheses. Needs the bpy module; never run as a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [(1, 16), (4, 16)]
#: Imports made into one scene to measure the memory each one takes.
MEMORY_IMPORTS = 5


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _case(num_people: int, num_hypotheses: int, repeats: int) -> dict[str, float]:
    """Runs inside the child process."""
    sys.path.insert(0, str(ROOT))
    import bpy

    from mega_blender import scene_build
    from mega_blender.result_reader import read_result
    from tests.blender.make_result import make_arrays, make_meta, write_result

    addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

    folder = Path(tempfile.mkdtemp(prefix="mega-bench-"))
    path = write_result(
        folder, "bench", make_arrays(num_people, num_hypotheses), make_meta(1920, 1080, source_path=None)
    )
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("mega_blender")
    read_ms: list[float] = []
    build_ms: list[float] = []
    operator_ms: list[float] = []
    rss_mb_per_import = float("nan")
    try:
        for _ in range(repeats):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            addon_utils.enable("mega_blender")
            start = time.perf_counter()
            result = read_result(path)
            read_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            scene_build.build_result(bpy.context, result)
            bpy.context.view_layer.update()  # include the first evaluation (drivers, shape keys)
            build_ms.append((time.perf_counter() - start) * 1000)
            bpy.ops.wm.read_factory_settings(use_empty=True)
            addon_utils.enable("mega_blender")
            start = time.perf_counter()
            bpy.ops.mega.import_result(filepath=str(path))
            bpy.context.view_layer.update()
            operator_ms.append((time.perf_counter() - start) * 1000)
        # memory: several imports into one scene; the resident set grows by about this much per import
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene_build.build_result(bpy.context, read_result(path))  # first build: one-time allocations
        rss_before = _rss_mb()
        for _ in range(MEMORY_IMPORTS):
            scene_build.build_result(bpy.context, read_result(path))
            bpy.context.view_layer.update()
        rss_mb_per_import = (_rss_mb() - rss_before) / MEMORY_IMPORTS
    finally:
        addon_utils.disable("mega_blender")  # the bpy module hangs at exit with classes registered
    return {
        "read_ms": statistics.median(read_ms),
        "build_ms": statistics.median(build_ms),
        "operator_ms": statistics.median(operator_ms),
        "operator_min_ms": min(operator_ms),
        "data_mb": num_people * (num_hypotheses * 12 + 16 + 4) * 6890 / 2**20,
        "rss_mb": rss_mb_per_import,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        people, hypotheses = (int(v) for v in args.case.split("x"))
        print(json.dumps(_case(people, hypotheses, args.repeats)))
        return
    import platform

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for people, hypotheses in CASES:
        env = {**os.environ, "BLENDER_USER_RESOURCES": tempfile.mkdtemp(prefix="mega-bench-user-")}
        run = subprocess.run(
            [sys.executable, __file__, "--case", f"{people}x{hypotheses}", "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 or not lines:
            print(f"{people} × {hypotheses}: failed\n{run.stderr[-2000:]}")
            continue
        r = json.loads(lines[-1])
        print(
            f"{people} person(s) × {hypotheses} hypotheses: read {r['read_ms']:.1f} ms, build {r['build_ms']:.1f} ms, "
            f"operator {r['operator_ms']:.1f} ms (min {r['operator_min_ms']:.1f}), "
            f"RSS +{r['rss_mb']:.1f} MiB per import (vertex data {r['data_mb']:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
