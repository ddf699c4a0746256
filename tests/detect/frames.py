"""Deterministic test images: frames decoded from the shared clips with PyAV, and dataset images.

Shared by the tests and ``scripts/record_yolo_reference.py`` so that both look at the same pixels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import cv2
import numpy as np


def read_frame_at(path: Path, t: float) -> np.ndarray:
    """The first decoded frame at or after ``t`` seconds, as BGR uint8 (H, W, 3)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= t - 1e-6:
                return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
    raise ValueError(f"{path} has no frame at {t} s")


def load_image(shared: Path, source: dict[str, object]) -> np.ndarray:
    """Load the image a reference entry describes: ``{"path": rel, "t": seconds}`` or ``{"path": rel}``."""
    path = shared / str(source["path"])
    if "t" in source:
        return read_frame_at(path, float(str(source["t"])))
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return img


def pixel_hash(image: np.ndarray) -> str:
    """Short sha256 of the raw pixels, to prove a re-decoded frame is the recorded one."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]
