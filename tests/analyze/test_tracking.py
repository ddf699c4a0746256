"""IoU tracker: matching, survival across missed frames, stationarity."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.tracking import IoUTracker, iou_matrix


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]])
    m = iou_matrix(a, np.array([[0, 0, 10, 10], [5, 5, 15, 15]]))
    assert m.shape == (2, 2)
    assert m[0, 0] == pytest.approx(1.0)
    assert m[0, 1] == pytest.approx(25 / 175)
    assert m[1].tolist() == [0.0, 0.0]
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_matches_by_iou_and_keeps_identities() -> None:
    t = IoUTracker(match_iou=0.3)
    a, b = [0, 0, 100, 100], [300, 0, 400, 100]
    first = t.update(0.0, [a, b], [0.9, 0.8], ["car", "truck"])
    ids = {tr.label: tr.id for tr in first}
    # Next frame: listed in the other order, both moved a little.
    t.update(1.0, [[305, 0, 405, 100], [5, 0, 105, 100]], [0.7, 0.95], ["truck", "car"])
    by_id = {tr.id: tr for tr in t.tracks}
    assert len(by_id) == 2
    car = by_id[ids["car"]]
    assert car.hits == 2
    assert car.best_confidence == pytest.approx(0.95) and car.confidence == pytest.approx(0.95)
    assert car.box.tolist() == [5, 0, 105, 100]
    assert by_id[ids["truck"]].best_confidence == pytest.approx(0.8)


@pytest.mark.parametrize(("shift", "same_track"), [(10, True), (60, False)])
def test_match_iou_threshold(shift: int, same_track: bool) -> None:
    t = IoUTracker(match_iou=0.5)
    t.update(0.0, [[0, 0, 100, 100]], [0.9], ["car"])
    t.update(1.0, [[shift, 0, 100 + shift, 100]], [0.9], ["car"])  # IoU 0.82 / 0.25
    live = t.tracks
    assert len(live) == (1 if same_track else 2)
    assert max(tr.id for tr in live) == (1 if same_track else 2)


def test_greedy_prefers_best_overlap() -> None:
    t = IoUTracker(match_iou=0.1)
    t.update(0.0, [[0, 0, 100, 100]], [0.9], ["car"])
    t.update(1.0, [[50, 0, 150, 100], [2, 0, 102, 100]], [0.9, 0.6], ["car", "car"])
    first = next(tr for tr in t.tracks if tr.id == 1)
    assert first.box.tolist() == [2, 0, 102, 100]


@pytest.mark.parametrize(("gap", "survives"), [(4, True), (9, True), (12, False)])
def test_survives_missed_frames_for_max_missing_seconds(gap: int, survives: bool) -> None:
    t = IoUTracker(match_iou=0.3, max_missing_seconds=10)
    box = [[0, 0, 100, 60]]
    for ts in range(0, 5):
        t.update(float(ts), box, [0.9], ["car"])
    for ts in range(5, 5 + gap):
        t.update(float(ts), [], [], [])
    live = t.update(float(5 + gap), box, [0.9], ["car"])
    assert len(live) == 1
    assert (live[0].id == 1) is survives
    assert (live[0].first_seen == 0.0) is survives
    assert (live[0].stationary_since == 0.0) is survives


def test_removed_and_label_history() -> None:
    t = IoUTracker(max_missing_seconds=2)
    t.update(0.0, [[0, 0, 10, 10]], [0.9], ["car"])
    t.update(1.0, [[0, 0, 10, 10]], [0.9], ["truck"])
    t.update(2.0, [[0, 0, 10, 10]], [0.9], ["car"])
    assert t.tracks[0].label == "car" and t.tracks[0].labels["truck"] == 1
    assert t.update(5.0, [], [], []) == []
    assert [tr.id for tr in t.removed] == [1]
    with pytest.raises(ValueError):
        t.update(6.0, [[0, 0, 1, 1]], [], [])


def test_stationarity_anchor_and_reanchor() -> None:
    t = IoUTracker(match_iou=0.2, stationary_tolerance=0.15)
    x = 0.0
    for ts in range(0, 5):  # driving: 30 px per frame on a 100 px box -> re-anchors every frame
        x = 30.0 * ts
        t.update(float(ts), [[x, 0, x + 100, 50]], [0.9], ["car"])
    assert t.tracks[0].stationary_since == 4.0
    for ts in range(5, 20):  # parked, with +-3 px of detector jitter
        j = 3.0 if ts % 2 else -3.0
        t.update(float(ts), [[x + j, j, x + 100 + j, 50 - j]], [0.9], ["car"])
    tr = t.tracks[0]
    assert tr.id == 1
    assert tr.stationary_since == 4.0
    assert tr.stationary_seconds(19.0) == 15.0
    t.update(20.0, [[x + 40, 0, x + 140, 50]], [0.9], ["car"])  # moves off
    assert t.tracks[0].stationary_since == 20.0
