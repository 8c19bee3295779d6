"""Turn a :class:`~mega_blender.result_reader.MegaResult` into Blender data: people, camera, photo, colours.

What one import makes (all new datablocks; nothing the user already has is renamed, replaced or deleted):

* the scene it goes into: the current scene, unless that already holds another photo's import (a MEGA camera
  whose ``mega_source`` differs, see :func:`holds_other_photo`) — then a new scene named after the photo, so two
  photos never share a camera or a space; in the UI the window switches to the new scene;
* a collection ``MEGA <source name>`` linked under that scene's master collection, holding
* a camera object ``<source name> Camera`` at the world origin, rotated by
  :func:`~mega_blender.coords.camera_rotation_euler` (looking along world +Y, +Z up), whose lens, sensor, sensor
  fit and shift come from :func:`~mega_blender.coords.camera_intrinsics`, with the photo as its background
  image; it becomes the scene camera and the render resolution becomes the image size (100 %);
* one mesh object ``<source name> Person <n>`` per person seen in the built frame (``n`` = person index + 1), SMPL
  topology (6890 vertices, 13776 smooth-shaded triangles). Vertices are the result's OpenCV camera-frame
  coordinates converted with :func:`~mega_blender.coords.opencv_to_blender_world` — so the mesh lies where the
  camera sees the person — with the object's origin moved to the person's translation (``cam_t`` of hypothesis
  0, converted the same way) and the vertices stored relative to it. World coordinates of the evaluated mesh
  are therefore exactly the converted result, and moving the object moves the whole body;
* the Basis shape is hypothesis 0 (the deterministic decode); shape keys ``Hypothesis 01`` … ``Hypothesis
  <H−1>`` hold the sampled hypotheses as absolute shapes (same frame as the Basis), ordered by descending
  log-likelihood (:func:`~mega_blender.result_reader.hypothesis_order`): key ``k`` is the k-th most likely sample;
* the integer object property ``mega_hypothesis`` (0 … H−1; 0 = Basis, k = key ``Hypothesis k``) drives the keys:
  key k's value has a driver with the simple expression ``h == k`` and a single-property variable ``h`` reading
  ``["mega_hypothesis"]``. Blender evaluates such expressions natively (no Python, so they work with
  auto-run scripts off and in background mode), so exactly one key is at 1 (or none for 0); keyframing the
  property animates the choice;
* per-object custom properties (lists are indexed by the value of ``mega_hypothesis``):
  ``mega_log_likelihood`` (natural log, float list of H), ``mega_source_hypothesis`` (the result's hypothesis
  index, int list of H, entry 0 = 0), ``mega_person`` (1-based), ``mega_track_id``, ``mega_frame`` (source
  frame number), ``mega_result_path``, ``mega_uncertainty_range_m`` (the spread shown as full red), and
  ``mega_role`` = ``"person"`` (the camera has ``mega_role`` = ``"camera"`` and ``mega_source``). Code finds
  people by these properties (:func:`is_person`), never by name;
* the per-vertex spread ``vertex_std`` as a POINT FLOAT attribute ``mega_uncertainty_m`` (metres) and, colour
  mapped, as a POINT FLOAT_COLOR attribute ``MEGA Uncertainty`` (active and render colour, so Solid view ›
  Attribute shows it), plus one material per import, ``MEGA Uncertainty`` (Color Attribute ``MEGA Uncertainty`` →
  Principled BSDF Base Color), for Material Preview and Rendered views.

Meshes are built with numpy and ``foreach_set`` only (no per-vertex Python). Everything is built unlinked first
and linked into the scene last; if anything fails, every datablock this call created is removed again and the
error is re-raised, so a failed import leaves the file as it was. Invalid input raises
:class:`~mega_blender.result_reader.ResultFormatError` before anything is created.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import bpy
import numpy as np

from .coords import CameraIntrinsics, camera_intrinsics, camera_rotation_euler, opencv_to_blender_world
from .result_reader import MegaResult, ResultFormatError, hypothesis_order

log = logging.getLogger(__name__)

HYPOTHESIS_PROP = "mega_hypothesis"
LOG_LIKELIHOOD_PROP = "mega_log_likelihood"
SOURCE_HYPOTHESIS_PROP = "mega_source_hypothesis"
ROLE_PROP = "mega_role"
UNCERTAINTY_RANGE_PROP = "mega_uncertainty_range_m"
ROLE_PERSON = "person"
ROLE_CAMERA = "camera"
#: On a photo import's camera: :func:`source_key` of the photo, which decides whether a scene holds another photo.
SOURCE_PROP = "mega_source"

UNCERTAINTY_ATTRIBUTE = "mega_uncertainty_m"
UNCERTAINTY_COLOR_ATTRIBUTE = "MEGA Uncertainty"
UNCERTAINTY_MATERIAL = "MEGA Uncertainty"
#: Marks the materials this add-on made (the uncertainty toggle only touches those).
MATERIAL_FLAG_PROP = "mega_uncertainty_material"
#: Variable name used in the key drivers.
DRIVER_VARIABLE = "h"

#: Spread (metres) mapped to full red when the result's own maximum is (almost) zero.
MIN_UNCERTAINTY_RANGE_M = 1e-3
#: Colour ramp of the uncertainty colours: (position 0…1, sRGB colour); blue = certain, red = uncertain.
UNCERTAINTY_RAMP_SRGB: tuple[tuple[float, tuple[float, float, float]], ...] = (
    (0.0, (0.05, 0.25, 0.85)),
    (0.3, (0.10, 0.70, 0.80)),
    (0.5, (0.20, 0.80, 0.25)),
    (0.75, (0.95, 0.85, 0.10)),
    (1.0, (0.90, 0.10, 0.10)),
)
#: Viewport colour (linear RGBA) of the uncertainty material in Solid view › Material.
SKIN_RGBA = (0.8, 0.6, 0.5, 1.0)
#: Camera clipping (metres): people stand from a few decimetres to tens of metres away.
CAMERA_CLIP_START_M = 0.05
CAMERA_CLIP_END_M = 1000.0


def person_name(person_index: int, source_name: str = "MEGA") -> str:
    """``<source name> Person <n>`` for the 0-based ``person_index`` (n = index + 1); ``MEGA Person <n>`` without
    a source name (video imports)."""
    return f"{source_name} Person {person_index + 1}"


def camera_name(source_name: str) -> str:
    """``<source name> Camera``: the camera of a photo import."""
    return f"{source_name} Camera"


def source_key(result: MegaResult) -> str:
    """What tells photos apart: the source path the runtime recorded, else the result file's path."""
    return str(result.source_path) if result.source_path is not None else str(result.path)


def key_name(rank: int) -> str:
    """``Hypothesis 01`` … for the 1-based rank of a sampled hypothesis by log-likelihood."""
    return f"Hypothesis {rank:02d}"


def driver_expression(rank: int) -> str:
    """The simple expression driving key ``rank``: 1 when ``mega_hypothesis`` equals ``rank``, else 0."""
    return f"{DRIVER_VARIABLE} == {rank}"


@dataclass
class BuildReport:
    """What :func:`build_result` made. Holds references (names may carry Blender's ``.001`` suffixes)."""

    collection: bpy.types.Collection
    camera: bpy.types.Object
    people: list[bpy.types.Object]
    material: bpy.types.Material | None
    image: bpy.types.Image | None
    warnings: list[str] = field(default_factory=list)
    armatures: list[bpy.types.Object] = field(default_factory=list)
    #: The scene the import was linked into (a new one when the current scene held another photo's import).
    scene: bpy.types.Scene | None = None

    @property
    def objects(self) -> list[bpy.types.Object]:
        """Every object created: the camera, the people in person order, then SMPL armatures (if fitted)."""
        return [self.camera, *self.people, *self.armatures]


class _Created:
    """Datablocks made by one build, removed again (newest first) when the build fails."""

    def __init__(self) -> None:
        self.ids: list[bpy.types.ID] = []

    def add(self, datablock: Any) -> Any:
        self.ids.append(datablock)
        return datablock

    def remove_all(self) -> None:
        collections: dict[type, Any] = {
            bpy.types.Object: bpy.data.objects,
            bpy.types.Mesh: bpy.data.meshes,
            bpy.types.Camera: bpy.data.cameras,
            bpy.types.Material: bpy.data.materials,
            bpy.types.Image: bpy.data.images,
            bpy.types.Collection: bpy.data.collections,
            bpy.types.MovieClip: bpy.data.movieclips,
            bpy.types.Scene: bpy.data.scenes,
        }
        # objects first (they use the others), then the rest newest first
        ordered: list[bpy.types.ID] = [i for i in reversed(self.ids) if isinstance(i, bpy.types.Object)]
        ordered += [i for i in reversed(self.ids) if not isinstance(i, bpy.types.Object)]
        for datablock in ordered:
            for kind, data in collections.items():
                if isinstance(datablock, kind):
                    with contextlib.suppress(ReferenceError):  # already freed with its owner
                        data.remove(datablock)
                    break
        self.ids.clear()


def build_result(
    context: bpy.types.Context,
    result: MegaResult,
    frame: int = 0,
    *,
    uncertainty_range_m: float | None = None,
    sensor_mm: float = 36.0,
) -> BuildReport:
    """Build ``result``'s frame ``frame`` into ``context.scene`` (see the module docstring for what is made).

    ``uncertainty_range_m``: the spread (metres) shown as full red; None or ≤ 0 uses the largest spread among the
    people built. ``sensor_mm``: sensor size along the image's longer side. Returns a :class:`BuildReport`;
    raises :class:`ResultFormatError` (nothing created) when the result cannot be built.
    """
    scene = context.scene
    if scene is None:
        raise ResultFormatError("there is no active scene to import into", "open or create a scene first")
    if not 0 <= frame < result.num_frames:
        raise ResultFormatError(
            f"{result.path} has {result.num_frames} frame(s); frame {frame} does not exist",
            f"choose a frame between 0 and {max(result.num_frames - 1, 0)}",
        )
    intrinsics = result_intrinsics(result, sensor_mm)
    warnings = runtime_warnings(result)
    if result.num_frames > 1:
        warnings.append(
            f"{result.source_name}: the result has {result.num_frames} frames; only frame {frame} "
            f"(source frame {int(result.frame_indices[frame])}) was built (import without a frame to animate it)"
        )
    people = [p for p in range(result.num_people) if bool(result.valid[frame, p])]
    if result.num_people == 0:
        warnings.append(f"{result.source_name}: no person was found; only the camera was made")
    for p in range(result.num_people):
        if p not in people:
            warnings.append(
                f"{result.source_name}: {person_name(p, result.source_name)} is not seen in frame {frame}; skipped"
            )
    range_m = _uncertainty_range(result, frame, people, uncertainty_range_m)
    image_path = find_source_image(result)

    created = _Created()
    try:
        if holds_other_photo(scene, source_key(result)):  # two photos never share a camera or a space
            scene = created.add(bpy.data.scenes.new(result.source_name))
        collection = created.add(bpy.data.collections.new(f"MEGA {result.source_name}"))
        image = _load_image(image_path, result, created, warnings)
        camera = build_camera(collection, result, intrinsics, image, created, name=camera_name(result.source_name))
        material = build_material(created) if people else None
        built = [_build_person(collection, result, frame, p, material, range_m, created) for p in people]
        link_into_scene(context, scene, collection, camera, built, intrinsics)
    except BaseException:
        created.remove_all()
        raise
    if scene != context.scene:
        log.info("%s: the scene held another photo's import; made scene '%s'", result.source_name, scene.name)
        if context.window is not None:  # in the UI, show the new scene
            context.window.scene = scene
    for message in warnings:  # the operator reports them; the batch prints them
        log.info("%s", message)
    return BuildReport(
        collection=collection,
        camera=camera,
        people=built,
        material=material,
        image=image,
        warnings=warnings,
        scene=scene,
    )


def holds_other_photo(scene: bpy.types.Scene, key: str) -> bool:
    """Whether ``scene`` holds a MEGA import (a MEGA camera) of another source than ``key``.

    Cameras imported before sources were recorded (no ``mega_source``) count as another source.
    """
    return any(obj.get(ROLE_PROP) == ROLE_CAMERA and obj.get(SOURCE_PROP) != key for obj in scene.objects)


# --- checks done before anything is created ---------------------------------------------------------------


def runtime_warnings(result: MegaResult) -> list[str]:
    """The warnings the runtime wrote into the result (e.g. a person behind the camera), named by source."""
    found = result.meta.get("warnings")
    if not isinstance(found, list):
        return []
    return [f"{result.source_name}: {message}" for message in found if isinstance(message, str)]


def result_intrinsics(result: MegaResult, sensor_mm: float) -> CameraIntrinsics:
    """Blender camera settings (lens, sensor, shift in mm / fractions) for the result's pinhole camera."""
    width, height = result.image_size
    try:
        return camera_intrinsics(width, height, result.focal_px, result.principal_point_px, sensor_mm=sensor_mm)
    except ValueError as exc:
        raise ResultFormatError(
            f"{result.path}: its camera cannot be set up in Blender ({exc})", "re-export the result with mega-runtime"
        ) from exc


def _uncertainty_range(result: MegaResult, frame: int, people: list[int], requested_m: float | None) -> float:
    if requested_m is not None and requested_m > 0:
        return float(requested_m)
    if not people:
        return MIN_UNCERTAINTY_RANGE_M
    return max(MIN_UNCERTAINTY_RANGE_M, float(result.vertex_std[frame, people].max()))


#: How many folders above the result's folder a relative source path is tried against.
SOURCE_SEARCH_DEPTH = 3


def find_source_image(result: MegaResult) -> Path | None:
    """The photo the result was made from.

    The runtime records the path as it was given to it, so a relative path is relative to the folder it ran in,
    which the result does not name: it is tried against the result's folder, the folders above it (a result
    written to ``out/`` under the folder the runtime ran in), and the current folder; last, a file of the same
    name beside the result.
    """
    source = result.source_path
    if source is None:
        return None
    folder = result.path.parent
    if source.is_absolute():
        candidates = [source]
    else:
        bases = [folder, *list(folder.parents)[:SOURCE_SEARCH_DEPTH], Path.cwd()]
        candidates = [base / source for base in bases]
    candidates.append(folder / source.name)
    return next((c for c in candidates if c.is_file()), None)


# --- building ----------------------------------------------------------------------------------------------


def _load_image(
    path: Path | None, result: MegaResult, created: _Created, warnings: list[str]
) -> bpy.types.Image | None:
    if path is None:
        where = f" ({result.source_path})" if result.source_path is not None else ""
        warnings.append(f"{result.source_name}: the photo{where} was not found; the camera has no background image")
        return None
    resolved = path.resolve()
    for image in bpy.data.images:  # reuse an image already loaded from the same file (it is not modified)
        if image.filepath and Path(bpy.path.abspath(image.filepath)).resolve() == resolved:
            return image
    try:
        return cast(bpy.types.Image, created.add(bpy.data.images.load(str(resolved), check_existing=False)))
    except RuntimeError as exc:
        warnings.append(f"{result.source_name}: the photo {resolved} could not be loaded ({exc}); no background")
        return None


def build_camera(
    collection: bpy.types.Collection,
    result: MegaResult,
    intrinsics: CameraIntrinsics,
    image: bpy.types.Image | None,
    created: _Created,
    *,
    name: str | None = None,
) -> bpy.types.Object:
    """A new camera at the origin looking along +Y with ``intrinsics``, the photo (if any) as its background.

    ``name``: the object's name (default ``MEGA Camera <source name>``, used by video imports).
    """
    name = name or f"MEGA Camera {result.source_name}"
    data = cast(bpy.types.Camera, created.add(bpy.data.cameras.new(name)))
    data.type = "PERSP"
    data.lens_unit = "MILLIMETERS"
    data.lens = intrinsics.lens_mm
    data.sensor_width = intrinsics.sensor_width_mm
    data.sensor_height = intrinsics.sensor_height_mm
    data.sensor_fit = "VERTICAL" if intrinsics.sensor_fit == "VERTICAL" else "HORIZONTAL"
    data.shift_x = intrinsics.shift_x
    data.shift_y = intrinsics.shift_y
    data.clip_start = CAMERA_CLIP_START_M
    data.clip_end = CAMERA_CLIP_END_M
    if image is not None:
        background = data.background_images.new()
        background.source = "IMAGE"
        background.image = image
        background.frame_method = "STRETCH"  # the image fills the camera frame, which has the image's aspect
        background.display_depth = "BACK"
        background.alpha = 1.0
    data.show_background_images = True
    camera = cast(bpy.types.Object, created.add(bpy.data.objects.new(name, data)))
    camera.location = (0.0, 0.0, 0.0)
    camera.rotation_mode = "XYZ"
    camera.rotation_euler = camera_rotation_euler()
    camera[ROLE_PROP] = ROLE_CAMERA
    camera[SOURCE_PROP] = source_key(result)
    camera["mega_result_path"] = str(result.path)
    collection.objects.link(camera)
    return camera


def build_material(created: _Created) -> bpy.types.Material:
    """A new skin material that shows the ``MEGA Uncertainty`` colour attribute."""
    material = cast(bpy.types.Material, created.add(bpy.data.materials.new(UNCERTAINTY_MATERIAL)))
    material.diffuse_color = SKIN_RGBA
    material[MATERIAL_FLAG_PROP] = True
    if material.node_tree is None:  # Blender < 5.0 creates the node tree on demand
        material.use_nodes = True
    tree = material.node_tree
    if tree is None:  # pragma: no cover - use_nodes always creates one
        raise RuntimeError("Blender did not create a node tree for the uncertainty material")
    bsdf = next((n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled"), None)
    if bsdf is None:
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    attribute = tree.nodes.new("ShaderNodeVertexColor")
    attribute.name = attribute.label = UNCERTAINTY_COLOR_ATTRIBUTE
    if isinstance(attribute, bpy.types.ShaderNodeVertexColor):
        attribute.layer_name = UNCERTAINTY_COLOR_ATTRIBUTE
    attribute.location = (bsdf.location.x - 300.0, bsdf.location.y)
    tree.links.new(attribute.outputs["Color"], bsdf.inputs["Base Color"])
    roughness = bsdf.inputs.get("Roughness")
    if isinstance(roughness, bpy.types.NodeSocketFloat):
        roughness.default_value = 0.6
    return material


def uncertainty_colors(std_m: np.ndarray, range_m: float) -> np.ndarray:
    """Colour-map spreads: ``std_m`` (V,) metres → (V, 4) float32 linear RGBA (blue = 0, red ≥ ``range_m``)."""
    t = np.clip(np.asarray(std_m, dtype=np.float64) / max(range_m, 1e-12), 0.0, 1.0)
    stops = np.array([s for s, _ in UNCERTAINTY_RAMP_SRGB])
    srgb = np.array([c for _, c in UNCERTAINTY_RAMP_SRGB])
    rgba = np.ones((t.shape[0], 4), dtype=np.float64)
    for channel in range(3):
        rgba[:, channel] = np.interp(t, stops, srgb[:, channel])
    rgb = rgba[:, :3]
    rgba[:, :3] = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # sRGB → linear
    return rgba.astype(np.float32)


def _build_person(
    collection: bpy.types.Collection,
    result: MegaResult,
    frame: int,
    person: int,
    material: bpy.types.Material | None,
    range_m: float,
    created: _Created,
) -> bpy.types.Object:
    name = person_name(person, result.source_name)
    shapes_world = opencv_to_blender_world(result.vertices[frame, person])  # (H, V, 3) float32 metres
    location = opencv_to_blender_world(result.cam_t[frame, person, 0]).astype(np.float64)  # (3,)
    shapes_local: np.ndarray = (shapes_world - location.astype(np.float32)).astype(np.float32)  # (H, V, 3)
    log_likelihood = result.log_likelihood[frame, person]  # (H,)
    order = hypothesis_order(log_likelihood)  # key k (1-based) holds hypothesis order[k - 1]

    mesh = cast(bpy.types.Mesh, created.add(bpy.data.meshes.new(name)))
    fill_mesh(mesh, shapes_local[0], result.faces)
    std = result.vertex_std[frame, person].astype(np.float32)  # (V,) metres
    add_uncertainty(mesh, std, range_m)
    if material is not None:
        mesh.materials.append(material)

    obj = cast(bpy.types.Object, created.add(bpy.data.objects.new(name, mesh)))
    obj.location = tuple(location)
    collection.objects.link(obj)
    picker = [0, *order]
    obj[ROLE_PROP] = ROLE_PERSON
    obj["mega_person"] = person + 1
    obj["mega_track_id"] = int(result.track_ids[person])
    obj["mega_frame"] = int(result.frame_indices[frame])
    obj["mega_result_path"] = str(result.path)
    obj[UNCERTAINTY_RANGE_PROP] = float(range_m)
    obj[LOG_LIKELIHOOD_PROP] = [float(log_likelihood[h]) for h in picker]
    obj[SOURCE_HYPOTHESIS_PROP] = picker
    obj[HYPOTHESIS_PROP] = 0
    set_picker_range(obj, len(picker))
    if len(picker) > 1:
        _add_hypothesis_keys(obj, shapes_local, order)
    return obj


def fill_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray) -> None:
    """``vertices`` (V, 3) float32 metres, ``faces`` (F, 3) int32 → triangles, smooth shaded."""
    num_vertices, num_faces = int(vertices.shape[0]), int(faces.shape[0])
    mesh.vertices.add(num_vertices)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * num_faces)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(num_faces)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * num_faces, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate(clean_customdata=False)  # drops degenerate triangles instead of keeping an invalid mesh
    mesh.shade_smooth()


def add_uncertainty(mesh: bpy.types.Mesh, std_m: np.ndarray, range_m: float) -> None:
    """``std_m`` (V,) float32 metres → FLOAT attribute and the active/render FLOAT_COLOR attribute."""
    spread = cast(bpy.types.FloatAttribute, mesh.attributes.new(UNCERTAINTY_ATTRIBUTE, "FLOAT", "POINT"))
    spread.data.foreach_set("value", std_m)
    colors = cast(
        bpy.types.FloatColorAttribute, mesh.color_attributes.new(UNCERTAINTY_COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    )
    colors.data.foreach_set("color", uncertainty_colors(std_m, range_m).ravel())
    mesh.color_attributes.active_color = colors
    index = next(i for i, a in enumerate(mesh.color_attributes) if a.name == colors.name)
    mesh.color_attributes.render_color_index = index


def _add_hypothesis_keys(obj: bpy.types.Object, shapes_local: np.ndarray, order: list[int]) -> None:
    """Basis = ``shapes_local[0]``; key k = ``shapes_local[order[k - 1]]``, driven by ``mega_hypothesis == k``."""
    obj.shape_key_add(name="Basis", from_mix=False)
    for rank, hypothesis in enumerate(order, start=1):
        add_driven_key(obj, key_name(rank), rank, shapes_local[hypothesis])
    obj.active_shape_key_index = 0


def add_driven_key(obj: bpy.types.Object, name: str, rank: int, shape_local: np.ndarray) -> bpy.types.ShapeKey:
    """A shape key ``name`` holding ``shape_local`` ((V, 3) float32, object space), driven by
    ``mega_hypothesis == rank``. The object must already have its Basis."""
    key_block = obj.shape_key_add(name=name, from_mix=False)
    key_block.points.foreach_set("co", np.ascontiguousarray(shape_local, dtype=np.float32).ravel())
    key_block.slider_min = 0.0
    key_block.slider_max = 1.0
    fcurve = key_block.driver_add("value")
    driver = fcurve.driver if isinstance(fcurve, bpy.types.FCurve) else None
    if driver is None:  # pragma: no cover - a single property always gives one F-curve with a driver
        raise RuntimeError(f"Blender made no driver for shape key {key_block.name!r}")
    driver.type = "SCRIPTED"
    variable = driver.variables.new()
    variable.name = DRIVER_VARIABLE
    variable.type = "SINGLE_PROP"
    target = variable.targets[0]
    target.id_type = "OBJECT"
    target.id = obj
    target.data_path = f'["{HYPOTHESIS_PROP}"]'
    driver.expression = driver_expression(rank)
    return key_block


def set_picker_range(obj: bpy.types.Object, count: int) -> None:
    """``mega_hypothesis`` ranges over 0 … count − 1 (the Basis and the keys)."""
    cast(Any, obj).id_properties_ui(HYPOTHESIS_PROP).update(  # the stubs type it as returning None
        min=0,
        max=count - 1,
        soft_min=0,
        soft_max=count - 1,
        step=1,
        description="Hypothesis shown: 0 = Basis (the deterministic decode), k = shape key 'Hypothesis k' "
        "(the k-th most likely sample)",
    )


def link_into_scene(
    context: bpy.types.Context,
    scene: bpy.types.Scene,
    collection: bpy.types.Collection,
    camera: bpy.types.Object,
    people: list[bpy.types.Object],
    intrinsics: CameraIntrinsics,
) -> None:
    """The only step that changes existing data: link, make the camera the scene's, set resolution, select."""
    scene.collection.children.link(collection)
    view_layer = context.view_layer if scene == context.scene and context.view_layer else scene.view_layers[0]
    for obj in view_layer.objects:
        obj.select_set(False, view_layer=view_layer)
    for obj in people:
        obj.select_set(True, view_layer=view_layer)
    view_layer.objects.active = people[0] if people else camera
    # plain assignments last: nothing after them can fail, so a failed import never leaves them changed
    scene.camera = camera
    render = scene.render
    render.resolution_x = intrinsics.resolution_x
    render.resolution_y = intrinsics.resolution_y
    render.resolution_percentage = 100
    render.pixel_aspect_x = 1.0
    render.pixel_aspect_y = 1.0


# --- queries used by the operators and panels ------------------------------------------------------------


def is_person(obj: bpy.types.Object | None) -> bool:
    """Whether ``obj`` is a person made by an import (it has the hypothesis picker)."""
    return obj is not None and obj.get(ROLE_PROP) == ROLE_PERSON and obj.get(HYPOTHESIS_PROP) is not None


def num_hypotheses(obj: bpy.types.Object) -> int:
    """H of a person object (the picker's range is 0 … H−1)."""
    values = obj.get(LOG_LIKELIHOOD_PROP)
    return len(values) if values is not None else 1


def camera_of(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The MEGA camera imported with ``obj`` (a person or the camera itself), or None."""
    if obj.get(ROLE_PROP) == ROLE_CAMERA:
        return obj
    for collection in obj.users_collection:
        for other in collection.objects:
            if other.get(ROLE_PROP) == ROLE_CAMERA:
                return other
    return None


def iter_people(scene: bpy.types.Scene) -> Iterator[bpy.types.Object]:
    """Every MEGA person in ``scene``."""
    return (obj for obj in scene.objects if is_person(obj))
