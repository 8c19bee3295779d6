"""bpy helpers for the Blender tests: datablock counts, world-space vertices, calling an operator's execute."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

#: The kinds of datablocks an import may create.
DATA_KINDS = ("objects", "meshes", "materials", "collections", "cameras", "images", "shape_keys", "actions")


def counts(bpy: Any) -> dict[str, int]:
    """How many datablocks of each kind in :data:`DATA_KINDS` exist now."""
    return {kind: len(getattr(bpy.data, kind)) for kind in DATA_KINDS}


def local_vertices(mesh: Any) -> np.ndarray:
    """(V, 3) float32 vertex coordinates of a mesh (object space)."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def world_vertices(obj: Any, evaluated: bool = True) -> np.ndarray:
    """(V, 3) float64 world-space vertices of a mesh object (evaluated: shape keys and drivers applied)."""
    import bpy

    if evaluated:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated_obj = obj.evaluated_get(depsgraph)
        mesh = evaluated_obj.to_mesh()
        try:
            co = local_vertices(mesh).astype(np.float64)
        finally:
            evaluated_obj.to_mesh_clear()
    else:
        co = local_vertices(obj.data).astype(np.float64)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    return co @ matrix[:3, :3].T + matrix[:3, 3]


def key_vertices(key_block: Any) -> np.ndarray:
    """(V, 3) float32 coordinates stored in a shape key."""
    co = np.empty(len(key_block.data) * 3, dtype=np.float32)
    key_block.data.foreach_get("co", co)
    return co.reshape(-1, 3)


def execute_import(operator_class: Any, context: Any, filepath: str, **options: Any) -> tuple[set[str], list]:
    """Call ``operator_class.execute`` directly (bpy.ops turns an ERROR report into a RuntimeError, hiding the
    returned set); returns (the returned set, [(report type set, message), …])."""
    reports: list[tuple[set[str], str]] = []
    values = {"frame": 0, "animate": True, "uncertainty_range_mm": 0.0, "sensor_mm": 36.0, **options}
    stub = SimpleNamespace(filepath=filepath, report=lambda kind, message: reports.append((kind, message)), **values)
    return operator_class.execute(stub, context), reports


def run_jobs(jobs: Any, timeout_s: float = 180.0, on_progress: Any = None) -> None:
    """Call the add-on's timer function until no job runs (what Blender's event loop does in the UI); fails the
    test naming the job's last status when none ended within ``timeout_s``."""
    import time

    import bpy
    import pytest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs.pump()
        if on_progress is not None:
            on_progress()
        if not bpy.context.window_manager.mega.job_running:
            return
        time.sleep(0.02)
    pytest.fail(f"no job ended within {timeout_s} s: {bpy.context.window_manager.mega.job_status}")
