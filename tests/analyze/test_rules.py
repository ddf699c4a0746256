"""Shared rule machinery: the one rule protocol, frame view, k-of-n, presence timer, incident lifecycle."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.clutter import ClutterRule
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard, IncidentEvent
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.poster import PosterRule
from pipeline.analyze.rules import (
    FrameView,
    IncidentLifecycle,
    KofN,
    Observation,
    PresenceTimer,
    Rule,
    normalised_box,
)
from pipeline.config import HazardRule, ZoneConfig
from pipeline.detect.ocr import TextDetector


@pytest.mark.parametrize(("k", "n", "seen", "expected"), [
    (1, 1, [1, 0, 1], [1, 0, 1]),
    (3, 5, [1, 1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0]),
    (2, 2, [1, 0, 1, 1], [0, 0, 0, 1]),
])
def test_k_of_n(k: int, n: int, seen: list[int], expected: list[int]) -> None:
    c = KofN(k, n)
    assert [int(c.push(bool(s))) for s in seen] == expected


def test_k_of_n_rejects_bad_args() -> None:
    with pytest.raises(ValueError):
        KofN(3, 2)


def test_presence_timer_grace() -> None:
    t = PresenceTimer(grace_seconds=5)
    assert t.update(0, True) == 0
    assert t.update(4, False) == 0 and t.seconds(4) == 4
    assert t.update(5, True) == 0
    assert t.update(11, False) is None and t.seconds(11) == 0.0
    assert t.update(12, True) == 12


def lifecycle(**kw: float) -> IncidentLifecycle:
    params = {"clear_seconds": 10.0, "update_interval_seconds": 5.0, "cooldown_seconds": 20.0, **kw}
    return IncidentLifecycle("cam1", None, Hazard.FIRE, HazardRule(severity=5, **params))  # type: ignore[arg-type]


def run(lc: IncidentLifecycle, present: list[int], t0: float = 0.0) -> list[tuple[float, str]]:
    obs = Observation(started_at=t0, confidence=0.8, details={"k": 1})
    out = []
    for i, p in enumerate(present):
        e = lc.step(t0 + i, obs if p else None)
        if e is not None:
            out.append((e.ts, e.event.value))
    return out


def test_lifecycle_open_update_clear_cooldown() -> None:
    lc = lifecycle()
    events = run(lc, [1] * 12 + [0] * 12 + [1] * 30)
    assert events == [(0, "opened"), (5, "updated"), (10, "updated"),
                      (21, "cleared"),   # last present t=11, clear_seconds 10
                      (41, "opened"),    # cooldown until 21 + 20
                      (46, "updated"), (51, "updated")]
    assert lc.count == 2


def test_lifecycle_ids_are_stable_and_unique() -> None:
    lc = lifecycle(cooldown_seconds=0)
    obs = Observation(started_at=1_700_000_123.9, confidence=0.8)
    ids = []
    for ts, present in [(1_700_000_124.0, True), (1_700_000_130.0, True), (1_700_000_150.0, False),
                        (1_700_000_151.0, True)]:
        e = lc.step(ts, obs if present else None)
        assert e is not None
        ids.append((e.event, e.id, e.zone_id, e.severity))
    assert ids[0] == (IncidentEvent.OPENED, "cam1-frame-fire-1700000123-1", None, 5)
    assert ids[1][1] == ids[2][1] == ids[0][1] and ids[2][0] is IncidentEvent.CLEARED
    assert ids[3][1] == "cam1-frame-fire-1700000123-2"  # same started_at in the obs, counter tells apart


def test_lifecycle_k_of_n_gates_presence() -> None:
    lc = lifecycle(confirm_k=2, confirm_n=3)
    assert run(lc, [1, 0, 0, 1, 0, 1]) == [(5, "opened")]


def test_normalised_box_clips() -> None:
    b = normalised_box([-10, 5, 210, 50], 200, 100, "car", 0.91234)
    assert (b.x1, b.y1, b.x2, b.y2, b.confidence) == (0.0, 0.05, 1.0, 0.5, 0.9123)


def test_every_rule_satisfies_the_one_protocol() -> None:
    zone = ZoneConfig(id="z", kind="corridor", polygon=[[0, 0], [1, 0], [1, 1]])
    rules = [NoParkingRule("c", zone, HazardRule()), FireRule("c", None, HazardRule(detector="fire")),
             FireRule("c", zone, HazardRule(detector="fire")), ClutterRule("c", zone, HazardRule()),
             PosterRule("c", zone, HazardRule(detector="ocr"), TextDetector())]
    for r in rules:
        assert isinstance(r, Rule), type(r).__name__
        assert r.interval_seconds == r.rule.analysis_interval_seconds
        assert r.judge(FrameView(1_796_000_000.25, 64, 48)) == []  # no image, no detections: nothing
        assert isinstance(r.state(), dict)


def test_frame_view_refuses_float32_time() -> None:
    with pytest.raises(TypeError, match="float64"):
        FrameView(np.float32(1_796_000_000.25), 64, 48)
    v = FrameView(np.float64(1_796_000_000.25), 64, 48)
    assert type(v.ts) is float and v.ts == 1_796_000_000.25
