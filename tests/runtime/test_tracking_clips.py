"""Tracking on synthetic clips with known identities: crossing, leaving and returning, entering late, a pan."""

from __future__ import annotations

import numpy as np
import pytest

from mega_runtime.tracking import BoxTracker


def _box(cx, cy, w=80.0, h=200.0):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _run(tracker, frames):
    """frames: list of {identity: box} → list of {identity: track id}."""
    out = []
    for people in frames:
        names = list(people)
        ids = tracker.update(np.array([people[n] for n in names], float).reshape(-1, 4))
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


def test_ok_detector_and_tracker_on_a_pan_over_the_group_photo(assets_dir):
    """A real clip made from the shared photo: a window panning right over the group (people leave on the
    left, a passer-by enters on the right), the default detector, the tracker; identities from the geometry."""
    cv2 = pytest.importorskip("cv2")
    from mega_runtime.detect import make_detector

    detector = make_detector("default")
    photo = cv2.imread(str(assets_dir / "images" / "pexels-labonheure-13020855.jpg"))
    small = cv2.resize(photo, (1000, 668))
    tracker = BoxTracker()
    people: list[float] = []  # photo x of each person met so far (they stand still in the photo)
    assignments = []
    for f in range(0, 24):
        pan = 12 * f
        frame = np.ascontiguousarray(small[:, pan : pan + 700])
        boxes = np.array([d.box_xyxy for d in detector.detect(frame)], float).reshape(-1, 4)
        ids = tracker.update(boxes)
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
