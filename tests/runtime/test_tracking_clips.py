"""Tracking on synthetic clips with known identities: crossing, leaving and returning, entering late, a pan.

Box-level clips are fast and exact; seeded random clips add detector-like noise (box jitter, missed detections,
a person hidden while another stands in front, boxes clipped at the image border); two clips run the default
detector on frames made from the shared photos (a pan over the group, and moving crops of three people).
"""

from __future__ import annotations

import numpy as np
import pytest

from mega_runtime.pipeline.reid import appearance_descriptors
from mega_runtime.pipeline.tracking import BoxTracker, box_iou


def _box(cx, cy, w=80.0, h=200.0):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _run(tracker, frames, image_size=None):
    """frames: list of {identity: box} → list of {identity: track id}."""
    out = []
    for people in frames:
        names = list(people)
        ids = tracker.update(np.array([people[n] for n in names], float).reshape(-1, 4), image_size)
        out.append(dict(zip(names, ids.tolist(), strict=True)))
    return out


def identity_switches(assignments) -> int:
    """How often an identity's track id changes between frames where it is seen (and ids are shared)."""
    last: dict[str, int] = {}
    switches = 0
    for frame in assignments:
        if len(set(frame.values())) != len(frame):
            switches += 1  # two people on one track
        for name, track in frame.items():
            if name in last and last[name] != track:
                switches += 1
            last[name] = track
    return switches


def test_ok_two_people_crossing_keep_their_ids():
    frames = []
    for f in range(40):
        a = _box(100 + 10 * f, 300)  # walks right
        b = _box(500 - 10 * f, 310, w=90)  # walks left, crossing a around frame 20
        frames.append({"a": a, "b": b})
    assignments = _run(BoxTracker(), frames)
    assert identity_switches(assignments) == 0


def test_ok_crossing_with_a_missed_detection_at_the_overlap():
    frames = []
    for f in range(40):
        people = {"a": _box(100 + 10 * f, 300), "b": _box(500 - 10 * f, 305)}
        if 19 <= f <= 21:
            del people["b"]  # hidden behind a
        frames.append(people)
    assert identity_switches(_run(BoxTracker(), frames)) == 0


def test_ok_short_gap_is_bridged_and_long_gap_gives_a_new_track():
    tracker = BoxTracker(max_gap=5)
    frames = [{"a": _box(200 + 3 * f, 300)} if not 10 <= f < 14 else {} for f in range(30)]
    assignments = _run(tracker, frames)
    assert {t for frame in assignments for t in frame.values()} == {0}  # 4 missing frames: same id
    tracker = BoxTracker(max_gap=5)
    frames = [{"a": _box(200, 300)} if not 10 <= f < 25 else {} for f in range(30)]
    ids = [frame["a"] for frame in _run(tracker, frames) if frame]
    assert ids[0] == 0 and ids[-1] == 1  # gone 15 frames > max_gap: a new track


def test_ok_person_entering_late_gets_a_new_track_and_others_keep_theirs():
    frames = []
    for f in range(30):
        people = {"a": _box(100 + 2 * f, 300), "b": _box(400, 300 + f)}
        if f >= 12:
            people["c"] = _box(700 - 4 * (f - 12), 320)
        frames.append(people)
    assignments = _run(BoxTracker(), frames)
    assert identity_switches(assignments) == 0
    assert assignments[-1] == {"a": 0, "b": 1, "c": 2}


def test_ok_fast_motion_with_little_overlap_between_frames_keeps_the_id():
    frames = [{"a": _box(100 + 60 * f, 300)} for f in range(10)]  # 60 px per frame, box 80 px wide
    assert identity_switches(_run(BoxTracker(), frames)) == 0
    assert {a["a"] for a in _run(BoxTracker(), frames)} == {0}


def test_ok_a_weak_pair_never_pushes_a_good_one_aside():
    """A: strong match d1 (IoU 0.5), below-threshold d2 (0.29); B: just-above-threshold d1 (0.31). Maximising the
    raw total would give A–d2 + B–d1 = 0.60 and then drop A–d2 — A would lose its person to B."""
    tracker = BoxTracker()
    assert tracker.update(np.array([[0, 0, 100, 10], [86, 0, 186, 10]], float)).tolist() == [0, 1]
    assert tracker.update(np.array([[33.3, 0, 133.3, 10], [-55, 0, 45, 10]], float)).tolist() == [0, 2]


def test_ok_a_long_occlusion_at_the_crossing_keeps_both_ids():
    """b walks behind a and is hidden for 9 frames while their boxes overlap (as a detector's NMS would)."""
    frames = []
    for f in range(40):
        a, b = _box(100 + 10 * f, 300, w=90, h=220), _box(500 - 10 * f, 290, w=80, h=200)
        frames.append({"a": a} if 16 <= f <= 24 else {"a": a, "b": b})
    assignments = _run(BoxTracker(), frames)
    assert identity_switches(assignments) == 0
    assert assignments[-1] == {"a": 0, "b": 1}


def test_ok_hidden_behind_a_pillar_for_longer_than_velocity_alone_would_bridge():
    """12 frames unseen at 12 px/frame: the prediction moves on the whole time (and its gate widens)."""
    frames = [{"a": _box(100 + 12 * f, 300)} if not 15 <= f < 27 else {} for f in range(40)]
    assert {t for frame in _run(BoxTracker(max_gap=15), frames) for t in frame.values()} == {0}


def _leave_and_return(gap: int, width: float = 640.0):
    """a walks out through the right border (its box clipped there, gone once less than a third shows), is away
    ``gap`` frames, then walks back in; b stands still."""
    frames, x, direction, away = [], width - 200.0, 1, 0
    for _ in range(60):
        people = {"b": _box(150, 240)}
        box = np.array(_box(x, 240))
        box[[0, 2]] = box[[0, 2]].clip(0, width)
        shown = box[2] - box[0] >= 80 / 3
        if shown:
            people["a"] = box.tolist()
        if direction == 1 and not shown:
            away += 1
            direction = -1 if away >= gap else 1
        else:
            x += 12 * direction
        frames.append(people)
    return frames


def test_ok_leaving_through_the_border_and_returning_within_max_gap_keeps_the_id():
    for image_size in ((640, 480), None):
        assignments = _run(BoxTracker(max_gap=15), _leave_and_return(gap=10), image_size)
        seen = [frame["a"] for frame in assignments if "a" in frame]
        assert set(seen) == {1} and identity_switches(assignments) == 0, image_size


def test_ok_returning_after_more_than_max_gap_is_a_new_track():
    assignments = _run(BoxTracker(max_gap=15), _leave_and_return(gap=25), (640, 480))
    seen = [frame["a"] for frame in assignments if "a" in frame]
    assert seen[0] == 1 and seen[-1] == 2 and sorted(set(seen)) == [1, 2]
    assert {frame["b"] for frame in assignments} == {0}


def _noisy(rng, box, scale):
    w, h = box[2] - box[0], box[3] - box[1]
    return (np.asarray(box) + rng.normal(scale=scale, size=4) * np.array([w, h, w, h])).tolist()


def _as_detected(people):
    """What a detector reports when people overlap heavily: the one behind (the smaller box) is not found."""
    area = {n: (b[2] - b[0]) * (b[3] - b[1]) for n, b in people.items()}
    kept: list[str] = []
    for name in sorted(people, key=lambda n: -area[n]):
        if all(box_iou(np.array(people[name]), np.array(people[k]))[0, 0] < 0.5 for k in kept):
            kept.append(name)
    return {n: people[n] for n in people if n in kept}


def _random_crossing(rng):
    """Two people of random sizes (depths) and speeds cross; box jitter up to 4 %, up to 15 % missed detections,
    the one behind hidden in most frames where they overlap."""
    v1, v2, w = rng.uniform(3, 20), rng.uniform(3, 20), rng.uniform(60, 120)
    h, dy, scale = w * rng.uniform(2, 3), rng.uniform(-20, 20), rng.uniform(0.8, 1.25)
    noise, miss = rng.uniform(0, 0.04), rng.uniform(0, 0.15)
    frames = []
    for f in range(60):
        a = _box(500 + v1 * (f - 30), 400, w, h)
        b = _box(500 - v2 * (f - 30), 400 + dy, w * scale, h * scale)
        overlap = (v1 + v2) * abs(f - 30) < 0.7 * w
        people = {}
        if rng.random() > miss:
            people["a"] = _noisy(rng, a, noise)
        if rng.random() > miss and not (overlap and rng.random() < 0.7):
            people["b"] = _noisy(rng, b, noise)
        frames.append(_as_detected(people))
    return frames


def _random_pillar_then_passer(rng):
    """a is hidden 3–14 frames behind a pillar, then walks past b, who stands nearer or farther (another size)."""
    v, gap, w = rng.uniform(3, 15), int(rng.integers(3, 15)), rng.uniform(60, 120)
    h, scale, noise = 2.5 * w, rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.3)]), rng.uniform(0, 0.03)
    bx = 200 + v * (20 + gap) + rng.uniform(1, 3) * w
    frames = []
    for f in range(70):
        people = {"b": _noisy(rng, _box(bx, 400 + (scale - 1) * h / 2, scale * w, scale * h), noise)}
        if not 20 <= f < 20 + gap:
            people["a"] = _noisy(rng, _box(200 + v * f, 400, w, h), noise)
        frames.append(_as_detected(people))
    return frames


def _random_crowd(rng):
    """Four people walking in random directions at similar depths; box jitter and up to 10 % missed detections."""
    start = np.stack([rng.uniform(100, 900, 4), rng.uniform(350, 450, 4)], axis=1)
    velocity = rng.normal(scale=8, size=(4, 2)) * np.array([1, 0.2])
    size, noise, miss = rng.uniform(60, 120, 4), rng.uniform(0, 0.03), rng.uniform(0, 0.1)
    frames = []
    for f in range(60):
        people = {}
        for i in range(4):
            if rng.random() > miss:
                centre = start[i] + velocity[i] * f
                people[f"p{i}"] = _noisy(rng, _box(*centre, size[i], 2.5 * size[i]), noise)
        frames.append(_as_detected(people))
    return frames


#: Identity switches allowed over 40 seeded clips of each kind (measured: docs/video.md). Most that remain are
#: ambiguous from boxes alone — two people of one size at one spot, one of them unseen.
SWITCH_BUDGET = {_random_crossing: 6, _random_pillar_then_passer: 0, _random_crowd: 4}


@pytest.mark.parametrize("make_clip", list(SWITCH_BUDGET), ids=lambda f: f.__name__.removeprefix("_random_"))
def test_ok_seeded_noisy_clips_stay_within_the_switch_budget(make_clip):
    switches = sum(identity_switches(_run(BoxTracker(), make_clip(np.random.default_rng(seed)))) for seed in range(40))
    assert switches <= SWITCH_BUDGET[make_clip]


def test_ng_tracker_settings_out_of_range_are_refused():
    with pytest.raises(ValueError, match="iou_threshold"):
        BoxTracker(iou_threshold=0)
    with pytest.raises(ValueError, match="max_gap"):
        BoxTracker(max_gap=-1)


def test_ok_a_pan_over_the_shared_group_photo_keeps_every_identity(assets_dir):
    """Boxes of the four front-row people of the group photo, as a camera panning right would see them."""
    cv2 = pytest.importorskip("cv2")
    photo = cv2.imread(str(assets_dir / "images" / "pexels-labonheure-13020855.jpg"))
    width = photo.shape[1]
    people = {  # hand-placed boxes (pixels of the full photo)
        "p1": [330, 700, 1150, 2670],
        "p2": [1100, 860, 1850, 2670],
        "p3": [2020, 900, 2750, 2670],
        "p4": [2650, 850, 3550, 2670],
    }
    frames = []
    for f in range(40):
        shift = 25 * f  # the view moves right: boxes move left; people leave at the left edge
        view = {}
        for name, (x1, y1, x2, y2) in people.items():
            x1, x2 = x1 - shift, x2 - shift
            if x2 > 0 and x1 < width - 1000:
                view[name] = [max(x1, 0), y1, min(x2, width - 1000), y2]
        frames.append(view)
    assert identity_switches(_run(BoxTracker(), frames)) == 0


@pytest.fixture(scope="module")
def detector():
    """The default (offline BlazePose) detector, built once for this module's clips."""
    pytest.importorskip("cv2")
    from mega_runtime.pipeline.detect import make_detector

    return make_detector("default")


@pytest.mark.slow
def test_ok_detector_and_tracker_on_a_pan_over_the_group_photo(assets_dir, detector):
    """A real clip made from the shared photo: a window panning right over the group (people leave on the
    left, a passer-by enters on the right), the default detector, the tracker with appearance as run_video uses it
    (the offline detector finds the man walking behind the group only in some frames); identities from the
    geometry."""
    cv2 = pytest.importorskip("cv2")
    photo = cv2.imread(str(assets_dir / "images" / "pexels-labonheure-13020855.jpg"))
    small = cv2.resize(photo, (1000, 668))
    tracker = BoxTracker()
    people: list[float] = []  # photo x of each person met so far (they stand still in the photo)
    assignments = []
    for f in range(0, 24):
        pan = 12 * f
        frame = np.ascontiguousarray(small[:, pan : pan + 700])
        boxes = np.array([d.box_xyxy for d in detector.detect(frame)], float).reshape(-1, 4)
        # tracked as run_video tracks: boxes and the colours of each person (pipeline/reid.py)
        ids = tracker.update(boxes, (frame.shape[1], frame.shape[0]), appearance=appearance_descriptors(frame, boxes))
        names = []
        for centre in (boxes[:, 0] + boxes[:, 2]) / 2 + pan:
            near = [i for i, x in enumerate(people) if abs(x - centre) < 80]  # people stand > 120 px apart
            if not near:
                people.append(centre)
                near = [len(people) - 1]
            names.append(f"person {near[0]}")
        assignments.append(dict(zip(names, ids.tolist(), strict=True)))
    assert identity_switches(assignments) == 0
    seen = {name for frame in assignments for name in frame}
    assert len(seen) >= 4  # the group (and whoever the pan reveals)


def _person_crop(cv2, path, fractions, height_px):
    """The rectangle ``fractions`` (x0, y0, x1, y1 of the photo) of a shared photo, scaled to ``height_px``."""
    photo = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_4)
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = fractions
    crop = photo[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
    scale = height_px / crop.shape[0]
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


@pytest.mark.slow
def test_ok_detector_and_tracker_on_moving_crops_of_the_shared_photos(assets_dir, detector):
    """Three people cut from the shared photos move over a plain 640×360 background: the man walks right, the
    woman walks left behind him (hidden while they cross), the boy enters late from the right, walks back out
    through the border and comes back (about 9 frames unseen). The default detector and the tracker; identities
    from where each crop was pasted (the visible rectangle a detection overlaps most)."""
    cv2 = pytest.importorskip("cv2")
    images = assets_dir / "images"
    man = _person_crop(cv2, images / "pexels-marcus-aurelius-6787357.jpg", (0.05, 0.32, 0.86, 0.97), 200)
    woman = _person_crop(cv2, images / "pexels-polina-tankilevitch-6739044.jpg", (0.12, 0.47, 0.82, 0.88), 170)
    boy = _person_crop(cv2, images / "pexels-labonheure-13020855.jpg", (0.08, 0.25, 0.285, 1.0), 220)
    width, height = 640, 360

    def boy_x(f: int) -> int | None:
        if f < 2 or 12 <= f < 16:
            return None
        return 640 - 22 * (f - 1) if f < 9 else 486 + 50 * (f - 8) if f < 12 else 640 - 26 * (f - 15)

    tracker = BoxTracker()
    assignments = []
    for f in range(24):
        frame = np.full((height, width, 3), 190, np.uint8)
        visible = {}
        for name, crop, x, y in (  # back to front
            ("woman", woman, 440 - 18 * f, 160),
            ("man", man, 10 + 18 * f, 140),
            ("boy", boy, boy_x(f), 130),
        ):
            if x is None:
                continue
            h, w = crop.shape[:2]
            x0, x1 = max(x, 0), min(x + w, width)
            if x1 > x0:
                frame[y : y + h, x0:x1] = crop[:, x0 - x : x1 - x]
                visible[name] = np.array([x0, y, x1, y + h], float)
        boxes = np.array([d.box_xyxy for d in detector.detect(frame)], float).reshape(-1, 4)
        ids = tracker.update(boxes, (width, height), appearance=appearance_descriptors(frame, boxes))
        names = list(visible)
        overlap = box_iou(boxes, np.stack([visible[n] for n in names])) if len(boxes) else np.zeros((0, 1))
        # a detection is named after the pasted rectangle it overlaps most; where two people cross, a box that
        # overlaps two rectangles (IoU > 0.3 with both) cannot be named from the geometry and is not scored
        assignments.append(
            {
                names[j]: int(i)
                for i, row in zip(ids, overlap, strict=True)
                if row.max() > 0.3 and np.sort(row)[-2:][0] <= (0.3 if len(row) > 1 else 1.0)
                for j in [row.argmax()]
            }
        )
    assert identity_switches(assignments) == 0
    tracks = {name: {frame[name] for frame in assignments if name in frame} for name in ("man", "woman", "boy")}
    assert all(len(t) == 1 for t in tracks.values()), tracks
    assert tracks["boy"] == {2}  # the late entrant gets a new track, and keeps it after coming back
    seen = {name: [f for f, frame in enumerate(assignments) if name in frame] for name in tracks}
    assert seen["woman"][0] < 8 and seen["woman"][-1] > 12  # seen before and after the crossing
    assert seen["boy"][0] < 9 and seen["boy"][-1] > 13  # seen before leaving and after coming back
