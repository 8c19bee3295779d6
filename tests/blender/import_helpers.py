"""Shared by the import tests (``test_import_*.py``): the size of their synthetic result, importing a result with
the operator, the imported people, and the OpenCV → Blender world conversion. bpy is imported when first used,
so ``conftest.py`` can read the sizes where bpy is missing (its ``arrays`` and ``result_path`` fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: People and hypotheses of the import tests' synthetic result (the ``arrays`` fixture).
NUM_PEOPLE = 2
NUM_HYPOTHESES = 5


def import_result(path: Path, **options) -> set[str]:
    """Run ``bpy.ops.mega.import_result`` on ``path``; returns its result set."""
    import bpy

    return bpy.ops.mega.import_result(filepath=str(path), **options)


def people() -> list:
    """The imported person objects, in person order."""
    import bpy

    from mega_blender import scene_build

    return sorted((o for o in bpy.data.objects if scene_build.is_person(o)), key=lambda o: o["mega_person"])


def world(points: np.ndarray) -> np.ndarray:
    """(..., 3) points in the OpenCV camera frame (metres) as float64 Blender world coordinates (metres)."""
    from mega_blender import coords

    return coords.opencv_to_blender_world(points.astype(np.float64))
