# mypy: disable-error-code="valid-type"
"""Add-on state that is not on the imported objects: two small property groups.

* ``Scene.mega`` (:class:`MEGA_PG_scene`, saved with the file): what the uncertainty toggle replaced, so hiding
  the colours gives back the viewport colouring the user had.
* ``WindowManager.mega`` (:class:`MEGA_PG_session`, never saved): progress of the private-environment install.

Per-person data (hypothesis picker, log-likelihoods, …) lives on the objects themselves as custom properties
(see :mod:`mega_blender.scene_build`), so a file works — drivers included — even without the add-on.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty


class MEGA_PG_scene(bpy.types.PropertyGroup):
    """Per-scene state of the MEGA panel."""

    previous_color_type: StringProperty(
        name="Previous Colour Type",
        description="Solid-view colour type before the uncertainty colours were shown",
        default="MATERIAL",
        options={"HIDDEN"},
    )


class MEGA_PG_session(bpy.types.PropertyGroup):
    """State of this Blender session (not saved): the private-environment install."""

    install_running: BoolProperty(name="Installing", description="A private environment is being set up", default=False)
    install_status: StringProperty(
        name="Install Status", description="Last message of the private-environment install", default=""
    )
    install_progress: FloatProperty(name="Install Progress", subtype="FACTOR", min=0.0, max=1.0, default=0.0)


CLASSES = (MEGA_PG_scene, MEGA_PG_session)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.mega = bpy.props.PointerProperty(type=MEGA_PG_scene)  # type: ignore[attr-defined, func-returns-value]
    bpy.types.WindowManager.mega = bpy.props.PointerProperty(type=MEGA_PG_session)  # type: ignore[attr-defined, func-returns-value]


def unregister() -> None:
    del bpy.types.WindowManager.mega  # type: ignore[attr-defined]
    del bpy.types.Scene.mega  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
