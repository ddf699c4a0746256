"""Cutting a scene's crop out of a frame, and turning crops into classifier input.

Training (``gridwatch scene train``), collection (worker, ``gridwatch scene collect``) and judging
(:class:`~pipeline.scenes.rule.StateRule`) all go through :func:`cut_crop` and :func:`to_input`, so the model
sees the same pixels in every phase.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FILL_GREY = 114
"""Grey that replaces pixels outside a polygon crop (YOLO's letterbox grey: the backbone knows it as 'nothing')."""


def crop_box_px(polygon: Sequence[Sequence[float]], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel bounding box (x1, y1, x2, y2; x2/y2 exclusive) of a normalised polygon, at least 1 px a side.

    Example:
        >>> crop_box_px([[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]], 640, 480)
        (160, 240, 480, 480)
    """
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * np.array([width, height], dtype=np.float64)
    x1 = int(np.clip(np.floor(pts[:, 0].min()), 0, width - 1))
    y1 = int(np.clip(np.floor(pts[:, 1].min()), 0, height - 1))
    x2 = int(np.clip(np.ceil(pts[:, 0].max()), x1 + 1, width))
    y2 = int(np.clip(np.ceil(pts[:, 1].max()), y1 + 1, height))
    return x1, y1, x2, y2


def _is_box(polygon: Sequence[Sequence[float]]) -> bool:
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(pts) != 4:
        return False
    xs, ys = set(np.round(pts[:, 0], 9)), set(np.round(pts[:, 1], 9))
    return len(xs) == 2 and len(ys) == 2


def cut_crop(image: np.ndarray, polygon: Sequence[Sequence[float]]) -> np.ndarray:
    """The BGR crop of ``polygon`` (normalised) from ``image``: its bounding box, outside greyed out.

    Example:
        >>> img = np.full((100, 200, 3), 255, np.uint8)
        >>> c = cut_crop(img, [[0.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
        >>> c.shape, int(c[5, 5, 0]), int(c[95, 95, 0])
        ((100, 100, 3), 255, 114)
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need a BGR image (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    x1, y1, x2, y2 = crop_box_px(polygon, w, h)
    crop = np.ascontiguousarray(image[y1:y2, x1:x2])
    if _is_box(polygon):
        return crop.copy()
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * np.array([w, h], dtype=np.float64)
    pts -= np.array([x1, y1], dtype=np.float64)
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 255)
    out = np.full_like(crop, FILL_GREY)
    out[mask > 0] = crop[mask > 0]
    return out


def to_input(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """BGR uint8 crops -> float32 (N, 3, size, size) RGB in 0..1, the scene model's input.

    Example:
        >>> to_input([np.zeros((30, 50, 3), np.uint8)], 64).shape
        (1, 3, 64, 64)
    """
    out = np.empty((len(crops), 3, size, size), np.float32)
    for i, c in enumerate(crops):
        r = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = r[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return out


__all__ = ["FILL_GREY", "crop_box_px", "cut_crop", "to_input"]
