"""NoParkingRule replayed on detections of the real ONNX model on /work/shared/clips/car-detection.mp4.

Recorded by ``record_sequence.py`` (yolo11n-coco.onnx, 640 px letterbox, one frame per clip second):

* ``car_detection_real.json`` - the clip as it is. No car parks in it: three cars drive through
  (~5-8 s, ~15.5-19 s two at once, ~26-28 s), and yolo11n-coco mostly labels these top-down cars
  ``cell phone`` (0.4-0.95), ``car`` only when a car is half out of the frame at the bottom edge.
* ``car_detection_hold.json`` - the same, with the frame at clip time 27.6 s held for 60 s (noisy
  repeats, as if the car stopped there): a car at rest at the bottom edge, box ~[112, 346, 296, 429]
  px of 768x432, detected ``car`` 0.58-0.72 in every held frame. It rests from sequence ts 27.6 to 87.6,
  then drives out of view.
"""

from __future__ import annotations

import pytest

from pipeline.analyze.incident import IncidentEvent
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.zones import ZoneGeometry
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.detections import Detections

from .replay import frames, load, of, replay, view

# Drawn on the frame at 27.6 s: the bottom-left bay where the car stands (anchor ~(204, 429) px).
BAY = [[0.05, 0.7], [0.5, 0.7], [0.5, 1.0], [0.05, 1.0]]
# The lane all three cars cross in the unmodified clip.
LANE = [[0.05, 0.2], [0.65, 0.2], [0.65, 1.0], [0.05, 1.0]]


def rule(polygon: list[list[float]], classes: list[str] | None = None, dwell: float = 20) -> NoParkingRule:
    zone = ZoneConfig(id="bay", kind="no_parking", polygon=polygon)
    return NoParkingRule("lot", zone, HazardRule(
        classes=classes or ["car", "truck", "bus", "motorcycle"], min_confidence=0.35, dwell_seconds=dwell,
        clear_seconds=10, update_interval_seconds=15, cooldown_seconds=300, severity=2))


def test_recordings_are_real_model_output() -> None:
    for name in ("car_detection_real.json", "car_detection_hold.json"):
        data = load(name)
        assert data["source"] == "car-detection.mp4" and data["model"] == "yolo11n-coco.onnx"
        assert (data["width"], data["height"]) == (768, 432)
        assert any(len(f["xyxy"]) for f in data["frames"])


def test_held_car_opens_exactly_one_incident() -> None:
    data = load("car_detection_hold.json")
    r = rule(BAY)
    ev = replay(r, data)
    # The recording ends at ts 90.0 (clip 30.0 s); the looped clip starts with an empty lot (0-5 s).
    for ts in range(91, 101):
        ev += r.judge(view(float(ts), Detections.empty(), data["width"], data["height"]))
    opened = of(ev, IncidentEvent.OPENED)
    assert len(opened) == 1
    o = opened[0]
    assert o.started_at == pytest.approx(27.6) and o.ts == pytest.approx(47.6)  # at rest 27.6 + dwell 20
    assert o.details["vehicle"] == "car" and o.details["vehicles"] == 1
    assert o.boxes[0].y2 == pytest.approx(1.0, abs=0.01)
    assert [e.ts for e in of(ev, IncidentEvent.UPDATED)] == pytest.approx([62.6, 77.6])
    # The car leaves view after the hold (gone at ts 88.0 = clip 28.0): cleared on the first analysed
    # frame 10 s (clear_seconds) after it was last seen at 87.6.
    [cleared] = of(ev, IncidentEvent.CLEARED)
    assert cleared.ts == 98.0
    assert {e.id for e in ev} == {o.id}


def test_bay_zone_contains_the_held_car_anchor_only() -> None:
    data = load("car_detection_hold.json")
    g = ZoneGeometry(ZoneConfig(id="bay", kind="no_parking", polygon=BAY), data["width"], data["height"])
    held = [d for ts, d in frames(data) if 30 <= ts <= 80]
    assert held and all(len(d.with_classes({"car"})) == 1 for d in held)
    x1, _, x2, y2 = held[0].with_classes({"car"}).xyxy[0]
    assert g.contains((x1 + x2) / 2, y2)


@pytest.mark.parametrize("polygon", [BAY, [[0.55, 0.5], [0.95, 0.5], [0.95, 1.0], [0.55, 1.0]]])
def test_held_car_outside_other_zone(polygon: list[list[float]]) -> None:
    ev = replay(rule(polygon), load("car_detection_hold.json"))
    assert len(of(ev, IncidentEvent.OPENED)) == (1 if polygon is BAY else 0)


@pytest.mark.parametrize("classes", [None, ["car", "cell phone"]])
def test_unmodified_clip_cars_only_drive_through(classes: list[str] | None) -> None:
    # Even counting the model's "cell phone" label for top-down cars, nothing stands still for 5 s.
    assert replay(rule(LANE, classes, dwell=5), load("car_detection_real.json")) == []
