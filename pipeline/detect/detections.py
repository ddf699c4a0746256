"""The core detection container, modelled on supervision's ``Detections``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes found in one image, in that image's pixel coordinates.

    Attributes:
        xyxy: float32 array (N, 4) of x1, y1, x2, y2 in pixels of the source image.
        confidence: float32 array (N,).
        class_id: int64 array (N,).
        class_names: mapping class id -> name for the model that produced them.

    Example:
        >>> d = Detections.from_arrays([[0, 0, 10, 10]], [0.9], [2], {2: "car"})
        >>> len(d), d.labels
        (1, ['car'])
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, class_names: Mapping[int, str] | None = None) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64),
            dict(class_names or {}),
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: object,
        confidence: object,
        class_id: object,
        class_names: Mapping[int, str] | None = None,
    ) -> Detections:
        return cls(
            np.asarray(xyxy, np.float32).reshape(-1, 4),
            np.asarray(confidence, np.float32).reshape(-1),
            np.asarray(class_id, np.int64).reshape(-1),
            dict(class_names or {}),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], self.class_names)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, int]]:
        for i in range(len(self)):
            yield self.xyxy[i], float(self.confidence[i]), int(self.class_id[i])

    @property
    def labels(self) -> list[str]:
        return [self.class_names.get(int(c), str(int(c))) for c in self.class_id]

    def with_classes(self, names: set[str] | frozenset[str]) -> Detections:
        """Keep only detections whose class name is in ``names``."""
        keep = np.array([lbl in names for lbl in self.labels], dtype=bool)
        return self[keep]

    def with_min_confidence(self, threshold: float) -> Detections:
        return self[self.confidence >= threshold]

    def shifted(self, dx: float, dy: float) -> Detections:
        """Translate boxes, e.g. from a crop's coordinates back to the full frame."""
        offset = np.array([dx, dy, dx, dy], np.float32)
        return Detections(self.xyxy + offset, self.confidence, self.class_id, self.class_names)

    @staticmethod
    def merge(parts: list[Detections]) -> Detections:
        if not parts:
            return Detections.empty()
        names: dict[int, str] = {}
        for p in parts:
            names.update(p.class_names)
        return Detections(
            np.concatenate([p.xyxy for p in parts]).astype(np.float32),
            np.concatenate([p.confidence for p in parts]).astype(np.float32),
            np.concatenate([p.class_id for p in parts]).astype(np.int64),
            names,
        )
