"""Scene furniture: detector boxes that stood in a zone while its background was learned."""

from __future__ import annotations

import numpy as np

from pipeline.analyze.tracking import iou_matrix


class FurnitureMemory:
    """Detector boxes that stood in the zone while its background was learned (cabinets, bins, a table).

    Such a box is scene furniture: it was there before anything was left, so it can never explain a new
    static blob (a bag set down in front of a cabinet that the clutter model reads as a ``bin``).

    Args:
        match_iou: a box is the same furniture as a learned one at this IoU or more.
        min_frames: learning frames a box must be seen on to count (a car driving through does not);
            capped at the number of learning frames seen.

    Example:
        >>> mem = FurnitureMemory()
        >>> mem.learn(np.array([[10, 10, 50, 90]])); mem.learn(np.array([[11, 10, 51, 91], [200, 0, 260, 40]]))
        >>> mem.is_furniture(np.array([[12, 11, 50, 90], [200, 0, 260, 40]])).tolist()
        [True, False]
    """

    def __init__(self, match_iou: float = 0.5, min_frames: int = 2) -> None:
        self.match_iou = float(match_iou)
        self.min_frames = int(min_frames)
        self.reset()

    def reset(self) -> None:
        self._boxes = np.zeros((0, 4))
        self._counts = np.zeros(0, np.int64)
        self._frames = 0

    def learn(self, xyxy: np.ndarray) -> None:
        """Record the (non-person) detector boxes of one learning frame."""
        self._frames += 1
        seen = np.zeros(len(self._boxes), bool)
        for box in np.asarray(xyxy, np.float64).reshape(-1, 4):
            ious = iou_matrix(box[None], self._boxes)[0] if len(self._boxes) else np.zeros(0)
            ious[seen] = 0.0  # one match per learned box per frame
            j = int(np.argmax(ious)) if ious.size else -1
            if j >= 0 and ious[j] >= self.match_iou:
                seen[j] = True
                self._counts[j] += 1
            else:
                self._boxes = np.vstack([self._boxes, box[None]])
                self._counts = np.append(self._counts, 1)
                seen = np.append(seen, True)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) the furniture boxes (pixels)."""
        out: np.ndarray = self._boxes[self._counts >= max(1, min(self.min_frames, self._frames))]
        return out

    def is_furniture(self, xyxy: np.ndarray) -> np.ndarray:
        """bool per box of ``xyxy`` (N, 4): it is a learned furniture box."""
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        furniture = self.boxes
        if not len(xyxy) or not len(furniture):
            return np.zeros(len(xyxy), bool)
        out: np.ndarray = iou_matrix(xyxy, furniture).max(axis=1) >= self.match_iou
        return out
