"""Class-aware NMS and vectorised decoding of raw YOLO output."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.detect.nms import batched_nms, box_iou, decode_yolo, nms

A = [10.0, 10.0, 110.0, 110.0]
A_SHIFTED = [15.0, 12.0, 115.0, 112.0]  # IoU with A ~ 0.87
FAR = [300.0, 300.0, 350.0, 350.0]


def test_iou_basic() -> None:
    iou = box_iou(np.array(A), np.array([A, A_SHIFTED, FAR]))
    assert iou[0] == pytest.approx(1.0) and 0.8 < iou[1] < 0.9 and iou[2] == 0.0


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ([0, 0, 0], [0, 2]),  # same class: the overlapping lower-score box goes
        ([0, 1, 0], [0, 1, 2]),  # different classes: both overlapping boxes stay
        ([2, 2, 5], [0, 2]),
    ],
)
def test_batched_nms_is_class_aware(classes: list[int], expected: list[int]) -> None:
    boxes = np.array([A, A_SHIFTED, FAR], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep = batched_nms(boxes, scores, np.array(classes), 0.45)
    assert sorted(keep.tolist()) == expected


def test_threshold_is_strict_greater() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    assert nms(boxes, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.49).tolist() == [0]


def test_keeps_highest_first_and_handles_empty() -> None:
    boxes = np.array([A, A_SHIFTED], np.float32)
    assert nms(boxes, np.array([0.3, 0.6]), 0.45).tolist() == [1]
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_max_keep_equals_truncating_full_nms() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (400, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (400, 2))], axis=1)
    scores = rng.uniform(0, 1, 400)
    cls = rng.integers(0, 3, 400)
    full = batched_nms(boxes, scores, cls, 0.3)
    assert len(full) > 50
    np.testing.assert_array_equal(batched_nms(boxes, scores, cls, 0.3, max_keep=50), full[:50])


def _raw(boxes_cxcywh: list[list[float]], scores: dict[tuple[int, int], float], nc: int = 3) -> np.ndarray:
    """Build a (4 + nc, anchors) raw output with the given boxes and (anchor, class) scores."""
    pred = np.zeros((4 + nc, len(boxes_cxcywh)), np.float32)
    pred[:4] = np.array(boxes_cxcywh, np.float32).T
    for (a, c), s in scores.items():
        pred[4 + c, a] = s
    return pred


def test_decode_best_class_threshold_and_nms() -> None:
    pred = _raw(
        [[60, 60, 100, 100], [62, 61, 100, 100], [60, 60, 100, 100], [400, 400, 20, 20], [500, 500, 8, 8]],
        {(0, 1): 0.9, (0, 2): 0.5, (1, 1): 0.8, (2, 2): 0.7, (3, 0): 0.25, (4, 0): 0.26},
    )
    xyxy, scores, cls = decode_yolo(pred, conf_threshold=0.25, iou_threshold=0.45)
    # anchor 1 is suppressed by anchor 0 (same class 1); anchor 2 (class 2) overlaps but stays;
    # anchor 3 scores exactly the threshold and is dropped (strict >)
    assert cls.tolist() == [1, 2, 0]
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.26])
    np.testing.assert_allclose(xyxy[0], [10, 10, 110, 110])
    np.testing.assert_allclose(xyxy[2], [496, 496, 504, 504])


def test_decode_max_det_and_no_candidates() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    centers = rng.uniform(0, 10000, (n, 2))
    pred = _raw([[x, y, 5, 5] for x, y in centers], {(i, 0): 0.5 + i / 1e4 for i in range(n)})
    xyxy, scores, _ = decode_yolo(pred, 0.25, 0.45, max_det=300)
    assert len(xyxy) == 300 and np.all(np.diff(scores) <= 0)
    assert len(decode_yolo(pred, 0.99, 0.45)[0]) == 0


def test_decode_is_fast_on_a_full_head() -> None:
    """8400 anchors x 80 classes with every anchor a candidate: vectorised, well under a second."""
    rng = np.random.default_rng(2)
    pred = np.zeros((84, 8400), np.float32)
    pred[:2] = rng.uniform(0, 640, (2, 8400))
    pred[2:4] = rng.uniform(5, 60, (2, 8400))
    pred[4:] = rng.uniform(0, 0.3, (80, 8400))
    pred[4, :3000] = 0.6
    t = time.perf_counter()
    xyxy, _, _ = decode_yolo(pred, 0.25, 0.45)
    assert time.perf_counter() - t < 0.5  # ~30 ms measured on one core
    assert 0 < len(xyxy) <= 300
