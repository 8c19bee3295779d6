"""Video results as animated bodies: one object per tracked person that moves with the footage.

Chosen by measurement (``benchmarks/bench_animation.py``, docs/blender-addon.md): each person's frames are written
as a **PC2 point cache** beside the .blend (or the result when the file is unsaved) and played by a **Mesh Cache
modifier**; a shape key per frame was 9× slower to build, made a .blend 65× larger and played at 32 frames/s for
1,000 frames (every key is evaluated every frame), against ~7,000 frames/s for the cache.

What one import of a video result makes, besides what a photo import makes (collection, camera, material):

* per person seen in any frame, ``MEGA Person <n>``: the mesh of the first frame it is seen in, and a Mesh Cache
  modifier ``MEGA Frames`` reading ``<name>.pc2`` whose samples are, for every scene frame, S shapes: sample 0 =
  the *chosen path* (the result's ``smoothed_vertices`` if present, else its coherent ``path`` of hypotheses, else
  hypothesis 0) and samples 1…S−1 = the result's hypotheses 1…S−1 of that frame. Its ``eval_frame`` is driven by
  the simple expression ``min(max(frame - <start>, 0), <N-1>) * S + min(max(h, 0), S - 1)`` with ``h`` reading the
  object's ``mega_hypothesis`` — so the chosen path plays back, and setting (or keyframing) ``mega_hypothesis``
  shows hypothesis k of whatever frame is current;
* frames where the person is not seen hold the nearest seen frame's shape and are hidden (keyed
  ``hide_viewport`` / ``hide_render``, constant);
* the per-vertex spread of every frame in ``<name>.std.npy`` (F, V) float32 metres: a persistent
  ``frame_change_post`` handler writes the current frame's spread into ``mega_uncertainty_m`` and the colours of
  ``MEGA Uncertainty``, so the colours follow the frame in the viewport and in renders;
* the camera's background is the clip as a Movie Clip, offset so scene frame 1 shows the result's first frame;
  the scene's frame range and frame rate follow the clip.

Scene frame ``start + t`` shows source frame ``frame_indices[0] + t``; source frames between processed ones
(a frame step > 1) hold the last processed frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import scene_build
from .coords import opencv_to_blender_world
from .pointcache import free_path, write_pc2_chunks
from .result_reader import MegaResult, ResultFormatError

log = logging.getLogger(__name__)

MODIFIER_NAME = "MEGA Frames"
CACHE_PROP = "mega_frame_cache"
STD_CACHE_PROP = "mega_uncertainty_cache"
FRAME_START_PROP = "mega_frame_start"
NUM_FRAMES_PROP = "mega_num_frames"
SAMPLES_PROP = "mega_samples_per_frame"
#: Frames written per chunk of the point cache (bounds the memory of long clips).
CHUNK_FRAMES = 64


def scene_frame_map(frame_indices: np.ndarray) -> np.ndarray:
    """For every source frame from the first to the last processed one, the result frame shown (held).

    ``frame_indices`` (F,) increasing source frame numbers → (N,) int64 result frame index, N = last − first + 1.
    """
    first, last = int(frame_indices[0]), int(frame_indices[-1])
    frames = np.arange(first, last + 1)
    return np.searchsorted(frame_indices, frames, side="right") - 1


def filled_frames(valid: np.ndarray) -> np.ndarray:
    """(F,) bool → (F,) int64: each frame's own index where valid, else the nearest valid frame's (earlier wins)."""
    index = np.arange(valid.size)
    seen = np.flatnonzero(valid)
    if seen.size == 0:
        raise ValueError("the person is never seen")
    position = np.clip(np.searchsorted(seen, index), 0, seen.size - 1)
    before = seen[np.clip(position - 1, 0, seen.size - 1)]
    after = seen[position]
    return np.where(valid, index, np.where(np.abs(index - before) <= np.abs(after - index), before, after))


def chosen_vertices(result: MegaResult, person: int, frames: np.ndarray) -> np.ndarray:
    """The chosen path of ``person`` at result ``frames`` (k,) → (k, V, 3) float32 OpenCV camera frame."""
    smoothed = result.extra_arrays.get("smoothed_vertices")
    if smoothed is not None and smoothed.shape[:2] == result.vertices.shape[:2]:
        return np.asarray(smoothed[frames, person], dtype=np.float32)
    path = result.extra_arrays.get("path")
    if path is not None and path.shape == result.valid.shape:
        chosen = np.clip(path[frames, person].astype(np.int64), 0, result.num_hypotheses - 1)
        return result.vertices[frames, person, chosen]
    return result.vertices[frames, person, 0]


def _samples(
    result: MegaResult, person: int, shown: np.ndarray, num_samples: int, location: np.ndarray
) -> Iterator[np.ndarray]:
    """Chunks of (frames·S, V, 3) float32 Blender object-space shapes for the point cache."""
    for start in range(0, shown.size, CHUNK_FRAMES):
        frames = shown[start : start + CHUNK_FRAMES]
        chunk = np.empty((frames.size, num_samples, result.vertices.shape[3], 3), dtype=np.float32)
        chunk[:, 0] = chosen_vertices(result, person, frames)
        if num_samples > 1:
            chunk[:, 1:] = result.vertices[frames, person, 1:num_samples]
        world = opencv_to_blender_world(chunk.reshape(-1, chunk.shape[2], 3))
        yield (world - location.astype(np.float32)).astype(np.float32)


def eval_frame_expression(frame_start: int, num_frames: int, num_samples: int) -> str:
    """The simple driver expression picking the cache sample of the current scene frame and hypothesis ``h``."""
    frame = f"min(max(frame - {frame_start}, 0), {num_frames - 1})"
    return f"{frame} * {num_samples} + min(max({scene_build.DRIVER_VARIABLE}, 0), {num_samples - 1})"


def build_animation(
    context: bpy.types.Context,
    result: MegaResult,
    cache_dir: Path,
    *,
    hypotheses: int | None = None,
    uncertainty_range_m: float | None = None,
    sensor_mm: float = 36.0,
) -> scene_build.BuildReport:
    """Build a video result as animated people (see the module docstring).

    ``cache_dir``: where the point caches and spreads go (created; existing files are never replaced).
    ``hypotheses``: how many shapes per frame the cache holds (1 = only the chosen path; default all H).
    Raises :class:`ResultFormatError` (nothing created) when the result cannot be built.
    """
    scene = context.scene
    if scene is None:
        raise ResultFormatError("there is no active scene to import into", "open or create a scene first")
    if np.any(np.diff(result.frame_indices) <= 0):
        raise ResultFormatError(f"{result.path}: its frame numbers are not increasing", "re-run mega-runtime infer")
    num_samples = max(1, min(hypotheses or result.num_hypotheses, result.num_hypotheses))
    intrinsics = scene_build.result_intrinsics(result, sensor_mm)
    shown = scene_frame_map(result.frame_indices)  # (N,) result frame per scene frame
    people = [p for p in range(result.num_people) if bool(result.valid[:, p].any())]
    warnings = scene_build.runtime_warnings(result)
    if not people:
        warnings.append(f"{result.source_name}: no person was found in any frame; only the camera was made")
    range_m = uncertainty_range_m if uncertainty_range_m and uncertainty_range_m > 0 else None
    if range_m is None:
        seen = result.vertex_std[result.valid] if people else np.zeros(1)
        range_m = max(scene_build.MIN_UNCERTAINTY_RANGE_M, float(seen.max()) if seen.size else 0.0)
    frame_start = 1
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultFormatError(
            f"cannot create the cache folder {cache_dir}: {exc.strerror}", "choose another"
        ) from exc

    created = scene_build._Created()
    files: list[Path] = []
    try:
        collection = created.add(bpy.data.collections.new(f"MEGA {result.source_name}"))
        camera = scene_build.build_camera(collection, result, intrinsics, None, created)
        _attach_clip(camera, result, frame_start, created, warnings)
        material = scene_build.build_material(created) if people else None
        built = []
        for p in people:
            obj, made = _build_animated_person(
                collection, result, p, shown, num_samples, frame_start, cache_dir, material, range_m, created
            )
            files += made
            built.append(obj)
        scene_build.link_into_scene(context, scene, collection, camera, built, intrinsics)
        scene.frame_start = frame_start
        scene.frame_end = frame_start + shown.size - 1
        if result.fps:
            fps = max(1, round(result.fps))
            scene.render.fps = fps
            scene.render.fps_base = fps / result.fps
        scene.frame_set(frame_start)
    except BaseException:
        created.remove_all()
        for path in files:
            path.unlink(missing_ok=True)
        raise
    ensure_handler()
    update_uncertainty_colours(scene)
    for message in warnings:
        log.info("%s", message)
    return scene_build.BuildReport(
        collection=collection, camera=camera, people=built, material=material, image=None, warnings=warnings
    )


def _attach_clip(
    camera: bpy.types.Object, result: MegaResult, frame_start: int, created: Any, warnings: list[str]
) -> bpy.types.MovieClip | None:
    source = scene_build.find_source_image(result)
    if source is None:
        warnings.append(f"{result.source_name}: the clip ({result.source_path}) was not found; no background")
        return None
    try:
        clip = cast(bpy.types.MovieClip, created.add(bpy.data.movieclips.load(str(source.resolve()))))
    except RuntimeError as exc:
        warnings.append(f"{result.source_name}: the clip {source} could not be loaded ({exc}); no background")
        return None
    clip.frame_start = frame_start - int(result.frame_indices[0])  # scene frame_start shows the first frame
    data = cast(bpy.types.Camera, camera.data)
    background = data.background_images.new()
    background.source = "MOVIE_CLIP"
    background.clip = clip
    background.frame_method = "STRETCH"
    background.display_depth = "BACK"
    background.alpha = 1.0
    data.show_background_images = True
    return clip


def _build_animated_person(
    collection: bpy.types.Collection,
    result: MegaResult,
    person: int,
    shown: np.ndarray,
    num_samples: int,
    frame_start: int,
    cache_dir: Path,
    material: bpy.types.Material | None,
    range_m: float,
    created: Any,
) -> tuple[bpy.types.Object, list[Path]]:
    name = scene_build.person_name(person)
    valid = result.valid[:, person]
    filled = filled_frames(valid)  # (F,) a seen frame for every result frame
    shown_person = filled[shown]  # (N,) result frame whose data each scene frame shows
    first_seen = int(np.flatnonzero(valid)[0])
    location = opencv_to_blender_world(result.cam_t[first_seen, person, 0]).astype(np.float64)
    stem = f"{Path(result.path).stem} {name}".replace(" ", "_")
    cache = free_path(cache_dir, stem, ".pc2")
    write_pc2_chunks(
        cache,
        shown.size * num_samples,
        result.vertices.shape[3],
        _samples(result, person, shown_person, num_samples, location),
    )
    files = [cache]
    std_path = free_path(cache_dir, stem, ".std.npy")
    np.save(std_path, result.vertex_std[shown_person, person].astype(np.float32))
    files.append(std_path)

    mesh = cast(bpy.types.Mesh, created.add(bpy.data.meshes.new(name)))
    base_world = opencv_to_blender_world(chosen_vertices(result, person, np.array([first_seen]))[0])
    scene_build.fill_mesh(mesh, (base_world - location.astype(np.float32)).astype(np.float32), result.faces)
    scene_build.add_uncertainty(mesh, result.vertex_std[first_seen, person].astype(np.float32), range_m)
    if material is not None:
        mesh.materials.append(material)
    obj = cast(bpy.types.Object, created.add(bpy.data.objects.new(name, mesh)))
    obj.location = tuple(location)
    collection.objects.link(obj)
    mean_ll = np.where(valid[:, None], result.log_likelihood[:, person], np.nan)
    obj[scene_build.ROLE_PROP] = scene_build.ROLE_PERSON
    obj["mega_person"] = person + 1
    obj["mega_track_id"] = int(result.track_ids[person])
    obj["mega_result_path"] = str(result.path)
    obj[scene_build.UNCERTAINTY_RANGE_PROP] = float(range_m)
    obj[scene_build.LOG_LIKELIHOOD_PROP] = [float(v) for v in np.nanmean(mean_ll, axis=0)[:num_samples]]
    obj[scene_build.SOURCE_HYPOTHESIS_PROP] = list(range(num_samples))
    obj[CACHE_PROP] = bpy.path.relpath(str(cache)) if bpy.data.filepath else str(cache)
    obj[STD_CACHE_PROP] = bpy.path.relpath(str(std_path)) if bpy.data.filepath else str(std_path)
    obj[FRAME_START_PROP] = frame_start
    obj[NUM_FRAMES_PROP] = int(shown.size)
    obj[SAMPLES_PROP] = num_samples
    obj[scene_build.HYPOTHESIS_PROP] = 0
    obj.id_properties_ui(scene_build.HYPOTHESIS_PROP).update(
        min=0,
        max=num_samples - 1,
        soft_min=0,
        soft_max=num_samples - 1,
        step=1,
        description="Shape shown: 0 = the chosen path (smoothed / coherent / deterministic), k = the result's "
        "hypothesis k of the current frame",
    )
    modifier = cast(bpy.types.MeshCacheModifier, obj.modifiers.new(MODIFIER_NAME, "MESH_CACHE"))
    modifier.cache_format = "PC2"
    modifier.filepath = obj[CACHE_PROP]
    modifier.play_mode = "CUSTOM"
    modifier.time_mode = "FRAME"
    modifier.forward_axis = "POS_Y"
    modifier.up_axis = "POS_Z"
    fcurve = modifier.driver_add("eval_frame")
    driver = fcurve.driver if isinstance(fcurve, bpy.types.FCurve) else None
    if driver is None:  # pragma: no cover - a single property always gives one F-curve with a driver
        raise RuntimeError("Blender made no driver for the Mesh Cache modifier")
    driver.type = "SCRIPTED"
    variable = driver.variables.new()
    variable.name = scene_build.DRIVER_VARIABLE
    variable.type = "SINGLE_PROP"
    variable.targets[0].id_type = "OBJECT"
    variable.targets[0].id = obj
    variable.targets[0].data_path = f'["{scene_build.HYPOTHESIS_PROP}"]'
    driver.expression = eval_frame_expression(frame_start, shown.size, num_samples)
    _key_visibility(obj, valid[shown], frame_start)
    return obj, files


def _key_visibility(obj: bpy.types.Object, seen: np.ndarray, frame_start: int) -> None:
    """Hide the object on scene frames where the person is not seen (constant keys at each change only)."""
    if seen.all():
        return
    changes = [0, *(np.flatnonzero(np.diff(seen.astype(np.int8))) + 1).tolist()]
    for t in changes:
        hidden = not bool(seen[t])
        obj.hide_viewport = obj.hide_render = hidden
        obj.keyframe_insert("hide_viewport", frame=frame_start + t)
        obj.keyframe_insert("hide_render", frame=frame_start + t)
    obj.hide_viewport = obj.hide_render = not bool(seen[0])


def is_animated(obj: bpy.types.Object) -> bool:
    return obj.get(STD_CACHE_PROP) is not None and obj.get(NUM_FRAMES_PROP) is not None


_std_cache: dict[str, np.ndarray] = {}


def _spreads(path_text: str) -> np.ndarray | None:
    path = bpy.path.abspath(path_text)
    found = _std_cache.get(path)
    if found is None:
        try:
            found = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("uncertainty cache %s cannot be read: %s", path, exc)
            return None
        _std_cache[path] = found
    return found


def update_uncertainty_colours(scene: bpy.types.Scene) -> None:
    """Write the current frame's spread into every animated MEGA person's attributes (viewport and render)."""
    for obj in scene.objects:
        if not is_animated(obj) or not isinstance(obj.data, bpy.types.Mesh):
            continue
        spreads = _spreads(str(obj[STD_CACHE_PROP]))
        if spreads is None:
            continue
        t = min(max(scene.frame_current - int(obj[FRAME_START_PROP]), 0), spreads.shape[0] - 1)
        std = np.asarray(spreads[t], dtype=np.float32)
        mesh = obj.data
        if std.shape[0] != len(mesh.vertices):
            continue
        spread = mesh.attributes.get(scene_build.UNCERTAINTY_ATTRIBUTE)
        colours = mesh.color_attributes.get(scene_build.UNCERTAINTY_COLOR_ATTRIBUTE)
        if isinstance(spread, bpy.types.FloatAttribute):
            spread.data.foreach_set("value", std)
        if isinstance(colours, bpy.types.FloatColorAttribute):
            range_m = float(obj.get(scene_build.UNCERTAINTY_RANGE_PROP, scene_build.MIN_UNCERTAINTY_RANGE_M))
            colours.data.foreach_set("color", scene_build.uncertainty_colors(std, range_m).ravel())
        mesh.update()


@persistent
def _on_frame_change(scene: bpy.types.Scene, *_: Any) -> None:
    update_uncertainty_colours(scene)


def ensure_handler() -> None:
    if _on_frame_change not in bpy.app.handlers.frame_change_post:
        bpy.app.handlers.frame_change_post.append(_on_frame_change)


def remove_handler() -> None:
    while _on_frame_change in bpy.app.handlers.frame_change_post:
        bpy.app.handlers.frame_change_post.remove(_on_frame_change)
    _std_cache.clear()


def default_cache_dir(result: MegaResult) -> Path:
    """Where an interactive import puts its point caches: ``MEGA cache`` beside the saved .blend, else a
    ``<result> cache`` folder beside the result."""
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent / "MEGA cache"
    return result.path.parent / f"{result.path.stem} cache"


def build(
    context: bpy.types.Context,
    result: MegaResult,
    *,
    frame: int | None = None,
    cache_dir: Path | None = None,
    uncertainty_range_m: float | None = None,
    sensor_mm: float = 36.0,
) -> scene_build.BuildReport:
    """Import ``result``: a video (more than one frame) is animated unless ``frame`` picks one frame to build;
    a photo builds its only frame."""
    from . import armature

    if result.num_frames > 1 and frame is None:
        report = build_animation(
            context,
            result,
            cache_dir or default_cache_dir(result),
            uncertainty_range_m=uncertainty_range_m,
            sensor_mm=sensor_mm,
        )
    else:
        report = scene_build.build_result(
            context, result, frame or 0, uncertainty_range_m=uncertainty_range_m, sensor_mm=sensor_mm
        )
    if armature.has_smpl(result):  # an SMPL fit (mega-runtime fit-smpl): armatures beside the meshes
        report.armatures = armature.build_armatures(context, result)
    return report


def bake_path_to_shape_keys(obj: bpy.types.Object, sample: int | None = None) -> int:
    """For exporters that ignore modifiers (glTF, FBX, USD): one shape key per scene frame holding what the object
    shows, keyed 0 → 1 → 0 around its frame (constant); the Mesh Cache modifier is removed. Returns the keys made.

    ``sample``: the cache sample baked (0 = the chosen path, k = hypothesis k of each frame); default the value of
    the picker ``mega_hypothesis``, so the file shows what the scene showed. Meant for a throwaway export scene (the
    batch command): it changes ``obj``.
    """
    from .pointcache import read_pc2

    cache = read_pc2(Path(bpy.path.abspath(str(obj[CACHE_PROP]))))
    num_frames, samples, start = int(obj[NUM_FRAMES_PROP]), int(obj[SAMPLES_PROP]), int(obj[FRAME_START_PROP])
    shown = int(obj.get(scene_build.HYPOTHESIS_PROP, 0)) if sample is None else sample
    shown = min(max(shown, 0), samples - 1)
    modifier = obj.modifiers.get(MODIFIER_NAME)
    if modifier is not None:
        obj.modifiers.remove(modifier)
    obj.shape_key_add(name="Basis", from_mix=False)
    for t in range(num_frames):
        key = obj.shape_key_add(name=f"Frame {start + t:05d}", from_mix=False)
        key.points.foreach_set("co", np.ascontiguousarray(cache[t * samples + shown]).ravel())
        for frame, value in ((start + t - 1, 0.0), (start + t, 1.0), (start + t + 1, 0.0)):
            key.value = value
            key.keyframe_insert("value", frame=frame)
    return num_frames
