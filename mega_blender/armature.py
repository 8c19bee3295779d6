"""SMPL armatures from fitted results: an SMPL-skeleton armature with keyed rotations and the skinned body.

Input: a result that carries SMPL fits (``mega-runtime fit-smpl``, docs/smpl.md) — per person the rest body
``smpl_rest_vertices`` (P, 6890, 3) and joints ``smpl_rest_joints`` (P, 24, 3) in the SMPL model frame (metres,
y up), the skinning weights ``smpl_weights`` (6890, 24), and per frame ``smpl_global_orient`` (F, P, 3),
``smpl_body_pose`` (F, P, 23, 3) (axis-angle, radians, each joint relative to its parent) and ``smpl_transl``
(F, P, 3) (metres). The SMPL model file itself is never needed here (its licence forbids bundling).

What one person gets: an armature ``MEGA SMPL <n>`` whose 24 bones are named after SMPL's joints and parented as
SMPL's kinematic tree, every bone with an identity rest orientation (head at the joint, pointing along +Y of the
armature, roll 0) — so a bone's pose rotation *is* SMPL's local joint rotation, with no conversion, which keeps
the keyed values readable and exact; the root bone also carries ``smpl_transl`` as its location. The armature
object maps the SMPL model frame into Blender's world exactly as the person meshes do (OpenCV camera frame →
world), so it stands where the MEGA person stands. The body ``MEGA SMPL Body <n>`` is the rest mesh with one
vertex group per joint and an Armature modifier (linear blend skinning; SMPL's pose-corrective offsets are not
reproduced). Rotations are keyed as quaternions on every frame where the person is seen.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import bpy
import numpy as np

from . import scene_build
from .result_reader import MegaResult, ResultFormatError

log = logging.getLogger(__name__)

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
REQUIRED = (
    "smpl_rest_vertices",
    "smpl_rest_joints",
    "smpl_weights",
    "smpl_global_orient",
    "smpl_body_pose",
    "smpl_transl",
)
#: Length of every bone (metres): bones only carry rotations, so their length is only for display.
BONE_LENGTH_M = 0.05


def has_smpl(result: MegaResult) -> bool:
    return all(name in result.extra_arrays for name in REQUIRED)


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """(…, 3) axis-angle (radians) → (…, 4) unit quaternions (w, x, y, z)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = angle / 2
    scale = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 1e-12, angle, 1.0), 0.5)
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def _check(result: MegaResult) -> None:
    missing = [name for name in REQUIRED if name not in result.extra_arrays]
    if missing:
        raise ResultFormatError(
            f"{result.path} has no SMPL fit (missing {', '.join(missing)})",
            "run 'mega-runtime fit-smpl RESULT.json --smpl-model YOUR_SMPL_FILE' first",
        )
    a = result.extra_arrays
    f, p = result.valid.shape
    v = result.vertices.shape[3]
    shapes = {
        "smpl_rest_vertices": (p, v, 3),
        "smpl_rest_joints": (p, 24, 3),
        "smpl_weights": (v, 24),
        "smpl_global_orient": (f, p, 3),
        "smpl_body_pose": (f, p, 23, 3),
        "smpl_transl": (f, p, 3),
    }
    for name, shape in shapes.items():
        if a[name].shape != shape:
            raise ResultFormatError(f"{result.path}: {name} is {a[name].shape}, expected {shape}", "re-run fit-smpl")


def build_armatures(context: bpy.types.Context, result: MegaResult, frame_start: int = 1) -> list[bpy.types.Object]:
    """Build one SMPL armature + skinned body per person with a fit, into a new collection; returns the
    armatures. Scene frame ``frame_start + t`` shows source frame ``frame_indices[0] + t`` (as the animation).
    Raises :class:`ResultFormatError` (nothing created) when the result has no usable fit."""
    _check(result)
    scene = context.scene
    if scene is None:
        raise ResultFormatError("there is no active scene to import into", "open or create a scene first")
    created = scene_build._Created()
    armatures = []
    try:
        collection = created.add(bpy.data.collections.new(f"MEGA SMPL {result.source_name}"))
        scene.collection.children.link(collection)  # edit mode needs the armature in the view layer
        for p in range(result.num_people):
            if result.valid[:, p].any():
                armatures.append(_build_person(collection, result, p, frame_start, created))
    except BaseException:
        created.remove_all()
        raise
    return armatures


def _build_person(
    collection: bpy.types.Collection, result: MegaResult, person: int, frame_start: int, created: scene_build._Created
) -> bpy.types.Object:
    a = result.extra_arrays
    joints = a["smpl_rest_joints"][person].astype(np.float64)
    name = f"MEGA SMPL {person + 1}"
    data = cast(bpy.types.Armature, created.add(bpy.data.armatures.new(name)))
    rig = cast(bpy.types.Object, created.add(bpy.data.objects.new(name, data)))
    rig.rotation_mode = "XYZ"
    rig.rotation_euler = (-math.pi / 2, 0.0, 0.0)  # OpenCV camera frame (x, y, z) → world (x, z, −y), as the meshes
    collection.objects.link(rig)
    view_layer = bpy.context.view_layer
    if view_layer is None:
        raise ResultFormatError("there is no view layer to edit the armature in", "open a scene with a view layer")
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for j, joint in enumerate(JOINT_NAMES):
            bone = data.edit_bones.new(joint)
            bone.head = tuple(joints[j])
            bone.tail = tuple(joints[j] + np.array([0.0, BONE_LENGTH_M, 0.0]))
            bone.roll = 0.0
            bones.append(bone)
        for j, parent in enumerate(PARENTS):
            if parent >= 0:
                bones[j].parent = bones[parent]
                bones[j].use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")

    body = _build_body(collection, result, person, rig, created)
    _key_pose(rig, result, person, frame_start)
    rig["mega_person"] = person + 1
    rig["mega_result_path"] = str(result.path)
    body.parent = rig
    return rig


def _build_body(
    collection: bpy.types.Collection,
    result: MegaResult,
    person: int,
    rig: bpy.types.Object,
    created: scene_build._Created,
) -> bpy.types.Object:
    a = result.extra_arrays
    name = f"MEGA SMPL Body {person + 1}"
    mesh = cast(bpy.types.Mesh, created.add(bpy.data.meshes.new(name)))
    scene_build.fill_mesh(mesh, a["smpl_rest_vertices"][person].astype(np.float32), result.faces)
    body = cast(bpy.types.Object, created.add(bpy.data.objects.new(name, mesh)))
    collection.objects.link(body)
    weights = np.asarray(a["smpl_weights"], dtype=np.float64)
    for j, joint in enumerate(JOINT_NAMES):
        group = body.vertex_groups.new(name=joint)
        for value in np.unique(np.round(weights[:, j], 4)):  # one add() per distinct weight, not per vertex
            if value <= 0:
                continue
            indices = np.flatnonzero(np.round(weights[:, j], 4) == value)
            group.add(indices.tolist(), float(value), "REPLACE")
    modifier = cast(bpy.types.ArmatureModifier, body.modifiers.new("SMPL", "ARMATURE"))
    modifier.object = rig
    modifier.use_vertex_groups = True
    return body


def _key_pose(rig: bpy.types.Object, result: MegaResult, person: int, frame_start: int) -> None:
    a = result.extra_arrays
    pose = rig.pose
    if pose is None:
        raise ResultFormatError("Blender made no pose for the armature", "try again in a new scene")
    quats = axis_angle_to_quaternion(
        np.concatenate([a["smpl_global_orient"][:, person, None], a["smpl_body_pose"][:, person]], axis=1)
    )  # (F, 24, 4)
    first = int(result.frame_indices[0])
    for bone in pose.bones:
        bone.rotation_mode = "QUATERNION"
    for f in np.flatnonzero(result.valid[:, person]):
        frame = frame_start + int(result.frame_indices[f]) - first
        for j, joint in enumerate(JOINT_NAMES):
            bone = pose.bones[joint]
            bone.rotation_quaternion = tuple(quats[f, j])
            bone.keyframe_insert("rotation_quaternion", frame=frame)
        root = pose.bones[JOINT_NAMES[0]]
        root.location = tuple(float(v) for v in a["smpl_transl"][f, person])
        root.keyframe_insert("location", frame=frame)
