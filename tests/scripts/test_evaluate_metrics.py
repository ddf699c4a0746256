"""scripts/evaluate.py: the numpy AP / matching code, checked on hand-computed cases (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scripts_loader import load_script


@pytest.fixture(scope="module")
def ev():  # type: ignore[no-untyped-def]
    return load_script("evaluate")


GT = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]


def test_perfect_detections_give_ap_1(ev) -> None:  # type: ignore[no-untyped-def]
    s, t, n = ev.match([(GT[0].copy(), np.array([0.9, 0.8]))], GT, 0.5)
    assert n == 2 and t.all()
    assert ev.average_precision(s, t, n) == pytest.approx(1.0)


def test_false_positive_between_hits_101_point(ev) -> None:  # type: ignore[no-untyped-def]
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], float)
    s, t, n = ev.match([(boxes, np.array([0.9, 0.85, 0.8]))], GT, 0.5)
    # recall 0..0.5 at precision 1 (51 points), 0.51..1.0 at 2/3 (50 points)
    assert ev.average_precision(s, t, n) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_duplicate_is_a_false_positive_and_missed_box_caps_recall(ev) -> None:  # type: ignore[no-untyped-def]
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]], float)
    s, t, n = ev.match([(boxes, np.array([0.9, 0.8]))], GT, 0.5)
    assert t.tolist() == [True, False]
    assert ev.average_precision(s, t, n) == pytest.approx(51 / 101)


def test_iou_threshold_and_no_detections(ev) -> None:  # type: ignore[no-untyped-def]
    shifted = np.array([[3, 0, 13, 10]], float)  # IoU with [0,0,10,10] = 70/130 ~ 0.54
    assert ev.match([(shifted, np.array([0.9]))], [GT[0][:1]], 0.5)[1].tolist() == [True]
    assert ev.match([(shifted, np.array([0.9]))], [GT[0][:1]], 0.6)[1].tolist() == [False]
    assert ev.average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert np.isnan(ev.average_precision(np.zeros(0), np.zeros(0, bool), 0))


def test_precision_recall_at_threshold(ev) -> None:  # type: ignore[no-untyped-def]
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], float)
    m = ev.class_metrics([(boxes, np.array([0.9, 0.6, 0.2]))], GT, conf=0.5)
    assert (m["tp"], m["pred"], m["gt"]) == (1, 2, 2)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)


def test_yolo_labels_to_pixels(ev) -> None:  # type: ignore[no-untyped-def]
    g = ev.to_pixels(np.array([[1, 0.5, 0.5, 0.2, 0.4]]), 100, 50)
    assert g.tolist() == [[1, 40, 15, 60, 35]]


def test_tiles_cover_the_frame(ev) -> None:  # type: ignore[no-untyped-def]
    regs = ev.tile_regions(640, 480, 2)
    assert regs[0] == (0, 0, 640, 480) and len(regs) == 5
    assert max(r[2] for r in regs[1:]) == 640 and max(r[3] for r in regs[1:]) == 480


def test_operating_point_counts_frames_and_boxes_at_the_threshold(ev) -> None:  # type: ignore[no-untyped-def]
    """Three positive frames (two fire, one smoke) and a negative; threshold 0.5."""
    box = np.array([[0, 0, 10, 10]], float)
    far = np.array([[50, 50, 60, 60]], float)
    gt_fire = np.array([[0, 0, 0, 10, 10]], float)
    gt_smoke = np.array([[1, 0, 0, 10, 10]], float)
    per_img = [
        (box, np.array([0.9]), np.array([0]), gt_fire),      # fire found
        (far, np.array([0.7]), np.array([0]), gt_fire),      # alarmed, but the box misses the fire
        (box, np.array([0.6]), np.array([0]), gt_smoke),     # alarmed on the smoke frame, by a fire box
        (box, np.array([0.4]), np.array([0]), np.zeros((0, 5))),  # negative in the split: not a positive frame
    ]
    op = ev.operating_point(per_img, ["fire", "smoke"], 0.5, np.array([0.1, 0.2, 0.6, 0.0]))
    assert op["positive_frames"] == 3 and op["frames_alarmed"] == pytest.approx(1.0)
    assert op["false_alarm_rate"] == pytest.approx(0.25) and op["negative_frames"] == 4
    assert op["classes"]["fire"] == {"frames": 2, "frames_alarmed": 1.0, "box_recall": 0.5}
    # the smoke frame alarmed only through a fire box: no smoke found
    assert op["classes"]["smoke"] == {"frames": 1, "frames_alarmed": 0.0, "box_recall": 0.0}
    higher = ev.operating_point(per_img, ["fire", "smoke"], 0.8, np.array([0.1]))
    assert higher["frames_alarmed"] == pytest.approx(1 / 3) and higher["classes"]["fire"]["frames_alarmed"] == 0.5
