"""Parking occupancy: vehicles counted in ``parking`` zones that have a ``capacity``.

Not a hazard: :class:`OccupancyCounter` counts, per analysed frame, the vehicles whose anchor (the
bottom-centre of the box, where the wheels touch the ground) lies in the zone, and smooths the count with
a median over the last ``window`` frames (a car hidden for a frame or a detector flicker does not change
it). :meth:`~pipeline.analyze.analyzer.CameraAnalyzer.occupancy` collects every counter of a camera; the
worker publishes each zone as a retained MQTT message ``<prefix>/occupancy/<camera>/<zone>`` (payload in
docs/rules.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

from pipeline.analyze.zones import ZoneGeometry, ZoneGeometryCache
from pipeline.config import ZoneConfig
from pipeline.detect.detections import Detections

DEFAULT_VEHICLES = ("car", "truck", "bus", "motorcycle")


class OccupancyCounter:
    """Smoothed vehicle count of one parking zone.

    Args:
        camera_id: camera id.
        zone: a zone with ``capacity`` set.
        classes: vehicle classes counted.
        min_confidence: detections below are ignored.
        window: median over this many analysed frames.
        detector: name of the detector whose output is counted.

    Example:
        >>> zone = ZoneConfig(id="p1", kind="parking", capacity=3, polygon=[[0, 0], [1, 0], [1, 1], [0, 1]])
        >>> c = OccupancyCounter("cam1", zone, window=3)
        >>> two = Detections.from_arrays([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.8], [2, 2], {2: "car"})
        >>> for t, d in enumerate([two, Detections.empty(), two]):
        ...     c.update(float(t), d, 100, 100)
        >>> c.state()
        {'used': 2, 'free': 1, 'capacity': 3, 'ts': 2.0}
    """

    def __init__(self, camera_id: str, zone: ZoneConfig, classes: Iterable[str] = DEFAULT_VEHICLES,
                 min_confidence: float = 0.35, window: int = 5, detector: str = "coco") -> None:
        if zone.capacity is None:
            raise ValueError(f"zone {zone.id!r} has no capacity")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.camera_id = camera_id
        self.zone = zone
        self.zone_id = zone.id
        self.capacity = int(zone.capacity)
        self.classes = frozenset(classes)
        self.min_confidence = float(min_confidence)
        self.detector = detector
        self.counts: deque[int] = deque(maxlen=window)
        self.ts: float | None = None
        self._geometry = ZoneGeometryCache(zone)

    def geometry(self, width: int, height: int) -> ZoneGeometry:
        return self._geometry.get(width, height)

    def count(self, detections: Detections, width: int, height: int) -> int:
        """Vehicles anchored in the zone in one frame (unsmoothed)."""
        v = detections.with_classes(self.classes).with_min_confidence(self.min_confidence)
        if not len(v):
            return 0
        anchors = np.stack([(v.xyxy[:, 0] + v.xyxy[:, 2]) / 2.0, v.xyxy[:, 3]], axis=1)
        return int(np.count_nonzero(self.geometry(width, height).contains_points(anchors)))

    def update(self, ts: float, detections: Detections, width: int, height: int) -> None:
        """Count one analysed frame."""
        self.counts.append(self.count(detections, width, height))
        self.ts = ts

    @property
    def used(self) -> int:
        """Median count over the window (rounded half up), 0 before the first frame."""
        if not self.counts:
            return 0
        return int(np.floor(float(np.median(np.array(self.counts))) + 0.5))

    def state(self) -> dict[str, object]:
        """``{used, free, capacity, ts}``; ``used`` may exceed ``capacity`` (cars off the marked bays)."""
        used = self.used
        return {"used": used, "free": max(0, self.capacity - used), "capacity": self.capacity, "ts": self.ts}
