"""The model-free static-object detector and its use in ClutterRule, on synthetic images with real Unix
timestamps (~1.8e9). The same behaviour on real clips: tests/analyze/test_left_object_clips.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.analyze.clutter import ClutterRule
from pipeline.analyze.furniture import FurnitureMemory
from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.analyze.static_objects import StaticBlob, StaticObjectDetector
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections

T0 = 1_800_000_037.25
"""A real Unix timestamp (2027) with a fraction: float32 holds only multiples of 128 s here."""
H, W = 180, 320


def floor(seed: int = 0) -> np.ndarray:
    """A textured floor (blurred noise: edges everywhere, like planks or asphalt)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(70, 170, (H, W, 3)).astype(np.uint8), (0, 0), 1.5)


def with_box(img: np.ndarray, x: int, y: int, w: int, h: int, colour: tuple[int, int, int] = (30, 40, 200),
             ) -> np.ndarray:
    out = img.copy()
    out[y:y + h, x:x + w] = colour
    cv2.rectangle(out, (x + 2, y + 2), (x + w - 3, y + h - 3), (200, 200, 200), 1)
    return out


NO = np.zeros((H, W), bool)


def test_float32_cannot_hold_unix_seconds() -> None:
    """Control: the trap the timers must not fall into."""
    assert float(np.float32(T0)) != T0 and float(np.float32(T0 + 5)) - float(np.float32(T0)) in (0.0, 128.0)


def test_age_counts_from_the_appearance_at_unix_time() -> None:
    """The timer starts on the frame the object appeared, not when the short-term model took it in."""
    det = StaticObjectDetector(learn_frames=3)
    empty, bag = floor(), with_box(floor(), 100, 60, 40, 50)
    for i in range(3):
        assert det.update(T0 + 0.5 * i, empty, NO).learning
    appear = T0 + 2.0
    ages = []
    for i in range(4, 30):
        ts = T0 + 0.5 * i
        scene = det.update(ts, bag if ts >= appear else empty, NO)
        ages += [(ts, b.age, b.since) for b in scene.blobs]
    assert ages, "the object was never found"
    for ts, age, since in ages:
        assert since == pytest.approx(appear, abs=1e-6)
        assert age == pytest.approx(ts - appear, abs=1e-6)
    assert ages[-1][1] == pytest.approx(T0 + 14.5 - appear, abs=1e-6)


def test_small_object_counts_in_pixels_not_zone_share() -> None:
    """A 40x40 px bag in a 1280x720 frame is 0.17 % of a whole-frame zone (v1 needed 1 %): 100 working px."""
    big_floor = cv2.resize(floor(), (1280, 720), interpolation=cv2.INTER_LINEAR)
    bag = big_floor.copy()
    bag[400:440, 600:640] = (20, 20, 20)
    det = StaticObjectDetector(learn_frames=2)
    no = np.zeros((720, 1280), bool)
    scenes = [det.update(T0 + i, big_floor if i < 3 else bag, no) for i in range(8)]
    blobs = scenes[-1].blobs
    assert len(blobs) == 1 and 60 <= blobs[0].area_px <= 140, blobs
    x1, y1, x2, y2 = blobs[0].box
    assert x1 <= 605 and x2 >= 635 and y1 <= 405 and y2 >= 435
    small = StaticObjectDetector(learn_frames=2, min_object_px=200)  # the knob: smaller blobs are noise
    assert [small.update(T0 + i, big_floor if i < 3 else bag, no) for i in range(8)][-1].blobs == ()


def test_removal_heals_and_never_lists_a_blob() -> None:
    """An object present while the zone is learned, then taken away: a removal, healed; never an object."""
    det = StaticObjectDetector(learn_frames=3)
    empty = floor()
    bag = with_box(empty, 100, 60, 40, 50)
    listed: list[StaticBlob] = []
    removals: list[StaticBlob] = []
    for i in range(40):
        scene = det.update(T0 + i, bag if i < 10 else empty, NO)
        listed += scene.blobs
        removals += scene.removals
    assert listed == [] and det.removals_healed == 1
    (removal,) = removals
    x1, y1, x2, y2 = removal.box
    assert removal.object_score <= det.removal_score
    assert x1 <= 102 and y1 <= 62 and x2 >= 138 and y2 >= 108
    assert det.static_mask is not None and not det.static_mask.any()  # healed: the floor is background
    # the healed spot works like any other: a new object there is found again
    for i in range(40, 50):
        scene = det.update(T0 + i, bag, NO)
    assert len(scene.blobs) == 1 and scene.blobs[0].age == pytest.approx(49.0 - 40.0, abs=1e-6)


def test_timer_survives_a_person_in_front() -> None:
    """A person standing in front of the object (masked) keeps its timer; afterwards the age runs on."""
    det = StaticObjectDetector(learn_frames=2)
    empty = floor()
    bag = with_box(empty, 100, 60, 40, 50)
    person = np.zeros((H, W), bool)
    person[20:150, 80:160] = True
    for i in range(2):
        det.update(T0 + i, empty, NO)
    for i in range(2, 40):
        frame, hidden = bag, NO
        if 10 <= i < 25:
            frame = bag.copy()
            frame[20:150, 80:160] = (10, 10, 10)
            hidden = person
        scene = det.update(T0 + i, frame, hidden)
    assert len(scene.blobs) == 1 and scene.blobs[0].age == pytest.approx(37.0, abs=1e-6)


def test_furniture_memory_needs_two_learning_frames() -> None:
    mem = FurnitureMemory()
    mem.learn(np.array([[0, 0, 10, 10], [50, 50, 80, 90]]))   # a car passing through is on one frame only
    mem.learn(np.array([[1, 0, 11, 10]]))
    assert mem.is_furniture(np.array([[0, 0, 10, 10], [50, 50, 80, 90]])).tolist() == [True, False]
    mem.reset()
    assert mem.is_furniture(np.array([[0, 0, 10, 10]])).tolist() == [False]


ZONE = ZoneConfig(id="z", kind="corridor", polygon=[[0, 0], [1, 0], [1, 1], [0, 1]])
RULE = HazardRule(dwell_seconds=7.0, clear_seconds=60, update_interval_seconds=1e9)


def run_rule(rule: ClutterRule, frames: list[np.ndarray], dets: list[dict[str, Detections]],
             step: float = 1.0) -> list[Incident]:
    return [e for i, (f, d) in enumerate(zip(frames, dets, strict=True))
            for e in rule.update_image(T0 + step * i, f, d, W, H)]


def test_rule_opens_at_appearance_plus_dwell_at_unix_time() -> None:
    empty, bag = floor(), with_box(floor(), 100, 60, 40, 50)
    frames = [bag if i >= 10 else empty for i in range(40)]
    events = run_rule(ClutterRule("cam1", ZONE, RULE), frames, [{}] * 40)
    assert [e.event for e in events] == [IncidentEvent.OPENED]
    e = events[0]
    assert e.ts == pytest.approx(T0 + 10 + RULE.dwell_seconds, abs=1e-6)
    assert e.started_at == pytest.approx(T0 + 10, abs=1e-6)
    assert e.details["dwell_seconds"] == RULE.dwell_seconds


def test_rule_never_alerts_on_a_removal() -> None:
    empty, bag = floor(), with_box(floor(), 100, 60, 40, 50)
    frames = [bag if i < 12 else empty for i in range(60)]
    assert run_rule(ClutterRule("cam1", ZONE, RULE), frames, [{}] * 60) == []


def bin_box(label: str = "bin", conf: float = 0.8) -> dict[str, Detections]:
    """A clutter-model box on a cabinet standing at x 90-150 (there from the first frame)."""
    return {"clutter": Detections.from_arrays([[90, 40, 150, 120]], [conf], [0], {0: label})}


@pytest.mark.parametrize(("furniture", "alerts"), [(True, True), (False, False)])
def test_furniture_box_never_hides_a_new_object(furniture: bool, alerts: bool) -> None:
    """A bin box on a cabinet, seen while the zone was learned, covers the bag later set down in front of
    it; as furniture it hides nothing (with furniture off it hides the bag, as in v1)."""
    cabinet = with_box(floor(), 90, 40, 60, 80, colour=(90, 90, 90))
    bag = with_box(cabinet, 100, 70, 40, 45)
    frames = [bag if i >= 10 else cabinet for i in range(30)]
    rule = ClutterRule("cam1", ZONE, RULE, furniture=furniture)
    events = run_rule(rule, frames, [bin_box()] * 30)
    assert bool(events) is alerts
    if alerts:
        assert events[0].details["labels"] == ["unknown object"]
        assert events[0].ts == pytest.approx(T0 + 10 + RULE.dwell_seconds, abs=1e-6)


@pytest.mark.parametrize(("label", "hides"), [("bin", True), ("car", True), ("handbag", False), ("cat", False)])
def test_which_new_boxes_explain_a_blob(label: str, hides: bool) -> None:
    """A new (not furniture) confident box over the blob: a bin or a car explains it (not clutter), a bag
    read as ``handbag`` or ``cat`` by COCO does not."""
    empty, bag = floor(), with_box(floor(), 100, 60, 40, 50)
    frames = [bag if i >= 10 else empty for i in range(30)]
    box = {"coco": Detections.from_arrays([[95, 55, 145, 115]], [0.7], [0], {0: label})}
    dets = [box if i >= 10 else {} for i in range(30)]
    events = run_rule(ClutterRule("cam1", ZONE, RULE), frames, dets)
    assert bool(events) is not hides


def test_site_yaml_knobs_reach_the_rule() -> None:
    """`hazards.clutter` knobs of the static-object path reach the ClutterRule the analyzer builds."""
    from pipeline.analyze.analyzer import CameraAnalyzer
    from pipeline.config import SiteConfig

    grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
        {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
    cam = {"id": "cam1", "url": "x.mp4", "grid": "G",
           "zones": [{"id": "hall", "kind": "corridor", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]}
    knobs = {"min_object_px": 25, "work_width": 480, "change_threshold": 22.0, "learn_frames": 3,
             "hold_seconds": 90.0, "removal_score": 0.3, "furniture": False, "not_clutter": ["person", "bin"]}
    cfg = SiteConfig.model_validate({"grid": grid, "cameras": [cam], "hazards": {"clutter": knobs}})
    (rule,) = [r for r in CameraAnalyzer(cfg, cfg.cameras[0]).rules if isinstance(r, ClutterRule)]
    sod = rule.change
    assert (sod.min_object_px, sod.work_width, sod.threshold, sod.learn_frames, sod.hold_seconds,
            sod.removal_score) == (25, 480, 22.0, 3, 90.0, 0.3)
    assert rule.use_furniture is False and rule.not_clutter == {"person", "bin"}


def test_rule_state_shows_the_static_objects() -> None:
    """The rule's JSON state (replay, debug view) carries the detector's blobs, ages and scores."""
    import json

    empty, bag = floor(), with_box(floor(), 100, 60, 40, 50)
    rule = ClutterRule("cam1", ZONE, RULE)
    run_rule(rule, [bag if i >= 10 else empty for i in range(15)], [bin_box()] * 15)
    state = json.loads(json.dumps(rule.state()))["static_objects"]
    assert state["ready"] is True and state["furniture_boxes"] == 1
    (blob,) = state["blobs"]
    assert blob["age_s"] == 4.0 and blob["object_score"] > 0.35
