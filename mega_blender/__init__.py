"""MEGA Human Mesh Recovery for Blender: people in photos as meshes with hypotheses and uncertainty.

This module only registers and unregisters; the work is in the submodules (``scene_build``, ``operators``,
``reconstruct``, ``shaping``, ``jobs``, ``animation``, ``panels``, ``preferences``, ``properties``, ``batch``,
``overlay``) and the bpy-free ``result_reader`` (+ ``compact_reader``), ``coords``, ``sources``, ``pointcache``,
``regions``, ``clip_boxes``, ``runtime_client`` (+ ``runtime_transport``) and ``installer`` (+ ``torch_builds``,
``pip_progress``).
Nothing is imported at module level, so ``import mega_blender.result_reader`` works in plain CPython.

It is an extension (``blender_manifest.toml`` at the zip root; Blender ignores ``bl_info`` then) and, for
development, a legacy add-on folder on the scripts path (Blender lists those by ``bl_info``).
"""

from __future__ import annotations

from typing import Any

bl_info = {
    "name": "MEGA Human Mesh Recovery",
    "author": "MEGA for Blender contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D View › Sidebar › MEGA; File › Import › MEGA result (.json)",
    "description": "People in photos as 3D meshes with hypotheses and uncertainty",
    "doc_url": "",
    "category": "Import-Export",
}

#: Handle of the ``blender --command mega`` registration (None while unregistered).
_cli_handle: Any = None


def register() -> None:
    """Register properties, preferences, operators, panels, the File › Import entry and ``--command mega``."""
    global _cli_handle
    import bpy

    from . import animation, batch, operators, overlay, panels, preferences, properties, reconstruct, shaping

    animation.ensure_handler()
    properties.register()
    preferences.register()
    operators.register()
    reconstruct.register()
    shaping.register()
    panels.register()
    overlay.register()
    _cli_handle = bpy.utils.register_cli_command("mega", batch.cli_command)  # type: ignore[func-returns-value]


def unregister() -> None:
    """Undo :func:`register`, in reverse order."""
    global _cli_handle
    import bpy

    from . import animation, operators, overlay, panels, preferences, properties, reconstruct, shaping

    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    overlay.unregister()
    panels.unregister()
    shaping.unregister()
    reconstruct.unregister()
    operators.unregister()
    preferences.unregister()
    properties.unregister()
    animation.remove_handler()
