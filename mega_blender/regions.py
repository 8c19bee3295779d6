"""Named body regions of the SMPL mesh, from the add-on's ``token_regions.json`` (no bpy, no torch).

The file is generated from the Mesh-VQ-VAE connection matrices by ``python -m mega_runtime.models.token_regions
--write-addon-data`` (docs/completion.md): ``regions`` maps a name (``head``, ``left_leg``, …) to its ``tokens`` and
``vertices`` (indices into the 6890 SMPL vertices). The Complete operator offers these names and sends the
runtime a name or the vertices selected in Edit Mode.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "token_regions.json"
NUM_VERTICES = 6890


class RegionDataError(ValueError):
    """``token_regions.json`` is missing or unreadable; the message says how to get it back."""


@functools.cache
def _data() -> dict[str, Any]:
    try:
        data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RegionDataError(
            f"the add-on's region map {DATA_FILE.name} cannot be read ({exc}); reinstall the add-on"
        ) from exc
    regions = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, dict) or not regions:
        raise RegionDataError(f"the add-on's region map {DATA_FILE.name} holds no regions; reinstall the add-on")
    return data


def region_names() -> list[str]:
    """The region names, sorted (``feet``, ``hands``, ``head``, ``left_arm``, …)."""
    return sorted(_data()["regions"])


def region_vertices(name: str) -> list[int]:
    """The vertex indices (each in [0, 6890)) of region ``name``; ValueError naming the choices otherwise."""
    regions = _data()["regions"]
    if name not in regions:
        raise RegionDataError(f"no body region is called {name!r}; use one of {', '.join(region_names())}")
    return [int(v) for v in regions[name]["vertices"]]


#: Value of the region menus meaning "the vertices selected in Edit Mode".
SELECTED = "SELECTED"
_ENUM_ITEMS: list[tuple[str, str, str]] = []  # Blender needs dynamic enum items kept alive by Python


def enum_items(_owner: Any = None, _context: Any = None) -> list[tuple[str, str, str]]:
    """Items of the Keep menus (an EnumProperty ``items`` callback): Selected Vertices, then the regions."""
    if not _ENUM_ITEMS:
        _ENUM_ITEMS.append((SELECTED, "Selected Vertices", "The vertices selected in Edit Mode"))
        try:
            names = region_names()
        except RegionDataError:  # the operator reports it when used; the menu offers the selection only
            names = []
        _ENUM_ITEMS.extend((name, label(name), f"The {label(name).lower()} region") for name in names)
    return _ENUM_ITEMS


def label(name: str) -> str:
    """``left_leg`` → ``Left Leg`` (for menus)."""
    return name.replace("_", " ").title()
