"""Frame tiles for smoke: where the fire second stage looks for smoke that the detector does not propose.

The fire detector (``models/fire.onnx``) scores real smoke low and often proposes no smoke box at all (it
learned smoke from few boxes). The crop classifier (:class:`~pipeline.detect.fire_confirm.FireConfirmClassifier`)
separates smoke crops better, so a frame can also be scored by the classifier's ``p(smoke)`` on a fixed set of
overlapping tiles: the whole frame, halves overlapping by half, and thirds. Measured in docs/detectors.md
("Smoke proposals").

Example:
    >>> frame_tiles(640, 480).shape
    (19, 4)
"""

from __future__ import annotations

import numpy as np

TILE_LAYOUT: tuple[tuple[float, float], ...] = ((1.0, 1.0), (0.5, 0.25), (1 / 3, 1 / 3))
"""(tile side, stride), both as fractions of the frame's width/height: the whole frame, a 3 x 3 grid of
half-size tiles and a 3 x 3 grid of third-size tiles (19 tiles)."""


def frame_tiles(width: int, height: int, layout: tuple[tuple[float, float], ...] = TILE_LAYOUT) -> np.ndarray:
    """Pixel boxes ``(N, 4)`` x1, y1, x2, y2 of the tiles of a ``width`` x ``height`` frame.

    Args:
        width: frame width (px).
        height: frame height (px).
        layout: (side, stride) pairs as fractions of the frame size; each gives a regular grid.
    """
    boxes = []
    for side, stride in layout:
        steps = int(round((1.0 - side) / stride)) + 1 if side < 1.0 else 1
        for iy in range(steps):
            for ix in range(steps):
                x1, y1 = ix * stride, iy * stride
                boxes.append((x1 * width, y1 * height, min(1.0, x1 + side) * width, min(1.0, y1 + side) * height))
    return np.asarray(boxes, np.float64).reshape(-1, 4)


__all__ = ["TILE_LAYOUT", "frame_tiles"]
