"""Zone geometry in pixels: containment, crop region, mask.

Zones are configured in normalised 0..1 image coordinates (:class:`pipeline.config.ZoneConfig`);
:class:`ZoneGeometry` turns one into pixel space for a given frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import cv2
import numpy as np

from pipeline.config import ZoneConfig

BoxPx = tuple[int, int, int, int]


class ZoneGeometry:
    """One zone's polygon in pixel coordinates of a ``width`` x ``height`` frame.

    Containment treats points on the polygon's edge as inside. Works for concave polygons.

    Args:
        zone: the zone configuration (normalised polygon).
        width: frame width in pixels.
        height: frame height in pixels.

    Example:
        >>> from pipeline.config import ZoneConfig
        >>> z = ZoneConfig(id="z1", kind="no_parking", polygon=[[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]])
        >>> g = ZoneGeometry(z, 100, 100)
        >>> g.contains(10, 10), g.contains(80, 80)
        (True, False)
        >>> g.contains_points([[10, 10], [80, 80]]).tolist()
        [True, False]
        >>> g.bbox_px
        (0, 0, 50, 50)
        >>> round(g.area_share((0, 0, 100, 100)), 2)  # mask pixels on the edge count as inside
        0.26
    """

    def __init__(self, zone: ZoneConfig, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.zone = zone
        self.width = int(width)
        self.height = int(height)
        pts = np.asarray(zone.polygon, dtype=np.float64).reshape(-1, 2)
        self.polygon = (pts * np.array([width, height], dtype=np.float64)).astype(np.float32)
        """float32 (N, 2) vertices in pixels."""

    @property
    def polygon_int(self) -> np.ndarray:
        """int32 (N, 1, 2) vertices, the shape ``cv2.polylines`` / ``cv2.fillPoly`` expect."""
        return np.round(self.polygon).astype(np.int32).reshape(-1, 1, 2)

    def contains(self, x: float, y: float) -> bool:
        """Whether pixel point (x, y) lies inside the polygon or on its edge."""
        return bool(cv2.pointPolygonTest(self.polygon.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0)

    def contains_points(self, pts: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Vectorised containment of (N, 2) pixel points; returns a bool array (N,).

        Even-odd ray casting, with points on an edge counted as inside (as :meth:`contains`).
        """
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if p.shape[0] == 0:
            return np.zeros((0,), dtype=bool)
        x, y = p[:, 0:1], p[:, 1:2]  # (N, 1)
        v = self.polygon.astype(np.float64)
        x1, y1 = v[:, 0][None, :], v[:, 1][None, :]  # (1, M)
        x2, y2 = np.roll(v[:, 0], -1)[None, :], np.roll(v[:, 1], -1)[None, :]
        # Ray casting: edges straddling the horizontal line through the point, crossing to its right.
        straddle = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside = np.count_nonzero(straddle & (x < x_cross), axis=1) % 2 == 1
        # On-edge points: collinear with an edge and within its extent.
        cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
        seg_len = np.hypot(x2 - x1, y2 - y1)
        within = ((x >= np.minimum(x1, x2) - 1e-6) & (x <= np.maximum(x1, x2) + 1e-6)
                  & (y >= np.minimum(y1, y2) - 1e-6) & (y <= np.maximum(y1, y2) + 1e-6))
        on_edge = np.any((np.abs(cross) <= 1e-6 * np.maximum(seg_len, 1.0)) & within, axis=1)
        return np.asarray(inside | on_edge, dtype=bool)

    @cached_property
    def bbox_px(self) -> BoxPx:
        """Tight bounding box (x1, y1, x2, y2) of the polygon in pixels, clipped to the frame."""
        return self.crop_region(pad=0.0, min_size=0)

    def crop_region(self, pad: float = 0.1, min_size: int = 320) -> BoxPx:
        """Bounding box of the polygon for running a detector on, padded and clipped to the frame.

        Args:
            pad: extra margin on each side as a fraction of the box's width / height, so objects
                straddling the zone edge are seen whole.
            min_size: grow each side to at least this many pixels (centred, then shifted to stay
                inside the frame) so the detector gets context; capped at the frame size.

        Returns:
            (x1, y1, x2, y2) integer pixels with 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height.
        """
        x1, y1 = (float(v) for v in self.polygon.min(axis=0))
        x2, y2 = (float(v) for v in self.polygon.max(axis=0))
        w, h = x2 - x1, y2 - y1
        x1, x2 = x1 - pad * w, x2 + pad * w
        y1, y2 = y1 - pad * h, y2 + pad * h
        ax1, ax2 = _span(x1, x2, min_size, self.width)
        ay1, ay2 = _span(y1, y2, min_size, self.height)
        return ax1, ay1, ax2, ay2

    @cached_property
    def mask(self) -> np.ndarray:
        """uint8 (height, width) mask: 255 inside the polygon, 0 outside (built on first use)."""
        m = np.zeros((self.height, self.width), dtype=np.uint8)
        cv2.fillPoly(m, [self.polygon_int], 255)
        return m

    def area_share(self, box: Sequence[float] | np.ndarray) -> float:
        """Share (0..1) of a pixel box (x1, y1, x2, y2) covered by the zone, measured on :attr:`mask`."""
        x1, y1, x2, y2 = (float(v) for v in box)
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        if area <= 0:
            return 0.0
        ix1, iy1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        ix2, iy2 = min(self.width, int(np.ceil(x2))), min(self.height, int(np.ceil(y2)))
        if ix2 <= ix1 or iy2 <= iy1:
            return 0.0
        inside = float(np.count_nonzero(self.mask[iy1:iy2, ix1:ix2]))
        return min(1.0, inside / area)


def _span(lo: float, hi: float, min_size: int, limit: int) -> tuple[int, int]:
    """Integer [lo, hi) grown to ``min_size`` (capped at ``limit``) and shifted inside [0, limit]."""
    size = min(float(limit), max(hi - lo, float(min_size)))
    mid = (lo + hi) / 2.0
    a, b = mid - size / 2.0, mid + size / 2.0
    if a < 0:
        a, b = 0.0, size
    if b > limit:
        a, b = float(limit) - size, float(limit)
    ia, ib = max(0, int(np.floor(a))), min(limit, int(np.ceil(b)))
    if ib <= ia:
        ib = min(limit, ia + 1)
        ia = ib - 1
    return ia, ib


class ZoneGeometryCache:
    """One zone's :class:`ZoneGeometry` for the current frame size, rebuilt only when the size changes."""

    def __init__(self, zone: ZoneConfig) -> None:
        self.zone = zone
        self._geometry: ZoneGeometry | None = None

    def get(self, width: int, height: int) -> ZoneGeometry:
        g = self._geometry
        if g is None or (g.width, g.height) != (width, height):
            g = self._geometry = ZoneGeometry(self.zone, width, height)
        return g


def union_box(boxes: Sequence[BoxPx]) -> BoxPx:
    """Smallest box holding all ``boxes`` (x1, y1, x2, y2)."""
    if not boxes:
        raise ValueError("union_box needs at least one box")
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))
