"""The detection evaluator's rules on hand-made boxes, the labelled box files, and the offline detector's
recall / precision on a few synthetic scenes built from the shared photos (docs/detection.md, "Evaluation")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mega_runtime.errors import DetectorError
from mega_runtime.pipeline.detect.evaluate import GROUP_COVER, bucket_of, score_image, summarise, synthetic_scene

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"


# -- matching rules on hand-made boxes ------------------------------------------------------------------------


def test_a_detection_matches_a_person_at_iou_half_or_more_and_only_once():
    people = [(0, 0, 40, 100)]
    close = (0, 0, 40, 60)  # IoU 0.6
    far = (0, 0, 40, 40)  # IoU 0.4
    assert score_image([close], [0.9], people).total.found == 1
    assert score_image([far], [0.9], people).total.found == 0
    two = score_image([close, (1, 0, 41, 100)], [0.5, 0.9], people)
    # the higher score matches first; the other is a false positive, not a second hit
    assert two.verdicts == ["miss", "hit"] and two.total.true_positives == 1 and two.total.detections == 2
    assert two.total.precision == 0.5 and two.total.recall == 1.0


def test_each_detection_takes_the_unmatched_person_it_overlaps_most():
    people = [(0, 0, 40, 100), (30, 0, 70, 100)]
    score = score_image([(28, 0, 68, 100), (2, 0, 42, 100)], [0.9, 0.8], people)
    assert score.person_match == [1, 0]
    assert score.total.found == 2 and score.total.precision == 1.0


def test_short_people_and_ignore_regions_count_neither_way():
    people = [(0, 0, 20, 50), (100, 0, 140, 100)]  # the first is under 60 px: ignored
    ignore = [(200, 0, 240, 100)]
    detections = [(0, 0, 20, 50), (200, 0, 240, 100), (210, 10, 230, 60), (100, 0, 140, 100)]
    score = score_image(detections, None, people, ignore)
    assert score.verdicts == ["ignored", "ignored", "ignored", "hit"]
    assert (score.total.people, score.total.found, score.total.detections) == (1, 1, 1)
    # a detection well below the counted heights (< 60 / 1.25 = 48 px) is out of range; one of 48 px is not
    assert score_image([(300, 0, 320, 47)], None, people).verdicts == ["ignored"]
    assert score_image([(300, 0, 320, 48)], None, people).verdicts == ["miss"]


def test_a_box_holding_two_people_and_matching_neither_is_a_group_box():
    people = [(0, 0, 40, 100), (45, 0, 85, 100)]
    group = score_image([(0, 0, 85, 100)], None, people)
    assert group.group == [True] and group.total.group_boxes == 1 and group.total.group_rate == 1.0
    # a box that matches one person while a neighbour's box lies inside it too is no group box
    pair = [(0, 0, 40, 100), (5, 20, 35, 90)]
    assert score_image([(0, 0, 40, 100)], None, pair).group == [False]
    # a neighbour with less than GROUP_COVER of its area inside is not held
    edge = (80, 0, 120, 100)
    assert GROUP_COVER > (85 - 80) / 40
    assert score_image([(0, 0, 85, 100)], None, [people[0], edge]).group == [False]


def test_people_and_detections_fall_in_size_buckets_and_add_up():
    assert bucket_of(59.9) is None and bucket_of(60) == "60-100 px" and bucket_of(150) == "100-200 px"
    a = score_image([(0, 0, 30, 80)], None, [(0, 0, 30, 80), (100, 0, 160, 150)])
    b = score_image([(0, 0, 100, 700), (300, 0, 350, 90)], None, [(0, 0, 100, 700)])
    total, buckets = summarise([a, b])
    assert (total.people, total.found, total.detections, total.true_positives) == (3, 2, 3, 2)
    assert (buckets["60-100 px"].people, buckets["60-100 px"].detections) == (1, 2)  # b's false positive is 90 px
    assert buckets["100-200 px"].recall == 0.0 and buckets[">=600 px"].precision == 1.0


def test_empty_images_score_as_perfect_and_without_groups():
    score = score_image([], None, [])
    assert (score.total.precision, score.total.recall, score.total.group_rate) == (1.0, 1.0, 0.0)


# -- the labelled box files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vtest_people.json", "shared_photos_people.json"])
def test_labelled_box_files_hold_well_formed_boxes_inside_their_images(name):
    labels = json.loads((DATA / name).read_text())
    entries = labels["frames"] if "frames" in labels else labels["images"]
    assert entries and labels["description"]
    for key, entry in entries.items():
        width, height = entry.get("image_size", labels.get("image_size"))
        for box in entry["people"] + entry["ignore"]:
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (key, box)


def test_synthetic_scenes_place_people_apart_with_their_exact_boxes():
    person = np.zeros((200, 100, 3), dtype=np.uint8)
    person[40:160, 30:70] = 255  # the "person": a white bar, box (30, 40, 70, 160)
    neighbour = (75, 40, 100, 160)  # another person, partly inside the 15 % margin (18 px) around the first
    cutout = (person, (30, 40, 70, 160), [neighbour])
    image, boxes, ignore = synthetic_scene([cutout], (400, 300), [60, 90, 120], seed=3)
    again, same, same_ignore = synthetic_scene([cutout], (400, 300), [60, 90, 120], seed=3)
    assert np.array_equal(image, again) and boxes == same and ignore == same_ignore
    assert len(boxes) == 3
    for (x1, y1, x2, y2), target in zip(boxes, [60, 90, 120], strict=True):
        assert y2 - y1 == pytest.approx(target, abs=1.0)
        inner = image[int(y1) + 2 : int(y2) - 2, int(x1) + 2 : int(x2) - 2]
        assert inner.min() >= 250  # the white bar is exactly where the box says
    assert score_image(boxes, None, boxes).total.recall == 1.0
    # the neighbour's visible strip (x 75 to the crop's edge at 88) comes along as an ignore region beside each
    assert len(ignore) == 3
    for (_, y1, x2, y2), (ix1, iy1, ix2, iy2) in zip(boxes, ignore, strict=True):
        scale = (y2 - y1) / 120
        assert ix1 == pytest.approx(x2 + 5 * scale, abs=0.01) and ix2 == pytest.approx(x2 + 18 * scale, abs=0.01)
        assert (iy1, iy2) == (pytest.approx(y1), pytest.approx(y2))


# -- the offline detector on synthetic scenes made from the shared photos ------------------------------------

SYNTHETIC_MIN_RECALL = 0.9
SYNTHETIC_MIN_PRECISION = 0.9


@pytest.fixture(scope="module")
def cutouts(assets_dir):
    from mega_runtime.pipeline.media import read_image

    labels = json.loads((DATA / "shared_photos_people.json").read_text())
    out = []
    for name, entry in labels["images"].items():
        image = read_image(assets_dir / "images" / name)
        image = image[::4, ::4].copy()  # a quarter of the size is plenty for people pasted ≤ 200 px tall
        quarter = [[v / 4 for v in box] for box in entry["people"] + entry["ignore"]]
        out += [(image, quarter[i], quarter[:i] + quarter[i + 1 :]) for i in range(min(4, len(entry["people"])))]
    return out


@pytest.fixture(scope="module")
def detector():
    from mega_runtime.pipeline.detect import BlazePoseDetector

    try:
        return BlazePoseDetector(num_threads=2)
    except DetectorError as exc:
        pytest.skip(f"the default detector's packages are not installed: {exc.message} (fix: {exc.hint})")


def test_offline_detector_finds_small_pasted_people_without_group_boxes(cutouts, detector):
    scores = []
    for seed, heights in enumerate([(70, 90, 120, 160), (80, 110, 200)]):
        order = np.random.default_rng(seed).permutation(len(cutouts))
        image, boxes, ignore = synthetic_scene([cutouts[i] for i in order], (512, 384), heights, seed=seed)
        found = detector.detect(image)
        scores.append(score_image([d.box_xyxy for d in found], [d.score for d in found], boxes, ignore))
    total, _ = summarise(scores)
    assert total.people >= 6
    assert total.recall >= SYNTHETIC_MIN_RECALL, f"found {total.found} of {total.people} pasted people"
    assert total.precision >= SYNTHETIC_MIN_PRECISION, f"{total.true_positives} of {total.detections} boxes right"
    assert total.group_boxes == 0


# -- the offline detector's pure helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(576, 768), (2670, 4000), (3000, 2000), (200, 300)])
def test_fine_tiles_cover_the_whole_image_at_each_level(height, width):
    from mega_runtime.pipeline.detect.blazepose import fine_tiles

    tiles = fine_tiles(height, width)
    sides = sorted({side for _, _, side in tiles})
    assert all(side >= 160 for side in sides) and all(side < 0.8 * min(height, width) for side in sides)
    for side in sides:
        level = [(x0, y0) for x0, y0, s in tiles if s == side]
        covered = np.zeros((height, width), dtype=bool)
        for x0, y0 in level:
            assert min(x0, y0) >= -1e-9 and x0 + side <= width + 1e-9 and y0 + side <= height + 1e-9
            covered[int(y0) : int(y0 + side) + 1, int(x0) : int(x0 + side) + 1] = True
        assert covered.all(), f"tiles of {side} px leave part of a {width}×{height} image out"
    assert fine_tiles(576, 768) and {round(s) for _, _, s in fine_tiles(576, 768)} == {160, 288}
    assert fine_tiles(200, 300) == []  # a small image: the letterboxed view is fine enough


def _person(box, score=0.9):
    return (score, np.array(box, dtype=float), np.zeros(2))


def test_a_part_of_a_larger_person_is_dropped_and_gives_its_score_to_it():
    from mega_runtime.pipeline.detect.blazepose import drop_parts

    whole, torso = _person((0, 0, 100, 300), 0.6), _person((10, 50, 90, 150), 0.95)
    beside = _person((95, 0, 195, 300), 0.8)  # a neighbour overlapping a little is kept
    kept = drop_parts([torso, whole, beside])
    assert [tuple(box) for _, box, _ in kept] == [(0, 0, 100, 300), (95, 0, 195, 300)]
    assert [score for score, _, _ in kept] == [0.95, 0.8]


def test_a_box_around_two_people_side_by_side_is_dropped_as_a_group():
    from mega_runtime.pipeline.detect.blazepose import drop_parts

    left, right = _person((0, 0, 40, 100)), _person((45, 5, 85, 100))
    group = _person((0, 0, 85, 100), 0.99)
    assert [tuple(box) for _, box, _ in drop_parts([group, left, right])] == [(0, 0, 40, 100), (45, 5, 85, 100)]
    # two short people and one in front of them, all better scored than the box over the three: a group too
    back_left, back_right, front = (
        _person((10, 0, 35, 70), 1.0),
        _person((40, 0, 60, 70), 1.0),
        _person((5, 80, 40, 190)),
    )
    kept = drop_parts([back_left, front, _person((0, 0, 62, 190), 0.8), back_right])
    assert [tuple(box) for _, box, _ in kept] == [(10, 0, 35, 70), (5, 80, 40, 190), (40, 0, 60, 70)]
    # one tall person with two short parts inside (a torso, a leg), scored lower, is no group: the parts go
    legs, chest = _person((10, 150, 60, 300), 0.6), _person((50, 40, 90, 120), 0.6)
    kept = drop_parts([_person((0, 0, 100, 300)), legs, chest])
    assert [tuple(box) for _, box, _ in kept] == [(0, 0, 100, 300)]


def test_the_offline_detector_can_run_without_hog_and_tiles():
    from mega_runtime.pipeline.detect import BlazePoseDetector, make_detector

    assert "hog" in BlazePoseDetector.OPTIONS and "tiles" in BlazePoseDetector.OPTIONS
    try:
        detector = make_detector("blazepose", num_threads=1, hog=False, tiles=False)
    except DetectorError as exc:
        pytest.skip(f"the default detector's packages are not installed: {exc.message} (fix: {exc.hint})")
    assert detector.hog is False and detector.tiles is False  # type: ignore[attr-defined]
    assert detector.detect(np.full((240, 320, 3), 128, dtype=np.uint8)) == []
