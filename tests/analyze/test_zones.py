"""ZoneGeometry: containment (convex and concave), crop regions, mask, area share."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.analyze.zones import ZoneGeometry, union_box
from pipeline.config import ZoneConfig

# A "U" (concave): two prongs joined at the bottom; the notch between them is outside.
U_SHAPE = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.6], [0.7, 0.6], [0.7, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
TRIANGLE = [[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]]


def geom(poly: list[list[float]], w: int = 1000, h: int = 500) -> ZoneGeometry:
    return ZoneGeometry(ZoneConfig(id="z", kind="no_parking", polygon=poly), w, h)


@pytest.mark.parametrize(("poly", "x", "y", "inside"), [
    (U_SHAPE, 200, 200, True),    # left prong
    (U_SHAPE, 800, 200, True),    # right prong
    (U_SHAPE, 500, 200, False),   # the notch (inside the bounding box, outside the polygon)
    (U_SHAPE, 500, 400, True),    # the base
    (U_SHAPE, 500, 480, False),   # below the base
    (U_SHAPE, 100, 250, True),    # on the left edge counts as inside
    (U_SHAPE, 900, 250, True),    # ... so does the right edge
    (U_SHAPE, 500, 300, True),    # ... and the bottom of the notch
    (U_SHAPE, 500, 299, False),
    (TRIANGLE, 500, 20, True),
    (TRIANGLE, 100, 50, False),
    (TRIANGLE, 900, 490, True),
])
def test_contains(poly: list[list[float]], x: float, y: float, inside: bool) -> None:
    g = geom(poly)
    assert g.contains(x, y) is inside
    assert g.contains_points([[x, y]]).tolist() == [inside]


@pytest.mark.parametrize("poly", [U_SHAPE, TRIANGLE])
def test_contains_points_agrees_with_opencv_and_mask(poly: list[list[float]]) -> None:
    g = geom(poly)
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [1000, 500], size=(2000, 2))
    vec = g.contains_points(pts)
    one = np.array([g.contains(x, y) for x, y in pts])
    assert vec.dtype == bool and vec.shape == (2000,)
    assert (vec == one).all()
    px = pts.astype(int)
    on_mask = g.mask[px[:, 1], px[:, 0]] > 0
    assert (on_mask == vec).mean() > 0.99  # rasterised edges may differ by a pixel
    assert 0.3 < vec.mean() < 0.8


def test_contains_points_empty() -> None:
    assert geom(TRIANGLE).contains_points(np.zeros((0, 2))).shape == (0,)


def test_bbox_and_crop_region() -> None:
    g = geom([[0.4, 0.4], [0.5, 0.4], [0.5, 0.5], [0.4, 0.5]])  # 100 x 50 px at (400, 200)
    assert g.bbox_px == (400, 200, 500, 250)
    x1, y1, x2, y2 = g.crop_region(pad=0.1, min_size=320)
    assert (x2 - x1, y2 - y1) == (320, 320)  # grown to the minimum for detector context
    assert x1 < 400 and x2 > 500 and y1 < 200 and y2 > 250  # still holds the zone
    # Near a corner the region shifts to stay inside the frame rather than shrinking.
    corner = geom([[0.0, 0.9], [0.05, 0.9], [0.05, 1.0], [0.0, 1.0]])
    assert corner.crop_region(pad=0.2, min_size=320) == (0, 180, 320, 500)
    # Never larger than the frame.
    assert geom(TRIANGLE, 200, 100).crop_region(min_size=640) == (0, 0, 200, 100)


def test_mask_and_area_share() -> None:
    g = geom([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], 100, 100)
    assert g.mask.shape == (100, 100) and g.mask.dtype == np.uint8
    assert g.area_share((60, 0, 100, 100)) == 0.0
    assert g.area_share((0, 0, 40, 40)) == 1.0
    assert g.area_share((30, 0, 70, 10)) == pytest.approx(0.5, abs=0.05)
    assert g.area_share((10, 10, 10, 20)) == 0.0  # empty box


def test_polygon_pixels_and_union() -> None:
    g = geom(TRIANGLE, 200, 100)
    assert g.polygon_int.reshape(-1, 2).tolist() == [[100, 0], [200, 100], [0, 100]]
    assert union_box([(0, 5, 10, 10), (5, 0, 20, 8)]) == (0, 0, 20, 10)
    with pytest.raises(ValueError):
        ZoneGeometry(ZoneConfig(id="z", kind="area", polygon=TRIANGLE), 0, 10)
