"""Vectorised YOLO output decoding and class-aware non-maximum suppression in numpy.

Semantics follow ``ultralytics.utils.nms.non_max_suppression`` (best class per anchor, strict ``>``
confidence threshold, greedy NMS that suppresses boxes with IoU ``>`` threshold, at most ``max_nms``
candidates in and ``max_det`` boxes out).

Example:
    >>> import numpy as np
    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    >>> scores = np.array([0.9, 0.8, 0.7], np.float32)
    >>> batched_nms(boxes, scores, np.array([0, 0, 1]), 0.5).tolist()  # same class suppressed, other kept
    [0, 2]
"""

from __future__ import annotations

import numpy as np

MAX_DET = 300
MAX_NMS = 30000


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` (4,) against ``boxes`` (N, 4)."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Greedy NMS; returns kept indices in descending score order.

    Each step is vectorised over the remaining boxes, so the Python loop runs once per *kept* box, and stops
    after ``max_keep`` boxes (the greedy order makes that equal to truncating the full result).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    limit = len(order) if max_keep is None else max_keep
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        inter = (np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
                 * np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None))
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Boxes are shifted by ``class_id * (max coordinate + 1)`` so that classes cannot overlap, then one
    greedy NMS runs over all of them (computed in float64, so the shift loses no precision).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros((0,), np.int64)
    offset = np.asarray(class_ids, np.float64).reshape(-1, 1) * (float(np.abs(b).max()) + 1.0)
    return nms(b + offset, scores, iou_threshold, max_keep)


def decode_yolo(
    pred: np.ndarray,
    conf_threshold: float,
    iou_threshold: float,
    max_det: int = MAX_DET,
    max_nms: int = MAX_NMS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw YOLO output ``(4 + nc, anchors)`` into kept boxes.

    Args:
        pred: rows cx, cy, w, h (input pixels) then one score row per class.
        conf_threshold: keep anchors whose best class score is strictly greater.
        iou_threshold: class-aware NMS IoU threshold.
        max_det: most boxes returned.
        max_nms: most candidates (highest scores) fed to NMS.

    Returns:
        ``xyxy`` float32 (N, 4) in input pixels, ``scores`` float32 (N,), ``class_ids`` int64 (N,),
        sorted by descending score.
    """
    cls_scores = pred[4:]
    conf = cls_scores.max(axis=0)
    cand = np.flatnonzero(conf > conf_threshold)  # filter by score first: NMS sees few boxes
    if cand.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    scores = conf[cand]
    if cand.size > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        cand, scores = cand[top], scores[top]
    class_ids = cls_scores[:, cand].argmax(axis=0).astype(np.int64)
    cx, cy, w, h = pred[0, cand], pred[1, cand], pred[2, cand], pred[3, cand]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    keep = batched_nms(xyxy, scores, class_ids, iou_threshold, max_keep=max_det)
    return xyxy[keep], scores[keep].astype(np.float32), class_ids[keep]
