"""How to animate a MEGA body over a clip in Blender: the options measured side by side (issue 6).

For F frames of one 6890-vertex body (random-walk vertices, no model needed) it builds, in a fresh bpy process
per option, an animated object and prints: build time, .blend size (plus side files), time to play every frame
(``frame_set`` + depsgraph evaluation of the mesh), and whether the animation survives glTF export.

* ``shape_keys``: one absolute shape key per frame, each keyed 0 → 1 → 0 around its frame (constant
  interpolation), written with ``foreach_set``;
* ``pc2``: the frames written as a PC2 point cache beside the .blend and read by a Mesh Cache modifier
  (``play_mode`` CUSTOM with ``eval_frame`` driven by the scene frame — the same file can hold every
  hypothesis of every frame, the driver adding the picked hypothesis).

    python benchmarks/bench_animation.py [--frames 1000]

Needs the bpy module; never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUM_VERTICES = 6890


def _write_pc2(path: Path, frames: np.ndarray) -> None:
    """PC2: 12-byte magic, version 1, point count, start frame, sample rate, sample count; then float32 xyz."""
    count, points = frames.shape[:2]
    header = np.zeros(
        1,
        dtype=[
            ("magic", "S12"),
            ("version", "<i4"),
            ("points", "<i4"),
            ("start", "<f4"),
            ("rate", "<f4"),
            ("samples", "<i4"),
        ],
    )
    header[0] = (b"POINTCACHE2\0", 1, points, 0.0, 1.0, count)
    with open(path, "wb") as handle:
        handle.write(header.tobytes())
        handle.write(np.ascontiguousarray(frames, dtype="<f4").tobytes())


def _case(option: str, num_frames: int, folder: Path) -> dict:
    import bpy

    rng = np.random.default_rng(0)
    base = rng.normal(size=(NUM_VERTICES, 3)).astype(np.float32)
    frames = base[None] + np.cumsum(rng.normal(scale=0.002, size=(num_frames, NUM_VERTICES, 3)), axis=0).astype(
        np.float32
    )
    faces = rng.integers(0, NUM_VERTICES, size=(13776, 3))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, num_frames
    t0 = time.perf_counter()
    mesh = bpy.data.meshes.new("Body")
    mesh.vertices.add(NUM_VERTICES)
    mesh.vertices.foreach_set("co", frames[0].ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel().astype(np.int32))
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update()
    obj = bpy.data.objects.new("Body", mesh)
    scene.collection.objects.link(obj)
    side_bytes = 0
    if option == "shape_keys":
        obj.shape_key_add(name="Basis")
        for f in range(num_frames):
            key = obj.shape_key_add(name=f"Frame {f + 1:04d}", from_mix=False)
            key.data.foreach_set("co", frames[f].ravel())
        keys = mesh.shape_keys
        keys.animation_data_create()
        action = bpy.data.actions.new("Frames")
        keys.animation_data.action = action
        for f in range(num_frames):
            key = keys.key_blocks[f + 1]
            key.value = 0.0
            for frame, value in ((f, 0.0), (f + 1, 1.0), (f + 2, 0.0)):
                key.value = value
                key.keyframe_insert("value", frame=frame)
    else:
        pc2 = folder / "body.pc2"
        _write_pc2(pc2, frames)
        side_bytes = pc2.stat().st_size
        modifier = obj.modifiers.new("MEGA Frames", "MESH_CACHE")
        modifier.cache_format = "PC2"
        modifier.filepath = str(pc2)
        modifier.play_mode = "CUSTOM"
        modifier.time_mode = "FRAME"
        fcurve = modifier.driver_add("eval_frame")
        fcurve.driver.type = "SCRIPTED"
        fcurve.driver.expression = "frame - 1"
    build_s = time.perf_counter() - t0
    blend = folder / f"{option}.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    t1 = time.perf_counter()
    checks = []
    for frame in range(1, num_frames + 1):
        scene.frame_set(frame)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        if frame in (1, num_frames):
            co = np.empty(NUM_VERTICES * 3, np.float32)
            evaluated.data.vertices.foreach_get("co", co)
            checks.append(float(np.abs(co.reshape(-1, 3) - frames[frame - 1]).max()))
    play_s = time.perf_counter() - t1
    glb = folder / f"{option}.glb"
    bpy.ops.export_scene.gltf(filepath=str(glb), export_format="GLB", export_animations=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    imported = next(o for o in bpy.data.objects if o.type == "MESH")
    morphs = len(imported.data.shape_keys.key_blocks) - 1 if imported.data.shape_keys else 0
    return {
        "build_s": build_s,
        "blend_mb": blend.stat().st_size / 2**20,
        "side_mb": side_bytes / 2**20,
        "play_fps": num_frames / play_s,
        "max_error_m": max(checks),
        "glb_morph_targets": morphs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--option", choices=("shape_keys", "pc2"))
    args = parser.parse_args()
    if args.option:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(_case(args.option, args.frames, Path(tmp))))
        sys.stdout.flush()
        os._exit(0)  # bpy's threads can keep the interpreter from exiting
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {args.frames} frames")
    for option in ("pc2", "shape_keys"):
        run = subprocess.run(
            [sys.executable, __file__, "--option", option, "--frames", str(args.frames)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{option}: failed\n{run.stderr[-2000:]}")
            continue
        r = json.loads(lines[0][7:])
        print(
            f"{option:10s}: build {r['build_s']:.2f} s, .blend {r['blend_mb']:.1f} MiB + side files "
            f"{r['side_mb']:.1f} MiB, playback {r['play_fps']:.0f} frames/s, max error {r['max_error_m']:.1e} m, "
            f"glTF morph targets after export {r['glb_morph_targets']}"
        )


if __name__ == "__main__":
    main()
