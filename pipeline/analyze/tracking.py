"""A small IoU tracker for analysed frames (numpy only, greedy matching).

Frames reach the analyzer sparsely (key frames, ~0.5-2 fps), so motion models buy little; what matters
is that a parked object keeps one identity, and one timer, through missed detections and occlusions.
Tracks therefore survive ``max_missing_seconds`` without a match, and each track knows since when it
has stood still (``stationary_since``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy; returns (N, M).

    Example:
        >>> iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10]])).round(3)
        array([[1.   , 0.333]])
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.asarray(out, dtype=np.float64)


def max_cover(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per box of ``boxes`` (N, 4): the largest share of its area covered by one box of ``others`` (M, 4).

    Used to ignore a detection that a person box hides (a dark coat read as a bin, a red shirt read as fire).

    Example:
        >>> max_cover(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 5, 10], [0, 0, 10, 2]]))
        array([0.5])
    """
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(others, dtype=np.float64).reshape(1, -1, 4)
    if not a.shape[0] or not b.shape[1]:
        return np.zeros(a.shape[0])
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area = np.maximum((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), 1e-9)
    return np.asarray((iw * ih / area).max(axis=1), dtype=np.float64)


@dataclass
class Track:
    """One object followed across analysed frames.

    Attributes:
        id: tracker-unique number, counting from 1.
        box: last matched box (x1, y1, x2, y2) in pixels.
        confidence: confidence of the last match.
        best_confidence: highest confidence seen.
        first_seen: ts of the first detection.
        last_seen: ts of the last matched detection.
        hits: number of frames with a match.
        labels: how often each class label was matched (label history).
        anchor: centre (x, y) of the box when the track last came to rest (re-anchored on motion).
        anchor_size: (w, h) of the box at the anchor.
        stationary_since: ts since when the centre has stayed near ``anchor``.
    """

    id: int
    box: np.ndarray
    confidence: float
    first_seen: float
    last_seen: float
    best_confidence: float = 0.0
    hits: int = 1
    labels: Counter[str] = field(default_factory=Counter)
    anchor: tuple[float, float] = (0.0, 0.0)
    anchor_size: tuple[float, float] = (0.0, 0.0)
    stationary_since: float = 0.0

    @property
    def label(self) -> str:
        """The most frequent label so far (detectors flip car/truck on the same vehicle)."""
        return self.labels.most_common(1)[0][0] if self.labels else ""

    @property
    def centre(self) -> tuple[float, float]:
        return (float(self.box[0] + self.box[2]) / 2.0, float(self.box[1] + self.box[3]) / 2.0)

    @property
    def bottom_centre(self) -> tuple[float, float]:
        """Where a vehicle's wheels touch the ground, roughly."""
        return (float(self.box[0] + self.box[2]) / 2.0, float(self.box[3]))

    def seen_at(self, ts: float) -> bool:
        """Whether the track was matched in the frame at ``ts``."""
        return self.last_seen == ts

    def stationary_seconds(self, ts: float) -> float:
        """Seconds the track has stood still as of ``ts``."""
        return max(0.0, ts - self.stationary_since)

    def state(self) -> dict[str, object]:
        """The track as a JSON-able dict (box in pixels, times in Unix seconds)."""
        return {"id": self.id, "label": self.label, "box": [round(float(v), 1) for v in self.box],
                "confidence": round(self.confidence, 4), "first_seen": self.first_seen,
                "last_seen": self.last_seen, "hits": self.hits, "stationary_since": self.stationary_since}


class IoUTracker:
    """Greedy IoU tracker with occlusion tolerance and stationarity.

    Args:
        match_iou: minimum IoU between a detection and a track's last box to continue the track.
        max_missing_seconds: a track not matched for longer than this is dropped.
        stationary_tolerance: the track counts as still while its centre stays within this fraction of
            the anchored box's width (x) and height (y) of the anchor; moving farther re-anchors it
            and restarts ``stationary_since``.

    Example:
        >>> t = IoUTracker(match_iou=0.3, max_missing_seconds=10)
        >>> _ = t.update(0.0, [[0, 0, 10, 10]], [0.9], ["car"])
        >>> _ = t.update(1.0, [], [], [])           # missed: the track survives
        >>> [tr] = t.update(2.0, [[1, 0, 11, 10]], [0.8], ["car"])
        >>> tr.id, tr.hits, tr.stationary_since, tr.best_confidence
        (1, 2, 0.0, 0.9)
        >>> t.update(20.0, [], [], [])              # gone for longer than max_missing_seconds
        []
    """

    def __init__(self, match_iou: float = 0.3, max_missing_seconds: float = 30.0,
                 stationary_tolerance: float = 0.15) -> None:
        self.match_iou = float(match_iou)
        self.max_missing_seconds = float(max_missing_seconds)
        self.stationary_tolerance = float(stationary_tolerance)
        self._tracks: list[Track] = []
        self._next_id = 1
        self.removed: list[Track] = []
        """Tracks dropped by the last :meth:`update`."""

    @property
    def tracks(self) -> list[Track]:
        """Live tracks (matched this frame or within ``max_missing_seconds``)."""
        return list(self._tracks)

    def update(self, ts: float, boxes: Sequence[Sequence[float]] | np.ndarray,
               confidences: Sequence[float] | np.ndarray, labels: Sequence[str]) -> list[Track]:
        """Feed one analysed frame's detections; returns the live tracks after the update.

        Args:
            ts: frame time in seconds (non-decreasing).
            boxes: (N, 4) xyxy pixel boxes.
            confidences: (N,) confidences.
            labels: (N,) class labels.
        """
        det = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
        if not (len(det) == len(conf) == len(labels)):
            raise ValueError("boxes, confidences and labels must have the same length")
        matched_det: set[int] = set()
        if self._tracks and len(det):
            ious = iou_matrix(np.stack([t.box for t in self._tracks]), det)
            order = np.argsort(-ious, axis=None, kind="stable")
            used_tracks: set[int] = set()
            for flat in order:
                ti, di = divmod(int(flat), len(det))
                if ious[ti, di] < self.match_iou:
                    break
                if ti in used_tracks or di in matched_det:
                    continue
                used_tracks.add(ti)
                matched_det.add(di)
                self._continue(self._tracks[ti], ts, det[di], float(conf[di]), labels[di])
        for di in range(len(det)):
            if di not in matched_det:
                self._start(ts, det[di], float(conf[di]), labels[di])
        limit = self.max_missing_seconds + 1e-3  # float slack, as rules.TIME_EPS
        self.removed = [t for t in self._tracks if ts - t.last_seen > limit]
        if self.removed:
            self._tracks = [t for t in self._tracks if ts - t.last_seen <= limit]
        return list(self._tracks)

    def _start(self, ts: float, box: np.ndarray, conf: float, label: str) -> None:
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        track = Track(id=self._next_id, box=box.copy(), confidence=conf, first_seen=ts, last_seen=ts,
                      best_confidence=conf, labels=Counter({label: 1}),
                      anchor=((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0), anchor_size=(w, h),
                      stationary_since=ts)
        self._next_id += 1
        self._tracks.append(track)

    def _continue(self, t: Track, ts: float, box: np.ndarray, conf: float, label: str) -> None:
        t.box = box.copy()
        t.confidence = conf
        t.best_confidence = max(t.best_confidence, conf)
        t.last_seen = ts
        t.hits += 1
        t.labels[label] += 1
        cx, cy = t.centre
        aw, ah = t.anchor_size
        tol = self.stationary_tolerance
        if abs(cx - t.anchor[0]) > tol * max(aw, 1.0) or abs(cy - t.anchor[1]) > tol * max(ah, 1.0):
            t.anchor = (cx, cy)
            t.anchor_size = (float(box[2] - box[0]), float(box[3] - box[1]))
            t.stationary_since = ts
