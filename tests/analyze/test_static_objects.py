"""The model-free static-object path with real Unix timestamps (~1.8e9), synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.clutter import ClutterRule, StationaryChange
from pipeline.analyze.incident import IncidentEvent
from pipeline.config import HazardRule, ZoneConfig

T0 = 1_800_000_037.25
"""A real Unix timestamp (2027) with a fraction: float32 holds only multiples of 128 s here."""


def test_float32_cannot_hold_unix_seconds() -> None:
    """Control: the trap the detector must not fall into."""
    assert float(np.float32(T0)) != T0 and float(np.float32(T0 + 5)) - float(np.float32(T0)) in (0.0, 128.0)


def test_stationary_change_ages_exact_at_unix_time() -> None:
    sc = StationaryChange(size=40, learn_frames=2)
    empty = np.full((40, 40, 3), 120, np.uint8)
    full = empty.copy()
    full[10:30, 10:30] = 20
    no = np.zeros((40, 40), bool)
    for i in range(2):
        assert sc.update(T0 + i, empty, no) is None
    ages = [sc.update(T0 + 2 + 0.5 * i, full, no) for i in range(12)]
    last = ages[-1]
    assert last is not None
    # static from the third frame with the object (the short-term model needs two frames to settle)
    assert float(last[20, 20]) == pytest.approx(4.5, abs=1e-6)
    assert np.isnan(last[2, 2])


def test_clutter_rule_unknown_object_dwell_at_unix_time() -> None:
    """An unknown object opens one incident exactly ``dwell_seconds`` after it appeared, with the start time."""
    dwell = 7.0
    rule = ClutterRule("cam1", ZoneConfig(id="z", kind="corridor", polygon=[[0, 0], [1, 0], [1, 1], [0, 1]]),
                       HazardRule(dwell_seconds=dwell, clear_seconds=60, update_interval_seconds=1e9))
    rng = np.random.default_rng(1)
    empty = rng.integers(90, 150, (120, 160, 3)).astype(np.uint8)
    full = empty.copy()
    full[40:90, 50:110] = (30, 40, 200)
    appear = T0 + 10
    events = []
    for i in range(40):
        ts = T0 + i
        events += rule.update_image(ts, full if ts >= appear else empty, {}, 160, 120)
    opened = [e for e in events if e.event is IncidentEvent.OPENED]
    assert len(opened) == 1
    e = opened[0]
    # the short-term model needs up to two frames to call the new pixels still
    assert appear + dwell <= e.ts <= appear + dwell + 2.0
    assert appear <= e.started_at <= appear + 2.0
    assert float(e.details["dwell_seconds"]) == pytest.approx(e.ts - e.started_at, abs=0.05)  # type: ignore[arg-type]
