"""Synthetic clips with known identities, and how well tracking keeps them (numpy + OpenCV, no torch).

:func:`crowd_clip` renders a street of person-like sprites (head, shirt, arms, trousers with swinging legs, each
person their own colours, height and body proportions) walking at different depths, crossing and hiding each
other, walking out of the image and coming back; a simulated detector reports the box of every person who is at
least half visible (box noise, missed detections), and a simulated MEGA reports each detected person's shape
descriptor with per-frame noise. :func:`track_clip` runs the tracker (with or without appearance) and the
offline stitching on it; :func:`identity_metrics` scores the outcome:

* **fragments per true person** — the number of distinct identities given to one true person's detections,
  averaged over the people detected at least once (1.0 is perfect);
* **identity switches** — over every true person's detections in frame order, how often the identity differs
  from the one at their previous detection (a person split into 2 fragments once has 1 switch; one who alternates
  A, B, A has 2);
* **mixed identities** — identities given to more than one true person (0 is perfect: stitching must never glue
  two people together).

``python benchmarks/bench_tracking_reid.py`` prints the figures of docs/video.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mega_runtime.pipeline.reid import (
    SHAPE_DIM,
    StitchConfig,
    appearance_descriptors,
    stitch_tracklets,
    tracklets_from_frames,
)
from mega_runtime.pipeline.tracking import BoxTracker


@dataclass(frozen=True)
class SyntheticClip:
    """``frames`` list of (H, W, 3) uint8 BGR images (empty when not rendered); per frame ``boxes`` (N_f, 4) xyxy
    pixels of the detections, ``truth`` (N_f,) int true person of each detection, ``shapes`` (N_f, SHAPE_DIM)
    noisy shape descriptors; ``num_people`` people in the clip."""

    frames: list[np.ndarray]
    boxes: list[np.ndarray]
    truth: list[np.ndarray]
    shapes: list[np.ndarray]
    num_people: int


@dataclass(frozen=True)
class IdentityMetrics:
    """See the module docstring. ``people``: true people detected at least once; ``identities``: distinct
    identities given."""

    people: int
    identities: int
    fragments_per_person: float
    switches: int
    mixed_identities: int


def identity_metrics(truth: list[np.ndarray], predicted: list[np.ndarray]) -> IdentityMetrics:
    """Score predicted identities against true ones: per frame ``truth`` (N_f,) and ``predicted`` (N_f,) ints."""
    given: dict[int, set[int]] = {}
    owners: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    switches = 0
    for true_ids, pred_ids in zip(truth, predicted, strict=True):
        for t, p in zip(np.asarray(true_ids).tolist(), np.asarray(pred_ids).tolist(), strict=True):
            given.setdefault(t, set()).add(p)
            owners.setdefault(p, set()).add(t)
            if t in last and last[t] != p:
                switches += 1
            last[t] = p
    people = len(given)
    return IdentityMetrics(
        people=people,
        identities=len(owners),
        fragments_per_person=sum(len(v) for v in given.values()) / max(people, 1),
        switches=switches,
        mixed_identities=sum(len(v) > 1 for v in owners.values()),
    )


_HUES = np.array([0, 15, 30, 60, 90, 120, 150, 170])  # OpenCV hue (0-180): red, orange, yellow, green, cyan, blue…


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    import cv2

    pixel = np.array([[[h, s, v]]], dtype=np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def crowd_clip(
    seed: int = 0,
    num_people: int = 12,
    num_frames: int = 180,
    size: tuple[int, int] = (768, 432),
    miss_rate: float = 0.08,
    box_noise: float = 0.03,
    shape_noise: float = 0.03,
    render: bool = True,
    outfits: int | None = None,
) -> SyntheticClip:
    """A crowded walking clip (see the module docstring), deterministic for a ``seed``. ``size`` (W, H) pixels;
    people are 60–260 px tall by depth. ``miss_rate``: share of visible people the detector misses;
    ``box_noise``: box edge noise, share of the box size; ``shape_noise``: per-frame noise of each log segment
    length. ``render=False`` skips drawing (boxes and visibility are the same). ``outfits``: when given, only that many
    different sets of clothes, shared round-robin (person p wears outfit p mod outfits: look-alikes only their
    bodies tell apart)."""
    rng = np.random.default_rng(seed)
    width, height = size
    horizon = 0.3 * height
    # people: colours, proportions, shape descriptor, walk
    shirts = [_hsv_to_bgr(rng.choice(_HUES), rng.uniform(120, 255), rng.uniform(120, 255)) for _ in range(num_people)]
    trousers = [_hsv_to_bgr(rng.choice(_HUES), rng.uniform(40, 200), rng.uniform(40, 140)) for _ in range(num_people)]
    skins = [_hsv_to_bgr(rng.uniform(5, 20), rng.uniform(60, 160), rng.uniform(120, 230)) for _ in range(num_people)]
    if outfits is not None:
        shirts = [shirts[p % outfits] for p in range(num_people)]
        trousers = [trousers[p % outfits] for p in range(num_people)]
        skins = [skins[p % outfits] for p in range(num_people)]
    stature = rng.uniform(0.85, 1.1, num_people)
    body_shape = np.log(stature)[:, None] + rng.normal(0, 0.04, (num_people, SHAPE_DIM))
    foot_y = rng.uniform(0.55 * height, 0.97 * height, num_people)
    x = rng.uniform(0, width, num_people)
    direction = rng.choice([-1.0, 1.0], num_people)
    speed = rng.uniform(0.6, 1.6, num_people)  # body heights per second at 30 fps → px/frame below
    phase = rng.uniform(0, 2 * np.pi, num_people)
    away = np.zeros(num_people, int)  # frames left to stay out of the image
    turn = np.ones(num_people, bool)  # come back through the side they left by
    background = street_background(rng, width, height).astype(np.float32) if render else None
    grain = rng.normal(0, 4, (4, height, width, 3)).astype(np.float32) if render else None  # sensor noise
    frames: list[np.ndarray] = []
    boxes_out: list[np.ndarray] = []
    truth_out: list[np.ndarray] = []
    shapes_out: list[np.ndarray] = []
    for _ in range(num_frames):
        person_h = stature * 0.95 * (foot_y - horizon)
        for p in range(num_people):
            if away[p] > 0:
                away[p] -= 1
                if away[p] == 0:  # back: the same side (turning round) or, after a long walk round, the other
                    direction[p] = -direction[p] if turn[p] else direction[p]
                    x[p] = -0.25 * person_h[p] if direction[p] > 0 else width + 0.25 * person_h[p]
                    foot_y[p] = np.clip(foot_y[p] + rng.normal(0, 0.03 * height), 0.55 * height, 0.97 * height)
                continue
            x[p] += direction[p] * speed[p] * person_h[p] / 30.0
            foot_y[p] = np.clip(foot_y[p] + rng.normal(0, 0.002 * height), 0.55 * height, 0.97 * height)
            phase[p] += 2 * np.pi * 0.9 / 30.0
            if x[p] < -0.3 * person_h[p] or x[p] > width + 0.3 * person_h[p]:
                away[p] = int(rng.integers(5, 45))
                turn[p] = rng.random() < 0.6
                if not turn[p]:  # back from the other side: only after the time to walk round
                    away[p] += int(width / (speed[p] * person_h[p] / 30.0))
        person_h = stature * 0.95 * (foot_y - horizon)
        order = [p for p in np.argsort(foot_y, kind="stable") if away[p] == 0]  # far first, near drawn on top
        labels = np.full((height, width), -1, np.int32)
        image = background.copy() if background is not None else None
        full_boxes = {}
        for p in order:
            box = draw_person(
                image, labels, p, x[p], foot_y[p], person_h[p], phase[p], shirts[p], trousers[p], skins[p]
            )
            full_boxes[p] = box
        if image is not None and grain is not None:
            shade = np.float32(rng.uniform(0.93, 1.07))
            image *= shade
            image += grain[len(frames) % len(grain)]
            frames.append(np.clip(image, 0, 255).astype(np.uint8))
        counts = np.bincount(labels.ravel() + 1, minlength=num_people + 1)[1:]
        dets, who, shapes = [], [], []
        for p, box in full_boxes.items():
            x0, y0, x1, y1 = box
            area = max((x1 - x0) * (y1 - y0) * 0.55, 1.0)  # the sprite fills about 55 % of its box
            clipped = np.array([max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)], np.float64)
            if clipped[2] - clipped[0] < 0.3 * (x1 - x0) or counts[p] < 0.5 * area or rng.random() < miss_rate:
                continue
            bw, bh = clipped[2] - clipped[0], clipped[3] - clipped[1]
            noisy = clipped + rng.normal(0, box_noise, 4) * np.array([bw, bh, bw, bh])
            dets.append(np.clip(noisy, 0, [width, height, width, height]))
            who.append(p)
            shapes.append(body_shape[p] + rng.normal(0, shape_noise, SHAPE_DIM))
        order_lr = np.argsort([(d[0] + d[2]) / 2 for d in dets], kind="stable")  # detectors list left to right
        boxes_out.append(np.array([dets[i] for i in order_lr], np.float64).reshape(-1, 4))
        truth_out.append(np.array([who[i] for i in order_lr], np.int64))
        shapes_out.append(np.array([shapes[i] for i in order_lr], np.float64).reshape(-1, SHAPE_DIM))
    return SyntheticClip(frames, boxes_out, truth_out, shapes_out, num_people)


def street_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A street: sky-to-ground gradient with some coloured blocks (buildings, shop fronts)."""
    rows = np.linspace(0, 1, height)[:, None, None]
    image = (1 - rows) * np.array([200, 180, 160]) + rows * np.array([90, 95, 100])
    image = np.broadcast_to(image, (height, width, 3)).copy()
    for _ in range(12):
        x0, w = rng.integers(0, width), rng.integers(30, 150)
        y1 = int(0.3 * height) + int(rng.integers(0, 20))
        y0 = int(rng.integers(0, max(y1 - 40, 1)))
        image[y0:y1, x0 : x0 + w] = rng.uniform(60, 200, 3)
    return image


def draw_person(image, labels, p, cx, foot, h, phase, shirt, trousers, skin) -> tuple[float, float, float, float]:
    """Draw person ``p`` (into ``image`` when given, and into ``labels``); returns their full box (xyxy)."""
    top = foot - h
    half_w = 0.17 * h
    swing = 0.07 * h * np.sin(phase)
    parts = [  # (x0, y0, x1, y1, colour) in body coordinates: x from the centre, y from the top, in heights
        (-0.055, 0.0, 0.055, 0.13, skin),  # head
        (-0.11, 0.13, 0.11, 0.52, shirt),  # torso
        (-0.16, 0.14, -0.11, 0.47, shirt),  # arms
        (0.11, 0.14, 0.16, 0.47, shirt),
        (-0.1, 0.52, -0.01, 0.97, trousers),  # legs (shifted by the swing below)
        (0.01, 0.52, 0.1, 0.97, trousers),
        (-0.1, 0.97, 0.1, 1.0, (40.0, 40.0, 40.0)),  # shoes
    ]
    height, width = labels.shape
    for k, (x0, y0, x1, y1, colour) in enumerate(parts):
        shift = (swing if k == 4 else -swing if k == 5 else 0.0) / h
        ax0, ax1 = round(cx + (x0 + shift) * h), round(cx + (x1 + shift) * h)
        ay0, ay1 = round(top + y0 * h), round(top + y1 * h)
        ax0, ax1, ay0, ay1 = max(ax0, 0), min(ax1, width), max(ay0, 0), min(ay1, height)
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        labels[ay0:ay1, ax0:ax1] = p
        if image is not None:
            image[ay0:ay1, ax0:ax1] = colour
    return (cx - half_w, top, cx + half_w, foot)


def track_clip(
    clip: SyntheticClip,
    appearance: bool = True,
    shape: bool = True,
    stitch: bool = True,
    stitch_config: StitchConfig | None = None,
) -> list[np.ndarray]:
    """Identities for every detection of ``clip``: the box tracker (with the appearance of the rendered frames
    when ``appearance``), then, with ``stitch``, the offline stitching (using shapes when ``shape``). Per frame
    (N_f,) int64."""
    tracker = BoxTracker()
    width_height = (clip.frames[0].shape[1], clip.frames[0].shape[0]) if clip.frames else None
    ids, descriptors = [], []
    for f, boxes in enumerate(clip.boxes):
        described = None
        if appearance and clip.frames:
            image = clip.frames[f]
            described = appearance_descriptors(image, boxes)
        ids.append(tracker.update(boxes, width_height, described))
        descriptors.append(described if described is not None else np.zeros((len(boxes), 0)))
    if not stitch or not appearance:
        return ids
    tracklets = tracklets_from_frames(ids, clip.boxes, descriptors, clip.shapes if shape else None)
    mapping = stitch_tracklets(tracklets, stitch_config)
    return [np.array([mapping[int(t)] for t in frame], np.int64) for frame in ids]


# -- temporal: a noisy walking clip, jitter and lag -------------------------------------------------------------


@dataclass(frozen=True)
class WalkClip:
    """One person walking, as per-frame MEGA would see them: ``truth`` (F, V, 3) metres, camera frame;
    ``vertices`` (F, H, V, 3) the hypotheses (hypothesis 0 the deterministic estimate, the others samples), translation
    included; ``cam_t`` (F, H, 3) metres; ``log_likelihood`` (F, H) nats; ``fps`` frames per second."""

    truth: np.ndarray
    vertices: np.ndarray
    cam_t: np.ndarray
    log_likelihood: np.ndarray
    fps: float


#: Segments of the stick body of :func:`noisy_walk`: (name, start (x, y) metres from the pelvis, y up, length
#: metres, swing amplitude radians, phase).
_SEGMENTS = (
    ("spine", (0.0, 0.0), 0.55, 0.03, 0.0),
    ("left_thigh", (0.1, 0.0), -0.45, 0.45, 0.0),
    ("right_thigh", (-0.1, 0.0), -0.45, 0.45, np.pi),
    ("left_arm", (0.2, 0.5), -0.6, 0.35, np.pi),
    ("right_arm", (-0.2, 0.5), -0.6, 0.35, 0.0),
)


def noisy_walk(
    seed: int = 0,
    num_frames: int = 90,
    fps: float = 30.0,
    hypotheses: int = 8,
    speed: float = 1.4,
    step_hz: float = 0.9,
    depth_noise: float = 0.06,
    lateral_noise: float = 0.01,
    rotation_noise_deg: float = 2.0,
    limb_noise: float = 0.015,
    vertex_noise: float = 0.003,
    sample_scale: float = 2.5,
) -> WalkClip:
    """A person walking ``speed`` m/s across the image at 5 m, arms and legs swinging (``step_hz``), 60 points per
    segment plus a head. Hypothesis 0 is off the truth per frame by realistic monocular errors: the translation by
    ``depth_noise`` (z) and ``lateral_noise`` (x, y) metres, the body's orientation by ``rotation_noise_deg``, every
    segment by its own offset of ``limb_noise`` metres, every point by ``vertex_noise``; the other hypotheses by
    ``sample_scale`` times as much. Log-likelihoods follow each hypothesis' error loosely (1 nat of noise), hypothesis
    0 the likeliest on average. Deterministic for a ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    along = np.linspace(0, 1, 60)
    pieces = []
    for _name, (x0, y0), length, amplitude, phase in _SEGMENTS:
        angle = amplitude * np.sin(2 * np.pi * step_hz * t + phase)[:, None]  # (F, 1) swing about the x axis
        y = y0 + length * along[None] * np.cos(angle)
        z = length * along[None] * np.sin(angle)
        pieces.append(np.stack([np.full_like(y, x0), y, z], axis=-1))
    head = np.array([0.0, 0.7, 0.0]) + rng.normal(0, 0.06, (40, 3))
    pieces.append(np.broadcast_to(head, (num_frames, 40, 3)))
    body = np.concatenate(pieces, axis=1)  # (F, V, 3), y up, pelvis at the origin
    body = body * np.array([1.0, -1.0, 1.0])  # camera axes: y down
    num_vertices = body.shape[1]
    cam = np.stack([-2.0 + speed * t, np.full_like(t, 0.3), np.full_like(t, 5.0)], axis=1)
    truth = body + cam[:, None]
    segment_of = np.repeat(np.arange(len(_SEGMENTS) + 1), [60] * len(_SEGMENTS) + [40])
    scale = np.array([1.0] + [sample_scale] * (hypotheses - 1))[None, :, None]
    cam_noise = rng.normal(size=(num_frames, hypotheses, 3)) * np.array([lateral_noise, lateral_noise, depth_noise])
    cam_t = cam[:, None] + cam_noise * scale
    angles = np.deg2rad(rotation_noise_deg) * rng.normal(size=(num_frames, hypotheses, 3)) * scale
    limbs = limb_noise * rng.normal(size=(num_frames, hypotheses, len(_SEGMENTS) + 1, 3)) * scale[..., None]
    points = vertex_noise * rng.normal(size=(num_frames, hypotheses, num_vertices, 3)) * scale[..., None]
    vertices = np.empty((num_frames, hypotheses, num_vertices, 3))
    for f in range(num_frames):
        for h in range(hypotheses):
            rotated = body[f] @ _rotation(angles[f, h]).T
            vertices[f, h] = rotated + limbs[f, h][segment_of] + points[f, h] + cam_t[f, h]
    error = np.linalg.norm(vertices - truth[:, None], axis=-1).mean(-1)  # (F, H) metres
    log_likelihood = -error / 0.02 + rng.normal(size=error.shape)
    return WalkClip(truth, vertices, cam_t, log_likelihood, fps)


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """(3,) axis-angle radians → (3, 3) rotation matrix (Rodrigues)."""
    angle = float(np.linalg.norm(axis_angle))
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def lag_frames(estimate: np.ndarray, truth: np.ndarray, max_shift: int = 6) -> float:
    """How many frames ``estimate`` (F, V, 3) trails ``truth`` (F, V, 3): the shift ``k`` (frames, refined below one
    frame by a parabola through the three best) minimising the mean point distance between ``estimate[f]`` and
    ``truth[f − k]`` over the frames both cover, ``|k| ≤ max_shift``. Positive: behind; 0: in step."""
    estimate = np.asarray(estimate, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    frames = len(truth)
    shifts = np.arange(-max_shift, max_shift + 1)
    lo, hi = max_shift, frames - max_shift  # the same frames for every shift
    cost = np.array([np.linalg.norm(estimate[lo:hi] - truth[lo - k : hi - k], axis=-1).mean() for k in shifts])
    i = int(np.argmin(cost))
    if 0 < i < len(cost) - 1:
        a, b, c = cost[i - 1], cost[i], cost[i + 1]
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator > 0 else 0.0
        return float(shifts[i] + offset)
    return float(shifts[i])


@dataclass(frozen=True)
class TemporalMetrics:
    """``jitter_raw`` and ``jitter`` (m/s², :func:`~mega_runtime.pipeline.temporal.jitter`) of hypothesis 0 and of
    the output; ``reduction`` their ratio; ``jitter_truth`` of the true motion; ``lag`` frames
    (:func:`lag_frames`); ``error_raw_mm``, ``error_mm``: mean point distance to the truth, away from the ends."""

    jitter_raw: float
    jitter: float
    reduction: float
    jitter_truth: float
    lag: float
    error_raw_mm: float
    error_mm: float


def evaluate_temporal(clip: WalkClip, config) -> TemporalMetrics:
    """The path and smoothing of a :class:`~mega_runtime.pipeline.temporal.TemporalConfig` on a :class:`WalkClip`."""
    from mega_runtime.pipeline.temporal import coherent_path, jitter, path_arrays, smooth_result_arrays

    frames = len(clip.truth)
    valid = np.ones(frames, bool)
    path = np.zeros(frames, np.int64)
    if config.path == "coherent":
        path = coherent_path(
            clip.vertices, clip.log_likelihood, valid, clip.fps, config.smoothness_weight, config.likelihood_weight
        )
    chosen, chosen_t = path_arrays(clip.vertices[:, None], clip.cam_t[:, None], path[:, None])
    out = chosen[:, 0]
    if config.smooth:
        smoothed, _ = smooth_result_arrays(chosen, chosen_t, valid[:, None], clip.fps, config.one_euro)
        out = smoothed[:, 0].astype(np.float64)
    raw = clip.vertices[:, 0]
    inner = slice(10, frames - 10)
    jitter_raw, jitter_out = jitter(raw, valid, clip.fps), jitter(out, valid, clip.fps)
    return TemporalMetrics(
        jitter_raw=jitter_raw,
        jitter=jitter_out,
        reduction=jitter_raw / max(jitter_out, 1e-12),
        jitter_truth=jitter(clip.truth, valid, clip.fps),
        lag=lag_frames(out, clip.truth),
        error_raw_mm=1e3 * float(np.linalg.norm(raw - clip.truth, axis=-1)[inner].mean()),
        error_mm=1e3 * float(np.linalg.norm(out - clip.truth, axis=-1)[inner].mean()),
    )
