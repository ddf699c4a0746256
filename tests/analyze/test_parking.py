"""NoParkingRule on scripted detection sequences (tests/analyze/data, made by make_sequences.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.analyze.incident import Hazard, IncidentEvent
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.zones import ZoneGeometry
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections

from .replay import frames, load, of, replay, view

OPENED, UPDATED, CLEARED = IncidentEvent.OPENED, IncidentEvent.UPDATED, IncidentEvent.CLEARED
T0 = 1_700_000_000.0  # replay at a wall-clock epoch, as the worker would


def make_rule(data: dict[str, Any], **kw: Any) -> NoParkingRule:
    params: dict[str, Any] = {"classes": ["car", "truck", "bus", "motorcycle"], "min_confidence": 0.35,
                              "dwell_seconds": 60, "clear_seconds": 30, "update_interval_seconds": 60,
                              "cooldown_seconds": 300, "severity": 2}
    params.update(kw)
    zone = ZoneConfig(id="gate", kind="no_parking", polygon=data["zone"])
    return NoParkingRule("cam1", zone, HazardRule(**params))


def test_park_with_occlusion_gap_one_incident() -> None:
    data = load("park_occlusion.json")
    ev = replay(make_rule(data), data, T0)
    assert [e.event for e in ev] == [OPENED, UPDATED, UPDATED, CLEARED]
    opened, cleared = ev[0], ev[-1]
    # At rest from t=10, dwell 60 s -> opens on the frame at t=70 (the 4-frame gap at 100..103 and the
    # weak detection at 150 neither reset the timer nor clear or reopen).
    assert opened.ts == T0 + 70 and opened.frame_ts == opened.ts
    assert opened.started_at == T0 + 10
    assert opened.id == f"cam1-gate-parking-{int(T0 + 10)}-1"
    assert {e.id for e in ev} == {opened.id}
    assert opened.hazard is Hazard.PARKING and opened.zone_id == "gate" and opened.camera_id == "cam1"
    assert opened.severity == 2
    assert opened.details["dwell_seconds"] == 60.0
    assert opened.details["vehicle"] == "car" and opened.details["vehicles"] == 1
    assert len(opened.boxes) == 1
    b = opened.boxes[0]
    assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1
    assert b.x1 == pytest.approx(560 / 1280, abs=0.01) and b.y2 == pytest.approx(560 / 720, abs=0.01)
    assert b.label == "car" and 0.6 <= b.confidence <= 0.9
    # Updates at most every 60 s: t=130, t=190.
    assert [e.ts - T0 for e in of(ev, UPDATED)] == [130.0, 190.0]
    assert [e.details["dwell_seconds"] for e in of(ev, UPDATED)] == [120.0, 180.0]
    # Last at rest t=210, drives off 211..220 (moving: not parked) -> cleared at 210 + 30.
    assert cleared.ts == T0 + 240
    assert cleared.details["duration_seconds"] == 230.0
    assert len(cleared.boxes) == 1


@pytest.mark.parametrize("interval", [0, 30, 60, 100])
def test_updates_are_rate_limited(interval: float) -> None:
    data = load("park_occlusion.json")
    ev = replay(make_rule(data, update_interval_seconds=interval), data)
    times = [e.ts for e in ev if e.event in (OPENED, UPDATED)]
    assert len(of(ev, OPENED)) == 1 and len(of(ev, CLEARED)) == 1
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= interval for g in gaps)
    if interval == 0:  # every parked frame after opening, except the missed ones
        assert len(of(ev, UPDATED)) == 210 - 70 - 5


def test_occlusion_longer_than_clear_seconds_clears() -> None:
    """Sanity check that the gap test can fail: with clear_seconds below the 4-frame gap it splits."""
    data = load("park_occlusion.json")
    ev = replay(make_rule(data, clear_seconds=3, cooldown_seconds=0), data)
    assert len(of(ev, OPENED)) == 2
    assert len({e.id for e in ev}) == 2


def test_drive_through_and_short_stop_nothing() -> None:
    data = load("drive_through.json")
    assert replay(make_rule(data, dwell_seconds=10), data) == []
    # The 6 s stop does count once dwell is shorter than it.
    assert len(of(replay(make_rule(data, dwell_seconds=5), data), OPENED)) == 1


def test_parked_outside_zone_nothing() -> None:
    data = load("parked_outside.json")
    rule = make_rule(data)
    _, det = next(frames(data))
    # The car's box does overlap the zone a lot; only its anchor (wheels) is outside.
    g = ZoneGeometry(rule.zone, data["width"], data["height"])
    assert g.area_share(det.xyxy[0]) > 0.5
    assert replay(rule, data) == []


def test_parked_outside_counts_with_a_taller_zone() -> None:
    data = load("parked_outside.json")
    data = {**data, "zone": [[0.3, 0.55], [0.7, 0.55], [0.7, 1.0], [0.3, 1.0]]}
    assert len(of(replay(make_rule(data), data), OPENED)) == 1


def test_two_cars_one_zone_incident() -> None:
    data = load("two_cars.json")
    ev = replay(make_rule(data), data)
    assert [e.event for e in ev].count(OPENED) == 1
    assert [e.event for e in ev].count(CLEARED) == 1
    assert len({e.id for e in ev}) == 1
    opened = ev[0]
    assert opened.ts == 65.0 and opened.details["vehicles"] == 1  # A parked at 5; B not yet 60 s
    both = [e for e in of(ev, UPDATED) if e.details["vehicles"] == 2]
    assert both and all(len(e.boxes) == 2 for e in both)
    assert both[0].details["dwell_seconds"] == both[0].ts - 5  # longest-parked vehicle's dwell
    # A leaves after 150: the incident goes on for B; B leaves after 250 -> cleared at 280.
    assert of(ev, UPDATED)[-1].details["vehicles"] == 1
    assert ev[-1].event is CLEARED and ev[-1].ts == 280.0


@pytest.mark.parametrize(("cooldown", "opened_at"), [(300, [30.0]), (0, [30.0, 170.0]), (200, [30.0, 320.0])])
def test_cooldown_prevents_immediate_reopen(cooldown: float, opened_at: list[float]) -> None:
    data = load("repark.json")
    ev = replay(make_rule(data, dwell_seconds=30, clear_seconds=20, cooldown_seconds=cooldown), data)
    assert [e.ts for e in of(ev, OPENED)] == opened_at
    assert of(ev, CLEARED)[0].ts == 120.0
    ids = [e.id for e in of(ev, OPENED)]
    assert len(set(ids)) == len(ids)
    if len(ids) == 2:
        assert ids[1].endswith("-2") and ids[1] == "cam1-gate-parking-140-2"


@pytest.mark.parametrize(("classes", "min_conf", "label", "conf", "alerts"), [
    (["car"], 0.35, "car", 0.9, True),
    (["car"], 0.35, "car", 0.3, False),        # below min_confidence
    (["car"], 0.35, "person", 0.9, False),     # not a vehicle class
    ([], 0.35, "bus", 0.9, True),              # empty classes -> default vehicles
    (["bicycle"], 0.2, "bicycle", 0.25, True),
])
def test_classes_and_confidence(classes: list[str], min_conf: float, label: str, conf: float,
                                alerts: bool) -> None:
    zone = ZoneConfig(id="z", kind="no_parking", polygon=[[0, 0], [1, 0], [1, 1], [0, 1]])
    rule = NoParkingRule("c", zone, HazardRule(classes=classes, min_confidence=min_conf, dwell_seconds=5))
    det = Detections.from_arrays([[10, 10, 50, 40]], [conf], [7], {7: label})
    ev = [e for t in range(10) for e in rule.judge(view(float(t), det, 100, 100))]
    assert bool(of(ev, OPENED)) is alerts


def test_confirm_k_of_n_delays_opening() -> None:
    zone = ZoneConfig(id="z", kind="no_parking", polygon=[[0, 0], [1, 0], [1, 1], [0, 1]])
    det = Detections.from_arrays([[10, 10, 50, 40]], [0.9], [2], {2: "car"})
    rule = NoParkingRule("c", zone, HazardRule(classes=["car"], dwell_seconds=0, confirm_k=3, confirm_n=5))
    first = [t for t in range(10) if rule.judge(view(float(t), det, 100, 100))]
    assert first[0] == 2
