"""Every rule keeps time in float64 Unix seconds: opened times, started times and dwells exact to ~1 ms.

Frames come every 0.5 s from ``T0 = 1_796_000_000.25`` (a 2026 wall clock): near 1.8e9 a float32 holds
only multiples of 128 s, so any float32 (or int) on a time path shows here as an error of seconds to
minutes, while small test timestamps (0, 1, 2 ...) would hide it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard, Incident, IncidentEvent
from pipeline.analyze.occupancy import OccupancyCounter
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.rules import FrameView, IncidentLifecycle, Observation, PresenceTimer
from pipeline.analyze.tracking import IoUTracker
from pipeline.config import HazardRule, SiteConfig, ZoneConfig
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame

from .test_fire import RULE as FIRE_RULE
from .test_fire import flickering

T0 = 1_796_000_000.25
STEP = 0.5
MS = 1e-3
WHOLE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def at(k: int) -> float:
    """Time of frame ``k``."""
    return T0 + k * STEP


def test_float32_really_is_a_trap_here() -> None:
    """The premise: float32 cannot tell these frames apart; float64 can."""
    assert np.float32(at(0)) == np.float32(at(1)) == np.float32(at(100))
    assert len({at(k) for k in range(200)}) == 200


def test_tracker_stationary_since_and_missing_limit() -> None:
    t = IoUTracker(match_iou=0.3, max_missing_seconds=10.0)
    box = [[100, 100, 200, 180]]
    for k in range(3, 7):
        (tr,) = t.update(at(k), box, [0.9], ["car"])
    assert tr.first_seen == at(3) and tr.last_seen == at(6) and tr.stationary_since == at(3)
    assert tr.stationary_seconds(at(6)) == pytest.approx(1.5, abs=MS)
    # missed for exactly max_missing_seconds: kept; 0.5 s more: dropped
    assert [x.id for x in t.update(at(6 + 20), [], [], [])] == [tr.id]
    assert t.update(at(6 + 21), [], [], []) == [] and [x.id for x in t.removed] == [tr.id]
    # a move re-anchors at the exact frame time
    t2 = IoUTracker(match_iou=0.1, max_missing_seconds=10.0, stationary_tolerance=0.1)
    t2.update(at(0), box, [0.9], ["car"])
    (moved,) = t2.update(at(1), [[130, 100, 230, 180]], [0.9], ["car"])
    assert moved.stationary_since == at(1)


def test_presence_timer_and_lifecycle() -> None:
    p = PresenceTimer(grace_seconds=2.0)
    assert p.update(at(1), True) == at(1)
    assert p.update(at(5), False) == at(1)          # gap of exactly 2.0 s: still present
    assert p.update(at(6), False) is None           # 2.5 s: gone
    lc = IncidentLifecycle("c", "z", Hazard.PARKING,
                           HazardRule(clear_seconds=3.0, update_interval_seconds=1e9, cooldown_seconds=0))
    obs = Observation(started_at=at(1), confidence=0.9)
    opened = lc.step(at(3), obs)
    assert opened is not None and opened.started_at == at(1) and opened.ts == at(3)
    assert opened.id == f"c-z-parking-{int(at(1))}-1"
    events = [lc.step(at(k), None) for k in range(4, 12)]
    (cleared,) = [e for e in events if e is not None]
    assert cleared.ts == at(9)                      # last present at(3) + clear_seconds 3.0
    assert cleared.details["duration_seconds"] == pytest.approx(at(9) - at(1), abs=MS)


def test_parking_opens_at_the_exact_dwell() -> None:
    zone = ZoneConfig(id="lane", kind="no_parking", polygon=WHOLE)
    rule = NoParkingRule("cam1", zone, HazardRule(classes=["car"], dwell_seconds=10.0, clear_seconds=30))
    car = Detections.from_arrays([[40, 60, 60, 80]], [0.9], [2], {2: "car"})
    events: list[Incident] = []
    for k in range(40):
        d = car if k >= 3 else Detections.empty()
        events += rule.judge(FrameView(at(k), 100, 100, None, {"coco": d}))
    (opened,) = events
    assert opened.event is IncidentEvent.OPENED
    assert opened.started_at == at(3)
    assert opened.ts == at(3 + 20)                 # 10.0 s = 20 frames of 0.5 s, not one frame late
    assert opened.details["dwell_seconds"] == pytest.approx(10.0, abs=MS)
    assert opened.id == f"cam1-lane-parking-{int(at(3))}-1"


def test_fire_opens_on_the_confirming_frame_and_starts_at_the_first_flame() -> None:
    rule = FireRule("cam1", None, FIRE_RULE)
    dark = np.full((480, 640, 3), 30, np.uint8)
    frames = [(dark, {"fire": Detections.empty()})] * 2 + flickering(8)
    events: list[Incident] = []
    for k, (img, dets) in enumerate(frames):
        events += rule.judge(FrameView(at(k), 640, 480, img, dets))
    (opened,) = events
    # frame 2: a new track has no flicker yet; frames 3, 4, 5 count -> 3 of 5 on frame 5
    assert opened.ts == at(5)
    assert opened.started_at == at(3)
    state = rule.state()
    assert state["first_seen"] == at(3) and state["presence"]["since"] == at(5)  # type: ignore[index]


def test_fire_dwell_counts_from_confirmation() -> None:
    rule = FireRule("cam1", None, FIRE_RULE.model_copy(update={"dwell_seconds": 1.5}))
    events: list[Incident] = []
    for k, (img, dets) in enumerate(flickering(12)):
        events += rule.judge(FrameView(at(k), 640, 480, img, dets))
    (opened,) = events
    assert opened.ts == at(3 + 3)                  # confirmed at frame 3, + 1.5 s
    assert opened.started_at == at(1)


def test_occupancy_reports_the_frame_time() -> None:
    zone = ZoneConfig(id="bays", kind="parking", capacity=3, polygon=WHOLE)
    c = OccupancyCounter("cam1", zone, window=3)
    car = Detections.from_arrays([[0, 0, 10, 10]], [0.9], [2], {2: "car"})
    for k in range(5):
        c.update(at(k), car, 100, 100)
    assert c.state() == {"used": 1, "free": 2, "capacity": 3, "ts": at(4)}


@pytest.mark.parametrize(("step", "interval", "every"), [(STEP, 1.5, 3), (1 / 3, 1.0, 3), (0.1, 1.0, 10)])
def test_analyzer_intervals_at_unix_time(step: float, interval: float, every: int) -> None:
    """A hazard with ``analysis_interval_seconds`` is judged on exactly every ``every``-th frame, also when
    the frame step is not a binary fraction (1/3 s, 0.1 s) and the times are accumulated like pts."""
    grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
        {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
    site = SiteConfig.model_validate({
        "grid": grid, "hazards": {"parking": {"analysis_interval_seconds": interval, "dwell_seconds": 0}},
        "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [
            {"id": "lane", "kind": "no_parking", "polygon": WHOLE}]}]})
    a = CameraAnalyzer(site, site.cameras[0])
    judged, times, ts = [], [], T0
    for k in range(4 * every):
        a.analyze(Frame("cam1", np.zeros((48, 64, 3), np.uint8), ts=ts, pts=ts - T0, seq=k, keyframe=True), {})
        judged.append(a.last_judged[0])
        times.append(ts)
        ts += step
    assert sorted(set(judged)) == [times[k] for k in range(0, 4 * every, every)]
